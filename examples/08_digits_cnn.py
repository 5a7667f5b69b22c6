"""08 digits CNN: Conv2d + BatchNorm2d + ReLU + MaxPool2d + Dropout + Linear on 1x8x8 images, side by side.

The digits of 07, read as images: torch takes NCHW ``(N, 1, 8, 8)``, fnml's layers take channels-last
NHWC ``(N, 8, 8, 1)`` (``fnml.tensors.nchw_to_nhwc``). The fnml CNN is written by hand, channels-last,
and receives the torch CNN's initial weights with ``interop.load_state_dict(..., flatten_nhwc=...)``:
conv kernels OIHW -> HWIO, and the Linear after the flatten gets its input columns permuted from torch's
(C, H, W) order to NHWC's (H, W, C) order. Dropout masks come from different random generators and can
never match, so the parity claims are made where the math is deterministic: the forward pass and the
loss at identical weights (eval and train mode), and a training segment with dropout disabled (BatchNorm
batch statistics, running averages and Adam all compared per step). The full runs then train WITH
dropout on both sides, on the same batches with the same StepLR schedule, and both reach the accuracy
target. Run: ``python examples/08_digits_cnn.py`` (``FNML_QUICK=1`` for a short run).
"""

from __future__ import annotations

import copy
import os
import time

import _digits
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn as nn
from flax import nnx
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, TensorDataset

from fnml import data, interop, layers, losses, optim, schedules, tensors, train
from fnml.sidebyside import SideBySide, output_dir, quick_mode, run_captured

tour = SideBySide("08 digits CNN", "Real data: a CNN on 1x8x8 digit images (NCHW in torch, NHWC in fnml)")

QUICK = quick_mode()
EPOCHS = 3 if QUICK else 30
SEGMENT_STEPS = 15 if QUICK else 40  # the dropout-free parity segment
BATCH_SIZE = 32
LR = 2e-3
STEP_SIZE, GAMMA = 10, 0.5  # StepLR: halve the learning rate every 10 epochs
DROPOUT = 0.25
LOG_EVERY = 1 if QUICK else 5
BATCH_KEY = jax.random.key(2)
OUT = output_dir()
# Small models: one thread is fastest, and on a busy 2-core machine torch's default two threads spin
# against each other (measured: 1.5 ms vs 64 ms per MLP step under load).
torch.set_num_threads(1)

DIGITS = _digits.load()

# ------------------------------------------------------------------------------------- step 1
tour.section(
    "Step 1 - data preparation: the same split as 07, as images",
    "Standardised per pixel with training-split statistics, then reshaped to images. torch: NCHW. "
    "fnml: NHWC, the layout XLA's convolutions prefer.",
)


def torch_images():
    digits, (train_idx, val_idx, test_idx) = DIGITS, (DIGITS.train_idx, DIGITS.val_idx, DIGITS.test_idx)
    scaler = StandardScaler().fit(digits.images[train_idx])

    def images(idx):
        X = torch.tensor(scaler.transform(digits.images[idx]), dtype=torch.float32)
        return X.reshape(-1, 1, 8, 8), torch.tensor(digits.labels[idx])  # (N, 64) -> (N, C=1, H=8, W=8)

    splits = images(train_idx), images(val_idx), images(test_idx)
    print("train images:", tuple(splits[0][0].shape))
    return splits


def fnml_images():
    digits, (train_idx, val_idx, test_idx) = DIGITS, (DIGITS.train_idx, DIGITS.val_idx, DIGITS.test_idx)
    scaler = data.Standardizer.fit(digits.images[train_idx])

    def images(idx):
        X = scaler.transform(digits.images[idx]).reshape(-1, 1, 8, 8)  # (N, 64) -> (N, 1, 8, 8)
        return tensors.nchw_to_nhwc(X), jnp.asarray(digits.labels[idx])  # -> (N, H=8, W=8, C=1)

    splits = images(train_idx), images(val_idx), images(test_idx)
    print("train images:", splits[0][0].shape)
    return splits


TORCH_SPLITS, FNML_SPLITS = tour.compare("Images: NCHW vs NHWC", torch_images, fnml_images)
# Values reach 35 standard deviations (rare pixels), where one float32 ulp is 3.8e-6.
FNML_AS_NCHW = [tensors.nhwc_to_nchw(x) for x, _ in FNML_SPLITS]  # (N, H, W, C) -> (N, C, H, W)
tour.check("images, all splits (compared in NCHW; float32)", [x for x, _ in TORCH_SPLITS], FNML_AS_NCHW, tol=5e-5)
(X_TRAIN_T, Y_TRAIN_T), (X_VAL_T, Y_VAL_T), (X_TEST_T, Y_TEST_T) = TORCH_SPLITS
(X_TRAIN, Y_TRAIN), (X_VAL, Y_VAL), (X_TEST, Y_TEST) = FNML_SPLITS

# ------------------------------------------------------------------------------------- step 2


class TorchCNN(nn.Module):
    """conv-bn-relu-pool x2, dropout, linear: (N, 1, 8, 8) -> (N, 10)."""

    def __init__(self, p=DROPOUT):
        super().__init__()
        # bias=False: BatchNorm subtracts the mean, so a conv bias would have a zero gradient
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.pool, self.dropout = nn.MaxPool2d(2), nn.Dropout(p)
        self.fc = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))  # (N, 1, 8, 8) -> (N, 16, 4, 4)
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))  # -> (N, 32, 2, 2)
        x = self.dropout(torch.flatten(x, 1))  # -> (N, 128), flattened in (C, H, W) order
        return self.fc(x)


class FnmlCNN(layers.Module):
    """The same network, channels-last: (N, 8, 8, 1) -> (N, 10)."""

    def __init__(self, p=DROPOUT, *, rngs):
        self.conv1, self.bn1 = (
            layers.Conv2d(1, 16, 3, padding=1, bias=False, rngs=rngs),
            layers.BatchNorm2d(16),
        )
        self.conv2, self.bn2 = (
            layers.Conv2d(16, 32, 3, padding=1, bias=False, rngs=rngs),
            layers.BatchNorm2d(32),
        )
        self.pool, self.dropout = layers.MaxPool2d(2), layers.Dropout(p, rngs=rngs)
        self.fc = layers.Linear(32 * 2 * 2, 10, rngs=rngs)

    def __call__(self, x):
        x = self.pool(jax.nn.relu(self.bn1(self.conv1(x))))  # (N, 8, 8, 1) -> (N, 4, 4, 16)
        x = self.pool(jax.nn.relu(self.bn2(self.conv2(x))))  # -> (N, 2, 2, 32)
        x = self.dropout(x.reshape(x.shape[0], -1))  # (N, 2, 2, 32) -> (N, 128), (H, W, C) order
        return self.fc(x)


tour.section(
    "Step 2 - the model (both classes are defined above; torch draws the initial weights)",
    "load_state_dict converts every layer: conv OIHW -> HWIO, BatchNorm weight/bias/running stats as is, "
    "and flatten_nhwc={'fc': (C, H, W)} permutes fc's input columns from torch's (C, H, W) flatten order to "
    "(H, W, C) (a plain transpose would scramble them). The convolutions have no bias: the BatchNorm after "
    "them subtracts the channel mean, so a bias there gets an exactly-zero gradient; Adam would then turn "
    "rounding noise (~1e-9, different in each framework) into full-size steps, and the biases (and running "
    "means) of the two frameworks would drift apart by ~1e-2 for no mathematical reason (measured).",
)


def torch_build():
    torch.manual_seed(0)
    model = TorchCNN()
    print(model)
    return model


def fnml_build():
    model = FnmlCNN(rngs=nnx.Rngs(params=0, dropout=0))
    interop.load_state_dict(model, TORCH_INITIAL, flatten_nhwc={"fc": (32, 2, 2)})
    print(model)
    return model


TORCH_INITIAL = copy.deepcopy(run_captured(torch_build)[0].state_dict())  # seed 0, like the shown call
T_MODEL, F_MODEL = tour.compare("TorchCNN vs FnmlCNN", torch_build, fnml_build)
tour.check(
    "initial state_dict (weights + BatchNorm buffers, torch layout)",
    T_MODEL.state_dict(),
    interop.state_dict(F_MODEL, flatten_nhwc={"fc": (32, 2, 2)}),
    tol=0.0,
)

# ------------------------------------------------------------------------------------- steps 3, 5, 6
tour.section(
    "Steps 3, 5, 6 - loss function, forward pass and loss at identical weights",
    "Eval mode: BatchNorm uses its running statistics, Dropout is the identity. Train mode with dropout "
    "off: BatchNorm normalises with the batch statistics (both frameworks use the biased variance there).",
)
FIRST_BATCH = data.batch_indices(len(Y_TRAIN), BATCH_SIZE, shuffle=True, key=BATCH_KEY, epoch=0)[0]


def torch_forward():
    model, criterion = copy.deepcopy(T_MODEL), nn.CrossEntropyLoss()
    model.eval()
    with torch.no_grad():
        logits = model(X_TEST_T)
        eval_loss = criterion(logits, Y_TEST_T)
        model.train()
        model.dropout.p = 0.0  # dropout off, BatchNorm still in training mode
        train_loss = criterion(model(X_TRAIN_T[FIRST_BATCH]), Y_TRAIN_T[FIRST_BATCH])
    print(f"eval loss {eval_loss.item():.6f}, train-mode loss {train_loss.item():.6f}")
    return logits, eval_loss, train_loss


def fnml_forward():
    model, criterion = nnx.clone(F_MODEL), losses.CrossEntropyLoss()
    model.eval()
    logits = model(X_TEST)
    eval_loss = criterion(logits, Y_TEST)
    model.train()
    model.dropout.eval()  # dropout off, BatchNorm still in training mode
    train_loss = criterion(model(X_TRAIN[FIRST_BATCH]), Y_TRAIN[FIRST_BATCH])
    print(f"eval loss {float(eval_loss):.6f}, train-mode loss {float(train_loss):.6f}")
    return logits, eval_loss, train_loss


t, f = tour.compare("criterion(model(x), y) in eval and train mode", torch_forward, fnml_forward)
tour.check("eval-mode logits at identical weights (float32)", t[0], f[0], tol=1e-5)
tour.check("eval-mode loss (float32)", t[1], f[1], tol=1e-6)
tour.check("train-mode loss, dropout off (batch statistics; float32)", t[2], f[2], tol=1e-6)

# ------------------------------------------------------------------------------------- steps 4, 7, 8
tour.section(
    f"Steps 4, 7, 8 - optimizer, backward, update: {SEGMENT_STEPS} steps with dropout disabled",
    "The only framework-specific randomness is removed (Dropout(p=0)); everything else trains as in the real "
    "run: same batches, Adam, BatchNorm in training mode updating its running averages. fnml's loop is the "
    "pure jitted step: state, loss = step(state, x, y).",
)


def torch_segment():
    model = TorchCNN(p=0.0)
    model.load_state_dict(TORCH_INITIAL)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    batches = data.batch_indices(len(Y_TRAIN_T), BATCH_SIZE, shuffle=True, key=BATCH_KEY, epoch=0)
    model.train()
    step_losses = []
    for index in batches[:SEGMENT_STEPS]:
        optimizer.zero_grad()
        loss = criterion(model(X_TRAIN_T[index]), Y_TRAIN_T[index])
        loss.backward()
        optimizer.step()
        step_losses.append(loss.item())
    print(f"{len(step_losses)} steps, last loss {step_losses[-1]:.6f}")
    return step_losses, model.state_dict()


def fnml_segment():
    model = FnmlCNN(p=0.0, rngs=nnx.Rngs(0))
    interop.load_state_dict(model, TORCH_INITIAL, flatten_nhwc={"fc": (32, 2, 2)})
    state = train.TrainState.create(model, optim.adam(lr=LR))
    step = train.make_train_step(losses.CrossEntropyLoss())  # jitted once
    batches = data.batch_indices(len(Y_TRAIN), BATCH_SIZE, shuffle=True, key=BATCH_KEY, epoch=0)
    step_losses = []
    for index in batches[:SEGMENT_STEPS]:
        state, loss = step(state, X_TRAIN[index], Y_TRAIN[index])
        step_losses.append(loss)
    print(f"{len(step_losses)} steps, last loss {float(step_losses[-1]):.6f}")
    return step_losses, interop.state_dict(state.model(), flatten_nhwc={"fc": (32, 2, 2)})


t, f = tour.compare("Training without dropout: per-step parity", torch_segment, fnml_segment)
# Measured ~1e-6 (float32): convolution and reduction orders differ between MKL-DNN and XLA.
SEGMENT_DIFF = _digits.trajectory_diff(t[0], f[0])[0]
tour.record(f"per-step loss, {SEGMENT_STEPS} dropout-free steps (float32)", SEGMENT_DIFF, tol=2e-5)
tour.check("parameters + BatchNorm running stats after the segment (float32)", t[1], f[1], tol=1e-5)

# ------------------------------------------------------------------------------------- steps 9 + 11
tour.section(
    f"Steps 9 + 11 - the full run WITH dropout p={DROPOUT}, StepLR schedule (tuning)",
    f"Same initial weights, same batches; the learning rate halves every {STEP_SIZE} epochs on both sides "
    "(torch: StepLR stepped per epoch; fnml: schedules.step_lr(..., steps_per_epoch=N) as Adam's lr). The "
    "dropout masks differ, so the two loss curves are close but not equal. fit does not fuse conv nets on "
    "CPU (a conv inside lax.scan is ~5x slower there): one jitted step per batch.",
)


def torch_train():
    model = T_MODEL
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=STEP_SIZE, gamma=GAMMA)
    order = _digits.SharedBatchOrder(len(Y_TRAIN_T), BATCH_SIZE, BATCH_KEY)
    loader = DataLoader(TensorDataset(X_TRAIN_T, Y_TRAIN_T), batch_sampler=order)
    step_losses = []
    for epoch in range(EPOCHS):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = criterion(model(xb), yb)
            loss.backward()
            optimizer.step()
            step_losses.append(loss.item())
        scheduler.step()
        model.eval()
        with torch.no_grad():
            val_out = model(X_VAL_T)
            val_acc = (val_out.argmax(1) == Y_VAL_T).float().mean().item()
            val_loss = criterion(val_out, Y_VAL_T).item()
        if (epoch + 1) % LOG_EVERY == 0:
            print(
                f"Epoch [{epoch + 1}/{EPOCHS}], Loss: {loss.item():.4f}, "
                f"Val Loss: {val_loss:.4f}, Val accuracy: {val_acc:.4f}"
            )
    return model, step_losses


def fnml_train():
    steps_per_epoch = data.num_batches(len(Y_TRAIN), BATCH_SIZE)
    lr = schedules.step_lr(LR, STEP_SIZE, GAMMA, steps_per_epoch=steps_per_epoch)
    result = train.fit(
        F_MODEL,
        optim.adam(lr=lr),
        losses.CrossEntropyLoss(),
        X_TRAIN,
        Y_TRAIN,
        epochs=EPOCHS,
        batch_size=BATCH_SIZE,
        shuffle=True,
        key=BATCH_KEY,
        validation=(X_VAL, Y_VAL),
        metrics={"accuracy": train.accuracy},
        log_every=LOG_EVERY,
    )
    return result.model, list(result.losses)


start = time.perf_counter()
(T_TRAINED, T_LOSSES), (F_TRAINED, F_LOSSES) = tour.compare("Training with dropout", torch_train, fnml_train)
tour.console.print(
    f"  {len(T_LOSSES)} steps each; both columns together {time.perf_counter() - start:.1f} s. "
    f"Dropout masks differ: the curves are not compared step by step (largest per-step gap "
    f"{_digits.trajectory_diff(T_LOSSES, F_LOSSES)[0]:.3f}, shown for information only)."
)
PLOT = _digits.plot_losses(
    os.path.join(OUT, "08_digits_cnn_loss.png"),
    f"Digits CNN with dropout p={DROPOUT}: per-step training loss (different dropout masks)",
    {"PyTorch": np.asarray(T_LOSSES), "fnml": np.asarray(F_LOSSES)},
)
tour.console.print(f"  loss curves overlaid: {PLOT}")

# ------------------------------------------------------------------------------------- step 10
tour.section("Step 10 - test accuracy", "Eval mode: running statistics, no dropout.")


def torch_test():
    model = T_TRAINED.eval()
    with torch.no_grad():
        predictions = model(X_TEST_T).argmax(1)
    accuracy = (predictions == Y_TEST_T).float().mean().item()
    print(f"test accuracy: {accuracy:.4f}")
    return accuracy


def fnml_test():
    model = F_TRAINED
    model.eval()
    predictions = model(X_TEST).argmax(-1)
    accuracy = float((predictions == Y_TEST).mean())
    print(f"test accuracy: {accuracy:.4f}")
    return accuracy


T_ACC, F_ACC = tour.compare("Test accuracy", torch_test, fnml_test)

tour.section("Summary")
tour.console.print(
    f"  test accuracy: PyTorch {T_ACC:.4f}, fnml {F_ACC:.4f} ({len(Y_TEST)} test digits; other dropout masks)"
    + ("   [quick mode: accuracy targets not checked]" if QUICK else "")
)
_digits.print_accuracy(T_ACC, F_ACC)
tour.finish()

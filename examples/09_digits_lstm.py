"""09 digits LSTM: each 8x8 digit read as a sequence of 8 rows by an LSTM classifier, side by side.

The digits of 07 again, now as sequences: 8 time steps (the image rows, top to bottom) of 8 features
(the pixels of a row), ``batch_first=True``. The classifier is ``LSTM(8, 64)`` followed by a Linear head
on the last hidden state ``h_n[-1]``. fnml's LSTM (``fnml.layers.LSTM``) has torch's signature, gate
order (i, f, g, o), both biases and return values ``(output, (h_n, c_n))``; torch's initial weights are
copied in with ``interop.load_state_dict`` and both sides train on the same batches with Adam and a
per-epoch cosine learning-rate schedule. No dropout: the whole training trajectory is compared step by
step. Deployment the other way round: fnml's trained weights are loaded into the torch model, which then
serves the same predictions. Run: ``python examples/09_digits_lstm.py`` (``FNML_QUICK=1``: short run).
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

from fnml import data, interop, layers, losses, optim, schedules, train
from fnml.sidebyside import SideBySide, output_dir, quick_mode, run_captured

tour = SideBySide("09 digits LSTM", "Real data: digits read row by row by an LSTM (8 steps x 8 features)")

QUICK = quick_mode()
EPOCHS = 4 if QUICK else 25
BATCH_SIZE = 32
LR = 5e-3
HIDDEN = 64
LOG_EVERY = 1 if QUICK else 5
BATCH_KEY = jax.random.key(3)
OUT = output_dir()
# Small models: one thread is fastest, and on a busy 2-core machine torch's default two threads spin
# against each other (measured: 1.5 ms vs 64 ms per MLP step under load).
torch.set_num_threads(1)

DIGITS = _digits.load()

# ------------------------------------------------------------------------------------- step 1
tour.section(
    "Step 1 - data preparation: the same split as 07, as sequences of rows",
    "Standardised per pixel with training-split statistics, then (N, 64) -> (N, T=8 rows, F=8 pixels).",
)


def torch_sequences():
    digits, (train_idx, val_idx, test_idx) = DIGITS, (DIGITS.train_idx, DIGITS.val_idx, DIGITS.test_idx)
    scaler = StandardScaler().fit(digits.images[train_idx])

    def sequences(idx):
        X = torch.tensor(scaler.transform(digits.images[idx]), dtype=torch.float32)
        return X.reshape(-1, 8, 8), torch.tensor(digits.labels[idx])  # (N, 64) -> (N, T=8, F=8)

    splits = sequences(train_idx), sequences(val_idx), sequences(test_idx)
    print("train sequences:", tuple(splits[0][0].shape))
    return splits


def fnml_sequences():
    digits, (train_idx, val_idx, test_idx) = DIGITS, (DIGITS.train_idx, DIGITS.val_idx, DIGITS.test_idx)
    scaler = data.Standardizer.fit(digits.images[train_idx])

    def sequences(idx):
        X = scaler.transform(digits.images[idx]).reshape(-1, 8, 8)  # (N, 64) -> (N, T=8, F=8)
        return X, jnp.asarray(digits.labels[idx])

    splits = sequences(train_idx), sequences(val_idx), sequences(test_idx)
    print("train sequences:", splits[0][0].shape)
    return splits


TORCH_SPLITS, FNML_SPLITS = tour.compare("Rows as time steps", torch_sequences, fnml_sequences)
# Values reach 35 standard deviations (rare pixels), where one float32 ulp is 3.8e-6.
tour.check("sequences, all splits (float32)", [x for x, _ in TORCH_SPLITS], [x for x, _ in FNML_SPLITS], tol=5e-5)
(X_TRAIN_T, Y_TRAIN_T), (X_VAL_T, Y_VAL_T), (X_TEST_T, Y_TEST_T) = TORCH_SPLITS
(X_TRAIN, Y_TRAIN), (X_VAL, Y_VAL), (X_TEST, Y_TEST) = FNML_SPLITS

# ------------------------------------------------------------------------------------- steps 2-6


class TorchLSTMClassifier(nn.Module):
    """LSTM over the rows, Linear head on the last hidden state: (N, 8, 8) -> (N, 10)."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, 10)

    def forward(self, x):
        output, (h_n, c_n) = self.lstm(x)  # output (N, T, H); h_n (num_layers, N, H)
        return self.head(h_n[-1])  # (N, H) -> (N, 10)


class FnmlLSTMClassifier(layers.Module):
    """The same network in fnml: same signature, same return values."""

    def __init__(self, *, rngs):
        self.lstm = layers.LSTM(8, HIDDEN, batch_first=True, rngs=rngs)
        self.head = layers.Linear(HIDDEN, 10, rngs=rngs)

    def __call__(self, x):
        output, (h_n, c_n) = self.lstm(x)  # output (N, T, H); h_n (num_layers, N, H)
        return self.head(h_n[-1])  # (N, H) -> (N, 10)


tour.section(
    "Steps 2, 3, 5, 6 - model, loss function, forward pass and loss at identical weights",
    "Both classes are defined above. torch draws the initial weights; fnml loads them: weight_ih (4H, in) "
    "-> kernel_ih (in, 4H), weight_hh -> kernel_hh, both biases as they are.",
)


def torch_build():
    torch.manual_seed(0)
    model, criterion = TorchLSTMClassifier(), nn.CrossEntropyLoss()
    print(model)
    with torch.no_grad():
        logits = model(X_TEST_T)
        loss = criterion(logits, Y_TEST_T)
    print(f"initial test loss {loss.item():.6f}")
    return model, logits, loss


def fnml_build():
    model, criterion = FnmlLSTMClassifier(rngs=nnx.Rngs(0)), losses.CrossEntropyLoss()
    interop.load_state_dict(model, TORCH_INITIAL)
    print(model)
    logits = model(X_TEST)
    loss = criterion(logits, Y_TEST)
    print(f"initial test loss {float(loss):.6f}")
    return model, logits, loss


TORCH_INITIAL = copy.deepcopy(run_captured(torch_build)[0][0].state_dict())  # seed 0, like the shown call
(T_MODEL, T_LOGITS0, T_LOSS0), (F_MODEL, F_LOGITS0, F_LOSS0) = tour.compare(
    "LSTM classifier, forward and loss", torch_build, fnml_build
)
tour.check("initial weights (state_dict, torch layout)", T_MODEL.state_dict(), interop.state_dict(F_MODEL), tol=0.0)
tour.check("logits at identical weights (float32)", T_LOGITS0, F_LOGITS0, tol=1e-6)
tour.check("loss at identical weights (float32)", T_LOSS0, F_LOSS0, tol=1e-6)

# ------------------------------------------------------------------------------------- steps 4, 7-9, 11
tour.section(
    "Steps 4, 7, 8, 9, 11 - optimizer + cosine schedule (tuning), backward, update, iterate",
    f"Adam, lr {LR} annealed per epoch with a cosine schedule to 0 over {EPOCHS} epochs (torch: "
    "CosineAnnealingLR stepped per epoch; fnml: schedules.cosine_annealing_lr(..., steps_per_epoch=N) as "
    "Adam's lr). Same batches on both sides. fit runs each epoch as one fused lax.scan (the LSTM's own time "
    "loop is a lax.scan inside it, with a hand-written backward pass).",
)


def torch_train():
    model, criterion = T_MODEL, nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)
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
    lr = schedules.cosine_annealing_lr(LR, T_max=EPOCHS, steps_per_epoch=steps_per_epoch)
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
(T_TRAINED, T_LOSSES), (F_TRAINED, F_LOSSES) = tour.compare("The training loop", torch_train, fnml_train)
LOSS_DIFF, COMMON_STEPS = _digits.trajectory_diff(T_LOSSES, F_LOSSES)
tour.console.print(f"  {len(T_LOSSES)} steps each; both columns together {time.perf_counter() - start:.1f} s")
# Measured 1.8e-6 over the 1000 steps of the full run (float32 rounding: summation order, FMA contraction).
tour.record(f"per-step training loss, {COMMON_STEPS} steps (float32)", LOSS_DIFF, tol=2e-5)
tour.record("optimizer steps taken", abs(len(T_LOSSES) - len(F_LOSSES)), tol=0)
PLOT = _digits.plot_losses(
    os.path.join(OUT, "09_digits_lstm_loss.png"),
    "Digits LSTM: per-step training loss",
    {"PyTorch": np.asarray(T_LOSSES), "fnml": np.asarray(F_LOSSES)},
)
tour.console.print(f"  loss curves overlaid: {PLOT}")

# ------------------------------------------------------------------------------------- step 10
tour.section("Step 10 - test accuracy")


def torch_test():
    model = T_TRAINED.eval()
    with torch.no_grad():
        logits = model(X_TEST_T)
    accuracy = (logits.argmax(1) == Y_TEST_T).float().mean().item()
    print(f"test accuracy: {accuracy:.4f}")
    return logits, accuracy


def fnml_test():
    model = F_TRAINED
    model.eval()
    logits = model(X_TEST)
    accuracy = float(train.accuracy(logits, Y_TEST))
    print(f"test accuracy: {accuracy:.4f}")
    return logits, accuracy


(T_LOGITS, T_ACC), (F_LOGITS, F_ACC) = tour.compare("Test accuracy", torch_test, fnml_test)
# Measured 1.5e-5: logits (|values| up to ~20) carry the whole run's float32 drift.
tour.check("test logits of the trained models (float32)", T_LOGITS, F_LOGITS, tol=1e-4)
tour.record("test accuracy", abs(T_ACC - F_ACC), tol=0.01)

# ------------------------------------------------------------------------------------- step 12
tour.section(
    "Step 12 - deployment the other way: fnml's trained weights served by PyTorch",
    "interop.state_dict gives torch names and layouts (kernel_ih (in, 4H) -> weight_ih (4H, in)); a fresh "
    "torch model loads them with load_state_dict and predicts what fnml predicts.",
)


def torch_serve():
    model = TorchLSTMClassifier()  # fresh random weights...
    weights = {name: torch.from_numpy(value) for name, value in FNML_STATE.items()}
    model.load_state_dict(weights)  # ...replaced by fnml's trained ones
    model.eval()
    with torch.no_grad():
        logits = model(X_TEST_T)
    accuracy = (logits.argmax(1) == Y_TEST_T).float().mean().item()
    print(f"torch serving fnml's weights: test accuracy {accuracy:.4f}")
    return logits


def fnml_export():
    state_dict = interop.state_dict(F_TRAINED)  # {torch name: np.ndarray in torch layout}
    for name, value in state_dict.items():
        print(f"{name:22s} {value.shape}")
    return state_dict


FNML_STATE = run_captured(fnml_export)[0]
T_SERVED, F_STATE = tour.compare("load_state_dict(fnml weights)", torch_serve, fnml_export)
tour.check("torch model with fnml's weights vs fnml's logits (float32)", T_SERVED, F_LOGITS, tol=1e-5)

tour.section("Summary")
tour.console.print(
    f"  test accuracy: PyTorch {T_ACC:.4f}, fnml {F_ACC:.4f} ({len(Y_TEST)} test digits)"
    + ("   [quick mode: accuracy targets not checked]" if QUICK else "")
)
_digits.print_accuracy(T_ACC, F_ACC)
tour.finish()

"""07 digits MLP: the tutorial's 12 training steps on real data, PyTorch next to fnml.

scikit-learn's bundled digits (1797 8x8 images, 10 classes; no download) are split 70/15/15 by
``fnml.data.random_split`` and standardised with statistics of the training split only. An MLP
64-128-64-10 is built in torch; fnml's twin gets the same initial weights (``interop.load_state_dict``).
Both train with Adam on the SAME mini-batches (the torch ``DataLoader`` is driven by fnml's batch order),
validate every epoch and stop early on the validation loss; the per-step losses are compared and
overlaid in one PNG. Deployment: the trained parameters are saved (safetensors and an orbax checkpoint),
reloaded in a fresh process to predict, and the forward function is exported with ``jax.export``
(serialised, deserialised, called), next to ``torch.save`` / ``torch.export``.
Run: ``python examples/07_digits_mlp.py`` (``FNML_QUICK=1`` for a short run).
"""

from __future__ import annotations

import copy
import os
import textwrap
import time

import _digits
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn as nn
from flax import nnx
from safetensors.torch import load_file
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, TensorDataset

from fnml import checkpoint, data, interop, layers, losses, optim, train
from fnml.sidebyside import SideBySide, output_dir, quick_mode, run_captured

tour = SideBySide("07 digits MLP", "Real data: an MLP on scikit-learn's digits, the tutorial's 12 training steps")

QUICK = quick_mode()
EPOCHS = 6 if QUICK else 60  # an upper bound: early stopping usually ends the full run sooner
PATIENCE = 5
BATCH_SIZE = 32
LR = 1e-3
LOG_EVERY = 2 if QUICK else 5
BATCH_KEY = jax.random.key(1)  # the mini-batch order of every epoch, shared by both sides
OUT = output_dir()
# Small models: one thread is fastest, and on a busy 2-core machine torch's default two threads spin
# against each other (measured: 1.5 ms vs 64 ms per MLP step under load).
torch.set_num_threads(1)

DIGITS = _digits.load()
SPLIT = (DIGITS.train_idx, DIGITS.val_idx, DIGITS.test_idx)

# ------------------------------------------------------------------------------------- step 1
tour.section(
    "Step 1 - data preparation",
    "Split 70/15/15 with a fixed key (fnml.data.random_split; torch's generator would draw another "
    "permutation, so torch uses fnml's indices), standardise with statistics of the TRAINING split only.",
)


def torch_data():
    digits = DIGITS  # sklearn.datasets.load_digits(): images (1797, 64), labels (1797,)
    train_idx, val_idx, test_idx = SPLIT  # the same indices on both sides
    scaler = StandardScaler().fit(digits.images[train_idx])  # train split only

    def tensors(idx):
        X = torch.tensor(scaler.transform(digits.images[idx]), dtype=torch.float32)
        return X, torch.tensor(digits.labels[idx])

    splits = tensors(train_idx), tensors(val_idx), tensors(test_idx)
    print("train/val/test:", [len(y) for _, y in splits])
    return splits


def fnml_data():
    digits = DIGITS
    train_idx, val_idx, test_idx = data.random_split(jax.random.key(0), len(digits.labels), [0.7, 0.15, 0.15])
    scaler = data.Standardizer.fit(digits.images[train_idx])  # train split only

    def arrays(idx):
        return scaler.transform(digits.images[idx]), jnp.asarray(digits.labels[idx])

    splits = arrays(train_idx), arrays(val_idx), arrays(test_idx)
    print("train/val/test:", [len(y) for _, y in splits])
    return splits


TORCH_SPLITS, FNML_SPLITS = tour.compare("Split and standardise", torch_data, fnml_data)
# Values reach 35 standard deviations (rare pixels), where one float32 ulp is 3.8e-6.
tour.check(
    "standardised inputs, all splits (float32; sklearn works in float64)",
    [x for x, _ in TORCH_SPLITS],
    [x for x, _ in FNML_SPLITS],
    tol=5e-5,
)
tour.check("labels, all splits", [y for _, y in TORCH_SPLITS], [y for _, y in FNML_SPLITS], tol=0.0)
(X_TRAIN_T, Y_TRAIN_T), (X_VAL_T, Y_VAL_T), (X_TEST_T, Y_TEST_T) = TORCH_SPLITS
(X_TRAIN, Y_TRAIN), (X_VAL, Y_VAL), (X_TEST, Y_TEST) = FNML_SPLITS

# ------------------------------------------------------------------------------------- steps 2-4
tour.section(
    "Steps 2-4 - model, loss function, optimizer",
    "torch draws the weights; fnml's model receives a copy (interop.load_state_dict): both start equal.",
)


def torch_model():
    model = nn.Sequential(
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Linear(128, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    print(model)
    return model, criterion, optimizer


def fnml_model():
    rngs = nnx.Rngs(0)
    model = layers.Sequential(
        layers.Linear(64, 128, rngs=rngs),
        layers.ReLU(),
        layers.Linear(128, 64, rngs=rngs),
        layers.ReLU(),
        layers.Linear(64, 10, rngs=rngs),
    )
    interop.load_state_dict(model, TORCH_INITIAL)  # torch's initial weights
    criterion = losses.CrossEntropyLoss()
    tx = optim.adam(lr=LR)  # an optax.GradientTransformation with torch.optim.Adam's update
    print(model)
    return model, criterion, tx


# The weights torch draws with seed 0 (a silent first call); fnml_model copies them, and the shown
# torch_model call below, re-seeded, draws the very same ones.
torch.manual_seed(0)
TORCH_INITIAL = copy.deepcopy(run_captured(torch_model)[0][0].state_dict())
torch.manual_seed(0)
(T_MODEL, T_CRITERION, T_OPTIMIZER), (F_MODEL, F_CRITERION, F_TX) = tour.compare(
    "nn.Sequential + CrossEntropyLoss + Adam", torch_model, fnml_model
)
tour.check("initial weights (state_dict, torch layout)", T_MODEL.state_dict(), interop.state_dict(F_MODEL), tol=0.0)

# ------------------------------------------------------------------------------------- steps 5-8
tour.section(
    "Steps 5-8 - forward, loss, backward, update (one mini-batch)",
    "torch mutates: zero_grad, backward fills .grad, step changes the weights in place. fnml is pure: "
    "jax.value_and_grad returns the gradients, tx.update + optax.apply_updates return NEW parameters.",
)
FIRST_BATCH = data.batch_indices(len(Y_TRAIN), BATCH_SIZE, shuffle=True, key=BATCH_KEY, epoch=0)[0]


def torch_one_step():
    model, criterion = copy.deepcopy(T_MODEL), T_CRITERION
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    xb, yb = X_TRAIN_T[FIRST_BATCH], Y_TRAIN_T[FIRST_BATCH]
    model.train()
    optimizer.zero_grad()
    output = model(xb)  # step 5: forward
    loss = criterion(output, yb)  # step 6: loss
    loss.backward()  # step 7: backward (autograd)
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    optimizer.step()  # step 8: update
    print(f"loss {loss.item():.6f}")
    return loss.detach(), grads, model.state_dict()


def fnml_one_step():
    state = train.TrainState.create(F_MODEL, F_TX)  # split once: graphdef + arrays
    xb, yb = X_TRAIN[FIRST_BATCH], Y_TRAIN[FIRST_BATCH]

    def loss_fn(params):
        model = nnx.merge(state.graphdef, params, state.rest)
        output = model(xb)  # step 5: forward
        return F_CRITERION(output, yb)  # step 6: loss

    # jit compiles each function once (op-by-op JAX would compile every primitive separately)
    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(state.params)  # step 7: backward
    updates, opt_state = jax.jit(F_TX.update)(grads, state.opt_state, state.params)
    params = jax.jit(optax.apply_updates)(state.params, updates)  # step 8: update
    print(f"loss {float(loss):.6f}")

    # gradients and parameters back under torch names and layouts, to compare
    def as_torch(tree):
        return interop.state_dict(nnx.merge(state.graphdef, tree, state.rest))

    return loss, as_torch(grads), as_torch(params)


t, f = tour.compare("One optimizer step by hand", torch_one_step, fnml_one_step)
tour.check("step 6: loss (float32)", t[0], f[0], tol=1e-6)
tour.check("step 7: gradients (float32)", t[1], f[1], tol=1e-6)
tour.check("step 8: parameters after Adam's update (float32)", t[2], f[2], tol=1e-6)

# ------------------------------------------------------------------------------------- steps 9 + 11
tour.section(
    "Steps 9 + 11 - iterate over mini-batches, validate every epoch, stop early (tuning)",
    f"Both sides see the same shuffled batches of {BATCH_SIZE} (the torch DataLoader takes fnml's order as "
    f"its batch_sampler). Early stopping: patience {PATIENCE} epochs on the validation loss, then the best "
    f"epoch's weights are restored. fnml.train.fit runs each epoch as one fused lax.scan.",
)


def torch_train():
    model, criterion, optimizer = T_MODEL, T_CRITERION, T_OPTIMIZER
    order = _digits.SharedBatchOrder(len(Y_TRAIN_T), BATCH_SIZE, BATCH_KEY)
    loader = DataLoader(TensorDataset(X_TRAIN_T, Y_TRAIN_T), batch_sampler=order)
    step_losses, best, best_epoch, wait, best_state = [], float("inf"), 0, 0, None
    for epoch in range(EPOCHS):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = criterion(model(xb), yb)
            loss.backward()
            optimizer.step()
            step_losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            val_out = model(X_VAL_T)
            val_loss = criterion(val_out, Y_VAL_T).item()
            val_acc = (val_out.argmax(1) == Y_VAL_T).float().mean().item()
        if (epoch + 1) % LOG_EVERY == 0:
            print(
                f"Epoch [{epoch + 1}/{EPOCHS}], Loss: {loss.item():.4f}, "
                f"Val Loss: {val_loss:.4f}, Val accuracy: {val_acc:.4f}"
            )
        if val_loss < best:
            best, best_epoch, wait = val_loss, epoch + 1, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            wait += 1
            if wait >= PATIENCE:
                print(
                    f"early stopping at epoch {epoch + 1}: val_loss did not improve "
                    f"for {PATIENCE} epochs (best {best:.4f} at epoch {best_epoch})"
                )
                break
    model.load_state_dict(best_state)
    return model, step_losses, best_epoch


def fnml_train():
    result = train.fit(
        F_MODEL,
        F_TX,
        F_CRITERION,
        X_TRAIN,
        Y_TRAIN,
        epochs=EPOCHS,
        batch_size=BATCH_SIZE,
        shuffle=True,
        key=BATCH_KEY,
        validation=(X_VAL, Y_VAL),
        metrics={"accuracy": train.accuracy},
        callbacks=[train.EarlyStopping(patience=PATIENCE)],  # restores the best epoch
        log_every=LOG_EVERY,
    )
    best_epoch = int(result.history["epoch"][np.argmin(result.history["val_loss"])])
    return result, list(result.losses), best_epoch


start = time.perf_counter()
(T_TRAINED, T_LOSSES, T_BEST), (F_RESULT, F_LOSSES, F_BEST) = tour.compare(
    "The training loop (validation + early stopping)", torch_train, fnml_train
)
TRAIN_SECONDS = time.perf_counter() - start
F_TRAINED = F_RESULT.model
LOSS_DIFF, COMMON_STEPS = _digits.trajectory_diff(T_LOSSES, F_LOSSES)
tour.console.print(
    f"  torch: {len(T_LOSSES)} steps, best epoch {T_BEST}; fnml: {len(F_LOSSES)} steps, best epoch {F_BEST}; "
    f"both columns together {TRAIN_SECONDS:.1f} s"
)
# Measured: ~1e-6 over the full run (float32; summation order and FMA contraction differ).
tour.record(f"per-step training loss, {COMMON_STEPS} steps (float32)", LOSS_DIFF, tol=2e-5)
tour.record("optimizer steps taken (early stopping at the same epoch)", abs(len(T_LOSSES) - len(F_LOSSES)), tol=0)
PLOT = _digits.plot_losses(
    os.path.join(OUT, "07_digits_mlp_loss.png"),
    "Digits MLP: per-step training loss",
    {"PyTorch": np.asarray(T_LOSSES), "fnml": np.asarray(F_LOSSES)},
)
tour.console.print(f"  loss curves overlaid: {PLOT}")

# ------------------------------------------------------------------------------------- step 10
tour.section("Step 10 - evaluation on the held-out test split", "Eval mode, no gradients, best-epoch weights.")


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
tour.check("test logits of the trained models (float32)", T_LOGITS, F_LOGITS, tol=1e-4)
tour.record("test accuracy", abs(T_ACC - F_ACC), tol=0.01)

# ------------------------------------------------------------------------------------- step 12
FNML_SERVE = textwrap.dedent(
    """
    import sys, jax, numpy as np
    from flax import nnx
    from fnml import checkpoint, interop, layers, optim, train

    folder = sys.argv[1]
    X = np.load(f"{folder}/X_test.npy")

    def build():  # the architecture; the weights come from the files
        rngs = nnx.Rngs(0)
        return layers.Sequential(layers.Linear(64, 128, rngs=rngs), layers.ReLU(),
                                 layers.Linear(128, 64, rngs=rngs), layers.ReLU(),
                                 layers.Linear(64, 10, rngs=rngs))

    model = interop.load_state_dict(build(), interop.load_safetensors(f"{folder}/mlp.safetensors"))
    model.eval()
    template = train.TrainState.create(build(), optim.adam(lr=1e-3))
    restored = checkpoint.restore_checkpoint(f"{folder}/mlp_orbax", template=template).model()
    restored.eval()
    with open(f"{folder}/mlp.jax_export", "rb") as f:
        served = jax.export.deserialize(bytearray(f.read()))   # no model code needed
    np.save(f"{folder}/fresh_safetensors.npy", np.asarray(model(X)))
    np.save(f"{folder}/fresh_orbax.npy", np.asarray(restored(X)))
    np.save(f"{folder}/fresh_export.npy", np.asarray(served.call(X)))
    print("fresh process predicted", len(X), "digits three ways")
    """
)
TORCH_SERVE = textwrap.dedent(
    """
    import sys, numpy as np, torch
    folder = sys.argv[1]
    X = torch.from_numpy(np.load(f"{folder}/X_test.npy"))
    program = torch.export.load(f"{folder}/mlp.pt2").module()
    state = torch.load(f"{folder}/mlp.pt", weights_only=True)
    with torch.no_grad():
        np.save(f"{folder}/fresh_torch_export.npy", program(X).numpy())
    print("fresh process predicted", len(X), "digits;", len(state), "tensors in mlp.pt")
    """
)
tour.section(
    "Step 12 - deployment: save, reload in a fresh process, export for serving",
    "fnml saves torch-named weights (safetensors, loadable by torch too) and the full TrainState (orbax: "
    "parameters + optimizer state, for resuming). A NEW Python process rebuilds the model from those files "
    "and predicts. jax.export serialises the compiled forward function, symbolic batch size (StableHLO): "
    "the server needs jax only, not the model code. The fresh process runs:\n" + FNML_SERVE,
)
SERVE_DIR = os.path.join(OUT, "07_digits_mlp_deploy")
os.makedirs(SERVE_DIR, exist_ok=True)
np.save(os.path.join(SERVE_DIR, "X_test.npy"), np.asarray(X_TEST, dtype=np.float32))


def torch_deploy():
    folder, model = SERVE_DIR, T_TRAINED.eval()
    torch.save(model.state_dict(), f"{folder}/mlp.pt")
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (X_TEST_T[:2],), dynamic_shapes=({0: batch},))
    torch.export.save(program, f"{folder}/mlp.pt2")
    with open(f"{folder}/serve_torch.py", "w") as f:
        f.write(TORCH_SERVE)
    print(_digits.run_fresh_process(f"{folder}/serve_torch.py", folder))
    return np.load(f"{folder}/fresh_torch_export.npy")


def fnml_deploy():
    folder, model = SERVE_DIR, F_TRAINED
    interop.save_safetensors(model, f"{folder}/mlp.safetensors")
    state = F_RESULT.state
    checkpoint.save_checkpoint(f"{folder}/mlp_orbax", state, step=int(state.step))
    model.eval()
    forward = jax.jit(lambda x: model(x))  # the trained weights become constants
    batch = jax.export.symbolic_shape("batch")[0]
    exported = jax.export.export(forward)(jax.ShapeDtypeStruct((batch, 64), jnp.float32))
    with open(f"{folder}/mlp.jax_export", "wb") as f:
        f.write(exported.serialize())
    with open(f"{folder}/serve_fnml.py", "w") as f:
        f.write(FNML_SERVE)
    print(_digits.run_fresh_process(f"{folder}/serve_fnml.py", folder))
    names = ("fresh_safetensors", "fresh_orbax", "fresh_export")
    return {name: np.load(f"{folder}/{name}.npy") for name in names}


if os.path.isdir(os.path.join(SERVE_DIR, "mlp_orbax")):  # a previous run's checkpoint: start clean
    import shutil

    shutil.rmtree(os.path.join(SERVE_DIR, "mlp_orbax"))
T_SERVED, F_SERVED = tour.compare("Save, reload in a fresh process, serve", torch_deploy, fnml_deploy)
F_IN_PROCESS = np.asarray(F_LOGITS)
FRESH = F_SERVED
tour.check(
    "fnml: fresh process, safetensors vs in-process logits",
    F_IN_PROCESS,
    FRESH["fresh_safetensors"],
    tol=1e-6,
)
tour.check("fnml: fresh process, orbax checkpoint vs in-process", F_IN_PROCESS, F_SERVED["fresh_orbax"], tol=1e-6)
tour.check("fnml: fresh process, jax.export vs in-process", F_IN_PROCESS, F_SERVED["fresh_export"], tol=1e-6)
tour.check("torch.export vs jax.export, both in fresh processes", T_SERVED, FRESH["fresh_export"], tol=1e-4)
# fnml's safetensors file loads into a plain torch model: the weights travel back to PyTorch.
BACK = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
BACK.load_state_dict(load_file(os.path.join(SERVE_DIR, "mlp.safetensors")))
with torch.no_grad():
    tour.check("torch model loaded from fnml's safetensors vs fnml logits", BACK(X_TEST_T), F_IN_PROCESS, tol=1e-5)

tour.section("Summary")
tour.console.print(
    f"  test accuracy: PyTorch {T_ACC:.4f}, fnml {F_ACC:.4f} ({len(Y_TEST)} test digits)"
    + ("   [quick mode: accuracy targets not checked]" if QUICK else "")
)
_digits.print_accuracy(T_ACC, F_ACC)
tour.finish()

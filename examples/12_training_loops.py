"""12 training loops: the loops real PyTorch code writes, beyond ``criterion(model(x), y)``, next to fnml's.

Five loops, each written the torch way on the left and the fnml way on the right, from the same initial
weights and the same batches, each ending in a parity line:

1. a model with two inputs (numbers and a category through an Embedding): ``fit`` with ``X = (X_num, X_cat)``;
2. truncated backpropagation through time on a character-level text that ships with Python (the ``json``
   module's docstring): torch's word_language_model loop (hidden state carried and detached, gradient
   clipping) next to ``make_train_step(loss_fn=..., has_aux=True)``;
3. gradient accumulation: ``(loss / 4).backward()`` over 4 micro-batches, then ``step()``, next to
   ``fit(..., accumulate_steps=4)``;
4. fine-tuning with a frozen part: ``requires_grad_(False)`` next to ``layers.freeze``, under AdamW's weight decay;
5. bfloat16 mixed precision: ``torch.autocast("cpu", dtype=torch.bfloat16)`` next to ``autocast="bfloat16"``.

Run: ``python examples/12_training_loops.py``.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn as nn
from flax import nnx

from fnml import data, interop, layers, losses, optim, train
from fnml.sidebyside import SideBySide, quick_mode

tour = SideBySide("12 training loops", "Several inputs, truncated BPTT, accumulation, freezing, bfloat16 autocast")
torch.manual_seed(0)


# ---- 1. two inputs ------------------------------------------------------------------------------------

tour.section(
    "1. A model with two inputs",
    "forward(x_num, x_cat): the categorical input goes through an Embedding. fit takes X as a tuple "
    "(model(*x)) or a dict (model(**x)); every array is batched and shuffled with the same rows.",
)


class TorchTabular(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(6, 3)
        self.fc1 = nn.Linear(4 + 3, 16)
        self.fc2 = nn.Linear(16, 1)

    def forward(self, x_num, x_cat):
        return self.fc2(torch.relu(self.fc1(torch.cat([x_num, self.emb(x_cat)], dim=1))))


class Tabular(layers.Module):
    def __init__(self, *, rngs):
        self.emb = layers.Embedding(6, 3, rngs=rngs)
        self.fc1 = layers.Linear(4 + 3, 16, rngs=rngs)
        self.fc2 = layers.Linear(16, 1, rngs=rngs)

    def __call__(self, x_num, x_cat):
        return self.fc2(jax.nn.relu(self.fc1(jnp.concatenate([x_num, self.emb(x_cat)], axis=1))))


TABULAR = TorchTabular()
TABULAR_INIT = {k: v.clone() for k, v in TABULAR.state_dict().items()}
X_NUM, X_CAT, Y_TAB = torch.randn(40, 4), torch.randint(0, 6, (40,)), torch.randn(40, 1)
KEY = jax.random.key(0)  # the shuffling order both sides use (fnml.data's permutation)


def torch_two_inputs():
    model = TorchTabular()
    model.load_state_dict(TABULAR_INIT)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    step_losses = []
    for epoch in range(5):
        for index in data.batch_indices(40, 8, shuffle=True, key=KEY, epoch=epoch):
            index = torch.as_tensor(np.asarray(index))
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(X_NUM[index], X_CAT[index]), Y_TAB[index])
            loss.backward()
            optimizer.step()
            step_losses.append(loss.item())
    print(f"{len(step_losses)} steps, last loss {step_losses[-1]:.4f}")
    return np.array(step_losses)


def fnml_two_inputs():
    model = interop.load_state_dict(Tabular(rngs=nnx.Rngs(0)), TABULAR_INIT)
    X = (X_NUM.numpy(), X_CAT.numpy())  # model(*x)
    result = train.fit(model, optim.adam(lr=0.01), losses.MSELoss(), X, Y_TAB.numpy(), epochs=5, batch_size=8,
                       shuffle=True, key=KEY, verbose=False)  # fmt: skip
    print(f"{len(result.losses)} steps, last loss {result.losses[-1]:.4f}")
    return result.losses


t, f = tour.compare("Two inputs, shuffled mini-batches", torch_two_inputs, fnml_two_inputs)
tour.check("two inputs: per-step loss (float32)", t, f, tol=1e-5)

# ---- 2. truncated BPTT ------------------------------------------------------------------------------

TEXT = json.__doc__  # ships with Python: no download
CHARS = sorted(set(TEXT))
STREAM = np.array([CHARS.index(c) for c in TEXT], dtype=np.int64)
BATCH, BPTT, HIDDEN = 4, 16, 32
BATCHES = 8 if quick_mode() else 20
COLUMNS = STREAM[: (len(STREAM) // BATCH) * BATCH].reshape(BATCH, -1).T  # (steps, BATCH): torch's batchify

tour.section(
    "2. Truncated backpropagation through time (a character-level model of json's docstring)",
    f"{len(TEXT)} characters, {len(CHARS)} symbols, batches of {BATCH} columns x {BPTT} steps. torch detaches "
    "the hidden state between batches (repackage_hidden); fnml's step returns it as aux and takes it back as "
    "an input: a constant of the next step, so no gradient flows into the previous batch.",
)


class TorchCharLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(len(CHARS), 16)
        self.lstm = nn.LSTM(16, HIDDEN)
        self.fc = nn.Linear(HIDDEN, len(CHARS))

    def forward(self, x, hidden):
        output, hidden = self.lstm(self.emb(x), hidden)
        return self.fc(output), hidden


class CharLM(layers.Module):
    def __init__(self, *, rngs):
        self.emb = layers.Embedding(len(CHARS), 16, rngs=rngs)
        self.lstm = layers.LSTM(16, HIDDEN, rngs=rngs)
        self.fc = layers.Linear(HIDDEN, len(CHARS), rngs=rngs)

    def __call__(self, x, hidden):
        output, hidden = self.lstm(self.emb(x), hidden)
        return self.fc(output), hidden


CHAR_LM = TorchCharLM()
CHAR_LM_INIT = {k: v.clone() for k, v in CHAR_LM.state_dict().items()}


def torch_bptt():
    model = TorchCharLM()
    model.load_state_dict(CHAR_LM_INIT)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    source = torch.as_tensor(COLUMNS)
    hidden = (torch.zeros(1, BATCH, HIDDEN), torch.zeros(1, BATCH, HIDDEN))
    step_losses = []
    for i in range(0, BATCHES * BPTT, BPTT):
        x, y = source[i : i + BPTT], source[i + 1 : i + 1 + BPTT]
        hidden = tuple(h.detach() for h in hidden)  # repackage_hidden
        optimizer.zero_grad()
        logits, hidden = model(x, hidden)
        loss = nn.functional.cross_entropy(logits.reshape(-1, len(CHARS)), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optimizer.step()
        step_losses.append(loss.item())
    print(f"{len(step_losses)} batches, loss {step_losses[0]:.3f} -> {step_losses[-1]:.3f}")
    return np.array(step_losses)


def lm_loss(model, x, y, hidden):
    logits, hidden = model(x, hidden)  # (BPTT, BATCH, symbols)
    return losses.cross_entropy(logits.reshape(-1, len(CHARS)), y.reshape(-1)), hidden


def fnml_bptt():
    model = interop.load_state_dict(CharLM(rngs=nnx.Rngs(0)), CHAR_LM_INIT)
    state = train.TrainState.create(model, optax.chain(optim.clip_grad_norm(0.25), optim.sgd(lr=1.0)))
    step = train.make_train_step(loss_fn=lm_loss, has_aux=True)
    hidden = (jnp.zeros((1, BATCH, HIDDEN)), jnp.zeros((1, BATCH, HIDDEN)))
    step_losses = []
    for i in range(0, BATCHES * BPTT, BPTT):
        x, y = COLUMNS[i : i + BPTT], COLUMNS[i + 1 : i + 1 + BPTT]
        state, loss, hidden = step(state, x, y, hidden)  # hidden: aux out, input in
        step_losses.append(float(loss))
    print(f"{len(step_losses)} batches, loss {step_losses[0]:.3f} -> {step_losses[-1]:.3f}")
    return np.array(step_losses)


t, f = tour.compare("Truncated BPTT with gradient clipping", torch_bptt, fnml_bptt)
tour.check("truncated BPTT: per-batch loss (float32)", t, f, tol=1e-5)

# ---- 3. gradient accumulation -------------------------------------------------------------------------

tour.section(
    "3. Gradient accumulation",
    "Four micro-batches of 6 rows per optimizer step (an effective batch of 24), with BatchNorm (statistics "
    "per micro-batch, as torch's forward does) and a StepLR schedule counting optimizer steps. fit's losses "
    "are one per optimizer step: the mean of its micro-batch losses.",
)


class TorchBNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 16, bias=False)
        self.bn = nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 1)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


class BNNet(layers.Module):
    def __init__(self, *, rngs):
        self.fc1 = layers.Linear(4, 16, bias=False, rngs=rngs)
        self.bn = layers.BatchNorm1d(16)
        self.fc2 = layers.Linear(16, 1, rngs=rngs)

    def __call__(self, x):
        return self.fc2(jax.nn.relu(self.bn(self.fc1(x))))


BN_NET = TorchBNNet()
BN_INIT = {k: v.clone() for k, v in BN_NET.state_dict().items()}
X_ACC, Y_ACC = torch.randn(48, 4), torch.randn(48, 1)


def torch_accumulation():
    model = TorchBNNet()
    model.load_state_dict(BN_INIT)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    step_losses = []
    for epoch in range(3):
        batches = data.batch_indices(48, 6, shuffle=True, key=KEY, epoch=epoch)
        for i, index in enumerate(batches):
            index = torch.as_tensor(np.asarray(index))
            loss = nn.functional.mse_loss(model(X_ACC[index]), Y_ACC[index])
            (loss / 4).backward()
            if i % 4 == 0:
                step_losses.append(0.0)
            step_losses[-1] += loss.item() / 4
            if (i + 1) % 4 == 0:
                optimizer.step()
                optimizer.zero_grad()
                scheduler.step()
    print(f"{len(step_losses)} optimizer steps, last loss {step_losses[-1]:.4f}")
    return np.array(step_losses)


def fnml_accumulation():
    model = interop.load_state_dict(BNNet(rngs=nnx.Rngs(0)), BN_INIT)
    tx = optim.adamw(lr=optim.step_lr(lr=0.01, step_size=2, gamma=0.5))
    result = train.fit(model, tx, losses.MSELoss(), X_ACC.numpy(), Y_ACC.numpy(), epochs=3, batch_size=6,
                       shuffle=True, key=KEY, accumulate_steps=4, verbose=False)  # fmt: skip
    print(f"{len(result.losses)} optimizer steps, last loss {result.losses[-1]:.4f}")
    return result.losses


t, f = tour.compare("accumulate_steps=4", torch_accumulation, fnml_accumulation)
tour.check("accumulation: per-optimizer-step loss (float32)", t, f, tol=1e-5)

# ---- 4. fine-tuning with a frozen part ----------------------------------------------------------------

tour.section(
    "4. Fine-tuning with a frozen part",
    "The first layer is frozen: no gradient, no optimizer state, no update, no weight decay. "
    "TrainState.create decides the trainable/frozen split once; to unfreeze later, unfreeze the module of "
    "the state and create a new state (fresh optimizer state, as a new torch optimizer).",
)


def torch_frozen():
    model = TorchTabular()
    model.load_state_dict(TABULAR_INIT)
    model.emb.requires_grad_(False)
    model.fc1.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    step_losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(X_NUM, X_CAT), Y_TAB)
        loss.backward()
        optimizer.step()
        step_losses.append(loss.item())
    moved = (model.fc1.weight - TABULAR_INIT["fc1.weight"]).abs().max().item()
    print(f"fc1 moved by {moved}; last loss {step_losses[-1]:.4f}")
    return np.array(step_losses), moved


def fnml_frozen():
    model = interop.load_state_dict(Tabular(rngs=nnx.Rngs(0)), TABULAR_INIT)
    layers.freeze(model.emb)
    layers.freeze(model.fc1)
    tx = optim.adamw(lr=0.01, weight_decay=0.1)
    result = train.fit(model, tx, losses.MSELoss(), (X_NUM.numpy(), X_CAT.numpy()), Y_TAB.numpy(), epochs=20,
                       verbose=False)  # fmt: skip
    moved = float(jnp.max(jnp.abs(result.model.fc1.kernel[...] - model.fc1.kernel[...])))
    print(f"fc1 moved by {moved}; last loss {result.losses[-1]:.4f}")
    return result.losses, moved


(t, t_moved), (f, f_moved) = tour.compare("layers.freeze vs requires_grad_(False)", torch_frozen, fnml_frozen)
tour.check("frozen: per-step loss (float32)", t, f, tol=1e-5)
tour.record("frozen layer untouched (max |change|)", max(t_moved, f_moved), tol=0.0)

# ---- 5. bfloat16 autocast ----------------------------------------------------------------------------

tour.section(
    "5. bfloat16 mixed precision",
    "float32 master weights and optimizer state; Linear layers compute in bfloat16, the loss in float32. "
    "Both sides round in slightly different places (see make_train_step's docstring), so the trajectories "
    "agree to bfloat16 level, not to float32 level.",
)
X_AC, Y_AC = torch.randn(64, 4), torch.randn(64, 1)


def torch_autocast():
    model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 1))
    model.load_state_dict(AC_INIT)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    step_losses = []
    for _ in range(20):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.mse_loss(model(X_AC), Y_AC)
        loss.backward()
        optimizer.step()
        step_losses.append(loss.item())
    print(f"weights {model[0].weight.dtype}; loss {step_losses[0]:.4f} -> {step_losses[-1]:.4f}")
    return np.array(step_losses)


def fnml_autocast():
    model = layers.Sequential(
        layers.Linear(4, 32, rngs=nnx.Rngs(0)), layers.ReLU(), layers.Linear(32, 1, rngs=nnx.Rngs(1))
    )
    interop.load_state_dict(model, AC_INIT)
    tx = optim.adam(lr=0.01)
    result = train.fit(model, tx, losses.MSELoss(), X_AC.numpy(), Y_AC.numpy(), epochs=20, autocast="bfloat16",
                       verbose=False)  # fmt: skip
    weights = result.state.params["layers"][0]["kernel"]
    print(f"weights {weights.dtype}; loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}")
    return result.losses


AC_INIT = {k: v.clone() for k, v in nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 1)).state_dict().items()}
t, f = tour.compare("autocast='bfloat16' vs torch.autocast('cpu', torch.bfloat16)", torch_autocast, fnml_autocast)
tour.check("bfloat16 autocast: per-step loss", t, f, tol=1e-2)
tour.finish()

"""11 transformer: a nanoGPT-style character model written natively in fnml, trained side by side with torch.

Token + position embeddings, pre-norm blocks with causal self-attention (``MultiheadAttention``) and a
GELU MLP, a final LayerNorm and an output head TIED to the token embedding (one parameter used twice).
The torch model is written the way nanoGPT writes it; the fnml model is written with fnml layers. Both
start from the same weights (torch's, loaded with ``interop.load_state_dict``) and train on the same
batches of a small text that ships with Python (the Zen of Python), dropout 0, AdamW. The fnml side is
``train.TrainState`` + ``train.make_train_step`` with ``optim.adamw``.
Run: ``python examples/11_transformer.py`` (``FNML_QUICK=1`` shortens the training run).
"""

from __future__ import annotations

import codecs
import contextlib
import io

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as TF
from flax import nnx

from fnml import functional as F
from fnml import interop, layers, losses, optim, train
from fnml.sidebyside import SideBySide, quick_mode

tour = SideBySide("11 transformer", "A nanoGPT-style model in fnml, trained side by side with the same torch model")
STEPS = 15 if quick_mode() else 40
BLOCK, EMBED, HEADS, LAYERS, BATCH = 16, 32, 2, 2, 8

with contextlib.redirect_stdout(io.StringIO()):  # `import this` prints the Zen; we only want its text
    import this
TEXT = codecs.decode(this.s, "rot13")
CHARS = sorted(set(TEXT))
VOCAB = len(CHARS)
DATA = np.array([CHARS.index(c) for c in TEXT], np.int64)  # character-level tokens


class TorchBlock(nn.Module):
    """Pre-norm block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(EMBED)
        self.attn = nn.MultiheadAttention(EMBED, HEADS, batch_first=True)
        self.ln_2 = nn.LayerNorm(EMBED)
        self.mlp = nn.Sequential(nn.Linear(EMBED, 4 * EMBED), nn.GELU(), nn.Linear(4 * EMBED, EMBED))

    def forward(self, x, mask):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False, is_causal=True)[0]
        return x + self.mlp(self.ln_2(x))


class TorchGPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, EMBED)
        self.wpe = nn.Embedding(BLOCK, EMBED)
        self.blocks = nn.ModuleList([TorchBlock() for _ in range(LAYERS)])
        self.ln_f = nn.LayerNorm(EMBED)
        self.lm_head = nn.Linear(EMBED, VOCAB, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying: one parameter, two uses
        nn.init.normal_(self.wte.weight, std=0.02)  # nanoGPT's init (torch's default is N(0, 1))

    def forward(self, idx):
        T = idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(T))
        mask = nn.Transformer.generate_square_subsequent_mask(T)
        for block in self.blocks:
            x = block(x, mask)
        return self.lm_head(self.ln_f(x))  # (B, T, vocab)


class Block(layers.Module):
    """The same block with fnml layers."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.ln_1 = layers.LayerNorm(EMBED)
        self.attn = layers.MultiheadAttention(EMBED, HEADS, batch_first=True, rngs=rngs)
        self.ln_2 = layers.LayerNorm(EMBED)
        self.mlp = layers.Sequential(
            layers.Linear(EMBED, 4 * EMBED, rngs=rngs), layers.GELU(), layers.Linear(4 * EMBED, EMBED, rngs=rngs)
        )

    def __call__(self, x, mask):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False, is_causal=True)[0]
        return x + self.mlp(self.ln_2(x))


class GPT(layers.Module):
    """The head reuses wte.weight (V, C) through F.linear, whose weight is torch's (out, in): no copy."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.wte = layers.Embedding(VOCAB, EMBED, rngs=rngs)
        self.wpe = layers.Embedding(BLOCK, EMBED, rngs=rngs)
        self.blocks = layers.ModuleList([Block(rngs=rngs) for _ in range(LAYERS)])
        self.ln_f = layers.LayerNorm(EMBED)

    def __call__(self, idx):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(jnp.arange(T))
        mask = layers.Transformer.generate_square_subsequent_mask(T)
        for block in self.blocks:
            x = block(x, mask)
        return F.linear(self.ln_f(x), self.wte.weight[...])  # tied head: (B, T, C) -> (B, T, vocab)


# Shared inputs: torch draws the initial weights, numpy draws the batches; both sides use the same values.
torch.manual_seed(0)
INITIAL = {k: v.clone() for k, v in TorchGPT().state_dict().items()}
_rng = np.random.default_rng(0)
_starts = _rng.integers(0, len(DATA) - BLOCK - 1, size=(STEPS, BATCH))
BATCHES = [
    (np.stack([DATA[s : s + BLOCK] for s in row]), np.stack([DATA[s + 1 : s + BLOCK + 1] for s in row]))
    for row in _starts
]
X0, Y0 = BATCHES[0]


def load_fnml_model():
    model = GPT(rngs=nnx.Rngs(0))
    # torch's state_dict lists the tied tensor twice (wte.weight, lm_head.weight); fnml has it once.
    interop.load_state_dict(model, {k: v for k, v in INITIAL.items() if k != "lm_head.weight"})
    return model


tour.section(
    "The model",
    f"Character-level text: the Zen of Python ({len(TEXT)} characters, vocabulary {VOCAB}). "
    f"{LAYERS} blocks, {HEADS} heads, embedding {EMBED}, context {BLOCK}. Same weights on both sides.",
)


def torch_model_view():
    model = TorchGPT()
    model.load_state_dict(INITIAL)
    print(model.blocks[0])
    print("parameters:", sum(p.numel() for p in model.parameters()))
    print("lm_head.weight is wte.weight:", model.lm_head.weight is model.wte.weight)
    return len(list(model.parameters()))


def fnml_model_view():
    model = load_fnml_model()
    print(model.blocks[0])
    params = nnx.state(model, nnx.Param)
    print("parameters:", sum(p.size for p in jax.tree.leaves(params)))
    print("head = F.linear(x, wte.weight): no lm_head parameter")
    return len(jax.tree.leaves(params))


t_count, f_count = tour.compare("print(model.blocks[0]) and the parameter count", torch_model_view, fnml_model_view)
tour.record("parameter tensors (torch's tied weight counted once)", float(abs(t_count - f_count)), tol=0.0)

tour.section(
    "Forward and the tied gradient",
    "The tied weight receives ONE gradient: the sum of its use as the embedding and as the output head.",
)


def torch_tied_gradient():
    model = TorchGPT()
    model.load_state_dict(INITIAL)
    logits = model(torch.tensor(X0))
    loss = TF.cross_entropy(logits.reshape(-1, VOCAB), torch.tensor(Y0).reshape(-1))
    loss.backward()
    print(f"loss {loss.item():.6f}")
    print(f"|grad wte.weight| = {model.wte.weight.grad.norm():.6f}")
    return logits.detach(), model.wte.weight.grad


def fnml_tied_gradient():
    model = load_fnml_model()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(params):
        logits = nnx.merge(graphdef, params, rest)(jnp.asarray(X0))
        return losses.cross_entropy(logits.reshape(-1, VOCAB), jnp.asarray(Y0).reshape(-1)), logits

    (loss, logits), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
    print(f"loss {float(loss):.6f}")
    print(f"|grad wte.weight| = {jnp.linalg.norm(grads['wte']['weight'][...]):.6f}")
    return logits, grads["wte"]["weight"][...]


(t_logits, t_grad), (f_logits, f_grad) = tour.compare(
    "loss.backward() vs jax.value_and_grad", torch_tied_gradient, fnml_tied_gradient
)
tour.check("logits (float32)", t_logits, f_logits, tol=1e-5)
tour.check("gradient of the tied weight (float32)", t_grad, f_grad, tol=1e-5)

tour.section(
    f"Training: {STEPS} AdamW steps on the same batches",
    "Left: nanoGPT's loop. Right: TrainState + make_train_step(loss_fn=...) with optim.adamw (torch's "
    "AdamW semantics, weight_decay=0.01 on every parameter as torch's single group does).",
)


def torch_training():
    model = TorchGPT()
    model.load_state_dict(INITIAL)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for step, (x, y) in enumerate(BATCHES):
        logits = model(torch.tensor(x))
        loss = TF.cross_entropy(logits.reshape(-1, VOCAB), torch.tensor(y).reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
        if step % 5 == 0 or step == STEPS - 1:
            print(f"step {step + 1:3d}  loss {loss.item():.6f}")
    return history, {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}


def fnml_training():
    model = load_fnml_model()

    def loss_fn(model, x, y):
        logits = model(x)
        return losses.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))

    state = train.TrainState.create(model, optim.adamw(lr=3e-3))
    step_fn = train.make_train_step(loss_fn=loss_fn)
    history = []
    for step, (x, y) in enumerate(BATCHES):
        state, loss = step_fn(state, jnp.asarray(x), jnp.asarray(y))
        history.append(float(loss))
        if step % 5 == 0 or step == STEPS - 1:
            print(f"step {step + 1:3d}  loss {float(loss):.6f}")
    return history, interop.state_dict(train.to_module(state))


(t_losses, t_state), (f_losses, f_state) = tour.compare(f"{STEPS}-step training loop", torch_training, fnml_training)
tour.check(f"per-step losses ({STEPS} steps, float32)", t_losses, f_losses, tol=1e-4)
KEY_BIAS = slice(EMBED, 2 * EMBED)  # in_proj_bias = [query bias | key bias | value bias]


def split_key_bias(state):
    """(every parameter with the key-bias thirds of in_proj_bias removed, the key-bias thirds)."""
    rest, key_bias = {}, {}
    for name, value in state.items():
        value = np.asarray(value)
        if name.endswith("attn.in_proj_bias"):
            key_bias[name] = value[KEY_BIAS]
            value = np.concatenate([value[: KEY_BIAS.start], value[KEY_BIAS.stop :]])
        rest[name] = value
    return rest, key_bias


(t_rest, t_key), (f_rest, f_key) = split_key_bias(t_state), split_key_bias(f_state)
tour.check("final parameters (float32), key biases aside", t_rest, f_rest, tol=1e-4)
tour.section(
    "Why the key biases are set aside",
    "A key bias adds q . b_k to every score of a query row; softmax ignores a constant per row, so its exact "
    "gradient is 0. Both frameworks compute it as rounding noise (~1e-10), and Adam divides by sqrt(v): noise "
    "becomes steps of size ~lr in directions that differ between torch and XLA. That is Adam on a null "
    "direction, not a difference in the model: the losses above agree.",
)
tour.record(
    "final key biases: max |difference| (Adam on rounding noise, bounded by lr * steps)",
    max(float(np.max(np.abs(t_key[k] - f_key[k]))) for k in t_key),
    tol=3e-3 * STEPS,
)
tour.finish()

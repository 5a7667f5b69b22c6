"""05b port a model: a nanoGPT-style GPT moves to fnml with ``interop.from_torch`` and fine-tunes side by side.

The GPT is written the way nanoGPT writes it: an ``assert`` on the sequence length, a causal-mask buffer
sliced by ``T``, ``torch.arange(t, device=idx.device)``, and the language-model head TIED to the token
embedding. ``interop.from_torch(model, example_idx)`` runs that forward on an example batch (torch.export),
builds an fnml twin with the same weights (one shared parameter for the tied pair), and the twin then runs
on other batch sizes, differentiates and trains like the torch model.
Run: ``python examples/05b_port_a_model.py`` (``FNML_QUICK=1`` shortens the fine-tuning run).
"""

from __future__ import annotations

import copy
import math

import jax.numpy as jnp
import torch
import torch.nn as nn
import torch.nn.functional as F

from fnml import interop, losses, optim, parity, train
from fnml.sidebyside import SideBySide, quick_mode

tour = SideBySide(
    "05b port a model", "from_torch: a nanoGPT-style GPT and its fnml twin, forward, gradients, fine-tuning"
)
STEPS = 20 if quick_mode() else 60
VOCAB, BLOCK = 32, 16


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head, block_size, dropout):
        super().__init__()
        assert n_embd % n_head == 0
        # nanoGPT's bias=False: a key bias has a zero gradient up to rounding, which Adam would magnify.
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=False)
        self.attn_dropout, self.resid_dropout = nn.Dropout(dropout), nn.Dropout(dropout)
        self.n_head, self.n_embd = n_head, n_embd
        mask = torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size)
        self.register_buffer("bias", mask)  # the causal mask, sliced to T in forward

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        att = self.attn_dropout(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)  # (B, nh, T, hs) -> (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, block_size, dropout):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size, dropout)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """What a PyTorch user writes (nanoGPT's model.py, smaller)."""

    def __init__(self, vocab_size=VOCAB, block_size=BLOCK, n_layer=2, n_head=2, n_embd=16, dropout=0.0):
        super().__init__()
        self.block_size = block_size
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(vocab_size, n_embd),
                wpe=nn.Embedding(block_size, n_embd),
                drop=nn.Dropout(dropout),
                h=nn.ModuleList([Block(n_embd, n_head, block_size, dropout) for _ in range(n_layer)]),
                ln_f=nn.LayerNorm(n_embd),
            )
        )
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying

    def forward(self, idx):
        device = idx.device
        b, t = idx.size()
        assert t <= self.block_size, f"Cannot forward sequence of length {t}, block size is only {self.block_size}"
        pos = torch.arange(0, t, dtype=torch.long, device=device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


torch.manual_seed(0)
MODEL = GPT()
# Data drawn once by torch and shared with the fnml column: next-token prediction on random sequences.
generator = torch.Generator().manual_seed(1)
SEQUENCES = torch.randint(0, VOCAB, (6, 8, BLOCK + 1), generator=generator)
BATCHES = [(seq[:, :-1], seq[:, 1:]) for seq in SEQUENCES]  # (x, y): (8, T) token ids, y shifted by one
X, Y = BATCHES[0]
EXAMPLE = torch.randint(0, VOCAB, (2, BLOCK), generator=generator)  # the capture's example: batch 2
TRAIN_TORCH = copy.deepcopy(MODEL)

tour.section(
    "Port",
    "from_torch runs forward() once on an example batch (torch.export: the assert, the mask slicing and "
    "arange(T) just run) and builds fnml layers with the same weights, under torch's names.",
)


def torch_port():
    print(MODEL)
    return dict(MODEL.state_dict())


def fnml_port():
    twin = interop.from_torch(MODEL, EXAMPLE)
    print(twin)
    return interop.state_dict(twin)


t, f = tour.compare("The model and its twin", torch_port, fnml_port)
tour.check("state_dict (torch names, torch layouts, tied weight under both names)", t, f, tol=0.0)
TWIN = interop.from_torch(MODEL, EXAMPLE)
tour.record(
    "tied weights: one parameter in the twin (0 = shared)",
    float(TWIN.lm_head.weight is not TWIN.transformer.wte.weight),
    tol=0.0,
)

tour.section("Forward on another batch size (8, the example had 2): no new capture")


def torch_forward():
    with torch.no_grad():
        out = MODEL.eval()(X)
    print(out[0, :2, :4])
    return out


def fnml_forward():
    out = TWIN.eval()(jnp.asarray(X.numpy()))
    print(out[0, :2, :4])
    return out


t, f = tour.compare("model(idx)", torch_forward, fnml_forward)
tour.check("logits (8, T, vocab)", t, f, tol=1e-5)


def torch_criterion(logits, y):
    return F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))


def fnml_criterion(logits, y):
    return losses.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))  # (B*T, V), (B*T,)


tour.section("Gradients: the tied weight gets ONE gradient, the sum of its two uses (as in torch)")
report = parity.compare_gradients(MODEL.train(), TWIN.train(), X, Y, (torch_criterion, fnml_criterion))
tour.console.print(report)
tour.record("compare_gradients: max abs diff (every parameter)", report.max_abs_diff, tol=1e-5)

tour.section(
    f"Fine-tuning: {STEPS} AdamW steps on the same batches",
    "The fnml side is train.TrainState + train.make_train_step (one jitted pure step; the tied parameter "
    "is one leaf, so one update).",
)


def torch_finetune():
    model = TRAIN_TORCH.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    history = []
    for step in range(STEPS):
        x, y = BATCHES[step % len(BATCHES)]
        optimizer.zero_grad()
        loss = torch_criterion(model(x), y)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
        if step % 10 == 0 or step == STEPS - 1:
            print(f"step {step + 1:3d}  loss {loss.item():.6f}")
    return history, dict(model.state_dict())


def fnml_finetune():
    twin = interop.from_torch(MODEL, EXAMPLE).train()
    state = train.TrainState.create(twin, optim.adamw(lr=3e-3, weight_decay=0.1))
    step_fn = train.make_train_step(fnml_criterion)
    history = []
    for step in range(STEPS):
        x, y = BATCHES[step % len(BATCHES)]
        state, loss = step_fn(state, jnp.asarray(x.numpy()), jnp.asarray(y.numpy()))
        history.append(float(loss))
        if step % 10 == 0 or step == STEPS - 1:
            print(f"step {step + 1:3d}  loss {float(loss):.6f}")
    return history, interop.state_dict(state.model())


(t_losses, t_state), (f_losses, f_state) = tour.compare(f"{STEPS}-step fine-tuning", torch_finetune, fnml_finetune)
tour.check(f"per-step losses ({STEPS} steps)", t_losses, f_losses, tol=1e-4)
tour.check("final parameters (tied weight included)", t_state, f_state, tol=1e-4)

tour.section(
    "The porting recipe",
    "twin = interop.from_torch(model, example_x); parity.compare_training(...) runs both step by step and "
    "names the first step and parameter that drift past the tolerance; first_divergence names the first "
    "module that differs.",
)
RECIPE_TORCH = copy.deepcopy(MODEL).train()
recipe = parity.compare_training(
    RECIPE_TORCH,
    torch.optim.AdamW(RECIPE_TORCH.parameters(), lr=3e-3, weight_decay=0.1),
    torch_criterion,
    interop.from_torch(RECIPE_TORCH, EXAMPLE).train(),
    optim.adamw(lr=3e-3, weight_decay=0.1),
    fnml_criterion,
    BATCHES,
    steps=len(BATCHES),
)
tour.console.print(recipe)
tour.record("compare_training: max per-step loss diff", recipe.max_loss_diff, tol=1e-4)
tour.record("compare_training: max final parameter diff", recipe.max_param_diff, tol=1e-4)
divergence = parity.first_divergence(copy.deepcopy(MODEL).eval(), TWIN.eval(), X)
tour.record("first_divergence: modules that differ (eval)", float(divergence.first_divergent is not None), tol=0.0)
tour.finish()

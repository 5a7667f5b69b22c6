"""The benchmark workloads W1..W4 of issue 7, defined once for both frameworks.

Every workload has the same shapes, initial weights, data and hyperparameters on both sides: torch
draws the weights and data (seeded), and the fnml twin loads them through ``fnml.interop``. Each
``build_*`` returns a :class:`Workload` whose runners each execute ``k`` optimizer steps and block
until the result is ready (torch CPU is synchronous; JAX dispatches asynchronously, so every fnml
runner ends with ``jax.block_until_ready``).

- W1 the tutorial model: SimpleNN 2-2-1, MSE, Adam lr=1e-3, full batch X (10, 2), 100 steps.
- W2 MLP 784-512-512-10, ReLU, cross-entropy, Adam lr=1e-3, batch 128.
- W3 CNN on 1x28x28: Conv(32, 3x3) - ReLU - MaxPool 2 - Conv(64, 3x3) - ReLU - MaxPool 2 - Linear(10),
  batch 64, SGD lr=0.01 momentum 0.9.
- W4 LSTM: 1 layer, input 32, hidden 128, sequence 50, batch 32, Linear(128, 10) head on the last
  step's output, cross-entropy, Adam lr=1e-3.

Implementations: ``torch_eager`` (the tutorial loop: zero_grad, forward, loss, backward, step),
``torch_compile`` (the same loop with ``torch.compile(model)``; the optimizer step stays eager, as in
the usual recipe), ``fnml_jit`` (``fnml.train.make_train_step``: one jitted pure step per iteration),
``fnml_fused`` (``k`` steps in one jitted ``lax.scan``: what ``fit(fused=True)`` runs).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn as nn
from flax import nnx

from fnml import functional as F
from fnml import interop, layers, losses, optim, train

# --------------------------------------------------------------------------------------------------
# Models, torch side and fnml side (same architecture, same state_dict names)
# --------------------------------------------------------------------------------------------------


class TorchSimpleNN(nn.Module):
    """The tutorial's SimpleNN: Linear(2, 2) - ReLU - Linear(2, 1)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(2, 2)
        self.fc2 = nn.Linear(2, 1)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def torch_mlp() -> nn.Module:
    """W2's MLP 784-512-512-10."""
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))


def fnml_mlp() -> nnx.Module:
    """W2's MLP, fnml layers."""
    rngs = nnx.Rngs(0)
    return layers.Sequential(
        layers.Linear(784, 512, rngs=rngs),
        layers.ReLU(),
        layers.Linear(512, 512, rngs=rngs),
        layers.ReLU(),
        layers.Linear(512, 10, rngs=rngs),
    )


def torch_cnn() -> nn.Module:
    """W3's CNN on NCHW (N, 1, 28, 28): 28 -conv3-> 26 -pool-> 13 -conv3-> 11 -pool-> 5; 64*5*5 = 1600."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 5 * 5, 10),
    )


def fnml_cnn() -> nnx.Module:
    """W3's CNN, fnml layers on NHWC (N, 28, 28, 1); interop maps the flatten order to torch's."""
    rngs = nnx.Rngs(0)
    return layers.Sequential(
        layers.Conv2d(1, 32, 3, rngs=rngs),
        layers.ReLU(),
        layers.MaxPool2d(2),
        layers.Conv2d(32, 64, 3, rngs=rngs),
        layers.ReLU(),
        layers.MaxPool2d(2),
        layers.Flatten(),
        layers.Linear(64 * 5 * 5, 10, rngs=rngs),
    )


class TorchLSTMHead(nn.Module):
    """W4: LSTM(32, 128) over (T, N, 32), Linear(128, 10) on the last step's output."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(32, 128)
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        output, _ = self.lstm(x)  # (T, N, 32) -> (T, N, 128)
        return self.head(output[-1])  # (N, 128) -> (N, 10)


class FnmlLSTMHead(nnx.Module):
    """W4, fnml layers (same attribute names as the torch module, so state_dicts match)."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.lstm = layers.LSTM(32, 128, rngs=rngs)
        self.head = layers.Linear(128, 10, rngs=rngs)

    def __call__(self, x):
        output, _ = self.lstm(x)  # (T, N, 32) -> (T, N, 128)
        return self.head(output[-1])  # (N, 128) -> (N, 10)


# W6 GPT (nanoGPT's model.py, flash-attention form) and W7 ResNet (torchvision's BasicBlock), both sides.
# The fnml models keep torch's attribute names, so ``interop.load_state_dict`` copies torch's weights.


class TorchCausalSelfAttention(nn.Module):
    """nanoGPT's attention: one c_attn Linear(C, 3C), F.scaled_dot_product_attention(is_causal=True), c_proj.

    c_attn has no bias: a key bias has an exactly-zero gradient, whose rounding noise Adam would magnify
    into differences between the frameworks (the query/value biases are harmless but share the Linear).
    """

    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.n_head = n_head

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, 3C) -> 3 x (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, nh, T, hs) -> (B, T, C)
        return self.c_proj(y)


class TorchGPTBlock(nn.Module):
    """Pre-norm block: x + attn(ln_1(x)), then x + mlp(ln_2(x)) with a GELU MLP C-4C-C."""

    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = TorchCausalSelfAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TorchGPT(nn.Module):
    """W6: token + position embeddings, ``n_layer`` blocks, final LayerNorm, head tied to wte."""

    def __init__(self, vocab: int = 256, block: int = 64, n_layer: int = 4, n_head: int = 4, n_embd: int = 128):
        super().__init__()
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(block, n_embd)
        self.h = nn.ModuleList([TorchGPTBlock(n_embd, n_head) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying (nanoGPT): one parameter, two uses
        nn.init.normal_(self.wte.weight, std=0.02)

    def forward(self, idx):
        T = idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(0, T, dtype=torch.long))  # (B, T) -> (B, T, C)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))  # (B, T, vocab)


def _sdpa_heads_first(q, k, v, n_head: int):
    """torch's form: (B, T, C) -> (B, nh, T, hs), F.scaled_dot_product_attention, back to (B, T, C)."""
    B, T, C = q.shape
    heads = lambda a: a.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)  # noqa: E731 (B, nh, T, hs)
    y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True)
    return y.transpose(0, 2, 1, 3).reshape(B, T, C)  # (B, nh, T, hs) -> (B, T, C)


def _attention_einsum(q, k, v, n_head: int):
    """The same attention on (B, T, nh, hs) with einsums (no explicit transposes) and a plain softmax.

    Exact for causal masks (every row keeps its diagonal, so no row is fully masked).
    """
    B, T, C = q.shape
    q, k, v = (a.reshape(B, T, n_head, C // n_head) for a in (q, k, v))  # (B, T, nh, hs)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * jnp.asarray(1.0 / np.sqrt(C // n_head), q.dtype)
    causal = jnp.tril(jnp.ones((T, T), bool))
    scores = jnp.where(causal, scores, jnp.asarray(-jnp.inf, scores.dtype))
    weights = jax.nn.softmax(scores, axis=-1)  # (B, nh, T, T)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(B, T, C)  # (B, T, nh, hs) -> (B, T, C)


ATTENTION_FORMS = {"sdpa": _sdpa_heads_first, "einsum": _attention_einsum}


class FnmlCausalSelfAttention(layers.Module):
    """W6 attention with fnml layers; ``attention`` picks the formulation (see ATTENTION_FORMS)."""

    def __init__(self, n_embd: int, n_head: int, *, attention: str, param_dtype, rngs: nnx.Rngs):
        self.c_attn = layers.Linear(n_embd, 3 * n_embd, bias=False, param_dtype=param_dtype, rngs=rngs)
        self.c_proj = layers.Linear(n_embd, n_embd, param_dtype=param_dtype, rngs=rngs)
        self.n_head = n_head
        self.attention = attention

    def __call__(self, x, seq_len: int | None = None):
        """``x``: (B, T, C), or (B*T, C) tokens with ``seq_len=T`` (the "flat" formulation)."""
        q, k, v = jnp.split(self.c_attn(x), 3, axis=-1)  # (*, 3C) -> 3 x (*, C)
        if seq_len is None:
            return self.c_proj(ATTENTION_FORMS[self.attention](q, k, v, self.n_head))
        bt, c = q.shape
        q, k, v = (a.reshape(bt // seq_len, seq_len, c) for a in (q, k, v))  # (B*T, C) -> (B, T, C)
        y = ATTENTION_FORMS[self.attention](q, k, v, self.n_head)
        return self.c_proj(y.reshape(bt, c))  # (B, T, C) -> (B*T, C)


class FnmlGPTBlock(layers.Module):
    def __init__(self, n_embd: int, n_head: int, *, attention: str, param_dtype, rngs: nnx.Rngs):
        self.ln_1 = layers.LayerNorm(n_embd, param_dtype=param_dtype)
        self.attn = FnmlCausalSelfAttention(n_embd, n_head, attention=attention, param_dtype=param_dtype, rngs=rngs)
        self.ln_2 = layers.LayerNorm(n_embd, param_dtype=param_dtype)
        self.mlp = layers.Sequential(
            layers.Linear(n_embd, 4 * n_embd, param_dtype=param_dtype, rngs=rngs),
            layers.GELU(),
            layers.Linear(4 * n_embd, n_embd, param_dtype=param_dtype, rngs=rngs),
        )

    def __call__(self, x, seq_len: int | None = None):
        x = x + self.attn(self.ln_1(x), seq_len)
        return x + self.mlp(self.ln_2(x))


class FnmlGPT(layers.Module):
    """W6 with fnml layers; the head is ``F.linear(x, wte.weight)`` (tied: one parameter).

    ``flat=True`` runs every Linear/LayerNorm/GELU on (B*T, C) tokens and reshapes to (B, T, ...) only
    for attention: XLA CPU's gradient of a 3-D (B, T, C) matmul followed by the erf GELU is ~2.7x slower
    than the 2-D one (benchmarks/README.md, issue 15). Same numbers either way.
    """

    def __init__(
        self,
        vocab: int = 256,
        block: int = 64,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        *,
        attention: str = "sdpa",
        flat: bool = True,
        param_dtype=jnp.float32,
    ):
        rngs = nnx.Rngs(0)
        self.flat = flat
        self.wte = layers.Embedding(vocab, n_embd, param_dtype=param_dtype, rngs=rngs)
        self.wpe = layers.Embedding(block, n_embd, param_dtype=param_dtype, rngs=rngs)
        options = dict(attention=attention, param_dtype=param_dtype, rngs=rngs)
        self.h = layers.ModuleList([FnmlGPTBlock(n_embd, n_head, **options) for _ in range(n_layer)])
        self.ln_f = layers.LayerNorm(n_embd, param_dtype=param_dtype)

    def __call__(self, idx):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(jnp.arange(T))  # (B, T) -> (B, T, C)
        if not self.flat:
            for block in self.h:
                x = block(x)
            return F.linear(self.ln_f(x), self.wte.weight[...])  # tied head: (B, T, C) -> (B, T, vocab)
        x = x.reshape(B * T, -1)  # (B, T, C) -> (B*T, C) tokens
        for block in self.h:
            x = block(x, T)
        logits = F.linear(self.ln_f(x), self.wte.weight[...])  # tied head: (B*T, C) -> (B*T, vocab)
        return logits.reshape(B, T, -1)  # (B*T, vocab) -> (B, T, vocab)


def gpt_state_dict_for_fnml(state_dict: dict) -> dict:
    """torch's GPT state_dict without the tied duplicate (fnml holds wte.weight once)."""
    return {k: v for k, v in state_dict.items() if k != "lm_head.weight"}


def gpt_flops(batch: int, block: int, n_layer: int, n_embd: int, vocab: int) -> float:
    """Matmul FLOPs of one training step (forward x 3: input and weight gradients)."""
    tokens = batch * block
    per_layer = 2 * tokens * n_embd * n_embd * (3 + 1 + 4 + 4) + 2 * 2 * batch * block * block * n_embd
    return 3.0 * (n_layer * per_layer + 2 * tokens * n_embd * vocab)


class TorchBasicBlock(nn.Module):
    """torchvision's BasicBlock: conv3x3-BN-ReLU-conv3x3-BN + (identity | conv1x1-BN), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


RESNET_WIDTHS = (16, 32, 64)


def _stages(widths) -> list[tuple[int, int, int]]:
    """(in_channels, out_channels, stride) of each BasicBlock: stride 1 first, then 2 (halving the map)."""
    cins = (widths[0],) + tuple(widths[:-1])
    return [(ci, co, 1 if i == 0 else 2) for i, (ci, co) in enumerate(zip(cins, widths))]


class TorchResNet(nn.Module):
    """W7: stem conv3x3(3, 16)-BN-ReLU, BasicBlocks 16 (stride 1), 32 (2), 64 (2), global avg pool, fc."""

    def __init__(self, widths=RESNET_WIDTHS, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.blocks = nn.Sequential(*[TorchBasicBlock(*stage) for stage in _stages(widths)])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        x = self.blocks(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))  # (N, C, 1, 1) -> (N, C)


class FnmlBasicBlock(layers.Module):
    """TorchBasicBlock with fnml layers, NHWC."""

    def __init__(self, cin: int, cout: int, stride: int, *, param_dtype, rngs: nnx.Rngs):
        kw = dict(param_dtype=param_dtype)
        self.conv1 = layers.Conv2d(cin, cout, 3, stride, 1, bias=False, rngs=rngs, **kw)
        self.bn1 = layers.BatchNorm2d(cout, **kw)
        self.relu = layers.ReLU()
        self.conv2 = layers.Conv2d(cout, cout, 3, 1, 1, bias=False, rngs=rngs, **kw)
        self.bn2 = layers.BatchNorm2d(cout, **kw)
        shortcut = stride != 1 or cin != cout
        self.downsample = (
            layers.Sequential(
                layers.Conv2d(cin, cout, 1, stride, bias=False, rngs=rngs, **kw), layers.BatchNorm2d(cout, **kw)
            )
            if shortcut
            else None
        )

    def __call__(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class FnmlResNet(layers.Module):
    """W7 with fnml layers on NHWC (N, 32, 32, 3); the 1x1 pooled map flattens as torch's NCHW does."""

    def __init__(self, widths=RESNET_WIDTHS, num_classes: int = 10, *, param_dtype=jnp.float32):
        rngs, kw = nnx.Rngs(0), dict(param_dtype=param_dtype)
        self.conv1 = layers.Conv2d(3, widths[0], 3, 1, 1, bias=False, rngs=rngs, **kw)
        self.bn1 = layers.BatchNorm2d(widths[0], **kw)
        self.relu = layers.ReLU()
        self.blocks = layers.Sequential(*[FnmlBasicBlock(*stage, rngs=rngs, **kw) for stage in _stages(widths)])
        self.avgpool = layers.AdaptiveAvgPool2d(1)
        self.fc = layers.Linear(widths[-1], num_classes, rngs=rngs, **kw)

    def __call__(self, x):
        x = self.blocks(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.avgpool(x).reshape(x.shape[0], -1))  # (N, 1, 1, C) -> (N, C)


def resnet_flops(batch: int, size: int = 32, widths=RESNET_WIDTHS) -> float:
    """Convolution + fc FLOPs of one training step (forward x 3; the stem's input gradient included)."""
    total, hw, cin = 2 * batch * size * size * 3 * widths[0] * 9, size, widths[0]
    for i, cout in enumerate(widths):
        stride = 1 if i == 0 else 2
        hw //= stride
        total += 2 * batch * hw * hw * cout * (cin * 9 + cout * 9)
        if stride != 1 or cin != cout:
            total += 2 * batch * hw * hw * cout * cin
        cin = cout
    return 3.0 * (total + 2 * batch * widths[-1] * 10)


# --------------------------------------------------------------------------------------------------
# Workload description
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Workload:
    """One workload: runners ``name -> run(k)`` (k optimizer steps, result ready on return)."""

    name: str
    description: str
    steps_per_block: int  # k used for timing: one timed block runs this many steps
    runners: dict[str, Callable[[int], None]]
    compile_seconds: dict[str, float]  # first-call cost per implementation (compilation included)
    flops_per_step: float | None = None  # forward + backward matmul FLOPs, for throughput
    port_seconds: float | None = None  # W6/W7: interop.from_torch's capture time


def _torch_loop(model: nn.Module, criterion, optimizer, batches: Callable[[int], tuple]) -> Callable[[int], None]:
    """The tutorial loop, k steps; batch i comes from ``batches(i)``."""

    def run(k: int) -> None:
        for i in range(k):
            x, y = batches(i)
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()

    return run


def _timed_first_call(run: Callable[[int], None], k: int) -> float:
    """Seconds of the first ``run(k)`` (compilation included)."""
    start = time.perf_counter()
    run(k)
    return time.perf_counter() - start


def _fnml_runners(
    model: nnx.Module,
    tx,
    criterion,
    xs: jax.Array,
    ys: jax.Array,
    *,
    fused: bool,
    donate: bool,
    k_fused: int,
) -> dict[str, Callable[[int], None]]:
    """fnml_jit (one jitted step per iteration) and fnml_fused (k steps in one lax.scan).

    ``xs``/``ys`` hold ``B`` batches on a leading axis (B = 1 for full-batch workloads); step i uses
    batch ``i % B``. The fused runner scans over exactly ``k_fused`` stacked batches.
    """
    step = train.make_train_step(criterion, donate=donate)
    box = {"state": train.TrainState.create(model, tx)}
    num_batches = xs.shape[0]
    batch_list = [(xs[i], ys[i]) for i in range(num_batches)]

    def run_jit(k: int) -> None:
        state = box["state"]
        loss = None
        for i in range(k):
            x, y = batch_list[i % num_batches]
            state, loss = step(state, x, y)
        box["state"] = state
        jax.block_until_ready(loss)

    runners = {"fnml_jit": run_jit}
    if fused:
        # (k_fused, B, ...) stacked batches: step i reads batch i % num_batches, as run_jit.
        order = np.arange(k_fused) % num_batches
        xs_k, ys_k = xs[order], ys[order]
        pure = train._pure_train_step(criterion)  # the un-jitted step fit's fused path scans (private)

        def scan_steps(state, xs_k, ys_k):
            if num_batches == 1:
                # Full batch (W1, the tutorial): every step sees the same (X, Y), as the torch loop does.
                x, y = xs_k[0], ys_k[0]
                return jax.lax.scan(lambda s, _: pure(s, x, y), state, None, length=k_fused)
            return jax.lax.scan(lambda s, b: pure(s, b[0], b[1]), state, (xs_k, ys_k))

        fused_fn = jax.jit(scan_steps, donate_argnums=(0,) if donate else ())
        fbox = {"state": train.TrainState.create(model, tx)}

        def run_fused(k: int) -> None:
            if k % k_fused:
                raise ValueError(f"fused runner: k={k} must be a multiple of {k_fused}")
            state = fbox["state"]
            losses_ = None
            for _ in range(k // k_fused):
                state, losses_ = fused_fn(state, xs_k, ys_k)
            fbox["state"] = state
            jax.block_until_ready(losses_)

        runners["fnml_fused"] = run_fused
    return runners


def _compiled(model: nn.Module) -> nn.Module | None:
    """``torch.compile(model)`` or None when torch.compile is unusable here."""
    try:
        return torch.compile(model)
    except Exception:  # noqa: BLE001 - reported as unavailable
        return None


def _finish(
    name: str,
    description: str,
    k: int,
    torch_builder: Callable[[bool], Callable[[int], None]],
    fnml_runners: dict[str, Callable[[int], None]],
    *,
    with_compile: bool,
    flops: float | None = None,
) -> Workload:
    """Assemble a Workload: build torch runners, run every runner once (first-call cost recorded)."""
    runners: dict[str, Callable[[int], None]] = {"torch_eager": torch_builder(False)}
    if with_compile:
        runners["torch_compile"] = torch_builder(True)
    runners.update(fnml_runners)
    compile_seconds = {}
    for label, run in runners.items():
        try:
            compile_seconds[label] = _timed_first_call(run, k)
        except Exception as error:  # noqa: BLE001 - torch.compile may fail on this machine
            if label != "torch_compile":
                raise
            compile_seconds[label] = float("nan")
            runners[label] = None
            print(f"  {name}: torch.compile failed: {type(error).__name__}: {str(error)[:200]}")
    runners = {label: run for label, run in runners.items() if run is not None}
    return Workload(name, description, k, runners, compile_seconds, flops)


# --------------------------------------------------------------------------------------------------
# W1 .. W4
# --------------------------------------------------------------------------------------------------


def build_w1(*, with_compile: bool = True) -> Workload:
    """W1: the tutorial model, 100 full-batch Adam steps per block."""
    torch.manual_seed(0)
    initial = TorchSimpleNN().state_dict()
    x, y = torch.randn(10, 2), torch.randn(10, 1)

    def torch_builder(compiled: bool):
        model = TorchSimpleNN()
        model.load_state_dict(initial)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        net = _compiled(model) if compiled else model
        return _torch_loop(net, nn.MSELoss(), optimizer, lambda i: (x, y))

    model = layers.SimpleNN(rngs=nnx.Rngs(0))
    interop.load_state_dict(model, initial)
    fnml = _fnml_runners(
        model,
        optim.adam(lr=1e-3),
        losses.MSELoss(),
        jnp.asarray(x.numpy())[None],
        jnp.asarray(y.numpy())[None],
        fused=True,
        donate=False,
        k_fused=100,
    )
    return _finish(
        "W1",
        "SimpleNN 2-2-1, MSE, Adam, X (10, 2) full batch",
        100,
        torch_builder,
        fnml,
        with_compile=with_compile,
    )


def build_w2(*, with_compile: bool = True, donate: bool = True) -> Workload:
    """W2: MLP 784-512-512-10, Adam, batch 128; 8 distinct batches cycled (20 steps per block)."""
    torch.manual_seed(0)
    initial = torch_mlp().state_dict()
    xs, ys = torch.randn(8, 128, 784), torch.randint(0, 10, (8, 128))
    k = 20

    def torch_builder(compiled: bool):
        model = torch_mlp()
        model.load_state_dict(initial)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        net = _compiled(model) if compiled else model
        return _torch_loop(net, nn.CrossEntropyLoss(), optimizer, lambda i: (xs[i % 8], ys[i % 8]))

    model = fnml_mlp()
    interop.load_state_dict(model, initial)
    fnml = _fnml_runners(
        model,
        optim.adam(lr=1e-3),
        losses.CrossEntropyLoss(),
        jnp.asarray(xs.numpy()),
        jnp.asarray(ys.numpy().astype(np.int32)),
        fused=True,
        donate=donate,
        k_fused=k,
    )
    # forward 2*B*(784*512 + 512*512 + 512*10); backward twice that (input grads + weight grads)
    flops = 3 * 2 * 128 * (784 * 512 + 512 * 512 + 512 * 10)
    return _finish(
        "W2",
        "MLP 784-512-512-10, CE, Adam, batch 128",
        k,
        torch_builder,
        fnml,
        with_compile=with_compile,
        flops=flops,
    )


def build_w3(*, with_compile: bool = True, fused: bool = True) -> Workload:
    """W3: the small CNN, SGD momentum 0.9, batch 64; 4 distinct batches cycled (8 steps per block)."""
    torch.manual_seed(0)
    initial = torch_cnn().state_dict()
    xs, ys = torch.randn(4, 64, 1, 28, 28), torch.randint(0, 10, (4, 64))
    k = 8

    def torch_builder(compiled: bool):
        model = torch_cnn()
        model.load_state_dict(initial)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        net = _compiled(model) if compiled else model
        return _torch_loop(net, nn.CrossEntropyLoss(), optimizer, lambda i: (xs[i % 4], ys[i % 4]))

    model = fnml_cnn()
    # torch flattens (C, H, W), the NHWC model (H, W, C): permute the Linear's input columns once.
    interop.load_state_dict(model, initial, flatten_nhwc={"7": (64, 5, 5)})
    xs_nhwc = jnp.asarray(xs.numpy().transpose(0, 1, 3, 4, 2))  # (B, N, C, H, W) -> (B, N, H, W, C)
    fnml = _fnml_runners(
        model,
        optim.sgd(lr=0.01, momentum=0.9),
        losses.CrossEntropyLoss(),
        xs_nhwc,
        jnp.asarray(ys.numpy().astype(np.int32)),
        fused=fused,
        donate=True,
        k_fused=k,
    )
    return _finish(
        "W3",
        "CNN conv32-pool-conv64-pool-linear, CE, SGD m=0.9, batch 64",
        k,
        torch_builder,
        fnml,
        with_compile=with_compile,
    )


def build_w4(*, with_compile: bool = True, fused: bool = True, donate: bool = False) -> Workload:
    """W4: LSTM(32, 128), T=50, batch 32, Linear head, Adam; 4 distinct batches cycled (8 steps per block)."""
    torch.manual_seed(0)
    initial = TorchLSTMHead().state_dict()
    xs, ys = torch.randn(4, 50, 32, 32), torch.randint(0, 10, (4, 32))
    k = 8

    def torch_builder(compiled: bool):
        model = TorchLSTMHead()
        model.load_state_dict(initial)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        net = _compiled(model) if compiled else model
        return _torch_loop(net, nn.CrossEntropyLoss(), optimizer, lambda i: (xs[i % 4], ys[i % 4]))

    model = FnmlLSTMHead(rngs=nnx.Rngs(0))
    interop.load_state_dict(model, initial)
    fnml = _fnml_runners(
        model,
        optim.adam(lr=1e-3),
        losses.CrossEntropyLoss(),
        jnp.asarray(xs.numpy()),
        jnp.asarray(ys.numpy().astype(np.int32)),
        fused=fused,
        donate=donate,
        k_fused=k,
    )
    return _finish(
        "W4",
        "LSTM(32, 128) T=50 + Linear head, CE, Adam, batch 32",
        k,
        torch_builder,
        fnml,
        with_compile=with_compile,
    )


# --------------------------------------------------------------------------------------------------
# W6, W7: the models people port (issue 15): torch eager, torch.compile, fnml native, from_torch twin
# --------------------------------------------------------------------------------------------------

GPT_SHAPE = dict(vocab=256, block=64, n_layer=4, n_head=4, n_embd=128)
GPT_BATCH, RESNET_BATCH = 16, 32


def gpt_loss(model, idx, targets):
    """Next-token cross-entropy: (B, T) ids -> logits (B, T, V) -> mean over B*T."""
    logits = model(idx)
    return losses.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))  # (B*T, V), (B*T,)


def classifier_loss(model, x, y):
    """Cross-entropy of a classifier: (N, ...) -> logits (N, classes)."""
    return losses.cross_entropy(model(x), y)


def _general_runner(model: nnx.Module, tx, loss_fn, batches: list[tuple], *, donate: bool) -> Callable[[int], None]:
    """``make_train_step(loss_fn=...)``, one jitted step per iteration over the cycled ``batches``."""
    step = train.make_train_step(loss_fn=loss_fn, donate=donate)
    box = {"state": train.TrainState.create(model, tx)}

    def run(k: int) -> None:
        state, loss = box["state"], None
        for i in range(k):
            state, loss = step(state, *batches[i % len(batches)])
        box["state"] = state
        jax.block_until_ready(loss)

    return run


def _ported(torch_model: nn.Module, example) -> tuple[nnx.Module, float]:
    """``interop.from_torch(model, example).train()`` and the seconds the capture took."""
    start = time.perf_counter()
    twin = interop.from_torch(torch_model, example).train()
    return twin, time.perf_counter() - start


def gpt_data(num_batches: int = 4, batch: int = GPT_BATCH, block: int = 64, vocab: int = 256, *, seed: int = 0):
    """``num_batches`` (idx, targets) pairs of random token sequences: (batch, block) int64 each (torch)."""
    generator = torch.Generator().manual_seed(seed)
    seqs = torch.randint(0, vocab, (num_batches, batch, block + 1), generator=generator)
    return [(s[:, :-1].contiguous(), s[:, 1:].contiguous()) for s in seqs]


def build_w6(*, with_compile: bool = True, donate: bool = True, attention: str = "sdpa") -> Workload:
    """W6: nanoGPT-style GPT 4x128, 4 heads, context 64, batch 16, vocab 256, AdamW; 4 batches cycled."""
    torch.manual_seed(0)
    reference = TorchGPT(**GPT_SHAPE)
    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    batches = gpt_data(block=GPT_SHAPE["block"], vocab=GPT_SHAPE["vocab"])
    k = 4

    def torch_builder(compiled: bool):
        model = TorchGPT(**GPT_SHAPE)
        model.load_state_dict(initial)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        net = _compiled(model) if compiled else model

        def criterion(logits, targets):
            return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

        return _torch_loop(net, criterion, optimizer, lambda i: batches[i % len(batches)])

    jbatches = [(jnp.asarray(x.numpy()), jnp.asarray(y.numpy())) for x, y in batches]
    native = FnmlGPT(**GPT_SHAPE, attention=attention)
    interop.load_state_dict(native, gpt_state_dict_for_fnml(initial))
    twin, port_s = _ported(reference, batches[0][0])
    fnml = {
        "fnml_native": _general_runner(native, optim.adamw(lr=1e-3), gpt_loss, jbatches, donate=donate),
        "fnml_twin": _general_runner(twin, optim.adamw(lr=1e-3), gpt_loss, jbatches, donate=donate),
    }
    wl = _finish(
        "W6",
        "GPT 4x128 (4 heads, T=64, vocab 256, tied head), CE, AdamW, batch 16",
        k,
        torch_builder,
        fnml,
        with_compile=with_compile,
        flops=gpt_flops(GPT_BATCH, GPT_SHAPE["block"], GPT_SHAPE["n_layer"], GPT_SHAPE["n_embd"], GPT_SHAPE["vocab"]),
    )
    wl.port_seconds = port_s
    return wl


def build_w7(*, with_compile: bool = True, donate: bool = True) -> Workload:
    """W7: ResNet (BasicBlocks 16-32-64, BatchNorm), 32x32 RGB, batch 32, SGD momentum 0.9; 4 batches cycled."""
    torch.manual_seed(0)
    reference = TorchResNet().train()
    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    xs, ys = torch.randn(4, RESNET_BATCH, 3, 32, 32), torch.randint(0, 10, (4, RESNET_BATCH))
    k = 4

    def torch_builder(compiled: bool):
        model = TorchResNet().train()
        model.load_state_dict(initial)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        net = _compiled(model) if compiled else model
        return _torch_loop(net, nn.CrossEntropyLoss(), optimizer, lambda i: (xs[i % 4], ys[i % 4]))

    labels = [jnp.asarray(ys[i].numpy().astype(np.int32)) for i in range(4)]
    nhwc = [(jnp.asarray(xs[i].numpy().transpose(0, 2, 3, 1)), labels[i]) for i in range(4)]  # NCHW -> NHWC
    nchw = [(jnp.asarray(xs[i].numpy()), labels[i]) for i in range(4)]  # the twin takes torch's layout
    native = FnmlResNet()
    interop.load_state_dict(native, initial)
    twin, port_s = _ported(reference, xs[0])
    tx = lambda: optim.sgd(lr=0.01, momentum=0.9)  # noqa: E731
    fnml = {
        "fnml_native": _general_runner(native, tx(), classifier_loss, nhwc, donate=donate),
        "fnml_twin": _general_runner(twin, tx(), classifier_loss, nchw, donate=donate),
    }
    wl = _finish(
        "W7",
        "ResNet BasicBlocks 16-32-64 + BatchNorm, 32x32x3, CE, SGD m=0.9, batch 32",
        k,
        torch_builder,
        fnml,
        with_compile=with_compile,
        flops=resnet_flops(RESNET_BATCH),
    )
    wl.port_seconds = port_s
    return wl


BUILDERS = {"W1": build_w1, "W2": build_w2, "W3": build_w3, "W4": build_w4, "W6": build_w6, "W7": build_w7}

"""The library corpus, image half: timm and torchvision models (and torch's own nn.Transformer*) through
``interop.from_torch``.

Each model is built from its library's own constructor with a tiny configuration (random init, never a
download), captured once on a batch of 2, then checked against real torch:

- forward and parameter gradients in float64, eval mode, on another batch size (3) and, where the model
  allows it, another image size than the capture's (<= 1e-12, ``tolerance("float64")``);
- 5 AdamW steps in training mode through fnml's own API (``TrainState.create(twin, optim.adamw(...))``,
  ``make_train_step``) beside a torch loop: per-step loss and final parameters AND buffers (BatchNorm running
  statistics, ``num_batches_tracked``) within 1e-10;
- a few models again in float32, at float32's working tolerance.

Dropout and stochastic depth are built with p=0 where training mode would otherwise draw masks (a twin
draws from ``nnx.Rngs``, never from torch's stream). timm and torchvision are imported at the top: a missing
library fails the module, never skips it. ``_torchvision`` explains how torchvision's CUDA wheel is imported
beside the CPU torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from _torchvision import timm, torchvision
from flax import nnx
from helpers import assert_trees_close, max_abs_diff, tolerance

from fnml import interop, losses, optim, train

tvm = torchvision.models
TRAIN_TOL = 1e-10
STEPS = 5
# AdamW's eps: 1e-3 rather than torch's 1e-8. A BatchNorm bias followed (through a convolution) by another
# BatchNorm in training mode has a gradient of exactly zero in exact arithmetic; in floating point it is
# cancellation noise (~1e-16), different in any two implementations (torch's own CPU threads included).
# With eps=1e-8, Adam divides that noise by ~eps and moves the bias by noise * 1e6, so the final biases would
# be noise of ~1e-9 on both sides. With eps=1e-3 the noise stays ~1e-14 and every other parameter still
# moves by its gradient (Adam-like where the gradient is above 1e-3), so the 1e-10 comparison is a real one.
ADAMW = {"lr": 0.01, "weight_decay": 0.1, "eps": 1e-3}


# ----------------------------------------------------------------------------------------------------
# pytorch/examples word_language_model: TransformerModel (nn.TransformerEncoder with a causal mask)
# ----------------------------------------------------------------------------------------------------


class PositionalEncoding(nn.Module):
    def __init__(self, d_model, dropout=0.1, max_len=64):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0).transpose(0, 1))

    def forward(self, x):
        return self.dropout(x + self.pe[: x.size(0), :])


class TransformerModel(nn.Module):
    """word_language_model's TransformerModel: the causal mask is built for the input's length each call."""

    def __init__(self, ntoken, ninp, nhead, nhid, nlayers, dropout=0.0):
        super().__init__()
        self.ninp = ninp
        self.pos_encoder = PositionalEncoding(ninp, dropout)
        layer = nn.TransformerEncoderLayer(ninp, nhead, nhid, dropout)
        self.transformer_encoder = nn.TransformerEncoder(layer, nlayers, enable_nested_tensor=False)
        self.input_emb = nn.Embedding(ntoken, ninp)
        self.decoder = nn.Linear(ninp, ntoken)

    def forward(self, src, has_mask=True):
        mask = nn.Transformer.generate_square_subsequent_mask(len(src), dtype=self.decoder.weight.dtype)
        src = self.input_emb(src) * math.sqrt(self.ninp)
        src = self.pos_encoder(src)
        output = self.transformer_encoder(src, mask if has_mask else None)
        return F.log_softmax(self.decoder(output), dim=-1)


# ----------------------------------------------------------------------------------------------------
# The corpus
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[], nn.Module]
    capture_size: int  # image side (or sequence length) of the capture example
    check_size: int  # the side / length the checks run on (differs where the model allows it)
    classes: int = 5
    tokens: bool = False  # (T, N) int64 token ids instead of (N, 3, H, W) images


def _tv_efficientnet():
    setting, last = tvm.efficientnet._efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.25)
    return tvm.EfficientNet(setting, 0.0, stochastic_depth_prob=0.0, num_classes=5, last_channel=last)


def _tv_swin():
    return tvm.SwinTransformer(
        patch_size=[2, 2],
        embed_dim=8,
        depths=[2],  # the second block of a stage shifts its windows: the attention mask built by slice writes
        num_heads=[2],
        window_size=[2, 2],
        stochastic_depth_prob=0.0,
        num_classes=5,
    )


def _tv_convnext():
    blocks = [tvm.convnext.CNBlockConfig(8, 16, 1), tvm.convnext.CNBlockConfig(16, None, 1)]
    return tvm.ConvNeXt(blocks, stochastic_depth_prob=0.0, num_classes=5)


CASES = [
    # 48: layer4 then sees 2x2 positions; at 1x1 BatchNorm normalises 3 values per channel in training mode, and
    # 5 AdamW steps amplify rounding past 1e-10 on both sides alike (ill-conditioned, not a divergence).
    Case("tv_resnet", lambda: tvm.ResNet(tvm.resnet.BasicBlock, [1, 1, 1, 1], num_classes=5), 16, 48),
    Case("tv_efficientnet_b0", _tv_efficientnet, 32, 40),
    Case("tv_swin", _tv_swin, 16, 16),  # the window partition fixes the image size
    Case("tv_convnext", _tv_convnext, 32, 40),
    Case(
        "tv_vit",
        lambda: tvm.VisionTransformer(
            image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
        ),
        32,
        32,  # the class token and position embedding fix the image size
    ),
    Case("tv_squeezenet", lambda: tvm.squeezenet1_1(num_classes=5, dropout=0.0), 32, 40),
    Case(
        "tv_densenet",
        lambda: tvm.DenseNet(growth_rate=4, block_config=(1, 1), num_init_features=8, bn_size=2, num_classes=5),
        32,
        40,
    ),
    Case(
        "tv_regnet",
        lambda: tvm.RegNet(
            tvm.regnet.BlockParams.from_init_params(depth=2, w_0=8, w_a=8.0, w_m=2.0, group_width=8), num_classes=5
        ),
        32,
        40,
    ),
    Case(
        "timm_efficientnet_b0",
        lambda: timm.models.efficientnet._gen_efficientnet(
            "efficientnet_b0", channel_multiplier=0.25, depth_multiplier=0.25, num_classes=5
        ),
        32,
        40,
    ),
    Case("timm_mobilenetv3_small_050", lambda: timm.create_model("mobilenetv3_small_050", num_classes=5), 32, 40),
    Case("timm_resnet10t", lambda: timm.create_model("resnet10t", num_classes=5), 16, 48),
    Case(
        "timm_convnext_atto",
        lambda: timm.create_model("convnext_atto", num_classes=5, depths=(1, 1, 1, 1), dims=(8, 16, 16, 16)),
        32,
        40,
    ),
    Case(
        "timm_vit_tiny",
        lambda: timm.create_model(
            "vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=5, depth=1, embed_dim=16, num_heads=2
        ),
        32,
        32,  # the position embedding fixes the image size
    ),
    # len(src) sizes the causal mask, which the capture fixes: another batch size, the same length.
    Case("word_language_model", lambda: TransformerModel(11, 8, 2, 16, 2), 6, 6, classes=11, tokens=True),
]
BY_ID = {case.id: case for case in CASES}


def _inputs(case: Case, batch: int, size: int, generator: torch.Generator, dtype=torch.float64):
    if case.tokens:
        x = torch.randint(0, case.classes, (size, batch), generator=generator)
        y = torch.randint(0, case.classes, (size * batch,), generator=generator)
        return x, y
    x = torch.randn(batch, 3, size, size, generator=generator, dtype=dtype)
    return x, torch.randint(0, case.classes, (batch,), generator=generator)


def _build(case: Case, dtype=torch.float64):
    torch.manual_seed(0)
    model = case.build().to(dtype).train()
    example, _ = _inputs(case, 2, case.capture_size, torch.Generator().manual_seed(1), dtype)
    return model, interop.from_torch(model, example)


# The three costliest captures and compiles (Swin's capture ~35 s; the depthwise-heavy nets' training step
# ~10 s to compile) run in `make test-full` only; their constructs keep a small test each below (slice
# writes for Swin's mask; functional BatchNorm for timm's BatchNormAct2d, also in timm_efficientnet_b0).
SLOW = {"tv_swin", "tv_efficientnet_b0", "timm_mobilenetv3_small_050"}


@pytest.fixture(
    scope="module", params=[pytest.param(c.id, marks=pytest.mark.slow) if c.id in SLOW else c.id for c in CASES]
)
def ported(request):
    case = BY_ID[request.param]
    model, twin = _build(case)
    return case, model, twin


def _flat_logits(out):
    return out.reshape(-1, out.shape[-1])


def _param_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters()]


def _twin_gradients(twin, x, weight):
    """Output and parameter gradients of ``sum(out * weight)`` (one jit), by torch name in torch layout."""
    graphdef, _, rest = nnx.split(twin, nnx.Param, ...)

    @nnx.jit
    def run(model, x, weight):
        def objective(model):
            out = model(x)
            return jnp.sum(out * weight), out

        (_, out), grads = nnx.value_and_grad(objective, has_aux=True)(model)
        return out, grads

    out, grads = run(twin, x, weight)
    return out, interop.state_dict(nnx.merge(graphdef, grads, rest))


def _torch_training(model, batches, loss_of):
    opt = torch.optim.AdamW(model.parameters(), **ADAMW)
    values = []
    for x, y in batches:
        opt.zero_grad()
        loss = loss_of(model(x), y)
        loss.backward()
        opt.step()
        values.append(loss.item())
    return values


def _twin_training(twin, batches):
    state = train.TrainState.create(twin, optim.adamw(**ADAMW))
    step = train.make_train_step(loss_fn=lambda m, x, y: losses.cross_entropy(_flat_logits(m(x)), y))
    values = []
    for x, y in batches:
        state, loss = step(state, x, y)
        values.append(float(loss))
    return values, interop.state_dict(state.model())


def _torch_loss(out, y):
    return F.cross_entropy(_flat_logits(out), y)


def test_forward_and_gradients_float64(ported):
    case, model, twin = ported
    if case.id == "tv_swin":  # the shifted-window block builds its attention mask by writes into slices
        assert "fnml.view_scatter" in {node.target for node in twin._programs[0].nodes}
    generator = torch.Generator().manual_seed(2)
    x, _ = _inputs(case, 3, case.check_size, generator)
    model.eval()
    twin.eval()
    out = model(x)
    weight = torch.randn(out.shape, generator=generator, dtype=torch.float64)
    model.zero_grad()
    (out * weight).sum().backward()
    twin_out, twin_grads = _twin_gradients(twin, jnp.asarray(x.numpy()), jnp.asarray(weight.numpy()))
    assert_trees_close(twin_out, out.detach(), dtype="float64")
    expected = {name: p.grad for name, p in model.named_parameters()}
    actual = {name: twin_grads[name] for name in expected}
    assert_trees_close(actual, expected, dtype="float64")
    print(
        f"\n{case.id}: forward f64 {max_abs_diff(twin_out, out.detach()):.2e}, "
        f"grad f64 {max_abs_diff(actual, expected):.2e}"
    )


def test_training_float64(ported):
    case, model, twin = ported
    generator = torch.Generator().manual_seed(3)
    batches = [_inputs(case, 3, case.check_size, generator) for _ in range(STEPS)]
    model.train()
    twin.train()
    twin_losses, twin_sd = _twin_training(twin, [(jnp.asarray(x.numpy()), jnp.asarray(y.numpy())) for x, y in batches])
    torch_losses = _torch_training(model, batches, _torch_loss)
    loss_diff = max(abs(a - b) for a, b in zip(twin_losses, torch_losses))
    torch_sd = model.state_dict()
    assert list(twin_sd) == list(torch_sd)
    tensor_diff = max(float(np.max(np.abs(twin_sd[k] - torch_sd[k].numpy()), initial=0.0)) for k in torch_sd)
    print(f"\n{case.id}: training f64 loss {loss_diff:.2e}, params+buffers {tensor_diff:.2e}")
    assert loss_diff <= TRAIN_TOL, f"{case.id}: per-step loss diff {loss_diff:.3g}"
    assert tensor_diff <= TRAIN_TOL, f"{case.id}: final parameter/buffer diff {tensor_diff:.3g}"
    # The BatchNorm statistics compared above were updated STEPS times (not untouched buffers).
    for name in [k for k in torch_sd if k.endswith("num_batches_tracked")]:
        assert int(twin_sd[name]) == STEPS, name
    moved = [k for k in torch_sd if k.endswith("running_var") and not np.allclose(twin_sd[k], 1.0)]
    assert moved or not any(k.endswith("running_var") for k in torch_sd)


# Well-conditioned trajectories: in the BatchNorm-heavy EfficientNets / MobileNets 5 AdamW steps amplify a
# last-bit difference ~1e4-fold (float64: 1e-12 after 5 steps from 1e-16), which float32 rounding turns into
# ~1e-4; their float64 runs above prove the same math.
FLOAT32_CASES = ["tv_convnext", "timm_vit_tiny", "word_language_model"]


@pytest.mark.parametrize(
    "case_id", [c if c == "word_language_model" else pytest.param(c, marks=pytest.mark.slow) for c in FLOAT32_CASES]
)
def test_forward_and_training_float32(case_id):
    case = BY_ID[case_id]
    model, twin = _build(case, torch.float32)
    generator = torch.Generator().manual_seed(4)
    x, _ = _inputs(case, 3, case.check_size, generator, torch.float32)
    model.eval()
    twin.eval()
    out = model(x).detach()
    twin_out = twin(jnp.asarray(x.numpy()))
    assert twin_out.dtype == jnp.float32
    assert_trees_close(twin_out, out, dtype="float32")
    batches = [_inputs(case, 3, case.check_size, generator, torch.float32) for _ in range(STEPS)]
    model.train()
    twin.train()
    twin_losses, twin_sd = _twin_training(twin, [(jnp.asarray(x.numpy()), jnp.asarray(y.numpy())) for x, y in batches])
    torch_losses = _torch_training(model, batches, _torch_loss)
    np.testing.assert_allclose(twin_losses, torch_losses, **tolerance("float32"))
    assert_trees_close(twin_sd, {k: v for k, v in model.state_dict().items()}, dtype="float32_trajectory")
    print(
        f"\n{case_id}: forward f32 {max_abs_diff(twin_out, out):.2e}, training f32 loss "
        f"{max(abs(a - b) for a, b in zip(twin_losses, torch_losses)):.2e}"
    )


# ----------------------------------------------------------------------------------------------------
# The constructs these libraries need, one small model each (float64 forward and gradient vs torch)
# ----------------------------------------------------------------------------------------------------


class SliceAssign(nn.Module):
    """Swin's attention-mask construction: writes into slices of a fresh tensor, then more views of it."""

    def forward(self, x):
        mask = x.new_zeros(x.shape[-2:])
        count = 0
        for h in ((0, -2), (-2, -1), (-1, None)):
            for w in ((0, -2), (-2, -1), (-1, None)):
                mask[h[0] : h[1], w[0] : w[1]] = count
                count += 1
        y = x * mask
        view = y[:, 1:3]
        view.masked_fill_(view > 0, -1.0)  # masked_fill_ on a view
        y[0, :, 1:2] += x[1, :, 1:2]  # a second write into the base: `view` overlaps it
        y[1][torch.tensor([0, 2])] = 5.0  # index_put_ into a select view
        y[:, :, 0].copy_(x[:, :, 1])
        return y * view.sum()


class FunctionalBatchNorm(nn.Module):
    """F.batch_norm on the module's own buffers in training mode (timm's BatchNormAct2d does this)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.weight = nn.Parameter(torch.rand(4) + 0.5)
        self.bias = nn.Parameter(torch.randn(4))
        self.register_buffer("running_mean", torch.zeros(4))
        self.register_buffer("running_var", torch.ones(4))

    def forward(self, x):
        x = self.conv(x)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training, 0.3, 1e-5)


class SizeArithmetic(nn.Module):
    """UNet's padding: Python arithmetic on two tensors' sizes (x.size(2) - y.size(2), // 2)."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(2, 2, 3, stride=2)
        self.up = nn.ConvTranspose2d(2, 2, 2, stride=2)

    def forward(self, x):
        small = self.up(self.down(x))
        dy, dx = x.size(2) - small.size(2), x.size()[3] - small.size()[3]
        small = F.pad(small, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return torch.cat([x, small], dim=1)


class SizeTensorArithmetic(SizeArithmetic):
    """The older UNet form: the size differences as tensors (torch.tensor([...]) // 2, then F.pad calls .item())."""

    def forward(self, x):
        small = self.up(self.down(x))
        dy = torch.tensor([x.size()[2] - small.size()[2]])
        dx = torch.tensor([x.size()[3] - small.size()[3]])
        small = F.pad(small, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return torch.cat([x, small], dim=1)


class FeatureDropout(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        return F.dropout2d(x, self.p, self.training) * 2.0


def _forward_and_gradient(model, x):
    twin = interop.from_torch(model, x)
    x2 = torch.randn(x.shape[0] + 1, *x.shape[1:], generator=torch.Generator().manual_seed(5), dtype=x.dtype)
    leaf = x2.clone().requires_grad_(True)
    out = model(leaf)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(6), dtype=out.dtype)
    (out * weight).sum().backward()
    w = jnp.asarray(weight.numpy())
    # nnx's transform: random ops (dropout) advance the twin's rng count inside the trace.
    twin_grad = nnx.grad(lambda m, v: jnp.sum(m(v) * w), argnums=1)(twin, jnp.asarray(x2.numpy()))
    assert_trees_close(twin(jnp.asarray(x2.numpy())), out.detach(), dtype="float64")
    assert_trees_close(twin_grad, leaf.grad, dtype="float64")
    return twin


def test_writes_into_views_and_slices_follow_torchs_shared_storage():
    twin = _forward_and_gradient(SliceAssign(), torch.randn(3, 4, 5, dtype=torch.float64))
    assert "fnml.view_scatter" in {node.target for node in twin._programs[0].nodes}


def test_a_write_through_a_view_into_the_forwards_input_is_refused():
    class IntoInput(nn.Module):
        def forward(self, x):
            x[:, 0] = 0.0
            return x * 2

    with pytest.raises(interop.UnsupportedTorchOpError, match=r"in-place write through a view into the forward's"):
        interop.from_torch(IntoInput(), torch.randn(3, 4))


@pytest.mark.parametrize("model_class", [SizeArithmetic, SizeTensorArithmetic])
def test_size_arithmetic_specialises(model_class):
    torch.manual_seed(0)
    model = model_class().double()
    twin = _forward_and_gradient(model, torch.randn(2, 2, 9, 9, dtype=torch.float64))
    # Under jit too (the sizes stay concrete), and on another image size: the padding follows it.
    graphdef, state = nnx.split(twin)
    forward = jax.jit(lambda state, v: nnx.merge(graphdef, state)(v))
    for side in (9, 10):
        x = torch.randn(3, 2, side, side + 1, dtype=torch.float64)
        out = forward(state, jnp.asarray(x.numpy()))
        assert_trees_close(out, model(x).detach(), dtype="float64")


def test_functional_batch_norm_on_buffers_trains_like_torch():
    torch.manual_seed(0)
    model = FunctionalBatchNorm().double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    twin = interop.from_torch(model, x)
    graphdef, params, rest = nnx.split(twin, nnx.Param, ...)
    batch = torch.randn(4, 3, 7, 7, dtype=torch.float64)
    out = model(batch)
    weight = torch.randn(out.shape, dtype=torch.float64)
    (out * weight).sum().backward()

    @nnx.jit
    def run(m, v):
        (_, y), grads = nnx.value_and_grad(lambda m: (jnp.sum(m(v) * weight.numpy()), m(v)), has_aux=True)(m)
        return y, grads

    twin_out, grads = run(twin, jnp.asarray(batch.numpy()))
    assert_trees_close(twin_out, out.detach(), dtype="float64")
    twin_grads = interop.state_dict(nnx.merge(graphdef, grads, rest))
    assert_trees_close(
        {k: twin_grads[k] for k in ("weight", "bias")}, {"weight": model.weight.grad, "bias": model.bias.grad}
    )
    # Buffers: torch updated them in place; the twin wrote them back (the jitted call ran the forward twice:
    # compare after one more eager call on each side from equal buffers).
    twin.load_state_dict(model.state_dict())
    model(batch)
    twin(jnp.asarray(batch.numpy()))
    assert_trees_close(dict(twin.named_buffers()), dict(model.named_buffers()), dtype="float64")
    model.eval()
    twin.eval()
    assert_trees_close(twin(jnp.asarray(batch.numpy())), model(batch).detach(), dtype="float64")


def test_functional_batch_norm_on_a_non_buffer_is_refused_with_the_line():
    class OnATensor(nn.Module):
        def forward(self, x):
            stats = x.mean((0, 2, 3)).detach()
            return F.batch_norm(x, stats, stats.abs() + 1, training=True)

    with pytest.raises(interop.UnsupportedTorchOpError, match=r"not buffers of a module.*test_library_vision.py:\d+"):
        interop.from_torch(OnATensor(), torch.randn(2, 3, 4, 4))


@pytest.mark.filterwarnings("ignore:dropout2d. Received a 3D input")  # torch's own warning for the 3-D case
@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (2, 3, 5)])
def test_feature_dropout_against_torch(shape):
    x = torch.randn(*shape, dtype=torch.float64)
    # Eval mode and p=0: the identity, forward and gradient.
    _forward_and_gradient(FeatureDropout(0.5).eval(), x)
    _forward_and_gradient(FeatureDropout(0.0), x)
    # p=1: zeros, as torch's (input * 0).
    twin = interop.from_torch(FeatureDropout(1.0), x)
    assert_trees_close(twin(jnp.asarray(x.numpy())), FeatureDropout(1.0)(x), dtype="float64")
    # p=0.5, training: torch's structure, one draw per (dim 0, dim 1) scaled by 2, and the gradient is the mask.
    twin = interop.from_torch(FeatureDropout(0.5), x)
    value = jnp.asarray(x.numpy())
    y = np.asarray(twin(value))
    for result in (y, FeatureDropout(0.5)(x).numpy()):
        ratio = (result / x.numpy() / 2.0).reshape(shape[0], shape[1], -1)  # 0 or 2 (the *2.0 and 1 / (1 - p))
        assert np.all(np.isclose(ratio, 0.0) | np.isclose(ratio, 2.0))
        assert np.all(ratio == ratio[:, :, :1])  # constant over the spatial dims
    grad = np.asarray(nnx.grad(lambda m, v: jnp.sum(m(v)), argnums=1)(twin, value))  # the mask draws from twin.rngs
    assert set(np.unique(np.round(grad, 12))) <= {0.0, 4.0}


def test_transformer_encoder_with_a_causal_mask_captures_its_reference_path():
    torch.manual_seed(0)
    model = TransformerModel(11, 8, 2, 16, 2).double().eval()
    tokens = torch.randint(0, 11, (6, 2))
    twin = interop.from_torch(model, tokens)
    assert_trees_close(twin(jnp.asarray(tokens.numpy())), model(tokens).detach(), dtype="float64")
    # The capture left torch's own switches as they were.
    assert torch.backends.mha.get_fastpath_enabled()
    causal = nn.Transformer.generate_square_subsequent_mask(3)
    assert torch.nn.modules.transformer._detect_is_causal_mask(causal) is True


def test_an_error_in_library_code_names_the_library_file_line_and_module_path(tmp_path, monkeypatch):
    # A model library as pip installs one: a package under a site-packages directory.
    package = tmp_path / "site-packages" / "fnml_fake_library"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "import torch\n\n\nclass Block(torch.nn.Module):\n    def forward(self, x):\n"
        "        return torch.linalg.svdvals(x)\n\n\nclass Net(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.block = Block()\n\n"
        "    def forward(self, x):\n        return self.block(x)\n"
    )
    monkeypatch.syspath_prepend(str(package.parent))
    from fnml_fake_library import Net

    with pytest.raises(
        interop.UnsupportedTorchOpError,
        match=r"aten.linalg_svdvals .* in module 'block' \(Block\), .*fnml_fake_library/__init__.py:6 in forward "
        r"\(library code\): return torch.linalg.svdvals\(x\)",
    ):
        interop.from_torch(Net(), torch.randn(3, 4))

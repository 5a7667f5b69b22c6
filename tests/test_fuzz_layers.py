"""Property-based parity of every fnml layer (incl. recurrent) against real torch.nn, with hypothesis.

Each property draws a layer configuration (sizes, flags, options), a batch (including batch size 1 and
unbatched inputs where torch accepts them), a dtype (float32 / float64) and a value regime (normal,
large magnitudes, near-zero, exact zeros at kinks, ties), builds the torch layer, copies its weights
into the fnml layer with ``fnml.interop.load_state_dict``, and compares, for a random linear functional
of the output: the output, the gradient w.r.t. the input and the gradient w.r.t. every parameter (and
BatchNorm's running statistics). Tolerance: the conftest table, with ``atol`` scaled by the largest
magnitude of the compared tensor (large-magnitude regimes have proportionally larger rounding).

Settings: ``tests/_hypothesis_profiles.py`` (derandomized, no deadline, bounded examples per property).
Compilation is shared across examples: one jitted ``_apply`` keyed by the (hashable) graph definition,
and shapes drawn from small sets so the jit cache hits.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _hypothesis_profiles import examples
from flax import nnx
from helpers import tolerance
from hypothesis import given
from hypothesis import strategies as st

from fnml import interop, layers

TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32}
JAX_DTYPES = {"float64": jnp.float64, "float32": jnp.float32}
DTYPE = st.sampled_from(["float64", "float32"])
REGIME = st.sampled_from(["normal", "large", "tiny", "zeros", "ties"])
SEED = st.integers(0, 2**16)


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def values(shape, dtype: str, regime: str, seed: int) -> np.ndarray:
    """Test data in torch layout: a value regime applied to seeded normal draws."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if regime == "large":
        x = x * 1e3
    elif regime == "tiny":
        x = x * 1e-6
    elif regime == "zeros":  # exact zeros at the kinks of relu / abs / leaky relu / max
        x = np.where(rng.random(shape) < 0.4, 0.0, x)
    elif regime == "ties":  # few distinct values: ties inside max-pool windows and softmax rows
        x = rng.integers(-1, 2, size=shape).astype(np.float64)
    return x.astype(dtype)


def _to_fnml(x, layout):
    if layout == "image":
        return jnp.moveaxis(x, -3, -1)  # (N, C, H, W) -> (N, H, W, C) (or CHW -> HWC)
    if layout == "seq1d" and x.ndim == 3:
        return jnp.swapaxes(x, 1, 2)  # (N, C, L) -> (N, L, C)
    return x


def _from_fnml(y, layout):
    if layout == "image":
        return jnp.moveaxis(y, -1, -3)  # (N, H, W, C) -> (N, C, H, W)
    if layout == "seq1d" and y.ndim == 3:
        return jnp.swapaxes(y, 1, 2)  # (N, L, C) -> (N, C, L)
    return y


@functools.partial(jax.jit, static_argnums=(0, 6, 7))
def _apply(graphdef, params, rest, x, args, cotangent, layout, diff_x):
    """Output (torch layout), new non-param state, d<out, cot>/dparams, d<out, cot>/dx; one jit for all."""

    def forward(params, x):
        model = nnx.merge(graphdef, params, rest, copy=True)
        out = jax.tree.map(lambda y: _from_fnml(y, layout), model(_to_fnml(x, layout), *args))
        _, _, new_rest = nnx.split(model, nnx.Param, ...)
        return out, new_rest

    if diff_x:
        out, vjp, new_rest = jax.vjp(forward, params, x, has_aux=True)
        grad_params, grad_x = vjp(cotangent)
    else:
        out, vjp, new_rest = jax.vjp(lambda p: forward(p, x), params, has_aux=True)
        (grad_params,), grad_x = vjp(cotangent), None
    return out, new_rest, grad_params, grad_x


def _close(actual, expected, dtype: str, what: str, scale: float = 1.0) -> None:
    """Within the conftest tolerance, atol scaled by the magnitude of ``expected`` (and ``scale``)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} (fnml) != {expected.shape} (torch)"
    tol = tolerance(dtype)
    magnitude = max(1.0, float(np.max(np.abs(expected), initial=0.0)), scale)
    np.testing.assert_allclose(actual, expected, atol=tol["atol"] * magnitude, rtol=tol["rtol"], err_msg=what)


def _torch_leaves(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return [leaf for item in out for leaf in _torch_leaves(item)]


def _torch_tree(tree):
    if isinstance(tree, tuple):
        return tuple(_torch_tree(item) for item in tree)
    return torch.tensor(tree)


def check_layer(
    torch_layer,
    fnml_layer,
    x: np.ndarray,
    dtype: str,
    *,
    layout="plain",
    seed=0,
    scale=1.0,
    diff_x=True,
    args=(),
):
    """Forward + vjp parity of one layer against torch (both in the same mode), incl. running stats.

    ``args``: extra positional arguments (numpy trees, e.g. a recurrent initial state) for both sides.
    """
    torch_layer = torch_layer.to(TORCH_DTYPES[dtype])
    if any(True for _ in torch_layer.parameters()) or any(True for _ in torch_layer.buffers()):
        interop.load_state_dict(fnml_layer, torch_layer.state_dict())
    # torch
    xt = torch.tensor(x, requires_grad=diff_x)
    out_t = torch_layer(xt, *_torch_tree(tuple(args)))
    leaves_t = _torch_leaves(out_t)
    rng = np.random.default_rng(seed + 1)
    cots = [rng.standard_normal(tuple(leaf.shape)).astype(dtype) for leaf in leaves_t]
    torch.autograd.backward(leaves_t, [torch.tensor(c) for c in cots])
    # fnml
    graphdef, params, rest = nnx.split(fnml_layer, nnx.Param, ...)
    jargs = jax.tree.map(jnp.asarray, tuple(args))
    out_shape = jax.eval_shape(
        lambda p, xx: nnx.merge(graphdef, p, rest, copy=True)(_to_fnml(xx, layout), *jargs),
        params,
        jnp.asarray(x),
    )
    cot_tree = jax.tree.unflatten(jax.tree.structure(out_shape), [jnp.asarray(c) for c in cots])
    out, new_rest, grad_params, grad_x = _apply(graphdef, params, rest, jnp.asarray(x), jargs, cot_tree, layout, diff_x)
    for i, (a, e) in enumerate(zip(jax.tree.leaves(out), leaves_t, strict=True)):
        _close(a, e.detach().numpy(), dtype, f"output[{i}]", scale)
    if diff_x:
        _close(grad_x, xt.grad.numpy(), dtype, "grad input", scale)
    # parameter gradients, by torch name and in torch layout
    grads_sd = interop.state_dict(nnx.merge(graphdef, grad_params, rest, copy=True))
    for name, param in torch_layer.named_parameters():
        _close(grads_sd[name], param.grad.numpy(), dtype, f"grad {name}", scale)
    # BatchNorm running statistics after a training-mode call
    state_sd = interop.state_dict(nnx.merge(graphdef, params, new_rest, copy=True))
    for name, buffer in torch_layer.named_buffers():
        _close(state_sd[name], buffer.numpy(), dtype, f"buffer {name}", scale)


def _randomize(torch_layer, seed: int, positive=("running_var",)) -> None:
    """Random affine weights / running statistics (torch's init of ones and zeros hides mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(torch_layer.named_parameters()) + list(torch_layer.named_buffers()):
            if tensor.is_floating_point():
                draw = torch.randn(tensor.shape, generator=gen, dtype=tensor.dtype)
                tensor.copy_(draw.abs() + 0.1 if name in positive else draw)


# --------------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------------


@examples(20)
@given(
    dtype=DTYPE,
    regime=REGIME,
    seed=SEED,
    in_features=st.sampled_from([1, 3, 8]),
    out_features=st.sampled_from([1, 4]),
    bias=st.booleans(),
    batch=st.sampled_from([(), (1,), (5,), (2, 3)]),
)
def test_linear(dtype, regime, seed, in_features, out_features, bias, batch):
    torch_layer = torch.nn.Linear(in_features, out_features, bias=bias)
    fnml_layer = layers.Linear(in_features, out_features, bias=bias, param_dtype=JAX_DTYPES[dtype], rngs=nnx.Rngs(0))
    x = values((*batch, in_features), dtype, regime, seed)
    check_layer(torch_layer, fnml_layer, x, dtype, seed=seed, scale=float(np.abs(x).max(initial=1)) * in_features)


@st.composite
def conv_configs(draw):
    in_channels = draw(st.sampled_from([1, 2, 4]))
    out_channels = draw(st.sampled_from([2, 4]))
    groups = draw(st.sampled_from([g for g in (1, 2) if in_channels % g == 0 and out_channels % g == 0]))
    kernel = draw(st.sampled_from([1, 2, 3, (1, 3)]))
    stride = draw(st.sampled_from([1, 2, (2, 1)]))
    dilation = draw(st.sampled_from([1, 2]))
    padding_mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    paddings = [0, 1, (1, 0)] + (["same", "valid"] if stride == 1 else ["valid"])
    padding = draw(st.sampled_from(paddings))
    bias = draw(st.booleans())
    return dict(
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=bias,
        padding_mode=padding_mode,
    )


@examples(20)
@given(
    dtype=DTYPE,
    regime=REGIME,
    seed=SEED,
    config=conv_configs(),
    n=st.sampled_from([None, 1, 2]),
    hw=st.sampled_from([(5, 5), (6, 7)]),
)
def test_conv2d(dtype, regime, seed, config, n, hw):
    torch_layer = torch.nn.Conv2d(**config)
    fnml_layer = layers.Conv2d(**config, param_dtype=JAX_DTYPES[dtype], rngs=nnx.Rngs(0))
    shape = (config["in_channels"], *hw) if n is None else (n, config["in_channels"], *hw)
    x = values(shape, dtype, regime, seed)
    check_layer(
        torch_layer,
        fnml_layer,
        x,
        dtype,
        layout="image",
        seed=seed,
        scale=float(np.abs(x).max(initial=1)) * 9,
    )


@examples(30)
@given(
    dtype=DTYPE,
    regime=st.sampled_from(["normal", "large", "tiny", "ties"]),
    seed=SEED,
    two_d=st.booleans(),
    channels=st.sampled_from([1, 3]),
    shape=st.sampled_from([(2,), (4,), (1, 3), (2, 5)]),
    momentum=st.sampled_from([0.1, None, 0.5]),
    affine=st.booleans(),
    track=st.booleans(),
    training=st.booleans(),
    eps=st.sampled_from([1e-5, 1e-3]),
)
def test_batchnorm(dtype, regime, seed, two_d, channels, shape, momentum, affine, track, training, eps):
    """BatchNorm1d on (N, C) / (N, C, L), BatchNorm2d on (N, C, H, W); train and eval mode."""
    if two_d:
        torch_layer = torch.nn.BatchNorm2d(
            channels, eps=eps, momentum=momentum, affine=affine, track_running_stats=track
        )
        fnml_layer = layers.BatchNorm2d(
            channels,
            eps=eps,
            momentum=momentum,
            affine=affine,
            track_running_stats=track,
            param_dtype=JAX_DTYPES[dtype],
        )
        n, rest = shape[0], (3, 2)
        layout = "image"
    else:
        torch_layer = torch.nn.BatchNorm1d(
            channels, eps=eps, momentum=momentum, affine=affine, track_running_stats=track
        )
        fnml_layer = layers.BatchNorm1d(
            channels,
            eps=eps,
            momentum=momentum,
            affine=affine,
            track_running_stats=track,
            param_dtype=JAX_DTYPES[dtype],
        )
        n, rest = shape[0], shape[1:]
        layout = "seq1d"
    if training and n * int(np.prod(rest)) == 1:
        n = 2  # torch raises "Expected more than 1 value per channel when training" (tested in bad inputs)
    _randomize(torch_layer, seed)
    if not training:
        torch_layer.eval()
        fnml_layer.eval()
    shape_t = (n, channels, *rest)
    x = values(shape_t, dtype, regime, seed)
    # ties regime: a constant channel has zero variance, normalised by sqrt(eps): gradients ~ 1/sqrt(eps)
    scale = float(np.abs(x).max(initial=1)) / np.sqrt(eps)
    check_layer(torch_layer, fnml_layer, x, dtype, layout=layout, seed=seed, scale=scale)


@examples(25)
@given(
    dtype=DTYPE,
    regime=st.sampled_from(["normal", "large", "tiny", "ties"]),
    seed=SEED,
    shape=st.sampled_from([(1, 4), (3, 4), (2, 3, 4), (5,)]),
    last_two=st.booleans(),
    elementwise_affine=st.booleans(),
    bias=st.booleans(),
    eps=st.sampled_from([1e-5, 1e-2]),
    offset=st.sampled_from([0.0, 300.0]),
)
def test_layernorm(dtype, regime, seed, shape, last_two, elementwise_affine, bias, eps, offset):
    normalized = shape[-2:] if last_two and len(shape) >= 2 else shape[-1:]
    torch_layer = torch.nn.LayerNorm(normalized, eps=eps, elementwise_affine=elementwise_affine, bias=bias)
    fnml_layer = layers.LayerNorm(
        normalized, eps=eps, elementwise_affine=elementwise_affine, bias=bias, param_dtype=JAX_DTYPES[dtype]
    )
    _randomize(torch_layer, seed)
    x = values(shape, dtype, regime, seed) + np.asarray(offset, dtype)  # large mean: fast variance loses it
    scale = float(np.abs(x).max(initial=1)) / np.sqrt(eps)
    check_layer(torch_layer, fnml_layer, x, dtype, seed=seed, scale=scale)


@examples(20)
@given(
    dtype=DTYPE,
    seed=SEED,
    num=st.sampled_from([3, 7]),
    dim=st.sampled_from([2, 4]),
    padding_idx=st.sampled_from([None, 0, -1, 2]),
    shape=st.sampled_from([(1,), (4,), (2, 3)]),
)
def test_embedding(dtype, seed, num, dim, padding_idx, shape):
    torch_layer = torch.nn.Embedding(num, dim, padding_idx=padding_idx)
    fnml_layer = layers.Embedding(num, dim, padding_idx=padding_idx, param_dtype=JAX_DTYPES[dtype], rngs=nnx.Rngs(0))
    idx = np.random.default_rng(seed).integers(0, num, size=shape)
    if padding_idx is not None:
        idx.flat[0] = padding_idx % num  # the padding row always appears: its gradient must stay 0
    check_layer(torch_layer, fnml_layer, idx, dtype, seed=seed, diff_x=False)


@st.composite
def pool_configs(draw, kind):
    kernel = draw(st.sampled_from([1, 2, 3, (2, 3)]))
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    stride = draw(st.sampled_from([None, 1, 2, (1, 2)]))
    pad_h = draw(st.integers(0, kh // 2))
    pad_w = draw(st.integers(0, kw // 2))
    config = dict(kernel_size=kernel, stride=stride, padding=(pad_h, pad_w), ceil_mode=draw(st.booleans()))
    if kind == "max":
        config["dilation"] = draw(st.sampled_from([1, 2]))
    else:
        config["count_include_pad"] = draw(st.booleans())
        config["divisor_override"] = draw(st.sampled_from([None, 3]))
    return config


@examples(40)
@given(
    dtype=DTYPE,
    regime=REGIME,
    seed=SEED,
    config=pool_configs("max"),
    n=st.sampled_from([None, 1, 2]),
    hw=st.sampled_from([(5, 5), (6, 7)]),
)
def test_maxpool2d(dtype, regime, seed, config, n, hw):
    """Includes ties in windows (regime 'ties'): the gradient goes to ONE element (torch: the first max)."""
    x = values((2, *hw) if n is None else (n, 2, *hw), dtype, regime, seed)
    check_layer(
        torch.nn.MaxPool2d(**config),
        layers.MaxPool2d(**config),
        x,
        dtype,
        layout="image",
        seed=seed,
        scale=float(np.abs(x).max(initial=1)),
    )


@examples(30)
@given(
    dtype=DTYPE,
    regime=REGIME,
    seed=SEED,
    config=pool_configs("avg"),
    n=st.sampled_from([None, 1, 2]),
    hw=st.sampled_from([(5, 5), (6, 7)]),
)
def test_avgpool2d(dtype, regime, seed, config, n, hw):
    x = values((2, *hw) if n is None else (n, 2, *hw), dtype, regime, seed)
    check_layer(
        torch.nn.AvgPool2d(**config),
        layers.AvgPool2d(**config),
        x,
        dtype,
        layout="image",
        seed=seed,
        scale=float(np.abs(x).max(initial=1)),
    )


@examples(20)
@given(
    dtype=DTYPE,
    regime=REGIME,
    seed=SEED,
    output_size=st.sampled_from([1, 2, 3, (2, None), (None, 4), (5, 3)]),
    n=st.sampled_from([None, 1, 2]),
    hw=st.sampled_from([(5, 5), (6, 7)]),
)
def test_adaptive_avgpool2d(dtype, regime, seed, output_size, n, hw):
    x = values((2, *hw) if n is None else (n, 2, *hw), dtype, regime, seed)
    check_layer(
        torch.nn.AdaptiveAvgPool2d(output_size),
        layers.AdaptiveAvgPool2d(output_size),
        x,
        dtype,
        layout="image",
        seed=seed,
        scale=float(np.abs(x).max(initial=1)),
    )


ACTIVATIONS = {
    "ReLU": (lambda: torch.nn.ReLU(), lambda: layers.ReLU()),
    "GELU": (lambda: torch.nn.GELU(), lambda: layers.GELU()),
    "GELU-tanh": (lambda: torch.nn.GELU(approximate="tanh"), lambda: layers.GELU(approximate="tanh")),
    "Tanh": (lambda: torch.nn.Tanh(), lambda: layers.Tanh()),
    "Sigmoid": (lambda: torch.nn.Sigmoid(), lambda: layers.Sigmoid()),
    "LeakyReLU": (lambda: torch.nn.LeakyReLU(0.2), lambda: layers.LeakyReLU(0.2)),
    "Softmax0": (lambda: torch.nn.Softmax(dim=0), lambda: layers.Softmax(dim=0)),
    "Softmax-1": (lambda: torch.nn.Softmax(dim=-1), lambda: layers.Softmax(dim=-1)),
    "LogSoftmax1": (lambda: torch.nn.LogSoftmax(dim=1), lambda: layers.LogSoftmax(dim=1)),
    "LogSoftmax-1": (lambda: torch.nn.LogSoftmax(dim=-1), lambda: layers.LogSoftmax(dim=-1)),
    "Identity": (lambda: torch.nn.Identity(), lambda: layers.Identity()),
    "Flatten": (lambda: torch.nn.Flatten(), lambda: layers.Flatten()),
    "Flatten0": (lambda: torch.nn.Flatten(0, -1), lambda: layers.Flatten(0, -1)),
}


@examples(60)
@given(
    dtype=DTYPE,
    regime=st.sampled_from(["normal", "large", "tiny", "zeros", "ties", "huge"]),
    seed=SEED,
    name=st.sampled_from(sorted(ACTIVATIONS)),
    shape=st.sampled_from([(1, 3), (4, 5), (2, 3, 4)]),
)
def test_activations(dtype, regime, seed, name, shape):
    """Kinks at exact zeros, saturation (|x| ~ 1e3), softmax of huge logits (|x| ~ 1e30 in float64)."""
    x = values(shape, dtype, "large" if regime == "huge" else regime, seed)
    if regime == "huge":
        x = (x * (1e27 if dtype == "float64" else 1e33)).astype(dtype)
        if not name.startswith(("Softmax", "LogSoftmax", "Sigmoid", "Tanh", "ReLU", "Identity", "Flatten")):
            return  # GELU / LeakyReLU of 1e30: both overflow identically, nothing to learn
    make_torch, make_fnml = ACTIVATIONS[name]
    scale = (
        float(np.abs(x).max(initial=1))
        if name.startswith(("LogSoftmax", "ReLU", "Leaky", "GELU", "Ident", "Flat"))
        else 1.0
    )
    check_layer(make_torch(), make_fnml(), x, dtype, seed=seed, scale=scale)


@examples(15)
@given(seed=SEED, p=st.sampled_from([0.0, 0.3, 1.0]), training=st.booleans(), dtype=DTYPE)
def test_dropout_scaling(seed, p, training, dtype):
    """Masks cannot match torch's stream; the contract can: kept entries are x / (1 - p), others 0."""
    x = values((4, 6), dtype, "normal", seed)
    layer = layers.Dropout(p, rngs=nnx.Rngs(dropout=seed))
    torch_layer = torch.nn.Dropout(p)
    if not training:
        layer.eval()
        torch_layer.eval()
    out = np.asarray(layer(jnp.asarray(x)))
    expected_t = torch_layer(torch.tensor(x)).numpy()
    if not training or p == 0.0 or p == 1.0:  # deterministic cases: torch's values exactly
        np.testing.assert_array_equal(out, expected_t)
        return
    kept = out != 0
    np.testing.assert_allclose(out[kept], (x / np.asarray(1 - p, dtype))[kept], rtol=1e-6)


@st.composite
def recurrent_configs(draw):
    kind = draw(st.sampled_from(["RNN-tanh", "RNN-relu", "LSTM", "GRU"]))
    config = dict(
        input_size=draw(st.sampled_from([1, 3])),
        hidden_size=draw(st.sampled_from([2, 4])),
        num_layers=draw(st.sampled_from([1, 2])),
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bidirectional=draw(st.booleans()),
    )
    if kind.startswith("RNN"):
        config["nonlinearity"] = kind.split("-")[1]
    return kind.split("-")[0], config


@examples(24)
@given(
    dtype=DTYPE,
    regime=st.sampled_from(["normal", "large", "zeros", "tiny"]),
    seed=SEED,
    spec=recurrent_configs(),
    t=st.sampled_from([1, 3]),
    n=st.sampled_from([None, 1, 2]),
    with_h0=st.booleans(),
)
def test_recurrent(dtype, regime, seed, spec, t, n, with_h0):
    """RNN (tanh/relu) / LSTM / GRU: layers, directions, batch_first, unbatched, initial state."""
    kind, config = spec
    torch_layer = getattr(torch.nn, kind)(**config)
    fnml_layer = getattr(layers, kind)(**config, param_dtype=JAX_DTYPES[dtype], rngs=nnx.Rngs(0))
    if n is None:
        shape = (t, config["input_size"])
    else:
        shape = (n, t, config["input_size"]) if config["batch_first"] else (t, n, config["input_size"])
    x = values(shape, dtype, regime, seed)
    args = ()
    if with_h0:
        d = 2 if config["bidirectional"] else 1
        h_shape = (config["num_layers"] * d, config["hidden_size"])
        if n is not None:
            h_shape = (config["num_layers"] * d, n, config["hidden_size"])
        h0 = values(h_shape, dtype, "normal", seed + 7)
        args = ((h0, values(h_shape, dtype, "normal", seed + 8)),) if kind == "LSTM" else (h0,)
    relu = config.get("nonlinearity") == "relu"
    scale = float(np.abs(x).max(initial=1)) ** (config["num_layers"] if relu else 0) * 10
    check_layer(torch_layer, fnml_layer, x, dtype, seed=seed, args=args, scale=scale)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_apply_cache_is_shared_across_examples(dtype):
    """The recompile guard of this file: the same config and shapes reuse one compiled ``_apply``."""
    x = values((2, 3), dtype, "normal", 0)
    layer_args = dict(param_dtype=JAX_DTYPES[dtype], rngs=nnx.Rngs(0))
    check_layer(torch.nn.Linear(3, 2), layers.Linear(3, 2, **layer_args), x, dtype)
    before = _apply._cache_size()
    for seed in range(3):
        check_layer(
            torch.nn.Linear(3, 2),
            layers.Linear(3, 2, **layer_args),
            values((2, 3), dtype, "normal", seed),
            dtype,
            seed=seed,
        )
    assert _apply._cache_size() == before

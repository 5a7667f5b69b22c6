"""Convolutions against real torch: functional conv1d/conv2d/conv_transpose1d/2d (torch layout and
channels-last), the Conv1d / Conv2d / ConvTranspose1d / ConvTranspose2d layers (forward, input and parameter
gradients, print text, init distributions) and their errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from flax import nnx
from helpers import assert_trees_close, max_abs_diff, torch_dtype
from scipy import stats

from fnml import functional as F
from fnml import layers
from fnml.functional._im2col import use_im2col

# (dtype, channels_last): both layouts in float64 (exactness), torch's layout in float32 (working tolerance).
VARIANTS = pytest.mark.parametrize(
    "dtype, channels_last",
    [("float64", False), ("float64", True), ("float32", False)],
    ids=["f64-torch_layout", "f64-channels_last", "f32-torch_layout"],
)
P_MIN = 1e-3  # KS p-value floor (deterministic seeds)


# --------------------------------------------------------------------------------------------------
# helpers shared by the conv / pool / resample test files
# --------------------------------------------------------------------------------------------------


def to_channels_last(a, spatial):
    """(N, C, *S) / (C, *S) -> (N, *S, C) / (*S, C) for numpy or jax arrays."""
    return jnp.moveaxis(a, -spatial - 1, -1)


def to_channels_first(a, spatial):
    return jnp.moveaxis(a, -1, -spatial - 1)


def parity(fnml_fn, torch_fn, arrays, dtype, *, seed=0, jit=True, atol=None):
    """Compare fnml_fn(*jax arrays) with torch_fn(*tensors): output and the gradient of sum(y * g) w.r.t.
    every floating input (both functions take and return torch layout). Returns the largest difference.
    ``jit=False`` runs eagerly (the fuzz tests: primitives compiled once per shape, shared across examples)."""
    arrays = [np.asarray(a, dtype) if np.issubdtype(np.asarray(a).dtype, np.floating) else a for a in arrays]
    tensors = [torch.tensor(a, requires_grad=True) if a.dtype.kind == "f" else torch.tensor(a) for a in arrays]
    y_torch = torch_fn(*tensors)
    g = np.random.default_rng(seed + 1).standard_normal(tuple(y_torch.shape)).astype(dtype)
    (y_torch * torch.tensor(g)).sum().backward()
    floating = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]

    def objective(*float_args):
        args = list(arrays)
        for i, value in zip(floating, float_args):
            args[i] = value
        y = fnml_fn(*[jnp.asarray(a) for a in args])
        return jnp.sum(y * g), y

    value_and_grad = jax.value_and_grad(objective, argnums=tuple(range(len(floating))), has_aux=True)
    (_, y), grads = (jax.jit(value_and_grad) if jit else value_and_grad)(*[jnp.asarray(arrays[i]) for i in floating])
    actual = {"output": y, **{f"grad_{i}": grad for i, grad in zip(floating, grads)}}
    expected = {"output": y_torch, **{f"grad_{i}": tensors[i].grad for i in floating}}
    assert y.dtype == jnp.dtype(dtype)
    assert_trees_close(actual, expected, dtype=dtype, atol=atol)
    return max_abs_diff(actual, expected)


def layer_parity(fnml_layer, torch_layer, x, dtype, spatial, params, *, call=None, torch_call=None):
    """fnml layer on channels-last data vs torch layer on torch layout: output, input gradient, and the
    gradient of every parameter (``params``: fnml name -> (torch name, torch -> fnml layout function))."""
    x = np.asarray(x, dtype)
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = (torch_call or torch_layer)(x_torch)
    g = np.random.default_rng(3).standard_normal(tuple(y_torch.shape)).astype(dtype)
    (y_torch * torch.tensor(g)).sum().backward()
    graphdef, state = nnx.split(fnml_layer)
    g_fnml = to_channels_last(jnp.asarray(g), spatial)

    def objective(x_cl, variables):
        layer = nnx.merge(graphdef, variables)
        y = (call or (lambda m, v: m(v)))(layer, x_cl)
        return jnp.sum(y * g_fnml), y

    (_, y), (grad_x, grad_params) = jax.jit(jax.value_and_grad(objective, argnums=(0, 1), has_aux=True))(
        to_channels_last(jnp.asarray(x), spatial), nnx.to_pure_dict(state)
    )
    actual = {"output": y, "grad_input": grad_x}
    expected = {
        "output": to_channels_last(y_torch.detach().numpy(), spatial),
        "grad_input": to_channels_last(x_torch.grad.numpy(), spatial),
    }
    for name, (torch_name, convert) in params.items():
        actual[f"grad_{name}"] = grad_params[name]
        expected[f"grad_{name}"] = convert(getattr(torch_layer, torch_name).grad.numpy())
    assert_trees_close(actual, expected, dtype=dtype)
    return max_abs_diff(actual, expected)


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# --------------------------------------------------------------------------------------------------
# functional convolutions, torch layout and channels-last
# --------------------------------------------------------------------------------------------------

# name: (input shape (torch layout), weight shape (torch layout), bias, kwargs)
CONV2D_CASES = {
    "k3": ((2, 3, 6, 5), (4, 3, 3, 3), True, {}),
    "stride2_pad1": ((2, 3, 7, 6), (4, 3, 3, 3), True, dict(stride=2, padding=1)),
    "stride(2,1)_pad(1,0)_dil(1,2)": (
        (1, 2, 7, 8),
        (3, 2, 2, 3),
        True,
        dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
    ),
    "groups3": ((2, 6, 5, 5), (6, 2, 3, 3), True, dict(groups=3)),
    "depthwise_unbatched": ((4, 5, 6), (8, 1, 3, 3), False, dict(groups=4, padding=1)),
    "same_dil2": ((1, 3, 7, 6), (2, 3, 3, 2), True, dict(padding="same", dilation=2)),
    "im2col_c8": ((2, 8, 6, 6), (5, 8, 3, 3), True, dict(padding=(1, 2))),
}
CONV1D_CASES = {
    "stride2_pad1_dil2": ((2, 4, 11), (6, 4, 3), True, dict(stride=2, padding=1, dilation=2)),
    "groups2": ((2, 4, 8), (6, 2, 2), False, dict(groups=2)),
    "same_even_k": ((1, 2, 7), (3, 2, 4), True, dict(padding="same")),
    "im2col_c32_unbatched": ((32, 6), (4, 32, 2), True, dict(padding=2)),
}


def _conv_call(op, spatial, channels_last, kwargs, torch_weight_to_fnml):
    """An fnml call taking torch-layout (x, w[, b]) and returning torch layout."""

    def call(x, w, b=None):
        if not channels_last:
            return op(x, w, b, **kwargs)
        y = op(to_channels_last(x, spatial), torch_weight_to_fnml(w), b, **kwargs, channels_last=True)
        return to_channels_first(y, spatial)

    return call


def _oihw_to_hwio(w):
    return jnp.moveaxis(w, (0, 1), (-1, -2))  # (O, I, *k) -> (*k, I, O)


def _iohw_to_fnml(w):
    return jnp.moveaxis(w, (0, 1), (-2, -1))  # (I, O/g, *k) -> (*k, I, O/g)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")
@VARIANTS
@pytest.mark.parametrize("case", list(CONV2D_CASES) + [f"1d_{c}" for c in CONV1D_CASES])
def test_functional_conv_matches_torch(case, channels_last, dtype):
    spatial = 1 if case.startswith("1d_") else 2
    x_shape, w_shape, has_bias, kwargs = CONV1D_CASES[case[3:]] if spatial == 1 else CONV2D_CASES[case]
    op, torch_op = (F.conv1d, TF.conv1d) if spatial == 1 else (F.conv2d, TF.conv2d)
    arrays = [_rand(x_shape), _rand(w_shape, 1)] + ([_rand(w_shape[0], 2)] if has_bias else [])
    parity(
        _conv_call(op, spatial, channels_last, kwargs, _oihw_to_hwio), lambda *t: torch_op(*t, **kwargs), arrays, dtype
    )


# name: (input shape, weight shape (in, out/groups, *k), bias, kwargs)
CONVT2D_CASES = {
    "k3": ((2, 3, 4, 5), (3, 2, 3, 3), True, {}),
    "stride2_pad1_outpad1": ((2, 3, 4, 4), (3, 2, 3, 3), True, dict(stride=2, padding=1, output_padding=1)),
    "stride(3,2)_pad(2,0)_outpad(2,1)": (
        (1, 2, 3, 4),
        (2, 3, 4, 3),
        True,
        dict(stride=(3, 2), padding=(2, 0), output_padding=(2, 1)),
    ),
    "dil2_outpad1_lt_dilation": ((1, 2, 4, 4), (2, 2, 3, 2), True, dict(dilation=2, output_padding=1)),
    "groups2_pad_gt_kernel_crops": ((2, 4, 5, 5), (4, 3, 2, 2), True, dict(groups=2, stride=2, padding=2)),
    "unbatched": ((3, 4, 4), (3, 2, 3, 3), True, dict(stride=2)),
}
CONVT1D_CASES = {
    "stride3_pad2_outpad1": ((2, 2, 5), (2, 4, 4), True, dict(stride=3, padding=2, output_padding=1)),
    "groups2_dil2": ((1, 4, 5), (4, 1, 3), False, dict(groups=2, dilation=2)),
    "unbatched": ((3, 5), (3, 2, 2), True, dict(stride=2)),
}


@VARIANTS
@pytest.mark.parametrize("case", list(CONVT2D_CASES) + [f"1d_{c}" for c in CONVT1D_CASES])
def test_functional_conv_transpose_matches_torch(case, channels_last, dtype):
    spatial = 1 if case.startswith("1d_") else 2
    x_shape, w_shape, has_bias, kwargs = CONVT1D_CASES[case[3:]] if spatial == 1 else CONVT2D_CASES[case]
    op, torch_op = (
        (F.conv_transpose1d, TF.conv_transpose1d) if spatial == 1 else (F.conv_transpose2d, TF.conv_transpose2d)
    )
    groups = kwargs.get("groups", 1)
    arrays = [_rand(x_shape), _rand(w_shape, 1)] + ([_rand(w_shape[1] * groups, 2)] if has_bias else [])
    parity(
        _conv_call(op, spatial, channels_last, kwargs, _iohw_to_fnml), lambda *t: torch_op(*t, **kwargs), arrays, dtype
    )


def test_functional_conv2d_takes_the_im2col_path_with_the_same_rule():
    # The lowering rule (functional._im2col): in_channels * kh * kw >= 64, out_channels >= 32, groups 1, CPU.
    assert use_im2col(8, 32, (3, 3), 1) is (jax.default_backend() == "cpu")
    assert not use_im2col(7, 32, (3, 3), 1) and not use_im2col(8, 32, (3, 3), 2)
    assert not use_im2col(8, 16, (3, 3), 1)
    assert layers.Conv1d(32, 32, 2, rngs=nnx.Rngs(0))._use_im2col() is (jax.default_backend() == "cpu")


# --------------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------------

CONV_LAYER_CASES = {
    # name: (fnml class, torch class, args, kwargs, torch-layout input shape)
    "Conv1d": (layers.Conv1d, torch.nn.Conv1d, (3, 4, 3), {}, (2, 3, 8)),
    "Conv1d_stride2_pad1_groups_nobias": (
        layers.Conv1d,
        torch.nn.Conv1d,
        (4, 6, 3),
        dict(stride=2, padding=1, groups=2, bias=False),
        (2, 4, 9),
    ),
    "Conv1d_reflect": (layers.Conv1d, torch.nn.Conv1d, (2, 3, 3), dict(padding=2, padding_mode="reflect"), (2, 2, 6)),
    "Conv1d_circular": (layers.Conv1d, torch.nn.Conv1d, (2, 3, 3), dict(padding=1, padding_mode="circular"), (2, 2, 6)),
    "Conv1d_replicate_unbatched": (
        layers.Conv1d,
        torch.nn.Conv1d,
        (2, 3, 3),
        dict(padding=3, padding_mode="replicate"),
        (2, 5),
    ),
    "Conv2d_reflect_same": (
        layers.Conv2d,
        torch.nn.Conv2d,
        (2, 3, 3),
        dict(padding="same", padding_mode="reflect"),
        (1, 2, 5, 6),
    ),
    "Conv2d_circular_groups": (
        layers.Conv2d,
        torch.nn.Conv2d,
        (4, 4, 3),
        dict(padding=1, padding_mode="circular", groups=2),
        (1, 4, 5, 5),
    ),
    "ConvTranspose1d_s2_p1_op1_g2": (
        layers.ConvTranspose1d,
        torch.nn.ConvTranspose1d,
        (4, 6, 3),
        dict(stride=2, padding=1, output_padding=1, groups=2),
        (2, 4, 5),
    ),
    "ConvTranspose1d_unbatched_nobias": (
        layers.ConvTranspose1d,
        torch.nn.ConvTranspose1d,
        (3, 2, 2),
        dict(stride=2, bias=False),
        (3, 4),
    ),
    "ConvTranspose2d_s2_p1_op1": (
        layers.ConvTranspose2d,
        torch.nn.ConvTranspose2d,
        (3, 4, 4),
        dict(stride=2, padding=1, output_padding=1),
        (2, 3, 3, 4),
    ),
    "ConvTranspose2d_g2_dil2_nobias": (
        layers.ConvTranspose2d,
        torch.nn.ConvTranspose2d,
        (4, 2, (2, 3)),
        dict(groups=2, dilation=2, bias=False),
        (1, 4, 3, 3),
    ),
    "ConvTranspose2d_s(2,3)_op(1,2)": (
        layers.ConvTranspose2d,
        torch.nn.ConvTranspose2d,
        (2, 2, 3),
        dict(stride=(2, 3), output_padding=(1, 2)),
        (1, 2, 3, 3),
    ),
}


# Not helpers.copy_torch_weights: it has no ConvTranspose layout, and layer_parity maps the gradients with these.
def _torch_weight_to_fnml(layer_name: str):
    """The documented conversions (numpy): Conv weight (O, I/g, *k) -> reversed axes; ConvTranspose (I, O/g, *k)."""
    if layer_name.startswith("Conv1d"):
        return lambda w: w.transpose(2, 1, 0)
    if layer_name.startswith("Conv2d"):
        return lambda w: w.transpose(2, 3, 1, 0)
    if layer_name.startswith("ConvTranspose1d"):
        return lambda w: w.transpose(2, 0, 1)
    return lambda w: w.transpose(2, 3, 0, 1)


def _layer_pair(case, dtype):
    cls, torch_cls, args, kwargs, shape = CONV_LAYER_CASES[case]
    torch_layer = torch_cls(*args, **kwargs).to(torch_dtype(dtype))
    fnml_layer = cls(*args, **kwargs, param_dtype=dtype, rngs=nnx.Rngs(0))
    convert = _torch_weight_to_fnml(case)
    fnml_layer.kernel[...] = jnp.asarray(convert(torch_layer.weight.detach().numpy()))
    params = {"kernel": ("weight", convert)}
    if torch_layer.bias is not None:
        fnml_layer.bias[...] = jnp.asarray(torch_layer.bias.detach().numpy())
        params["bias"] = ("bias", lambda b: b)
    return fnml_layer, torch_layer, shape, params


@pytest.mark.parametrize("case", list(CONV_LAYER_CASES))
def test_conv_layers_match_torch(case, dtype):
    fnml_layer, torch_layer, shape, params = _layer_pair(case, dtype)
    spatial = len(fnml_layer.kernel_size)
    layer_parity(fnml_layer, torch_layer, _rand(shape), dtype, spatial, params)


@pytest.mark.parametrize("output_size", [(7, 9), (8, 10), [1, 8, 9, 4]], ids=["min", "max", "full_shape"])
def test_conv_transpose_output_size_matches_torch(output_size):
    dtype = "float64"
    fnml_layer = layers.ConvTranspose2d(3, 4, 3, stride=2, padding=1, param_dtype=dtype, rngs=nnx.Rngs(0))
    torch_layer = torch.nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1).to(torch_dtype(dtype))
    fnml_layer.kernel[...] = jnp.asarray(torch_layer.weight.detach().numpy().transpose(2, 3, 0, 1))
    fnml_layer.bias[...] = jnp.asarray(torch_layer.bias.detach().numpy())
    torch_size = list(output_size[1:3]) if len(output_size) == 4 else list(output_size)
    layer_parity(
        fnml_layer,
        torch_layer,
        _rand((1, 3, 4, 5)),
        dtype,
        2,
        {"kernel": ("weight", lambda w: w.transpose(2, 3, 0, 1)), "bias": ("bias", lambda b: b)},
        call=lambda m, v: m(v, output_size=output_size),
        torch_call=lambda t: torch_layer(t, output_size=torch_size),
    )


PRINT_CASES = [
    (lambda r: layers.Conv1d(2, 4, 3, rngs=r), lambda: torch.nn.Conv1d(2, 4, 3)),
    (
        lambda r: layers.Conv1d(2, 4, 3, 2, 1, 2, 2, False, "reflect", rngs=r),
        lambda: torch.nn.Conv1d(2, 4, 3, 2, 1, 2, 2, False, "reflect"),
    ),
    (lambda r: layers.Conv1d(2, 4, 3, padding="same", rngs=r), lambda: torch.nn.Conv1d(2, 4, 3, padding="same")),
    (
        lambda r: layers.ConvTranspose1d(2, 4, 3, stride=2, output_padding=1, rngs=r),
        lambda: torch.nn.ConvTranspose1d(2, 4, 3, stride=2, output_padding=1),
    ),
    (
        lambda r: layers.ConvTranspose2d(2, 4, 3, 2, 1, 1, 2, False, 2, rngs=r),
        lambda: torch.nn.ConvTranspose2d(2, 4, 3, 2, 1, 1, 2, False, 2),
    ),
    (lambda r: layers.ConvTranspose2d(2, 4, (3, 2), rngs=r), lambda: torch.nn.ConvTranspose2d(2, 4, (3, 2))),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")
@pytest.mark.parametrize("index", range(len(PRINT_CASES)))
def test_conv_print_matches_torch(index):
    make_fnml, make_torch = PRINT_CASES[index]
    assert str(make_fnml(nnx.Rngs(0))) == repr(make_torch())


# --------------------------------------------------------------------------------------------------
# init: torch's distributions (KS), with torch's fan_in for transposed convs
# --------------------------------------------------------------------------------------------------

INIT_CASES = {
    # name: (fnml factory, torch factory, torch's fan_in)
    "Conv1d(8,512,5,groups=2)": (
        lambda r: layers.Conv1d(8, 512, 5, groups=2, rngs=r),
        lambda: torch.nn.Conv1d(8, 512, 5, groups=2),
        4 * 5,
    ),
    "ConvTranspose1d(8,512,5)": (
        lambda r: layers.ConvTranspose1d(8, 512, 5, rngs=r),
        lambda: torch.nn.ConvTranspose1d(8, 512, 5),
        512 * 5,
    ),
    "ConvTranspose2d(8,512,3,groups=4)": (
        lambda r: layers.ConvTranspose2d(8, 512, 3, groups=4, rngs=r),
        lambda: torch.nn.ConvTranspose2d(8, 512, 3, groups=4),
        128 * 9,
    ),
}


@pytest.mark.parametrize("param", ["weight", "bias"])
@pytest.mark.parametrize("case", list(INIT_CASES))
def test_conv_init_is_torch_uniform(case, param):
    make_fnml, make_torch, fan_in = INIT_CASES[case]
    fnml_layer, torch_layer = make_fnml(nnx.Rngs(0)), make_torch()
    torch_fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(torch_layer.weight)
    assert torch_fan_in == fan_in  # torch's own fan_in (weight.size(1) * receptive field)
    bound = 1.0 / math.sqrt(fan_in)
    ours = np.asarray(getattr(fnml_layer, "kernel" if param == "weight" else "bias")[...]).ravel()
    theirs = getattr(torch_layer, param).detach().numpy().ravel()
    assert ours.size == theirs.size
    assert np.abs(ours).max() <= bound and ours.max() > 0.95 * bound and ours.min() < -0.95 * bound
    assert stats.kstest(ours, stats.uniform(loc=-bound, scale=2 * bound).cdf).pvalue > P_MIN
    assert stats.ks_2samp(ours, theirs).pvalue > P_MIN


def test_conv_transpose_kernel_layout_is_documented_conversion():
    # kernel = weight.transpose(2, 3, 0, 1): (in, out/groups, kh, kw) -> (kh, kw, in, out/groups).
    layer = layers.ConvTranspose2d(6, 4, (3, 2), groups=2, rngs=nnx.Rngs(0))
    assert layer.kernel.shape == (3, 2, 6, 2)
    assert layers.ConvTranspose1d(6, 4, 3, groups=2, rngs=nnx.Rngs(0)).kernel.shape == (3, 6, 2)
    assert layers.Conv1d(6, 4, 3, groups=2, rngs=nnx.Rngs(0)).kernel.shape == (3, 3, 4)


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------

R = nnx.Rngs(0)
X4 = jnp.ones((1, 3, 6, 6))  # NCHW
ERRORS = {
    "kernel_size_zero": (lambda: layers.Conv1d(2, 2, 0, rngs=R), ValueError, r"Conv1d: kernel_size must be positive"),
    "kernel_size_pair_for_1d": (
        lambda: layers.Conv1d(2, 2, (3, 3), rngs=R),
        ValueError,
        r"kernel_size must be an int or a tuple of 1 ints, got kernel_size=\(3, 3\)",
    ),
    "stride_zero": (
        lambda: F.conv2d(X4, jnp.ones((2, 3, 3, 3)), stride=0),
        ValueError,
        r"conv2d: stride must be positive",
    ),
    "padding_negative": (
        lambda: F.conv1d(jnp.ones((1, 2, 5)), jnp.ones((2, 2, 3)), padding=-1),
        ValueError,
        r"padding must be >= 0",
    ),
    "padding_string": (
        lambda: F.conv2d(X4, jnp.ones((2, 3, 3, 3)), padding="full"),
        ValueError,
        r"padding must be one of 'valid', 'same'",
    ),
    "same_strided": (
        lambda: F.conv2d(X4, jnp.ones((2, 3, 3, 3)), stride=2, padding="same"),
        ValueError,
        r"padding='same' is not supported for strided convolutions",
    ),
    "groups_not_dividing_in": (
        lambda: layers.ConvTranspose2d(3, 4, 3, groups=2, rngs=R),
        ValueError,
        r"in_channels=3 must be divisible by groups=2",
    ),
    "groups_not_dividing_out": (
        lambda: layers.Conv1d(4, 3, 3, groups=2, rngs=R),
        ValueError,
        r"out_channels=3 must be divisible by groups=2",
    ),
    "functional_groups_vs_weight": (
        lambda: F.conv2d(jnp.ones((1, 4, 6, 6)), jnp.ones((3, 2, 3, 3)), groups=2),
        ValueError,
        r"out_channels=3 \(of the weight\) must be divisible by groups=2",
    ),
    "functional_channels": (
        lambda: F.conv2d(jnp.ones((1, 5, 6, 6)), jnp.ones((2, 3, 3, 3))),
        ValueError,
        r"conv2d\(in_channels=3\) got an input with 5 channels \(axis 1 of NCHW shape \(1, 5, 6, 6\)\); expected 3$",
    ),
    "functional_nhwc_given_as_nchw": (
        lambda: F.conv2d(jnp.ones((1, 6, 6, 3)), jnp.ones((2, 3, 3, 3))),
        ValueError,
        r"got an input with 6 channels .*the input looks channels-last \(NHWC\): pass channels_last=True",
    ),
    "layer_nchw_hint": (
        lambda: layers.Conv1d(3, 4, 3, rngs=R)(jnp.ones((2, 3, 10))),
        ValueError,
        r"Conv1d\(in_channels=3\) got an input with 10 channels .*the input looks NCL",
    ),
    "layer_rank": (
        lambda: layers.Conv1d(3, 4, 3, rngs=R)(jnp.ones((2, 3, 10, 1))),
        ValueError,
        r"Conv1d \(NLC or unbatched LC\): input must be 2-D or 3-D",
    ),
    "functional_rank": (
        lambda: F.conv_transpose2d(jnp.ones((3, 3)), jnp.ones((3, 2, 2, 2))),
        ValueError,
        r"input must be 3-D or 4-D",
    ),
    "weight_rank": (lambda: F.conv2d(X4, jnp.ones((2, 3, 3))), ValueError, r"weight must be 4-D"),
    "bias_shape": (
        lambda: F.conv1d(jnp.ones((1, 2, 5)), jnp.ones((2, 2, 3)), jnp.ones(3)),
        ValueError,
        r"bias must have shape \(2,\)",
    ),
    "input_smaller_than_kernel": (
        lambda: F.conv2d(jnp.ones((1, 3, 2, 6)), jnp.ones((2, 3, 3, 3))),
        ValueError,
        r"padded input size 2 .* smaller than the effective kernel size 3",
    ),
    "output_padding_too_big": (
        lambda: F.conv_transpose2d(X4, jnp.ones((3, 2, 3, 3)), stride=2, output_padding=2),
        ValueError,
        r"output_padding must be smaller than either stride or dilation",
    ),
    "layer_output_padding_too_big": (
        lambda: layers.ConvTranspose1d(3, 2, 3, output_padding=1, rngs=R)(jnp.ones((1, 5, 3))),
        ValueError,
        r"output_padding must be smaller than either stride or dilation",
    ),
    "transpose_padding_mode": (
        lambda: layers.ConvTranspose2d(3, 2, 3, padding_mode="reflect", rngs=R),
        ValueError,
        r"only padding_mode='zeros' is supported",
    ),
    "transpose_empty_output": (
        lambda: F.conv_transpose1d(jnp.ones((1, 1, 1)), jnp.ones((1, 1, 1)), padding=1),
        ValueError,
        r"the output size \(-1,\) is not positive",
    ),
    "output_size_out_of_range": (
        lambda: layers.ConvTranspose2d(3, 2, 3, stride=2, rngs=R)(jnp.ones((1, 4, 4, 3)), output_size=(12, 9)),
        ValueError,
        r"requested an output size of \(12, 9\), but valid sizes range from \(9, 9\) to \(10, 10\)",
    ),
    "output_size_length": (
        lambda: layers.ConvTranspose2d(3, 2, 3, rngs=R)(jnp.ones((1, 4, 4, 3)), output_size=(6,)),
        ValueError,
        r"output_size must have 2 or 4 elements, got 1",
    ),
    "reflect_padding_too_big": (
        lambda: layers.Conv1d(2, 2, 3, padding=4, padding_mode="reflect", rngs=R)(jnp.ones((1, 4, 2))),
        ValueError,
        r"padding_mode='reflect' needs padding <= 3 for an input of size 4",
    ),
    "channels_last_flag_type": (
        lambda: F.conv1d(jnp.ones((1, 2, 5)), jnp.ones((2, 2, 3)), channels_last=1),
        TypeError,
        r"channels_last must be a bool",
    ),
    "bias_flag_type": (lambda: layers.ConvTranspose1d(2, 2, 3, bias=1, rngs=R), TypeError, r"bias must be a bool"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_conv_errors(case):
    make, exception, match = ERRORS[case]
    with pytest.raises(exception, match=match):
        make()


def test_torch_also_rejects_output_padding_not_below_stride_or_dilation():
    with pytest.raises(RuntimeError, match="output padding must be smaller than either stride or dilation"):
        TF.conv_transpose2d(torch.ones(1, 3, 6, 6), torch.ones(3, 2, 3, 3), stride=2, output_padding=2)

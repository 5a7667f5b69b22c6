"""fnml.layers against real torch.nn: forward and gradient parity, BatchNorm statistics, printing, errors.

Every parity test builds the torch layer, copies its weights into the fnml layer (torch layout -> fnml
layout, see ``_copy_params``), feeds the same data (NCHW for torch, NHWC for fnml), and compares the
output, the gradient w.r.t. the input and the gradients w.r.t. every parameter of a random linear
functional of the output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from helpers import assert_trees_close, max_abs_diff, torch_dtype

from fnml import layers

# fnml attribute -> (torch parameter name, torch layout -> fnml layout)
_LINEAR_MAP = {"kernel": ("weight", lambda w: w.T), "bias": ("bias", lambda b: b)}
_CONV_MAP = {
    "kernel": ("weight", lambda w: w.transpose(2, 3, 1, 0)),
    "bias": ("bias", lambda b: b),
}  # OIHW->HWIO
_PLAIN_MAP = {"weight": ("weight", lambda w: w), "bias": ("bias", lambda b: b)}


def _param_map(module: nnx.Module) -> dict:
    if isinstance(module, layers.Linear):
        return _LINEAR_MAP
    if isinstance(module, layers.Conv2d):
        return _CONV_MAP
    return _PLAIN_MAP


# Not helpers.copy_torch_weights: its arrays share the torch tensors' memory, and torch's BatchNorm updates its
# statistics in place; the maps above also convert the gradients.
def _copy_params(fnml_module: nnx.Module, torch_module: torch.nn.Module) -> None:
    """Copy torch's parameters (and BatchNorm buffers) into the fnml layer, converting layouts."""
    for attr, (name, convert) in _param_map(fnml_module).items():
        torch_param = getattr(torch_module, name, None)
        fnml_param = getattr(fnml_module, attr, None)
        assert (torch_param is None) == (fnml_param is None), f"{attr}: present on one side only"
        if torch_param is not None:
            value = convert(torch_param.detach().numpy())
            assert fnml_param[...].shape == value.shape, (attr, fnml_param[...].shape, value.shape)
            fnml_param[...] = jnp.asarray(value)
    for name in ("running_mean", "running_var"):
        if getattr(torch_module, name, None) is not None:
            getattr(fnml_module, name)[...] = jnp.asarray(getattr(torch_module, name).numpy())


def _data(shape, dtype, seed=0, scale=1.0, offset=0.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale + offset).astype(dtype)


def _nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2) if x.ndim == 4 else x.permute(2, 0, 1)  # NHWC -> NCHW (or HWC -> CHW)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1) if x.ndim == 4 else x.permute(1, 2, 0)  # NCHW -> NHWC (or CHW -> HWC)


def _channels_last_1d(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2) if x.ndim == 3 else x  # (N, L, C) <-> (N, C, L)


LAYOUTS = {
    "plain": (lambda x: x, lambda y: y),
    "image": (_nchw, _nhwc),
    "seq1d": (_channels_last_1d, _channels_last_1d),
}


def _float64_all_float32_some(cases, float32_cases):
    """Parametrize (dtype, case): float64 (exactness) for every case, float32 for a representative subset.

    float64 at 1e-12 already proves the math of each variant; a float32 compile of every variant would
    double these tests' time for no new information, so float32 covers one case per code path.
    """
    params = [pytest.param("float64", case, id=f"float64-{case}") for case in cases]
    params += [pytest.param("float32", case, id=f"float32-{case}") for case in float32_cases]
    return pytest.mark.parametrize(("dtype", "case"), params)


def _parity(fnml_module, torch_module, x, dtype, *, layout="plain", label=""):
    """Forward + input/parameter gradient parity of one layer; returns the max |diff| seen."""
    to_torch, from_torch = LAYOUTS[layout]
    x_leaf = torch.from_numpy(x).requires_grad_(True)
    y_torch = from_torch(torch_module(to_torch(x_leaf)))
    cotangent = _data(tuple(y_torch.shape), x.dtype, seed=99)
    (y_torch * torch.from_numpy(cotangent)).sum().backward()

    graphdef, params, rest = nnx.split(fnml_module, nnx.Param, ...)

    @jax.jit
    def forward_and_grads(params, rest, x):
        def objective(params, x):
            # Fresh copies of the non-parameter state at this trace level: BatchNorm may update it here.
            y = nnx.merge(graphdef, params, jax.tree.map(jnp.asarray, rest))(x)
            return jnp.sum(y * cotangent), y

        return jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(params, x)

    (_, y_fnml), (grad_params, grad_x) = forward_and_grads(params, rest, jnp.asarray(x))
    grad_params = nnx.to_pure_dict(grad_params)
    mapping = _param_map(fnml_module)
    expected_params = {
        attr: mapping[attr][1](getattr(torch_module, mapping[attr][0]).grad.numpy()) for attr in grad_params
    }
    actual = {"output": y_fnml, "grad_input": grad_x, "grad_params": grad_params}
    expected = {"output": y_torch, "grad_input": x_leaf.grad, "grad_params": expected_params}
    diff = max_abs_diff(actual, expected)
    print(f"PARITY {label or type(fnml_module).__name__} {dtype}: {diff:.3g}")
    assert_trees_close(actual, expected, dtype=dtype)
    return diff


# ------------------------------------------------------------------------------------------------
# Linear
# ------------------------------------------------------------------------------------------------

LINEAR_CASES = {
    "bias_batch": dict(features=(3, 4), bias=True, shape=(5, 3)),
    "nobias_batch": dict(features=(3, 4), bias=False, shape=(5, 3)),
    "bias_3d_input": dict(features=(3, 2), bias=True, shape=(2, 5, 3)),
    "bias_1d_input": dict(features=(6, 1), bias=True, shape=(6,)),
}


@pytest.mark.parametrize("case", list(LINEAR_CASES), ids=list(LINEAR_CASES))
def test_linear_parity(case, dtype):
    spec = LINEAR_CASES[case]
    torch_layer = torch.nn.Linear(*spec["features"], bias=spec["bias"]).to(torch_dtype(dtype))
    fnml_layer = layers.Linear(*spec["features"], bias=spec["bias"], param_dtype=dtype, rngs=nnx.Rngs(0))
    _copy_params(fnml_layer, torch_layer)
    _parity(fnml_layer, torch_layer, _data(spec["shape"], dtype), dtype, label=f"Linear[{case}]")


# ------------------------------------------------------------------------------------------------
# Conv2d
# ------------------------------------------------------------------------------------------------

CONV_CASES = {
    "k3": dict(args=(3, 4, 3)),
    "k3_pad1": dict(args=(3, 4, 3), kwargs=dict(padding=1)),
    "k3x2_stride2_pad(1,0)": dict(args=(3, 4, (3, 2)), kwargs=dict(stride=2, padding=(1, 0))),
    "stride(2,1)": dict(args=(2, 3, 3), kwargs=dict(stride=(2, 1))),
    "dilation2_pad2": dict(args=(3, 4, 3), kwargs=dict(dilation=2, padding=2)),
    "groups2": dict(args=(4, 6, 3), kwargs=dict(groups=2, padding=1)),
    "depthwise": dict(args=(4, 4, 3), kwargs=dict(groups=4)),
    "nobias": dict(args=(3, 4, 3), kwargs=dict(bias=False)),
    "same_k3": dict(args=(3, 4, 3), kwargs=dict(padding="same")),
    "same_k4_dilation2": dict(args=(3, 4, 4), kwargs=dict(padding="same", dilation=2)),
    "same_k(2,3)": dict(args=(3, 2, (2, 3)), kwargs=dict(padding="same")),
    "valid": dict(args=(3, 4, 3), kwargs=dict(padding="valid")),
    "reflect_pad1": dict(args=(3, 4, 3), kwargs=dict(padding=1, padding_mode="reflect")),
    "replicate_pad(2,1)": dict(args=(3, 4, 3), kwargs=dict(padding=(2, 1), padding_mode="replicate")),
    "circular_pad1_stride2": dict(args=(3, 4, 3), kwargs=dict(padding=1, stride=2, padding_mode="circular")),
    "reflect_same_k4": dict(args=(3, 2, 4), kwargs=dict(padding="same", padding_mode="reflect")),
    "unbatched": dict(args=(3, 4, 3), kwargs=dict(padding=1), shape=(7, 6, 3)),
}


# torch warns that an even kernel with padding="same" copies the input (a performance note, not ours).
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")
@_float64_all_float32_some(
    list(CONV_CASES), ["k3_pad1", "k3x2_stride2_pad(1,0)", "groups2", "same_k4_dilation2", "reflect_pad1"]
)
def test_conv2d_parity(case, dtype):
    spec = CONV_CASES[case]
    kwargs = spec.get("kwargs", {})
    torch_layer = torch.nn.Conv2d(*spec["args"], **kwargs).to(torch_dtype(dtype))
    fnml_layer = layers.Conv2d(*spec["args"], **kwargs, param_dtype=dtype, rngs=nnx.Rngs(0))
    _copy_params(fnml_layer, torch_layer)
    shape = spec.get("shape", (2, 7, 6, spec["args"][0]))  # NHWC
    _parity(fnml_layer, torch_layer, _data(shape, dtype), dtype, layout="image", label=f"Conv2d[{case}]")


# ------------------------------------------------------------------------------------------------
# BatchNorm
# ------------------------------------------------------------------------------------------------

BN_CASES = {
    "1d_NC": dict(cls="BatchNorm1d", shape=(6, 3)),
    "1d_NLC": dict(cls="BatchNorm1d", shape=(4, 5, 3)),
    "2d": dict(cls="BatchNorm2d", shape=(3, 4, 5, 3)),
    "2d_momentum0.3": dict(cls="BatchNorm2d", shape=(3, 4, 5, 3), kwargs=dict(momentum=0.3)),
    "2d_momentum_None_cumulative": dict(cls="BatchNorm2d", shape=(2, 3, 3, 3), kwargs=dict(momentum=None)),
    "2d_affine_False": dict(cls="BatchNorm2d", shape=(2, 3, 3, 3), kwargs=dict(affine=False)),
    "2d_no_running_stats": dict(cls="BatchNorm2d", shape=(2, 3, 3, 3), kwargs=dict(track_running_stats=False)),
    "1d_eps1e-3": dict(cls="BatchNorm1d", shape=(6, 3), kwargs=dict(eps=1e-3)),
}


def _bn_pair(case, dtype):
    spec = BN_CASES[case]
    kwargs = spec.get("kwargs", {})
    torch_layer = getattr(torch.nn, spec["cls"])(3, **kwargs).to(torch_dtype(dtype))
    fnml_layer = getattr(layers, spec["cls"])(3, **kwargs, param_dtype=dtype)
    if torch_layer.weight is not None:  # non-trivial affine parameters
        with torch.no_grad():
            torch_layer.weight.copy_(torch.from_numpy(_data((3,), dtype, seed=5, offset=1.0)))
            torch_layer.bias.copy_(torch.from_numpy(_data((3,), dtype, seed=6)))
    _copy_params(fnml_layer, torch_layer)
    layout = "image" if spec["cls"] == "BatchNorm2d" else "seq1d"
    return spec, torch_layer, fnml_layer, layout


@pytest.mark.parametrize("case", list(BN_CASES), ids=list(BN_CASES))
def test_batchnorm_running_stats_then_eval(case, dtype):
    spec, torch_layer, fnml_layer, layout = _bn_pair(case, dtype)
    to_torch, from_torch = LAYOUTS[layout]
    for step in range(5):
        x = _data(spec["shape"], dtype, seed=step, scale=2.0, offset=step)
        y_torch = from_torch(torch_layer(to_torch(torch.from_numpy(x))))
        y_fnml = fnml_layer(jnp.asarray(x))
        assert_trees_close(y_fnml, y_torch, dtype=dtype)
    if torch_layer.track_running_stats:
        stats = {name: getattr(fnml_layer, name)[...] for name in ("running_mean", "running_var")}
        expected = {name: getattr(torch_layer, name) for name in stats}
        assert_trees_close(stats, expected, dtype=dtype)
        print(f"PARITY BatchNorm[{case}] running stats {dtype}: {max_abs_diff(stats, expected):.3g}")
        assert int(fnml_layer.num_batches_tracked[...]) == int(torch_layer.num_batches_tracked) == 5
        assert fnml_layer.running_mean[...].dtype == jnp.dtype(dtype)  # the parameter dtype
    else:
        assert fnml_layer.running_mean is None and torch_layer.running_mean is None
    torch_layer.eval()
    fnml_layer.eval()
    x = _data(spec["shape"], dtype, seed=10)
    y_torch = from_torch(torch_layer(to_torch(torch.from_numpy(x))))
    assert_trees_close(fnml_layer(jnp.asarray(x)), y_torch, dtype=dtype)
    if torch_layer.track_running_stats:  # eval mode leaves the statistics alone
        assert int(fnml_layer.num_batches_tracked[...]) == 5


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("case", ["1d_NLC", "2d", "2d_affine_False"])
def test_batchnorm_gradient_parity(case, mode, dtype):
    spec, torch_layer, fnml_layer, layout = _bn_pair(case, dtype)
    if mode == "eval":
        with torch.no_grad():  # non-trivial running statistics
            torch_layer.running_mean.copy_(torch.from_numpy(_data((3,), dtype, seed=7)))
            torch_layer.running_var.copy_(torch.from_numpy(_data((3,), dtype, seed=8) ** 2 + 0.5))
        _copy_params(fnml_layer, torch_layer)
        torch_layer.eval()
        fnml_layer.eval()
    x = _data(spec["shape"], dtype, seed=3)
    _parity(fnml_layer, torch_layer, x, dtype, layout=layout, label=f"BatchNorm[{case},{mode}]")


def test_batchnorm_under_jit_updates_statistics():
    model = layers.BatchNorm1d(3, param_dtype="float64")
    reference = torch.nn.BatchNorm1d(3).double()

    @nnx.jit
    def step(model, x):
        return model(x)

    for seed in range(3):
        x = _data((8, 3), "float64", seed=seed)
        step(model, jnp.asarray(x))
        reference(torch.from_numpy(x))
    assert int(model.num_batches_tracked[...]) == 3
    assert_trees_close(model.running_var[...], reference.running_var)


# ------------------------------------------------------------------------------------------------
# LayerNorm
# ------------------------------------------------------------------------------------------------

LN_CASES = {
    "last_dim": dict(args=(4,), shape=(3, 4)),
    "last_two_dims": dict(args=((3, 4),), shape=(2, 3, 4)),
    "no_affine": dict(args=(4,), kwargs=dict(elementwise_affine=False), shape=(2, 5, 4)),
    "no_bias": dict(args=(4,), kwargs=dict(bias=False), shape=(3, 4)),
    "eps1e-3": dict(args=(4,), kwargs=dict(eps=1e-3), shape=(3, 4)),
}


@pytest.mark.parametrize("case", list(LN_CASES), ids=list(LN_CASES))
def test_layernorm_parity(case, dtype):
    spec = LN_CASES[case]
    kwargs = spec.get("kwargs", {})
    torch_layer = torch.nn.LayerNorm(*spec["args"], **kwargs).to(torch_dtype(dtype))
    fnml_layer = layers.LayerNorm(*spec["args"], **kwargs, param_dtype=dtype)
    with torch.no_grad():
        for param in torch_layer.parameters():
            param.copy_(torch.from_numpy(_data(tuple(param.shape), dtype, seed=4, offset=1.0)))
    _copy_params(fnml_layer, torch_layer)
    _parity(fnml_layer, torch_layer, _data(spec["shape"], dtype), dtype, label=f"LayerNorm[{case}]")


def test_layernorm_large_mean_float32_is_accurate():
    # Around mean 300 the fast E[x^2] - E[x]^2 variance loses ~0.2 in float32; the two-pass one does not.
    x = _data((4, 64), "float32", scale=0.05, offset=300.0)
    y_torch = torch.nn.LayerNorm(64)(torch.from_numpy(x))
    y_fnml = layers.LayerNorm(64)(jnp.asarray(x))
    assert max_abs_diff(y_fnml, y_torch) < 1e-3


# ------------------------------------------------------------------------------------------------
# Embedding
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("padding_idx", [None, 0, -1], ids=["no_padding", "padding0", "padding-1"])
def test_embedding_parity_and_padding_gradient(padding_idx, dtype):
    torch_layer = torch.nn.Embedding(6, 3, padding_idx=padding_idx).to(torch_dtype(dtype))
    fnml_layer = layers.Embedding(6, 3, padding_idx=padding_idx, param_dtype=dtype, rngs=nnx.Rngs(0))
    assert fnml_layer.padding_idx == torch_layer.padding_idx
    with torch.no_grad():  # a non-zero padding row: its output is that row, its gradient still zero
        torch_layer.weight.copy_(torch.from_numpy(_data((6, 3), dtype, seed=2)))
    _copy_params(fnml_layer, torch_layer)
    indices = np.array([[0, 5, 2], [5, 0, 0]])
    y_torch = torch_layer(torch.from_numpy(indices))
    cotangent = _data((2, 3, 3), dtype, seed=9)
    (y_torch * torch.from_numpy(cotangent)).sum().backward()

    graphdef, params = nnx.split(fnml_layer)

    def objective(params):
        return jnp.sum(nnx.merge(graphdef, params)(jnp.asarray(indices)) * cotangent)

    grad = nnx.to_pure_dict(jax.grad(objective)(params))["weight"]
    y_fnml = fnml_layer(jnp.asarray(indices))
    assert_trees_close({"out": y_fnml, "grad": grad}, {"out": y_torch, "grad": torch_layer.weight.grad}, dtype=dtype)
    if padding_idx is not None:
        assert np.all(np.asarray(grad)[padding_idx % 6] == 0)


def test_embedding_padding_row_starts_at_zero():
    assert np.all(np.asarray(layers.Embedding(5, 4, padding_idx=2, rngs=nnx.Rngs(0)).weight[...][2]) == 0)


# ------------------------------------------------------------------------------------------------
# Dropout, train()/eval()
# ------------------------------------------------------------------------------------------------


def test_dropout_matches_torch_given_the_mask(dtype):
    p = 0.3
    x = _data((200, 50), dtype, seed=1)
    drop = layers.Dropout(p, rngs=nnx.Rngs(dropout=0))
    y = np.asarray(drop(jnp.asarray(x)))
    mask = y != 0
    assert abs(1 - mask.mean() - p) < 0.01  # ~p of the elements dropped
    # torch's formula with the same mask: input * (mask / (1 - p))
    expected = torch.from_numpy(x) * (torch.from_numpy(mask.astype(dtype)) / (1 - p))
    assert_trees_close(y, expected, dtype=dtype, atol=0, rtol=0)
    grad = jax.grad(lambda v: jnp.sum(layers.Dropout(p, rngs=nnx.Rngs(dropout=0))(v)))(jnp.asarray(x))
    assert_trees_close(grad, mask / np.asarray(1 - p, dtype), dtype=dtype)


def test_dropout_is_reproducible_and_advances():
    x = jnp.ones((64,))
    first, second = (
        layers.Dropout(0.5, rngs=nnx.Rngs(dropout=3)),
        layers.Dropout(0.5, rngs=nnx.Rngs(dropout=3)),
    )
    a1, a2 = first(x), first(x)
    assert np.array_equal(a1, second(x))  # same seed, same mask
    assert not np.array_equal(a1, a2)  # the stream advances between calls


def test_dropout_edge_probabilities_and_eval():
    x = jnp.asarray(_data((10,), "float64"))
    assert np.array_equal(layers.Dropout(0.0, rngs=nnx.Rngs(0))(x), x)
    assert np.array_equal(
        layers.Dropout(1.0, rngs=nnx.Rngs(0))(x), torch.nn.Dropout(1.0)(torch.from_numpy(np.array(x)))
    )
    drop = layers.Dropout(0.5, rngs=nnx.Rngs(0))
    drop.eval()
    assert np.array_equal(drop(x), x)
    drop.train()
    assert not np.array_equal(drop(x), x)
    at_call = layers.Dropout(0.5)
    assert np.array_equal(at_call(x, rngs=nnx.Rngs(dropout=1)), at_call(x, rngs=nnx.Rngs(dropout=1)))


def test_train_eval_switch_nested_modules():
    class Net(nnx.Module):  # a plain user module nesting fnml layers
        def __init__(self, rngs):
            self.block = layers.Sequential(layers.Linear(3, 3, rngs=rngs), layers.BatchNorm1d(3))
            self.drop = layers.Dropout(0.5, rngs=rngs)

    net = Net(nnx.Rngs(0))
    assert (net.drop.deterministic, net.block[1].use_running_average) == (False, False)  # torch: train mode
    net.eval()
    assert (net.drop.deterministic, net.block[1].use_running_average) == (True, True)
    net.train()
    assert (net.drop.deterministic, net.block[1].use_running_average) == (False, False)


# ------------------------------------------------------------------------------------------------
# Pools
# ------------------------------------------------------------------------------------------------

MAXPOOL_CASES = {
    "k2_tiling": dict(kwargs=dict(kernel_size=2), size=(8, 6)),
    "k2_odd_floor": dict(kwargs=dict(kernel_size=2), size=(7, 5)),
    "k2_odd_ceil": dict(kwargs=dict(kernel_size=2, ceil_mode=True), size=(7, 5)),
    "k3_s2": dict(kwargs=dict(kernel_size=3, stride=2), size=(8, 7)),
    "k3_s2_pad1": dict(kwargs=dict(kernel_size=3, stride=2, padding=1), size=(8, 7)),
    "k3_s2_pad1_ceil": dict(kwargs=dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), size=(8, 7)),
    "k2_s1_overlap": dict(kwargs=dict(kernel_size=2, stride=1), size=(5, 5)),
    "k3_dilation2": dict(kwargs=dict(kernel_size=3, stride=1, dilation=2), size=(8, 7)),
    "k(2,3)_s(1,2)_pad(1,1)": dict(kwargs=dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1)), size=(6, 7)),
}


def _pool_parity(fnml_pool, torch_pool, x, dtype, label):
    return _parity(fnml_pool, torch_pool, x, dtype, layout="image", label=label)


@_float64_all_float32_some(list(MAXPOOL_CASES), ["k2_tiling", "k3_s2_pad1_ceil", "k3_dilation2"])
def test_maxpool_parity(case, dtype):
    spec = MAXPOOL_CASES[case]
    x = _data((2, *spec["size"], 3), dtype)
    _pool_parity(
        layers.MaxPool2d(**spec["kwargs"]),
        torch.nn.MaxPool2d(**spec["kwargs"]),
        x,
        dtype,
        f"MaxPool2d[{case}]",
    )


TIE_INPUTS = {
    "all_equal": lambda shape: np.ones(shape),
    "few_integer_values": lambda shape: np.random.default_rng(0).integers(0, 2, shape).astype(np.float64),
    "two_values_repeating": lambda shape: np.where(np.arange(np.prod(shape)).reshape(shape) % 3, 2.0, 1.0),
}
TIE_CASES = [
    f"{pool}/{tie_input}"
    for pool in ("k2_tiling", "k3_s2_pad1", "k2_s1_overlap", "k3_dilation2")
    for tie_input in TIE_INPUTS
]


@_float64_all_float32_some(TIE_CASES, ["k2_tiling/all_equal", "k3_s2_pad1/few_integer_values"])
def test_maxpool_gradient_goes_to_the_first_tied_element(case, dtype):
    # jnp.max would split the gradient among tied elements; torch sends it all to the first one.
    case, tie_input = case.split("/")
    spec = MAXPOOL_CASES[case]
    x = TIE_INPUTS[tie_input]((2, *spec["size"], 3)).astype(dtype)
    _pool_parity(
        layers.MaxPool2d(**spec["kwargs"]),
        torch.nn.MaxPool2d(**spec["kwargs"]),
        x,
        dtype,
        f"MaxPool2d ties[{case},{tie_input}]",
    )


def test_maxpool_propagates_nan_like_torch():
    x = _data((1, 4, 4, 1), "float64")
    x[0, 1, 1, 0] = np.nan
    y_torch = _nhwc(torch.nn.MaxPool2d(2)(_nchw(torch.from_numpy(x))))
    y_fnml = layers.MaxPool2d(2)(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(y_fnml), y_torch.numpy())


AVGPOOL_CASES = {
    "k2_tiling": dict(kwargs=dict(kernel_size=2), size=(8, 6)),
    "k2_odd_floor": dict(kwargs=dict(kernel_size=2), size=(7, 5)),
    "k2_odd_ceil": dict(kwargs=dict(kernel_size=2, ceil_mode=True), size=(7, 5)),
    "k3_s2_pad1_include_pad": dict(kwargs=dict(kernel_size=3, stride=2, padding=1), size=(8, 7)),
    "k3_s2_pad1_exclude_pad": dict(
        kwargs=dict(kernel_size=3, stride=2, padding=1, count_include_pad=False), size=(8, 7)
    ),
    "k3_s2_pad1_ceil_include_pad": dict(kwargs=dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), size=(8, 6)),
    "k3_s2_pad1_ceil_exclude_pad": dict(
        kwargs=dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), size=(8, 6)
    ),
    "k(2,3)_s1_divisor_override5": dict(kwargs=dict(kernel_size=(2, 3), stride=1, divisor_override=5), size=(5, 6)),
    "k2_tiling_divisor_override3": dict(kwargs=dict(kernel_size=2, divisor_override=3), size=(4, 4)),
}


@_float64_all_float32_some(
    list(AVGPOOL_CASES), ["k2_tiling", "k3_s2_pad1_ceil_exclude_pad", "k(2,3)_s1_divisor_override5"]
)
def test_avgpool_parity(case, dtype):
    spec = AVGPOOL_CASES[case]
    x = _data((2, *spec["size"], 3), dtype)
    _pool_parity(
        layers.AvgPool2d(**spec["kwargs"]),
        torch.nn.AvgPool2d(**spec["kwargs"]),
        x,
        dtype,
        f"AvgPool2d[{case}]",
    )


ADAPTIVE_CASES = {
    "global_(1,1)": dict(output_size=(1, 1), size=(5, 7)),
    "int_4_divisible": dict(output_size=4, size=(8, 8)),
    "(2,3)_overlapping": dict(output_size=(2, 3), size=(7, 5)),
    "(3,None)": dict(output_size=(3, None), size=(7, 5)),
    "upsample_5_from_3": dict(output_size=5, size=(3, 3)),
}


@_float64_all_float32_some(list(ADAPTIVE_CASES), ["global_(1,1)", "(2,3)_overlapping"])
def test_adaptive_avgpool_parity(case, dtype):
    spec = ADAPTIVE_CASES[case]
    x = _data((2, *spec["size"], 3), dtype)
    pools = layers.AdaptiveAvgPool2d(spec["output_size"]), torch.nn.AdaptiveAvgPool2d(spec["output_size"])
    _pool_parity(*pools, x, dtype, f"AdaptiveAvgPool2d[{case}]")


@pytest.mark.parametrize("name", ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"], ids=["max", "avg", "adaptive"])
def test_pools_accept_unbatched_hwc(name):
    arg = 2 if name != "AdaptiveAvgPool2d" else (2, 2)
    x = _data((6, 4, 3), "float64")
    y_torch = _nhwc(getattr(torch.nn, name)(arg)(_nchw(torch.from_numpy(x))))
    assert_trees_close(getattr(layers, name)(arg)(jnp.asarray(x)), y_torch)


# ------------------------------------------------------------------------------------------------
# Activations, Flatten, Identity
# ------------------------------------------------------------------------------------------------

ACTIVATIONS = {
    "ReLU": (lambda: layers.ReLU(), lambda: torch.nn.ReLU()),
    "LeakyReLU_default": (lambda: layers.LeakyReLU(), lambda: torch.nn.LeakyReLU()),
    "LeakyReLU_0.2": (lambda: layers.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2)),
    "GELU_exact": (lambda: layers.GELU(), lambda: torch.nn.GELU()),
    "GELU_tanh": (lambda: layers.GELU(approximate="tanh"), lambda: torch.nn.GELU(approximate="tanh")),
    "Tanh": (lambda: layers.Tanh(), lambda: torch.nn.Tanh()),
    "Sigmoid": (lambda: layers.Sigmoid(), lambda: torch.nn.Sigmoid()),
    "Softmax_dim1": (lambda: layers.Softmax(dim=1), lambda: torch.nn.Softmax(dim=1)),
    "Softmax_dim-1": (lambda: layers.Softmax(dim=-1), lambda: torch.nn.Softmax(dim=-1)),
    "LogSoftmax_dim1": (lambda: layers.LogSoftmax(dim=1), lambda: torch.nn.LogSoftmax(dim=1)),
    "LogSoftmax_dim0": (lambda: layers.LogSoftmax(dim=0), lambda: torch.nn.LogSoftmax(dim=0)),
    "Identity": (lambda: layers.Identity(), lambda: torch.nn.Identity()),
    "Flatten_default": (lambda: layers.Flatten(), lambda: torch.nn.Flatten()),
    "Flatten_0_1": (lambda: layers.Flatten(0, 1), lambda: torch.nn.Flatten(0, 1)),
    "Flatten_1_-2": (lambda: layers.Flatten(1, -2), lambda: torch.nn.Flatten(1, -2)),
}


@pytest.mark.parametrize("name", list(ACTIVATIONS), ids=list(ACTIVATIONS))
def test_activation_parity(name, dtype):
    make_fnml, make_torch = ACTIVATIONS[name]
    x = _data((3, 4, 5), dtype, scale=2.0)
    x[0, 0, :3] = 0.0  # exact zeros: the kink of ReLU/LeakyReLU, where gradients conventions differ
    _parity(make_fnml(), make_torch(), x, dtype, label=name)


# ------------------------------------------------------------------------------------------------
# Sequential, SimpleNN, print(model)
# ------------------------------------------------------------------------------------------------


def _torch_simplenn() -> torch.nn.Module:
    class SimpleNN(torch.nn.Module):
        """The tutorial's model, verbatim (named as in the tutorial: print shows the class name)."""

        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(2, 2)
            self.fc2 = torch.nn.Linear(2, 1)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    return SimpleNN()


def test_simplenn_parity_and_print(dtype):
    torch_model = _torch_simplenn().to(torch_dtype(dtype))
    model = layers.SimpleNN(param_dtype=dtype, rngs=nnx.Rngs(0))
    assert str(model) == str(torch_model) == repr(model)
    _copy_params(model.fc1, torch_model.fc1)
    _copy_params(model.fc2, torch_model.fc2)
    x = _data((4, 2), dtype)
    x_leaf = torch.from_numpy(x).requires_grad_(True)
    torch_model(x_leaf).sum().backward()
    grads = nnx.to_pure_dict(nnx.grad(lambda m, v: jnp.sum(m(v)))(model, jnp.asarray(x)))
    actual = {f"{layer}.{attr}": grads[layer][attr] for layer in ("fc1", "fc2") for attr in ("kernel", "bias")}
    expected = {
        f"{layer}.{attr}": convert(getattr(getattr(torch_model, layer), name).grad.numpy())
        for layer in ("fc1", "fc2")
        for attr, (name, convert) in _LINEAR_MAP.items()
    }
    assert_trees_close(
        {"out": model(jnp.asarray(x)), **actual},
        {"out": torch_model(torch.from_numpy(x)), **expected},
        dtype=dtype,
    )


def _torch_sequential():
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 3 * 3, 5),
        torch.nn.GELU(),
        torch.nn.Linear(5, 2),
    )


def _fnml_sequential(dtype):
    rngs = nnx.Rngs(0)
    return layers.Sequential(
        layers.Conv2d(3, 4, 3, padding=1, param_dtype=dtype, rngs=rngs),
        layers.BatchNorm2d(4, param_dtype=dtype),
        layers.ReLU(),
        layers.MaxPool2d(2),
        layers.Flatten(),
        layers.Linear(4 * 3 * 3, 5, param_dtype=dtype, rngs=rngs),
        layers.GELU(),
        layers.Linear(5, 2, param_dtype=dtype, rngs=rngs),
    )


def test_sequential_cnn_forward_parity(dtype):
    torch_model, model = _torch_sequential().to(torch_dtype(dtype)), _fnml_sequential(dtype)
    for fnml_layer, torch_layer in zip(model, torch_model):
        if isinstance(fnml_layer, layers.Linear) and fnml_layer.in_features == 36:
            # torch flattens (C, H, W), NHWC flattens (H, W, C): permute the weight's input axis.
            weight = torch_layer.weight.detach().numpy()  # (O, C*H*W)
            fnml_layer.kernel[...] = jnp.asarray(weight.reshape(5, 4, 3, 3).transpose(2, 3, 1, 0).reshape(36, 5))
            fnml_layer.bias[...] = jnp.asarray(torch_layer.bias.detach().numpy())
        elif list(torch_layer.parameters()):
            _copy_params(fnml_layer, torch_layer)
    x = _data((2, 6, 6, 3), dtype)
    forward = nnx.jit(lambda model, x: model(x))
    y_torch = torch_model(_nchw(torch.from_numpy(x)))
    assert_trees_close(forward(model, jnp.asarray(x)), y_torch, dtype=dtype)
    assert int(model[1].num_batches_tracked[...]) == 1  # the training-mode update came back out of jit
    torch_model.eval()
    model.eval()
    assert_trees_close(forward(model, jnp.asarray(x)), torch_model(_nchw(torch.from_numpy(x))), dtype=dtype)


def test_sequential_container_protocol():
    model = _fnml_sequential("float32")
    torch_model = _torch_sequential()
    assert len(model) == len(torch_model) == 8
    assert isinstance(model[0], layers.Conv2d) and isinstance(model[-1], layers.Linear)
    assert [type(layer).__name__ for layer in model] == [type(layer).__name__ for layer in torch_model]
    head = model[5:]
    assert isinstance(head, layers.Sequential) and len(head) == 3 and head[0] is model[5]
    # torch's slice keeps the original child names ((5), (6), ...); fnml renumbers from 0.
    assert str(head) == str(torch.nn.Sequential(*torch_model[5:]))
    assert str(layers.Sequential()) == str(torch.nn.Sequential())
    y = layers.Sequential()(jnp.ones(3))
    assert np.array_equal(y, np.ones(3))


def test_print_matches_torch_for_every_layer():
    rngs = nnx.Rngs(0)
    pairs = [
        (layers.Linear(3, 4, rngs=rngs), torch.nn.Linear(3, 4)),
        (layers.Linear(3, 4, bias=False, rngs=rngs), torch.nn.Linear(3, 4, bias=False)),
        (layers.Conv2d(3, 8, 3, rngs=rngs), torch.nn.Conv2d(3, 8, 3)),
        (
            layers.Conv2d(
                4,
                8,
                (3, 2),
                stride=2,
                padding=1,
                dilation=2,
                groups=2,
                bias=False,
                padding_mode="reflect",
                rngs=rngs,
            ),
            torch.nn.Conv2d(
                4, 8, (3, 2), stride=2, padding=1, dilation=2, groups=2, bias=False, padding_mode="reflect"
            ),
        ),
        (layers.Conv2d(3, 8, 3, padding="same", rngs=rngs), torch.nn.Conv2d(3, 8, 3, padding="same")),
        (layers.BatchNorm1d(5), torch.nn.BatchNorm1d(5)),
        (
            layers.BatchNorm2d(5, momentum=None, affine=False),
            torch.nn.BatchNorm2d(5, momentum=None, affine=False),
        ),
        (layers.LayerNorm((3, 4)), torch.nn.LayerNorm((3, 4))),
        (layers.Embedding(10, 3, padding_idx=-2, rngs=rngs), torch.nn.Embedding(10, 3, padding_idx=-2)),
        (layers.MaxPool2d(3, 2, 1), torch.nn.MaxPool2d(3, 2, 1)),
        (layers.AvgPool2d((2, 3)), torch.nn.AvgPool2d((2, 3))),
        (layers.AdaptiveAvgPool2d((1, 1)), torch.nn.AdaptiveAvgPool2d((1, 1))),
        (layers.Flatten(), torch.nn.Flatten()),
        (layers.ReLU(), torch.nn.ReLU()),
        (layers.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
        (layers.GELU(approximate="tanh"), torch.nn.GELU(approximate="tanh")),
        (layers.Tanh(), torch.nn.Tanh()),
        (layers.Sigmoid(), torch.nn.Sigmoid()),
        (layers.Softmax(dim=1), torch.nn.Softmax(dim=1)),
        (layers.LogSoftmax(dim=-1), torch.nn.LogSoftmax(dim=-1)),
        (layers.Identity(), torch.nn.Identity()),
    ]
    for fnml_layer, torch_layer in pairs:
        assert str(fnml_layer) == str(torch_layer)
    # Dropout accepts torch's inplace flag (a no-op: JAX arrays are immutable) and prints it as torch does.
    assert str(layers.Dropout(0.2)) == str(torch.nn.Dropout(0.2))


def test_print_user_modules_like_torch():
    class Block(layers.Module):  # subclassing fnml's Module gives torch's print
        def __init__(self, rngs):
            self.net = layers.Sequential(layers.Linear(2, 3, rngs=rngs), layers.ReLU())
            self.heads = nnx.List([layers.Linear(3, 1, rngs=rngs), layers.Linear(3, 2, rngs=rngs)])

    class TorchBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
            self.heads = torch.nn.ModuleList([torch.nn.Linear(3, 1), torch.nn.Linear(3, 2)])

    class PlainBlock(nnx.Module):  # a plain nnx module renders through module_repr
        def __init__(self, rngs):
            self.net = layers.Sequential(layers.Linear(2, 3, rngs=rngs), layers.ReLU())
            self.heads = nnx.List([layers.Linear(3, 1, rngs=rngs), layers.Linear(3, 2, rngs=rngs)])

    expected = str(TorchBlock()).replace("TorchBlock", "Block")
    assert str(Block(nnx.Rngs(0))) == expected
    assert layers.module_repr(PlainBlock(nnx.Rngs(0))) == expected.replace("Block", "PlainBlock")


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


def _rngs():
    return nnx.Rngs(0)


ERROR_CASES = {
    # Linear
    "linear_in_features_zero": (
        lambda: layers.Linear(0, 2, rngs=_rngs()),
        ValueError,
        r"Linear: in_features must be a positive integer, got in_features=0",
    ),
    "linear_out_features_float": (
        lambda: layers.Linear(2, 1.5, rngs=_rngs()),
        TypeError,
        r"out_features must be a positive integer",
    ),
    "linear_bias_not_bool": (
        lambda: layers.Linear(2, 2, bias="yes", rngs=_rngs()),
        TypeError,
        r"bias must be a bool, got bias='yes'",
    ),
    "linear_wrong_features": (
        lambda: layers.Linear(3, 2, rngs=_rngs())(jnp.ones((4, 5))),
        ValueError,
        r"Linear\(in_features=3\) got an input with 5 features",
    ),
    "linear_scalar_input": (
        lambda: layers.Linear(3, 2, rngs=_rngs())(jnp.ones(())),
        ValueError,
        r"Linear: input must be at least 1-D",
    ),
    # Conv2d
    "conv_groups_in": (
        lambda: layers.Conv2d(3, 4, 3, groups=2, rngs=_rngs()),
        ValueError,
        r"in_channels=3 must be divisible by groups=2",
    ),
    "conv_groups_out": (
        lambda: layers.Conv2d(4, 3, 3, groups=2, rngs=_rngs()),
        ValueError,
        r"out_channels=3 must be divisible by groups=2",
    ),
    "conv_groups_zero": (
        lambda: layers.Conv2d(4, 4, 3, groups=0, rngs=_rngs()),
        ValueError,
        r"groups must be a positive integer, got groups=0",
    ),
    "conv_kernel_zero": (
        lambda: layers.Conv2d(3, 4, 0, rngs=_rngs()),
        ValueError,
        r"kernel_size must be positive, got kernel_size=0",
    ),
    "conv_kernel_triple": (
        lambda: layers.Conv2d(3, 4, (1, 2, 3), rngs=_rngs()),
        ValueError,
        r"kernel_size must be an int or a tuple of 2 ints",
    ),
    "conv_stride_negative": (
        lambda: layers.Conv2d(3, 4, 3, stride=-1, rngs=_rngs()),
        ValueError,
        r"stride must be positive, got stride=-1",
    ),
    "conv_padding_negative": (
        lambda: layers.Conv2d(3, 4, 3, padding=-1, rngs=_rngs()),
        ValueError,
        r"padding must be >= 0, got padding=-1",
    ),
    "conv_padding_string": (
        lambda: layers.Conv2d(3, 4, 3, padding="full", rngs=_rngs()),
        ValueError,
        r"padding must be one of 'valid', 'same'; got padding='full'",
    ),
    "conv_same_strided": (
        lambda: layers.Conv2d(3, 4, 3, stride=2, padding="same", rngs=_rngs()),
        ValueError,
        r"padding='same' is not supported for strided convolutions",
    ),
    "conv_padding_mode": (
        lambda: layers.Conv2d(3, 4, 3, padding_mode="mirror", rngs=_rngs()),
        ValueError,
        r"padding_mode must be one of 'zeros', 'reflect', 'replicate', 'circular'",
    ),
    "conv_bias_not_bool": (
        lambda: layers.Conv2d(3, 4, 3, bias=None, rngs=_rngs()),
        TypeError,
        r"Conv2d: bias must be a bool",
    ),
    "conv_wrong_channels": (
        lambda: layers.Conv2d(3, 4, 3, rngs=_rngs())(jnp.ones((1, 8, 8, 5))),
        ValueError,
        r"Conv2d\(in_channels=3\) got an input with 5 channels",
    ),
    "conv_nchw_hint": (
        lambda: layers.Conv2d(3, 4, 3, rngs=_rngs())(jnp.ones((1, 3, 8, 8))),
        ValueError,
        r"looks NCHW: convert it with fnml.tensors.nchw_to_nhwc",
    ),
    "conv_wrong_rank": (
        lambda: layers.Conv2d(3, 4, 3, rngs=_rngs())(jnp.ones((8, 3))),
        ValueError,
        r"Conv2d \(NHWC or unbatched HWC\): input must be 3-D or 4-D, got a 2-D array",
    ),
    "conv_kernel_too_big": (
        lambda: layers.Conv2d(3, 4, 5, rngs=_rngs())(jnp.ones((1, 3, 8, 3))),
        ValueError,
        r"padded input size 3 .* smaller than the effective kernel size 5",
    ),
    "conv_reflect_pad_too_big": (
        lambda: layers.Conv2d(3, 4, 3, padding=3, padding_mode="reflect", rngs=_rngs())(jnp.ones((1, 3, 8, 3))),
        ValueError,
        r"padding_mode='reflect' needs padding <= 2 for an input of size 3",
    ),
    # BatchNorm
    "bn_num_features": (
        lambda: layers.BatchNorm2d(0),
        ValueError,
        r"BatchNorm2d: num_features must be a positive integer",
    ),
    "bn_momentum": (
        lambda: layers.BatchNorm1d(3, momentum=1.5),
        ValueError,
        r"BatchNorm1d: momentum must be in \[0.0, 1.0\], got momentum=1.5",
    ),
    "bn_eps": (
        lambda: layers.BatchNorm1d(3, eps=0.0),
        ValueError,
        r"BatchNorm1d: eps must be > 0, got eps=0.0",
    ),
    "bn_wrong_channels": (
        lambda: layers.BatchNorm2d(3)(jnp.ones((2, 4, 4, 5))),
        ValueError,
        r"BatchNorm2d\(num_features=3\) got an input with 5 channels",
    ),
    "bn2d_wrong_rank": (
        lambda: layers.BatchNorm2d(3)(jnp.ones((2, 3))),
        ValueError,
        r"BatchNorm2d \(channels-last \(N, H, W, C\)\): input must be 4-D, got a 2-D array",
    ),
    "bn1d_wrong_rank": (
        lambda: layers.BatchNorm1d(3)(jnp.ones((2, 2, 2, 3))),
        ValueError,
        r"BatchNorm1d .*input must be 2-D or 3-D, got a 4-D array",
    ),
    "bn_single_value_training": (
        lambda: layers.BatchNorm1d(3)(jnp.ones((1, 3))),
        ValueError,
        r"expected more than 1 value per channel when training, got input shape \(1, 3\)",
    ),
    # LayerNorm
    "ln_shape": (
        lambda: layers.LayerNorm((3, 0)),
        ValueError,
        r"normalized_shape must be a positive int or a non-empty tuple",
    ),
    "ln_eps": (lambda: layers.LayerNorm(3, eps=-1.0), ValueError, r"LayerNorm: eps must be > 0"),
    "ln_wrong_trailing_shape": (
        lambda: layers.LayerNorm((2, 3))(jnp.ones((4, 3, 2))),
        ValueError,
        r"LayerNorm\(normalized_shape=\(2, 3\)\) got an input of shape \(4, 3, 2\)",
    ),
    # Dropout
    "dropout_p_above_1": (
        lambda: layers.Dropout(1.5),
        ValueError,
        r"Dropout: p must be in \[0.0, 1.0\], got p=1.5",
    ),
    "dropout_p_negative": (
        lambda: layers.Dropout(-0.1),
        ValueError,
        r"Dropout: p must be in \[0.0, 1.0\], got p=-0.1",
    ),
    "dropout_p_string": (lambda: layers.Dropout("0.5"), TypeError, r"Dropout: p must be a number"),
    "dropout_rngs_type": (
        lambda: layers.Dropout(0.5, rngs=0),
        TypeError,
        r"rngs must be an nnx.Rngs or None, got int",
    ),
    "dropout_no_rngs_training": (
        lambda: layers.Dropout(0.5)(jnp.ones(3)),
        ValueError,
        r"Dropout in training mode needs random numbers",
    ),
    # Embedding
    "emb_padding_idx_range": (
        lambda: layers.Embedding(5, 2, padding_idx=5, rngs=_rngs()),
        ValueError,
        r"padding_idx must be within num_embeddings=5",
    ),
    "emb_padding_idx_type": (
        lambda: layers.Embedding(5, 2, padding_idx=1.0, rngs=_rngs()),
        TypeError,
        r"padding_idx must be an int or None",
    ),
    "emb_dim_zero": (
        lambda: layers.Embedding(5, 0, rngs=_rngs()),
        ValueError,
        r"embedding_dim must be a positive integer",
    ),
    "emb_float_indices": (
        lambda: layers.Embedding(5, 2, rngs=_rngs())(jnp.ones(3)),
        TypeError,
        r"indices must be an integer array, got dtype float",
    ),
    "emb_index_out_of_range": (
        lambda: layers.Embedding(5, 2, rngs=_rngs())(jnp.array([1, 5])),
        IndexError,
        r"index 5 is out of range \[0, 4\]",
    ),
    "emb_negative_index": (
        lambda: layers.Embedding(5, 2, rngs=_rngs())(jnp.array([-1])),
        IndexError,
        r"index -1 is out of range",
    ),
    # Pools
    "maxpool_padding_too_big": (
        lambda: layers.MaxPool2d(2, padding=2),
        ValueError,
        r"MaxPool2d: padding should be at most half of the effective kernel size",
    ),
    "avgpool_padding_too_big": (
        lambda: layers.AvgPool2d(3, padding=2),
        ValueError,
        r"AvgPool2d: padding should be at most half",
    ),
    "maxpool_kernel_zero": (
        lambda: layers.MaxPool2d(0),
        ValueError,
        r"MaxPool2d: kernel_size must be positive",
    ),
    "avgpool_divisor_zero": (
        lambda: layers.AvgPool2d(2, divisor_override=0),
        ValueError,
        r"divisor_override must be a positive integer",
    ),
    "maxpool_input_too_small": (
        lambda: layers.MaxPool2d(3)(jnp.ones((1, 2, 2, 1))),
        ValueError,
        r"MaxPool2d: input of shape \(1, 2, 2, 1\) \(NHWC\) is too small",
    ),
    "maxpool_wrong_rank": (
        lambda: layers.MaxPool2d(2)(jnp.ones((4, 4))),
        ValueError,
        r"MaxPool2d \(NHWC or unbatched HWC\): input must be 3-D or 4-D",
    ),
    "adaptive_output_size": (
        lambda: layers.AdaptiveAvgPool2d((0, 1)),
        ValueError,
        r"output_size must be a positive int or a tuple of 2 positive ints",
    ),
    "adaptive_wrong_rank": (
        lambda: layers.AdaptiveAvgPool2d(1)(jnp.ones((4, 4))),
        ValueError,
        r"AdaptiveAvgPool2d .*input must be 3-D or 4-D",
    ),
    # Shape / activation layers
    "flatten_dim_type": (
        lambda: layers.Flatten(start_dim=1.0),
        TypeError,
        r"Flatten: start_dim must be an int",
    ),
    "flatten_dim_range": (
        lambda: layers.Flatten(1, 5)(jnp.ones((2, 3))),
        IndexError,
        r"Flatten: dimension out of range \(expected to be in range of \[-2, 1\], got 5\)",
    ),
    "flatten_start_after_end": (
        lambda: layers.Flatten(2, 1)(jnp.ones((2, 3, 4))),
        ValueError,
        r"start_dim=2 must not come after end_dim=1",
    ),
    "softmax_dim_none": (lambda: layers.Softmax(None), TypeError, r"Softmax: dim must be an int"),
    "logsoftmax_dim_range": (
        lambda: layers.LogSoftmax(dim=2)(jnp.ones((2, 3))),
        IndexError,
        r"LogSoftmax: dimension out of range",
    ),
    "gelu_approximate": (
        lambda: layers.GELU(approximate="fast"),
        ValueError,
        r"GELU: approximate must be one of 'none', 'tanh'; got approximate='fast'",
    ),
    "leaky_slope": (
        lambda: layers.LeakyReLU("0.1"),
        TypeError,
        r"LeakyReLU: negative_slope must be a number",
    ),
    # Sequential
    "sequential_function_layer": (
        lambda: layers.Sequential(jax.nn.relu),
        TypeError,
        r"Sequential: layer 0 must be a module \(e.g. layers.ReLU\(\)",
    ),
    "sequential_index_range": (
        lambda: layers.Sequential(layers.ReLU())[3],
        IndexError,
        r"Sequential: index 3 is out of range for 1 layers",
    ),
    "sequential_index_type": (
        lambda: layers.Sequential(layers.ReLU())["0"],
        TypeError,
        r"Sequential indices must be int or slice, got str",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
def test_errors(case):
    build, error, match = ERROR_CASES[case]
    with pytest.raises(error, match=match):
        build()

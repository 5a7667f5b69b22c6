"""Property-based parity of fnml's activations, softmax, GLU, PReLU, dropout family and recurrent cells vs torch.

Each property draws the op's options (slopes, alphas, beta/threshold, bounds, dims), a dtype and a value regime
(normal, large magnitudes, near-zero, exact kink points, ties) and compares the value and the gradient of a
random linear functional against torch. Tolerance: the shared table, ``atol`` scaled by the largest magnitude
compared. Settings: ``tests/_hypothesis_profiles.py`` (derandomized CI profile, bounded examples).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as TF
from _hypothesis_profiles import examples
from flax import nnx
from helpers import copy_torch_weights, jax_dtype, tolerance, torch_dtype
from hypothesis import given
from hypothesis import strategies as st

from fnml import functional as F
from fnml import layers

DTYPE = st.sampled_from(["float64", "float32"])
REGIME = st.sampled_from(["normal", "large", "tiny", "kinks", "ties"])
SEED = st.integers(0, 2**16)
SHAPES = st.sampled_from([(7,), (2, 5), (3, 2, 4)])
SCALAR = st.floats(-3.0, 3.0).map(lambda v: round(v, 3))
POSITIVE = st.floats(0.1, 3.0).map(lambda v: round(v, 3))


def _values(shape, dtype: str, regime: str, seed: int, kinks=(0.0,)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if regime == "large":
        x = x * 1e3
    elif regime == "tiny":
        x = x * 1e-6
    elif regime == "kinks":  # exact kink points, where torch defines a particular gradient
        x = np.where(rng.random(shape) < 0.5, rng.choice(np.asarray(kinks, float), size=shape), x)
    elif regime == "ties":
        x = rng.integers(-3, 4, size=shape).astype(np.float64)
    return x.astype(dtype)


def _close(actual, expected, dtype: str, what: str) -> None:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    tol = tolerance(dtype)
    magnitude = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, atol=tol["atol"] * magnitude, rtol=tol["rtol"], err_msg=what)


def _compare(fnml_fn, torch_fn, x: np.ndarray, dtype: str, seed: int, what: str) -> None:
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_fn(xt)
    cotangent = np.random.default_rng(seed + 1).standard_normal(tuple(yt.shape)).astype(dtype)
    (gt,) = torch.autograd.grad(yt, xt, torch.as_tensor(cotangent))
    y, pullback = jax.vjp(fnml_fn, jnp.asarray(x))
    (g,) = pullback(jnp.asarray(cotangent))
    _close(y, yt.detach().numpy(), dtype, f"{what}: value")
    _close(g, gt.numpy(), dtype, f"{what}: input gradient")


@st.composite
def activations(draw):
    """(name, fnml op, torch op, kink points) with drawn options."""
    kind = draw(
        st.sampled_from(
            ["relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "hardtanh", "hardswish"]
            + ["hardsigmoid", "softplus", "softsign", "logsigmoid", "threshold"]
        )
    )
    if kind == "leaky_relu":
        slope = draw(SCALAR)
        return kind, lambda x: F.leaky_relu(x, slope), lambda t: TF.leaky_relu(t, slope), (0.0,)
    if kind in ("elu", "celu"):
        alpha = draw(POSITIVE)
        return kind, lambda x: getattr(F, kind)(x, alpha), lambda t: getattr(TF, kind)(t, alpha), (0.0,)
    if kind == "gelu":
        approximate = draw(st.sampled_from(["none", "tanh"]))
        return kind, lambda x: F.gelu(x, approximate), lambda t: TF.gelu(t, approximate=approximate), (0.0,)
    if kind == "hardtanh":
        low = draw(st.floats(-3.0, 0.0).map(lambda v: round(v, 3)))
        high = low + draw(POSITIVE)
        return kind, lambda x: F.hardtanh(x, low, high), lambda t: TF.hardtanh(t, low, high), (low, high)
    if kind == "softplus":
        beta, threshold = draw(POSITIVE), draw(st.floats(0.5, 20.0).map(lambda v: round(v, 3)))
        fnml_fn = lambda x: F.softplus(x, beta, threshold)  # noqa: E731
        return kind, fnml_fn, lambda t: TF.softplus(t, beta, threshold), (threshold / beta, 0.0)
    if kind == "threshold":
        threshold, value = draw(SCALAR), draw(SCALAR)
        fnml_fn = lambda x: F.threshold(x, threshold, value)  # noqa: E731
        return kind, fnml_fn, lambda t: TF.threshold(t, threshold, value), (threshold,)
    kinks = {"relu6": (0.0, 6.0), "hardswish": (-3.0, 3.0), "hardsigmoid": (-3.0, 3.0)}.get(kind, (0.0,))
    return kind, getattr(F, kind), getattr(TF, kind), kinks


@examples(40)
@given(activation=activations(), shape=SHAPES, dtype=DTYPE, regime=REGIME, seed=SEED)
def test_activation_matches_torch(activation, shape, dtype, regime, seed):
    name, fnml_fn, torch_fn, kinks = activation
    x = _values(shape, dtype, regime, seed, kinks)
    _compare(fnml_fn, torch_fn, x, dtype, seed, name)


@examples(15)
@given(
    op=st.sampled_from(["softmax", "log_softmax"]),
    shape=SHAPES,
    dim_index=st.integers(-3, 2),
    dtype=DTYPE,
    regime=REGIME,
    seed=SEED,
)
def test_softmax_family_matches_torch(op, shape, dim_index, dtype, regime, seed):
    dim = dim_index % len(shape)
    x = _values(shape, dtype, regime, seed)
    _compare(lambda v: getattr(F, op)(v, dim), lambda t: getattr(TF, op)(t, dim), x, dtype, seed, f"{op} dim={dim}")


@examples(15)
@given(shape=st.sampled_from([(4,), (2, 6), (4, 3, 2)]), dim_index=st.integers(0, 2), dtype=DTYPE, seed=SEED)
def test_glu_matches_torch(shape, dim_index, dtype, seed):
    even = [axis for axis, size in enumerate(shape) if size % 2 == 0]
    dim = even[dim_index % len(even)]
    x = _values(shape, dtype, "normal", seed)
    _compare(lambda v: F.glu(v, dim), lambda t: TF.glu(t, dim), x, dtype, seed, f"glu dim={dim}")


@examples(15)
@given(
    shape=st.sampled_from([(2, 3), (2, 3, 4), (1, 3, 2, 2)]),
    shared=st.booleans(),
    dtype=DTYPE,
    regime=REGIME,
    seed=SEED,
)
def test_prelu_layer_matches_torch_channels_last(shape, shared, dtype, regime, seed):
    channels = 1 if shared else shape[1]
    x = _values(shape, dtype, regime, seed)  # torch layout (N, C, *)
    weight = np.random.default_rng(seed + 2).uniform(-0.5, 0.5, channels).astype(dtype)
    torch_layer = torch.nn.PReLU(channels).to(torch_dtype(dtype))
    with torch.no_grad():
        torch_layer.weight.copy_(torch.from_numpy(weight))
    layer = layers.PReLU(channels, param_dtype=jax_dtype(dtype))
    layer.weight[...] = jnp.asarray(weight)
    to_last = lambda a: np.moveaxis(np.asarray(a), 1, -1)  # noqa: E731  (N, C, *) -> (N, *, C)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_layer(xt)
    cotangent = np.random.default_rng(seed + 3).standard_normal(x.shape).astype(dtype)
    gx, gw = torch.autograd.grad(yt, (xt, torch_layer.weight), torch.as_tensor(cotangent))
    graphdef, params = nnx.split(layer, nnx.Param)
    y, pullback = jax.vjp(lambda p, v: nnx.merge(graphdef, p)(v), params, jnp.asarray(to_last(x)))
    d_params, d_x = pullback(jnp.asarray(to_last(cotangent)))
    _close(np.moveaxis(np.asarray(y), -1, 1), yt.detach().numpy(), dtype, "prelu value")
    _close(np.moveaxis(np.asarray(d_x), -1, 1), gx.numpy(), dtype, "prelu input gradient")
    _close(d_params["weight"][...], gw.numpy(), dtype, "prelu weight gradient")


@examples(20)
@given(
    op=st.sampled_from(["dropout", "dropout1d", "dropout2d"]),
    p=st.floats(0.0, 1.0),
    training=st.booleans(),
    seed=SEED,
)
def test_dropout_outputs_are_zero_or_scaled_and_eval_is_identity(op, p, training, seed):
    shape = {"dropout": (3, 5), "dropout1d": (2, 3, 4), "dropout2d": (2, 3, 2, 2)}[op]
    x = jnp.asarray(_values(shape, "float64", "normal", seed))
    y = np.asarray(getattr(F, op)(x, p, training, key=jax.random.key(seed)))
    if not training or p == 0.0:
        np.testing.assert_array_equal(y, x)
        return
    if p == 1.0:
        np.testing.assert_array_equal(y, np.zeros(shape))
        return
    kept = y != 0
    np.testing.assert_allclose(y[kept], np.asarray(x)[kept] * (1 / (1 - p)), rtol=1e-15)
    if op != "dropout":  # whole channels: the same decision along the spatial axes of each (n, c)
        per_channel = kept.reshape(shape[0], shape[1], -1)
        assert (per_channel == per_channel[..., :1]).all()


@examples(10)
@given(
    kind=st.sampled_from(["RNNCell-tanh", "RNNCell-relu", "LSTMCell", "GRUCell"]),
    input_size=st.integers(1, 4),
    hidden_size=st.integers(1, 4),
    bias=st.booleans(),
    batched=st.booleans(),
    dtype=DTYPE,
    seed=SEED,
)
def test_cells_match_torch(kind, input_size, hidden_size, bias, batched, dtype, seed):
    name, _, nonlinearity = kind.partition("-")
    extra = {"nonlinearity": nonlinearity} if nonlinearity else {}
    torch_cell = getattr(torch.nn, name)(input_size, hidden_size, bias=bias, **extra).to(torch_dtype(dtype))
    cell = getattr(layers, name)(
        input_size, hidden_size, bias=bias, **extra, param_dtype=jax_dtype(dtype), rngs=nnx.Rngs(0)
    )
    copy_torch_weights(cell, torch_cell)
    lead = (2,) if batched else ()
    x = _values((*lead, input_size), dtype, "normal", seed)
    h = _values((*lead, hidden_size), dtype, "normal", seed + 1)
    if name == "LSTMCell":
        c = _values((*lead, hidden_size), dtype, "normal", seed + 2)
        expected = torch_cell(torch.from_numpy(x), (torch.from_numpy(h), torch.from_numpy(c)))
        actual = cell(jnp.asarray(x), (jnp.asarray(h), jnp.asarray(c)))
        for a, e, what in zip(actual, expected, ("h", "c")):
            _close(a, e.detach().numpy(), dtype, f"{kind} {what}")
    else:
        expected = torch_cell(torch.from_numpy(x), torch.from_numpy(h))
        _close(cell(jnp.asarray(x), jnp.asarray(h)), expected.detach().numpy(), dtype, kind)

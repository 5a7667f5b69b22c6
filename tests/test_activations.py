"""fnml.functional's activations and softmax, and the activation layers, against real torch.

Every op: forward and the input gradient (a random cotangent) in float64 (<= 1e-12) and float32 (table
tolerance), on inputs that include the op's kinks, where torch defines a particular gradient (relu'(0) = 0,
hardtanh' = 0 at the bounds, leaky_relu'(0) = negative_slope, elu'(0) = alpha, the softplus threshold,
hardswish/hardsigmoid at +-3, threshold at its threshold). Layers: the same numbers as the functional op,
torch's print text, PReLU's weight gradient; every bad argument raises with its message.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from flax import nnx
from helpers import assert_trees_close, jax_dtype, torch_dtype

from fnml import functional as F
from fnml import layers

# (id, fnml op, torch op, kink points included in the input)
OPS = [
    ("relu", F.relu, TF.relu, [0.0]),
    ("relu-inplace", functools.partial(F.relu, inplace=True), TF.relu, [0.0]),
    ("relu6", F.relu6, TF.relu6, [0.0, 6.0]),
    ("leaky_relu-default", F.leaky_relu, TF.leaky_relu, [0.0]),
    (
        "leaky_relu-0.2",
        functools.partial(F.leaky_relu, negative_slope=0.2),
        functools.partial(TF.leaky_relu, negative_slope=0.2),
        [0.0],
    ),  # noqa: E501
    (
        "leaky_relu-neg",
        functools.partial(F.leaky_relu, negative_slope=-0.5),
        functools.partial(TF.leaky_relu, negative_slope=-0.5),
        [0.0],
    ),  # noqa: E501
    ("elu-1", F.elu, TF.elu, [0.0]),
    ("elu-0.5", functools.partial(F.elu, alpha=0.5), functools.partial(TF.elu, alpha=0.5), [0.0]),
    ("elu-2", functools.partial(F.elu, alpha=2.0), functools.partial(TF.elu, alpha=2.0), [0.0]),
    ("selu", F.selu, TF.selu, [0.0]),
    ("celu-1", F.celu, TF.celu, [0.0]),
    ("celu-0.5", functools.partial(F.celu, alpha=0.5), functools.partial(TF.celu, alpha=0.5), [0.0]),
    ("celu-2", functools.partial(F.celu, alpha=2.0), functools.partial(TF.celu, alpha=2.0), [0.0]),
    # torch's celu gradient uses 1 / float32(alpha): visible in float64 for an alpha not exact in float32.
    ("celu-0.737", functools.partial(F.celu, alpha=0.737), functools.partial(TF.celu, alpha=0.737), [0.0]),
    ("gelu-none", F.gelu, TF.gelu, [0.0]),
    ("gelu-tanh", functools.partial(F.gelu, approximate="tanh"), functools.partial(TF.gelu, approximate="tanh"), [0.0]),
    ("silu", F.silu, TF.silu, [0.0]),
    ("mish", F.mish, TF.mish, [0.0]),
    ("hardtanh-default", F.hardtanh, TF.hardtanh, [-1.0, 1.0]),
    (
        "hardtanh-(-2,0.5)",
        functools.partial(F.hardtanh, min_val=-2.0, max_val=0.5),
        functools.partial(TF.hardtanh, min_val=-2.0, max_val=0.5),
        [-2.0, 0.5],
    ),  # noqa: E501
    ("hardswish", F.hardswish, TF.hardswish, [-3.0, 0.0, 3.0]),
    ("hardsigmoid", F.hardsigmoid, TF.hardsigmoid, [-3.0, 0.0, 3.0]),
    ("softplus-default", F.softplus, TF.softplus, [0.0, 20.0]),
    (
        "softplus-beta2-th1",
        functools.partial(F.softplus, beta=2.0, threshold=1.0),
        functools.partial(TF.softplus, beta=2.0, threshold=1.0),
        [0.5, 0.0],
    ),  # noqa: E501
    (
        "softplus-beta0.5-th3",
        functools.partial(F.softplus, beta=0.5, threshold=3.0),
        functools.partial(TF.softplus, beta=0.5, threshold=3.0),
        [6.0],
    ),  # noqa: E501
    ("softsign", F.softsign, TF.softsign, [0.0]),
    ("logsigmoid", F.logsigmoid, TF.logsigmoid, [0.0]),
    (
        "threshold-1-(-2)",
        functools.partial(F.threshold, threshold=1.0, value=-2.0),
        functools.partial(TF.threshold, threshold=1.0, value=-2.0),
        [1.0],
    ),  # noqa: E501
    (
        "threshold-(-0.5)-0",
        functools.partial(F.threshold, threshold=-0.5, value=0.0),
        functools.partial(TF.threshold, threshold=-0.5, value=0.0),
        [-0.5],
    ),  # noqa: E501
    ("sigmoid", F.sigmoid, torch.sigmoid, [0.0]),
    ("tanh", F.tanh, torch.tanh, [0.0]),
]
OP_IDS = [op[0] for op in OPS]


def _input(kinks, dtype: str, seed: int = 0) -> np.ndarray:
    """The kink points, a few large magnitudes (overflow branches), and seeded normal draws."""
    rng = np.random.default_rng(seed)
    return np.concatenate([np.asarray(kinks, float), [-25.0, 25.0], 3 * rng.standard_normal(7)]).astype(dtype)


def _torch_value_and_grad(torch_fn, x: np.ndarray, cotangent: np.ndarray):
    xt = torch.tensor(x, requires_grad=True)
    y = torch_fn(xt.clone())  # a non-leaf copy: torch's inplace=True variants may write into it
    (grad,) = torch.autograd.grad(y, xt, grad_outputs=torch.as_tensor(cotangent))
    return y.detach(), grad


def _fnml_value_and_grad(fn, x: np.ndarray, cotangent: np.ndarray):
    y, pullback = jax.vjp(fn, jnp.asarray(x))
    return y, pullback(jnp.asarray(cotangent))[0]


@pytest.mark.parametrize(("name", "fnml_fn", "torch_fn", "kinks"), OPS, ids=OP_IDS)
def test_functional_forward_and_gradient_match_torch(name, fnml_fn, torch_fn, kinks, dtype):
    x = _input(kinks, dtype)
    cotangent = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    expected = _torch_value_and_grad(torch_fn, x, cotangent)
    actual = _fnml_value_and_grad(fnml_fn, x, cotangent)
    assert actual[0].dtype == jax_dtype(dtype)
    assert_trees_close(actual, expected, dtype=dtype)


# The gradient torch defines at each kink (the value is checked against torch, not pasted).
KINK_GRADIENTS = [
    ("relu-at-0", F.relu, TF.relu, 0.0),
    ("relu6-at-0", F.relu6, TF.relu6, 0.0),
    ("relu6-at-6", F.relu6, TF.relu6, 6.0),
    (
        "leaky_relu-at-0",
        functools.partial(F.leaky_relu, negative_slope=0.3),
        functools.partial(TF.leaky_relu, negative_slope=0.3),
        0.0,
    ),  # noqa: E501
    ("hardtanh-at-min", F.hardtanh, TF.hardtanh, -1.0),
    ("hardtanh-at-max", F.hardtanh, TF.hardtanh, 1.0),
    ("elu-alpha2-at-0", functools.partial(F.elu, alpha=2.0), functools.partial(TF.elu, alpha=2.0), 0.0),
    ("selu-at-0", F.selu, TF.selu, 0.0),
    ("celu-at-0", functools.partial(F.celu, alpha=3.0), functools.partial(TF.celu, alpha=3.0), 0.0),
    (
        "threshold-at-threshold",
        functools.partial(F.threshold, threshold=1.0, value=5.0),
        functools.partial(TF.threshold, threshold=1.0, value=5.0),
        1.0,
    ),  # noqa: E501
    (
        "softplus-at-threshold",
        functools.partial(F.softplus, beta=2.0, threshold=4.0),
        functools.partial(TF.softplus, beta=2.0, threshold=4.0),
        2.0,
    ),  # noqa: E501
    (
        "softplus-above-threshold",
        functools.partial(F.softplus, beta=2.0, threshold=4.0),
        functools.partial(TF.softplus, beta=2.0, threshold=4.0),
        2.5,
    ),  # noqa: E501
    ("hardswish-at-minus3", F.hardswish, TF.hardswish, -3.0),
    ("hardswish-at-3", F.hardswish, TF.hardswish, 3.0),
    ("hardsigmoid-at-minus3", F.hardsigmoid, TF.hardsigmoid, -3.0),
    ("hardsigmoid-at-3", F.hardsigmoid, TF.hardsigmoid, 3.0),
    ("relu-at-nan", F.relu, TF.relu, float("nan")),
    ("hardswish-at-nan", F.hardswish, TF.hardswish, float("nan")),
    ("hardsigmoid-at-nan", F.hardsigmoid, TF.hardsigmoid, float("nan")),
    (
        "threshold-at-nan",
        functools.partial(F.threshold, threshold=1.0, value=5.0),
        functools.partial(TF.threshold, threshold=1.0, value=5.0),
        float("nan"),
    ),  # noqa: E501
]


@pytest.mark.parametrize(("name", "fnml_fn", "torch_fn", "x0"), KINK_GRADIENTS, ids=[k[0] for k in KINK_GRADIENTS])
def test_gradient_at_the_kink_is_torchs(name, fnml_fn, torch_fn, x0):
    x = np.array([x0])
    y_t, g_t = _torch_value_and_grad(torch_fn, x, np.ones(1))
    y, g = _fnml_value_and_grad(fnml_fn, x, np.ones(1))
    np.testing.assert_array_equal(np.asarray(y), y_t.numpy())  # NaN == NaN here
    np.testing.assert_array_equal(np.asarray(g), g_t.numpy())


def test_the_kink_rules_differ_from_jax_defaults():
    # Guards that the torch rules are really in force (jax's own choices differ at these points).
    assert float(jax.grad(F.leaky_relu)(0.0)) == 0.01  # jax.nn.leaky_relu: 1
    assert float(jax.grad(F.hardtanh)(1.0)) == 0.0  # jnp.clip: 1/2 at a bound
    assert float(jax.grad(lambda v: F.elu(v, 2.0))(0.0)) == 2.0  # min(x, 0) would give a tie gradient 1
    assert float(jax.grad(F.hardsigmoid)(jnp.float64(0.0))) == float(np.float32(1) / np.float32(6))


@pytest.mark.parametrize("dim", [0, 1, -1, 2], ids=lambda d: f"dim{d}")
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_family_matches_torch(op, dim, dtype):
    rng = np.random.default_rng(2)
    x = (3 * rng.standard_normal((2, 3, 4))).astype(dtype)
    cotangent = rng.standard_normal(x.shape).astype(dtype)
    torch_fn = functools.partial(getattr(TF, op), dim=dim)
    expected = _torch_value_and_grad(torch_fn, x, cotangent)
    actual = _fnml_value_and_grad(functools.partial(getattr(F, op), dim=dim), x, cotangent)
    assert_trees_close(actual, expected, dtype=dtype)
    # The layer gives the functional's numbers exactly.
    layer = getattr(layers, {"softmax": "Softmax", "log_softmax": "LogSoftmax"}[op])(dim=dim)
    np.testing.assert_array_equal(np.asarray(layer(jnp.asarray(x))), np.asarray(actual[0]))


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_dtype_argument_casts_first(op):
    x = np.random.default_rng(3).standard_normal((2, 5)).astype("float32")
    expected = getattr(TF, op)(torch.tensor(x), dim=1, dtype=torch.float64)
    actual = getattr(F, op)(jnp.asarray(x), 1, dtype=jnp.float64)
    assert actual.dtype == jnp.float64
    assert_trees_close(actual, expected, dtype="float64")


def test_softmax_of_a_scalar_and_unbatched_vector_like_torch():
    for x in (np.array(1.5), np.array([1.0, 2.0, 3.0])):
        for dim in (0, -1):
            assert_trees_close(F.softmax(jnp.asarray(x), dim), TF.softmax(torch.tensor(x), dim))


@pytest.mark.parametrize("dim", [0, 1, -1], ids=lambda d: f"dim{d}")
def test_glu_matches_torch(dim, dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 6, 2)).astype(dtype)
    cotangent = rng.standard_normal(np.array(x.shape) // np.where(np.arange(3) == dim % 3, 2, 1)).astype(dtype)
    expected = _torch_value_and_grad(functools.partial(TF.glu, dim=dim), x, cotangent)
    actual = _fnml_value_and_grad(functools.partial(F.glu, dim=dim), x, cotangent)
    assert_trees_close(actual, expected, dtype=dtype)
    np.testing.assert_array_equal(np.asarray(layers.GLU(dim)(jnp.asarray(x))), np.asarray(actual[0]))


# ------------------------------------------------------------------------------------------------
# PReLU: functional in torch layout, channels-last, and the layer (input and weight gradients)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "num_parameters"),
    [((2, 3, 4), 3), ((2, 3), 3), ((2, 3, 2, 2), 3), ((2, 3, 4), 1), ((5,), 1), ((), 1)],
    ids=["NCL-per-channel", "NC-per-channel", "NCHW-per-channel", "NCL-shared", "1d-shared", "scalar-shared"],
)
def test_prelu_functional_matches_torch(shape, num_parameters, dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[0] = 0.0  # the kink: input gradient = weight, weight gradient = 0, as torch
    weight = rng.uniform(0.1, 0.5, num_parameters).astype(dtype)
    cotangent = rng.standard_normal(shape).astype(dtype)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(weight, requires_grad=True)
    yt = TF.prelu(xt, wt)
    expected = (yt.detach(), *torch.autograd.grad(yt, (xt, wt), torch.as_tensor(cotangent)))
    y, pullback = jax.vjp(F.prelu, jnp.asarray(x), jnp.asarray(weight))
    assert_trees_close((y, *pullback(jnp.asarray(cotangent))), expected, dtype=dtype)


def test_prelu_layer_is_channels_last_with_torchs_weight(dtype):
    rng = np.random.default_rng(6)
    x_torch_layout = rng.standard_normal((2, 3, 4)).astype(dtype)  # (N, C, L)
    x_torch_layout[0, 0, 0] = 0.0
    cotangent = rng.standard_normal((2, 3, 4)).astype(dtype)
    torch_layer = torch.nn.PReLU(3, init=0.3).to(torch_dtype(dtype))
    with torch.no_grad():
        torch_layer.weight.copy_(torch.tensor([0.1, 0.2, 0.4], dtype=torch_dtype(dtype)))
    xt = torch.tensor(x_torch_layout, requires_grad=True)
    yt = torch_layer(xt)
    gx, gw = torch.autograd.grad(yt, (xt, torch_layer.weight), torch.as_tensor(cotangent))

    layer = layers.PReLU(3, init=0.3, param_dtype=jax_dtype(dtype))
    assert_trees_close(layer.weight[...], np.full(3, 0.3, dtype), dtype=dtype)  # torch's constant init
    layer.weight[...] = jnp.asarray([0.1, 0.2, 0.4], jax_dtype(dtype))
    graphdef, params = nnx.split(layer, nnx.Param)

    def run(params, x):
        return nnx.merge(graphdef, params)(x)

    x_fnml = np.transpose(x_torch_layout, (0, 2, 1))  # (N, C, L) -> (N, L, C), fnml's channels-last
    y, pullback = jax.vjp(run, params, jnp.asarray(x_fnml))
    d_params, d_x = pullback(jnp.asarray(np.transpose(cotangent, (0, 2, 1))))
    assert_trees_close(
        (np.transpose(np.asarray(y), (0, 2, 1)), np.transpose(np.asarray(d_x), (0, 2, 1)), d_params["weight"][...]),
        (yt.detach(), gx, gw),
        dtype=dtype,
    )


# ------------------------------------------------------------------------------------------------
# Layers: the functional op's numbers, torch's print text
# ------------------------------------------------------------------------------------------------

LAYERS = [
    ("ReLU", lambda: layers.ReLU(), lambda: torch.nn.ReLU()),
    ("ReLU-inplace", lambda: layers.ReLU(inplace=True), lambda: torch.nn.ReLU(inplace=True)),
    ("ReLU6", lambda: layers.ReLU6(), lambda: torch.nn.ReLU6()),
    ("ReLU6-inplace", lambda: layers.ReLU6(True), lambda: torch.nn.ReLU6(True)),
    ("LeakyReLU", lambda: layers.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2)),
    ("LeakyReLU-inplace", lambda: layers.LeakyReLU(0.2, True), lambda: torch.nn.LeakyReLU(0.2, True)),
    ("ELU", lambda: layers.ELU(), lambda: torch.nn.ELU()),
    ("ELU-0.5-inplace", lambda: layers.ELU(0.5, inplace=True), lambda: torch.nn.ELU(0.5, inplace=True)),
    ("SELU", lambda: layers.SELU(), lambda: torch.nn.SELU()),
    ("CELU-2", lambda: layers.CELU(2.0), lambda: torch.nn.CELU(2.0)),
    ("GELU", lambda: layers.GELU(), lambda: torch.nn.GELU()),
    ("GELU-tanh", lambda: layers.GELU("tanh"), lambda: torch.nn.GELU("tanh")),
    ("SiLU", lambda: layers.SiLU(), lambda: torch.nn.SiLU()),
    ("Mish", lambda: layers.Mish(), lambda: torch.nn.Mish()),
    ("Hardtanh", lambda: layers.Hardtanh(), lambda: torch.nn.Hardtanh()),
    ("Hardtanh-(-2,3)", lambda: layers.Hardtanh(-2.0, 3.0), lambda: torch.nn.Hardtanh(-2.0, 3.0)),
    ("Hardswish", lambda: layers.Hardswish(), lambda: torch.nn.Hardswish()),
    ("Hardsigmoid", lambda: layers.Hardsigmoid(inplace=True), lambda: torch.nn.Hardsigmoid(inplace=True)),
    ("Softplus", lambda: layers.Softplus(), lambda: torch.nn.Softplus()),
    ("Softplus-2-1", lambda: layers.Softplus(2.0, 1.0), lambda: torch.nn.Softplus(2.0, 1.0)),
    ("Softsign", lambda: layers.Softsign(), lambda: torch.nn.Softsign()),
    ("LogSigmoid", lambda: layers.LogSigmoid(), lambda: torch.nn.LogSigmoid()),
    ("Threshold", lambda: layers.Threshold(0.5, -1.0), lambda: torch.nn.Threshold(0.5, -1.0)),
    ("Threshold-inplace", lambda: layers.Threshold(0.5, -1, True), lambda: torch.nn.Threshold(0.5, -1, True)),
    ("GLU", lambda: layers.GLU(), lambda: torch.nn.GLU()),
    ("GLU-dim0", lambda: layers.GLU(0), lambda: torch.nn.GLU(0)),
    ("Tanh", lambda: layers.Tanh(), lambda: torch.nn.Tanh()),
    ("Sigmoid", lambda: layers.Sigmoid(), lambda: torch.nn.Sigmoid()),
    ("Softmax", lambda: layers.Softmax(dim=1), lambda: torch.nn.Softmax(dim=1)),
    ("LogSoftmax", lambda: layers.LogSoftmax(dim=0), lambda: torch.nn.LogSoftmax(dim=0)),
    ("PReLU", lambda: layers.PReLU(), lambda: torch.nn.PReLU()),
    ("PReLU-4", lambda: layers.PReLU(4, init=0.1), lambda: torch.nn.PReLU(4, init=0.1)),
]


@pytest.mark.parametrize(("name", "make_fnml", "make_torch"), LAYERS, ids=[entry[0] for entry in LAYERS])
def test_layer_matches_torch_and_prints_like_it(name, make_fnml, make_torch, dtype):
    fnml_layer, torch_layer = make_fnml(), make_torch().to(torch_dtype(dtype))
    assert str(fnml_layer) == str(torch_layer)
    rng = np.random.default_rng(7)
    x = (3 * rng.standard_normal((4, 4))).astype(dtype)  # (N, C): torch's and fnml's layouts agree
    x[0, :2] = [0.0, -3.0]
    cotangent = rng.standard_normal(tuple(torch_layer(torch.tensor(x)).shape)).astype(dtype)
    if isinstance(fnml_layer, layers.PReLU):
        fnml_layer.weight = nnx.Param(fnml_layer.weight[...].astype(jax_dtype(dtype)))  # torch's .to(dtype)
    expected = _torch_value_and_grad(torch_layer, x, cotangent)
    actual = _fnml_value_and_grad(fnml_layer, x, cotangent)
    assert_trees_close(actual, expected, dtype=dtype)


def test_existing_layers_keep_their_numbers():
    # The layers that existed before the functional module give bit-identical numbers to the ops they use now.
    x = jnp.asarray(np.random.default_rng(8).standard_normal((3, 5)))
    pairs = [
        (layers.ReLU(), jax.nn.relu(x)),
        (layers.GELU(), jax.nn.gelu(x, approximate=False)),
        (layers.GELU("tanh"), jax.nn.gelu(x, approximate=True)),
        (layers.Tanh(), jnp.tanh(x)),
        (layers.Sigmoid(), jax.nn.sigmoid(x)),
        (layers.Softmax(dim=1), jax.nn.softmax(x, axis=1)),
        (layers.LogSoftmax(dim=0), jax.nn.log_softmax(x, axis=0)),
        (layers.LeakyReLU(0.1), jnp.where(x > 0, x, x * 0.1)),
    ]
    for layer, expected in pairs:
        np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(expected), err_msg=str(layer))


def test_activation_layers_in_a_model_print_like_torch():
    fnml_model = layers.Sequential(layers.Linear(3, 4, rngs=nnx.Rngs(0)), layers.PReLU(4), layers.Hardswish())
    torch_model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.PReLU(4), torch.nn.Hardswish())
    assert str(fnml_model) == str(torch_model)


def test_activations_run_under_jit_and_grad():
    x = jnp.linspace(-4.0, 4.0, 9)
    for fn in (F.hardswish, F.hardsigmoid, F.softplus, F.elu, F.mish, F.hardtanh):
        # XLA may fuse differently under jit: equal to rounding.
        assert_trees_close(jax.jit(fn)(x), fn(x))
        grad = jax.grad(lambda v, f=fn: jnp.sum(f(v)))
        assert_trees_close(jax.jit(grad)(x), grad(x))


# ------------------------------------------------------------------------------------------------
# Bad arguments
# ------------------------------------------------------------------------------------------------

ERRORS = {
    "hardtanh_min_above_max": (
        lambda: F.hardtanh(jnp.ones(2), 1.0, -1.0),
        ValueError,
        r"hardtanh: min_val cannot be greater than max_val",
    ),  # noqa: E501
    "hardtanh_min_not_number": (lambda: F.hardtanh(jnp.ones(2), "a"), TypeError, r"hardtanh: min_val must be a number"),  # noqa: E501
    "celu_alpha_zero": (lambda: F.celu(jnp.ones(2), 0.0), ValueError, r"celu: alpha must not be 0"),
    "elu_alpha_string": (lambda: F.elu(jnp.ones(2), "1"), TypeError, r"elu: alpha must be a number"),
    "gelu_unknown_approximate": (
        lambda: F.gelu(jnp.ones(2), "erf"),
        ValueError,
        r"gelu: approximate must be one of 'none', 'tanh'",
    ),  # noqa: E501
    "relu_integer_input": (
        lambda: F.relu(jnp.array([1, -1])),
        TypeError,
        r"relu: input must be a floating-point array, got dtype int",
    ),  # noqa: E501
    "relu_inplace_not_bool": (lambda: F.relu(jnp.ones(2), inplace=1), TypeError, r"relu: inplace must be a bool"),
    "leaky_relu_slope_string": (
        lambda: F.leaky_relu(jnp.ones(2), "0.1"),
        TypeError,
        r"leaky_relu: negative_slope must be a number",
    ),  # noqa: E501
    "softplus_beta_string": (lambda: F.softplus(jnp.ones(2), beta="2"), TypeError, r"softplus: beta must be a number"),  # noqa: E501
    "threshold_value_none": (
        lambda: F.threshold(jnp.ones(2), 1.0, None),
        TypeError,
        r"threshold: value must be a number",
    ),  # noqa: E501
    "softmax_no_dim": (lambda: F.softmax(jnp.ones(2)), TypeError, r"softmax: dim must be given"),
    "log_softmax_no_dim": (lambda: F.log_softmax(jnp.ones(2)), TypeError, r"log_softmax: dim must be given"),
    "softmax_dim_out_of_range": (
        lambda: F.softmax(jnp.ones((2, 3)), 2),
        IndexError,
        r"softmax: dimension out of range \(expected to be in range of \[-2, 1\], got 2\)",
    ),  # noqa: E501
    "softmax_dim_float": (lambda: F.softmax(jnp.ones(2), 0.0), TypeError, r"softmax: dim must be an int"),
    "glu_odd_size": (
        lambda: F.glu(jnp.ones((2, 3))),
        ValueError,
        r"glu: halving dimension must be even, but dimension -1 is size 3",
    ),  # noqa: E501
    "glu_scalar": (lambda: F.glu(jnp.array(1.0)), ValueError, r"glu: does not support scalars"),
    "glu_dim_out_of_range": (lambda: F.glu(jnp.ones((2, 4)), 2), IndexError, r"glu: dimension out of range"),
    "prelu_weight_2d": (
        lambda: F.prelu(jnp.ones((2, 3)), jnp.ones((3, 1))),
        ValueError,
        r"prelu: weight must be a scalar or 1-D array, got shape \(3, 1\)",
    ),  # noqa: E501
    "prelu_channel_mismatch": (
        lambda: F.prelu(jnp.ones((2, 3, 4)), jnp.ones(4)),
        ValueError,
        r"prelu: weight has 4 parameters but the input has channel size 3",
    ),  # noqa: E501
    "prelu_1d_input_many_weights": (
        lambda: F.prelu(jnp.ones(5), jnp.ones(5)),
        ValueError,
        r"prelu: weight has 5 parameters but the input has channel size 1",
    ),  # noqa: E501
    "prelu_scalar_input_many_weights": (
        lambda: F.prelu(jnp.array(1.0), jnp.ones(2)),
        ValueError,
        r"prelu: a 0-D input needs a single weight",
    ),  # noqa: E501
    "prelu_channels_last_not_bool": (
        lambda: F.prelu(jnp.ones(2), jnp.ones(1), channels_last=1),
        TypeError,
        r"prelu: channels_last must be a bool",
    ),  # noqa: E501
    "layer_prelu_channel_mismatch": (
        lambda: layers.PReLU(3)(jnp.ones((2, 3, 4))),
        ValueError,
        r"weight has 3 parameters but the input has channel size 4 \(input shape \(2, 3, 4\), channels_last=True\)",
    ),  # noqa: E501
    "layer_prelu_zero_parameters": (
        lambda: layers.PReLU(0),
        ValueError,
        r"PReLU: num_parameters must be a positive integer",
    ),  # noqa: E501
    "layer_prelu_init_string": (lambda: layers.PReLU(1, "0.25"), TypeError, r"PReLU: init must be a number"),
    "layer_hardtanh_max_not_above_min": (
        lambda: layers.Hardtanh(1.0, 1.0),
        ValueError,
        r"Hardtanh: max_val \(1.0\) must be greater than min_val \(1.0\)",
    ),  # noqa: E501
    "layer_celu_alpha_zero": (lambda: layers.CELU(0), ValueError, r"CELU: alpha must not be 0"),
    "layer_elu_alpha_string": (lambda: layers.ELU("1"), TypeError, r"ELU: alpha must be a number"),
    "layer_softplus_threshold_string": (
        lambda: layers.Softplus(1.0, "20"),
        TypeError,
        r"Softplus: threshold must be a number",
    ),  # noqa: E501
    "layer_threshold_missing_value": (
        lambda: layers.Threshold(0.1, None),
        TypeError,
        r"Threshold: value must be a number",
    ),  # noqa: E501
    "layer_glu_dim_float": (lambda: layers.GLU(1.5), TypeError, r"GLU: dim must be an int"),
    "layer_relu_inplace_int": (lambda: layers.ReLU(1), TypeError, r"ReLU: inplace must be a bool"),
    "layer_silu_inplace_string": (lambda: layers.SiLU("yes"), TypeError, r"SiLU: inplace must be a bool"),
    "layer_hardswish_inplace_int": (lambda: layers.Hardswish(0), TypeError, r"Hardswish: inplace must be a bool"),
    "layer_leaky_inplace_int": (lambda: layers.LeakyReLU(0.1, 1), TypeError, r"LeakyReLU: inplace must be a bool"),
    "layer_gelu_unknown": (lambda: layers.GELU("fast"), ValueError, r"GELU: approximate must be one of"),
    "layer_softmax_no_dim": (lambda: layers.Softmax(None), TypeError, r"Softmax: dim must be an int"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_arguments_raise_with_a_message(case):
    make, error, message = ERRORS[case]
    with pytest.raises(error, match=message):
        make()

"""fnml.functional.dropout / dropout1d / dropout2d / alpha_dropout and their layers, against real torch.

Masks cannot equal torch's (different generators), so each check splits in two: given fnml's mask
(``jax.random.bernoulli(key, 1 - p, noise_shape)``, the documented contract), torch's formula computed by torch
gives fnml's numbers bit for bit; and the statistics (keep rate, scaling, channel-wise structure, AlphaDropout's
mean and variance) agree with torch's own layers run in the same test. Eval mode / ``training=False`` / ``p=0``
are the exact identity; the same key gives the same mask.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from helpers import assert_trees_close, jax_dtype, torch_dtype

from fnml import functional as F
from fnml import layers

KEY = jax.random.key(0)


def _mask(key, p, shape) -> np.ndarray:
    return np.asarray(jax.random.bernoulli(key, 1.0 - p, shape))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9], ids=lambda p: f"p{p}")
def test_dropout_is_torchs_formula_given_the_mask(p, dtype):
    x = np.random.default_rng(0).standard_normal((40, 30)).astype(dtype)
    y = F.dropout(jnp.asarray(x), p, key=KEY)
    mask = _mask(KEY, p, x.shape)
    # torch's _dropout_impl: noise = bernoulli(1 - p) / (1 - p); input * noise.
    noise = torch.from_numpy(mask.astype(dtype)).div_(1 - p)
    expected = torch.from_numpy(x) * noise
    assert_trees_close(y, expected, dtype=dtype, atol=1e-7 if dtype == "float32" else 0, rtol=0)
    grad = jax.grad(lambda v: jnp.sum(F.dropout(v, p, key=KEY) * 2.0))(jnp.asarray(x))
    xt = torch.tensor(x, requires_grad=True)
    (torch_grad,) = torch.autograd.grad((xt * noise * 2.0).sum(), xt)
    assert_trees_close(grad, torch_grad, dtype=dtype)


@pytest.mark.parametrize("p", [0.2, 0.7], ids=lambda p: f"p{p}")
def test_dropout_statistics_match_torchs(p):
    x = np.ones(20000)
    ours = np.asarray(F.dropout(jnp.asarray(x), p, key=KEY))
    theirs = torch.nn.functional.dropout(torch.from_numpy(x), p).numpy()
    sigma = math.sqrt(p * (1 - p) / x.size)
    for values in (ours, theirs):
        assert set(np.unique(values)) <= {0.0, 1 / (1 - p)}
        assert abs((values == 0).mean() - p) < 5 * sigma
        assert abs(values.mean() - 1) < 5 * sigma / (1 - p)  # E[y] = x


def test_dropout_identity_cases_are_exact():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((3, 4)))
    assert F.dropout(x, 0.5, training=False) is x  # no copy, no key needed
    np.testing.assert_array_equal(F.dropout(x, 0.0, key=KEY), x)
    np.testing.assert_array_equal(F.dropout(x, 0.0), x)  # p=0 needs no key
    empty = jnp.ones((0, 3))
    assert F.dropout(empty, 0.5).shape == (0, 3)
    with_nan = jnp.asarray([1.0, np.nan, -2.0])
    np.testing.assert_array_equal(
        F.dropout(with_nan, 1.0), torch.nn.functional.dropout(torch.tensor([1.0, np.nan, -2.0]), 1.0).numpy()
    )


def test_same_key_same_mask_other_key_other_mask():
    x = jnp.ones(256)
    a, b = F.dropout(x, 0.5, key=jax.random.key(3)), F.dropout(x, 0.5, key=jax.random.key(3))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, F.dropout(x, 0.5, key=jax.random.key(4)))
    np.testing.assert_array_equal(jax.jit(lambda v, k: F.dropout(v, 0.5, key=k))(x, jax.random.key(3)), a)


# ------------------------------------------------------------------------------------------------
# Channel-wise dropout
# ------------------------------------------------------------------------------------------------

CHANNEL_CASES = [
    ("dropout1d-NCL", F.dropout1d, (4, 6, 5), False, (4, 6, 1)),
    ("dropout1d-CL-unbatched", F.dropout1d, (6, 5), False, (6, 1)),
    ("dropout1d-NLC-channels-last", F.dropout1d, (4, 5, 6), True, (4, 1, 6)),
    ("dropout1d-LC-unbatched-channels-last", F.dropout1d, (5, 6), True, (1, 6)),
    ("dropout2d-NCHW", F.dropout2d, (3, 6, 2, 4), False, (3, 6, 1, 1)),
    ("dropout2d-NHWC-channels-last", F.dropout2d, (3, 2, 4, 6), True, (3, 1, 1, 6)),
]


@pytest.mark.parametrize(
    ("name", "op", "shape", "channels_last", "noise_shape"), CHANNEL_CASES, ids=[c[0] for c in CHANNEL_CASES]
)
def test_channel_dropout_zeroes_whole_channels(name, op, shape, channels_last, noise_shape, dtype):
    p = 0.4
    x = np.random.default_rng(2).standard_normal(shape).astype(dtype)
    y = np.asarray(op(jnp.asarray(x), p, key=KEY, channels_last=channels_last))
    # The mask has one entry per (sample, channel), broadcast over the spatial axes (torch's feature noise).
    if op is F.dropout1d and len(shape) == 2:  # unbatched: torch unsqueezes a batch axis of 1
        mask = _mask(KEY, p, (1, *noise_shape))[0]
    else:
        mask = _mask(KEY, p, noise_shape)
    expected = torch.from_numpy(x) * torch.from_numpy(mask.astype(dtype)).div_(1 - p)
    assert_trees_close(y, expected, dtype=dtype, atol=1e-7 if dtype == "float32" else 0, rtol=0)


@pytest.mark.parametrize(
    ("torch_layer", "fnml_op", "shape"),
    [
        (torch.nn.Dropout1d, F.dropout1d, (200, 8, 5)),
        (torch.nn.Dropout2d, F.dropout2d, (100, 8, 3, 3)),
    ],
    ids=["dropout1d", "dropout2d"],
)
def test_channel_dropout_structure_and_rate_match_torch(torch_layer, fnml_op, shape):
    p = 0.3
    x = np.ones(shape)
    ours = np.asarray(fnml_op(jnp.asarray(x), p, key=KEY))
    theirs = torch_layer(p)(torch.from_numpy(x)).numpy()
    spatial = tuple(range(2, len(shape)))
    sigma = math.sqrt(p * (1 - p) / (shape[0] * shape[1]))
    for values in (ours, theirs):
        per_channel = values.reshape(shape[0], shape[1], -1)
        assert (per_channel == per_channel[..., :1]).all()  # whole channels kept or dropped
        assert abs((values.max(axis=spatial) == 0).mean() - p) < 5 * sigma
        assert set(np.unique(values)) <= {0.0, 1 / (1 - p)}


def test_dropout2d_3d_input_is_read_as_torch_does_with_its_warning():
    x = jnp.ones((4, 5, 7))
    with pytest.warns(UserWarning, match=r"dropout2d: Received a 3D input to dropout2d"):
        ours = F.dropout2d(x, 0.5, key=KEY)  # (N, C, L): one draw per (n, c), as torch
    with pytest.warns(UserWarning, match=r"dropout2d: Received a 3D input to dropout2d"):
        theirs = torch.nn.functional.dropout2d(torch.ones(4, 5, 7), 0.5)
    for values in (np.asarray(ours), theirs.numpy()):
        assert (values == values[..., :1]).all()
    np.testing.assert_array_equal(ours, F.dropout1d(x, 0.5, key=KEY))


# ------------------------------------------------------------------------------------------------
# Alpha dropout
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.2, 0.5], ids=lambda p: f"p{p}")
def test_alpha_dropout_is_torchs_formula_given_the_mask(p, dtype):
    x = np.random.default_rng(3).standard_normal((30, 20)).astype(dtype)
    y = F.alpha_dropout(jnp.asarray(x), p, training=True, key=KEY)
    # torch's _dropout_impl<alpha_dropout=true>, in torch's operation order, with fnml's mask.
    alpha = 1.7580993408473766
    a = 1.0 / math.sqrt((alpha * alpha * p + 1) * (1 - p))
    noise = torch.from_numpy(_mask(KEY, p, x.shape).astype(dtype))
    b = noise.add(-1).mul_(alpha * a).add_(alpha * a * p)
    noise.mul_(a)
    expected = (torch.from_numpy(x) * noise).add_(b)
    assert_trees_close(y, expected, dtype=dtype, atol=1e-6 if dtype == "float32" else 1e-15, rtol=0)


def test_alpha_dropout_preserves_mean_and_variance_like_torch():
    x = np.random.default_rng(4).standard_normal(100_000)
    ours = np.asarray(F.alpha_dropout(jnp.asarray(x), 0.3, training=True, key=KEY))
    theirs = torch.nn.functional.alpha_dropout(torch.from_numpy(x), 0.3, training=True).numpy()
    for values in (ours, theirs):
        assert abs(values.mean()) < 0.02
        assert abs(values.std() - 1) < 0.02
    assert abs(ours.mean() - theirs.mean()) < 0.02 and abs(ours.std() - theirs.std()) < 0.02


def test_alpha_dropout_defaults_and_edges_are_torchs():
    x = jnp.asarray(np.random.default_rng(5).standard_normal(6))
    assert F.alpha_dropout(x, 0.5) is x  # torch's default training=False
    np.testing.assert_array_equal(F.alpha_dropout(x, 0.0, training=True), x)
    np.testing.assert_array_equal(
        F.alpha_dropout(x, 1.0, training=True),
        torch.nn.functional.alpha_dropout(torch.tensor(np.asarray(x)), 1.0, training=True).numpy(),
    )


# ------------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------------

LAYERS = [
    ("Dropout", layers.Dropout, torch.nn.Dropout),
    ("Dropout1d", layers.Dropout1d, torch.nn.Dropout1d),
    ("Dropout2d", layers.Dropout2d, torch.nn.Dropout2d),
    ("AlphaDropout", layers.AlphaDropout, torch.nn.AlphaDropout),
]


@pytest.mark.parametrize(("name", "fnml_cls", "torch_cls"), LAYERS, ids=[entry[0] for entry in LAYERS])
def test_layers_print_like_torch(name, fnml_cls, torch_cls):
    assert str(fnml_cls()) == str(torch_cls())
    assert str(fnml_cls(0.2, inplace=True)) == str(torch_cls(0.2, inplace=True))
    model = layers.Sequential(layers.Linear(2, 2, rngs=nnx.Rngs(0)), fnml_cls(0.1))
    assert str(model) == str(torch.nn.Sequential(torch.nn.Linear(2, 2), torch_cls(0.1)))


LAYER_INPUTS = {
    "Dropout": ((8, 6), lambda layer, x, key: F.dropout(x, layer.p, key=key)),
    "Dropout1d": ((4, 5, 6), lambda layer, x, key: F.dropout1d(x, layer.p, key=key, channels_last=True)),
    "Dropout2d": ((2, 3, 3, 6), lambda layer, x, key: F.dropout2d(x, layer.p, key=key, channels_last=True)),
    "AlphaDropout": ((8, 6), lambda layer, x, key: F.alpha_dropout(x, layer.p, training=True, key=key)),
}


@pytest.mark.parametrize(("name", "fnml_cls", "torch_cls"), LAYERS, ids=[entry[0] for entry in LAYERS])
def test_layer_is_its_functional_op_with_the_stream_key(name, fnml_cls, torch_cls, dtype):
    shape, functional = LAYER_INPUTS[name]
    x = jnp.asarray(np.random.default_rng(6).standard_normal(shape), jax_dtype(dtype))
    layer = fnml_cls(0.3, rngs=nnx.Rngs(dropout=7))
    key = nnx.Rngs(dropout=7)["dropout"].fork()()  # the first key of the layer's forked stream
    np.testing.assert_array_equal(layer(x), functional(layer, x, key))
    again = fnml_cls(0.3, rngs=nnx.Rngs(dropout=7))
    first = again(x)
    assert not np.array_equal(first, again(x))  # the stream advances
    assert layer.eval() is layer
    assert layer(x) is not None and np.array_equal(layer(x), x)  # eval: identity
    at_call = fnml_cls(0.3)
    np.testing.assert_array_equal(at_call(x, rngs=nnx.Rngs(dropout=1)), at_call(x, rngs=nnx.Rngs(dropout=1)))
    torch_layer = torch_cls(0.3).eval()
    np.testing.assert_array_equal(torch_layer(torch.tensor(np.asarray(x))).numpy(), np.asarray(x))
    assert torch_dtype(dtype) == torch_layer(torch.tensor(np.asarray(x))).dtype


def test_layers_follow_model_train_and_eval():
    class Net(layers.Module):
        def __init__(self, rngs):
            self.conv_drop = layers.Dropout2d(0.5, rngs=rngs)
            self.alpha = layers.AlphaDropout(0.5, rngs=rngs)

    net = Net(nnx.Rngs(0)).eval()
    assert (net.conv_drop.deterministic, net.alpha.deterministic) == (True, True)
    net.train()
    assert (net.conv_drop.deterministic, net.alpha.deterministic) == (False, False)


def test_recurrent_inter_layer_dropout_is_functional_dropout():
    # LSTM's dropout between layers draws with F.dropout: p=1 zeroes layer 0's output exactly, so the second
    # layer sees zeros, as torch's does.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lstm = layers.LSTM(3, 4, 2, dropout=1.0, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    torch_lstm = torch.nn.LSTM(3, 4, 2, dropout=1.0).double()
    from helpers import copy_torch_weights

    copy_torch_weights(lstm, torch_lstm)
    x = np.random.default_rng(8).standard_normal((5, 2, 3))
    out, _ = lstm(jnp.asarray(x))
    expected, _ = torch_lstm(torch.from_numpy(x))
    assert_trees_close(out, expected.detach(), dtype="float64")


# ------------------------------------------------------------------------------------------------
# Bad arguments
# ------------------------------------------------------------------------------------------------

X = jnp.ones((2, 3, 4))
ERRORS = {
    "dropout_p_above_1": (
        lambda: F.dropout(X, 1.5, key=KEY),
        ValueError,
        r"dropout: dropout probability has to be between 0 and 1, but got p=1.5",
    ),  # noqa: E501
    "dropout_p_negative": (lambda: F.dropout(X, -0.1, key=KEY), ValueError, r"between 0 and 1, but got p=-0.1"),
    "dropout_p_string": (lambda: F.dropout(X, "0.5", key=KEY), TypeError, r"dropout: p must be a number"),
    "dropout_training_int": (lambda: F.dropout(X, 0.5, 1, key=KEY), TypeError, r"dropout: training must be a bool"),
    "dropout_inplace_int": (lambda: F.dropout(X, 0.5, True, 1, key=KEY), TypeError, r"dropout: inplace must be a bool"),  # noqa: E501
    "dropout_key_int": (lambda: F.dropout(X, 0.5, key=0), TypeError, r"dropout: key must be a jax.random key"),
    "dropout_training_without_key": (
        lambda: F.dropout(X, 0.5),
        ValueError,
        r"dropout: training=True needs random numbers: pass key=jax.random.key",
    ),  # noqa: E501
    "dropout_integer_input": (
        lambda: F.dropout(jnp.ones(3, int), 0.5, key=KEY),
        TypeError,
        r"dropout: input must be a floating-point array",
    ),  # noqa: E501
    "dropout1d_4d": (
        lambda: F.dropout1d(jnp.ones((1, 2, 3, 4)), key=KEY),
        ValueError,
        r"dropout1d: expected a 2-D or 3-D input \(N, C, L\) or \(C, L\)",
    ),  # noqa: E501
    "dropout1d_1d_channels_last": (
        lambda: F.dropout1d(jnp.ones(3), key=KEY, channels_last=True),
        ValueError,
        r"dropout1d: expected a 2-D or 3-D input \(N, L, C\) or \(L, C\)",
    ),  # noqa: E501
    "dropout1d_channels_last_int": (
        lambda: F.dropout1d(X, key=KEY, channels_last=1),
        TypeError,
        r"dropout1d: channels_last must be a bool",
    ),  # noqa: E501
    "dropout1d_without_key": (lambda: F.dropout1d(X), ValueError, r"dropout1d: training=True needs random numbers"),
    "dropout2d_2d": (
        lambda: F.dropout2d(jnp.ones((2, 3)), key=KEY),
        ValueError,
        r"dropout2d: expected a 4-D input \(N, C, H, W\)",
    ),  # noqa: E501
    "dropout2d_5d_channels_last": (
        lambda: F.dropout2d(jnp.ones((1, 1, 1, 1, 1)), key=KEY, channels_last=True),
        ValueError,
        r"dropout2d: expected a 4-D input \(N, H, W, C\)",
    ),  # noqa: E501
    "dropout2d_p_above_1": (
        lambda: F.dropout2d(jnp.ones((1, 2, 2, 2)), 2.0, key=KEY),
        ValueError,
        r"dropout2d: dropout probability has to be between 0 and 1",
    ),  # noqa: E501
    "alpha_dropout_without_key": (
        lambda: F.alpha_dropout(X, 0.5, training=True),
        ValueError,
        r"alpha_dropout: training=True needs random numbers",
    ),  # noqa: E501
    "alpha_dropout_p_negative": (
        lambda: F.alpha_dropout(X, -1.0),
        ValueError,
        r"alpha_dropout: dropout probability has to be between 0 and 1",
    ),  # noqa: E501
    "layer_dropout1d_p": (
        lambda: layers.Dropout1d(1.5),
        ValueError,
        r"Dropout1d: p must be in \[0.0, 1.0\], got p=1.5",
    ),  # noqa: E501
    "layer_dropout2d_inplace_int": (lambda: layers.Dropout2d(0.5, 1), TypeError, r"Dropout2d: inplace must be a bool"),  # noqa: E501
    "layer_alpha_rngs_int": (
        lambda: layers.AlphaDropout(0.5, rngs=3),
        TypeError,
        r"AlphaDropout: rngs must be an nnx.Rngs or None, got int",
    ),  # noqa: E501
    "layer_dropout2d_no_rngs": (
        lambda: layers.Dropout2d(0.5)(jnp.ones((1, 2, 2, 3))),
        ValueError,
        r"Dropout2d in training mode needs random numbers",
    ),  # noqa: E501
    "layer_dropout1d_wrong_rank": (
        lambda: layers.Dropout1d(0.5, rngs=nnx.Rngs(0))(jnp.ones((1, 2, 2, 3))),
        ValueError,
        r"dropout1d: expected a 2-D or 3-D input \(N, L, C\)",
    ),  # noqa: E501
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_arguments_raise_with_a_message(case):
    make, error, message = ERRORS[case]
    with pytest.raises(error, match=message):
        make()

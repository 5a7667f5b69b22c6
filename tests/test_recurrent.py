"""fnml.layers.recurrent (RNN, LSTM, GRU) against real torch.nn.RNN / LSTM / GRU with the same weights.

Forward outputs, final states and gradients (w.r.t. input, initial state and every parameter) are
compared in float64 (exactness, <= 1e-12) and float32 (working tolerance); initialisation is compared
with torch's own draws (KS test, exact bounds); dropout, errors and unbatched input are covered.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import torch
from flax import nnx
from helpers import assert_trees_close, copy_torch_weights, jax_dtype, torch_dtype

from fnml.layers.recurrent import GRU, LSTM, RNN

CLASSES = {"RNN": (RNN, torch.nn.RNN), "LSTM": (LSTM, torch.nn.LSTM), "GRU": (GRU, torch.nn.GRU)}
# Small sizes keep the suite fast: time steps, batch, input features, hidden features.
T, N, IN, H = 5, 3, 4, 6


def fnml_grads_in_torch_names(param_grads, torch_model) -> dict[str, np.ndarray]:
    """fnml parameter gradients renamed and laid out as torch's (weight = kernel.T)."""
    out = {}
    for name, _ in torch_model.named_parameters():
        if name.startswith("weight_"):
            out[name] = np.asarray(param_grads["kernel_" + name[len("weight_") :]][...]).T
        else:
            out[name] = np.asarray(param_grads[name][...])
    return out


def make_pair(kind: str, dtype: str, **kwargs):
    """A torch layer and its fnml twin with torch's weights copied in."""
    fnml_cls, torch_cls = CLASSES[kind]
    torch_model = torch_cls(IN, H, **kwargs).to(torch_dtype(dtype))
    model = fnml_cls(IN, H, **kwargs, param_dtype=jax_dtype(dtype), rngs=nnx.Rngs(0))
    copy_torch_weights(model, torch_model)
    return model, torch_model


def run_both(model, torch_model, x_np, hx_np, dtype):
    """Forward + backward on both sides with the same random cotangents; returns (fnml, torch) trees."""
    is_lstm = isinstance(torch_model, torch.nn.LSTM)
    torch_x = torch.tensor(x_np, dtype=torch_dtype(dtype), requires_grad=True)
    torch_hx = None
    if hx_np is not None:
        torch_hx = tuple(torch.tensor(h, dtype=torch_dtype(dtype), requires_grad=True) for h in hx_np)
    torch_out, torch_state = torch_model(torch_x, (torch_hx if is_lstm else torch_hx[0]) if torch_hx else None)
    torch_states = torch_state if is_lstm else (torch_state,)
    rng = np.random.default_rng(1)
    cotangents = [rng.standard_normal(tuple(v.shape)) for v in (torch_out, *torch_states)]
    loss = sum((v * torch.tensor(c, dtype=v.dtype)).sum() for v, c in zip((torch_out, *torch_states), cotangents))
    loss.backward()
    torch_tree = {
        "output": torch_out,
        "states": list(torch_states),
        "grad_input": torch_x.grad,
        "grad_params": {name: p.grad for name, p in torch_model.named_parameters()},
    }
    if torch_hx is not None:
        torch_tree["grad_hx"] = [h.grad for h in torch_hx]

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jnp.asarray(x_np, jax_dtype(dtype))
    hx = None if hx_np is None else tuple(jnp.asarray(h, jax_dtype(dtype)) for h in hx_np)

    def forward(params, x, hx):
        layer = nnx.merge(graphdef, params, rest)
        output, state = layer(x, (hx if is_lstm else hx[0]) if hx is not None else None)
        states = state if is_lstm else (state,)
        loss = sum((v * jnp.asarray(c, v.dtype)).sum() for v, c in zip((output, *states), cotangents))
        return loss, (output, states)

    grad_fn = jax.jit(jax.grad(forward, argnums=(0, 1, 2), has_aux=True))
    (grad_params, grad_x, grad_hx), (output, states) = grad_fn(params, x, hx)
    fnml_tree = {
        "output": output,
        "states": list(states),
        "grad_input": grad_x,
        "grad_params": fnml_grads_in_torch_names(grad_params, torch_model),
    }
    if hx is not None:
        fnml_tree["grad_hx"] = list(grad_hx)
    return fnml_tree, torch_tree


# (kind, constructor kwargs, with initial state, unbatched) with readable ids.
CONFIGS = [
    pytest.param("RNN", {}, False, False, id="rnn-tanh"),
    pytest.param("RNN", {"nonlinearity": "relu", "num_layers": 2}, True, False, id="rnn-relu-2layer-h0"),
    pytest.param("RNN", {"bidirectional": True, "bias": False}, False, False, id="rnn-bidir-nobias"),
    pytest.param("LSTM", {}, False, False, id="lstm"),
    pytest.param("LSTM", {}, True, False, id="lstm-h0c0"),
    pytest.param("LSTM", {"num_layers": 2, "bidirectional": True}, True, False, id="lstm-2layer-bidir-h0c0"),
    pytest.param("LSTM", {"batch_first": True, "bias": False}, False, False, id="lstm-batch_first-nobias"),
    pytest.param("LSTM", {"num_layers": 2}, True, True, id="lstm-2layer-unbatched-h0c0"),
    pytest.param("GRU", {}, False, False, id="gru"),
    pytest.param("GRU", {"num_layers": 2, "bidirectional": True}, True, False, id="gru-2layer-bidir-h0"),
    pytest.param("GRU", {"batch_first": True, "bias": False}, True, False, id="gru-batch_first-nobias-h0"),
    pytest.param("GRU", {"bidirectional": True}, False, True, id="gru-bidir-unbatched"),
]


def random_inputs(kind, kwargs, with_state, unbatched):
    """Input (T, N, in) / (N, T, in) / (T, in) and optional initial states, as numpy float64."""
    rng = np.random.default_rng(0)
    shape = (T, IN) if unbatched else ((N, T, IN) if kwargs.get("batch_first") else (T, N, IN))
    x = rng.standard_normal(shape)
    if not with_state:
        return x, None
    layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    state_shape = (layers, H) if unbatched else (layers, N, H)
    count = 2 if kind == "LSTM" else 1
    return x, tuple(rng.standard_normal(state_shape) for _ in range(count))


# Every configuration in float64 (exactness); float32 (working tolerance) on the larger ones.
FLOAT32_IDS = (
    "rnn-relu-2layer-h0",
    "lstm-2layer-bidir-h0c0",
    "lstm-batch_first-nobias",
    "gru-2layer-bidir-h0",
)
PARITY_CASES = [
    pytest.param(*case.values, dtype, id=f"{dtype}-{case.id}")
    for dtype in ("float64", "float32")
    for case in CONFIGS
    if dtype == "float64" or case.id in FLOAT32_IDS
]


@pytest.mark.parametrize("kind, kwargs, with_state, unbatched, dtype", PARITY_CASES)
def test_forward_and_gradients_match_torch(kind, kwargs, with_state, unbatched, dtype):
    model, torch_model = make_pair(kind, dtype, **kwargs)
    x, hx = random_inputs(kind, kwargs, with_state, unbatched)
    fnml_tree, torch_tree = run_both(model, torch_model, x, hx, dtype)
    assert_trees_close(fnml_tree, torch_tree, dtype=dtype)


@pytest.mark.parametrize(
    "kind, kwargs, fused_backward, unroll",
    [
        pytest.param("LSTM", {"num_layers": 2, "bidirectional": True}, False, 1, id="autodiff-lstm-2layer-bidir"),
        pytest.param("GRU", {"bidirectional": True}, False, 1, id="autodiff-gru-bidir"),
        pytest.param("RNN", {"nonlinearity": "relu"}, False, 1, id="autodiff-rnn-relu"),
        pytest.param("LSTM", {"num_layers": 2, "bidirectional": True}, True, 3, id="fused-unroll3-lstm-2layer-bidir"),
    ],
)
def test_backward_variants_match_torch(kind, kwargs, fused_backward, unroll):
    """JAX's own scan transpose and unrolled loops give torch's numbers too (float64)."""
    model, torch_model = make_pair(kind, "float64", **kwargs)
    model.fused_backward = fused_backward
    model.unroll = unroll
    x, hx = random_inputs(kind, kwargs, True, False)
    fnml_tree, torch_tree = run_both(model, torch_model, x, hx, "float64")
    assert_trees_close(fnml_tree, torch_tree, dtype="float64")


def test_forward_mode_autodiff_with_fused_backward_off():
    """fused_backward=False supports jax.jvp; its tangent equals the reverse-mode directional derivative."""
    model = LSTM(IN, H, param_dtype=jnp.float64, fused_backward=False, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((T, N, IN)))
    direction = jnp.asarray(np.random.default_rng(1).standard_normal((T, N, IN)))

    def f(x):
        return model(x)[0].sum()

    _, tangent = jax.jvp(f, (x,), (direction,))
    model.fused_backward = True
    reverse = jnp.vdot(jax.grad(f)(x), direction)
    assert abs(float(tangent) - float(reverse)) <= 1e-12


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_initialisation_follows_torch_distribution(kind):
    """Every weight and both biases ~ U(-1/sqrt(H), 1/sqrt(H)): KS test vs torch's draws, exact bounds."""
    hidden = 64
    fnml_cls, torch_cls = CLASSES[kind]
    model = fnml_cls(16, hidden, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    torch_model = torch_cls(16, hidden, num_layers=2, bidirectional=True)
    bound = 1.0 / math.sqrt(hidden)
    for name, tensor in torch_model.named_parameters():
        attribute = "kernel_" + name[len("weight_") :] if name.startswith("weight_") else name
        ours = np.asarray(getattr(model, attribute)[...]).ravel()
        theirs = tensor.detach().numpy().ravel()
        assert ours.dtype == np.float32
        result = scipy.stats.ks_2samp(ours, theirs)
        assert result.pvalue > 1e-3, f"{name}: KS p-value {result.pvalue:.2g} vs torch's draws"
        for values, side in ((ours, "fnml"), (theirs, "torch")):
            assert values.min() >= -bound and values.max() <= bound, f"{side} {name} outside +-{bound}"
        # The full interval is used (not, e.g., [0, bound) as nnx.initializers.uniform would give).
        assert ours.min() < -0.9 * bound and ours.max() > 0.9 * bound


def test_bias_false_has_no_bias_parameters():
    model = GRU(IN, H, bias=False, bidirectional=True, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    assert sorted(params.keys()) == [
        "kernel_hh_l0",
        "kernel_hh_l0_reverse",
        "kernel_ih_l0",
        "kernel_ih_l0_reverse",
    ]
    assert model.bias_ih_l0 is None and model.bias_hh_l0_reverse is None


def test_parameter_shapes_follow_the_attribute_contract():
    model = LSTM(IN, H, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    torch_model = torch.nn.LSTM(IN, H, num_layers=2, bidirectional=True)
    for name, tensor in torch_model.named_parameters():
        if name.startswith("weight_"):
            assert getattr(model, "kernel_" + name[len("weight_") :]).shape == tuple(tensor.shape)[::-1]
        else:
            assert getattr(model, name).shape == tuple(tensor.shape)


# ------------------------------------------------------------------------------------------------
# Dropout between layers: training mode only, reproducible from the seed.
# ------------------------------------------------------------------------------------------------


def _dropout_model(seed: int, p: float = 0.5):
    return LSTM(IN, H, num_layers=2, dropout=p, param_dtype=jnp.float64, rngs=nnx.Rngs(seed))


def test_dropout_only_in_train_mode_and_reproducible():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((T, N, IN)))
    model = _dropout_model(0)
    assert model.deterministic is False  # torch modules start in training mode
    train_first, _ = model(x)
    train_second, _ = model(x)
    assert float(jnp.abs(train_first - train_second).max()) > 1e-3, "masks must change from call to call"
    # Same seed, same masks.
    again, _ = _dropout_model(0)(x)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(train_first))

    model.eval()
    assert model.deterministic is True
    eval_first, eval_state = model(x)
    eval_second, _ = model(x)
    np.testing.assert_array_equal(np.asarray(eval_first), np.asarray(eval_second))
    assert float(jnp.abs(eval_first - train_first).max()) > 1e-3
    # Eval mode equals the same weights without dropout, and torch in eval mode.
    torch_model = torch.nn.LSTM(IN, H, num_layers=2, dropout=0.5).double().eval()
    copy_torch_weights(model, torch_model)
    torch_out, (torch_h, torch_c) = torch_model(torch.tensor(np.asarray(x)))
    eval_out, (h_n, c_n) = model(x)
    assert_trees_close([eval_out, h_n, c_n], [torch_out, torch_h, torch_c], dtype="float64")
    model.train()
    assert model.deterministic is False


@pytest.mark.parametrize(
    "kind, dtype",
    [("RNN", "float64"), ("LSTM", "float64"), ("GRU", "float64"), ("LSTM", "float32")],
    ids=["rnn-float64", "lstm-float64", "gru-float64", "lstm-float32"],
)
def test_dropout_one_in_train_mode_matches_torch(kind, dtype):
    """p=1 zeroes every inter-layer activation: deterministic, so comparable with torch in train mode."""
    model, torch_model = make_pair(kind, dtype, num_layers=2, dropout=1.0)
    torch_model.train()
    x = np.random.default_rng(0).standard_normal((T, N, IN))
    torch_out, torch_state = torch_model(torch.tensor(x, dtype=torch_dtype(dtype)))
    out, state = model(jnp.asarray(x, jax_dtype(dtype)))
    assert_trees_close([out, state], [torch_out, torch_state], dtype=dtype)


def test_dropout_with_one_layer_warns_like_torch():
    with pytest.warns(UserWarning, match="num_layers greater than 1.*dropout=0.5 and num_layers=1"):
        LSTM(IN, H, dropout=0.5, rngs=nnx.Rngs(0))


# ------------------------------------------------------------------------------------------------
# dtype handling and jit.
# ------------------------------------------------------------------------------------------------


def test_default_param_dtype_is_float32_and_promotes_with_float64_input():
    model = GRU(IN, H, rngs=nnx.Rngs(0))
    assert model.kernel_ih_l0[...].dtype == jnp.float32
    out32, _ = model(jnp.ones((T, N, IN), jnp.float32))
    out64, _ = model(jnp.ones((T, N, IN), jnp.float64))
    assert out32.dtype == jnp.float32 and out64.dtype == jnp.float64
    forced, _ = GRU(IN, H, dtype=jnp.float32, rngs=nnx.Rngs(0))(jnp.ones((T, N, IN), jnp.float64))
    assert forced.dtype == jnp.float32


def test_jit_does_not_recompile_for_new_values():
    model = LSTM(IN, H, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, x):
        return nnx.merge(graphdef, state)(x)[0]

    run(state, jnp.ones((T, N, IN)))
    run(state, jnp.zeros((T, N, IN)))
    assert run._cache_size() == 1


# ------------------------------------------------------------------------------------------------
# Errors: every path, with the message checked.
# ------------------------------------------------------------------------------------------------


def test_wrong_input_size_names_layer_and_both_numbers():
    model = LSTM(IN, H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"LSTM: input_size=7 of the input does not match LSTM\(input_size=4\)"):
        model(jnp.ones((T, N, 7)))


@pytest.mark.parametrize("shape", [(IN,), (2, T, N, IN)], ids=["1d", "4d"])
def test_wrong_rank(shape):
    with pytest.raises(ValueError, match=r"GRU: input must be 2-D or 3-D, got a \d-D array"):
        GRU(IN, H, rngs=nnx.Rngs(0))(jnp.ones(shape))


def test_bad_initial_state_shape():
    model = GRU(IN, H, num_layers=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"GRU: h_0 must have shape \(2, 3, 6\).*got shape \(1, 3, 6\)"):
        model(jnp.ones((T, N, IN)), jnp.zeros((1, N, H)))
    with pytest.raises(ValueError, match=r"GRU: h_0 must have shape \(2, 6\).*got shape \(2, 3, 6\)"):
        model(jnp.ones((T, IN)), jnp.zeros((2, N, H)))
    lstm = LSTM(IN, H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"LSTM: c_0 must have shape \(1, 3, 6\).*got shape \(1, 3, 5\)"):
        lstm(jnp.ones((T, N, IN)), (jnp.zeros((1, N, H)), jnp.zeros((1, N, 5))))


def test_initial_state_structure():
    with pytest.raises(TypeError, match=r"LSTM: hx must be a tuple \(h_0, c_0\), got ArrayImpl"):
        LSTM(IN, H, rngs=nnx.Rngs(0))(jnp.ones((T, N, IN)), jnp.zeros((1, N, H)))
    with pytest.raises(TypeError, match=r"RNN: hx must be one array h_0, got a tuple"):
        RNN(IN, H, rngs=nnx.Rngs(0))(jnp.ones((T, N, IN)), (jnp.zeros((1, N, H)),))


@pytest.mark.parametrize("dropout", [-0.1, 1.5], ids=["negative", "above-one"])
def test_invalid_dropout(dropout):
    with pytest.raises(ValueError, match=rf"RNN: dropout must be in \[0.0, 1.0\], got dropout={dropout}"):
        RNN(IN, H, num_layers=2, dropout=dropout, rngs=nnx.Rngs(0))


def test_dropout_must_be_a_number():
    with pytest.raises(TypeError, match=r"GRU: dropout must be a number, got 'high'"):
        GRU(IN, H, num_layers=2, dropout="high", rngs=nnx.Rngs(0))


def test_proj_size_is_refused():
    with pytest.raises(NotImplementedError, match=r"LSTM: proj_size=3 is not supported"):
        LSTM(IN, H, proj_size=3, rngs=nnx.Rngs(0))


def test_invalid_sizes_and_settings():
    with pytest.raises(ValueError, match=r"LSTM: hidden_size must be a positive integer, got hidden_size=0"):
        LSTM(IN, 0, rngs=nnx.Rngs(0))
    # A float size is the wrong type (the shared _validation rule: TypeError names the type).
    with pytest.raises(TypeError, match=r"GRU: input_size must be a positive integer, got 2.5 \(float\)"):
        GRU(2.5, H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"RNN: num_layers must be a positive integer, got num_layers=0"):
        RNN(IN, H, 0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"RNN: nonlinearity must be one of 'tanh', 'relu'; got nonlinearity='gelu'"):
        RNN(IN, H, nonlinearity="gelu", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"LSTM: unroll must be a positive integer or a bool, got unroll=0"):
        LSTM(IN, H, unroll=0, rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    "kind, kwargs",
    [
        ("LSTM", {}),
        ("LSTM", {"num_layers": 2, "batch_first": True, "dropout": 0.1}),
        ("GRU", {"bias": False, "bidirectional": True}),
        ("RNN", {"nonlinearity": "relu", "num_layers": 3}),
    ],
    ids=["lstm-default", "lstm-2layer-bf-dropout", "gru-nobias-bidir", "rnn-relu-3layer"],
)
def test_print_matches_torch(kind, kwargs):
    from fnml import layers

    ours = getattr(layers, kind)(3, 5, rngs=nnx.Rngs(0), **kwargs)
    theirs = getattr(torch.nn, kind)(3, 5, **kwargs)
    assert str(ours) == str(theirs)
    assert repr(ours) == repr(theirs)

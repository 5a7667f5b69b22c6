"""scaled_dot_product_attention, multi_head_attention_forward and MultiheadAttention against real torch.

Forward AND gradients (query, key, value and every parameter) in float64 and float32 over: causal and
padding masks, bool and additive float masks, is_causal (square and torch's top-left alignment for
L != S), need_weights with average_attn_weights both ways, batch_first both ways, kdim/vdim,
add_bias_kv / add_zero_attn, unbatched inputs, dropout_p=0 exact. torch's MultiheadAttention runs in
training mode with dropout 0, so its fused fast path (eval only) is never taken: the reference is torch's
own reference path. Init by distribution (KS), ``print`` text, and every bad argument.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from flax import nnx
from scipy import stats
from test_linear_norm import TORCH, _data, function_parity, functions_parity, module_parity, modules_parity

from fnml import functional as F
from fnml import interop, layers

P_MIN = 1e-3  # KS p-value threshold, as tests/test_init.py (deterministic seeds)


def _causal_bool(length_q, length_k):
    return np.tril(np.ones((length_q, length_k), bool))  # True = attend (SDPA convention)


# --------------------------------------------------------------------------------------------------
# scaled_dot_product_attention
# --------------------------------------------------------------------------------------------------


def _sdpa_case(name, dtype):
    """(arrays, constants) for one SDPA case: torch's (B, H, T, E) layout."""
    rng_mask = np.random.default_rng(5)
    shapes = {"q": (2, 3, 4, 8), "k": (2, 3, 6, 8), "v": (2, 3, 6, 5)}
    constants = {}
    if name == "square-causal":
        shapes = {"q": (2, 2, 5, 4), "k": (2, 2, 5, 4), "v": (2, 2, 5, 4)}
        constants["is_causal"] = True
    elif name == "causal-L<S-top-left":
        constants["is_causal"] = True
    elif name == "causal-L>S-top-left":
        shapes = {"q": (2, 3, 6, 8), "k": (2, 3, 4, 8), "v": (2, 3, 4, 5)}
        constants["is_causal"] = True
    elif name == "bool-mask-LS":
        constants["attn_mask"] = rng_mask.random((4, 6)) > 0.3
        constants["attn_mask"][:, 0] = True  # no fully masked row here
    elif name == "bool-mask-full-shape":
        constants["attn_mask"] = rng_mask.random((2, 3, 4, 6)) > 0.5
        constants["attn_mask"][..., 1] = True
    elif name == "bool-mask-fully-masked-row":
        mask = rng_mask.random((2, 1, 4, 6)) > 0.3
        mask[0, 0, 2, :] = False  # a query that sees nothing: zeros, as torch
        constants["attn_mask"] = mask
    elif name == "float-mask":
        constants["attn_mask"] = rng_mask.standard_normal((2, 1, 4, 6)).astype(dtype)
    elif name == "float-mask-with-inf":
        mask = np.where(rng_mask.random((4, 6)) > 0.3, 0.0, -np.inf).astype(dtype)
        mask[:, 0] = 0.0
        constants["attn_mask"] = mask
    elif name == "scale":
        constants["scale"] = 0.3
    elif name == "gqa":
        shapes = {"q": (2, 4, 4, 8), "k": (2, 2, 6, 8), "v": (2, 2, 6, 5)}
        constants["enable_gqa"] = True
    elif name == "3d-inputs":
        shapes = {"q": (3, 4, 8), "k": (3, 6, 8), "v": (3, 6, 5)}
    elif name == "dropout_p=0":
        constants["dropout_p"] = 0.0
    arrays = {
        "query": _data(shapes["q"], dtype, 1),
        "key": _data(shapes["k"], dtype, 2),
        "value": _data(shapes["v"], dtype, 3),
    }
    return arrays, constants


SDPA_CASES = [
    "no-mask",
    "square-causal",
    "causal-L<S-top-left",
    "causal-L>S-top-left",
    "bool-mask-LS",
    "bool-mask-full-shape",
    "bool-mask-fully-masked-row",
    "float-mask",
    "float-mask-with-inf",
    "scale",
    "gqa",
    "3d-inputs",
    "dropout_p=0",
]


def test_sdpa_matches_torch(dtype):
    # Every case in one compiled program (each case's values and gradients are still its own).
    cases = {}
    for case in SDPA_CASES:
        arrays, constants = _sdpa_case(case, dtype)
        cases[case] = (TF.scaled_dot_product_attention, F.scaled_dot_product_attention, arrays, constants)
    functions_parity(cases, dtype)


def test_sdpa_dropout_zero_is_exactly_no_dropout_and_p_one_is_zero():
    arrays, _ = _sdpa_case("no-mask", "float64")
    q, k, v = (jnp.asarray(arrays[name]) for name in ("query", "key", "value"))
    plain = F.scaled_dot_product_attention(q, k, v)
    np.testing.assert_array_equal(F.scaled_dot_product_attention(q, k, v, dropout_p=0.0), plain)
    key = jax.random.key(0)
    np.testing.assert_array_equal(F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, dropout_key=key), plain)
    np.testing.assert_array_equal(F.scaled_dot_product_attention(q, k, v, dropout_p=1.0, dropout_key=key), 0 * plain)


def test_sdpa_dropout_uses_the_key_and_scales_by_one_minus_p():
    q = k = jnp.zeros((1, 1, 64, 4))  # uniform attention over 64 keys
    v = jnp.ones((1, 1, 64, 1))
    key = jax.random.key(3)
    first = F.scaled_dot_product_attention(q, k, v, dropout_p=0.25, dropout_key=key)
    again = F.scaled_dot_product_attention(q, k, v, dropout_p=0.25, dropout_key=key)
    other = F.scaled_dot_product_attention(q, k, v, dropout_p=0.25, dropout_key=jax.random.key(4))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # Each output row is (kept keys / 64) / (1 - p): a multiple of 1 / (64 * 0.75), averaging about 1.
    kept = np.asarray(first).ravel() * 64 * 0.75
    np.testing.assert_allclose(kept, np.round(kept), atol=1e-4)
    assert 0.8 < float(first.mean()) < 1.2


# --------------------------------------------------------------------------------------------------
# MultiheadAttention (layer) against torch.nn.MultiheadAttention
# --------------------------------------------------------------------------------------------------

E, H, L, S, N = 8, 2, 4, 5, 3


def _mha_inputs(dtype, *, batch_first, self_attention, kdim=E, vdim=E, unbatched=False):
    source = L if self_attention else S
    if unbatched:
        shapes = [(L, E), (source, kdim), (source, vdim)]
    elif batch_first:
        shapes = [(N, L, E), (N, source, kdim), (N, source, vdim)]
    else:
        shapes = [(L, N, E), (source, N, kdim), (source, N, vdim)]
    if self_attention:
        x = _data(shapes[0], dtype, 1)
        return [x, x.copy(), x.copy()], L
    return [_data(shape, dtype, i + 1) for i, shape in enumerate(shapes)], source


def _mask(kind, dtype, length_q, length_k):
    rng = np.random.default_rng(7)
    if kind == "causal-float":
        return np.triu(np.full((length_q, length_k), -np.inf), 1).astype(dtype)
    if kind == "causal-bool":
        return np.triu(np.ones((length_q, length_k), bool), 1)  # True = NOT attended (module convention)
    if kind == "bool-2d":
        mask = rng.random((length_q, length_k)) > 0.6
        mask[:, 0] = False
        return mask
    if kind == "float-3d":
        return rng.standard_normal((N * H, length_q, length_k)).astype(dtype)
    raise ValueError(kind)


def _padding(kind, dtype, length_k):
    mask = np.zeros((N, length_k), bool)
    mask[0, -2:] = True  # the last two keys of sample 0 are padding
    mask[2, -1] = True
    return mask if kind == "bool" else np.where(mask, -np.inf, 0.0).astype(dtype)


def _both_outputs(framework):
    """Call MHA and flatten (output, weights) into one vector, so one cotangent covers both."""
    cat = torch.cat if framework == "torch" else jnp.concatenate

    def call(module, query, key, value, **kwargs):
        output, weights = module(query, key, value, **kwargs)
        parts = [output.reshape(-1)] + ([] if weights is None else [weights.reshape(-1)])
        return cat(parts)

    return call


MHA_CASES = {
    # name: (constructor kwargs, call kwargs spec, self attention)
    "self-no-mask": ({}, {}, True),
    "self-causal-float-mask": ({}, {"attn_mask": "causal-float"}, True),
    "self-is_causal-hint": ({}, {"attn_mask": "causal-float", "is_causal": True}, True),
    "self-float-3d-mask": ({}, {"attn_mask": "float-3d"}, True),
    "self-padding-bool": ({}, {"key_padding_mask": "bool"}, True),
    "self-causal+padding": ({}, {"attn_mask": "causal-bool", "key_padding_mask": "bool"}, True),
    "cross-kdim-vdim": ({"kdim": 3, "vdim": 6}, {}, False),
    "cross-kdim-vdim-padding": ({"kdim": 3, "vdim": 6}, {"key_padding_mask": "bool", "attn_mask": "bool-2d"}, False),
    "cross-same-dim": ({}, {"attn_mask": "float-3d"}, False),
    "no-bias": ({"bias": False}, {"attn_mask": "causal-float"}, True),
    "add_bias_kv": ({"add_bias_kv": True}, {"key_padding_mask": "bool", "attn_mask": "bool-2d"}, False),
    "add_zero_attn": ({"add_zero_attn": True}, {"key_padding_mask": "float", "attn_mask": "causal-float"}, True),
}


def _mha_params():
    """Every case with and without weights (per-head weights on every third), batch_first alternating."""
    params = []
    for index, case in enumerate(MHA_CASES):
        batch_first = index % 2 == 1
        modes = ["need_weights-averaged", "no-weights"] + (["need_weights-per-head"] if index % 3 == 0 else [])
        layout = "batch_first" if batch_first else "seq-first"
        params += [pytest.param(case, batch_first, mode, id=f"{case}-{layout}-{mode}") for mode in modes]
    return params


def _mha_parity_case(case, batch_first, weights_mode, dtype):
    settings, call_spec, self_attention = MHA_CASES[case]
    kdim, vdim = settings.get("kdim", E), settings.get("vdim", E)
    inputs, source = _mha_inputs(dtype, batch_first=batch_first, self_attention=self_attention, kdim=kdim, vdim=vdim)
    constants = {
        "need_weights": weights_mode != "no-weights",
        "average_attn_weights": weights_mode == "need_weights-averaged",
    }
    for name, kind in call_spec.items():
        if name == "attn_mask":
            constants[name] = _mask(kind, dtype, L, source)
        elif name == "key_padding_mask":
            constants[name] = _padding(kind, dtype, source)
        else:
            constants[name] = kind
    torch_mha = torch.nn.MultiheadAttention(E, H, batch_first=batch_first, **settings).to(TORCH[dtype])
    with torch.no_grad():  # non-zero biases, so their gradients and use are checked too
        for name, param in torch_mha.named_parameters():
            if "bias" in name:
                param.copy_(torch.tensor(_data(tuple(param.shape), dtype, 21)))
    fnml_mha = layers.MultiheadAttention(E, H, batch_first=batch_first, **settings, param_dtype=dtype, rngs=nnx.Rngs(0))
    return dict(
        torch_module=torch_mha,
        fnml_module=fnml_mha,
        inputs=inputs,
        call_torch=_both_outputs("torch"),
        call_fnml=_both_outputs("fnml"),
        constants=constants,
    )


def test_multihead_attention_matches_torch(dtype):
    # Every (case, layout, weights mode) in one compiled program; a difference is reported under the case's id.
    cases = {param.id: _mha_parity_case(*param.values, dtype) for param in _mha_params()}
    modules_parity(cases, dtype)


@pytest.mark.parametrize("need_weights", [True, False], ids=["need_weights", "no-weights"])
def test_multihead_attention_unbatched_matches_torch(need_weights, dtype):
    inputs, _ = _mha_inputs(dtype, batch_first=False, self_attention=True, unbatched=True)
    torch_mha = torch.nn.MultiheadAttention(E, H).to(TORCH[dtype])
    fnml_mha = layers.MultiheadAttention(E, H, param_dtype=dtype, rngs=nnx.Rngs(0))
    module_parity(
        torch_mha,
        fnml_mha,
        inputs,
        dtype,
        call_torch=_both_outputs("torch"),
        call_fnml=_both_outputs("fnml"),
        constants={"need_weights": need_weights, "attn_mask": _mask("causal-bool", dtype, L, L)},
    )


def test_weights_shapes_are_torchs():
    x = jnp.ones((N, L, E))
    mha = layers.MultiheadAttention(E, H, batch_first=True, rngs=nnx.Rngs(0))

    def weights(x, **kwargs):  # the call traced for shapes only (nothing to compute or compile)
        return nnx.eval_shape(lambda m, x: m(x, x, x, **kwargs)[1], mha, x)

    assert weights(x).shape == (N, L, L)
    assert weights(x, average_attn_weights=False).shape == (N, H, L, L)
    assert weights(x, need_weights=False) is None
    assert weights(x[0]).shape == (L, L)  # unbatched


def test_functional_mha_static_kv_matches_torch(dtype):
    # static_k / static_v are only reachable through the functional op (torch's module never passes them).
    q = _data((L, N, E), dtype, 1)
    static_k, static_v = _data((N * H, S, E // H), dtype, 2), _data((N * H, S, E // H), dtype, 3)
    weights = {
        "in_proj_weight": _data((3 * E, E), dtype, 4),
        "in_proj_bias": _data((3 * E,), dtype, 5),
        "out_proj_weight": _data((E, E), dtype, 6),
        "out_proj_bias": _data((E,), dtype, 7),
    }

    def call(module, query, static_k, static_v, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias):
        out, w = module(
            query,
            query,
            query,
            E,
            H,
            in_proj_weight,
            in_proj_bias,
            None,
            None,
            False,
            0.0,
            out_proj_weight,
            out_proj_bias,
            static_k=static_k,
            static_v=static_v,
        )
        return out, w

    arrays = {"query": q, "static_k": static_k, "static_v": static_v, **weights}
    function_parity(
        lambda **kw: call(TF.multi_head_attention_forward, **kw),
        lambda **kw: call(F.multi_head_attention_forward, **kw),
        arrays,
        dtype,
        out_index=0,
    )


def test_eval_mode_turns_attention_dropout_off():
    x = jnp.asarray(_data((N, L, E), "float64", 1))
    mha = layers.MultiheadAttention(E, H, dropout=0.5, batch_first=True, param_dtype="float64", rngs=nnx.Rngs(0))
    reference = layers.MultiheadAttention(E, H, batch_first=True, param_dtype="float64", rngs=nnx.Rngs(1))
    interop.load_state_dict(reference, interop.state_dict(mha))
    training_out = mha(x, x, x)[0]
    assert not np.allclose(training_out, reference(x, x, x)[0])
    np.testing.assert_array_equal(mha.eval()(x, x, x)[0], reference(x, x, x)[0])
    # Same seed, same masks: the dropout stream is part of the module's state.
    again = layers.MultiheadAttention(E, H, dropout=0.5, batch_first=True, param_dtype="float64", rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(again(x, x, x)[0], training_out)


def test_state_dict_names_and_layouts_are_torchs():
    for settings in ({}, {"kdim": 3, "vdim": 6, "add_bias_kv": True}, {"bias": False}):
        torch_mha = torch.nn.MultiheadAttention(E, H, **settings)
        fnml_mha = layers.MultiheadAttention(E, H, **settings, rngs=nnx.Rngs(0))
        ours = interop.state_dict(fnml_mha)
        assert list(ours) == list(torch_mha.state_dict())
        assert {k: v.shape for k, v in ours.items()} == {k: tuple(v.shape) for k, v in torch_mha.state_dict().items()}


@pytest.mark.parametrize(
    "settings", [{}, {"kdim": 3, "vdim": 5}, {"bias": False}], ids=["packed", "kdim-vdim", "no-bias"]
)
def test_print_matches_torch(settings):
    assert str(layers.MultiheadAttention(E, H, **settings, rngs=nnx.Rngs(0))) == str(
        torch.nn.MultiheadAttention(E, H, **settings)
    )


def _xavier_bound(fan_in, fan_out):
    return math.sqrt(6.0 / (fan_in + fan_out))


def test_init_distributions_match_torch():
    embed, kdim = 64, 48
    packed = layers.MultiheadAttention(embed, 4, rngs=nnx.Rngs(0))
    torch_packed = torch.nn.MultiheadAttention(embed, 4)
    # in_proj_weight (3E, E): xavier_uniform, bound sqrt(6 / (E + 3E)).
    bound = _xavier_bound(embed, 3 * embed)
    ours = np.asarray(packed.in_proj_weight[...]).ravel()
    theirs = torch_packed.in_proj_weight.detach().numpy().ravel()
    assert np.abs(ours).max() <= bound and ours.max() > 0.98 * bound
    assert stats.kstest(ours, stats.uniform(loc=-bound, scale=2 * bound).cdf).pvalue > P_MIN
    assert stats.ks_2samp(ours, theirs).pvalue > P_MIN
    # out_proj: Linear's default weight init, zero bias; in_proj_bias zeros.
    out_w = np.asarray(packed.out_proj.kernel[...]).ravel()
    assert stats.ks_2samp(out_w, torch_packed.out_proj.weight.detach().numpy().ravel()).pvalue > P_MIN
    assert not np.any(packed.out_proj.bias[...]) and not np.any(packed.in_proj_bias[...])
    # Separate projections and bias_k / bias_v (xavier_normal, std 1/sqrt(E) for a (1, 1, E) tensor).
    separate = layers.MultiheadAttention(embed, 4, kdim=kdim, vdim=kdim, add_bias_kv=True, rngs=nnx.Rngs(1))
    torch_separate = torch.nn.MultiheadAttention(embed, 4, kdim=kdim, vdim=kdim, add_bias_kv=True)
    for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
        ours = np.asarray(getattr(separate, name)[...]).ravel()
        theirs = getattr(torch_separate, name).detach().numpy().ravel()
        assert stats.ks_2samp(ours, theirs).pvalue > P_MIN, name
    bias_k = np.asarray(layers.MultiheadAttention(1024, 4, add_bias_kv=True, rngs=nnx.Rngs(2)).bias_k[...]).ravel()
    assert stats.kstest(bias_k, stats.norm(scale=1 / math.sqrt(1024)).cdf).pvalue > P_MIN


def test_init_ks_test_can_fail():
    # A kaiming-uniform in_proj_weight (Linear's init) is rejected: the check has teeth.
    wrong = torch.nn.Linear(64, 192).weight.detach().numpy().ravel()
    theirs = torch.nn.MultiheadAttention(64, 4).in_proj_weight.detach().numpy().ravel()
    assert stats.ks_2samp(wrong, theirs).pvalue < P_MIN


# --------------------------------------------------------------------------------------------------
# Bad arguments
# --------------------------------------------------------------------------------------------------


def _q(*shape):
    return jnp.ones(shape)


_MHA = layers.MultiheadAttention(E, H, rngs=nnx.Rngs(0))
_X = jnp.ones((L, N, E))

ERRORS = {
    "sdpa-causal-and-mask": (
        lambda: F.scaled_dot_product_attention(
            _q(1, 2, 3), _q(1, 2, 3), _q(1, 2, 3), jnp.ones((2, 2), bool), is_causal=True
        ),
        ValueError,
        "must not be given with is_causal=True",
    ),
    "sdpa-int-mask": (
        lambda: F.scaled_dot_product_attention(_q(1, 2, 3), _q(1, 2, 3), _q(1, 2, 3), jnp.ones((2, 2), int)),
        TypeError,
        "attn_mask must be a bool or floating-point array",
    ),
    "sdpa-mask-shape": (
        lambda: F.scaled_dot_product_attention(_q(1, 2, 3), _q(1, 4, 3), _q(1, 4, 3), jnp.ones((2, 3), bool)),
        ValueError,
        "does not broadcast",
    ),
    "sdpa-head-dim": (
        lambda: F.scaled_dot_product_attention(_q(1, 2, 3), _q(1, 2, 4), _q(1, 2, 4)),
        ValueError,
        "query's last axis",
    ),
    "sdpa-kv-length": (
        lambda: F.scaled_dot_product_attention(_q(1, 2, 3), _q(1, 2, 3), _q(1, 4, 3)),
        ValueError,
        "same length S",
    ),
    "sdpa-rank": (lambda: F.scaled_dot_product_attention(_q(3), _q(3), _q(3)), ValueError, "at least 2-D"),
    "sdpa-dropout-needs-key": (
        lambda: F.scaled_dot_product_attention(_q(1, 2, 3), _q(1, 2, 3), _q(1, 2, 3), dropout_p=0.1),
        ValueError,
        "needs dropout_key",
    ),
    "sdpa-dropout-range": (
        lambda: F.scaled_dot_product_attention(_q(1, 2, 3), _q(1, 2, 3), _q(1, 2, 3), dropout_p=1.5),
        ValueError,
        "dropout_p must be in",
    ),
    "sdpa-dropout-key-type": (
        lambda: F.scaled_dot_product_attention(_q(1, 2, 3), _q(1, 2, 3), _q(1, 2, 3), dropout_p=0.1, dropout_key=3),
        TypeError,
        "dropout_key must be a jax.random key",
    ),
    "sdpa-gqa-heads": (
        lambda: F.scaled_dot_product_attention(_q(1, 3, 2, 4), _q(1, 2, 2, 4), _q(1, 2, 2, 4), enable_gqa=True),
        ValueError,
        "multiple of the key/value",
    ),
    "sdpa-is_causal-type": (
        lambda: F.scaled_dot_product_attention(_q(1, 2, 3), _q(1, 2, 3), _q(1, 2, 3), is_causal=1),
        TypeError,
        "is_causal must be a bool",
    ),
    "mha-divisible": (
        lambda: layers.MultiheadAttention(6, 4, rngs=nnx.Rngs(0)),
        ValueError,
        r"embed_dim \(6\) must be divisible",
    ),
    "mha-num-heads": (lambda: layers.MultiheadAttention(6, 0, rngs=nnx.Rngs(0)), ValueError, "num_heads must be"),
    "mha-dropout": (
        lambda: layers.MultiheadAttention(8, 2, dropout=1.5, rngs=nnx.Rngs(0)),
        ValueError,
        "dropout must be in",
    ),
    "mha-rngs": (lambda: layers.MultiheadAttention(8, 2, rngs=0), TypeError, "rngs must be an nnx.Rngs"),
    "mha-bias-type": (
        lambda: layers.MultiheadAttention(8, 2, bias=1, rngs=nnx.Rngs(0)),
        TypeError,
        "bias must be a bool",
    ),
    "mha-query-rank": (lambda: _MHA(jnp.ones((1, L, N, E)), _X, _X), ValueError, "query must be 3-D"),
    "mha-query-features": (lambda: _MHA(jnp.ones((L, N, 3)), _X, _X), ValueError, r"embed_dim=8\) got a query"),
    "mha-key-value-shape": (lambda: _MHA(_X, _X, jnp.ones((S, N, E))), ValueError, "does not match value shape"),
    "mha-batched-key-rank": (lambda: _MHA(_X, _X[0], _X[0]), ValueError, "key and value must be 3-D"),
    "mha-int-mask": (lambda: _MHA(_X, _X, _X, attn_mask=jnp.zeros((L, L), int)), TypeError, "attn_mask must be a bool"),
    "mha-2d-mask-shape": (
        lambda: _MHA(_X, _X, _X, attn_mask=jnp.zeros((L, L + 1))),
        ValueError,
        "2-D attn_mask has shape",
    ),
    "mha-3d-mask-shape": (
        lambda: _MHA(_X, _X, _X, attn_mask=jnp.zeros((N, L, L))),
        ValueError,
        "3-D attn_mask has shape",
    ),
    "mha-mask-rank": (
        lambda: _MHA(_X, _X, _X, attn_mask=jnp.zeros((1, N, L, L))),
        ValueError,
        "attn_mask must be None, 2-D or 3-D",
    ),
    "mha-padding-shape": (
        lambda: _MHA(_X, _X, _X, key_padding_mask=jnp.zeros((N, L + 1), bool)),
        ValueError,
        r"key_padding_mask must have shape \(3, 4\)",
    ),
    "mha-padding-rank": (
        lambda: _MHA(_X, _X, _X, key_padding_mask=jnp.zeros(L, bool)),
        ValueError,
        "key_padding_mask must be None or 2-D",
    ),
    "mha-padding-dtype": (
        lambda: _MHA(_X, _X, _X, key_padding_mask=jnp.zeros((N, L), int)),
        TypeError,
        "key_padding_mask must be a bool",
    ),
    "mha-is_causal-needs-mask": (
        lambda: _MHA(_X, _X, _X, is_causal=True),
        ValueError,
        "is_causal=True needs attn_mask",
    ),
    "mha-need_weights-type": (lambda: _MHA(_X, _X, _X, need_weights=1), TypeError, "need_weights must be a bool"),
}


@pytest.mark.parametrize("case", list(ERRORS), ids=list(ERRORS))
def test_bad_arguments_raise(case):
    build, error, match = ERRORS[case]
    with pytest.raises(error, match=match):
        build()

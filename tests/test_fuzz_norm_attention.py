"""Property-based parity of the normalisation and attention ops and layers against real torch (hypothesis).

Each property draws a configuration (sizes from small sets so compilations are shared, flags, masks), a
dtype and a value regime, and compares fnml with torch: the output and the gradients of every input (and
of every parameter for MultiheadAttention), through ``function_parity`` / ``module_parity`` of
``tests/test_linear_norm.py``. Tolerance: the conftest table, ``atol`` scaled by the data's magnitude.
Settings: ``tests/_hypothesis_profiles.py`` (derandomized CI profile, bounded examples per property).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as TF
from _hypothesis_profiles import examples
from flax import nnx
from helpers import tolerance
from hypothesis import given
from hypothesis import strategies as st
from test_linear_norm import TORCH, function_parity, module_parity

from fnml import functional as F
from fnml import layers

DTYPE = st.sampled_from(["float64", "float32"])
REGIME = st.sampled_from(["normal", "large-mean", "small", "ties"])
SEED = st.integers(0, 2**16)


def values(shape, dtype, regime, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if regime == "large-mean":  # the case flax's fast variance gets wrong
        x = x + 50.0
    elif regime == "small":
        x = x * 1e-2
    elif regime == "ties":  # few distinct values: equal scores in attention rows
        x = rng.integers(-1, 2, size=shape).astype(np.float64)
    return x.astype(dtype)


def _magnitude(*arrays):
    return max([1.0] + [float(np.max(np.abs(a))) for a in arrays if a.size])


def _atol(dtype, *arrays, power=1):
    # Rounding grows with the magnitude of the data (``power=2`` for products such as scores or variances);
    # float64 keeps the 1e-12 target at unit scale.
    return tolerance(dtype)["atol"] * _magnitude(*arrays) ** power


@given(
    dtype=DTYPE,
    regime=REGIME,
    seed=SEED,
    shape=st.sampled_from([(3, 4), (2, 3, 4), (2, 2, 3, 4)]),
    trailing=st.integers(1, 2),
    affine=st.booleans(),
    op=st.sampled_from(["layer_norm", "rms_norm"]),
    eps=st.sampled_from([None, 1e-5, 1e-3]),
)
@examples(16)
def test_layer_and_rms_norm_match_torch(dtype, regime, seed, shape, trailing, affine, op, eps):
    normalized = shape[-trailing:]
    x = values(shape, dtype, regime, seed)
    arrays = {"input": x}
    if affine:
        arrays["weight"] = values(normalized, dtype, "normal", seed + 1)
        if op == "layer_norm":
            arrays["bias"] = values(normalized, dtype, "normal", seed + 2)
    if op == "layer_norm":
        eps = 1e-5 if eps is None else eps
        torch_fn = lambda **kw: TF.layer_norm(normalized_shape=list(normalized), eps=eps, **kw)  # noqa: E731
        fnml_fn = lambda **kw: F.layer_norm(normalized_shape=normalized, eps=eps, **kw)  # noqa: E731
    else:
        torch_fn = lambda **kw: TF.rms_norm(normalized_shape=list(normalized), eps=eps, **kw)  # noqa: E731
        fnml_fn = lambda **kw: F.rms_norm(normalized_shape=normalized, eps=eps, **kw)  # noqa: E731
    # A ties regime with a constant row makes the variance 0: the gradient is then pure rounding * rsqrt(eps).
    scale = 1.0 / np.sqrt(eps or np.finfo(dtype).eps) if regime == "ties" else 1.0
    function_parity(torch_fn, fnml_fn, arrays, dtype, atol=_atol(dtype, x) * scale)


@given(
    dtype=DTYPE,
    regime=REGIME,
    seed=SEED,
    shape=st.sampled_from([(2, 4, 5), (2, 6, 3, 2), (3, 6)]),
    groups=st.sampled_from([1, 2]),
    affine=st.booleans(),
)
@examples(12)
def test_group_norm_matches_torch(dtype, regime, seed, shape, groups, affine):
    x = values(shape, dtype, regime if regime != "ties" else "normal", seed)
    arrays = {"input": x}
    if affine:
        arrays.update(
            weight=values((shape[1],), dtype, "normal", seed + 1), bias=values((shape[1],), dtype, "normal", 2)
        )
    function_parity(
        lambda **kw: TF.group_norm(num_groups=groups, **kw),
        lambda **kw: F.group_norm(num_groups=groups, **kw),
        arrays,
        dtype,
        atol=_atol(dtype, x),
    )


@given(
    dtype=DTYPE,
    regime=REGIME,
    seed=SEED,
    shape=st.sampled_from([(2, 3, 5), (1, 3, 2, 3)]),
    use_input_stats=st.booleans(),
    momentum=st.sampled_from([0.1, 0.5]),
)
@examples(10)
def test_instance_norm_running_stats_match_torch(dtype, regime, seed, shape, use_input_stats, momentum):
    x = values(shape, dtype, regime if regime != "ties" else "normal", seed)
    mean0, var0 = values((3,), dtype, "normal", seed + 1), np.abs(values((3,), dtype, "normal", seed + 2)) + 0.5
    running = (torch.tensor(mean0), torch.tensor(var0))
    function_parity(
        lambda input: TF.instance_norm(input, *running, use_input_stats=use_input_stats, momentum=momentum),
        lambda input: F.instance_norm(input, mean0, var0, use_input_stats=use_input_stats, momentum=momentum),
        {"input": x},
        dtype,
        atol=_atol(dtype, x),
    )
    _, new_mean, new_var = F.instance_norm_with_stats(
        x, mean0, var0, use_input_stats=use_input_stats, momentum=momentum
    )
    np.testing.assert_allclose(new_mean, running[0].numpy(), rtol=1e-5, atol=_atol(dtype, x))
    np.testing.assert_allclose(new_var, running[1].numpy(), rtol=1e-5, atol=_atol(dtype, x, power=2))


@given(
    dtype=DTYPE,
    regime=REGIME,
    seed=SEED,
    lengths=st.sampled_from([(3, 3), (2, 5), (5, 2)]),
    heads=st.sampled_from([1, 2]),
    mask_kind=st.sampled_from(["none", "causal", "bool", "bool-empty-rows", "float"]),
    scale=st.sampled_from([None, 0.5]),
)
@examples(14)
def test_sdpa_matches_torch(dtype, regime, seed, lengths, heads, mask_kind, scale):
    length_q, length_k = lengths
    rng = np.random.default_rng(seed + 7)
    arrays = {
        "query": values((2, heads, length_q, 4), dtype, regime, seed),
        "key": values((2, heads, length_k, 4), dtype, regime, seed + 1),
        "value": values((2, heads, length_k, 3), dtype, "normal", seed + 2),
    }
    constants = {"scale": scale, "is_causal": mask_kind == "causal"}
    if mask_kind.startswith("bool"):
        mask = rng.random((length_q, length_k)) > 0.5
        if mask_kind == "bool":
            mask[:, 0] = True  # every query sees a key; "bool-empty-rows" may leave a row empty (zeros)
        constants["attn_mask"] = mask
    elif mask_kind == "float":
        constants["attn_mask"] = rng.standard_normal((2, 1, length_q, length_k)).astype(dtype)
    function_parity(
        TF.scaled_dot_product_attention,
        F.scaled_dot_product_attention,
        arrays,
        dtype,
        constants=constants,
        atol=_atol(dtype, *arrays.values(), power=2),  # scores scale as |q| |k|
    )


@given(
    dtype=DTYPE,
    seed=SEED,
    embed_heads=st.sampled_from([(4, 1), (4, 2), (6, 3)]),
    batch_first=st.booleans(),
    need_weights=st.booleans(),
    average=st.booleans(),
    causal=st.booleans(),
    padding=st.booleans(),
    kdim=st.sampled_from([None, 3]),
)
@examples(8)
def test_multihead_attention_matches_torch(
    dtype, seed, embed_heads, batch_first, need_weights, average, causal, padding, kdim
):
    embed, heads = embed_heads
    length, batch = 4, 2
    key_dim = kdim or embed
    shape = (batch, length, embed) if batch_first else (length, batch, embed)
    key_shape = (batch, length, key_dim) if batch_first else (length, batch, key_dim)
    inputs = [values(shape, dtype, "normal", seed), values(key_shape, dtype, "normal", seed + 1)]
    inputs.append(values(key_shape, dtype, "normal", seed + 2))
    constants = {"need_weights": need_weights, "average_attn_weights": average}
    if causal:
        constants["attn_mask"] = np.triu(np.ones((length, length), bool), 1)
    if padding:
        mask = np.zeros((batch, length), bool)
        mask[0, -1] = True
        constants["key_padding_mask"] = mask
    torch_mha = torch.nn.MultiheadAttention(embed, heads, kdim=kdim, vdim=kdim, batch_first=batch_first)
    fnml_mha = layers.MultiheadAttention(
        embed, heads, kdim=kdim, vdim=kdim, batch_first=batch_first, param_dtype=dtype, rngs=nnx.Rngs(seed)
    )

    def call(cat):
        def run(module, *xs, **kw):
            output, weights = module(*xs, **kw)
            return cat([output.reshape(-1)] + ([] if weights is None else [weights.reshape(-1)]))

        return run

    module_parity(
        torch_mha.to(TORCH[dtype]),
        fnml_mha,
        inputs,
        dtype,
        call_torch=call(torch.cat),
        call_fnml=call(jnp.concatenate),
        constants=constants,
    )

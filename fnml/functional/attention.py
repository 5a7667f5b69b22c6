"""Scaled dot-product attention and torch's multi-head attention forward (its reference path).

PyTorch equivalent: ``torch.nn.functional.scaled_dot_product_attention``, ``multi_head_attention_forward``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from fnml._validation import (
    check_bool,
    check_key,
    check_number,
    check_positive_int,
)
from fnml.functional._shared import accumulation_dtype, as_float_array
from fnml.functional.activation import softmax_unchecked
from fnml.functional.dropout import dropout_unchecked
from fnml.functional.linear import linear_unchecked

__all__ = ["scaled_dot_product_attention", "multi_head_attention_forward"]


def _check_mask_dtype(name: str, mask: Any, where: str) -> jax.Array:
    """A bool or floating-point mask array (torch refuses integer masks)."""
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_ and not jnp.issubdtype(mask.dtype, jnp.floating):
        raise TypeError(f"{where}: {name} must be a bool or floating-point array, got dtype {mask.dtype}")
    return mask


def _additive_mask(mask: jax.Array | None, dtype: Any, *, masked_when: bool) -> jax.Array | None:
    """A bool mask as 0 / -inf in ``dtype`` (``-inf`` where the bool equals ``masked_when``); floats pass."""
    if mask is None or mask.dtype != jnp.bool_:
        return None if mask is None else mask.astype(dtype)
    return jnp.where(mask == masked_when, jnp.asarray(-jnp.inf, dtype), jnp.asarray(0.0, dtype))


def _safe_softmax(scores: jax.Array) -> jax.Array:
    """Softmax over the last axis that gives 0 (not NaN) for a row masked entirely with -inf, as torch's SDPA."""
    row_max = lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
    fully_masked = row_max == -jnp.inf
    unnormalised = jnp.exp(scores - jnp.where(fully_masked, 0.0, row_max))
    total = jnp.sum(unnormalised, axis=-1, keepdims=True)
    return unnormalised / jnp.where(fully_masked, 1.0, total)


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` summed in float32 for half-precision operands and rounded once, as torch's CPU bmm."""
    return jnp.matmul(a, b, preferred_element_type=accumulation_dtype(a.dtype)).astype(a.dtype)


def _attention_dropout(weights: jax.Array, p: float, key: Any, where: str) -> jax.Array:
    """torch's ``dropout(weights, p)`` on attention probabilities: the one dropout core, keyed by ``dropout_key``."""
    if p == 0.0:
        return weights
    if key is None:
        raise ValueError(f"{where}: dropout_p={p} > 0 needs dropout_key=jax.random.key(seed) (a JAX PRNG key)")
    return dropout_unchecked(weights, p, True, key)


def scaled_dot_product_attention(
    query: Any,
    key: Any,
    value: Any,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    dropout_key: Any = None,
) -> jax.Array:
    """Attention ``softmax(q @ k^T * scale + bias) @ v`` on torch's ``(*, heads, T, head_dim)`` layout.

    PyTorch equivalent: ``torch.nn.functional.scaled_dot_product_attention(query, key, value,
    attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False)``.

    Shapes: ``query: (*, L, E)``, ``key: (*, S, E)``, ``value: (*, S, Ev)`` -> ``(*, L, Ev)``, leading axes
    broadcast (usually ``(B, heads)``). ``scale`` defaults to ``1 / sqrt(E)``. ``attn_mask`` broadcasts to
    ``(*, L, S)``: a bool mask keeps the positions where it is True (True = attend, as torch), a float
    mask is ADDED to the scores. ``is_causal=True`` applies torch's top-left aligned ``tril(ones(L, S))``
    (for ``L != S`` the query i sees keys ``0..i``) and refuses an explicit ``attn_mask``, as torch.
    A query row whose keys are all masked gives zeros (torch's behaviour), not NaN. ``enable_gqa=True``:
    ``key`` / ``value`` may have fewer heads (axis -3) than ``query``; each is repeated
    ``heads_q / heads_kv`` times (torch's ``repeat_interleave``).

    Dropout on the attention probabilities (``dropout_p > 0``) draws its mask from ``dropout_key`` (a
    keyword-only ``jax.random`` key: the argument ``key`` is the attention keys, as in torch); torch
    applies it whenever ``dropout_p > 0`` (training or not), and so does this. ``dropout_p=0`` is exact.
    Masks cannot match torch's random stream. bfloat16 / float16 inputs are computed as torch's CPU
    kernels compute them (float32 sums and softmax): its flash-attention kernel's roundings without
    dropout, everything in float32 and one rounding with it.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> q = k = jnp.eye(2)[None, None]                   # (B=1, heads=1, T=2, E=2)
    >>> v = jnp.array([[[[1.0, 0.0], [0.0, 1.0]]]])
    >>> print(F.scaled_dot_product_attention(q, k, v, is_causal=True).round(3))
    [[[[1.   0.  ]
       [0.33 0.67]]]]
    """
    where = "scaled_dot_product_attention"
    q = as_float_array("query", query, where)
    k = as_float_array("key", key, where)
    v = as_float_array("value", value, where)
    check_bool("is_causal", is_causal, where=where)
    check_bool("enable_gqa", enable_gqa, where=where)
    check_number("dropout_p", dropout_p, where=where)
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"{where}: dropout_p must be in [0, 1], got dropout_p={dropout_p!r}")
    if dropout_p > 0 and dropout_key is not None:
        check_key("dropout_key", dropout_key, where=where)
    if scale is not None:
        check_number("scale", scale, where=where)
    for name, array in (("query", q), ("key", k), ("value", v)):
        if array.ndim < 2:
            raise ValueError(f"{where}: {name} must be at least 2-D (*, T, E), got shape {array.shape}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{where}: query's last axis ({q.shape[-1]}) must equal key's ({k.shape[-1]})")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{where}: key and value must have the same length S, got {k.shape} and {v.shape}")
    if enable_gqa and q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        if q.shape[-3] % k.shape[-3] or k.shape[-3] != v.shape[-3]:
            raise ValueError(
                f"{where}: with enable_gqa the query heads ({q.shape[-3]}) must be a multiple of the key/value "
                f"heads ({k.shape[-3]}, {v.shape[-3]})"
            )
        repeats = q.shape[-3] // k.shape[-3]
        k = jnp.repeat(k, repeats, axis=-3)  # (*, Hkv, S, E) -> (*, Hq, S, E), torch's repeat_interleave
        v = jnp.repeat(v, repeats, axis=-3)
    dtype = jnp.result_type(q, k, v)
    mask = None
    if attn_mask is not None:
        if is_causal:
            raise ValueError(f"{where}: an explicit attn_mask must not be given with is_causal=True (torch refuses it)")
        mask = _check_mask_dtype("attn_mask", attn_mask, where)
        scores_shape = q.shape[:-2] + (q.shape[-2], k.shape[-2])
        try:
            jnp.broadcast_shapes(mask.shape, scores_shape)
        except ValueError:
            raise ValueError(
                f"{where}: attn_mask of shape {mask.shape} does not broadcast to the scores' shape "
                f"{scores_shape} (*, L, S)"
            ) from None
    return scaled_dot_product_attention_unchecked(
        q.astype(dtype), k.astype(dtype), v.astype(dtype), mask, float(dropout_p), is_causal, scale, dropout_key
    )


def scaled_dot_product_attention_unchecked(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    attn_mask: jax.Array | None,
    dropout_p: float,
    is_causal: bool,
    scale: float | None,
    dropout_key: Any,
) -> jax.Array:
    """:func:`scaled_dot_product_attention` of checked arrays of one dtype (the layers' entry).

    ``attn_mask`` is None, a bool mask (True = attend) or a float mask, checked to broadcast to the scores;
    ``is_causal`` builds torch's top-left causal mask when ``attn_mask`` is None. Half-precision operands
    follow torch's CPU kernels: its flash-attention kernel without dropout (:func:`_flash_attention_half`),
    its math kernel (everything in float32, rounded once) with dropout.
    """
    dtype = q.dtype
    accumulate = accumulation_dtype(dtype)
    length_q, length_k = q.shape[-2], k.shape[-2]
    mask = attn_mask
    if mask is None and is_causal:
        mask = jnp.tril(jnp.ones((length_q, length_k), bool))  # top-left aligned, True = attend
    bias = _additive_mask(mask, accumulate, masked_when=False)
    scale_factor = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    # (*, L, E) @ (*, E, S) -> (*, L, S), scaled and masked in the accumulation dtype, rounded once.
    scores = jnp.matmul(q, jnp.swapaxes(k, -2, -1), preferred_element_type=accumulate)
    scores = scores * jnp.asarray(scale_factor, accumulate)
    if bias is not None:
        scores = scores + bias
    if accumulate != dtype and dropout_p == 0.0:
        return _flash_attention_half(scores, v)
    # torch's math kernel (half precision on CPU: all in float32): softmax, dropout, then (*, L, S) @ (*, S, Ev)
    # -> (*, L, Ev), rounded once.
    weights = _attention_dropout(_safe_softmax(scores), dropout_p, dropout_key, "scaled_dot_product_attention")
    return jnp.matmul(weights, v.astype(accumulate)).astype(dtype)


def _flash_attention_half(scores: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(scores) @ v for half-precision ``v`` as torch's CPU flash-attention kernel computes it.

    ``scores`` (float32, scaled and masked) -> ``exp(scores - max)`` and its row sum in float32; the
    exponentials rounded to ``v``'s dtype for the product with ``v`` (float32 sums), divided by the row sum,
    rounded once. A fully masked row gives zeros, as torch.
    """
    row_max = lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
    fully_masked = row_max == -jnp.inf
    unnormalised = jnp.exp(scores - jnp.where(fully_masked, 0.0, row_max))  # (*, L, S)
    total = jnp.sum(unnormalised, axis=-1, keepdims=True)  # (*, L, 1)
    # (*, L, S) @ (*, S, Ev) -> (*, L, Ev), the float32 sums divided by the row sum, then rounded once.
    summed = jnp.matmul(unnormalised.astype(v.dtype), v, preferred_element_type=scores.dtype)
    return (summed / jnp.where(fully_masked, 1.0, total)).astype(v.dtype)


def _check_mha_shapes(query, key, value, key_padding_mask, attn_mask, num_heads, where) -> bool:
    """torch's ``_mha_shape_check``: True for batched (3-D) inputs, False for unbatched (2-D)."""
    if query.ndim == 3:
        if key.ndim != 3 or value.ndim != 3:
            raise ValueError(
                f"{where}: for a batched (3-D) query, key and value must be 3-D, got {key.ndim}-D and {value.ndim}-D"
            )
        if key_padding_mask is not None and key_padding_mask.ndim != 2:
            raise ValueError(
                f"{where}: for a batched (3-D) query, key_padding_mask must be None or 2-D (N, S), "
                f"got a {key_padding_mask.ndim}-D array"
            )
        if attn_mask is not None and attn_mask.ndim not in (2, 3):
            raise ValueError(
                f"{where}: for a batched (3-D) query, attn_mask must be None, 2-D or 3-D, got {attn_mask.ndim}-D"
            )
        return True
    if query.ndim == 2:
        if key.ndim != 2 or value.ndim != 2:
            raise ValueError(
                f"{where}: for an unbatched (2-D) query, key and value must be 2-D, got {key.ndim}-D and {value.ndim}-D"
            )
        if key_padding_mask is not None and key_padding_mask.ndim != 1:
            raise ValueError(
                f"{where}: for an unbatched (2-D) query, key_padding_mask must be None or 1-D (S,), "
                f"got a {key_padding_mask.ndim}-D array"
            )
        if attn_mask is not None:
            if attn_mask.ndim not in (2, 3):
                raise ValueError(
                    f"{where}: for an unbatched (2-D) query, attn_mask must be None, 2-D or 3-D, got {attn_mask.ndim}-D"
                )
            expected = (num_heads, query.shape[0], key.shape[0])
            if attn_mask.ndim == 3 and tuple(attn_mask.shape) != expected:
                raise ValueError(f"{where}: expected a 3-D attn_mask of shape {expected}, got {attn_mask.shape}")
        return False
    raise ValueError(f"{where}: query must be unbatched 2-D (L, E) or batched 3-D (L, N, E), got shape {query.shape}")


def _pad_last(mask: jax.Array | None) -> jax.Array | None:
    # torch's pad(mask, (0, 1)): one zero column for the appended key (bias_k or the zero attention).
    return None if mask is None else jnp.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, 1)])


def multi_head_attention_forward(
    query: Any,
    key: Any,
    value: Any,
    embed_dim_to_check: int,
    num_heads: int,
    in_proj_weight: Any,
    in_proj_bias: Any,
    bias_k: Any,
    bias_v: Any,
    add_zero_attn: bool,
    dropout_p: float,
    out_proj_weight: Any,
    out_proj_bias: Any,
    training: bool = True,
    key_padding_mask: Any = None,
    need_weights: bool = True,
    attn_mask: Any = None,
    use_separate_proj_weight: bool = False,
    q_proj_weight: Any = None,
    k_proj_weight: Any = None,
    v_proj_weight: Any = None,
    static_k: Any = None,
    static_v: Any = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
    *,
    dropout_key: Any = None,
) -> tuple[jax.Array, jax.Array | None]:
    """Multi-head attention on torch's sequence-first ``(L, N, E)`` layout: torch's reference path, step by step.

    PyTorch equivalent: ``torch.nn.functional.multi_head_attention_forward(...)`` (same arguments, same
    order; ``MultiheadAttention`` calls it).

    Shapes: ``query: (L, N, E)`` or unbatched ``(L, E)``; ``key: (S, N, kdim)``, ``value: (S, N, vdim)``.
    Weights in torch's layouts: ``in_proj_weight (3E, E)`` (or ``q/k/v_proj_weight (E, E/kdim/vdim)`` with
    ``use_separate_proj_weight``), ``in_proj_bias (3E,)``, ``bias_k / bias_v (1, 1, E)``,
    ``out_proj_weight (E, E)``. Masks, as torch's MODULE (the opposite of :func:`scaled_dot_product_attention`'s
    bool convention): a bool ``key_padding_mask (N, S)`` / ``attn_mask (L, S) or (N * heads, L, S)`` is
    True where attention is NOT allowed; float masks are added to the scores. ``is_causal`` is torch's
    hint: it needs ``attn_mask``; with no ``key_padding_mask`` and ``need_weights=False`` the mask is
    replaced by the causal one, exactly as torch does. Returns ``(output (L, N, E), weights)``: weights
    ``(N, L, S)`` averaged over heads, ``(N, heads, L, S)`` with ``average_attn_weights=False``, None with
    ``need_weights=False``. Dropout (``training=True``, ``dropout_p > 0``) needs ``dropout_key``.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> x = jnp.ones((3, 1, 4))                                   # (L=3, N=1, E=4)
    >>> out, w = F.multi_head_attention_forward(x, x, x, 4, 2, jnp.ones((12, 4)), jnp.zeros(12), None, None,
    ...                                         False, 0.0, jnp.eye(4), jnp.zeros(4))
    >>> out.shape, w.shape
    ((3, 1, 4), (1, 3, 3))
    """
    where = "multi_head_attention_forward"
    q_in = as_float_array("query", query, where)
    k_in = as_float_array("key", key, where)
    v_in = as_float_array("value", value, where)
    check_positive_int("num_heads", num_heads, where=where)
    for name, flag in (
        ("add_zero_attn", add_zero_attn),
        ("training", training),
        ("use_separate_proj_weight", use_separate_proj_weight),
    ):
        check_bool(name, flag, where=where)
    if training:
        check_number("dropout_p", dropout_p, where=where)
        if not 0.0 <= dropout_p <= 1.0:
            raise ValueError(f"{where}: dropout_p must be in [0, 1], got dropout_p={dropout_p!r}")
        if dropout_p > 0 and dropout_key is not None:
            check_key("dropout_key", dropout_key, where=where)
    if q_in.ndim not in (2, 3):
        _check_mha_shapes(q_in, k_in, v_in, None, None, num_heads, where)  # torch's error for the query's rank
    embed_dim = q_in.shape[-1]
    if embed_dim != embed_dim_to_check:
        raise ValueError(f"{where}: expected embedding dimension {embed_dim_to_check}, got query of shape {q_in.shape}")
    if embed_dim % num_heads:
        raise ValueError(f"{where}: embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
    if use_separate_proj_weight:
        if q_proj_weight is None or k_proj_weight is None or v_proj_weight is None:
            raise ValueError(
                f"{where}: use_separate_proj_weight=True needs q_proj_weight, k_proj_weight and v_proj_weight"
            )
        projections = tuple(
            _projection_weight(name, weight, (embed_dim, array.shape[-1] if array.ndim else 0), where)
            for name, weight, array in (
                ("q_proj_weight", q_proj_weight, q_in),
                ("k_proj_weight", k_proj_weight, k_in),
                ("v_proj_weight", v_proj_weight, v_in),
            )
        )
    else:
        if in_proj_weight is None:
            raise ValueError(f"{where}: use_separate_proj_weight=False needs in_proj_weight")
        w = _projection_weight("in_proj_weight", in_proj_weight, (3 * embed_dim, embed_dim), where)
        projections = (w[:embed_dim], w[embed_dim : 2 * embed_dim], w[2 * embed_dim :])  # (3E, E) -> 3 x (E, E)
    biases = (None, None, None)
    if in_proj_bias is not None:
        b = _projection_weight("in_proj_bias", in_proj_bias, (3 * embed_dim,), where)
        biases = (b[:embed_dim], b[embed_dim : 2 * embed_dim], b[2 * embed_dim :])
    out_weight = _projection_weight("out_proj_weight", out_proj_weight, (embed_dim, embed_dim), where)
    out_bias = out_proj_bias
    if out_bias is not None:
        out_bias = _projection_weight("out_proj_bias", out_proj_bias, (embed_dim,), where)
    if (bias_k is None) != (bias_v is None):
        raise ValueError(f"{where}: bias_k and bias_v must both be given or both be None")
    extras = [jnp.asarray(a) for a in (bias_k, bias_v, static_k, static_v) if a is not None]
    weights = [a for a in (*projections, *biases, out_weight, out_bias) if a is not None]
    dtype = jnp.result_type(q_in, k_in, v_in, *weights, *extras)

    def cast(array: Any) -> jax.Array | None:
        return None if array is None else jnp.asarray(array).astype(dtype)

    return multi_head_attention_unchecked(
        cast(q_in),
        cast(k_in),
        cast(v_in),
        num_heads,
        tuple(cast(w) for w in projections),
        tuple(cast(b) for b in biases),
        cast(bias_k),
        cast(bias_v),
        add_zero_attn,
        float(dropout_p) if training else 0.0,
        cast(out_weight),
        cast(out_bias),
        key_padding_mask=key_padding_mask,
        need_weights=need_weights,
        attn_mask=attn_mask,
        average_attn_weights=average_attn_weights,
        is_causal=is_causal,
        separate_projections=use_separate_proj_weight,
        static_k=cast(static_k),
        static_v=cast(static_v),
        dropout_key=dropout_key,
    )


def _projection_weight(name: str, weight: Any, shape: tuple[int, ...], where: str) -> jax.Array:
    """A floating-point projection parameter of the expected ``shape``."""
    array = as_float_array(name, weight, where)
    if array.shape != shape:
        raise ValueError(f"{where}: {name} must have shape {shape}, got {array.shape}")
    return array


def multi_head_attention_unchecked(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    num_heads: int,
    projections: tuple[jax.Array, jax.Array, jax.Array],
    biases: tuple[jax.Array | None, jax.Array | None, jax.Array | None],
    bias_k: jax.Array | None,
    bias_v: jax.Array | None,
    add_zero_attn: bool,
    dropout_p: float,
    out_proj_weight: jax.Array,
    out_proj_bias: jax.Array | None,
    *,
    key_padding_mask: Any,
    need_weights: bool,
    attn_mask: Any,
    average_attn_weights: bool,
    is_causal: bool,
    separate_projections: bool,
    static_k: jax.Array | None = None,
    static_v: jax.Array | None = None,
    dropout_key: Any = None,
) -> tuple[jax.Array, jax.Array | None]:
    """:func:`multi_head_attention_forward` with its settings checked and every array of one dtype (the
    layers' entry). ``projections`` are the q / k / v weights in torch's ``(E, in)`` layout, ``biases`` their
    biases; ``dropout_p`` is 0 unless training. Checks what each call brings: the call's flags, the masks'
    dtypes and shapes, the inputs' agreement."""
    where = "multi_head_attention_forward"
    for name, flag in (
        ("need_weights", need_weights),
        ("average_attn_weights", average_attn_weights),
        ("is_causal", is_causal),
    ):
        check_bool(name, flag, where=where)
    dtype = query.dtype
    accumulate = accumulation_dtype(dtype)
    kpm = None if key_padding_mask is None else _check_mask_dtype("key_padding_mask", key_padding_mask, where)
    mask = None if attn_mask is None else _check_mask_dtype("attn_mask", attn_mask, where)
    is_batched = _check_mha_shapes(query, key, value, kpm, mask, num_heads, where)
    if not is_batched:  # (L, E) -> (L, 1, E); (S,) -> (1, S)
        query, key, value = query[:, None], key[:, None], value[:, None]
        kpm = None if kpm is None else kpm[None]
    tgt_len, bsz, embed_dim = query.shape
    src_len = key.shape[0]
    kpm = _additive_mask(kpm, dtype, masked_when=True)  # True = ignored, as torch's module
    if is_causal and mask is None:
        raise ValueError(
            f"{where}: is_causal=True needs attn_mask (it is a hint that attn_mask is causal); build one with "
            "layers.Transformer.generate_square_subsequent_mask(L)"
        )
    use_causal_kernel = is_causal and kpm is None and not need_weights
    if use_causal_kernel:
        mask = None  # torch drops the mask and lets SDPA apply its own causal one
    else:
        mask = _additive_mask(mask, dtype, masked_when=True)
    head_dim = embed_dim // num_heads
    if separate_projections:
        if key.shape[:2] != value.shape[:2]:
            raise ValueError(
                f"{where}: key's sequence and batch axes {key.shape[:2]} must match value's {value.shape[:2]}"
            )
    elif key.shape != value.shape:
        raise ValueError(f"{where}: key shape {key.shape} does not match value shape {value.shape}")
    q = linear_unchecked(query, projections[0], biases[0])  # (L, N, E)
    k = linear_unchecked(key, projections[1], biases[1])  # (S, N, E)
    v = linear_unchecked(value, projections[2], biases[2])  # (S, N, E)

    if mask is not None:
        if mask.ndim == 2:
            if mask.shape != (tgt_len, src_len):
                raise ValueError(f"{where}: the 2-D attn_mask has shape {mask.shape}, expected {(tgt_len, src_len)}")
            mask = mask[None]  # (L, S) -> (1, L, S)
        elif mask.shape != (bsz * num_heads, tgt_len, src_len):
            raise ValueError(
                f"{where}: the 3-D attn_mask has shape {mask.shape}, expected {(bsz * num_heads, tgt_len, src_len)}"
            )
    if bias_k is not None and bias_v is not None:
        if static_k is not None or static_v is not None:
            raise ValueError(f"{where}: bias_k / bias_v cannot be added to static_k / static_v")
        k = jnp.concatenate([k, jnp.broadcast_to(bias_k, (1, bsz, embed_dim))])  # (S+1, N, E)
        v = jnp.concatenate([v, jnp.broadcast_to(bias_v, (1, bsz, embed_dim))])
        mask, kpm = _pad_last(mask), _pad_last(kpm)

    q = jnp.swapaxes(q.reshape(tgt_len, bsz * num_heads, head_dim), 0, 1)  # (L, N, E) -> (N*H, L, hd)
    if static_k is None:
        k = jnp.swapaxes(k.reshape(k.shape[0], bsz * num_heads, head_dim), 0, 1)  # (S, N, E) -> (N*H, S, hd)
    else:
        k = static_k
        if k.shape[0] != bsz * num_heads or k.shape[2] != head_dim:
            raise ValueError(f"{where}: static_k must have shape ({bsz * num_heads}, S, {head_dim}), got {k.shape}")
    if static_v is None:
        v = jnp.swapaxes(v.reshape(v.shape[0], bsz * num_heads, head_dim), 0, 1)  # (S, N, E) -> (N*H, S, hd)
    else:
        v = static_v
        if v.shape[0] != bsz * num_heads or v.shape[2] != head_dim:
            raise ValueError(f"{where}: static_v must have shape ({bsz * num_heads}, S, {head_dim}), got {v.shape}")
    if add_zero_attn:
        zeros = jnp.zeros((bsz * num_heads, 1, head_dim), dtype)
        k = jnp.concatenate([k, zeros], axis=1)  # (N*H, S+1, hd)
        v = jnp.concatenate([v, zeros], axis=1)
        mask, kpm = _pad_last(mask), _pad_last(kpm)
    src_len = k.shape[1]

    if kpm is not None:
        if kpm.shape != (bsz, src_len):
            raise ValueError(f"{where}: key_padding_mask must have shape {(bsz, src_len)}, got {kpm.shape}")
        # (N, S) -> (N, 1, 1, S) -> (N, H, 1, S) -> (N*H, 1, S)
        kpm = jnp.broadcast_to(kpm[:, None, None, :], (bsz, num_heads, 1, src_len)).reshape(bsz * num_heads, 1, src_len)
        mask = kpm if mask is None else mask + kpm

    if need_weights:
        q_scaled = q * jnp.asarray(math.sqrt(1.0 / float(head_dim)), dtype)
        # torch.baddbmm(mask, q_scaled, k^T): (N*H, L, hd) @ (N*H, hd, S) -> (N*H, L, S), the mask added to the
        # sums before the one rounding.
        scores = jnp.matmul(q_scaled, jnp.swapaxes(k, -2, -1), preferred_element_type=accumulate)
        if mask is not None:
            scores = mask.astype(accumulate) + scores
        probabilities = softmax_unchecked(scores.astype(dtype), scores.ndim - 1)
        probabilities = _attention_dropout(probabilities, dropout_p, dropout_key, where)
        output = _matmul(probabilities, v)  # (N*H, L, hd)
        output = jnp.swapaxes(output, 0, 1).reshape(tgt_len * bsz, embed_dim)  # -> (L, N*H, hd) -> (L*N, E)
        output = linear_unchecked(output, out_proj_weight, out_proj_bias).reshape(tgt_len, bsz, -1)  # (L, N, E)
        attention = probabilities.reshape(bsz, num_heads, tgt_len, src_len)  # (N*H, L, S) -> (N, H, L, S)
        if average_attn_weights:
            attention = attention.mean(axis=1)  # (N, L, S)
        if not is_batched:
            output, attention = output[:, 0], attention[0]
        return output, attention
    if mask is not None:
        # (1, L, S) -> (1, 1, L, S); (N*H, L|1, S) -> (N, H, L|1, S)
        mask = mask[None] if mask.shape[0] == 1 else mask.reshape(bsz, num_heads, -1, src_len)
    q = q.reshape(bsz, num_heads, tgt_len, head_dim)  # (N*H, L, hd) -> (N, H, L, hd)
    k = k.reshape(bsz, num_heads, src_len, head_dim)
    v = v.reshape(bsz, num_heads, src_len, head_dim)
    output = scaled_dot_product_attention_unchecked(
        q, k, v, mask, dropout_p, use_causal_kernel, None, dropout_key
    )  # (N, H, L, hd)
    output = jnp.transpose(output, (2, 0, 1, 3)).reshape(bsz * tgt_len, embed_dim)  # (L, N, H, hd) -> (L*N, E)
    output = linear_unchecked(output, out_proj_weight, out_proj_bias).reshape(tgt_len, bsz, -1)  # (L, N, E)
    if not is_batched:
        output = output[:, 0]
    return output, None

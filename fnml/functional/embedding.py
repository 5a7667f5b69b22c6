"""Embedding lookup and its in-place max-norm renormalisation.

PyTorch equivalent: ``torch.nn.functional.embedding``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from fnml._validation import (
    check_bool,
    check_int,
    check_ndim,
    check_number,
)
from fnml.functional.ad_mode import param_writes_dropped

__all__ = ["embedding", "embedding_renorm"]


def _embedding_indices(input: Any, num_embeddings: int, where: str) -> jax.Array:
    indices = jnp.asarray(input)
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        raise TypeError(f"{where}: indices must be an integer array, got dtype {indices.dtype}")
    if not isinstance(indices, jax.core.Tracer) and indices.size:
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= num_embeddings:
            bad = low if low < 0 else high
            raise IndexError(
                f"{where}(num_embeddings={num_embeddings}): index {bad} is out of range [0, {num_embeddings - 1}]"
            )
    return indices


def _row_norms(rows: jax.Array, norm_type: float) -> jax.Array:
    """The ``norm_type``-norm of each row ``(..., D) -> (...)``, as torch's ``Tensor.norm(p)``."""
    magnitude = jnp.abs(rows)
    if norm_type == 2:
        return jnp.sqrt(jnp.sum(rows * rows, axis=-1))
    if norm_type == 1:
        return jnp.sum(magnitude, axis=-1)
    if math.isinf(norm_type):
        return jnp.max(magnitude, axis=-1)
    return jnp.sum(magnitude**norm_type, axis=-1) ** (1.0 / norm_type)


def _check_renorm_args(max_norm: Any, norm_type: Any, where: str) -> None:
    check_number("max_norm", max_norm, where=where)
    if not max_norm >= 0:
        raise ValueError(f"{where}: max_norm must be >= 0, got max_norm={max_norm!r}")
    check_number("norm_type", norm_type, where=where)
    if not norm_type > 0:
        raise ValueError(f"{where}: norm_type must be > 0 (a p-norm), got norm_type={norm_type!r}")


def embedding_renorm(weight: jax.Array, input: jax.Array, max_norm: float, norm_type: float = 2.0) -> jax.Array:
    """The weight with every row that ``input`` refers to rescaled to norm ``<= max_norm`` (a new array).

    PyTorch equivalent: ``torch.embedding_renorm_(weight, input, max_norm, norm_type)`` (in place there; here
    the renormalised weight is returned, torch's values).

    A referenced row whose ``norm_type``-norm exceeds ``max_norm`` is multiplied by
    ``max_norm / (norm + 1e-7)`` (torch's formula, the scale computed in float64 when x64 is on, as torch
    computes it in double); other rows are unchanged. No gradient flows through the renormalisation (torch
    runs it under ``no_grad``). Indices outside ``[0, num_embeddings)`` are ignored.

    >>> import numpy as np
    >>> w = jnp.array([[3.0, 4.0], [0.3, 0.4]])
    >>> print(np.asarray(embedding_renorm(w, jnp.array([0, 1]), max_norm=1.0)).round(4))
    [[0.6 0.8]
     [0.3 0.4]]
    """
    where = "embedding_renorm"
    _check_renorm_args(max_norm, norm_type, where)
    w = jnp.asarray(weight)
    check_ndim("weight", w.shape, (2,), where=where)
    indices = jnp.asarray(input)
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        raise TypeError(f"{where}: indices must be an integer array, got dtype {indices.dtype}")
    return embedding_renorm_unchecked(w, indices, max_norm, norm_type)


def embedding_renorm_unchecked(weight: jax.Array, indices: jax.Array, max_norm: float, norm_type: float) -> jax.Array:
    """:func:`embedding_renorm` of a 2-D ``weight`` and integer ``indices``, settings already checked."""
    w = lax.stop_gradient(weight)
    indices = indices.reshape(-1)  # (*) -> (M,)
    rows = jnp.take(w, indices, axis=0, mode="clip")  # (M,) -> (M, D)
    norms = _row_norms(rows, float(norm_type))  # (M,)
    wide = jax.dtypes.canonicalize_dtype(jnp.float64)
    scale = (max_norm / (norms.astype(wide) + 1e-7)).astype(w.dtype)
    scaled = jnp.where((norms > max_norm)[:, None], rows * scale[:, None], rows)
    # A repeated index writes the same row twice; out-of-range indices are dropped.
    return w.at[indices].set(scaled, mode="drop")


def embedding(
    input: jax.Array,
    weight: Any,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> jax.Array:
    """Look up rows of ``weight``: integer ``input (*)`` -> ``(*, embedding_dim)``.

    PyTorch equivalent: ``torch.nn.functional.embedding(input, weight, padding_idx=None, max_norm=None,
    norm_type=2.0, scale_grad_by_freq=False, sparse=False)``.

    - ``weight``: ``(num_embeddings, embedding_dim)``, an array or an ``nnx.Param`` (e.g. ``emb.weight``).
    - ``padding_idx``: rows looked up at that index get no gradient (their value is still returned).
    - ``max_norm``: torch first renormalises the referenced rows of ``weight`` IN PLACE (see
      :func:`embedding_renorm`), so later calls and the optimizer see the renormalised weight. fnml does the
      same when ``weight`` is an ``nnx.Param`` (its value is replaced; kept by eager code, ``nnx.jit`` and
      ``nnx.value_and_grad``, and by ``fnml.train``'s step, whose optimizer then updates the renormalised
      weight as torch's does). A plain array cannot be changed in place: that is a ``ValueError`` (use
      ``embedding_renorm`` and keep the returned weight). Inside ``fnml.train``'s evaluation step, which
      returns no parameters and would silently drop the write, it is a ``NotImplementedError``.
    - ``scale_grad_by_freq``: each row's gradient is divided by how often its index occurs in ``input``.
    - ``sparse=True`` is a ``ValueError``: JAX has dense gradients only (same values).
    - Out-of-range indices: an ``IndexError`` when ``input`` is concrete (as torch); when traced (inside
      ``jit``) the check cannot run and the rows come out as NaN (never a silently clamped row).

    >>> w = jnp.arange(6.0).reshape(3, 2)
    >>> print(embedding(jnp.array([[2, 0]]), w).round(4))
    [[[4. 5.]
      [0. 1.]]]
    """
    where = "embedding"
    from flax import nnx

    check_bool("scale_grad_by_freq", scale_grad_by_freq, where=where)
    check_bool("sparse", sparse, where=where)
    if sparse:
        raise ValueError(
            f"{where}: sparse=True (sparse gradients) has no JAX counterpart; JAX gradients are dense with the same "
            "values: use sparse=False"
        )
    variable = weight if isinstance(weight, nnx.Variable) else None
    w = jnp.asarray(variable[...] if variable is not None else weight)
    check_ndim("weight", w.shape, (2,), where=where)
    num_embeddings = w.shape[0]
    if padding_idx is not None:
        check_int("padding_idx", padding_idx, where=where)
        if not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(
                f"{where}: padding_idx must be within num_embeddings={num_embeddings} "
                f"(in [-{num_embeddings}, {num_embeddings - 1}]), got padding_idx={padding_idx}"
            )
        padding_idx = padding_idx % num_embeddings
    indices = _embedding_indices(input, num_embeddings, where)
    if max_norm is not None:
        _check_renorm_args(max_norm, norm_type, where)
        if variable is None:
            raise ValueError(
                f"{where}: max_norm renormalises the weight IN PLACE in torch (later lookups and the optimizer see "
                "the renormalised rows), and a JAX array cannot be changed in place: pass the nnx.Param itself "
                "(e.g. emb.weight, or use layers.Embedding(max_norm=...)), or call "
                "w = functional.embedding_renorm(w, input, max_norm, norm_type) and keep w"
            )
    table = w if variable is None else variable
    return embedding_unchecked(indices, table, padding_idx, max_norm, norm_type, scale_grad_by_freq)


def embedding_unchecked(
    indices: jax.Array,
    weight: Any,
    padding_idx: int | None,
    max_norm: float | None,
    norm_type: float,
    scale_grad_by_freq: bool,
) -> jax.Array:
    """:func:`embedding` of checked integer ``indices`` into a 2-D ``weight`` (an ``nnx.Param`` for
    ``max_norm``), settings checked and ``padding_idx`` non-negative (the layers' entry: they check once)."""
    where = "embedding"
    from flax import nnx

    variable = weight if isinstance(weight, nnx.Variable) else None
    w = variable[...] if variable is not None else weight
    num_embeddings = w.shape[0]
    if max_norm is not None:
        if param_writes_dropped():
            raise NotImplementedError(
                f"{where}: max_norm inside fnml's evaluation step (train.make_eval_step / fit's validation) would "
                "differ from torch silently: torch renormalises the weight in place even in eval mode, and this "
                "step returns no parameters to keep the write. Evaluate with model(x) outside the step (nnx.jit "
                "keeps the write), or use max_norm=None"
            )
        renormed = embedding_renorm_unchecked(w, indices, max_norm, norm_type)
        # Value: exactly the renormalised weight. Gradient: straight to ``weight``, as torch's no_grad renorm.
        w = renormed + (w - lax.stop_gradient(w))
        variable[...] = w
    valid = (indices >= 0) & (indices < num_embeddings)
    rows = jnp.take(w, jnp.where(valid, indices, 0), axis=0)  # (*) -> (*, embedding_dim)
    if jnp.issubdtype(rows.dtype, jnp.inexact):
        rows = jnp.where(valid[..., None], rows, jnp.asarray(jnp.nan, rows.dtype))  # only when traced
    if scale_grad_by_freq:
        counts = jnp.zeros((num_embeddings,), rows.dtype).at[indices.reshape(-1)].add(1, mode="drop")
        inverse = (1 / jnp.maximum(jnp.take(counts, indices, mode="clip"), 1))[..., None]  # (*, 1)
        frozen = lax.stop_gradient(rows)
        rows = frozen + (rows - frozen) * inverse  # value unchanged; gradient divided by the count
    if padding_idx is not None:
        rows = jnp.where((indices == padding_idx)[..., None], lax.stop_gradient(rows), rows)
    return rows

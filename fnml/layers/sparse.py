"""Embedding.

PyTorch equivalent: ``torch/nn/modules/sparse.py``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from fnml._validation import check_positive_int
from fnml.layers.base import (
    Module,
    _is_traced,
)

__all__ = ["Embedding"]


class Embedding(Module):
    """Lookup table ``weight[indices]`` with torch's N(0, 1) init and ``padding_idx`` semantics.

    PyTorch equivalent: ``torch.nn.Embedding(num_embeddings, embedding_dim, padding_idx=None)``.

    Shapes: integer ``indices: (*)`` -> ``(*, embedding_dim)``. ``weight`` is ``(num_embeddings,
    embedding_dim)`` ~ N(0, 1) (flax's ``nnx.Embed``: std 1/sqrt(features)). With ``padding_idx``, that
    row is initialised to zeros and receives NO gradient (flax has no such option). Out-of-range indices
    raise eagerly (outside jit); inside jit JAX clamps them instead of raising.

    Example::

        emb = Embedding(10, 3, padding_idx=0, rngs=nnx.Rngs(0))
        y = emb(jnp.array([[0, 2], [4, 9]]))    # (2, 2, 3)
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        *,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        where = "Embedding"
        check_positive_int("num_embeddings", num_embeddings, where=where)
        check_positive_int("embedding_dim", embedding_dim, where=where)
        if padding_idx is not None:
            if not isinstance(padding_idx, int) or isinstance(padding_idx, bool):
                raise TypeError(f"{where}: padding_idx must be an int or None, got padding_idx={padding_idx!r}")
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(
                    f"{where}: padding_idx must be within num_embeddings={num_embeddings} "
                    f"(in [-{num_embeddings}, {num_embeddings - 1}]), got padding_idx={padding_idx}"
                )
            padding_idx = padding_idx % num_embeddings  # torch stores the non-negative index
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        # Drawn flat then reshaped (faster to compile on CPU, as in torch_uniform).
        weight = jax.random.normal(rngs.params(), (num_embeddings * embedding_dim,), param_dtype)
        weight = weight.reshape(num_embeddings, embedding_dim)  # (E * D,) -> (E, D)
        if padding_idx is not None:
            weight = weight.at[padding_idx].set(0)
        self.weight = nnx.Param(weight)

    def __call__(self, indices: jax.Array) -> jax.Array:
        indices = jnp.asarray(indices)
        if not jnp.issubdtype(indices.dtype, jnp.integer):
            raise TypeError(f"Embedding: indices must be an integer array, got dtype {indices.dtype}")
        if not _is_traced(indices) and indices.size:
            low, high = int(indices.min()), int(indices.max())
            if low < 0 or high >= self.num_embeddings:
                bad = low if low < 0 else high
                raise IndexError(
                    f"Embedding(num_embeddings={self.num_embeddings}): index {bad} is out of range "
                    f"[0, {self.num_embeddings - 1}]"
                )
        rows = jnp.take(self.weight[...], indices, axis=0)  # (*) -> (*, embedding_dim)
        if self.padding_idx is not None:
            # The padding row contributes to the output but gets no gradient, as in torch.
            is_padding = (indices == self.padding_idx)[..., None]
            rows = jnp.where(is_padding, lax.stop_gradient(rows), rows)
        return rows

    def extra_repr(self) -> str:
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        return text

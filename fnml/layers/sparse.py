"""Embedding.

PyTorch equivalent: ``torch/nn/modules/sparse.py``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from fnml._validation import check_bool, check_ndim, check_number, check_positive_int
from fnml.functional.embedding import embedding_unchecked
from fnml.layers._facts import LayerCall, TorchFacts, same_name_slots
from fnml.layers.base import Module, freeze

__all__ = ["Embedding"]


def _check_padding_idx(padding_idx: Any, num_embeddings: int, where: str) -> int | None:
    """torch's check, and its storage of a negative ``padding_idx`` as the non-negative index."""
    if padding_idx is None:
        return None
    if not isinstance(padding_idx, int) or isinstance(padding_idx, bool):
        raise TypeError(f"{where}: padding_idx must be an int or None, got padding_idx={padding_idx!r}")
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(
            f"{where}: padding_idx must be within num_embeddings={num_embeddings} "
            f"(in [-{num_embeddings}, {num_embeddings - 1}]), got padding_idx={padding_idx}"
        )
    return padding_idx % num_embeddings


def _check_options(max_norm: Any, norm_type: Any, scale_grad_by_freq: Any, sparse: Any, where: str) -> None:
    if max_norm is not None:
        check_number("max_norm", max_norm, where=where)
        if not max_norm >= 0:
            raise ValueError(f"{where}: max_norm must be >= 0, got max_norm={max_norm!r}")
    check_number("norm_type", norm_type, where=where)
    if not norm_type > 0:
        raise ValueError(f"{where}: norm_type must be > 0 (a p-norm), got norm_type={norm_type!r}")
    check_bool("scale_grad_by_freq", scale_grad_by_freq, where=where)
    check_bool("sparse", sparse, where=where)
    if sparse:
        raise ValueError(
            f"{where}: sparse=True (sparse gradients) has no JAX counterpart; JAX gradients are dense with the same "
            "values: use sparse=False"
        )


class Embedding(Module):
    """Lookup table ``weight[indices]`` with torch's N(0, 1) init, ``padding_idx``, ``max_norm`` semantics.

    PyTorch equivalent: ``torch.nn.Embedding(num_embeddings, embedding_dim, padding_idx=None, max_norm=None,
    norm_type=2.0, scale_grad_by_freq=False, sparse=False)``.

    Shapes: integer ``indices: (*)`` -> ``(*, embedding_dim)``; ``weight``: ``nnx.Param`` ``(num_embeddings,
    embedding_dim)`` ~ N(0, 1) (torch's name and layout; flax's ``nnx.Embed`` draws std 1/sqrt(features)).
    The call is :func:`fnml.functional.embedding` on ``self.weight``:

    - ``padding_idx``: that row starts at zeros and receives NO gradient (flax has no such option);
    - ``max_norm``: before the lookup the referenced rows of ``weight`` are renormalised IN PLACE to norm
      ``<= max_norm`` (``norm_type``-norm), as torch does, so the next call and the optimizer see the
      renormalised weight. Faithful in eager code and under ``nnx.jit`` / ``nnx.value_and_grad`` +
      ``nnx.Optimizer`` (which keep the write). fnml's pure training step (``train.make_train_step``,
      ``fit``, ``parity.compare_training``) takes the next parameters from the optimizer and would drop the
      write: there the call raises ``NotImplementedError`` instead of silently differing;
    - ``scale_grad_by_freq``: each row's gradient divided by its index's count in the batch;
    - ``sparse=True`` is refused (JAX gradients are dense; the values are the same);
    - out-of-range indices: ``IndexError`` when the indices are concrete (torch raises too); under ``jit``
      the check cannot run and the rows of out-of-range indices (negative ones included) are NaN, never a
      silently clamped or wrapped row.

    >>> from flax import nnx
    >>> emb = Embedding(10, 3, padding_idx=0, rngs=nnx.Rngs(0))
    >>> emb(jnp.array([[0, 2], [4, 9]])).shape
    (2, 2, 3)
    >>> print(emb)
    Embedding(10, 3, padding_idx=0)
    """

    torch_facts = TorchFacts(
        "Embedding",
        slots=same_name_slots("weight"),
        layout="torch",
        settings=(
            "num_embeddings",
            "embedding_dim",
            "padding_idx",
            "max_norm",
            "norm_type",
            "scale_grad_by_freq",
            "sparse",
        ),
        capture=LayerCall(("aten.embedding",), "embedding"),
        autocast=False,
    )

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        *,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        where = "Embedding"
        check_positive_int("num_embeddings", num_embeddings, where=where)
        check_positive_int("embedding_dim", embedding_dim, where=where)
        padding_idx = _check_padding_idx(padding_idx, num_embeddings, where)
        _check_options(max_norm, norm_type, scale_grad_by_freq, sparse, where)
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq
        self.sparse = sparse
        # Drawn flat then reshaped (faster to compile on CPU, as in torch_uniform).
        weight = jax.random.normal(rngs.params(), (num_embeddings * embedding_dim,), param_dtype)
        weight = weight.reshape(num_embeddings, embedding_dim)  # (E * D,) -> (E, D)
        if padding_idx is not None:
            weight = weight.at[padding_idx].set(0)
        self.weight = nnx.Param(weight)

    @classmethod
    def from_pretrained(
        cls,
        embeddings: Any,
        freeze: bool = True,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
    ) -> Embedding:
        """An Embedding holding ``embeddings`` ``(num_embeddings, embedding_dim)`` as its weight.

        PyTorch equivalent: ``torch.nn.Embedding.from_pretrained(embeddings, freeze=True, padding_idx=None,
        max_norm=None, norm_type=2.0, scale_grad_by_freq=False, sparse=False)``.

        ``freeze=True`` (torch's default) marks the weight frozen (:func:`fnml.layers.freeze`: no gradient,
        no optimizer update). As in torch the ``padding_idx`` row is kept as given (not zeroed).

        >>> emb = Embedding.from_pretrained(jnp.array([[1.0, 2.0], [3.0, 4.0]]))
        >>> print(emb(jnp.array([1])))
        [[3. 4.]]
        """
        where = "Embedding.from_pretrained"
        check_bool("freeze", freeze, where=where)
        weight = jnp.asarray(embeddings)
        check_ndim("embeddings", weight.shape, (2,), where=where)
        if not jnp.issubdtype(weight.dtype, jnp.floating):
            raise TypeError(f"{where}: embeddings must be a floating-point array, got dtype {weight.dtype}")
        rows, dim = weight.shape
        module = cls(
            rows,
            dim,
            padding_idx,
            max_norm,
            norm_type,
            scale_grad_by_freq,
            sparse,
            param_dtype=weight.dtype,
            rngs=nnx.Rngs(0),
        )
        module.weight = nnx.Param(weight)
        return _freeze(module) if freeze else module

    def __call__(self, indices: jax.Array) -> jax.Array:
        indices = jnp.asarray(indices)
        if not jnp.issubdtype(indices.dtype, jnp.integer):
            raise TypeError(f"Embedding: indices must be an integer array, got dtype {indices.dtype}")
        if not isinstance(indices, jax.core.Tracer) and indices.size:
            low, high = int(indices.min()), int(indices.max())
            if low < 0 or high >= self.num_embeddings:
                bad = low if low < 0 else high
                raise IndexError(
                    f"Embedding(num_embeddings={self.num_embeddings}): index {bad} is out of range "
                    f"[0, {self.num_embeddings - 1}]"
                )
        # Settings checked at construction, indices just above: the functional core checks neither again.
        return embedding_unchecked(
            indices, self.weight, self.padding_idx, self.max_norm, self.norm_type, self.scale_grad_by_freq
        )

    def extra_repr(self) -> str:
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            text += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            text += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq is not False:
            text += f", scale_grad_by_freq={self.scale_grad_by_freq}"
        if self.sparse is not False:
            text += ", sparse=True"
        return text


_freeze = freeze  # from_pretrained's ``freeze`` argument shadows the function's name inside it

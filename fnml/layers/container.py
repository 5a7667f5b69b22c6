"""Containers (Sequential, ...) and shape layers (Flatten, ...).

PyTorch equivalent: ``torch/nn/modules/container.py``, ``flatten.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from fnml.layers.base import (
    Module,
    _normalize_dim,
)

__all__ = ["Flatten", "Sequential"]


# --------------------------------------------------------------------------------------------------
# Containers and the tutorial model
# --------------------------------------------------------------------------------------------------


class Sequential(Module):
    """Apply layers in order; indexable, sliceable, iterable and sized like torch's.

    PyTorch equivalent: ``torch.nn.Sequential(*layers)``.

    Children live in the attribute ``layers`` (an ``nnx.List``); child ``i``'s torch state_dict prefix is
    ``"i."`` (``fnml.interop`` drops the ``layers`` path component). ``seq[i]`` is a layer, ``seq[a:b]``
    a new Sequential sharing those layers, ``len(seq)`` and ``for layer in seq`` work as in torch.
    Difference: a slice renumbers its children from 0 (torch keeps the original names, ``(5): ...``).
    Children must be modules, as in torch (wrap functions: ``ReLU()`` rather than ``jax.nn.relu``).

    Example::

        model = Sequential(Linear(2, 4, rngs=rngs), ReLU(), Linear(4, 1, rngs=rngs))
        model[0].kernel.shape     # (2, 4)
    """

    def __init__(self, *layers: nnx.Module):
        for index, layer in enumerate(layers):
            if not isinstance(layer, nnx.Module):
                raise TypeError(
                    f"Sequential: layer {index} must be a module (e.g. layers.ReLU() rather than "
                    f"jax.nn.relu), got {type(layer).__name__}"
                )
        self.layers = nnx.List(layers)

    def __call__(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer(x)
        return x

    def __len__(self) -> int:
        return len(self.layers)

    def _torch_children(self) -> list[tuple[str, Any]]:
        """Children as torch names them: ``"0"``, ``"1"``, ..."""
        return [(str(index), layer) for index, layer in enumerate(self.layers)]

    def __iter__(self) -> Iterator[nnx.Module]:
        return iter(self.layers)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return Sequential(*list(self.layers)[index])
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"Sequential indices must be int or slice, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"Sequential: index {index} is out of range for {len(self)} layers")
        return self.layers[index]


class Flatten(Module):
    """Flatten axes ``start_dim..end_dim`` into one.

    PyTorch equivalent: ``torch.nn.Flatten(start_dim=1, end_dim=-1)``.

    Flattens in the array's own order: after an NHWC conv stack that is (H, W, C), whereas torch
    flattens (C, H, W); ``fnml.interop`` permutes the next Linear's weight accordingly.

    Example::

        Flatten()(jnp.ones((8, 7, 7, 64))).shape     # (8, 3136)
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        for name, value in (("start_dim", start_dim), ("end_dim", end_dim)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Flatten: {name} must be an int, got {name}={value!r}")
        self.start_dim = start_dim
        self.end_dim = end_dim

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        ndim = max(x.ndim, 1)
        start = _normalize_dim(self.start_dim, ndim, "Flatten")
        end = _normalize_dim(self.end_dim, ndim, "Flatten")
        if start > end:
            raise ValueError(
                f"Flatten: start_dim={self.start_dim} must not come after end_dim={self.end_dim} for a {x.ndim}-D input"
            )
        shape = x.shape if x.ndim else (1,)
        # (..., d_start, ..., d_end, ...) -> (..., d_start * ... * d_end, ...)
        return x.reshape(shape[:start] + (math.prod(shape[start : end + 1]),) + shape[end + 1 :])

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

"""Dropout, channel-wise dropout and alpha dropout; masks from an explicit ``jax.random`` key.

PyTorch equivalent: ``torch.nn.functional.dropout`` / ``dropout1d`` / ``dropout2d`` / ``alpha_dropout``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import jax
import jax.numpy as jnp

from fnml._validation import (
    check_bool,
    check_key,
    check_number,
)
from fnml.functional._shared import as_float_input

__all__ = ["alpha_dropout", "dropout", "dropout1d", "dropout2d"]


# One dropout: the layers (Dropout, Dropout1d/2d, AlphaDropout, the recurrent layers' inter-layer dropout) check
# their settings once, draw a key and call the ``*_unchecked`` cores below; the public ops check, then call the
# same cores. Masks come from ``jax.random.bernoulli(key, 1 - p, noise_shape)``: same key, same mask. They cannot
# equal torch's masks (different generators); everything else does.


def _dropout_args(input: Any, p: Any, training: Any, inplace: Any, key: Any, where: str) -> jax.Array:
    check_number("p", p, where=where)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{where}: dropout probability has to be between 0 and 1, but got p={p}")
    check_bool("training", training, where=where)
    check_bool("inplace", inplace, where=where)
    if key is not None:
        check_key("key", key, where=where)
    return as_float_input(input, where)


def _needs_key(key: Any, where: str) -> Any:
    if key is None:
        raise ValueError(
            f"{where}: training=True needs random numbers: pass key=jax.random.key(seed) (a fresh key per call), "
            "or training=False for the identity"
        )
    return key


def _masked(x: jax.Array, p: float, key: Any, noise_shape: tuple[int, ...]) -> jax.Array:
    """torch's ``input * (mask / (1 - p))``, the mask ``(noise_shape)`` broadcast over ``x``."""
    keep = jax.random.bernoulli(key, 1.0 - p, noise_shape)
    # torch multiplies by mask / (1 - p) (not x / (1 - p)): same rounding.
    scale = jnp.asarray(1.0 / (1.0 - p), x.dtype)
    return x * (keep.astype(x.dtype) * scale)


def dropout(
    input: jax.Array, p: float = 0.5, training: bool = True, inplace: bool = False, *, key: jax.Array | None = None
) -> jax.Array:
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)`` when ``training``.

    PyTorch equivalent: ``torch.nn.functional.dropout(input, p=0.5, training=True, inplace=False)``.

    ``y = x * (mask / (1 - p))``, ``mask ~ Bernoulli(1 - p)`` drawn from ``key`` (keyword-only, a
    ``jax.random.key``; the same key gives the same mask; training without a key is a ``ValueError``).
    ``training=False``, ``p=0`` or an empty input: the input itself (exact identity). ``p=1``: ``x * 0``
    (zeros, NaN/inf propagate as in torch). ``inplace`` is accepted and ignored (JAX arrays are immutable).

    >>> x = jnp.ones((2, 4))
    >>> y = dropout(x, 0.5, key=jax.random.key(0))
    >>> sorted(set(y.ravel().tolist()))
    [0.0, 2.0]
    >>> bool((dropout(x, 0.5, training=False) == x).all())
    True
    """
    x = _dropout_args(input, p, training, inplace, key, "dropout")
    return dropout_unchecked(x, p, training, key)


def dropout_unchecked(x: jax.Array, p: float, training: bool, key: Any) -> jax.Array:
    """:func:`dropout` of a floating ``x`` with ``p`` / ``training`` already checked (the layers' entry)."""
    if not training or p == 0.0 or x.size == 0:
        return x
    if p == 1.0:
        return x * jnp.zeros_like(x)  # torch: input * 0 (keeps NaN/inf propagation)
    return _masked(x, float(p), _needs_key(key, "dropout"), x.shape)


def _feature_dropout(x: jax.Array, p: float, training: bool, key: Any, channel_axis: int, where: str) -> jax.Array:
    """torch's feature (channel-wise) dropout: one mask entry per (sample, channel), broadcast over the rest."""
    if not training or p == 0.0 or x.size == 0:
        return x
    if p == 1.0:
        return x * jnp.zeros_like(x)
    # (N, C, *spatial) -> noise (N, C, 1, ...); channels-last (N, *spatial, C) -> noise (N, 1, ..., C)
    noise_shape = tuple(size if axis in (0, channel_axis) else 1 for axis, size in enumerate(x.shape))
    return _masked(x, float(p), _needs_key(key, where), noise_shape)


def dropout1d(
    input: jax.Array,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    key: jax.Array | None = None,
    channels_last: bool = False,
) -> jax.Array:
    """Zero whole channels (each a 1-D sequence) with probability ``p``, scale the rest by ``1 / (1 - p)``.

    PyTorch equivalent: ``torch.nn.functional.dropout1d(input, p=0.5, training=True, inplace=False)``.

    Input: torch's ``(N, C, L)`` or unbatched ``(C, L)``; with ``channels_last=True`` fnml's ``(N, L, C)``
    / ``(L, C)``. One Bernoulli(1 - p) draw per (sample, channel) from ``key``, broadcast along ``L``.
    Other ranks are a ``ValueError``; ``training=False`` / ``p=0`` are the exact identity, as :func:`dropout`.

    >>> y = dropout1d(jnp.ones((1, 4, 3)), 0.5, key=jax.random.key(0))   # (N, C, L)
    >>> all(len(set(row.tolist())) == 1 for row in y[0])   # each channel all kept (2.0) or all dropped (0.0)
    True
    """
    where = "dropout1d"
    x = _dropout_args(input, p, training, inplace, key, where)
    check_bool("channels_last", channels_last, where=where)
    return dropout1d_unchecked(x, p, training, key, channels_last=channels_last)


def dropout1d_unchecked(x: jax.Array, p: float, training: bool, key: Any, *, channels_last: bool) -> jax.Array:
    """:func:`dropout1d` of a floating ``x``, settings already checked; checks the input's rank (the layers' entry)."""
    where = "dropout1d"
    if x.ndim not in (2, 3):
        layout = "(N, L, C) or (L, C)" if channels_last else "(N, C, L) or (C, L)"
        raise ValueError(
            f"{where}: expected a 2-D or 3-D input {layout} (channel-wise dropout over 1 spatial dimension), "
            f"got a {x.ndim}-D input of shape {x.shape}"
        )
    batched = x[None] if x.ndim == 2 else x  # (C, L) -> (1, C, L) as torch does
    y = _feature_dropout(batched, p, training, key, 2 if channels_last else 1, where)
    return y[0] if x.ndim == 2 else y


def dropout2d(
    input: jax.Array,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    key: jax.Array | None = None,
    channels_last: bool = False,
) -> jax.Array:
    """Zero whole channels (each a 2-D feature map) with probability ``p``, scale the rest by ``1 / (1 - p)``.

    PyTorch equivalent: ``torch.nn.functional.dropout2d(input, p=0.5, training=True, inplace=False)``.

    Input: torch's ``(N, C, H, W)``; with ``channels_last=True`` fnml's ``(N, H, W, C)`` (fnml's conv
    layout). One Bernoulli(1 - p) draw per (sample, channel) from ``key``, broadcast over ``H, W``. A 3-D
    input is treated as torch treats it, ``(N, C, L)`` (channels-last ``(N, L, C)``) channel-wise 1-D
    dropout, with torch's warning; other ranks are a ``ValueError`` (torch: a deprecation warning).

    >>> y = dropout2d(jnp.ones((1, 2, 2, 3)), 0.5, key=jax.random.key(1), channels_last=True)   # (N, H, W, C)
    >>> y[0, :, :, 0].tolist() in ([[2.0, 2.0], [2.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]])
    True
    """
    where = "dropout2d"
    x = _dropout_args(input, p, training, inplace, key, where)
    check_bool("channels_last", channels_last, where=where)
    return dropout2d_unchecked(x, p, training, key, channels_last=channels_last, stacklevel=3)


def dropout2d_unchecked(
    x: jax.Array, p: float, training: bool, key: Any, *, channels_last: bool, stacklevel: int = 2
) -> jax.Array:
    """:func:`dropout2d` of a floating ``x``, settings already checked; checks the input's rank (the layers' entry)."""
    where = "dropout2d"
    if x.ndim not in (3, 4):
        layout = "(N, H, W, C)" if channels_last else "(N, C, H, W)"
        raise ValueError(
            f"{where}: expected a 4-D input {layout} (or torch's 3-D (N, C, L) form), "
            f"got a {x.ndim}-D input of shape {x.shape}; use dropout for element-wise dropout"
        )
    if x.ndim == 3:
        warnings.warn(
            "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D dropout behavior is "
            "desired - input is interpreted as shape (N, C, L) ((N, L, C) with channels_last=True), as torch "
            "does. To maintain the 1D channel-wise dropout behavior, please switch to using dropout1d instead.",
            UserWarning,
            stacklevel=stacklevel,
        )
    return _feature_dropout(x, p, training, key, x.ndim - 1 if channels_last else 1, where)


# torch's SELU-derived alpha dropout constant: -selu_scale * selu_alpha (aten/src/ATen/native/Dropout.cpp).
_ALPHA_DROPOUT_ALPHA = 1.7580993408473766


def alpha_dropout(
    input: jax.Array, p: float = 0.5, training: bool = False, inplace: bool = False, *, key: jax.Array | None = None
) -> jax.Array:
    """Dropout for SELU networks: keeps zero mean and unit variance of a standard-normal input.

    PyTorch equivalent: ``torch.nn.functional.alpha_dropout(input, p=0.5, training=False, inplace=False)``
    (note torch's default ``training=False`` here).

    Dropped elements are set to SELU's negative saturation ``-alpha'`` (``alpha' = 1.7581``), then
    ``y = a * x_masked + b`` with ``a = 1 / sqrt((alpha'^2 p + 1)(1 - p))`` and ``b = a alpha' p`` chosen so
    that mean and variance are preserved; computed in torch's order (``noise = mask * a``,
    ``b = (mask - 1) * alpha' a + alpha' a p``, ``y = x * noise + b``). ``p=1``: ``x * 0``. The mask is one
    Bernoulli(1 - p) per element from ``key`` (required when training).

    >>> y = alpha_dropout(jnp.zeros(1000), 0.5, training=True, key=jax.random.key(0))
    >>> sorted({round(v, 4) for v in y.tolist()})
    [-0.7792, 0.7792]
    """
    x = _dropout_args(input, p, training, inplace, key, "alpha_dropout")
    return alpha_dropout_unchecked(x, p, training, key)


def alpha_dropout_unchecked(x: jax.Array, p: float, training: bool, key: Any) -> jax.Array:
    """:func:`alpha_dropout` of a floating ``x`` with ``p`` / ``training`` already checked (the layers' entry)."""
    if not training or p == 0.0 or x.size == 0:
        return x
    if p == 1.0:
        return x * jnp.zeros_like(x)
    p = float(p)
    keep = jax.random.bernoulli(_needs_key(key, "alpha_dropout"), 1.0 - p, x.shape).astype(x.dtype)
    alpha = _ALPHA_DROPOUT_ALPHA
    a = 1.0 / math.sqrt((alpha * alpha * p + 1) * (1 - p))
    b = (keep - 1) * jnp.asarray(alpha * a, x.dtype) + jnp.asarray(alpha * a * p, x.dtype)
    return x * (keep * jnp.asarray(a, x.dtype)) + b

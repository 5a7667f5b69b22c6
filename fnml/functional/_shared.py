"""Helpers the ops and the layers share: setting tuples, the channels-last layout, dtype rules.

Internal to fnml (the layers import these by name); not part of the public API.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from fnml._validation import (
    check_ndim,
    check_pair,
)


def as_float_array(name: str, value: Any, where: str) -> jax.Array:
    """``value`` as a floating-point jax array (TypeError for integer / bool data)."""
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise TypeError(f"{where}: {name} must be a floating-point array, got dtype {array.dtype}")
    return array


def accumulation_dtype(dtype: Any) -> Any:
    """The dtype products are summed in: float32 for bfloat16/float16 operands, else the operands' own.

    torch's CPU kernels (and so its autocast) accumulate half-precision matmuls and convolutions in float32
    and add the bias before the single rounding to the half-precision result; XLA would round the product
    first and add the bias in half precision (two roundings).
    """
    return jnp.float32 if jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)) else dtype


# Layout: every image op below works on channels-last (N, *spatial, C) inside; torch's (N, C, *spatial) is
# moved to channels-last on entry and back on exit, so the choice of layout is made here, once.
_LAYOUT_NAMES = {(1, False): "NCL", (1, True): "NLC", (2, False): "NCHW", (2, True): "NHWC"}


def layout_name(spatial: int, channels_last: bool) -> str:
    return _LAYOUT_NAMES[(spatial, channels_last)]


def ntuple(name: str, value: Any, spatial: int, *, where: str, minimum: int = 1) -> tuple[int, ...]:
    """An int or a tuple of ``spatial`` ints, each >= ``minimum`` (torch's ``_single`` / ``_pair``)."""
    if isinstance(value, (tuple, list)) and len(value) != spatial:
        raise ValueError(f"{where}: {name} must be an int or a tuple of {spatial} ints, got {name}={value!r}")
    return check_pair(name, value, n=spatial, minimum=minimum, where=where)


def channels_last_batched(input: Any, spatial: int, channels_last: bool, *, where: str) -> tuple[jax.Array, bool]:
    """(N, C, *S) / (C, *S) (or channels-last) -> (N, *S, C), and whether the input was unbatched."""
    x = jnp.asarray(input)
    layout = layout_name(spatial, channels_last)
    unbatched_layout = layout.replace("N", "", 1)
    check_ndim(
        "input", x.shape, (spatial + 1, spatial + 2), where=f"{where} ({layout} or unbatched {unbatched_layout})"
    )
    unbatched = x.ndim == spatial + 1
    if unbatched:
        x = x[None]  # (*S, C) / (C, *S) -> (1, ...)
    if not channels_last:
        x = jnp.moveaxis(x, 1, -1)  # (N, C, *S) -> (N, *S, C)
    return x, unbatched


def restore_layout(y: jax.Array, unbatched: bool, channels_last: bool) -> jax.Array:
    """(N, *S, C) -> the caller's layout (torch's (N, C, *S) unless ``channels_last``), unbatched again."""
    if not channels_last:
        y = jnp.moveaxis(y, -1, 1)  # (N, *S, C) -> (N, C, *S)
    return y[0] if unbatched else y


def as_2d(x: jax.Array, spatial: int) -> jax.Array:
    """1-d ops run as 2-d ops over a unit height: (N, L, C) -> (N, 1, L, C)."""
    return x[:, None] if spatial == 1 else x


def from_2d(y: jax.Array, spatial: int) -> jax.Array:
    return y[:, 0] if spatial == 1 else y  # (N, 1, L, C) -> (N, L, C)


def lift_2d(values: tuple[int, ...], spatial: int, unit: int) -> tuple[int, int]:
    """A 1-d setting (k,) becomes (unit, k) for the unit height axis."""
    return (unit, values[0]) if spatial == 1 else (values[0], values[1])


def as_float_input(input: Any, where: str) -> jax.Array:
    x = jnp.asarray(input)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        raise TypeError(f"{where}: input must be a floating-point array, got dtype {x.dtype}")
    return x


def common_dtype(*arrays: jax.Array | None) -> Any:
    return jnp.result_type(*(a for a in arrays if a is not None))


def to_channels_last(x: jax.Array, channels_last: bool) -> jax.Array:
    # (N, C, *spatial) -> (N, *spatial, C); a pure transpose (bit-exact).
    return x if channels_last else jnp.moveaxis(x, 1, -1)


def from_channels_last(y: jax.Array, channels_last: bool) -> jax.Array:
    # (N, *spatial, C) -> (N, C, *spatial)
    return y if channels_last else jnp.moveaxis(y, -1, 1)


def channel_count(x: jax.Array, channels_last: bool, where: str, *, min_ndim: int = 2) -> int:
    if x.ndim < min_ndim:
        layout = "(N, *, C)" if channels_last else "(N, C, *)"
        raise ValueError(f"{where}: expected an input of at least {min_ndim} dimensions {layout}, got shape {x.shape}")
    return x.shape[-1] if channels_last else x.shape[1]

"""Constant, reflect, replicate and circular padding with torch's flat pad tuple.

PyTorch equivalent: ``torch.nn.functional.pad``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fnml._validation import (
    check_bool,
    check_choice,
    check_number,
)

__all__ = ["pad"]


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _pad_tuple(pad_arg: Any, where: str) -> tuple[int, ...]:
    """torch's flat pad tuple (last dim first), checked: ints, an even count."""
    if not isinstance(pad_arg, (tuple, list)) or not all(
        isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in pad_arg
    ):
        raise TypeError(f"{where}: pad must be a tuple of ints (last dimension first), got pad={pad_arg!r}")
    if len(pad_arg) % 2:
        raise ValueError(f"{where}: the pad length must be divisible by 2, got pad={tuple(pad_arg)}")
    return tuple(int(p) for p in pad_arg)


def _pad_widths(pad_arg: tuple[int, ...], ndim: int, channels_last: bool, mode: str) -> list[tuple[int, int]]:
    """A checked pad tuple as (before, after) per axis of an ``ndim``-D input (checks it fits the input)."""
    where = "pad"
    pairs = len(pad_arg) // 2
    padded_axes = ndim - 1 if channels_last else ndim
    if pairs > padded_axes:
        raise ValueError(
            f"{where}: pad={tuple(pad_arg)} pads {pairs} dimensions but the input has {ndim}"
            + (" (channels_last: the last axis is never padded)" if channels_last else "")
        )
    if mode != "constant":
        if not (pairs <= 3 and ndim in (pairs + 1, pairs + 2)):
            raise ValueError(
                f"pad: mode={mode!r} pads the last 1, 2 or 3 spatial dimensions of a batched or unbatched input "
                f"(2-D/3-D input for 2 values, 3-D/4-D for 4, 4-D/5-D for 6), got pad={tuple(pad_arg)} for a "
                f"{ndim}-D input"
            )
    widths = [(0, 0)] * ndim
    last = ndim - 2 if channels_last else ndim - 1  # the last padded axis
    for i in range(pairs):
        widths[last - i] = (int(pad_arg[2 * i]), int(pad_arg[2 * i + 1]))
    return widths


def pad(
    input: Any, pad: Sequence[int], mode: str = "constant", value: float | None = None, *, channels_last: bool = False
) -> jax.Array:
    """Pad (or, with negative values, crop) the trailing dimensions, torch's pad-tuple order and modes.

    PyTorch equivalent: ``torch.nn.functional.pad(input, pad, mode="constant", value=None)``.

    ``pad`` lists (before, after) pairs starting from the LAST dimension, as torch:
    ``(left, right)`` pads the last axis, ``(left, right, top, bottom)`` the last two. Modes:
    ``"constant"`` (``value``, default 0; any rank; negative values crop), ``"reflect"`` (mirror without
    repeating the edge; each pad must be smaller than that dimension), ``"replicate"`` (repeat the edge),
    ``"circular"`` (wrap around; each pad at most the dimension). The non-constant modes pad the last 1,
    2 or 3 spatial dimensions of a batched or unbatched input, as torch. With ``channels_last=True`` the
    last axis is the channel axis and is skipped: ``pad=(left, right, top, bottom)`` pads W and H of an
    NHWC image, i.e. the same numbers as torch on the NCHW image.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.pad(jnp.array([[[1.0, 2.0, 3.0]]]), (2, 1), mode="reflect").tolist()
    [[[3.0, 2.0, 1.0, 2.0, 3.0, 2.0]]]
    """
    where = "pad"
    check_choice("mode", mode, tuple(_PAD_MODES), where=where)
    check_bool("channels_last", channels_last, where=where)
    pad_arg = _pad_tuple(pad, where)
    if mode == "constant":
        fill = 0.0 if value is None else check_number("value", value, where=where)
    elif value is not None and value != 0:
        raise ValueError(f"pad: mode={mode!r} does not take a value argument, got value={value!r}")
    else:
        fill = 0.0
    return pad_unchecked(jnp.asarray(input), pad_arg, mode, fill, channels_last=channels_last)


def pad_unchecked(x: jax.Array, pad: tuple[int, ...], mode: str, value: float, *, channels_last: bool) -> jax.Array:
    """:func:`pad` with its settings already checked (the layers' entry); checks only that ``pad`` fits ``x``.

    ``pad`` is a tuple of an even number of ints, ``mode`` one of torch's, ``value`` the fill (constant mode).
    """
    widths = _pad_widths(pad, x.ndim, channels_last, mode)
    if mode == "constant":
        # lax.pad takes negative widths (crops) directly.
        return lax.pad(x, jnp.asarray(value, x.dtype), [(before, after, 0) for before, after in widths])
    for axis, (before, after) in enumerate(widths):
        size = x.shape[axis]
        if mode == "reflect" and max(before, after) >= size:
            raise ValueError(
                f"pad: mode='reflect' needs each padding smaller than the dimension it pads, got padding "
                f"({before}, {after}) for axis {axis} of size {size} (input shape {x.shape})"
            )
        if mode == "circular" and max(before, after) > size:
            raise ValueError(
                f"pad: mode='circular' needs each padding at most the dimension it pads (it would wrap around "
                f"more than once), got padding ({before}, {after}) for axis {axis} of size {size}"
            )
    positive = [(max(b, 0), max(a, 0)) for b, a in widths]
    if mode == "circular":  # torch crops first, then wraps the cropped signal around
        return jnp.pad(_crop(x, widths), positive, mode="wrap")
    # reflect / replicate: torch pads from the original borders, then crops the negative sides.
    return _crop(jnp.pad(x, positive, mode=_PAD_MODES[mode]), widths)


def _crop(x: jax.Array, widths: list[tuple[int, int]]) -> jax.Array:
    """Remove ``-before`` / ``-after`` elements where a pad width is negative."""
    return x[tuple(slice(max(-b, 0), x.shape[axis] - max(-a, 0)) for axis, (b, a) in enumerate(widths))]

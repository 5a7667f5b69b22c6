"""Resampling: interpolate (torch's coordinate maps) and pixel (un)shuffle.

PyTorch equivalent: ``torch.nn.functional.interpolate``, ``pixel_shuffle``, ``pixel_unshuffle``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnml._validation import (
    check_bool,
    check_choice,
    check_ndim,
    check_positive,
    check_positive_int,
)
from fnml.functional.pooling import adaptive_avg_pool_with_size

__all__ = ["interpolate", "pixel_shuffle", "pixel_unshuffle"]


# --- interpolate: torch's coordinate maps (aten/src/ATen/native/UpSample.h), one axis at a time --------


def _opmath(dtype: Any) -> Any:
    """torch's accumulation type for the interpolation weights: double for float64, else float."""
    return np.float64 if jnp.dtype(dtype) == jnp.float64 else np.float32


def _source_scale(in_size: int, out_size: int, align_corners: bool, scale: float | None, opmath: Any):
    """area_pixel_compute_scale: (in-1)/(out-1) with align_corners, else 1/scale_factor or in/out."""
    if align_corners:
        return opmath(in_size - 1) / opmath(out_size - 1) if out_size > 1 else opmath(0)
    if scale is not None and scale > 0:
        return opmath(1.0 / scale)
    return opmath(in_size) / opmath(out_size)


def _source_index(scale, out_size: int, align_corners: bool, cubic: bool, opmath: Any) -> np.ndarray:
    """area_pixel_compute_source_index for every output position (negative clamped to 0 unless cubic)."""
    dst = np.arange(out_size).astype(opmath)
    if align_corners:
        return scale * dst
    src = scale * (dst + opmath(0.5)) - opmath(0.5)
    return src if cubic else np.maximum(src, opmath(0))


def _nearest_taps(in_size: int, out_size: int, scale: float | None, exact: bool) -> np.ndarray:
    """torch's nearest_idx (floor(dst * scale), in float32) or nearest_exact_idx (floor((dst + 0.5) * scale))."""
    if not exact and out_size == in_size:
        return np.arange(out_size)
    if not exact and out_size == 2 * in_size:
        return np.arange(out_size) >> 1
    ratio = np.float32(1.0 / scale) if scale is not None and scale > 0 else np.float32(in_size) / np.float32(out_size)
    dst = np.arange(out_size)
    if exact:  # (dst + 0.5) is a double in torch, times the float scale
        src = np.floor((dst + 0.5) * np.float64(ratio))
    else:
        src = np.floor(dst.astype(np.float32) * ratio)
    return np.minimum(src.astype(np.int64), in_size - 1)


def _linear_taps(in_size, out_size, align_corners, scale, opmath):
    """compute_source_index_and_lambda: two taps and their weights per output position."""
    if out_size == in_size:  # torch copies
        index = np.arange(out_size)
        return [index, index], [np.ones(out_size, opmath), np.zeros(out_size, opmath)]
    ratio = _source_scale(in_size, out_size, align_corners, scale, opmath)
    src = _source_index(ratio, out_size, align_corners, False, opmath)
    index0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lambda1 = np.clip(src - index0.astype(opmath), opmath(0), opmath(1)).astype(opmath)
    index1 = index0 + (index0 < in_size - 1)
    return [index0, index1], [opmath(1) - lambda1, lambda1]


def _cubic_coefficients(t: np.ndarray, opmath: Any) -> list[np.ndarray]:
    """get_cubic_upsample_coefficients with A = -0.75 (torch's bicubic)."""
    a = opmath(-0.75)

    def near(x):  # cubic_convolution1, |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # cubic_convolution2, 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    one = opmath(1.0)
    return [far(t + one), near(t), near(one - t), far((one - t) + one)]


def _cubic_taps(in_size, out_size, align_corners, scale, opmath):
    """Four taps (source index clamped to the input) and the cubic weights per output position."""
    ratio = _source_scale(in_size, out_size, align_corners, scale, opmath)
    src = _source_index(ratio, out_size, align_corners, True, opmath)
    index = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    t = np.clip(src - index.astype(opmath), opmath(0), opmath(1)).astype(opmath)
    taps = [np.clip(index - 1 + j, 0, in_size - 1) for j in range(4)]
    return taps, _cubic_coefficients(t, opmath)


def _interpolate_axis(x: jax.Array, axis: int, taps: list[np.ndarray], weights: list[np.ndarray] | None) -> jax.Array:
    """Gather ``taps`` along ``axis`` and sum them with per-position ``weights`` (None: a plain gather)."""
    if weights is None:
        return jnp.take(x, jnp.asarray(taps[0]), axis=axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    total = None
    for index, weight in zip(taps, weights):
        term = jnp.take(x, jnp.asarray(index), axis=axis) * jnp.asarray(weight, x.dtype).reshape(shape)
        total = term if total is None else total + term
    return total


INTERPOLATE_MODES = ("nearest", "nearest-exact", "linear", "bilinear", "bicubic", "area")


def check_interpolate_settings(
    size: Any,
    scale_factor: Any,
    mode: Any,
    align_corners: Any,
    recompute_scale_factor: Any,
    antialias: Any,
    *,
    where: str,
) -> tuple[Any, Any, bool]:
    """torch's interpolate settings, checked: ``(size, scale_factor, align_corners)`` normalised.

    ``size``: an int or a tuple of ints, each >= 1 (or None); ``scale_factor``: a float or a tuple of floats,
    each > 0 (or None); exactly one of them. ``align_corners``: False when unset for the interpolating modes,
    None for the others. What depends on the input (one entry per spatial axis, a non-empty output) is
    checked per call by :func:`interpolate_unchecked`.
    """
    check_choice("mode", mode, INTERPOLATE_MODES, where=where)
    check_bool("antialias", antialias, where=where)
    if mode in ("nearest", "nearest-exact", "area"):
        if align_corners is not None:
            raise ValueError(
                f"{where}: align_corners can only be set with the interpolating modes linear, bilinear and "
                f"bicubic, got align_corners={align_corners!r} with mode={mode!r}"
            )
    else:
        align_corners = False if align_corners is None else check_bool("align_corners", align_corners, where=where)
    if antialias:
        raise NotImplementedError(f"{where}: antialias=True is not implemented")
    if size is not None and scale_factor is not None:
        raise ValueError(f"{where}: only one of size or scale_factor should be defined, got both")
    if size is None and scale_factor is None:
        raise ValueError(f"{where}: either size or scale_factor should be defined")
    if recompute_scale_factor is not None:
        check_bool("recompute_scale_factor", recompute_scale_factor, where=where)
    if size is not None:
        if recompute_scale_factor:
            raise ValueError(f"{where}: recompute_scale_factor is not meaningful with an explicit size")
        if isinstance(size, (tuple, list)):
            return tuple(check_positive_int("size", s, where=where) for s in size), None, align_corners
        return check_positive_int("size", size, where=where), None, align_corners
    if isinstance(scale_factor, (tuple, list)):
        factors = tuple(float(check_positive("scale_factor", f, where=where)) for f in scale_factor)
        return None, factors, align_corners
    return None, float(check_positive("scale_factor", scale_factor, where=where)), align_corners


def _interpolate_sizes(spatial_shape, size, scale_factor, recompute_scale_factor):
    """Checked settings against the input: output = size or floor(in * scale); which scales reach the kernel."""
    where = "interpolate"
    spatial = len(spatial_shape)
    if size is not None:
        items = size if isinstance(size, tuple) else (size,) * spatial
        if len(items) != spatial:
            raise ValueError(
                f"{where}: size={size!r} must have one entry per spatial dimension of the input "
                f"{tuple(spatial_shape)} (torch layout (N, C, d1, ...))"
            )
        return items, (None,) * spatial
    factors = scale_factor if isinstance(scale_factor, tuple) else (scale_factor,) * spatial
    if len(factors) != spatial:
        raise ValueError(
            f"{where}: scale_factor={scale_factor!r} must have one entry per spatial dimension of the input "
            f"{tuple(spatial_shape)}"
        )
    out = tuple(int(math.floor(n * f)) for n, f in zip(spatial_shape, factors))
    if min(out) < 1:
        raise ValueError(
            f"{where}: scale_factor={scale_factor!r} gives an empty output {out} for {tuple(spatial_shape)}"
        )
    return out, ((None,) * spatial if recompute_scale_factor else factors)


def interpolate(
    input: Any,
    size: int | tuple[int, ...] | None = None,
    scale_factor: float | tuple[float, ...] | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
    *,
    channels_last: bool = False,
) -> jax.Array:
    """Resize 1-d signals / 2-d images with torch's coordinate maps, exactly.

    PyTorch equivalent: ``torch.nn.functional.interpolate(input, size=None, scale_factor=None,
    mode="nearest", align_corners=None, recompute_scale_factor=None, antialias=False)``.

    ``input (N, C, L)`` (modes ``nearest``, ``nearest-exact``, ``linear``, ``area``) or ``(N, C, H, W)``
    (``nearest``, ``nearest-exact``, ``bilinear``, ``bicubic``, ``area``); ``channels_last=True`` takes
    ``(N, L, C)`` / NHWC. Give exactly one of ``size`` and ``scale_factor``: the output size is
    ``floor(in * scale_factor)``, and unless ``recompute_scale_factor=True`` the coordinate map uses
    ``1 / scale_factor`` itself (not ``in / out``), as torch. Maps (torch's):

    - ``nearest``: source ``min(floor(dst * scale), in - 1)`` in float32 (NOT ``nearest-exact``'s
      ``floor((dst + 0.5) * scale)``); equal sizes copy, doubling repeats each element;
    - ``linear``/``bilinear``: source ``scale * (dst + 0.5) - 0.5`` clamped at 0 (``align_corners=True``:
      ``dst * (in - 1) / (out - 1)``), two taps; equal sizes copy;
    - ``bicubic``: the same source index unclamped, four taps with clamped indices, Keys' cubic with
      ``A = -0.75``;
    - ``area``: :func:`fnml.functional.adaptive_avg_pool1d` / :func:`fnml.functional.adaptive_avg_pool2d`.

    Weights are computed in float64 for float64 inputs and in float32 otherwise, as torch. 2-d modes are
    applied one axis at a time (separable, the same taps and weights). ``antialias=True`` is not
    implemented (NotImplementedError). One gradient differs from torch's, on purpose: ``bicubic`` with a
    ``scale_factor`` that keeps the size (e.g. 1.05 on 5 pixels) interpolates in both forwards, but torch's
    backward then copies the gradient; fnml's is the true derivative of the (matching) forward.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.interpolate(jnp.array([[[1.0, 2.0]]]), scale_factor=2, mode="linear").tolist()
    [[[1.0, 1.25, 1.75, 2.0]]]
    """
    where = "interpolate"
    check_bool("channels_last", channels_last, where=where)
    size, scale_factor, align_corners = check_interpolate_settings(
        size, scale_factor, mode, align_corners, recompute_scale_factor, antialias, where=where
    )
    return interpolate_unchecked(
        jnp.asarray(input), size, scale_factor, mode, align_corners, recompute_scale_factor, channels_last=channels_last
    )


def interpolate_unchecked(
    x: jax.Array,
    size: int | tuple[int, ...] | None,
    scale_factor: float | tuple[float, ...] | None,
    mode: str,
    align_corners: bool | None,
    recompute_scale_factor: bool | None,
    *,
    channels_last: bool,
) -> jax.Array:
    """:func:`interpolate` with settings from :func:`check_interpolate_settings` (the layers' entry).

    Checks only what depends on the input: its rank, the mode's rank, one size / scale per spatial axis.
    """
    where = "interpolate"
    layouts = "(N, L, C) or NHWC" if channels_last else "(N, C, L) or NCHW"
    check_ndim("input", x.shape, (3, 4), where=f"{where} (batched {layouts})")
    spatial = x.ndim - 2
    needs = {"linear": 1, "bilinear": 2, "bicubic": 2}
    if mode in needs and needs[mode] != spatial:
        raise ValueError(f"{where}: mode={mode!r} needs a {needs[mode] + 2}-D input, got a {x.ndim}-D one")
    if not channels_last:
        x = jnp.moveaxis(x, 1, -1)  # (N, C, *S) -> (N, *S, C)
    out, scales = _interpolate_sizes(x.shape[1:-1], size, scale_factor, recompute_scale_factor)
    if mode == "area":
        # The output size ``out`` is computed and checked above: the pool's core, not its checking entry.
        y = adaptive_avg_pool_with_size(x, out, channels_last=True, where=f"adaptive_avg_pool{spatial}d")
    else:
        opmath = _opmath(x.dtype)
        if not jnp.issubdtype(x.dtype, jnp.floating) and mode not in ("nearest", "nearest-exact"):
            raise TypeError(f"{where}: mode={mode!r} needs a floating-point input, got dtype {x.dtype}")
        y = x
        for axis, (n_in, n_out, scale) in enumerate(zip(x.shape[1:-1], out, scales), start=1):
            if mode in ("nearest", "nearest-exact"):
                y = _interpolate_axis(y, axis, [_nearest_taps(n_in, n_out, scale, mode == "nearest-exact")], None)
            elif mode == "bicubic":
                y = _interpolate_axis(y, axis, *_cubic_taps(n_in, n_out, align_corners, scale, opmath))
            else:
                y = _interpolate_axis(y, axis, *_linear_taps(n_in, n_out, align_corners, scale, opmath))
    return y if channels_last else jnp.moveaxis(y, -1, 1)  # (N, *S, C) -> (N, C, *S)


def _check_shuffle_rank(x: jax.Array, where: str) -> None:
    if x.ndim < 3:
        raise ValueError(f"{where}: input must be at least 3-D (*, C, H, W), got a {x.ndim}-D array of shape {x.shape}")


def pixel_shuffle(input: Any, upscale_factor: int, *, channels_last: bool = False) -> jax.Array:
    """Rearrange ``(*, C*r*r, H, W)`` into ``(*, C, H*r, W*r)``, torch's channel order.

    PyTorch equivalent: ``torch.nn.functional.pixel_shuffle(input, upscale_factor)``.

    Channel ``c*r*r + i*r + j`` becomes pixel ``(h*r + i, w*r + j)`` of output channel ``c``. With
    ``channels_last=True`` the input is ``(*, H, W, C*r*r)`` and the output ``(*, H*r, W*r, C)``, the same
    numbers as torch on the channels-first image.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.pixel_shuffle(jnp.arange(4.0).reshape(1, 4, 1, 1), 2).tolist()
    [[[[0.0, 1.0], [2.0, 3.0]]]]
    """
    where = "pixel_shuffle"
    check_bool("channels_last", channels_last, where=where)
    r = check_positive_int("upscale_factor", upscale_factor, where=where)
    return pixel_shuffle_unchecked(jnp.asarray(input), r, channels_last=channels_last)


def pixel_shuffle_unchecked(x: jax.Array, r: int, *, channels_last: bool) -> jax.Array:
    """:func:`pixel_shuffle` with a checked factor ``r`` (the layers' entry); checks the input's shape."""
    where = "pixel_shuffle"
    _check_shuffle_rank(x, where)
    *lead, c, h, w = x.shape if not channels_last else (*x.shape[:-3], x.shape[-1], *x.shape[-3:-1])
    if c % (r * r):
        raise ValueError(
            f"{where}: the channel count {c} must be divisible by upscale_factor**2 = {r * r} (upscale_factor={r})"
        )
    oc = c // (r * r)
    if channels_last:
        y = x.reshape(*lead, h, w, oc, r, r)  # (*, H, W, C*r*r) -> (*, H, W, C, r, r)
        y = jnp.moveaxis(y, (-5, -4, -3, -2, -1), (-5, -3, -1, -4, -2))  # -> (*, H, r, W, r, C)
        return y.reshape(*lead, h * r, w * r, oc)  # -> (*, H*r, W*r, C)
    y = x.reshape(*lead, oc, r, r, h, w)  # (*, C*r*r, H, W) -> (*, C, r, r, H, W)
    y = jnp.moveaxis(y, (-5, -4, -3, -2, -1), (-5, -3, -1, -4, -2))  # -> (*, C, H, r, W, r)
    return y.reshape(*lead, oc, h * r, w * r)  # -> (*, C, H*r, W*r)


def pixel_unshuffle(input: Any, downscale_factor: int, *, channels_last: bool = False) -> jax.Array:
    """Rearrange ``(*, C, H*r, W*r)`` into ``(*, C*r*r, H, W)``: the inverse of :func:`pixel_shuffle`.

    PyTorch equivalent: ``torch.nn.functional.pixel_unshuffle(input, downscale_factor)``.

    With ``channels_last=True``: ``(*, H*r, W*r, C)`` -> ``(*, H, W, C*r*r)``. H and W must be divisible by r.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.pixel_unshuffle(jnp.arange(4.0).reshape(1, 1, 2, 2), 2).reshape(-1).tolist()
    [0.0, 1.0, 2.0, 3.0]
    """
    where = "pixel_unshuffle"
    check_bool("channels_last", channels_last, where=where)
    r = check_positive_int("downscale_factor", downscale_factor, where=where)
    return pixel_unshuffle_unchecked(jnp.asarray(input), r, channels_last=channels_last)


def pixel_unshuffle_unchecked(x: jax.Array, r: int, *, channels_last: bool) -> jax.Array:
    """:func:`pixel_unshuffle` with a checked factor ``r`` (the layers' entry); checks the input's shape."""
    where = "pixel_unshuffle"
    _check_shuffle_rank(x, where)
    *lead, c, h, w = x.shape if not channels_last else (*x.shape[:-3], x.shape[-1], *x.shape[-3:-1])
    if h % r or w % r:
        raise ValueError(f"{where}: the spatial size ({h}, {w}) must be divisible by downscale_factor={r}")
    oh, ow = h // r, w // r
    if channels_last:
        y = x.reshape(*lead, oh, r, ow, r, c)  # (*, H*r, W*r, C) -> (*, H, r, W, r, C)
        y = jnp.moveaxis(y, (-5, -3, -1, -4, -2), (-5, -4, -3, -2, -1))  # -> (*, H, W, C, r, r)
        return y.reshape(*lead, oh, ow, c * r * r)  # -> (*, H, W, C*r*r)
    y = x.reshape(*lead, c, oh, r, ow, r)  # (*, C, H*r, W*r) -> (*, C, H, r, W, r)
    y = jnp.moveaxis(y, (-5, -3, -1, -4, -2), (-5, -4, -3, -2, -1))  # -> (*, C, r, r, H, W)
    return y.reshape(*lead, c * r * r, oh, ow)  # -> (*, C*r*r, H, W)

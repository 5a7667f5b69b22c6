"""Max, average and adaptive pooling, 1-d and 2-d.

PyTorch equivalent: ``torch.nn.functional.max_pool2d`` and the other pools.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fnml._validation import (
    check_bool,
    check_positive_int,
)
from fnml.functional._shared import as_2d, channels_last_batched, from_2d, layout_name, lift_2d, ntuple, restore_layout

__all__ = [
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "max_pool1d",
    "max_pool2d",
]


# Every pool runs on channels-last (N, H, W, C); the 1-d pools run over a unit height (N, 1, L, C).


def _pool_output_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """torch's pooling_output_shape: floor/ceil division, last window must start inside the input."""
    numerator = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = numerator // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pool_windows(
    x: jax.Array,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: tuple[int, int],
    out_size: tuple[int, int],
    fill: float,
) -> jax.Array:
    """All pooling windows on a trailing axis: (N, H, W, C) -> (N, Ho, Wo, C, kh*kw), row-major order."""
    (kh, kw), (sh, sw), (dh, dw), (ph, pw), (oh, ow) = kernel, stride, dilation, padding, out_size
    # Extra bottom/right padding so that the last (ceil-mode) window fits.
    need_h = (oh - 1) * sh + dh * (kh - 1) + 1
    need_w = (ow - 1) * sw + dw * (kw - 1) + 1
    extra_h = max(need_h - x.shape[1] - ph, 0)
    extra_w = max(need_w - x.shape[2] - pw, 0)
    x = jnp.pad(x, ((0, 0), (ph, extra_h), (pw, extra_w), (0, 0)), constant_values=fill)
    slices = [
        x[:, i * dh : i * dh + (oh - 1) * sh + 1 : sh, j * dw : j * dw + (ow - 1) * sw + 1 : sw, :]
        for i in range(kh)
        for j in range(kw)
    ]
    return jnp.stack(slices, axis=-1)  # kh*kw x (N, Ho, Wo, C) -> (N, Ho, Wo, C, kh*kw)


def _tiling_windows(x: jax.Array, kernel: tuple[int, int], out: tuple[int, int]) -> jax.Array:
    """Non-overlapping windows as a reshape: (N, H, W, C) -> (N, Ho, Wo, C, kh*kw), row-major order."""
    (kh, kw), (oh, ow) = kernel, out
    n, c = x.shape[0], x.shape[3]
    x = x[:, : oh * kh, : ow * kw, :]  # floor mode drops the incomplete last windows
    x = x.reshape(n, oh, kh, ow, kw, c)  # (N, Ho*kh, Wo*kw, C) -> (N, Ho, kh, Wo, kw, C)
    x = x.transpose(0, 1, 3, 5, 2, 4)  # -> (N, Ho, Wo, C, kh, kw)
    return x.reshape(n, oh, ow, c, kh * kw)  # -> (N, Ho, Wo, C, kh*kw)


def _max_first(windows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Max over the last axis whose gradient goes to ONE element per window: the first maximum, as torch.

    ``jnp.max``'s gradient splits among tied elements; torch's goes to the first maximum in row-major
    window order. The value is read through a one-hot of the argmax, so the backward pass is an
    elementwise select: far cheaper on XLA CPU than reduce_window's select-and-scatter, and no
    custom_vjp (every autodiff mode works). NaN propagates to the output as in torch; with several
    NaNs in one window the gradient goes to the first NaN (torch: the last), which only matters when
    the loss is already NaN. Returns the maxima and the argmax (window tap index).
    """
    first = jnp.argmax(lax.stop_gradient(windows), axis=-1)  # first maximum (first NaN if any)
    one_hot = first[..., None] == jnp.arange(windows.shape[-1])  # (..., K)
    return jnp.sum(jnp.where(one_hot, windows, jnp.zeros((), windows.dtype)), axis=-1), first


def _index_dtype() -> Any:
    # torch's indices are int64; without jax x64 the widest available int is int32.
    return jax.dtypes.canonicalize_dtype(jnp.int64)


class PoolArgs:
    """torch's pooling arguments checked once, as 2-d tuples (1-d pools get a unit height axis)."""

    def __init__(self, kernel_size, stride, padding, dilation, ceil_mode, spatial, where):
        kernel = ntuple("kernel_size", kernel_size, spatial, where=where)
        # torch: stride None (or an empty list) means the kernel size.
        shown_stride = kernel_size if stride is None or (isinstance(stride, (tuple, list)) and not stride) else stride
        stride = ntuple("stride", shown_stride, spatial, where=where)
        pad = ntuple("padding", padding, spatial, where=where, minimum=0)
        dil = ntuple("dilation", dilation, spatial, where=where)
        check_bool("ceil_mode", ceil_mode, where=where)
        for p, k in zip(pad, kernel):
            if p > k // 2:  # torch: of the kernel size itself (and so of the effective one), whatever the dilation
                of = "the effective kernel size and of the kernel size" if where.startswith(("max", "Max")) else ""
                raise ValueError(
                    f"{where}: padding should be at most half of {of or 'the kernel size'}, got "
                    f"padding={padding}, kernel_size={kernel_size}, dilation={dilation}"
                )
        self.kernel, self.stride = lift_2d(kernel, spatial, 1), lift_2d(stride, spatial, 1)
        self.padding, self.dilation = lift_2d(pad, spatial, 0), lift_2d(dil, spatial, 1)
        self.ceil_mode, self.spatial, self.where = ceil_mode, spatial, where
        self.shown = f"kernel_size={kernel_size}, stride={shown_stride}, padding={padding}"

    def _key(self) -> tuple:
        return (self.kernel, self.stride, self.padding, self.dilation, self.ceil_mode, self.spatial, self.where)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PoolArgs) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def output_size(self, x: jax.Array, layout: str) -> tuple[int, int]:
        out = tuple(
            _pool_output_size(x.shape[axis], k, s, p, d, self.ceil_mode)
            for axis, k, s, p, d in zip((1, 2), self.kernel, self.stride, self.padding, self.dilation)
        )
        if min(out) < 1:
            shape = x.shape if self.spatial == 2 else (x.shape[0], *x.shape[2:])
            shown = out if self.spatial == 2 else out[1:]
            raise ValueError(
                f"{self.where}: input of shape {shape} ({layout}) is too small for {self.shown}: output size {shown}"
            )
        return out

    def is_tiling(self, x: jax.Array, out: tuple[int, int]) -> bool:
        """Non-overlapping windows that tile the (cropped) input: the reshape fast path applies."""
        return (
            self.stride == self.kernel
            and self.padding == (0, 0)
            and self.dilation == (1, 1)
            and out[0] * self.kernel[0] <= x.shape[1]
            and out[1] * self.kernel[1] <= x.shape[2]
        )


def _max_pool_nd(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, channels_last, spatial):
    where = f"max_pool{spatial}d"
    check_bool("return_indices", return_indices, where=where)
    check_bool("channels_last", channels_last, where=where)
    args = PoolArgs(kernel_size, stride, padding, dilation, ceil_mode, spatial, where)
    return max_pool_with_args(input, args, return_indices, channels_last=channels_last)


def max_pool_with_args(input: Any, args: PoolArgs, return_indices: bool, *, channels_last: bool):
    """Max pooling with settings already checked (``args``); only the input is checked (the layers' entry)."""
    spatial = args.spatial
    x, unbatched = channels_last_batched(input, spatial, channels_last, where=args.where)
    x = as_2d(x, spatial)
    out = args.output_size(x, layout_name(spatial, channels_last))
    if args.is_tiling(x, out):
        windows = _tiling_windows(x, args.kernel, out)
    else:
        fill = -jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
        windows = _pool_windows(x, args.kernel, args.stride, args.dilation, args.padding, out, fill)
    y, tap = _max_first(windows)
    y = restore_layout(from_2d(y, spatial), unbatched, channels_last)
    if not return_indices:
        return y
    # Flat index into each input plane (torch: h * W + w), from the window's tap (i, j) and its position.
    (_, kw), (sh, sw), (ph, pw), (dh, dw) = args.kernel, args.stride, args.padding, args.dilation
    rows = (np.arange(out[0]) * sh - ph)[None, :, None, None] + (tap // kw) * dh  # (N, Ho, Wo, C)
    cols = (np.arange(out[1]) * sw - pw)[None, None, :, None] + (tap % kw) * dw
    index = (rows * x.shape[2] + cols).astype(_index_dtype())
    return y, restore_layout(from_2d(index, spatial), unbatched, channels_last)


def max_pool1d(
    input: Any,
    kernel_size: int | tuple[int],
    stride: int | tuple[int] | None = None,
    padding: int | tuple[int] = 0,
    dilation: int | tuple[int] = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    *,
    channels_last: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """1-D max pooling with torch's output size, -inf padding and first-maximum gradient.

    PyTorch equivalent: ``torch.nn.functional.max_pool1d(input, kernel_size, stride=None, padding=0,
    dilation=1, ceil_mode=False, return_indices=False)``.

    ``input (N, C, L)`` or ``(C, L)`` (``channels_last=True``: ``(N, L, C)`` / ``(L, C)``). Runs as
    :func:`max_pool2d` over a unit height: same output-size rule, same gradient (to the FIRST maximum of
    each window, as torch), ``return_indices`` gives the position along ``L`` (int64, torch's).

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.max_pool1d(jnp.array([[[1.0, 3.0, 2.0, 5.0, 4.0]]]), 2).tolist()
    [[[3.0, 5.0]]]
    """
    return _max_pool_nd(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, channels_last, 1)


def max_pool2d(
    input: Any,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    *,
    channels_last: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """2-D max pooling with torch's defaults, output size and gradient.

    PyTorch equivalent: ``torch.nn.functional.max_pool2d(input, kernel_size, stride=None, padding=0,
    dilation=1, ceil_mode=False, return_indices=False)``.

    Shapes: ``(N, C, H, W)`` or ``(C, H, W)`` -> ``(N, C, H_out, W_out)`` (``channels_last=True``: NHWC
    in and out), ``H_out`` by torch's formula (``ceil_mode`` rounds up; the last window must start inside
    the input or its left padding). ``stride`` defaults to ``kernel_size``. Padding is -inf, at most half
    the kernel size (torch's rule, whatever the dilation). The gradient goes entirely to the FIRST
    maximal element of each window (row-major), as torch's (``jnp.max`` splits it among ties); NaN
    propagates as in torch. ``return_indices=True`` also returns torch's flat ``h * W + w`` index of
    each maximum (int64).

    Performance: windows that tile the input (stride == kernel, no padding/dilation) are a reshape, the
    general case stacks the kh*kw strided views; the max is read through a one-hot of the argmax, so the
    backward pass is an elementwise select, much cheaper on XLA CPU than ``reduce_window``'s
    select-and-scatter.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.max_pool2d(jnp.arange(16.0).reshape(1, 1, 4, 4), 2).tolist()
    [[[[5.0, 7.0], [13.0, 15.0]]]]
    """
    return _max_pool_nd(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, channels_last, 2)


def _avg_pool_divisors(size_hw, args: PoolArgs, out, count_include_pad: bool) -> np.ndarray:
    """Per-output-position divisor (Ho, Wo), torch's avg_pool rule, as a host constant."""
    per_axis = []
    for size, k, s, p, o in zip(size_hw, args.kernel, args.stride, args.padding, out):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, size + p)
        padded_count = end - start  # a ceil-mode window hanging past the padding does not count the overhang
        real_count = np.minimum(end, size) - np.maximum(start, 0)
        per_axis.append(padded_count if count_include_pad else real_count)
    return np.outer(per_axis[0], per_axis[1])


def _avg_pool_nd(
    input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, channels_last, spatial
):
    where = f"avg_pool{spatial}d"
    check_bool("count_include_pad", count_include_pad, where=where)
    check_bool("channels_last", channels_last, where=where)
    if divisor_override is not None:
        check_positive_int("divisor_override", divisor_override, where=where)
    args = PoolArgs(kernel_size, stride, padding, 1, ceil_mode, spatial, where)
    return avg_pool_with_args(input, args, count_include_pad, divisor_override, channels_last=channels_last)


def avg_pool_with_args(
    input: Any, args: PoolArgs, count_include_pad: bool, divisor_override: int | None, *, channels_last: bool
) -> jax.Array:
    """Average pooling with settings already checked (``args``); only the input is checked (the layers' entry)."""
    spatial = args.spatial
    x, unbatched = channels_last_batched(input, spatial, channels_last, where=args.where)
    x = as_2d(x, spatial)
    out = args.output_size(x, layout_name(spatial, channels_last))
    if args.is_tiling(x, out):
        sums = _tiling_windows(x, args.kernel, out).sum(axis=-1)  # (N, Ho, Wo, C, kh*kw) -> (N, Ho, Wo, C)
    else:
        sums = _pool_windows(x, args.kernel, args.stride, (1, 1), args.padding, out, 0).sum(axis=-1)
    if divisor_override is not None:
        divisor = np.full(out, divisor_override)
    else:
        divisor = _avg_pool_divisors(x.shape[1:3], args, out, count_include_pad)
    y = sums / jnp.asarray(divisor, sums.dtype)[:, :, None]  # (Ho, Wo) -> (Ho, Wo, 1)
    return restore_layout(from_2d(y, spatial), unbatched, channels_last)


def avg_pool1d(
    input: Any,
    kernel_size: int | tuple[int],
    stride: int | tuple[int] | None = None,
    padding: int | tuple[int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    *,
    channels_last: bool = False,
) -> jax.Array:
    """1-D average pooling with torch's divisor rules.

    PyTorch equivalent: ``torch.nn.functional.avg_pool1d(input, kernel_size, stride=None, padding=0,
    ceil_mode=False, count_include_pad=True)``.

    ``input (N, C, L)`` or ``(C, L)`` (``channels_last=True``: ``(N, L, C)``); as torch, it is
    :func:`avg_pool2d` over a unit height (same divisor rules).

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.avg_pool1d(jnp.array([[[1.0, 3.0, 2.0, 6.0]]]), 2).tolist()
    [[[2.0, 4.0]]]
    """
    return _avg_pool_nd(input, kernel_size, stride, padding, ceil_mode, count_include_pad, None, channels_last, 1)


def avg_pool2d(
    input: Any,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    *,
    channels_last: bool = False,
) -> jax.Array:
    """2-D average pooling with torch's divisor rules.

    PyTorch equivalent: ``torch.nn.functional.avg_pool2d(input, kernel_size, stride=None, padding=0,
    ceil_mode=False, count_include_pad=True, divisor_override=None)``.

    Shapes as :func:`max_pool2d` (NCHW by default, NHWC with ``channels_last=True``). Each window's sum
    (zero padding) is divided by: ``divisor_override`` if given; else with ``count_include_pad`` the
    window size clipped to the padded input (a ceil-mode window hanging past the padding does not count
    the overhang, as torch); else the number of real input elements in the window.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.avg_pool2d(jnp.ones((1, 1, 3, 3)), 2, stride=1, padding=1).tolist()[0][0][0]
    [0.25, 0.5, 0.5, 0.25]
    """
    return _avg_pool_nd(
        input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, channels_last, 2
    )


def adaptive_output(output_size: Any, spatial: int, where: str) -> tuple[int | None, ...]:
    """torch's output_size: an int or a tuple of ints / None (None keeps the input size)."""
    items = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * spatial
    if len(items) != spatial or not all(
        v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1) for v in items
    ):
        raise ValueError(
            f"{where}: output_size must be a positive int or a tuple of {spatial} positive ints (or None), "
            f"got output_size={output_size!r}"
        )
    return items


def _adaptive_bounds(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's adaptive windows: output i covers [floor(i*size/out), ceil((i+1)*size/out))."""
    i = np.arange(out)
    return (i * size) // out, -((-(i + 1) * size) // out)


def _adaptive_membership(size: int, out: int) -> np.ndarray:
    """(out, size) 0/1 matrix of the adaptive windows."""
    start, end = _adaptive_bounds(size, out)
    positions = np.arange(size)
    return ((positions >= start[:, None]) & (positions < end[:, None])).astype(np.float64)


def _adaptive_prepare(input, items, channels_last, where):
    """The input as (N, H, W, C) (1-d: a unit height), whether it was unbatched, and the output size."""
    spatial = len(items)
    x, unbatched = channels_last_batched(input, spatial, channels_last, where=where)
    x = as_2d(x, spatial)
    items = lift_2d(items, spatial, 1)
    out = tuple(x.shape[axis] if o is None else int(o) for axis, o in zip((1, 2), items))
    return x, unbatched, out


def _adaptive_avg_pool_nd(input, output_size, channels_last, spatial):
    where = f"adaptive_avg_pool{spatial}d"
    check_bool("channels_last", channels_last, where=where)
    items = adaptive_output(output_size, spatial, where)
    return adaptive_avg_pool_with_size(input, items, channels_last=channels_last, where=where)


def adaptive_avg_pool_with_size(input: Any, items: tuple, *, channels_last: bool, where: str) -> jax.Array:
    """Adaptive average pooling to the checked ``adaptive_output`` size ``items`` (the layers' entry)."""
    spatial = len(items)
    x, unbatched, (oh, ow) = _adaptive_prepare(input, items, channels_last, where)
    height, width = x.shape[1], x.shape[2]
    if (oh, ow) == (1, 1):
        y = jnp.mean(x, axis=(1, 2), keepdims=True)  # global average pool
    else:
        # 0/1 membership matrices (out, in) from torch's start/end indices; sum then divide by count.
        rows, cols = _adaptive_membership(height, oh), _adaptive_membership(width, ow)
        sums = jnp.einsum(
            "ih,nhwc,jw->nijc",
            jnp.asarray(rows, x.dtype),
            x,
            jnp.asarray(cols, x.dtype),
            precision=lax.Precision.HIGHEST,
        )
        counts = np.outer(rows.sum(1), cols.sum(1))  # (Ho, Wo)
        y = sums / jnp.asarray(counts, x.dtype)[:, :, None]
    return restore_layout(from_2d(y, spatial), unbatched, channels_last)


def adaptive_avg_pool1d(input: Any, output_size: int | tuple[int], *, channels_last: bool = False) -> jax.Array:
    """Average pooling to a fixed length with torch's (possibly overlapping) windows.

    PyTorch equivalent: ``torch.nn.functional.adaptive_avg_pool1d(input, output_size)``.

    ``input (N, C, L)`` or ``(C, L)`` (``channels_last=True``: ``(N, L, C)``) -> length ``output_size``;
    output ``i`` averages ``[floor(i*L/out), ceil((i+1)*L/out))``. An output longer than the input is
    allowed, as torch (windows repeat).

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.adaptive_avg_pool1d(jnp.array([[[1.0, 2.0, 3.0, 4.0, 5.0]]]), 2).tolist()
    [[[2.0, 4.0]]]
    """
    return _adaptive_avg_pool_nd(input, output_size, channels_last, 1)


def adaptive_avg_pool2d(
    input: Any, output_size: int | tuple[int | None, int | None], *, channels_last: bool = False
) -> jax.Array:
    """Average pooling to a fixed output size with torch's window formula.

    PyTorch equivalent: ``torch.nn.functional.adaptive_avg_pool2d(input, output_size)``.

    ``(N, C, H, W)`` or ``(C, H, W)`` (``channels_last=True``: NHWC) -> ``(.., out_h, out_w)``;
    ``output_size`` is an int or a tuple whose ``None`` entries keep the input size. Output ``i``
    averages rows ``[floor(i * H / out_h), ceil((i + 1) * H / out_h))`` (windows may overlap). ``(1, 1)``
    is a plain mean; otherwise two 0/1 membership matrices and one einsum.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.adaptive_avg_pool2d(jnp.arange(16.0).reshape(1, 1, 4, 4), 2).tolist()
    [[[[2.5, 4.5], [10.5, 12.5]]]]
    """
    return _adaptive_avg_pool_nd(input, output_size, channels_last, 2)


def _adaptive_max_pool_nd(input, output_size, return_indices, channels_last, spatial):
    where = f"adaptive_max_pool{spatial}d"
    check_bool("return_indices", return_indices, where=where)
    check_bool("channels_last", channels_last, where=where)
    items = adaptive_output(output_size, spatial, where)
    return adaptive_max_pool_with_size(input, items, return_indices, channels_last=channels_last, where=where)


def adaptive_max_pool_with_size(input: Any, items: tuple, return_indices: bool, *, channels_last: bool, where: str):
    """Adaptive max pooling to the checked ``adaptive_output`` size ``items`` (the layers' entry)."""
    spatial = len(items)
    x, unbatched, (oh, ow) = _adaptive_prepare(input, items, channels_last, where)
    height, width = x.shape[1], x.shape[2]
    taps = []
    for size, out in ((height, oh), (width, ow)):
        start, end = _adaptive_bounds(size, out)
        longest = int((end - start).max())
        # (out, K) input positions of each window; short windows repeat their last position (the max is
        # unchanged and the first maximum stays a real, earlier position).
        taps.append(np.minimum(start[:, None] + np.arange(longest), end[:, None] - 1))
    rows, cols = taps
    windows = x[:, rows][:, :, :, cols]  # (N, H, W, C) -> (N, Ho, Kh, Wo, Kw, C)
    kh, kw = rows.shape[1], cols.shape[1]
    windows = windows.transpose(0, 1, 3, 5, 2, 4).reshape(x.shape[0], oh, ow, x.shape[3], kh * kw)
    y, tap = _max_first(windows)  # (N, Ho, Wo, C, Kh*Kw): row-major window order, first maximum as torch
    y = restore_layout(from_2d(y, spatial), unbatched, channels_last)
    if not return_indices:
        return y
    # The input position of each window's first maximum: (N, Ho, Wo, C) tap -> row and column.
    row = jnp.asarray(rows)[jnp.arange(oh)[None, :, None, None], tap // kw]
    col = jnp.asarray(cols)[jnp.arange(ow)[None, None, :, None], tap % kw]
    index = (row * width + col).astype(_index_dtype())
    return y, restore_layout(from_2d(index, spatial), unbatched, channels_last)


def adaptive_max_pool1d(
    input: Any, output_size: int | tuple[int], return_indices: bool = False, *, channels_last: bool = False
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Max pooling to a fixed length with torch's windows and first-maximum gradient.

    PyTorch equivalent: ``torch.nn.functional.adaptive_max_pool1d(input, output_size, return_indices=False)``.

    Windows as :func:`adaptive_avg_pool1d`; the gradient goes to the first maximum of each window, as
    torch; ``return_indices`` gives the position along ``L`` (int64).

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.adaptive_max_pool1d(jnp.array([[[1.0, 5.0, 3.0, 2.0, 4.0]]]), 2).tolist()
    [[[5.0, 4.0]]]
    """
    return _adaptive_max_pool_nd(input, output_size, return_indices, channels_last, 1)


def adaptive_max_pool2d(
    input: Any,
    output_size: int | tuple[int | None, int | None],
    return_indices: bool = False,
    *,
    channels_last: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Max pooling to a fixed output size with torch's windows and first-maximum gradient.

    PyTorch equivalent: ``torch.nn.functional.adaptive_max_pool2d(input, output_size, return_indices=False)``.

    Windows as :func:`adaptive_avg_pool2d` (gathered, padded to the longest window by repeating its last
    position); the max is read through a one-hot of the first argmax (row-major window order), so the
    gradient goes to one element, as torch. ``return_indices`` gives torch's flat ``h * W + w`` (int64).

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.adaptive_max_pool2d(jnp.arange(16.0).reshape(1, 1, 4, 4), (1, 2)).tolist()
    [[[[13.0, 15.0]]]]
    """
    return _adaptive_max_pool_nd(input, output_size, return_indices, channels_last, 2)

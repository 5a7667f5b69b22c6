"""Pooling over channels-last inputs.

PyTorch equivalent: ``torch/nn/modules/pooling.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fnml._validation import check_ndim, check_positive_int
from fnml.layers.base import (
    Module,
    _pair,
)

__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "MaxPool2d"]


# --------------------------------------------------------------------------------------------------
# Pooling (NHWC)
# --------------------------------------------------------------------------------------------------


def _pool_output_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """torch's pooling_output_shape: floor/ceil division, last window must start inside the input."""
    numerator = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = numerator // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _windows(
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


def _max_first(windows: jax.Array) -> jax.Array:
    """Max over the last axis whose gradient goes to ONE element per window: the first maximum, as torch.

    ``jnp.max``'s gradient splits among tied elements; torch's goes to the first maximum in row-major
    window order. The value is read through a one-hot of the argmax, so the backward pass is an
    elementwise select: far cheaper on XLA CPU than reduce_window's select-and-scatter, and no
    custom_vjp (every autodiff mode works). NaN propagates to the output as in torch; with several
    NaNs in one window the gradient goes to the first NaN (torch: the last), which only matters when
    the loss is already NaN.
    """
    first = jnp.argmax(lax.stop_gradient(windows), axis=-1)  # first maximum (first NaN if any)
    one_hot = first[..., None] == jnp.arange(windows.shape[-1])  # (..., K)
    return jnp.sum(jnp.where(one_hot, windows, jnp.zeros((), windows.dtype)), axis=-1)


class _Pool2d(Module):
    """Shared checks for MaxPool2d / AvgPool2d (NHWC, torch's argument rules)."""

    _name = "Pool2d"

    def _setup(self, kernel_size, stride, padding, dilation, ceil_mode) -> None:
        where = self._name
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = bool(ceil_mode)
        self._kernel = _pair("kernel_size", kernel_size, where=where)
        self._stride = _pair("stride", self.stride, where=where)
        self._padding = _pair("padding", padding, where=where, minimum=0)
        self._dilation = _pair("dilation", dilation, where=where)
        for p, k, d in zip(self._padding, self._kernel, self._dilation):
            if p > (d * (k - 1) + 1) // 2:
                raise ValueError(
                    f"{where}: padding should be at most half of the effective kernel size, got "
                    f"padding={padding}, kernel_size={kernel_size}, dilation={dilation}"
                )

    def _prepare(self, x: jax.Array) -> tuple[jax.Array, bool, tuple[int, int]]:
        """(H, W, C) / (N, H, W, C) -> (N, H, W, C), whether it was unbatched, the output size."""
        x = jnp.asarray(x)
        check_ndim("input", x.shape, (3, 4), where=f"{self._name} (NHWC or unbatched HWC)")
        unbatched = x.ndim == 3
        if unbatched:
            x = x[None]  # (H, W, C) -> (1, H, W, C)
        out = tuple(
            _pool_output_size(x.shape[axis], k, s, p, d, self.ceil_mode)
            for axis, k, s, p, d in zip((1, 2), self._kernel, self._stride, self._padding, self._dilation)
        )
        if min(out) < 1:
            raise ValueError(
                f"{self._name}: input of shape {x.shape} (NHWC) is too small for kernel_size="
                f"{self.kernel_size}, stride={self.stride}, padding={self.padding}: output size {out}"
            )
        return x, unbatched, out

    def _is_tiling(self, x: jax.Array, out: tuple[int, int]) -> bool:
        """Non-overlapping windows that tile the (cropped) input: the reshape fast path applies."""
        return (
            self._stride == self._kernel
            and self._padding == (0, 0)
            and self._dilation == (1, 1)
            and out[0] * self._kernel[0] <= x.shape[1]
            and out[1] * self._kernel[1] <= x.shape[2]
        )


class MaxPool2d(_Pool2d):
    """Max pooling over channels-last images with torch's defaults and gradient.

    PyTorch equivalent: ``torch.nn.MaxPool2d(kernel_size, stride=None, padding=0, dilation=1,
    ceil_mode=False)``.

    Shapes: ``(N, H, W, C)`` or ``(H, W, C)`` -> ``(N, H_out, W_out, C)``, ``H_out`` by torch's formula
    (``ceil_mode`` rounds up, the last window must start inside the input or its left padding).
    ``stride`` defaults to ``kernel_size`` (``nnx.max_pool``: 1). Padding is -inf, at most half the
    effective kernel. The gradient goes entirely to the FIRST maximal element of each window (row-major),
    as torch's (``jnp.max`` splits it among ties); NaN propagates as in torch.

    Performance: windows that tile the input (stride == kernel, no padding/dilation) are a reshape, the
    general case stacks the kh*kw strided views; the max is read through a one-hot of the argmax, so the
    backward pass is an elementwise select. On a (64, 26, 26, 32) input with
    a 2x2 window the gradient is many times cheaper on XLA CPU than ``nnx.max_pool``'s (reduce_window's
    select-and-scatter), which dominates a small CNN step. ``return_indices`` is not supported.

    Example::

        pool = MaxPool2d(2)
        y = pool(jnp.ones((8, 28, 28, 16)))      # (8, 14, 14, 16)
    """

    _name = "MaxPool2d"

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        ceil_mode: bool = False,
    ):
        self.dilation = dilation
        self._setup(kernel_size, stride, padding, dilation, ceil_mode)

    def __call__(self, x: jax.Array) -> jax.Array:
        x, unbatched, (oh, ow) = self._prepare(x)
        if self._is_tiling(x, (oh, ow)):
            kh, kw = self._kernel
            n, c = x.shape[0], x.shape[3]
            x = x[:, : oh * kh, : ow * kw, :]  # floor mode drops the incomplete last windows
            x = x.reshape(n, oh, kh, ow, kw, c)  # (N, Ho*kh, Wo*kw, C) -> (N, Ho, kh, Wo, kw, C)
            x = x.transpose(0, 1, 3, 5, 2, 4)  # -> (N, Ho, Wo, C, kh, kw)
            windows = x.reshape(n, oh, ow, c, kh * kw)  # -> (N, Ho, Wo, C, kh*kw), row-major window order
        else:
            fill = -jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
            windows = _windows(x, self._kernel, self._stride, self._dilation, self._padding, (oh, ow), fill)
        y = _max_first(windows)
        return y[0] if unbatched else y

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )


class AvgPool2d(_Pool2d):
    """Average pooling over channels-last images with torch's divisor rules.

    PyTorch equivalent: ``torch.nn.AvgPool2d(kernel_size, stride=None, padding=0, ceil_mode=False,
    count_include_pad=True, divisor_override=None)``.

    Shapes as :class:`MaxPool2d`. Each window's sum (zero padding) is divided by: ``divisor_override``
    if given; else with ``count_include_pad`` the window size clipped to the padded input (a ceil-mode
    window hanging past the padding does not count the overhang, as torch); else the number of real
    input elements in the window. ``stride`` defaults to ``kernel_size``.

    Example::

        pool = AvgPool2d(2)
        y = pool(jnp.ones((8, 28, 28, 16)))      # (8, 14, 14, 16)
    """

    _name = "AvgPool2d"

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ):
        self._setup(kernel_size, stride, padding, 1, ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        if divisor_override is not None:
            check_positive_int("divisor_override", divisor_override, where=self._name)
        self.divisor_override = divisor_override

    def _divisors(self, height: int, width: int, out: tuple[int, int]) -> np.ndarray:
        """Per-output-position divisor (Ho, Wo), torch's avg_pool2d rule, as a host constant."""
        per_axis = []
        for size, k, s, p, o in zip((height, width), self._kernel, self._stride, self._padding, out):
            start = np.arange(o) * s - p
            end = np.minimum(start + k, size + p)
            padded_count = end - start
            real_count = np.minimum(end, size) - np.maximum(start, 0)
            per_axis.append(padded_count if self.count_include_pad else real_count)
        return np.outer(per_axis[0], per_axis[1])

    def __call__(self, x: jax.Array) -> jax.Array:
        x, unbatched, (oh, ow) = self._prepare(x)
        height, width = x.shape[1], x.shape[2]
        if self._is_tiling(x, (oh, ow)):
            kh, kw = self._kernel
            n, c = x.shape[0], x.shape[3]
            x = x[:, : oh * kh, : ow * kw, :]  # floor mode drops the incomplete last windows
            sums = x.reshape(n, oh, kh, ow, kw, c).sum(axis=(2, 4))  # (N, Ho, kh, Wo, kw, C) -> (N, Ho, Wo, C)
        else:
            windows = _windows(x, self._kernel, self._stride, (1, 1), self._padding, (oh, ow), 0)
            sums = windows.sum(axis=-1)  # (N, Ho, Wo, C, kh*kw) -> (N, Ho, Wo, C)
        if self.divisor_override is not None:
            divisor = np.full((oh, ow), self.divisor_override)
        else:
            divisor = self._divisors(height, width, (oh, ow))
        y = sums / jnp.asarray(divisor, sums.dtype)[:, :, None]  # (Ho, Wo) -> (Ho, Wo, 1)
        return y[0] if unbatched else y

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size over channels-last images, torch's window formula.

    PyTorch equivalent: ``torch.nn.AdaptiveAvgPool2d(output_size)``.

    Shapes: ``(N, H, W, C)`` or ``(H, W, C)`` -> ``(N, out_h, out_w, C)``; ``output_size`` is an int or a
    tuple whose ``None`` entries keep the input size. Output ``i`` averages input rows
    ``[floor(i * H / out_h), ceil((i + 1) * H / out_h))`` (windows may overlap), as torch.

    Example::

        gap = AdaptiveAvgPool2d((1, 1))
        y = gap(jnp.ones((8, 7, 7, 64)))         # (8, 1, 1, 64)
    """

    def __init__(self, output_size: int | tuple[int | None, int | None]):
        where = "AdaptiveAvgPool2d"
        items = (output_size, output_size) if not isinstance(output_size, (tuple, list)) else tuple(output_size)
        if len(items) != 2 or not all(
            v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1) for v in items
        ):
            raise ValueError(
                f"{where}: output_size must be a positive int or a tuple of 2 positive ints (or None), "
                f"got output_size={output_size!r}"
            )
        self.output_size = output_size
        self._output = items

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        check_ndim("input", x.shape, (3, 4), where="AdaptiveAvgPool2d (NHWC or unbatched HWC)")
        unbatched = x.ndim == 3
        if unbatched:
            x = x[None]  # (H, W, C) -> (1, H, W, C)
        height, width = x.shape[1], x.shape[2]
        oh = height if self._output[0] is None else self._output[0]
        ow = width if self._output[1] is None else self._output[1]
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
        return y[0] if unbatched else y

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


def _adaptive_membership(size: int, out: int) -> np.ndarray:
    """(out, size) 0/1 matrix: row i marks [floor(i*size/out), ceil((i+1)*size/out))."""
    matrix = np.zeros((out, size))
    for i in range(out):
        start = (i * size) // out
        end = -((-(i + 1) * size) // out)
        matrix[i, start:end] = 1.0
    return matrix

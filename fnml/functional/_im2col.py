"""The CPU lowering policy of the convolutions: when a convolution runs as im2col + one matmul.

The rule (:func:`use_im2col`), decided at trace time from static shapes, the same numbers either way: on the
CPU backend, with ``groups == 1``, a patch depth ``in_channels * kh * kw >= 64`` AND at least 32 output
channels, ``conv1d`` / ``conv2d`` (and the ``Conv1d`` / ``Conv2d`` layers, which call them) stack the
``kh * kw`` shifted strided views of the padded input into patches ``(N*H_out*W_out, kh*kw*C_in)`` and
multiply them by the kernel reshaped to ``(kh*kw*C_in, C_out)`` in ONE 2-D matmul (its weight gradient
contracts a single axis); otherwise ``lax.conv_general_dilated``. Why both thresholds: XLA CPU's matmul on
deep patches beats its own convolution, but with a narrow kernel (``(depth, 16)``) it is slower (the
measurements are in ``benchmarks/README.md``). Transposed convolutions always use
``lax.conv_general_dilated``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from fnml.functional._shared import accumulation_dtype

MIN_PATCH_DEPTH = 64  # in_channels * kh * kw of one patch
MIN_OUT_CHANNELS = 32  # a narrower kernel makes the patch matmul slower than XLA's convolution


def use_im2col(in_channels: int, out_channels: int, kernel_hw: tuple[int, int], groups: int) -> bool:
    """The lowering rule: CPU backend, ``groups == 1``, ``in_channels * kh * kw >= 64`` and ``out_channels >= 32``."""
    kh, kw = kernel_hw
    deep = in_channels * kh * kw >= MIN_PATCH_DEPTH and out_channels >= MIN_OUT_CHANNELS
    return groups == 1 and deep and jax.default_backend() == "cpu"


def conv2d_im2col(x, kernel, stride, padding, dilation):
    """NHWC convolution (groups=1) as shifted strided views stacked into patches + one contraction."""
    (pt, pb), (pl, pr) = padding
    if pt or pb or pl or pr:
        x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    kh, kw, cin, cout = kernel.shape
    (sh, sw), (dh, dw) = stride, dilation
    n, h, w, _ = x.shape
    ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    views = [
        # (N, H, W, C) -> (N, Ho, Wo, C): the input pixels under kernel tap (i, j) for every output pixel.
        lax.slice(
            x, (0, i * dh, j * dw, 0), (n, i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1, cin), (1, sh, sw, 1)
        )
        for i in range(kh)
        for j in range(kw)
    ]
    # k views of (N, Ho, Wo, C) -> (N, Ho, Wo, k, C) -> (N*Ho*Wo, k*C), taps in HWIO's (i, j, c) order.
    patches = jnp.stack(views, axis=3).reshape(n * ho * wo, kh * kw * cin)
    # (kh, kw, C, O) -> (kh*kw*C, O): one plain 2-D matmul (measured faster on XLA CPU than an einsum over
    # separate tap and channel axes, and than a dot_general on the 4-D patches: its weight gradient then
    # contracts one (N*Ho*Wo) axis instead of three).
    y = jnp.matmul(patches, kernel.reshape(kh * kw * cin, cout), preferred_element_type=accumulation_dtype(x.dtype))
    return y.reshape(n, ho, wo, cout)  # (N*Ho*Wo, O) -> (N, Ho, Wo, O)

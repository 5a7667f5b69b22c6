"""Upsampling and pixel shuffling over channels-last inputs: thin modules over ``fnml.functional``.

PyTorch equivalent: ``torch/nn/modules/upsampling.py``, ``pixelshuffle.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fnml._validation import check_positive_int
from fnml.functional.resample import (
    check_interpolate_settings,
    interpolate_unchecked,
    pixel_shuffle_unchecked,
    pixel_unshuffle_unchecked,
)
from fnml.layers._facts import LOWERS_OP_BY_OP, PARAMETERLESS, TorchFacts
from fnml.layers.base import Module

__all__ = ["PixelShuffle", "PixelUnshuffle", "Upsample"]


class Upsample(Module):
    """Resize channels-last sequences or images with ``functional.interpolate``'s torch-exact maps.

    PyTorch equivalent: ``torch.nn.Upsample(size=None, scale_factor=None, mode="nearest",
    align_corners=None, recompute_scale_factor=None)``.

    Shapes: ``(N, L, C)`` (modes ``nearest``, ``nearest-exact``, ``linear``, ``area``) or ``(N, H, W, C)``
    (``nearest``, ``nearest-exact``, ``bilinear``, ``bicubic``, ``area``); torch's are ``(N, C, L)`` /
    NCHW. Give ``size`` or ``scale_factor`` (stored as floats, as torch); the output size is ``floor(in *
    scale_factor)`` and, unless ``recompute_scale_factor=True``, the coordinate map uses
    ``1 / scale_factor``, as torch. See :func:`fnml.functional.interpolate` for the maps.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> up = layers.Upsample(scale_factor=2, mode="bilinear")
    >>> up(jnp.ones((1, 4, 4, 3))).shape
    (1, 8, 8, 3)
    >>> print(up)
    Upsample(scale_factor=2.0, mode='bilinear')
    """

    torch_facts = TorchFacts(
        "Upsample",
        slots=PARAMETERLESS,
        layout="channels_last",
        settings=("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor"),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __init__(
        self,
        size: int | tuple[int, ...] | None = None,
        scale_factor: float | tuple[float, ...] | None = None,
        mode: str = "nearest",
        align_corners: bool | None = None,
        recompute_scale_factor: bool | None = None,
    ):
        # Checked once, here; the call runs the functional core on the normalised settings.
        self._size, self._scale_factor, self._align_corners = check_interpolate_settings(
            size, scale_factor, mode, align_corners, recompute_scale_factor, False, where="Upsample"
        )
        self.size = size
        # torch: float(scale_factor), or a tuple of floats.
        if isinstance(scale_factor, (tuple, list)):
            self.scale_factor = tuple(float(f) for f in scale_factor)
        else:
            self.scale_factor = float(scale_factor) if scale_factor else None
        self.mode = mode
        self.align_corners = align_corners
        self.recompute_scale_factor = recompute_scale_factor

    def __call__(self, x: jax.Array) -> jax.Array:
        return interpolate_unchecked(
            jnp.asarray(x),
            self._size,
            self._scale_factor,
            self.mode,
            self._align_corners,
            self.recompute_scale_factor,
            channels_last=True,
        )

    def extra_repr(self) -> str:
        info = f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None else f"size={self.size!r}"
        return f"{info}, mode={self.mode!r}"


class PixelShuffle(Module):
    """Rearrange ``(*, H, W, C*r*r)`` into ``(*, H*r, W*r, C)`` (channels-last), torch's channel order.

    PyTorch equivalent: ``torch.nn.PixelShuffle(upscale_factor)``.

    The same numbers as torch's ``(*, C*r*r, H, W) -> (*, C, H*r, W*r)`` on the channels-first image:
    channel ``c*r*r + i*r + j`` becomes pixel ``(h*r + i, w*r + j)`` of channel ``c``. Calls
    ``functional.pixel_shuffle(..., channels_last=True)``.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.PixelShuffle(2)(jnp.ones((1, 3, 3, 8))).shape
    (1, 6, 6, 2)
    """

    torch_facts = TorchFacts(
        "PixelShuffle",
        slots=PARAMETERLESS,
        layout="nhwc",
        settings=("upscale_factor",),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __init__(self, upscale_factor: int):
        self.upscale_factor = check_positive_int("upscale_factor", upscale_factor, where="PixelShuffle")

    def __call__(self, x: jax.Array) -> jax.Array:
        return pixel_shuffle_unchecked(jnp.asarray(x), self.upscale_factor, channels_last=True)

    def extra_repr(self) -> str:
        return f"upscale_factor={self.upscale_factor}"


class PixelUnshuffle(Module):
    """Rearrange ``(*, H*r, W*r, C)`` into ``(*, H, W, C*r*r)`` (channels-last): the inverse of PixelShuffle.

    PyTorch equivalent: ``torch.nn.PixelUnshuffle(downscale_factor)``.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.PixelUnshuffle(2)(jnp.ones((1, 6, 6, 2))).shape
    (1, 3, 3, 8)
    """

    torch_facts = TorchFacts(
        "PixelUnshuffle",
        slots=PARAMETERLESS,
        layout="nhwc",
        settings=("downscale_factor",),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __init__(self, downscale_factor: int):
        self.downscale_factor = check_positive_int("downscale_factor", downscale_factor, where="PixelUnshuffle")

    def __call__(self, x: jax.Array) -> jax.Array:
        return pixel_unshuffle_unchecked(jnp.asarray(x), self.downscale_factor, channels_last=True)

    def extra_repr(self) -> str:
        return f"downscale_factor={self.downscale_factor}"

"""Convolutions over channels-last inputs: thin holders of parameters over ``fnml.functional``.

PyTorch equivalent: ``torch/nn/modules/conv.py``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from fnml._validation import check_bool, check_choice, check_positive_int
from fnml.functional._im2col import use_im2col
from fnml.functional._shared import channels_last_batched, layout_name, ntuple, restore_layout
from fnml.functional.conv import (
    check_conv_input,
    check_output_padding,
    check_padded_size,
    check_transposed_output_size,
    conv_padding_pairs,
    conv_transpose_unchecked,
    conv_unchecked,
)
from fnml.functional.padding import pad
from fnml.layers._facts import LayerCall, TorchFacts, weight_and_bias
from fnml.layers.base import Module, _compute_dtype, _fan_in_bound, torch_uniform

__all__ = ["Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d"]

# The settings every convolution shares with torch's (checked by parity.check_defaults); the transposed
# ones add output_padding.
_CONV_SETTINGS = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "bias",
    "padding_mode",
)


_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _check_channels(where: str, in_channels: int, out_channels: int, groups: int) -> None:
    check_positive_int("in_channels", in_channels, where=where)
    check_positive_int("out_channels", out_channels, where=where)
    check_positive_int("groups", groups, where=where)
    if in_channels % groups:
        raise ValueError(f"{where}: in_channels={in_channels} must be divisible by groups={groups}")
    if out_channels % groups:
        raise ValueError(f"{where}: out_channels={out_channels} must be divisible by groups={groups}")


def _torch_repr(module: Any, *, transposed: bool) -> str:
    """torch's _ConvNd.extra_repr."""
    spatial = len(module.kernel_size)
    text = f"{module.in_channels}, {module.out_channels}, kernel_size={module.kernel_size}, stride={module.stride}"
    if module.padding != (0,) * spatial:
        text += f", padding={module.padding}"
    if module.dilation != (1,) * spatial:
        text += f", dilation={module.dilation}"
    if transposed and module.output_padding != (0,) * spatial:
        text += f", output_padding={module.output_padding}"
    if module.groups != 1:
        text += f", groups={module.groups}"
    if module.bias is None:
        text += ", bias=False"
    if module.padding_mode != "zeros":
        text += f", padding_mode={module.padding_mode}"
    return text


class _ConvNd(Module):
    """Shared body of Conv1d / Conv2d (channels-last data, kernel ``(*kernel_size, in/groups, out)``)."""

    _spatial = 2

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        dilation,
        groups,
        bias,
        padding_mode,
        *,
        dtype,
        param_dtype,
        rngs,
    ):
        where, n = type(self).__name__, self._spatial
        _check_channels(where, in_channels, out_channels, groups)
        self.kernel_size = ntuple("kernel_size", kernel_size, n, where=where)
        self.stride = ntuple("stride", stride, n, where=where)
        self.dilation = ntuple("dilation", dilation, n, where=where)
        if isinstance(padding, str):
            check_choice("padding", padding, ("valid", "same"), where=where)
            if padding == "same" and self.stride != (1,) * n:
                raise ValueError(
                    f"{where}: padding='same' is not supported for strided convolutions "
                    f"(stride={self.stride}), as in torch; give explicit padding instead"
                )
            self.padding = padding
        else:
            self.padding = ntuple("padding", padding, n, minimum=0, where=where)
        check_choice("padding_mode", padding_mode, _PADDING_MODES, where=where)
        check_bool("bias", bias, where=where)
        # Explicit (before, after) padding per spatial axis (torch's rule for "same"), worked out once.
        self._padding_pairs = conv_padding_pairs(
            self.padding, self.kernel_size, self.stride, self.dilation, where=where
        )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.padding_mode = padding_mode
        self.dtype, self.param_dtype = dtype, param_dtype
        init = torch_uniform(_fan_in_bound(in_channels // groups * math.prod(self.kernel_size)))
        # (*kernel_size, in/groups, out) = torch's (out, in/groups, *kernel_size) with its axes reversed.
        shape = (*self.kernel_size, in_channels // groups, out_channels)
        self.kernel = nnx.Param(init(rngs.params(), shape, param_dtype))
        self.bias = nnx.Param(init(rngs.params(), (out_channels,), param_dtype)) if bias else nnx.data(None)

    def __call__(self, x: jax.Array) -> jax.Array:
        n, where = self._spatial, type(self).__name__
        x, unbatched = channels_last_batched(x, n, True, where=where)  # (N, *S, C), the rank checked
        check_conv_input(x, self.in_channels, n, True, where)
        dtype = _compute_dtype(self.dtype, x, self.kernel[...])
        x, kernel = x.astype(dtype), self.kernel[...].astype(dtype)
        bias = None if self.bias is None else self.bias[...].astype(dtype)
        pairs = self._padding_pairs
        if self.padding_mode != "zeros":
            self._check_mode_padding(x, pairs)
            # As torch: pad with the mode first (F.pad's order: last spatial axis first), then convolve unpadded.
            x = pad(x, tuple(p for pair in reversed(pairs) for p in pair), mode=self.padding_mode, channels_last=True)
            pairs = ((0, 0),) * n
        check_padded_size(x, pairs, self.kernel_size, self.dilation, layout_name(n, True), where)
        y = conv_unchecked(x, kernel, bias, self.stride, pairs, self.dilation, self.groups)
        return restore_layout(y, unbatched, True)

    def _check_mode_padding(self, x: jax.Array, pairs: tuple[tuple[int, int], ...]) -> None:
        """reflect: padding < size; circular: padding <= size (torch's limits), named in the layer's terms."""
        if self.padding_mode == "replicate":
            return
        for axis, (before, after) in zip(range(1, 1 + self._spatial), pairs):
            size = x.shape[axis]
            limit = size - 1 if self.padding_mode == "reflect" else size
            if max(before, after) > limit:
                raise ValueError(
                    f"{type(self).__name__}: padding_mode={self.padding_mode!r} needs padding <= {limit} for an "
                    f"input of size {size} on axis {axis}, got padding ({before}, {after})"
                )

    def _use_im2col(self) -> bool:
        """The lowering rule of ``functional.conv2d`` for this layer; decided at trace time, never per step."""
        kernel_hw = self.kernel_size if self._spatial == 2 else (1, self.kernel_size[0])
        return use_im2col(self.in_channels, self.out_channels, kernel_hw, self.groups)

    def extra_repr(self) -> str:
        return _torch_repr(self, transposed=False)


class Conv1d(_ConvNd):
    """1-D convolution over channels-last sequences, with torch's signature, padding rules and init.

    PyTorch equivalent: ``torch.nn.Conv1d(in_channels, out_channels, kernel_size, stride=1, padding=0,
    dilation=1, groups=1, bias=True, padding_mode="zeros")``.

    Shapes: ``x: (N, L, in_channels)`` (or unbatched ``(L, in_channels)``) -> ``(N, L_out,
    out_channels)``, ``L_out = (L + 2*padding - dilation*(k-1) - 1) // stride + 1``. Sequences are
    channels-last like :class:`BatchNorm1d`'s ``(N, L, C)``, not torch's ``(N, C, L)``. ``kernel`` is
    WIO ``(k, in_channels // groups, out_channels)`` = torch weight transposed ``(2, 1, 0)``; ``bias``
    ``(out_channels,)`` or None. Settings are stored as 1-tuples, as torch (``kernel_size=(3,)``).

    ``padding``: int, ``(p,)``, ``"valid"`` or ``"same"`` (stride 1 only); ``padding_mode``: ``"zeros"``,
    ``"reflect"``, ``"replicate"``, ``"circular"`` (the input is padded with ``functional.pad`` first, as
    torch). Init: weight AND bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), ``fan_in = in_channels / groups *
    k``. Calls ``functional.conv1d(..., channels_last=True)`` (a 2-d convolution over a unit height).

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from fnml import layers
    >>> conv = layers.Conv1d(4, 8, 3, padding=1, rngs=nnx.Rngs(0))
    >>> conv(jnp.ones((2, 10, 4))).shape
    (2, 10, 8)
    >>> print(conv)
    Conv1d(4, 8, kernel_size=(3,), stride=(1,), padding=(1,))
    """

    torch_facts = TorchFacts(
        "Conv1d",
        slots=weight_and_bias(perm=(2, 1, 0)),  # fnml (k, in/groups, out) -> torch (out, in/groups, k)
        layout="nlc",
        settings=_CONV_SETTINGS,
        capture=LayerCall(("aten.conv1d",), "ncl"),
        autocast=True,
    )

    _spatial = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int],
        stride: int | tuple[int] = 1,
        padding: int | tuple[int] | str = 0,
        dilation: int | tuple[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )


class Conv2d(_ConvNd):
    """2-D convolution over channels-last images, with torch's signature, padding rules and init.

    PyTorch equivalent: ``torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0,
    dilation=1, groups=1, bias=True, padding_mode="zeros")``.

    Shapes: ``x: (N, H, W, in_channels)`` (or unbatched ``(H, W, in_channels)``) ->
    ``(N, H_out, W_out, out_channels)`` with ``H_out = (H + 2*pad - dilation*(k-1) - 1) // stride + 1``.
    Images are NHWC, not torch's NCHW: convert with ``fnml.tensors.nchw_to_nhwc``. ``kernel`` is HWIO
    ``(kh, kw, in_channels // groups, out_channels)`` = torch OIHW weight transposed ``(2, 3, 1, 0)``;
    ``bias`` is ``(out_channels,)`` or None.

    ``padding``: int, ``(ph, pw)``, ``"valid"`` (no padding) or ``"same"`` (stride 1 only, as torch;
    odd total padding puts the extra row/column at the bottom/right, as torch). ``padding_mode``:
    ``"zeros"``, ``"reflect"``, ``"replicate"``, ``"circular"`` (``functional.pad`` first, then an
    unpadded convolution, as torch). Init: weight AND bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    ``fan_in = in_channels / groups * kh * kw`` as torch.

    Calls ``functional.conv2d(..., channels_last=True)``, whose lowering rule applies (im2col + one 2-D
    matmul on the CPU backend with ``groups == 1``, ``in_channels * kh * kw >= 64`` and
    ``out_channels >= 32``, else ``lax.conv_general_dilated``; same numbers either way). Written on
    ``lax`` rather than ``nnx.Conv``: nnx.Conv defaults to "SAME" padding (torch: 0), has no
    reflect/replicate modes and names its settings differently.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from fnml import layers
    >>> conv = layers.Conv2d(3, 8, 3, padding=1, rngs=nnx.Rngs(0))
    >>> conv(jnp.ones((2, 32, 32, 3))).shape
    (2, 32, 32, 8)
    """

    torch_facts = TorchFacts(
        "Conv2d",
        slots=weight_and_bias(perm=(3, 2, 0, 1)),  # fnml HWIO (kh, kw, in/groups, out) -> torch OIHW
        layout="nhwc",
        settings=_CONV_SETTINGS,
        capture=LayerCall(("aten.conv2d",), "nchw"),
        autocast=True,
    )

    _spatial = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )


class _ConvTransposeNd(Module):
    """Shared body of ConvTranspose1d / ConvTranspose2d (kernel ``(*kernel_size, in, out/groups)``)."""

    _spatial = 2

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        output_padding,
        groups,
        bias,
        dilation,
        padding_mode,
        *,
        dtype,
        param_dtype,
        rngs,
    ):
        where, n = type(self).__name__, self._spatial
        _check_channels(where, in_channels, out_channels, groups)
        self.kernel_size = ntuple("kernel_size", kernel_size, n, where=where)
        self.stride = ntuple("stride", stride, n, where=where)
        self.padding = ntuple("padding", padding, n, minimum=0, where=where)
        self.output_padding = ntuple("output_padding", output_padding, n, minimum=0, where=where)
        self.dilation = ntuple("dilation", dilation, n, where=where)
        if padding_mode != "zeros":
            raise ValueError(f"{where}: only padding_mode='zeros' is supported (as torch), got {padding_mode!r}")
        check_bool("bias", bias, where=where)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.padding_mode = padding_mode
        self.dtype, self.param_dtype = dtype, param_dtype
        # torch: kaiming_uniform_(a=sqrt(5)) on (in, out/groups, *k), whose fan_in is weight.size(1) * prod(k).
        init = torch_uniform(_fan_in_bound(out_channels // groups * math.prod(self.kernel_size)))
        shape = (*self.kernel_size, in_channels, out_channels // groups)
        self.kernel = nnx.Param(init(rngs.params(), shape, param_dtype))
        self.bias = nnx.Param(init(rngs.params(), (out_channels,), param_dtype)) if bias else nnx.data(None)

    def _output_padding(self, x: jax.Array, output_size: Any) -> tuple[int, ...]:
        """torch's _output_padding: the output_padding that yields ``output_size``, within its valid range."""
        n, where = self._spatial, type(self).__name__
        if output_size is None:
            return self.output_padding
        sizes = [int(s) for s in output_size]
        batched = x.ndim == n + 2
        if len(sizes) == n + (2 if batched else 1):  # the full channels-last shape: keep the spatial entries
            sizes = sizes[1:-1] if batched else sizes[:-1]
        if len(sizes) != n:
            raise ValueError(
                f"{where}: for a {x.ndim}-D input, output_size must have {n} or {n + (2 if batched else 1)} "
                f"elements, got {len(sizes)}"
            )
        spatial_in = x.shape[1:-1] if batched else x.shape[:-1]
        low = [
            (size - 1) * s - 2 * p + d * (k - 1) + 1
            for size, s, p, d, k in zip(spatial_in, self.stride, self.padding, self.dilation, self.kernel_size)
        ]
        high = [m + s - 1 for m, s in zip(low, self.stride)]
        if any(not lo <= size <= hi for size, lo, hi in zip(sizes, low, high)):
            raise ValueError(
                f"{where}: requested an output size of {tuple(sizes)}, but valid sizes range from {tuple(low)} to "
                f"{tuple(high)} (for an input of spatial size {tuple(spatial_in)})"
            )
        return tuple(size - lo for size, lo in zip(sizes, low))

    def __call__(self, x: jax.Array, output_size: Any = None) -> jax.Array:
        n, where = self._spatial, type(self).__name__
        output_padding = self._output_padding(jnp.asarray(x), output_size)
        x, unbatched = channels_last_batched(x, n, True, where=where)  # (N, *S, C), the rank checked
        check_conv_input(x, self.in_channels, n, True, where)
        check_output_padding(output_padding, self.stride, self.dilation, where)
        settings = (self.kernel_size, self.stride, self.padding, self.dilation, output_padding)
        check_transposed_output_size(x, *settings, where)
        dtype = _compute_dtype(self.dtype, x, self.kernel[...])
        x, kernel = x.astype(dtype), self.kernel[...].astype(dtype)
        bias = None if self.bias is None else self.bias[...].astype(dtype)
        y = conv_transpose_unchecked(
            x, kernel, bias, self.stride, self.padding, output_padding, self.dilation, self.groups
        )
        return restore_layout(y, unbatched, True)

    def extra_repr(self) -> str:
        return _torch_repr(self, transposed=True)


class ConvTranspose1d(_ConvTransposeNd):
    """1-D transposed convolution over channels-last sequences, torch's signature, output size and init.

    PyTorch equivalent: ``torch.nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=1,
    padding=0, output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros")``.

    Shapes: ``x: (N, L, in_channels)`` or ``(L, in_channels)`` -> ``(N, L_out, out_channels)``, ``L_out =
    (L - 1)*stride - 2*padding + dilation*(k-1) + output_padding + 1``; ``output_padding`` must be smaller
    than ``stride`` or ``dilation`` (checked when called, as torch). ``layer(x, output_size=...)`` picks
    the output_padding that gives that length, as torch (``output_size``: the spatial size, or the full
    channels-last shape).

    Parameters: ``kernel`` is ``(k, in_channels, out_channels // groups)``, torch's weight ``(in_channels,
    out_channels // groups, k)`` with its axes moved: ``kernel = weight.transpose(2, 0, 1)`` (back:
    ``weight = kernel.transpose(1, 2, 0)``); ``bias`` ``(out_channels,)``. Init as torch: weight and bias ~
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with torch's ``fan_in = out_channels / groups * k`` (from
    ``weight.size(1)``). Only ``padding_mode="zeros"``, as torch. Calls
    ``functional.conv_transpose1d(..., channels_last=True)``.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from fnml import layers
    >>> up = layers.ConvTranspose1d(4, 2, 3, stride=2, rngs=nnx.Rngs(0))
    >>> up(jnp.ones((1, 5, 4))).shape
    (1, 11, 2)
    """

    torch_facts = TorchFacts(
        "ConvTranspose1d",
        slots=weight_and_bias(perm=(1, 2, 0)),  # fnml (k, in, out/groups) -> torch (in, out/groups, k)
        layout="nlc",
        settings=(*_CONV_SETTINGS, "output_padding"),
        capture=LayerCall(("aten.conv_transpose1d",), "ncl"),
        autocast=True,
    )

    _spatial = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int],
        stride: int | tuple[int] = 1,
        padding: int | tuple[int] = 0,
        output_padding: int | tuple[int] = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | tuple[int] = 1,
        padding_mode: str = "zeros",
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            output_padding,
            groups,
            bias,
            dilation,
            padding_mode,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )


class ConvTranspose2d(_ConvTransposeNd):
    """2-D transposed convolution over channels-last images, torch's signature, output size and init.

    PyTorch equivalent: ``torch.nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride=1,
    padding=0, output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros")``.

    Shapes: ``x: (N, H, W, in_channels)`` or ``(H, W, in_channels)`` -> ``(N, H_out, W_out,
    out_channels)``, ``H_out = (H - 1)*stride - 2*padding + dilation*(kh-1) + output_padding + 1``;
    ``output_padding`` must be smaller than ``stride`` or ``dilation`` (checked when called, as torch).
    ``layer(x, output_size=(H_out, W_out))`` picks the output_padding, as torch.

    Parameters: ``kernel`` is ``(kh, kw, in_channels, out_channels // groups)``, torch's weight
    ``(in_channels, out_channels // groups, kh, kw)`` with its axes moved: ``kernel =
    weight.transpose(2, 3, 0, 1)`` (back: ``weight = kernel.transpose(2, 3, 0, 1)``), not flipped;
    ``bias`` ``(out_channels,)``. Init as torch: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
    torch's ``fan_in = out_channels / groups * kh * kw`` (from ``weight.size(1)``). Only
    ``padding_mode="zeros"``, as torch. Calls ``functional.conv_transpose2d(..., channels_last=True)``.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from fnml import layers
    >>> up = layers.ConvTranspose2d(8, 4, 4, stride=2, padding=1, rngs=nnx.Rngs(0))
    >>> up(jnp.ones((1, 7, 7, 8))).shape
    (1, 14, 14, 4)
    >>> print(up)
    ConvTranspose2d(8, 4, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1))
    """

    torch_facts = TorchFacts(
        "ConvTranspose2d",
        slots=weight_and_bias(perm=(2, 3, 0, 1)),  # fnml (kh, kw, in, out/groups) -> torch (in, out/groups, kh, kw)
        layout="nhwc",
        settings=(*_CONV_SETTINGS, "output_padding"),
        capture=LayerCall(("aten.conv_transpose2d",), "nchw"),
        autocast=True,
    )

    _spatial = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        output_padding: int | tuple[int, int] = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | tuple[int, int] = 1,
        padding_mode: str = "zeros",
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            output_padding,
            groups,
            bias,
            dilation,
            padding_mode,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

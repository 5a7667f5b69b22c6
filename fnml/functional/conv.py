"""Convolutions and transposed convolutions, 1-d and 2-d, torch's arguments and layouts.

PyTorch equivalent: ``torch.nn.functional.conv1d`` / ``conv2d`` / ``conv_transpose1d`` / ``conv_transpose2d``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from fnml._validation import (
    check_bool,
    check_choice,
    check_ndim,
    check_positive_int,
)
from fnml.functional._im2col import conv2d_im2col, use_im2col
from fnml.functional._shared import (
    accumulation_dtype,
    as_2d,
    channels_last_batched,
    from_2d,
    layout_name,
    lift_2d,
    ntuple,
    restore_layout,
)

__all__ = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"]


def conv_padding_pairs(
    padding: Any, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...], *, where: str
) -> tuple[tuple[int, int], ...]:
    """torch's padding argument (int, tuple, "valid", "same") as explicit (before, after) pairs per axis."""
    spatial = len(kernel)
    if isinstance(padding, str):
        check_choice("padding", padding, ("valid", "same"), where=where)
        if padding == "valid":
            return ((0, 0),) * spatial
        if any(s != 1 for s in stride):
            raise ValueError(
                f"{where}: padding='same' is not supported for strided convolutions (stride={stride}), "
                "as in torch; give explicit padding instead"
            )
        # torch: total d*(k-1), the odd extra row/column goes after (bottom/right).
        return tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dilation))
    return tuple((p, p) for p in ntuple("padding", padding, spatial, where=where, minimum=0))


def check_conv_input(x, in_channels, spatial, channels_last, where):
    """Channel count of the (batched, channels-last) input, with a hint when the layout looks swapped."""
    if x.shape[-1] == in_channels:
        return
    layout = layout_name(spatial, channels_last)
    if channels_last:
        shape, axis = x.shape, "last axis"
        looks_swapped = x.shape[1] == in_channels
        hint = f"; the input looks {layout_name(spatial, False)}: convert it with fnml.tensors.nchw_to_nhwc"
    else:
        shape, axis = (x.shape[0], x.shape[-1], *x.shape[1:-1]), "axis 1"  # back to torch's (N, C, *S)
        looks_swapped = x.shape[-2] == in_channels
        hint = f"; the input looks channels-last ({layout_name(spatial, True)}): pass channels_last=True"
    raise ValueError(
        f"{where}(in_channels={in_channels}) got an input with {x.shape[-1]} channels ({axis} of {layout} shape "
        f"{shape}); expected {in_channels}{hint if looks_swapped else ''}"
    )


def check_padded_size(x, pairs, kernel, dilation, layout, where):
    for axis, (before, after), k, d in zip(range(1, 1 + len(kernel)), pairs, kernel, dilation):
        padded = x.shape[axis] + before + after
        if padded < d * (k - 1) + 1:
            raise ValueError(
                f"{where}: padded input size {padded} (spatial axis {axis - 1} of the {layout} input) is smaller "
                f"than the effective kernel size {d * (k - 1) + 1} (kernel_size={kernel}, dilation={dilation})"
            )


def _conv_nd(input, weight, bias, stride, padding, dilation, groups, channels_last, spatial, where):
    """Shared body of conv1d / conv2d: checks, layout, the lowering rule, bias."""
    groups = check_positive_int("groups", groups, where=where)
    x, unbatched = channels_last_batched(input, spatial, channels_last, where=where)
    weight = jnp.asarray(weight)
    kernel_layout = ("WIO" if spatial == 1 else "HWIO") if channels_last else ("OIW" if spatial == 1 else "OIHW")
    check_ndim("weight", weight.shape, (spatial + 2,), where=f"{where} ({kernel_layout} weight)")
    if not channels_last:
        weight = jnp.moveaxis(weight, (0, 1), (-1, -2))  # (O, I/g, *k) -> (*k, I/g, O), e.g. OIHW -> HWIO
    kernel_size = tuple(weight.shape[:spatial])
    in_per_group, out_channels = weight.shape[-2], weight.shape[-1]
    if out_channels % groups:
        raise ValueError(f"{where}: out_channels={out_channels} (of the weight) must be divisible by groups={groups}")
    check_conv_input(x, in_per_group * groups, spatial, channels_last, where)
    stride = ntuple("stride", stride, spatial, where=where)
    dilation = ntuple("dilation", dilation, spatial, where=where)
    pairs = conv_padding_pairs(padding, kernel_size, stride, dilation, where=where)
    check_padded_size(x, pairs, kernel_size, dilation, layout_name(spatial, channels_last), where)
    if bias is not None:
        bias = jnp.asarray(bias)
        if bias.shape != (out_channels,):
            raise ValueError(f"{where}: bias must have shape ({out_channels},), got {bias.shape}")
    dtype = jnp.result_type(x, weight) if bias is None else jnp.result_type(x, weight, bias)
    bias = None if bias is None else bias.astype(dtype)
    y = conv_unchecked(x.astype(dtype), weight.astype(dtype), bias, stride, pairs, dilation, groups)
    return restore_layout(y, unbatched, channels_last)


def conv_unchecked(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None,
    stride: tuple[int, ...],
    padding: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
    groups: int,
) -> jax.Array:
    """The convolution on checked arrays of one dtype: ``x (N, *S, C)``, ``kernel (*k, C/groups, O)``,
    settings as tuples, ``padding`` as (before, after) pairs -> ``(N, *S_out, O)`` (the layers' entry)."""
    spatial, dtype = kernel.ndim - 2, x.dtype
    in_per_group, out_channels = kernel.shape[-2], kernel.shape[-1]
    x = as_2d(x, spatial)
    if spatial == 1:
        kernel = kernel[None]  # (k, I/g, O) -> (1, k, I/g, O)
    stride, dilation = lift_2d(stride, spatial, 1), lift_2d(dilation, spatial, 1)
    pairs = ((0, 0), padding[0]) if spatial == 1 else padding
    if use_im2col(in_per_group * groups, out_channels, kernel.shape[:2], groups):
        y = conv2d_im2col(x, kernel, stride, pairs, dilation)
    else:
        y = lax.conv_general_dilated(
            x,
            kernel,
            window_strides=stride,
            padding=pairs,
            rhs_dilation=dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
            preferred_element_type=accumulation_dtype(dtype),
        )
    if bias is not None:
        y = y + bias.astype(y.dtype)
    return from_2d(y.astype(dtype), spatial)


def conv1d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: int | tuple[int] = 1,
    padding: int | tuple[int] | str = 0,
    dilation: int | tuple[int] = 1,
    groups: int = 1,
    *,
    channels_last: bool = False,
) -> jax.Array:
    """1-D convolution (cross-correlation), torch's arguments and numbers.

    PyTorch equivalent: ``torch.nn.functional.conv1d(input, weight, bias=None, stride=1, padding=0,
    dilation=1, groups=1)``.

    Shapes (torch layout, the default): ``input (N, C_in, L)`` or unbatched ``(C_in, L)``, ``weight
    (C_out, C_in / groups, k)``, ``bias (C_out,)`` -> ``(N, C_out, L_out)``, ``L_out = (L + 2*padding -
    dilation*(k-1) - 1) // stride + 1``. ``padding``: int, ``(p,)``, ``"valid"`` or ``"same"`` (stride 1
    only; odd total padding puts the extra element at the end, as torch). With ``channels_last=True``
    the input is ``(N, L, C_in)`` and the weight ``(k, C_in / groups, C_out)`` (WIO, fnml's
    :class:`~fnml.layers.Conv1d` kernel). Runs as :func:`conv2d` over a unit height (same lowering rule).

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.conv1d(jnp.arange(5.0).reshape(1, 1, 5), jnp.ones((1, 1, 3))).tolist()
    [[[3.0, 6.0, 9.0]]]
    """
    check_bool("channels_last", channels_last, where="conv1d")
    return _conv_nd(input, weight, bias, stride, padding, dilation, groups, channels_last, 1, "conv1d")


def conv2d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    *,
    channels_last: bool = False,
) -> jax.Array:
    """2-D convolution (cross-correlation), torch's arguments and numbers.

    PyTorch equivalent: ``torch.nn.functional.conv2d(input, weight, bias=None, stride=1, padding=0,
    dilation=1, groups=1)``.

    Shapes (torch layout, the default): ``input (N, C_in, H, W)`` or unbatched ``(C_in, H, W)``,
    ``weight (C_out, C_in / groups, kh, kw)`` (OIHW), ``bias (C_out,)`` -> ``(N, C_out, H_out, W_out)``,
    ``H_out = (H + 2*pad - dilation*(kh-1) - 1) // stride + 1``. ``padding``: int, ``(ph, pw)``,
    ``"valid"`` or ``"same"`` (stride 1 only; odd total padding puts the extra row/column at the
    bottom/right, as torch). With ``channels_last=True`` the input is NHWC ``(N, H, W, C_in)`` and the
    weight HWIO ``(kh, kw, C_in / groups, C_out)`` = OIHW transposed ``(2, 3, 1, 0)`` (fnml's
    :class:`~fnml.layers.Conv2d` kernel); the output is NHWC.

    Lowering rule (same numbers either way, decided at trace time): on the CPU backend, with
    ``groups == 1``, a patch depth ``C_in * kh * kw >= 64`` and ``C_out >= 32``, the convolution runs as im2col: the
    ``kh * kw`` shifted strided views of the padded input are stacked into patches
    ``(N*H_out*W_out, kh*kw*C_in)`` and multiplied by the kernel reshaped to ``(kh*kw*C_in, C_out)`` in
    ONE 2-D matmul (its weight gradient contracts a single axis); otherwise ``lax.conv_general_dilated``.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.conv2d(jnp.ones((1, 1, 3, 3)), jnp.ones((1, 1, 2, 2)), padding=1).shape
    (1, 1, 4, 4)
    """
    check_bool("channels_last", channels_last, where="conv2d")
    return _conv_nd(input, weight, bias, stride, padding, dilation, groups, channels_last, 2, "conv2d")


def _transposed_to_forward_kernel(kernel: jax.Array, groups: int) -> jax.Array:
    """fnml's transposed kernel (*k, C_in, C_out/g) -> the equivalent forward HWIO kernel (*k, C_in/g, C_out),
    spatially flipped."""
    *k, cin, out_per_group = kernel.shape
    kernel = kernel.reshape(*k, groups, cin // groups, out_per_group)  # (*k, C_in, O/g) -> (*k, g, C_in/g, O/g)
    kernel = jnp.moveaxis(kernel, -3, -2)  # -> (*k, C_in/g, g, O/g)
    kernel = kernel.reshape(*k, cin // groups, groups * out_per_group)  # -> (*k, C_in/g, C_out), group-major
    return jnp.flip(kernel, axis=tuple(range(len(k))))


def _conv_transpose_nd(
    input, weight, bias, stride, padding, output_padding, groups, dilation, channels_last, spatial, where
):
    """Shared body of conv_transpose1d / conv_transpose2d: a forward convolution of the stride-dilated input."""
    groups = check_positive_int("groups", groups, where=where)
    x, unbatched = channels_last_batched(input, spatial, channels_last, where=where)
    weight = jnp.asarray(weight)
    kernel_layout = ("WIO" if spatial == 1 else "HWIO") if channels_last else ("IOW" if spatial == 1 else "IOHW")
    check_ndim("weight", weight.shape, (spatial + 2,), where=f"{where} ({kernel_layout} weight)")
    if not channels_last:
        weight = jnp.moveaxis(weight, (0, 1), (-2, -1))  # (C_in, O/g, *k) -> (*k, C_in, O/g)
    kernel_size = tuple(weight.shape[:spatial])
    in_channels, out_per_group = weight.shape[-2], weight.shape[-1]
    if in_channels % groups:
        raise ValueError(f"{where}: in_channels={in_channels} (of the weight) must be divisible by groups={groups}")
    check_conv_input(x, in_channels, spatial, channels_last, where)
    stride = ntuple("stride", stride, spatial, where=where)
    padding = ntuple("padding", padding, spatial, where=where, minimum=0)
    output_padding = ntuple("output_padding", output_padding, spatial, where=where, minimum=0)
    dilation = ntuple("dilation", dilation, spatial, where=where)
    check_output_padding(output_padding, stride, dilation, where)
    check_transposed_output_size(x, kernel_size, stride, padding, dilation, output_padding, where)
    out_channels = out_per_group * groups
    if bias is not None:
        bias = jnp.asarray(bias)
        if bias.shape != (out_channels,):
            raise ValueError(f"{where}: bias must have shape ({out_channels},), got {bias.shape}")
    dtype = jnp.result_type(x, weight) if bias is None else jnp.result_type(x, weight, bias)
    bias = None if bias is None else bias.astype(dtype)
    y = conv_transpose_unchecked(
        x.astype(dtype), weight.astype(dtype), bias, stride, padding, output_padding, dilation, groups
    )
    return restore_layout(y, unbatched, channels_last)


def conv_transpose_unchecked(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    output_padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
) -> jax.Array:
    """The transposed convolution on checked arrays of one dtype: ``x (N, *S, C_in)``, ``kernel (*k, C_in,
    C_out/groups)``, settings as tuples -> ``(N, *S_out, C_out)`` (the layers' entry)."""
    spatial, dtype = kernel.ndim - 2, x.dtype
    x = as_2d(x, spatial)
    if spatial == 1:
        kernel = kernel[None]  # (k, C_in, O/g) -> (1, k, C_in, O/g)
    kernel = _transposed_to_forward_kernel(kernel, groups)
    stride, dilation = lift_2d(stride, spatial, 1), lift_2d(dilation, spatial, 1)
    padding, output_padding = lift_2d(padding, spatial, 0), lift_2d(output_padding, spatial, 0)
    kernel_hw = kernel.shape[:2]
    # Transposed conv = conv of the input dilated by `stride`, padded d*(k-1)-p before and d*(k-1)-p+op after
    # (negative padding crops), with the flipped kernel.
    pairs = tuple(
        (d * (k - 1) - p, d * (k - 1) - p + op) for k, d, p, op in zip(kernel_hw, dilation, padding, output_padding)
    )
    y = lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(1, 1),
        padding=pairs,
        lhs_dilation=stride,
        rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
        preferred_element_type=accumulation_dtype(dtype),
    )
    if bias is not None:
        y = y + bias.astype(y.dtype)
    return from_2d(y.astype(dtype), spatial)


def check_transposed_output_size(x, kernel_size, stride, padding, dilation, output_padding, where):
    """The output of a transposed convolution of the channels-last ``x`` has a positive size on every axis."""
    sizes = [
        (size - 1) * s - 2 * p + d * (k - 1) + op + 1
        for size, s, p, d, k, op in zip(x.shape[1:-1], stride, padding, dilation, kernel_size, output_padding)
    ]
    if min(sizes) < 1:
        raise ValueError(
            f"{where}: the output size {tuple(sizes)} is not positive for an input of spatial size "
            f"{tuple(x.shape[1:-1])} with kernel_size={kernel_size}, stride={stride}, padding={padding}, "
            f"dilation={dilation}, output_padding={output_padding}"
        )


def check_output_padding(output_padding, stride, dilation, where):
    for op, s, d in zip(output_padding, stride, dilation):
        if op >= s and op >= d:
            raise ValueError(
                f"{where}: output_padding must be smaller than either stride or dilation (as torch), got "
                f"output_padding={output_padding}, stride={stride}, dilation={dilation}"
            )


def conv_transpose1d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: int | tuple[int] = 1,
    padding: int | tuple[int] = 0,
    output_padding: int | tuple[int] = 0,
    groups: int = 1,
    dilation: int | tuple[int] = 1,
    *,
    channels_last: bool = False,
) -> jax.Array:
    """1-D transposed convolution (the gradient of :func:`conv1d` w.r.t. its input), torch's numbers.

    PyTorch equivalent: ``torch.nn.functional.conv_transpose1d(input, weight, bias=None, stride=1,
    padding=0, output_padding=0, groups=1, dilation=1)`` (note torch's order: ``groups`` before
    ``dilation``).

    Shapes (torch layout): ``input (N, C_in, L)`` or ``(C_in, L)``, ``weight (C_in, C_out / groups, k)``
    -> ``(N, C_out, L_out)``, ``L_out = (L - 1)*stride - 2*padding + dilation*(k-1) + output_padding +
    1``. ``output_padding`` must be smaller than ``stride`` or ``dilation`` (torch's rule). With
    ``channels_last=True``: input ``(N, L, C_in)``, weight ``(k, C_in, C_out / groups)`` = torch's
    weight transposed ``(2, 0, 1)`` (fnml's :class:`~fnml.layers.ConvTranspose1d` kernel).

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.conv_transpose1d(jnp.ones((1, 1, 3)), jnp.ones((1, 1, 2)), stride=2).tolist()
    [[[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]]
    """
    check_bool("channels_last", channels_last, where="conv_transpose1d")
    return _conv_transpose_nd(
        input, weight, bias, stride, padding, output_padding, groups, dilation, channels_last, 1, "conv_transpose1d"
    )


def conv_transpose2d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    output_padding: int | tuple[int, int] = 0,
    groups: int = 1,
    dilation: int | tuple[int, int] = 1,
    *,
    channels_last: bool = False,
) -> jax.Array:
    """2-D transposed convolution (the gradient of :func:`conv2d` w.r.t. its input), torch's numbers.

    PyTorch equivalent: ``torch.nn.functional.conv_transpose2d(input, weight, bias=None, stride=1,
    padding=0, output_padding=0, groups=1, dilation=1)`` (torch's order: ``groups`` before ``dilation``).

    Shapes (torch layout): ``input (N, C_in, H, W)`` or ``(C_in, H, W)``, ``weight (C_in, C_out / groups,
    kh, kw)`` -> ``(N, C_out, H_out, W_out)``, ``H_out = (H - 1)*stride - 2*padding + dilation*(kh-1) +
    output_padding + 1``; ``output_padding`` must be smaller than ``stride`` or ``dilation``. With
    ``channels_last=True``: NHWC input and the weight ``(kh, kw, C_in, C_out / groups)`` = torch's
    weight transposed ``(2, 3, 0, 1)`` (fnml's :class:`~fnml.layers.ConvTranspose2d` kernel). Computed
    as ``lax.conv_general_dilated`` of the stride-dilated input with the spatially flipped kernel.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.conv_transpose2d(jnp.ones((1, 4, 5, 5)), jnp.ones((4, 2, 3, 3)), stride=2, padding=1,
    ...                    output_padding=1).shape
    (1, 2, 10, 10)
    """
    check_bool("channels_last", channels_last, where="conv_transpose2d")
    return _conv_transpose_nd(
        input, weight, bias, stride, padding, output_padding, groups, dilation, channels_last, 2, "conv_transpose2d"
    )

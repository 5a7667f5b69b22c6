"""Pooling over channels-last inputs: thin modules over ``fnml.functional``'s pools.

PyTorch equivalent: ``torch/nn/modules/pooling.py``.
"""

from __future__ import annotations

from typing import Any

import jax

from fnml._validation import check_bool, check_positive_int
from fnml.functional._shared import ntuple
from fnml.functional.pooling import (
    PoolArgs,
    adaptive_avg_pool_with_size,
    adaptive_max_pool_with_size,
    adaptive_output,
    avg_pool_with_args,
    max_pool_with_args,
)
from fnml.layers._facts import LOWERS_OP_BY_OP, PARAMETERLESS, LayerCall, TorchFacts
from fnml.layers.base import Module

__all__ = [
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "MaxPool1d",
    "MaxPool2d",
]


class _MaxPoolNd(Module):
    """Shared body of MaxPool1d / MaxPool2d: torch's settings, checked once here, math in functional."""

    _spatial = 2

    def __init__(self, kernel_size, stride, padding, dilation, return_indices, ceil_mode):
        where = type(self).__name__
        check_bool("return_indices", return_indices, where=where)
        # Checked once, here (torch's stored values are kept as given, for printing).
        self._args = PoolArgs(kernel_size, stride, padding, dilation, ceil_mode, self._spatial, where)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def __call__(self, x: jax.Array) -> jax.Array | tuple[jax.Array, jax.Array]:
        return max_pool_with_args(x, self._args, self.return_indices, channels_last=True)

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )


class MaxPool1d(_MaxPoolNd):
    """Max pooling over channels-last sequences with torch's defaults and gradient.

    PyTorch equivalent: ``torch.nn.MaxPool1d(kernel_size, stride=None, padding=0, dilation=1,
    return_indices=False, ceil_mode=False)``.

    Shapes: ``(N, L, C)`` or ``(L, C)`` -> ``(N, L_out, C)`` (torch: ``(N, C, L)``), ``L_out`` by torch's
    formula. ``stride`` defaults to ``kernel_size``; -inf padding, at most half the kernel size; the
    gradient goes to the FIRST maximum of each window, as torch. ``return_indices=True`` returns
    ``(values, indices)`` with torch's int64 positions along ``L``. Calls
    ``functional.max_pool1d(..., channels_last=True)``.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.MaxPool1d(2)(jnp.ones((4, 10, 3))).shape
    (4, 5, 3)
    """

    torch_facts = TorchFacts(
        "MaxPool1d",
        slots=PARAMETERLESS,
        layout="nlc",
        settings=("kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode"),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    _spatial = 1

    def __init__(
        self,
        kernel_size: int | tuple[int],
        stride: int | tuple[int] | None = None,
        padding: int | tuple[int] = 0,
        dilation: int | tuple[int] = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ):
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)


class MaxPool2d(_MaxPoolNd):
    """Max pooling over channels-last images with torch's defaults and gradient.

    PyTorch equivalent: ``torch.nn.MaxPool2d(kernel_size, stride=None, padding=0, dilation=1,
    return_indices=False, ceil_mode=False)``.

    Shapes: ``(N, H, W, C)`` or ``(H, W, C)`` -> ``(N, H_out, W_out, C)``, ``H_out`` by torch's formula
    (``ceil_mode`` rounds up, the last window must start inside the input or its left padding).
    ``stride`` defaults to ``kernel_size`` (``nnx.max_pool``: 1). Padding is -inf, at most half the
    kernel size (torch's rule). The gradient goes entirely to the FIRST maximal element of each window
    (row-major), as torch's (``jnp.max`` splits it among ties); NaN propagates as in torch. ``return_indices=True``
    returns ``(values, indices)``, torch's flat ``h * W + w`` (int64).

    Performance (``functional.max_pool2d``, which this calls with ``channels_last=True``): windows that
    tile the input (stride == kernel, no padding/dilation) are a reshape, the general case stacks the
    kh*kw strided views; the max is read through a one-hot of the argmax, so the backward pass is an
    elementwise select, much cheaper on XLA CPU than ``nnx.max_pool``'s select-and-scatter, which
    dominates a small CNN step.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.MaxPool2d(2)(jnp.ones((8, 28, 28, 16))).shape
    (8, 14, 14, 16)
    """

    torch_facts = TorchFacts(
        "MaxPool2d",
        slots=PARAMETERLESS,
        layout="nhwc",
        settings=("kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode"),
        capture=LayerCall(("aten.max_pool2d",), "nchw"),
        autocast=False,
    )

    _spatial = 2

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ):
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)


class _AvgPoolNd(Module):
    """Shared body of AvgPool1d / AvgPool2d."""

    _spatial = 2

    def __init__(self, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        where = type(self).__name__
        self._args = PoolArgs(kernel_size, stride, padding, 1, ceil_mode, self._spatial, where)
        check_bool("count_include_pad", count_include_pad, where=where)
        if divisor_override is not None:
            check_positive_int("divisor_override", divisor_override, where=where)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode, self.count_include_pad, self.divisor_override = ceil_mode, count_include_pad, divisor_override

    def __call__(self, x: jax.Array) -> jax.Array:
        divisor_override = self.divisor_override
        return avg_pool_with_args(x, self._args, self.count_include_pad, divisor_override, channels_last=True)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool1d(_AvgPoolNd):
    """Average pooling over channels-last sequences with torch's divisor rules.

    PyTorch equivalent: ``torch.nn.AvgPool1d(kernel_size, stride=None, padding=0, ceil_mode=False,
    count_include_pad=True)``.

    Shapes: ``(N, L, C)`` or ``(L, C)`` -> ``(N, L_out, C)`` (torch: ``(N, C, L)``). Divisors as
    :class:`AvgPool2d` over a unit height, as torch computes it. Settings are stored as 1-tuples, as torch
    (``kernel_size=(3,)``). Calls ``functional.avg_pool1d(..., channels_last=True)``.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> pool = layers.AvgPool1d(3, stride=2, padding=1)
    >>> pool(jnp.ones((4, 10, 3))).shape
    (4, 5, 3)
    >>> print(pool)
    AvgPool1d(kernel_size=(3,), stride=(2,), padding=(1,))
    """

    torch_facts = TorchFacts(
        "AvgPool1d",
        slots=PARAMETERLESS,
        layout="nlc",
        settings=("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    _spatial = 1

    def __init__(
        self,
        kernel_size: int | tuple[int],
        stride: int | tuple[int] | None = None,
        padding: int | tuple[int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
    ):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad, None)
        # torch's AvgPool1d stores _single(...) tuples (and prints them).
        self.kernel_size = ntuple("kernel_size", kernel_size, 1, where="AvgPool1d")
        self.stride = ntuple("stride", self.stride, 1, where="AvgPool1d")
        self.padding = ntuple("padding", padding, 1, where="AvgPool1d", minimum=0)
        self._args = PoolArgs(self.kernel_size, self.stride, self.padding, 1, ceil_mode, 1, "AvgPool1d")


class AvgPool2d(_AvgPoolNd):
    """Average pooling over channels-last images with torch's divisor rules.

    PyTorch equivalent: ``torch.nn.AvgPool2d(kernel_size, stride=None, padding=0, ceil_mode=False,
    count_include_pad=True, divisor_override=None)``.

    Shapes as :class:`MaxPool2d`. Each window's sum (zero padding) is divided by: ``divisor_override``
    if given; else with ``count_include_pad`` the window size clipped to the padded input (a ceil-mode
    window hanging past the padding does not count the overhang, as torch); else the number of real
    input elements in the window. ``stride`` defaults to ``kernel_size``. Calls
    ``functional.avg_pool2d(..., channels_last=True)``.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.AvgPool2d(2)(jnp.ones((8, 28, 28, 16))).shape
    (8, 14, 14, 16)
    """

    torch_facts = TorchFacts(
        "AvgPool2d",
        slots=PARAMETERLESS,
        layout="nhwc",
        settings=("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
        capture=LayerCall(("aten.avg_pool2d",), "nchw"),
        autocast=False,
    )

    _spatial = 2

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


class _AdaptivePoolNd(Module):
    _spatial = 2

    def __init__(self, output_size: Any, return_indices: bool = False):
        where = type(self).__name__
        self._output_items = adaptive_output(output_size, self._spatial, where)
        check_bool("return_indices", return_indices, where=where)
        self.output_size = output_size
        self.return_indices = return_indices

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveAvgPool1d(_AdaptivePoolNd):
    """Average pooling to a fixed length over channels-last sequences, torch's window formula.

    PyTorch equivalent: ``torch.nn.AdaptiveAvgPool1d(output_size)``.

    Shapes: ``(N, L, C)`` or ``(L, C)`` -> ``(N, output_size, C)``; output ``i`` averages
    ``[floor(i*L/out), ceil((i+1)*L/out))``. Calls ``functional.adaptive_avg_pool1d(..., channels_last=True)``.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.AdaptiveAvgPool1d(4)(jnp.ones((2, 10, 3))).shape
    (2, 4, 3)
    """

    torch_facts = TorchFacts(
        "AdaptiveAvgPool1d",
        slots=PARAMETERLESS,
        layout="nlc",
        settings=("output_size",),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    _spatial = 1

    def __init__(self, output_size: int | tuple[int]):
        super().__init__(output_size)

    def __call__(self, x: jax.Array) -> jax.Array:
        return adaptive_avg_pool_with_size(x, self._output_items, channels_last=True, where=type(self).__name__)


class AdaptiveAvgPool2d(_AdaptivePoolNd):
    """Average pooling to a fixed output size over channels-last images, torch's window formula.

    PyTorch equivalent: ``torch.nn.AdaptiveAvgPool2d(output_size)``.

    Shapes: ``(N, H, W, C)`` or ``(H, W, C)`` -> ``(N, out_h, out_w, C)``; ``output_size`` is an int or a
    tuple whose ``None`` entries keep the input size. Output ``i`` averages input rows
    ``[floor(i * H / out_h), ceil((i + 1) * H / out_h))`` (windows may overlap), as torch. Calls
    ``functional.adaptive_avg_pool2d(..., channels_last=True)``.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.AdaptiveAvgPool2d((1, 1))(jnp.ones((8, 7, 7, 64))).shape
    (8, 1, 1, 64)
    """

    torch_facts = TorchFacts(
        "AdaptiveAvgPool2d",
        slots=PARAMETERLESS,
        layout="nhwc",
        settings=("output_size",),
        capture=LayerCall(("aten.adaptive_avg_pool2d",), "nchw"),
        autocast=False,
    )

    _spatial = 2

    def __init__(self, output_size: int | tuple[int | None, int | None]):
        super().__init__(output_size)

    def __call__(self, x: jax.Array) -> jax.Array:
        return adaptive_avg_pool_with_size(x, self._output_items, channels_last=True, where=type(self).__name__)


class AdaptiveMaxPool1d(_AdaptivePoolNd):
    """Max pooling to a fixed length over channels-last sequences, torch's windows and gradient.

    PyTorch equivalent: ``torch.nn.AdaptiveMaxPool1d(output_size, return_indices=False)``.

    Shapes: ``(N, L, C)`` or ``(L, C)`` -> ``(N, output_size, C)``; windows as :class:`AdaptiveAvgPool1d`,
    the gradient to the first maximum of each window. ``return_indices=True``: ``(values, indices)``.
    Calls ``functional.adaptive_max_pool1d(..., channels_last=True)``.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.AdaptiveMaxPool1d(4)(jnp.ones((2, 10, 3))).shape
    (2, 4, 3)
    """

    torch_facts = TorchFacts(
        "AdaptiveMaxPool1d",
        slots=PARAMETERLESS,
        layout="nlc",
        settings=("output_size", "return_indices"),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    _spatial = 1

    def __init__(self, output_size: int | tuple[int], return_indices: bool = False):
        super().__init__(output_size, return_indices)

    def __call__(self, x: jax.Array) -> jax.Array | tuple[jax.Array, jax.Array]:
        where = type(self).__name__
        return adaptive_max_pool_with_size(x, self._output_items, self.return_indices, channels_last=True, where=where)


class AdaptiveMaxPool2d(_AdaptivePoolNd):
    """Max pooling to a fixed output size over channels-last images, torch's windows and gradient.

    PyTorch equivalent: ``torch.nn.AdaptiveMaxPool2d(output_size, return_indices=False)``.

    Shapes: ``(N, H, W, C)`` or ``(H, W, C)`` -> ``(N, out_h, out_w, C)``; ``None`` entries keep the input
    size; windows as :class:`AdaptiveAvgPool2d`, the gradient to the first maximum (row-major) of each
    window, as torch. ``return_indices=True``: ``(values, indices)`` with torch's flat ``h * W + w``.
    Calls ``functional.adaptive_max_pool2d(..., channels_last=True)``.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.AdaptiveMaxPool2d((2, None))(jnp.ones((2, 7, 5, 3))).shape
    (2, 2, 5, 3)
    """

    torch_facts = TorchFacts(
        "AdaptiveMaxPool2d",
        slots=PARAMETERLESS,
        layout="nhwc",
        settings=("output_size", "return_indices"),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    _spatial = 2

    def __init__(self, output_size: int | tuple[int | None, int | None], return_indices: bool = False):
        super().__init__(output_size, return_indices)

    def __call__(self, x: jax.Array) -> jax.Array | tuple[jax.Array, jax.Array]:
        where = type(self).__name__
        return adaptive_max_pool_with_size(x, self._output_items, self.return_indices, channels_last=True, where=where)

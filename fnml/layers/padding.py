"""Padding layers over channels-last inputs: thin modules over ``fnml.functional.pad``.

PyTorch equivalent: ``torch/nn/modules/padding.py``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnml._validation import check_ndim, check_number
from fnml.functional.padding import pad_unchecked
from fnml.layers._facts import LOWERS_OP_BY_OP, PARAMETERLESS, TorchFacts
from fnml.layers.base import Module

__all__ = [
    "CircularPad1d",
    "CircularPad2d",
    "ConstantPad1d",
    "ConstantPad2d",
    "ReflectionPad1d",
    "ReflectionPad2d",
    "ReplicationPad1d",
    "ReplicationPad2d",
    "ZeroPad1d",
    "ZeroPad2d",
]

_LAYOUTS = {1: "(N, L, C) or unbatched (L, C)", 2: "NHWC or unbatched HWC"}


def _padding_tuple(padding: Any, spatial: int, where: str) -> tuple[int, ...]:
    """torch's padding argument: an int (every side) or a tuple of 2*spatial ints, last dimension first."""
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
        return (int(padding),) * (2 * spatial)
    if (
        not isinstance(padding, (tuple, list))
        or len(padding) != 2 * spatial
        or not all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in padding)
    ):
        sides = "(left, right)" if spatial == 1 else "(left, right, top, bottom)"
        raise TypeError(f"{where}: padding must be an int or a tuple {sides} of ints, got padding={padding!r}")
    return tuple(int(p) for p in padding)


class _PadNd(Module):
    """Shared body: torch's padding tuple (last spatial dimension first) over channels-last data."""

    _spatial = 2
    _mode = "constant"

    def __init__(self, padding: Any, value: float = 0.0):
        where = type(self).__name__
        self.padding = _padding_tuple(padding, self._spatial, where)
        if self._mode == "constant":
            self.value = check_number("value", value, where=where)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        n = self._spatial
        check_ndim("input", x.shape, (n + 1, n + 2), where=f"{type(self).__name__} ({_LAYOUTS[n]})")
        value = self.value if self._mode == "constant" else 0.0
        # padding and value were checked at construction: the functional core checks only the input's shape.
        return pad_unchecked(x, self.padding, self._mode, value, channels_last=True)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class _ConstantPadNd(_PadNd):
    def extra_repr(self) -> str:
        return f"padding={self.padding}, value={self.value}"


class ConstantPad1d(_ConstantPadNd):
    """Pad the length of channels-last sequences with a constant.

    PyTorch equivalent: ``torch.nn.ConstantPad1d(padding, value)``.

    ``padding``: an int or ``(left, right)``; negative values crop, as torch. Shapes: ``(N, L, C)`` or
    ``(L, C)`` (torch: ``(N, C, L)``) -> ``(N, L + left + right, C)``. Calls
    ``functional.pad(x, padding, "constant", value, channels_last=True)``.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.ConstantPad1d((1, 2), 3.5)(jnp.zeros((1, 2, 1)))[0, :, 0].tolist()
    [3.5, 0.0, 0.0, 3.5, 3.5]
    """

    torch_facts = TorchFacts(
        "ConstantPad1d",
        slots=PARAMETERLESS,
        layout="nlc",
        settings=("padding", "value"),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    _spatial = 1

    def __init__(self, padding: int | tuple[int, int], value: float):
        super().__init__(padding, value)


class ConstantPad2d(_ConstantPadNd):
    """Pad the height and width of channels-last images with a constant.

    PyTorch equivalent: ``torch.nn.ConstantPad2d(padding, value)``.

    ``padding``: an int or ``(left, right, top, bottom)`` (torch's order: width first); negative values
    crop. Shapes: ``(N, H, W, C)`` or ``(H, W, C)`` -> ``(N, H + top + bottom, W + left + right, C)``.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.ConstantPad2d((1, 0, 2, 0), 1.0)(jnp.zeros((1, 2, 2, 3))).shape
    (1, 4, 3, 3)
    """

    torch_facts = TorchFacts(
        "ConstantPad2d",
        slots=PARAMETERLESS,
        layout="nhwc",
        settings=("padding", "value"),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    _spatial = 2

    def __init__(self, padding: int | tuple[int, int, int, int], value: float):
        super().__init__(padding, value)


class ZeroPad1d(_ConstantPadNd):
    """Pad the length of channels-last sequences with zeros.

    PyTorch equivalent: ``torch.nn.ZeroPad1d(padding)``.

    As :class:`ConstantPad1d` with ``value=0.0``.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> print(layers.ZeroPad1d(2))
    ZeroPad1d((2, 2))
    """

    torch_facts = TorchFacts(
        "ZeroPad1d",
        slots=PARAMETERLESS,
        layout="nlc",
        settings=("padding", "value"),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    _spatial = 1

    def __init__(self, padding: int | tuple[int, int]):
        super().__init__(padding, 0.0)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class ZeroPad2d(_ConstantPadNd):
    """Pad the height and width of channels-last images with zeros.

    PyTorch equivalent: ``torch.nn.ZeroPad2d(padding)``.

    As :class:`ConstantPad2d` with ``value=0.0``: ``padding`` is an int or ``(left, right, top, bottom)``.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.ZeroPad2d((1, 1, 2, 0))(jnp.ones((1, 3, 3, 2))).shape
    (1, 5, 5, 2)
    """

    torch_facts = TorchFacts(
        "ZeroPad2d",
        slots=PARAMETERLESS,
        layout="nhwc",
        settings=("padding", "value"),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    _spatial = 2

    def __init__(self, padding: int | tuple[int, int, int, int]):
        super().__init__(padding, 0.0)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class ReflectionPad1d(_PadNd):
    """Pad channels-last sequences with the reflection of the input (edge not repeated).

    PyTorch equivalent: ``torch.nn.ReflectionPad1d(padding)``.

    ``padding``: an int or ``(left, right)``, each smaller than the length. Shapes: ``(N, L, C)`` or
    ``(L, C)``. Calls ``functional.pad(x, padding, "reflect", channels_last=True)``.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.ReflectionPad1d(2)(jnp.arange(3.0).reshape(1, 3, 1))[0, :, 0].tolist()
    [2.0, 1.0, 0.0, 1.0, 2.0, 1.0, 0.0]
    """

    torch_facts = TorchFacts(
        "ReflectionPad1d",
        slots=PARAMETERLESS,
        layout="nlc",
        settings=("padding",),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    _spatial = 1
    _mode = "reflect"

    def __init__(self, padding: int | tuple[int, int]):
        super().__init__(padding)


class ReflectionPad2d(_PadNd):
    """Pad channels-last images with the reflection of the input (edge not repeated).

    PyTorch equivalent: ``torch.nn.ReflectionPad2d(padding)``.

    ``padding``: an int or ``(left, right, top, bottom)``, each smaller than the dimension it pads.
    Shapes: ``(N, H, W, C)`` or ``(H, W, C)``.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.ReflectionPad2d(1)(jnp.ones((1, 3, 3, 2))).shape
    (1, 5, 5, 2)
    """

    torch_facts = TorchFacts(
        "ReflectionPad2d",
        slots=PARAMETERLESS,
        layout="nhwc",
        settings=("padding",),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    _spatial = 2
    _mode = "reflect"

    def __init__(self, padding: int | tuple[int, int, int, int]):
        super().__init__(padding)


class ReplicationPad1d(_PadNd):
    """Pad channels-last sequences by repeating the edge values.

    PyTorch equivalent: ``torch.nn.ReplicationPad1d(padding)``.

    ``padding``: an int or ``(left, right)`` (any size). Shapes: ``(N, L, C)`` or ``(L, C)``.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.ReplicationPad1d((2, 1))(jnp.arange(3.0).reshape(1, 3, 1))[0, :, 0].tolist()
    [0.0, 0.0, 0.0, 1.0, 2.0, 2.0]
    """

    torch_facts = TorchFacts(
        "ReplicationPad1d",
        slots=PARAMETERLESS,
        layout="nlc",
        settings=("padding",),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    _spatial = 1
    _mode = "replicate"

    def __init__(self, padding: int | tuple[int, int]):
        super().__init__(padding)


class ReplicationPad2d(_PadNd):
    """Pad channels-last images by repeating the edge values.

    PyTorch equivalent: ``torch.nn.ReplicationPad2d(padding)``.

    ``padding``: an int or ``(left, right, top, bottom)``. Shapes: ``(N, H, W, C)`` or ``(H, W, C)``.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.ReplicationPad2d((1, 1, 0, 2))(jnp.ones((1, 3, 3, 2))).shape
    (1, 5, 5, 2)
    """

    torch_facts = TorchFacts(
        "ReplicationPad2d",
        slots=PARAMETERLESS,
        layout="nhwc",
        settings=("padding",),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    _spatial = 2
    _mode = "replicate"

    def __init__(self, padding: int | tuple[int, int, int, int]):
        super().__init__(padding)


class CircularPad1d(_PadNd):
    """Pad channels-last sequences by wrapping around (circular padding).

    PyTorch equivalent: ``torch.nn.CircularPad1d(padding)``.

    ``padding``: an int or ``(left, right)``, each at most the length. Shapes: ``(N, L, C)`` or ``(L, C)``.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.CircularPad1d(1)(jnp.arange(3.0).reshape(1, 3, 1))[0, :, 0].tolist()
    [2.0, 0.0, 1.0, 2.0, 0.0]
    """

    torch_facts = TorchFacts(
        "CircularPad1d",
        slots=PARAMETERLESS,
        layout="nlc",
        settings=("padding",),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    _spatial = 1
    _mode = "circular"

    def __init__(self, padding: int | tuple[int, int]):
        super().__init__(padding)


class CircularPad2d(_PadNd):
    """Pad channels-last images by wrapping around (circular padding).

    PyTorch equivalent: ``torch.nn.CircularPad2d(padding)``.

    ``padding``: an int or ``(left, right, top, bottom)``, each at most the dimension it pads.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.CircularPad2d(1)(jnp.ones((1, 3, 3, 2))).shape
    (1, 5, 5, 2)
    """

    torch_facts = TorchFacts(
        "CircularPad2d",
        slots=PARAMETERLESS,
        layout="nhwc",
        settings=("padding",),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    _spatial = 2
    _mode = "circular"

    def __init__(self, padding: int | tuple[int, int, int, int]):
        super().__init__(padding)

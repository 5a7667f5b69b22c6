"""Elementwise activations, softmax and log-softmax, with torch's gradients at the kinks.

PyTorch equivalent: the activations of ``torch.nn.functional`` (``relu``, ``gelu``, ``softmax``, ...).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fnml._validation import (
    check_bool,
    check_choice,
    check_int,
    check_number,
)
from fnml.functional._shared import accumulation_dtype, as_float_input

__all__ = [
    "celu",
    "elu",
    "gelu",
    "glu",
    "hardsigmoid",
    "hardswish",
    "hardtanh",
    "leaky_relu",
    "log_softmax",
    "logsigmoid",
    "mish",
    "prelu",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "softsign",
    "tanh",
    "threshold",
]


# Torch's elementwise activations, with the gradient torch defines at each kink (written with jnp.where on the
# same comparison torch's backward kernel uses, so relu'(0) = 0, hardtanh' = 0 at both bounds, leaky_relu'(0) =
# negative_slope, elu'(0) = alpha, threshold' = 0 at the threshold). ``inplace`` is accepted (torch's signature)
# and ignored: JAX arrays are immutable, the returned array is the result either way.


def _check_inplace(inplace: Any, where: str) -> None:
    check_bool("inplace", inplace, where=where)


def relu(input: jax.Array, inplace: bool = False) -> jax.Array:
    """``max(x, 0)``; gradient 0 at ``x = 0`` as in torch; NaN stays NaN (with gradient 1, as torch's).

    PyTorch equivalent: ``torch.nn.functional.relu(input, inplace=False)`` (``inplace`` is a no-op).

    >>> print(relu(jnp.array([-1.0, 0.0, 2.0])).round(4))
    [0. 0. 2.]
    """
    _check_inplace(inplace, "relu")
    return relu_unchecked(as_float_input(input, "relu"))


def relu_unchecked(x: jax.Array) -> jax.Array:
    """:func:`relu` of a floating ``x`` (the layers' entry: settings checked once, at construction)."""
    # torch's backward passes the gradient where NOT (result <= 0): a NaN passes, as here.
    return jnp.where(x <= 0, jnp.zeros_like(x), x)


def threshold(input: jax.Array, threshold: float, value: float, inplace: bool = False) -> jax.Array:
    """``x if x > threshold else value``; gradient 0 where ``x <= threshold``; NaN stays NaN.

    PyTorch equivalent: ``torch.nn.functional.threshold(input, threshold, value, inplace=False)``.

    >>> print(threshold(jnp.array([0.5, 1.0, 2.0]), 1.0, -3.0).round(4))
    [-3. -3.  2.]
    """
    check_number("threshold", threshold, where="threshold")
    check_number("value", value, where="threshold")
    _check_inplace(inplace, "threshold")
    return threshold_unchecked(as_float_input(input, "threshold"), threshold, value)


def threshold_unchecked(x: jax.Array, threshold: float, value: float) -> jax.Array:
    """:func:`threshold` of a floating ``x`` with checked settings (the layers' entry)."""
    # torch: x <= threshold ? value : x (a NaN input is not <= anything, so it passes through).
    return jnp.where(x <= threshold, jnp.asarray(value, x.dtype), x)


def hardtanh(input: jax.Array, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> jax.Array:
    """``clamp(x, min_val, max_val)``; gradient 1 strictly inside, 0 at and beyond both bounds (torch's rule).

    PyTorch equivalent: ``torch.nn.functional.hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False)``.

    ``jnp.clip`` would give gradient 1/2 at a bound; this follows torch. ``min_val > max_val`` is a
    ``ValueError`` as in torch.

    >>> print(hardtanh(jnp.array([-2.0, 0.5, 3.0])).round(4))
    [-1.   0.5  1. ]
    """
    check_number("min_val", min_val, where="hardtanh")
    check_number("max_val", max_val, where="hardtanh")
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val cannot be greater than max_val, got min_val={min_val}, max_val={max_val}")
    _check_inplace(inplace, "hardtanh")
    return hardtanh_unchecked(as_float_input(input, "hardtanh"), min_val, max_val)


def hardtanh_unchecked(x: jax.Array, min_val: float, max_val: float) -> jax.Array:
    """:func:`hardtanh` of a floating ``x`` with checked bounds (the layers' entry)."""
    low, high = jnp.asarray(min_val, x.dtype), jnp.asarray(max_val, x.dtype)
    # Constants at and beyond the bounds: gradient 0 there, 1 inside (and for NaN, as torch's kernel).
    return jnp.where(x <= low, low, jnp.where(x >= high, high, x))


def relu6(input: jax.Array, inplace: bool = False) -> jax.Array:
    """``min(max(x, 0), 6)``: torch's ``hardtanh(x, 0, 6)``, gradient 0 at 0 and at 6.

    PyTorch equivalent: ``torch.nn.functional.relu6(input, inplace=False)``.

    >>> print(relu6(jnp.array([-1.0, 3.0, 7.0])).round(4))
    [0. 3. 6.]
    """
    _check_inplace(inplace, "relu6")
    return relu6_unchecked(as_float_input(input, "relu6"))


def relu6_unchecked(x: jax.Array) -> jax.Array:
    """:func:`relu6` of a floating ``x`` (the layers' entry)."""
    return hardtanh_unchecked(x, 0.0, 6.0)


def leaky_relu(input: jax.Array, negative_slope: float = 0.01, inplace: bool = False) -> jax.Array:
    """``x if x > 0 else negative_slope * x``; gradient ``negative_slope`` at ``x = 0`` as in torch.

    PyTorch equivalent: ``torch.nn.functional.leaky_relu(input, negative_slope=0.01, inplace=False)``.

    ``jax.nn.leaky_relu`` gives gradient 1 at 0; this follows torch.

    >>> print(np.asarray(leaky_relu(jnp.array([-1.0, 2.0]), 0.1)).round(4))
    [-0.1  2. ]
    """
    check_number("negative_slope", negative_slope, where="leaky_relu")
    _check_inplace(inplace, "leaky_relu")
    return leaky_relu_unchecked(as_float_input(input, "leaky_relu"), negative_slope)


def leaky_relu_unchecked(x: jax.Array, negative_slope: float) -> jax.Array:
    """:func:`leaky_relu` of a floating ``x`` with a checked slope (the layers' entry)."""
    return jnp.where(x > 0, x, x * jnp.asarray(negative_slope, x.dtype))


def _elu(x: jax.Array, alpha: float, scale: float, input_scale: float) -> jax.Array:
    """torch's ELU kernel: ``x > 0 ? scale * x : scale * alpha * (exp(input_scale * x) - 1)``.

    The branch test is torch's ``x <= 0``, so the gradient at 0 is the negative branch's
    ``scale * alpha * input_scale``. The negative branch is evaluated on a safe input (0 where ``x > 0``)
    so that a large positive ``x`` cannot overflow ``exp`` into a NaN gradient.
    """
    safe = jnp.where(x <= 0, x, jnp.zeros_like(x))  # not jnp.minimum: its gradient at the tie 0 is 1/2
    negative = scale * alpha * jnp.expm1(safe * input_scale)
    return jnp.where(x <= 0, negative.astype(x.dtype), (x * scale).astype(x.dtype))


def elu(input: jax.Array, alpha: float = 1.0, inplace: bool = False) -> jax.Array:
    """``x if x > 0 else alpha * (exp(x) - 1)``; gradient ``alpha`` at ``x = 0`` as in torch.

    PyTorch equivalent: ``torch.nn.functional.elu(input, alpha=1.0, inplace=False)``.

    >>> print(elu(jnp.array([-1.0, 2.0])).round(4))
    [-0.6321  2.    ]
    """
    check_number("alpha", alpha, where="elu")
    _check_inplace(inplace, "elu")
    return elu_unchecked(as_float_input(input, "elu"), alpha)


def elu_unchecked(x: jax.Array, alpha: float) -> jax.Array:
    """:func:`elu` of a floating ``x`` with a checked ``alpha`` (the layers' entry)."""
    return _elu(x, alpha, 1.0, 1.0)


# torch's SELU constants (aten/src/ATen/native/Activation.cpp).
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def selu(input: jax.Array, inplace: bool = False) -> jax.Array:
    """``scale * elu(x, alpha)`` with torch's constants (alpha 1.6733, scale 1.0507).

    PyTorch equivalent: ``torch.nn.functional.selu(input, inplace=False)``.

    The gradient at 0 is ``scale * alpha`` (torch's ``x <= 0`` branch).

    >>> print(selu(jnp.array([1.0])).round(4))
    [1.0507]
    """
    _check_inplace(inplace, "selu")
    return selu_unchecked(as_float_input(input, "selu"))


def selu_unchecked(x: jax.Array) -> jax.Array:
    """:func:`selu` of a floating ``x`` (the layers' entry)."""
    return _elu(x, _SELU_ALPHA, _SELU_SCALE, 1.0)


def celu(input: jax.Array, alpha: float = 1.0, inplace: bool = False) -> jax.Array:
    """``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))``; gradient 1 at 0.

    PyTorch equivalent: ``torch.nn.functional.celu(input, alpha=1.0, inplace=False)``.

    ``alpha=0`` is a ``ValueError`` (torch: "ZeroDivisionError in celu"). The gradient is torch's, which uses
    ``1 / float32(alpha)`` as the input scale (a ~1e-8 relative detail for an ``alpha`` not exact in float32).

    >>> print(celu(jnp.array([-1.0, 2.0]), alpha=2.0).round(4))
    [-0.7869  2.    ]
    """
    check_number("alpha", alpha, where="celu")
    if alpha == 0:
        raise ValueError("celu: alpha must not be 0 (celu divides by alpha), got alpha=0")
    _check_inplace(inplace, "celu")
    return celu_unchecked(as_float_input(input, "celu"), alpha)


def celu_unchecked(x: jax.Array, alpha: float) -> jax.Array:
    """:func:`celu` of a floating ``x`` with a checked, non-zero ``alpha`` (the layers' entry)."""
    return _celu(x, float(alpha))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _celu(x: jax.Array, alpha: float) -> jax.Array:
    return _elu(x, alpha, 1.0, 1.0 / alpha)


@_celu.defjvp
def _celu_jvp(alpha, primals, tangents):
    (x,), (dx,) = primals, tangents
    # torch's celu backward is elu_backward with input_scale = 1 / float32(alpha) (its derivative formula rounds
    # alpha to float32 there, the forward does not): x <= 0 -> input_scale * alpha * exp(x * input_scale), else 1.
    input_scale = 1.0 / float(np.float32(alpha))
    safe = jnp.where(x <= 0, x, jnp.zeros_like(x))
    negative = (input_scale * alpha) * jnp.exp(safe * input_scale)
    slope = jnp.where(x <= 0, negative.astype(x.dtype), jnp.ones_like(x))
    return _celu(x, alpha), dx * slope


def gelu(input: jax.Array, approximate: str = "none") -> jax.Array:
    """Gaussian error linear unit: ``x * Phi(x)`` (erf, torch's default) or torch's tanh approximation.

    PyTorch equivalent: ``torch.nn.functional.gelu(input, approximate="none")``.

    ``approximate="tanh"``: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``. ``jax.nn.gelu`` defaults
    to the tanh form (about 4.7e-4 off torch's default); here the default is torch's.

    >>> print(np.asarray(gelu(jnp.array([1.0]))).round(4))
    [0.8413]
    """
    check_choice("approximate", approximate, ("none", "tanh"), where="gelu")
    return gelu_unchecked(as_float_input(input, "gelu"), approximate)


def gelu_unchecked(x: jax.Array, approximate: str = "none") -> jax.Array:
    """:func:`gelu` of a floating ``x`` with a checked ``approximate`` (the layers' entry)."""
    return jax.nn.gelu(x, approximate=approximate == "tanh")


def silu(input: jax.Array, inplace: bool = False) -> jax.Array:
    """``x * sigmoid(x)`` (swish).

    PyTorch equivalent: ``torch.nn.functional.silu(input, inplace=False)``.

    >>> print(np.asarray(silu(jnp.array([1.0]))).round(4))
    [0.7311]
    """
    _check_inplace(inplace, "silu")
    return silu_unchecked(as_float_input(input, "silu"))


def silu_unchecked(x: jax.Array) -> jax.Array:
    """:func:`silu` of a floating ``x`` (the layers' entry)."""
    return jax.nn.silu(x)


def mish(input: jax.Array, inplace: bool = False) -> jax.Array:
    """``x * tanh(softplus(x))`` (softplus without torch's threshold, as torch's mish kernel).

    PyTorch equivalent: ``torch.nn.functional.mish(input, inplace=False)``.

    ``softplus`` is evaluated as ``logaddexp(x, 0)`` (torch: ``log1p(exp(x))``): the same value to rounding,
    and no ``inf / inf`` NaN in the gradient for large ``x``.

    >>> print(np.asarray(mish(jnp.array([1.0]))).round(4))
    [0.8651]
    """
    _check_inplace(inplace, "mish")
    return mish_unchecked(as_float_input(input, "mish"))


def mish_unchecked(x: jax.Array) -> jax.Array:
    """:func:`mish` of a floating ``x`` (the layers' entry)."""
    return x * jnp.tanh(jnp.logaddexp(x, 0))


@jax.custom_jvp
def _hardswish(x: jax.Array) -> jax.Array:
    # torch's forward: x * min(max(x + 3, 0), 6) / 6.
    return x * jnp.minimum(jnp.maximum(x + 3, 0), 6) / 6


@_hardswish.defjvp
def _hardswish_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    # torch's backward kernel: x <= -3 -> 0; x < 3 -> x / 3 + 1/2; else (x >= 3, and NaN) -> 1.
    slope = jnp.where(x <= -3, jnp.zeros_like(x), jnp.where(x < 3, x / 3 + 0.5, jnp.ones_like(x)))
    return _hardswish(x), dx * slope


def hardswish(input: jax.Array, inplace: bool = False) -> jax.Array:
    """``x * relu6(x + 3) / 6``, with torch's gradient: 0 up to -3, ``x/3 + 1/2`` on (-3, 3), 1 from 3 on.

    PyTorch equivalent: ``torch.nn.functional.hardswish(input, inplace=False)``.

    >>> print(hardswish(jnp.array([-4.0, 1.0, 4.0])).round(4))
    [-0.      0.6667  4.    ]
    """
    _check_inplace(inplace, "hardswish")
    return hardswish_unchecked(as_float_input(input, "hardswish"))


def hardswish_unchecked(x: jax.Array) -> jax.Array:
    """:func:`hardswish` of a floating ``x`` (the layers' entry)."""
    return _hardswish(x)


@jax.custom_jvp
def _hardsigmoid(x: jax.Array) -> jax.Array:
    # torch's forward: min(max(x + 3, 0), 6) / 6.
    return jnp.minimum(jnp.maximum(x + 3, 0), 6) / 6


# torch's backward kernel uses the float constant 1.0f / 6.0f, in every dtype (float64 too).
_ONE_SIXTH_F32 = float(np.float32(1.0) / np.float32(6.0))


@_hardsigmoid.defjvp
def _hardsigmoid_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    slope = jnp.where((x > -3) & (x < 3), jnp.asarray(_ONE_SIXTH_F32, x.dtype), jnp.zeros_like(x))
    return _hardsigmoid(x), dx * slope


def hardsigmoid(input: jax.Array, inplace: bool = False) -> jax.Array:
    """``relu6(x + 3) / 6``; gradient ``1/6`` strictly inside (-3, 3), 0 elsewhere (torch's rule).

    PyTorch equivalent: ``torch.nn.functional.hardsigmoid(input, inplace=False)``.

    The gradient's ``1/6`` is torch's float32 constant ``1.0f / 6.0f`` also in float64 (as torch's kernel).

    >>> print(hardsigmoid(jnp.array([-4.0, 0.0, 4.0])).round(4))
    [0.  0.5 1. ]
    """
    _check_inplace(inplace, "hardsigmoid")
    return hardsigmoid_unchecked(as_float_input(input, "hardsigmoid"))


def hardsigmoid_unchecked(x: jax.Array) -> jax.Array:
    """:func:`hardsigmoid` of a floating ``x`` (the layers' entry)."""
    return _hardsigmoid(x)


def softplus(input: jax.Array, beta: float = 1.0, threshold: float = 20.0) -> jax.Array:
    """``log(1 + exp(beta * x)) / beta``, and ``x`` itself where ``beta * x > threshold`` (torch's rule).

    PyTorch equivalent: ``torch.nn.functional.softplus(input, beta=1.0, threshold=20.0)``.

    The linear branch has gradient exactly 1 (torch's kernel); the log branch torch's
    ``exp(beta x) / (exp(beta x) + 1)``. It is evaluated on a safe input where the linear branch is
    taken, so large ``x`` cannot give a NaN gradient.

    >>> print(softplus(jnp.array([0.0, 30.0])).round(4))
    [ 0.6931 30.    ]
    """
    check_number("beta", beta, where="softplus")
    check_number("threshold", threshold, where="softplus")
    return softplus_unchecked(as_float_input(input, "softplus"), beta, threshold)


def softplus_unchecked(x: jax.Array, beta: float, threshold: float) -> jax.Array:
    """:func:`softplus` of a floating ``x`` with checked settings (the layers' entry)."""
    scaled = x * jnp.asarray(beta, x.dtype)
    linear = scaled > threshold
    safe = jnp.where(linear, jnp.zeros_like(scaled), scaled)
    return jnp.where(linear, x, jnp.log1p(jnp.exp(safe)) / jnp.asarray(beta, x.dtype))


def softsign(input: jax.Array) -> jax.Array:
    """``x / (1 + |x|)``.

    PyTorch equivalent: ``torch.nn.functional.softsign(input)``.

    >>> print(softsign(jnp.array([-1.0, 3.0])).round(4))
    [-0.5   0.75]
    """
    return softsign_unchecked(as_float_input(input, "softsign"))


def softsign_unchecked(x: jax.Array) -> jax.Array:
    """:func:`softsign` of a floating ``x`` (the layers' entry)."""
    return x / (jnp.abs(x) + 1)


def logsigmoid(input: jax.Array) -> jax.Array:
    """``log(sigmoid(x))`` = ``min(x, 0) - log1p(exp(-|x|))``, stable for large ``|x|``.

    PyTorch equivalent: ``torch.nn.functional.logsigmoid(input)``.

    >>> print(logsigmoid(jnp.array([0.0])).round(4))
    [-0.6931]
    """
    # jax.nn.log_sigmoid is -logaddexp(-x, 0): the same operations as torch's kernel, and a smooth gradient
    # (1/2 at 0, as torch's), where min(x, 0) would give JAX's tie gradient.
    return jax.nn.log_sigmoid(as_float_input(input, "logsigmoid"))


def sigmoid(input: jax.Array) -> jax.Array:
    """Logistic ``1 / (1 + exp(-x))``.

    PyTorch equivalent: ``torch.nn.functional.sigmoid(input)`` / ``torch.sigmoid``.

    >>> print(sigmoid(jnp.array([0.0])).round(4))
    [0.5]
    """
    return jax.nn.sigmoid(as_float_input(input, "sigmoid"))


def tanh(input: jax.Array) -> jax.Array:
    """Hyperbolic tangent.

    PyTorch equivalent: ``torch.nn.functional.tanh(input)`` / ``torch.tanh``.

    >>> print(tanh(jnp.array([0.0])).round(4))
    [0.]
    """
    return jnp.tanh(as_float_input(input, "tanh"))


def prelu(input: jax.Array, weight: jax.Array, *, channels_last: bool = False) -> jax.Array:
    """``x if x > 0 else weight * x`` with one learned slope per channel (or one shared slope).

    PyTorch equivalent: ``torch.nn.functional.prelu(input, weight)``.

    ``weight`` is ``(1,)`` (or a scalar), broadcast everywhere, or ``(C,)``, broadcast over torch's channel
    dim 1 (``input`` ``(N, C, *)``; a 0-D or 1-D input has no channel axis and needs a single weight, as in
    torch). With
    ``channels_last=True`` the channel axis is the LAST one instead (fnml's ``(N, C)``, ``(N, L, C)``,
    ``(N, H, W, C)``): that is what :class:`fnml.layers.PReLU` uses. The gradient at ``x = 0`` is
    ``weight`` for the input and 0 for the weight, as in torch.

    >>> print(prelu(jnp.array([[-1.0, 2.0], [-2.0, -4.0]]), jnp.array([0.25, 0.5])).round(4))
    [[-0.25  2.  ]
     [-0.5  -2.  ]]
    """
    check_bool("channels_last", channels_last, where="prelu")
    return prelu_unchecked(as_float_input(input, "prelu"), jnp.asarray(weight), channels_last=channels_last)


def prelu_unchecked(x: jax.Array, w: jax.Array, *, channels_last: bool) -> jax.Array:
    """:func:`prelu` of a floating ``x`` (the layers' entry); checks ``w`` against the input's channels."""
    if w.ndim > 1:
        raise ValueError(f"prelu: weight must be a scalar or 1-D array, got shape {w.shape}")
    if w.size != 1:
        if x.ndim == 0:
            raise ValueError(f"prelu: a 0-D input needs a single weight, got weight of shape {w.shape}")
        # torch: a 1-D input has no channel axis (channel size 1), so it needs a single weight.
        axis = x.ndim - 1 if channels_last else 1
        channels = x.shape[axis] if x.ndim > 1 else 1
        if channels != w.size:
            raise ValueError(
                f"prelu: weight has {w.size} parameters but the input has channel size {channels} "
                f"(input shape {x.shape}, channels_last={channels_last})"
            )
        shape = [1] * x.ndim
        shape[axis] = w.size
        w = w.reshape(shape)  # (C,) -> (1, C, 1, ...) / (..., C): broadcast over the channel axis
    else:
        w = w.reshape(())
    return jnp.where(x > 0, x, w * x)


def glu(input: jax.Array, dim: int = -1) -> jax.Array:
    """Gated linear unit ``a * sigmoid(b)``, ``a`` and ``b`` the two halves of ``input`` along ``dim``.

    PyTorch equivalent: ``torch.nn.functional.glu(input, dim=-1)``.

    >>> print(glu(jnp.array([[1.0, 2.0, 0.0, 0.0]])).round(4))
    [[0.5 1. ]]
    """
    check_int("dim", dim, where="glu")
    return glu_unchecked(as_float_input(input, "glu"), dim)


def glu_unchecked(x: jax.Array, dim: int) -> jax.Array:
    """:func:`glu` of a floating ``x`` with a checked int ``dim`` (the layers' entry); checks the halved axis."""
    if x.ndim == 0:
        raise ValueError("glu: does not support scalars because halving size must be even")
    axis = _wrap_dim(dim, x.ndim, "glu")
    if x.shape[axis] % 2:
        raise ValueError(f"glu: halving dimension must be even, but dimension {dim} is size {x.shape[axis]}")
    a, b = jnp.split(x, 2, axis=axis)  # (..., 2k, ...) -> two (..., k, ...)
    return a * jax.nn.sigmoid(b)


def _wrap_dim(dim: int, ndim: int, where: str) -> int:
    """torch's dim wrapping (a 0-D array accepts dim 0 and -1), with its IndexError."""
    size = max(ndim, 1)
    if not -size <= dim < size:
        raise IndexError(
            f"{where}: dimension out of range (expected to be in range of [{-size}, {size - 1}], got {dim})"
        )
    return dim % size


def _softmax_input(input: Any, dim: Any, dtype: Any, where: str) -> tuple[jax.Array, int]:
    if dim is None:
        raise TypeError(
            f"{where}: dim must be given (torch's implicit choice of dim is deprecated; fnml requires it), got dim=None"
        )
    check_int("dim", dim, where=where)
    x = as_float_input(input, where)
    if dtype is not None:
        x = x.astype(dtype)  # torch casts the input before the op
    return x, _wrap_dim(dim, x.ndim, where)


def softmax(input: jax.Array, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> jax.Array:
    """``exp(x) / sum(exp(x))`` along ``dim``; ``dtype`` casts the input first, as in torch.

    PyTorch equivalent: ``torch.nn.functional.softmax(input, dim=None, _stacklevel=3, dtype=None)``.

    Difference: ``dim`` is required (``TypeError`` when omitted); torch picks one implicitly with a
    deprecation warning. ``_stacklevel`` is accepted and ignored. A bfloat16 / float16 input is computed in
    float32 and rounded once, as torch's CPU kernel.

    >>> print(softmax(jnp.array([[0.0, 0.0]]), dim=-1).round(4))
    [[0.5 0.5]]
    """
    x, axis = _softmax_input(input, dim, dtype, "softmax")
    return softmax_unchecked(x, axis)


def softmax_unchecked(x: jax.Array, axis: int) -> jax.Array:
    """:func:`softmax` of a floating ``x`` along a checked, wrapped ``axis`` (the layers' entry)."""
    if x.ndim == 0:  # torch accepts a 0-D input (dim 0 or -1): softmax of one value
        return softmax_unchecked(x.reshape(1), 0).reshape(())
    # bfloat16 / float16: computed in float32 and rounded once, as torch's CPU kernel (float32 accumulation).
    return jax.nn.softmax(x.astype(accumulation_dtype(x.dtype)), axis=axis).astype(x.dtype)


def log_softmax(input: jax.Array, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> jax.Array:
    """``x - logsumexp(x)`` along ``dim``; ``dtype`` casts the input first, as in torch.

    PyTorch equivalent: ``torch.nn.functional.log_softmax(input, dim=None, _stacklevel=3, dtype=None)``.

    Difference: ``dim`` is required (``TypeError`` when omitted), as for :func:`softmax`.

    >>> print(log_softmax(jnp.array([[0.0, 0.0]]), dim=1).round(4))
    [[-0.6931 -0.6931]]
    """
    x, axis = _softmax_input(input, dim, dtype, "log_softmax")
    return log_softmax_unchecked(x, axis)


def log_softmax_unchecked(x: jax.Array, axis: int) -> jax.Array:
    """:func:`log_softmax` of a floating ``x`` along a checked, wrapped ``axis`` (the layers' entry)."""
    if x.ndim == 0:
        return log_softmax_unchecked(x.reshape(1), 0).reshape(())
    accumulate = accumulation_dtype(x.dtype)
    if accumulate == x.dtype:
        return jax.nn.log_softmax(x, axis=axis)
    # bfloat16 / float16 as torch's CPU kernels: ``x - max - log(sum(exp(x - max)))`` in float32, rounded once;
    # along the last axis torch's kernel also stores the sum and its log in the input's dtype.
    shifted = x.astype(accumulate) - lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True).astype(accumulate))
    total = jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True)
    if axis == x.ndim - 1:
        total = _stored_as(total, x.dtype)
        log_total = _stored_as(jnp.log(total), x.dtype)
    else:
        log_total = jnp.log(total)
    return (shifted - log_total).astype(x.dtype)


def _stored_as(value: jax.Array, dtype: Any) -> jax.Array:
    """``value`` rounded to ``dtype``'s precision, kept in its own dtype: a rounding jit cannot drop.

    ``astype(dtype).astype(value.dtype)`` may be folded away by XLA (it allows excess precision);
    ``lax.reduce_precision`` is always applied.
    """
    info = jnp.finfo(dtype)
    return lax.reduce_precision(value, exponent_bits=info.nexp, mantissa_bits=info.nmant)

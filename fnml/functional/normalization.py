"""Layer, RMS, group and local-response normalisation (batch and instance norm: ``batch_norm``).

PyTorch equivalent: ``torch.nn.functional.layer_norm`` / ``rms_norm`` / ``group_norm`` / ``local_response_norm``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fnml._validation import (
    check_bool,
    check_number,
    check_positive_int,
)
from fnml.functional._shared import as_float_array, channel_count, common_dtype, from_channels_last, to_channels_last

__all__ = ["layer_norm", "rms_norm", "group_norm", "local_response_norm"]


def as_normalized_shape(normalized_shape: Any, where: str) -> tuple[int, ...]:
    """torch's ``normalized_shape``: an int or a non-empty sequence of positive ints, as a tuple."""
    shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else normalized_shape
    if (
        isinstance(normalized_shape, bool)
        or not isinstance(shape, (tuple, list))
        or not shape
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in shape)
    ):
        raise ValueError(
            f"{where}: normalized_shape must be a positive int or a non-empty tuple of positive ints, "
            f"got normalized_shape={normalized_shape!r}"
        )
    return tuple(int(s) for s in shape)


def _check_trailing(x: jax.Array, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    """The axes of ``x`` covered by ``shape`` (its trailing axes, which must equal ``shape``)."""
    k = len(shape)
    if x.ndim < k or tuple(x.shape[-k:]) != shape:
        raise ValueError(
            f"{where}(normalized_shape={shape}) got an input of shape {x.shape}; its trailing axes must be {shape}"
        )
    return tuple(range(x.ndim - k, x.ndim))


def check_affine(name: str, value: Any, shape: tuple[int, ...], where: str) -> jax.Array | None:
    """An optional affine parameter (weight / bias / running statistic) of exactly ``shape``."""
    if value is None:
        return None
    array = as_float_array(name, value, where)
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{where}: {name} must have shape {tuple(shape)}, got {tuple(array.shape)}")
    return array


def apply_affine(y: jax.Array, weight: jax.Array | None, bias: jax.Array | None) -> jax.Array:
    """``y * weight + bias`` (either may be None), in y's dtype; parameters broadcast on trailing axes."""
    if weight is not None:
        y = y * weight.astype(y.dtype)
    if bias is not None:
        y = y + bias.astype(y.dtype)
    return y


def layer_norm(input: Any, normalized_shape: Any, weight: Any = None, bias: Any = None, eps: float = 1e-5) -> jax.Array:
    """Normalise over the trailing ``normalized_shape`` axes: ``(x - mean) / sqrt(var + eps) * weight + bias``.

    PyTorch equivalent: ``torch.nn.functional.layer_norm(input, normalized_shape, weight=None, bias=None,
    eps=1e-05)``.

    Mean and biased variance over the last ``len(normalized_shape)`` axes; the variance is two-pass
    ``mean((x - mean)**2)`` (flax's default ``E[x^2] - E[x]^2`` loses precision for large-mean inputs).
    ``weight`` / ``bias`` have shape ``normalized_shape``. Layout-free: ``(*, *normalized_shape)``.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> print(F.layer_norm(jnp.array([[1.0, 3.0]]), 2).round(4))
    [[-1.  1.]]
    """
    where = "layer_norm"
    shape = as_normalized_shape(normalized_shape, where)
    x = as_float_array("input", input, where)
    axes = _check_trailing(x, shape, where)
    check_number("eps", eps, where=where)
    weight = check_affine("weight", weight, shape, where)
    bias = check_affine("bias", bias, shape, where)
    return layer_norm_unchecked(x.astype(common_dtype(x, weight, bias)), axes, weight, bias, eps)


def layer_norm_unchecked(x: jax.Array, axes: tuple[int, ...], weight: Any, bias: Any, eps: float) -> jax.Array:
    """:func:`layer_norm` over ``axes`` of a checked ``x`` (the layers' entry: they check once)."""
    mean = jnp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    var = jnp.mean(jnp.square(centred), axis=axes, keepdims=True)
    return apply_affine(centred * lax.rsqrt(var + jnp.asarray(eps, x.dtype)), weight, bias)


def rms_norm(input: Any, normalized_shape: Any, weight: Any = None, eps: float | None = None) -> jax.Array:
    """Root-mean-square normalisation over the trailing axes: ``x * rsqrt(mean(x**2) + eps) * weight``.

    PyTorch equivalent: ``torch.nn.functional.rms_norm(input, normalized_shape, weight=None, eps=None)``.

    ``eps=None`` is torch's default: the machine epsilon of the computation dtype (float32's
    ``1.1920929e-07`` for float32 and narrower inputs, which are computed in float32; float64's for
    float64). No mean is subtracted and there is no bias.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> [round(v, 4) for v in F.rms_norm(jnp.array([3.0, 4.0]), 2, eps=0.0).tolist()]
    [0.8485, 1.1314]
    """
    where = "rms_norm"
    shape = as_normalized_shape(normalized_shape, where)
    x = as_float_array("input", input, where)
    axes = _check_trailing(x, shape, where)
    if eps is not None:
        check_number("eps", eps, where=where)
    weight = check_affine("weight", weight, shape, where)
    return rms_norm_unchecked(x, axes, weight, eps)


def rms_norm_unchecked(x: jax.Array, axes: tuple[int, ...], weight: Any, eps: float | None) -> jax.Array:
    """:func:`rms_norm` over ``axes`` of a checked ``x`` (the layers' entry: they check once)."""
    out_dtype = common_dtype(x, weight)
    # torch upcasts float16 / bfloat16 to float32 (its opmath type) and casts the result back.
    compute = jnp.float64 if out_dtype == jnp.float64 else jnp.float32
    if eps is None:
        eps = float(jnp.finfo(compute).eps)
    x = x.astype(compute)
    y = x * lax.rsqrt(jnp.mean(jnp.square(x), axis=axes, keepdims=True) + jnp.asarray(eps, compute))
    if weight is not None:
        y = y * weight.astype(compute)
    return y.astype(out_dtype)


def group_norm(
    input: Any, num_groups: int, weight: Any = None, bias: Any = None, eps: float = 1e-5, *, channels_last: bool = False
) -> jax.Array:
    """Group normalisation: channels split into ``num_groups`` consecutive groups, each normalised per sample.

    PyTorch equivalent: ``torch.nn.functional.group_norm(input, num_groups, weight=None, bias=None,
    eps=1e-05)``.

    Mean and biased variance over (channels of the group, spatial axes) for every sample; then the
    per-channel ``weight`` / ``bias``. ``num_groups`` must divide the channel count. Layout ``(N, C, *)``,
    or ``(N, *, C)`` with ``channels_last=True``.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> print(F.group_norm(jnp.array([[1.0, 3.0, 5.0, 5.0]]), 2).round(4))
    [[-1.  1.  0.  0.]]
    """
    where = "group_norm"
    x = as_float_array("input", input, where)
    check_bool("channels_last", channels_last, where=where)
    check_positive_int("num_groups", num_groups, where=where)
    check_number("eps", eps, where=where)
    channels = channel_count(x, channels_last, where)
    if channels % num_groups:
        raise ValueError(
            f"{where}: expected the number of channels ({channels}) to be divisible by num_groups={num_groups}, "
            f"got input of shape {x.shape}"
        )
    weight = check_affine("weight", weight, (channels,), where)
    bias = check_affine("bias", bias, (channels,), where)
    x = to_channels_last(x, channels_last).astype(common_dtype(x, weight, bias))  # (N, *, C)
    return from_channels_last(group_norm_unchecked(x, num_groups, weight, bias, eps), channels_last)


def group_norm_unchecked(x: jax.Array, num_groups: int, weight: Any, bias: Any, eps: float) -> jax.Array:
    """:func:`group_norm` of a checked channels-last ``(N, *, C)`` array (the layers' entry)."""
    channels = x.shape[-1]
    grouped = x.reshape(x.shape[:-1] + (num_groups, channels // num_groups))  # (N, *, C) -> (N, *, G, C/G)
    axes = tuple(range(1, x.ndim - 1)) + (x.ndim,)  # spatial axes and the within-group axis
    mean = jnp.mean(grouped, axis=axes, keepdims=True)
    centred = grouped - mean
    var = jnp.mean(jnp.square(centred), axis=axes, keepdims=True)
    y = (centred * lax.rsqrt(var + jnp.asarray(eps, x.dtype))).reshape(x.shape)  # (N, *, G, C/G) -> (N, *, C)
    return apply_affine(y, weight, bias)


def local_response_norm(
    input: Any, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, *, channels_last: bool = False
) -> jax.Array:
    """Local response normalisation across channels: ``x / (k + alpha * mean_window(x**2)) ** beta``.

    PyTorch equivalent: ``torch.nn.functional.local_response_norm(input, size, alpha=1e-4, beta=0.75,
    k=1.0)``.

    The window covers ``size`` neighbouring channels (``size // 2`` before, ``(size - 1) // 2`` after,
    zero-padded at the ends) and the mean always divides by ``size``, as torch's average pooling with
    padding does. Layout ``(N, C, *)`` (at least 3-D), or ``(N, *, C)`` with ``channels_last=True``.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> [round(v, 4) for v in F.local_response_norm(jnp.full((1, 2, 1), 2.0), 2, alpha=1.0, beta=1.0).ravel().tolist()]
    [0.6667, 0.4]
    """
    where = "local_response_norm"
    x = as_float_array("input", input, where)
    check_bool("channels_last", channels_last, where=where)
    check_positive_int("size", size, where=where)
    for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
        check_number(name, value, where=where)
    channel_count(x, channels_last, where, min_ndim=3)
    return from_channels_last(
        local_response_norm_unchecked(to_channels_last(x, channels_last), size, alpha, beta, k), channels_last
    )


def local_response_norm_unchecked(x: jax.Array, size: int, alpha: float, beta: float, k: float) -> jax.Array:
    """:func:`local_response_norm` of a checked channels-last ``(N, *, C)`` array (the layers' entry)."""
    channels = x.shape[-1]
    squared = jnp.square(x)
    padded = jnp.pad(squared, [(0, 0)] * (x.ndim - 1) + [(size // 2, (size - 1) // 2)])
    window_sum = sum(padded[..., offset : offset + channels] for offset in range(size))
    div = (window_sum / size * alpha + k) ** beta
    return x / div

"""Batch and instance normalisation, with their hand-written derivatives.

PyTorch equivalent: ``torch.nn.functional.batch_norm`` / ``instance_norm``.

The derivatives live here, next to the op they differentiate: a ``custom_jvp`` for the standardisation
(differentiable in every mode) and, inside :func:`fnml.functional.ad_mode.reverse_mode_only` (fnml's training
step), a ``custom_vjp`` with the closed-form backward of the training-mode forward.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from fnml._validation import (
    check_bool,
    check_number,
)
from fnml.functional._shared import as_float_array, channel_count, common_dtype, from_channels_last, to_channels_last
from fnml.functional.ad_mode import reverse_mode_only_active
from fnml.functional.normalization import apply_affine, check_affine

__all__ = ["batch_norm", "batch_norm_with_stats", "instance_norm", "instance_norm_with_stats"]


def batch_norm_unchecked(
    x: jax.Array,
    running_mean: jax.Array | None,
    running_var: jax.Array | None,
    weight: jax.Array | None,
    bias: jax.Array | None,
    use_batch_stats: bool,
    momentum: Any,
    eps: float,
    where: str,
) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """Channels-last batch norm ``(M..., C)`` over all leading axes; returns (out, new_mean, new_var).

    The arguments are checked already (the public functions' checks, or a layer's at construction); only the
    data-dependent conditions are checked here.
    """
    count = math.prod(x.shape[:-1])
    x = x.astype(common_dtype(x, weight))
    if not use_batch_stats:
        if running_mean is None or running_var is None:
            raise ValueError(f"{where}: running_mean and running_var must be given when not using batch statistics")
        mean, var = running_mean.astype(x.dtype), running_var.astype(x.dtype)
        new_mean, new_var = running_mean, running_var
    else:
        if count <= 1:
            raise ValueError(
                f"{where}: expected more than 1 value per channel when training, got input shape {x.shape}"
            )
        new_mean, new_var = running_mean, running_var
        if running_mean is not None and running_var is not None:
            # The same two reductions as inside _standardize (XLA computes them once); no gradient.
            mean, centred_sum_sq = _batch_moments(lax.stop_gradient(x))
            stat_dtype = running_mean.dtype
            unbiased = (centred_sum_sq / (count - 1)).astype(stat_dtype)  # torch tracks the unbiased variance
            new_mean = momentum * mean.astype(stat_dtype) + (1 - momentum) * running_mean
            new_var = momentum * unbiased + (1 - momentum) * running_var
        if reverse_mode_only_active():
            return _batch_norm_train(x, weight, bias, float(eps)), new_mean, new_var
        return apply_affine(_standardize(x, float(eps)), weight, bias), new_mean, new_var
    y = (x - mean) * lax.rsqrt(var + jnp.asarray(eps, x.dtype))
    return apply_affine(y, weight, bias), new_mean, new_var


def _batch_moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and centred sum of squares of a channels-last ``(M..., C)`` array (two passes)."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    return mean, jnp.sum(jnp.square(x - mean), axis=axes)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _standardize(x: jax.Array, eps: float) -> jax.Array:
    """``(x - mean) / sqrt(var + eps)`` per channel of ``(M..., C)``, batch mean and BIASED variance.

    Differentiated by its closed-form JVP (linear in the tangent: two per-channel means and one
    elementwise pass), which JAX transposes into the classic BatchNorm backward, instead of autodiff's
    chain through both reductions: the same math, fewer passes over the activations (measurements in
    benchmarks/README.md). Forward and reverse mode, any order.
    """
    return _standardized(x, eps)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _batch_norm_train(x: jax.Array, weight: Any, bias: Any, eps: float) -> jax.Array:
    """Training-mode batch norm of ``(M..., C)`` with the affine, and its closed-form backward: ``db = sum(g)``,
    ``dw = sum(g * x_hat)``, ``dx = w * inv_std / n * (n * g - db - x_hat * dw)``. Reverse mode only (see
    :func:`reverse_mode_only`); fewer passes than the JVP form's transpose: the affine's and the
    normalisation's sums are shared (measurements in benchmarks/README.md)."""
    return apply_affine(_standardized(x, eps)[0], weight, bias)


def _batch_norm_train_fwd(x: jax.Array, weight: Any, bias: Any, eps: float) -> tuple[jax.Array, tuple]:
    normalized, inv_std = _standardized(x, eps)
    return apply_affine(normalized, weight, bias), (normalized, inv_std, weight, bias)


def _batch_norm_train_bwd(eps: float, residuals: tuple, grad: jax.Array) -> tuple:
    del eps
    normalized, inv_std, weight, bias = residuals
    axes = tuple(range(grad.ndim - 1))
    count = math.prod(grad.shape[:-1])
    sum_grad = jnp.sum(grad, axis=axes)  # (C,): the bias gradient
    sum_grad_normalized = jnp.sum(grad * normalized, axis=axes)  # (C,): the weight gradient
    scale = inv_std if weight is None else inv_std * weight.astype(grad.dtype)
    grad_x = (scale / count) * (count * grad - sum_grad - normalized * sum_grad_normalized)
    grad_weight = None if weight is None else sum_grad_normalized.astype(weight.dtype)
    grad_bias = None if bias is None else sum_grad.astype(bias.dtype)
    return grad_x, grad_weight, grad_bias


_batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


def _standardized(x: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
    mean, centred_sum_sq = _batch_moments(x)
    inv_std = lax.rsqrt(centred_sum_sq / math.prod(x.shape[:-1]) + jnp.asarray(eps, x.dtype))
    return (x - mean) * inv_std, inv_std


@_standardize.defjvp
def _standardize_jvp(eps: float, primals: tuple, tangents: tuple) -> tuple[jax.Array, jax.Array]:
    (x,), (dx,) = primals, tangents
    normalized, inv_std = _standardized(x, eps)
    axes = tuple(range(x.ndim - 1))
    # d x_hat = inv_std * (dx - mean(dx) - x_hat * mean(dx * x_hat)), means over the batch axes: the mean
    # and the variance of a channel depend on each of its elements.
    mean_dx = jnp.mean(dx, axis=axes)
    mean_dx_normalized = jnp.mean(dx * normalized, axis=axes)
    return normalized, inv_std * (dx - mean_dx - normalized * mean_dx_normalized)


def _check_batch_norm_args(input, running_mean, running_var, weight, bias, training, eps, channels_last, where):
    x = as_float_array("input", input, where)
    check_bool("training", training, where=where)
    check_bool("channels_last", channels_last, where=where)
    check_number("eps", eps, where=where)
    channels = (channel_count(x, channels_last, where),)
    stats = [
        check_affine(name, v, channels, where)
        for name, v in (("running_mean", running_mean), ("running_var", running_var))
    ]
    if (stats[0] is None) != (stats[1] is None):
        raise ValueError(f"{where}: running_mean and running_var must both be given or both be None")
    return (
        x,
        stats[0],
        stats[1],
        check_affine("weight", weight, channels, where),
        check_affine("bias", bias, channels, where),
    )


def batch_norm_with_stats(
    input: Any,
    running_mean: Any,
    running_var: Any,
    weight: Any = None,
    bias: Any = None,
    training: bool = False,
    momentum: Any = 0.1,
    eps: float = 1e-5,
    *,
    channels_last: bool = False,
) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """Batch normalisation that RETURNS the updated running statistics: ``(out, new_mean, new_var)``.

    PyTorch equivalent: ``torch.nn.functional.batch_norm(input, running_mean, running_var, weight, bias,
    training, momentum, eps)`` followed by reading the running buffers it updated in place.

    The pure form of torch's in-place update: with ``training=True`` and running statistics given,
    ``new_mean = momentum * batch_mean + (1 - momentum) * running_mean`` and ``new_var`` the same with the
    UNBIASED batch variance (n / (n - 1)); the output is normalised with the batch mean and BIASED
    variance. With ``training=False`` the running statistics normalise and come back unchanged. The
    statistics carry no gradient (torch's are buffers). ``momentum`` may be a traced scalar (the layer
    passes ``1 / num_batches_tracked`` for torch's ``momentum=None``). Layout: torch's ``(N, C, *)`` or,
    with ``channels_last=True``, ``(N, *, C)``.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> out, mean, var = F.batch_norm_with_stats(jnp.array([[0.0], [2.0]]), jnp.zeros(1), jnp.ones(1),
    ...                                          training=True)
    >>> print(out.ravel().round(4), mean, var)
    [-1.  1.] [0.1] [1.1]
    """
    where = "batch_norm"
    x, mean, var, weight, bias = _check_batch_norm_args(
        input, running_mean, running_var, weight, bias, training, eps, channels_last, where
    )
    if not training and mean is None:
        raise ValueError(f"{where}: running_mean must be defined in evaluation mode (training=False)")
    y, new_mean, new_var = batch_norm_unchecked(
        to_channels_last(x, channels_last), mean, var, weight, bias, training, momentum, eps, where
    )
    return from_channels_last(y, channels_last), new_mean, new_var


def batch_norm(
    input: Any,
    running_mean: Any,
    running_var: Any,
    weight: Any = None,
    bias: Any = None,
    training: bool = False,
    momentum: Any = 0.1,
    eps: float = 1e-5,
    *,
    channels_last: bool = False,
) -> jax.Array:
    """Batch normalisation per channel; the output only (see :func:`batch_norm_with_stats` for the stats).

    PyTorch equivalent: ``torch.nn.functional.batch_norm(input, running_mean, running_var, weight=None,
    bias=None, training=False, momentum=0.1, eps=1e-05)``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``: batch mean and biased variance over every axis
    but the channel one when ``training=True`` (running statistics may then be None), the running
    statistics otherwise. Difference from torch: JAX arrays are immutable, so the running statistics are
    NOT updated in place; :func:`batch_norm_with_stats` returns them (the BatchNorm layers use it). Layout:
    ``(N, C, *)``, or ``(N, *, C)`` with ``channels_last=True``.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> print(F.batch_norm(jnp.array([[1.0], [3.0]]), jnp.ones(1), jnp.full(1, 4.0)).ravel().round(4))
    [0. 1.]
    """
    return batch_norm_with_stats(
        input, running_mean, running_var, weight, bias, training, momentum, eps, channels_last=channels_last
    )[0]


def instance_norm_with_stats(
    input: Any,
    running_mean: Any = None,
    running_var: Any = None,
    weight: Any = None,
    bias: Any = None,
    use_input_stats: bool = True,
    momentum: Any = 0.1,
    eps: float = 1e-5,
    *,
    channels_last: bool = False,
) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """Instance normalisation that RETURNS the updated running statistics: ``(out, new_mean, new_var)``.

    PyTorch equivalent: ``torch.nn.functional.instance_norm(input, running_mean, running_var, weight, bias,
    use_input_stats, momentum, eps)`` followed by reading the running buffers it updated in place.

    Each (sample, channel) is normalised over its spatial axes with its own mean and biased variance
    (``use_input_stats=True``) or with the running statistics (``False``). torch's running update, kept:
    every sample updates a copy of the running statistics with its own mean and UNBIASED variance and
    the copies are averaged over the batch. Layout: ``(N, C, *spatial)``, or ``(N, *spatial, C)`` with
    ``channels_last=True``.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> out, mean, var = F.instance_norm_with_stats(jnp.array([[[0.0, 2.0]]]), jnp.zeros(1), jnp.ones(1))
    >>> print(out.ravel().round(4), mean, var)
    [-1.  1.] [0.1] [1.1]
    """
    where = "instance_norm"
    check_bool("use_input_stats", use_input_stats, where=where)
    x, mean, var, weight, bias = _check_batch_norm_args(
        input, running_mean, running_var, weight, bias, use_input_stats, eps, channels_last, where
    )
    y, new_mean, new_var = instance_norm_unchecked(
        to_channels_last(x, channels_last), mean, var, weight, bias, use_input_stats, momentum, eps, where
    )
    return from_channels_last(y, channels_last), new_mean, new_var


def instance_norm_unchecked(x, mean, var, weight, bias, use_input_stats, momentum, eps, where):
    """Instance norm of a checked channels-last ``(N, *spatial, C)`` array: (out, new_mean, new_var)."""
    if x.ndim < 3:
        raise ValueError(f"{where}: expected an input with a batch, spatial and channel axis, got shape {x.shape}")
    if not use_input_stats and mean is None:
        raise ValueError(f"{where}: running_mean must be defined when use_input_stats=False")
    batch, channels = x.shape[0], x.shape[-1]
    # One "batch" of N*C channels: (N, *spatial, C) -> (*spatial, N, C), the batch-norm core reduces over spatial.
    per_instance = jnp.moveaxis(x, 0, -2)
    if use_input_stats and math.prod(per_instance.shape[:-2]) <= 1:
        raise ValueError(f"{where}: expected more than 1 spatial element when training, got input shape {x.shape}")
    flat = per_instance.reshape(per_instance.shape[:-2] + (batch * channels,))  # (*spatial, N * C)

    def tile(v: jax.Array | None) -> jax.Array | None:
        return None if v is None else jnp.tile(v, batch)  # (C,) -> (N * C,), sample-major

    y, new_mean, new_var = batch_norm_unchecked(
        flat, tile(mean), tile(var), tile(weight), tile(bias), use_input_stats, momentum, eps, where
    )
    y = jnp.moveaxis(y.reshape(per_instance.shape), -2, 0)  # (*spatial, N, C) -> (N, *spatial, C)
    if mean is not None:
        new_mean = new_mean.reshape(batch, channels).mean(axis=0)  # torch: running_mean_.view(b, c).mean(0)
        new_var = new_var.reshape(batch, channels).mean(axis=0)
    return y, new_mean, new_var


def instance_norm(
    input: Any,
    running_mean: Any = None,
    running_var: Any = None,
    weight: Any = None,
    bias: Any = None,
    use_input_stats: bool = True,
    momentum: Any = 0.1,
    eps: float = 1e-5,
    *,
    channels_last: bool = False,
) -> jax.Array:
    """Instance normalisation per (sample, channel) over the spatial axes; the output only.

    PyTorch equivalent: ``torch.nn.functional.instance_norm(input, running_mean=None, running_var=None,
    weight=None, bias=None, use_input_stats=True, momentum=0.1, eps=1e-05)``.

    Difference from torch: the running statistics are not updated in place (JAX arrays are immutable);
    :func:`instance_norm_with_stats` returns them. Layout ``(N, C, *spatial)``, or ``(N, *spatial, C)``
    with ``channels_last=True``.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> print(F.instance_norm(jnp.array([[[1.0, 3.0]]])).round(4))
    [[[-1.  1.]]]
    """
    return instance_norm_with_stats(
        input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps, channels_last=channels_last
    )[0]

"""BatchNorm, LayerNorm and the other normalisation layers.

PyTorch equivalent: ``torch/nn/modules/batchnorm.py``, ``normalization.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from fnml._validation import check_in_interval, check_ndim, check_number, check_positive_int
from fnml.layers.base import (
    Module,
    _compute_dtype,
    _int_dtype,
)

__all__ = ["BatchNorm1d", "BatchNorm2d", "LayerNorm"]


# --------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------


class _BatchNorm(Module):
    """Shared BatchNorm: channels-last, torch's momentum and unbiased running variance."""

    _name = "BatchNorm"
    _ranks: tuple[int, ...] = ()
    _layout = ""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        where = self._name
        check_positive_int("num_features", num_features, where=where)
        check_number("eps", eps, where=where)
        if not eps > 0:
            raise ValueError(f"{where}: eps must be > 0, got eps={eps!r}")
        if momentum is not None:
            check_in_interval("momentum", momentum, 0.0, 1.0, closed_high=True, where=where)
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.dtype = dtype
        self.param_dtype = param_dtype
        # flax's train()/eval() toggle this attribute: False == torch's training mode (the default).
        self.use_running_average = False
        shape = (num_features,)
        self.weight = nnx.Param(jnp.ones(shape, param_dtype)) if affine else nnx.data(None)
        self.bias = nnx.Param(jnp.zeros(shape, param_dtype)) if affine and bias else nnx.data(None)
        if track_running_stats:
            # Kept in the parameter dtype (nnx.BatchNorm keeps float32 even for float64 parameters).
            self.running_mean = nnx.BatchStat(jnp.zeros(shape, param_dtype))
            self.running_var = nnx.BatchStat(jnp.ones(shape, param_dtype))
            self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), _int_dtype()))
        else:
            self.running_mean = nnx.data(None)
            self.running_var = nnx.data(None)
            self.num_batches_tracked = nnx.data(None)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        check_ndim("input", x.shape, self._ranks, where=f"{self._name} ({self._layout})")
        if x.shape[-1] != self.num_features:
            raise ValueError(
                f"{self._name}(num_features={self.num_features}) got an input with {x.shape[-1]} channels "
                f"(last axis of channels-last shape {x.shape}); expected {self.num_features}"
            )
        training = not self.use_running_average
        use_batch_stats = training or not self.track_running_stats
        axes = tuple(range(x.ndim - 1))
        count = math.prod(x.shape[:-1])
        dtype = _compute_dtype(self.dtype, x, *(v[...] for v in (self.weight,) if v is not None))
        x = x.astype(dtype)
        if use_batch_stats:
            if training and count <= 1:
                raise ValueError(
                    f"{self._name}: expected more than 1 value per channel when training, got input shape {x.shape}"
                )
            mean = jnp.mean(x, axis=axes)
            # Two-pass variance; torch normalises with the biased one and tracks the unbiased one.
            centred_sum_sq = jnp.sum(jnp.square(x - mean), axis=axes)
            var = centred_sum_sq / count
            if training and self.track_running_stats:
                tracked = self.num_batches_tracked[...] + 1
                self.num_batches_tracked[...] = tracked
                if self.momentum is None:  # cumulative moving average, as torch
                    factor = 1.0 / tracked.astype(self.running_mean[...].dtype)
                else:
                    factor = self.momentum
                stat_dtype = self.running_mean[...].dtype
                unbiased = lax.stop_gradient(centred_sum_sq / (count - 1)).astype(stat_dtype)
                batch_mean = lax.stop_gradient(mean).astype(stat_dtype)
                self.running_mean[...] = factor * batch_mean + (1 - factor) * self.running_mean[...]
                self.running_var[...] = factor * unbiased + (1 - factor) * self.running_var[...]
        else:
            mean = self.running_mean[...].astype(dtype)
            var = self.running_var[...].astype(dtype)
        y = (x - mean) * lax.rsqrt(var + jnp.asarray(self.eps, dtype))
        if self.weight is not None:
            y = y * self.weight[...].astype(dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Batch normalisation over ``(N, C)`` or channels-last ``(N, L, C)`` inputs, torch's numbers.

    PyTorch equivalent: ``torch.nn.BatchNorm1d(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, *, bias=True)`` (torch takes ``(N, C)`` or ``(N, C, L)``: here the channel
    axis is LAST).

    Training mode (the default, ``model.train()``): normalise with the batch mean and biased variance;
    update ``running_mean = (1 - momentum) * running_mean + momentum * mean`` and ``running_var`` with the
    UNBIASED batch variance (n / (n - 1)), increment ``num_batches_tracked``; ``momentum=None`` uses the
    cumulative average (factor 1 / num_batches_tracked). Eval mode (``model.eval()``): normalise with the
    running statistics (with ``track_running_stats=False``: always the batch statistics, as torch).
    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` (``affine=False``: no weight and bias;
    ``bias=False``: no bias).

    Differences from ``nnx.BatchNorm`` it removes: flax's momentum is torch's ``1 - momentum`` (and
    defaults to 0.99), flax tracks the biased variance and keeps running stats in float32; here they are
    in the parameter dtype. Attributes: ``weight``, ``bias`` (Param or None), ``running_mean``,
    ``running_var`` (BatchStat ``(C,)``), ``num_batches_tracked`` (int BatchStat scalar).

    Example::

        bn = BatchNorm1d(4)
        y = bn(jnp.ones((8, 4)))     # training mode: updates the running statistics
        bn.eval(); y = bn(x)         # uses them
    """

    _name = "BatchNorm1d"
    _ranks = (2, 3)
    _layout = "(N, C) or channels-last (N, L, C)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over channels-last images ``(N, H, W, C)``, torch's numbers.

    PyTorch equivalent: ``torch.nn.BatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True)`` (torch takes NCHW; convert with ``fnml.tensors.nchw_to_nhwc``).

    Same rules as :class:`BatchNorm1d`: statistics over (N, H, W) per channel, unbiased running variance,
    torch's momentum convention, ``num_batches_tracked``, running stats in the parameter dtype.

    Example::

        bn = BatchNorm2d(16)
        y = bn(jnp.ones((8, 28, 28, 16)))
    """

    _name = "BatchNorm2d"
    _ranks = (4,)
    _layout = "channels-last (N, H, W, C)"


class LayerNorm(Module):
    """Layer normalisation over the trailing ``normalized_shape`` axes, torch's eps and exact variance.

    PyTorch equivalent: ``torch.nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True,
    bias=True)``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with mean and biased variance over the last
    ``len(normalized_shape)`` axes; the variance is two-pass ``mean((x - mean)**2)`` (flax's default fast
    variance ``E[x^2] - E[x]^2`` loses precision for large-mean inputs) and ``eps`` is 1e-5 (flax: 1e-6).
    ``weight`` (ones) and ``bias`` (zeros) have shape ``normalized_shape`` (or are None).

    Example::

        ln = LayerNorm(16)
        y = ln(jnp.ones((4, 10, 16)))
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        where = "LayerNorm"
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
            raise ValueError(
                f"{where}: normalized_shape must be a positive int or a non-empty tuple of positive ints, "
                f"got normalized_shape={normalized_shape!r}"
            )
        check_number("eps", eps, where=where)
        if not eps > 0:
            raise ValueError(f"{where}: eps must be > 0, got eps={eps!r}")
        self.normalized_shape = shape
        self.eps = eps
        self.elementwise_affine = bool(elementwise_affine)
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.weight = nnx.Param(jnp.ones(shape, param_dtype)) if elementwise_affine else nnx.data(None)
        use_bias = elementwise_affine and bias
        self.bias = nnx.Param(jnp.zeros(shape, param_dtype)) if use_bias else nnx.data(None)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        k = len(self.normalized_shape)
        if x.ndim < k or tuple(x.shape[-k:]) != self.normalized_shape:
            raise ValueError(
                f"LayerNorm(normalized_shape={self.normalized_shape}) got an input of shape {x.shape}; its "
                f"trailing axes must be {self.normalized_shape}"
            )
        axes = tuple(range(x.ndim - k, x.ndim))
        params = [p[...] for p in (self.weight, self.bias) if p is not None]
        dtype = _compute_dtype(self.dtype, x, *params)
        x = x.astype(dtype)
        mean = jnp.mean(x, axis=axes, keepdims=True)
        centred = x - mean
        var = jnp.mean(jnp.square(centred), axis=axes, keepdims=True)
        y = centred * lax.rsqrt(var + jnp.asarray(self.eps, dtype))
        if self.weight is not None:
            y = y * self.weight[...].astype(dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
            f"bias={self.bias is not None}"
        )

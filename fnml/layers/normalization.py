"""BatchNorm, LayerNorm and the other normalisation layers.

PyTorch equivalent: ``torch/nn/modules/batchnorm.py``, ``normalization.py``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from fnml._validation import (
    check_bool,
    check_in_interval,
    check_ndim,
    check_non_negative,
    check_number,
    check_positive,
    check_positive_int,
)
from fnml.functional._shared import as_float_array
from fnml.functional.batch_norm import batch_norm_unchecked, instance_norm_unchecked
from fnml.functional.normalization import (
    as_normalized_shape,
    group_norm_unchecked,
    layer_norm_unchecked,
    local_response_norm_unchecked,
    rms_norm_unchecked,
)
from fnml.layers._facts import LOWERS_OP_BY_OP, PARAMETERLESS, LayerCall, TorchFacts, batch_norm_slots, same_name_slots
from fnml.layers.base import (
    Module,
    _compute_dtype,
    _int_dtype,
)

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "LayerNorm",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "RMSNorm",
    "LocalResponseNorm",
]


def _params(variable: Any) -> jax.Array | None:
    """The array of an optional parameter / buffer (None stays None)."""
    return None if variable is None else variable[...]


def _cast(array: jax.Array | None, dtype: Any) -> jax.Array | None:
    return None if array is None else array.astype(dtype)


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
        # torch takes any truthy value for these; fnml refuses 1 / "no" as it does for every layer flag.
        for flag, value in (("affine", affine), ("track_running_stats", track_running_stats), ("bias", bias)):
            check_bool(flag, value, where=where)
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
        weight, bias = _params(self.weight), _params(self.bias)
        dtype = _compute_dtype(self.dtype, x, *(v for v in (weight,) if v is not None))
        update = training and self.track_running_stats
        momentum = self.momentum
        if update:
            tracked = self.num_batches_tracked[...] + 1
            self.num_batches_tracked[...] = tracked
            if self.momentum is None:  # cumulative moving average, as torch
                momentum = 1.0 / tracked.astype(self.running_mean[...].dtype)
        y, mean, var = batch_norm_unchecked(
            x.astype(dtype),
            _params(self.running_mean),
            _params(self.running_var),
            _cast(weight, dtype),
            _cast(bias, dtype),
            use_batch_stats,
            momentum,
            self.eps,
            self._name,
        )
        if update:
            self.running_mean[...] = mean
            self.running_var[...] = var
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

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> bn = layers.BatchNorm1d(4)
    >>> y = bn(jnp.arange(8.0).reshape(2, 4))         # training mode: updates the running statistics
    >>> print(bn.running_mean[...], int(bn.num_batches_tracked[...]))
    [0.2 0.3 0.4 0.5] 1
    >>> bn.eval()(jnp.zeros((3, 4))).shape             # eval mode: uses them
    (3, 4)
    """

    torch_facts = TorchFacts(
        "BatchNorm1d",
        slots=batch_norm_slots(),
        layout="nlc",
        settings=("num_features", "eps", "momentum", "affine", "track_running_stats"),
        capture=LayerCall(("aten.batch_norm",), "batch_norm"),
        autocast=False,
    )

    _name = "BatchNorm1d"
    _ranks = (2, 3)
    _layout = "(N, C) or channels-last (N, L, C)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over channels-last images ``(N, H, W, C)``, torch's numbers.

    PyTorch equivalent: ``torch.nn.BatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True)`` (torch takes NCHW; convert with ``fnml.tensors.nchw_to_nhwc``).

    Same rules as :class:`BatchNorm1d`: statistics over (N, H, W) per channel, unbiased running variance,
    torch's momentum convention, ``num_batches_tracked``, running stats in the parameter dtype.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.BatchNorm2d(16)(jnp.ones((8, 5, 5, 16))).shape
    (8, 5, 5, 16)
    """

    torch_facts = TorchFacts(
        "BatchNorm2d",
        slots=batch_norm_slots(),
        layout="nhwc",
        settings=("num_features", "eps", "momentum", "affine", "track_running_stats"),
        capture=LayerCall(("aten.batch_norm",), "batch_norm"),
        autocast=False,
    )

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

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.LayerNorm(16)(jnp.ones((4, 10, 16))).shape
    (4, 10, 16)
    """

    torch_facts = TorchFacts(
        "LayerNorm",
        slots=same_name_slots("weight", "bias"),
        layout="torch",
        settings=("normalized_shape", "eps", "elementwise_affine", "bias"),
        capture=LayerCall(("aten.layer_norm",), "first"),
        autocast=False,
    )

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
        check_bool("elementwise_affine", elementwise_affine, where=where)  # torch: any truthy value
        check_bool("bias", bias, where=where)
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
        weight, bias = _params(self.weight), _params(self.bias)
        dtype = _compute_dtype(self.dtype, x, *(p for p in (weight, bias) if p is not None))
        axes = tuple(range(x.ndim - k, x.ndim))  # the trailing normalized_shape axes
        return layer_norm_unchecked(x.astype(dtype), axes, _cast(weight, dtype), _cast(bias, dtype), self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
            f"bias={self.bias is not None}"
        )


class GroupNorm(Module):
    """Group normalisation over channels-last data ``(N, *, C)``, torch's numbers and init.

    PyTorch equivalent: ``torch.nn.GroupNorm(num_groups, num_channels, eps=1e-5, affine=True, *,
    bias=True)`` (torch takes ``(N, C, *)``: here the channel axis is LAST, like the other fnml layers).

    The ``num_channels`` channels are split into ``num_groups`` consecutive groups; each (sample, group)
    is normalised with its mean and biased variance over the group's channels and the spatial axes, then
    scaled by the per-channel ``weight`` (ones) and shifted by ``bias`` (zeros). Calls
    :func:`fnml.functional.group_norm` with ``channels_last=True``.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> gn = layers.GroupNorm(2, 4)
    >>> gn
    GroupNorm(2, 4, eps=1e-05, affine=True, bias=True)
    >>> gn(jnp.ones((3, 5, 4))).shape
    (3, 5, 4)
    """

    torch_facts = TorchFacts(
        "GroupNorm",
        slots=same_name_slots("weight", "bias"),
        layout="channels_last",
        settings=("num_groups", "num_channels", "eps", "affine"),
        capture=LayerCall(("aten.group_norm",), "channels"),
        autocast=False,
    )

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        where = "GroupNorm"
        check_positive_int("num_groups", num_groups, where=where)
        check_positive_int("num_channels", num_channels, where=where)
        if num_channels % num_groups:
            raise ValueError(f"{where}: num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        check_positive("eps", eps, where=where)
        check_bool("affine", affine, where=where)
        check_bool("bias", bias, where=where)
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        self.dtype = dtype
        self.param_dtype = param_dtype
        shape = (num_channels,)
        self.weight = nnx.Param(jnp.ones(shape, param_dtype)) if affine else nnx.data(None)
        self.bias = nnx.Param(jnp.zeros(shape, param_dtype)) if affine and bias else nnx.data(None)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        if x.ndim < 2 or x.shape[-1] != self.num_channels:
            raise ValueError(
                f"GroupNorm(num_channels={self.num_channels}) expects channels-last input (N, *, "
                f"{self.num_channels}), got shape {x.shape}"
            )
        weight, bias = _params(self.weight), _params(self.bias)
        dtype = _compute_dtype(self.dtype, x, *(p for p in (weight, bias) if p is not None))
        return group_norm_unchecked(
            x.astype(dtype), self.num_groups, _cast(weight, dtype), _cast(bias, dtype), self.eps
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
            f"bias={self.bias is not None}"
        )


class _InstanceNorm(_BatchNorm):
    """Shared InstanceNorm: BatchNorm's parameters and buffers, per-sample statistics."""

    _spatial = 1

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        *,
        bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        super().__init__(
            num_features,
            eps,
            momentum,
            affine,
            track_running_stats,
            bias=bias,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        check_ndim("input", x.shape, self._ranks, where=f"{self._name} ({self._layout})")
        if x.shape[-1] != self.num_features:
            if self.affine or self.track_running_stats:
                raise ValueError(
                    f"{self._name}(num_features={self.num_features}) got an input with {x.shape[-1]} channels "
                    f"(last axis of channels-last shape {x.shape}); expected {self.num_features}"
                )
            # torch only warns here: without affine parameters or running statistics num_features is unused.
            warnings.warn(
                f"{self._name}: the input's channel axis ({x.shape[-1]}) does not match num_features="
                f"{self.num_features}, which is unused because affine=False",
                UserWarning,
                stacklevel=2,
            )
        unbatched = x.ndim == self._spatial + 1
        if unbatched:
            x = x[None]  # (*spatial, C) -> (1, *spatial, C)
        training = not self.use_running_average
        use_input_stats = training or not self.track_running_stats
        weight, bias = _params(self.weight), _params(self.bias)
        dtype = _compute_dtype(self.dtype, x, *(v for v in (weight,) if v is not None))
        y, mean, var = instance_norm_unchecked(
            x.astype(dtype),
            _params(self.running_mean),
            _params(self.running_var),
            _cast(weight, dtype),
            _cast(bias, dtype),
            use_input_stats,
            self.momentum if self.momentum is not None else 0.0,  # torch: momentum=None never moves the stats
            self.eps,
            self._name,
        )
        if self.track_running_stats and use_input_stats:
            self.running_mean[...] = mean
            self.running_var[...] = var
        return y[0] if unbatched else y


class InstanceNorm1d(_InstanceNorm):
    """Instance normalisation over channels-last sequences ``(N, L, C)`` or unbatched ``(L, C)``.

    PyTorch equivalent: ``torch.nn.InstanceNorm1d(num_features, eps=1e-5, momentum=0.1, affine=False,
    track_running_stats=False, *, bias=True)`` (torch takes ``(N, C, L)`` / ``(C, L)``: channel axis LAST here).

    Each (sample, channel) is normalised over L with its own mean and biased variance. With
    ``track_running_stats=True`` training mode also updates ``running_mean`` / ``running_var`` (torch's
    rule: the batch average of each sample's momentum update, with the UNBIASED variance) and eval mode
    (``model.eval()``) normalises with them; ``num_batches_tracked`` exists, as in torch, but instance
    norm never increments it, and ``momentum=None`` leaves the statistics unchanged (torch passes 0).
    ``affine=True`` adds ``weight`` (ones) and ``bias`` (zeros). Same attribute names as BatchNorm1d.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.InstanceNorm1d(3, affine=True)
    InstanceNorm1d(3, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=False)
    >>> layers.InstanceNorm1d(3)(jnp.ones((2, 5, 3))).shape
    (2, 5, 3)
    """

    torch_facts = TorchFacts(
        "InstanceNorm1d",
        slots=batch_norm_slots(),
        layout="channels_last",
        settings=("num_features", "eps", "momentum", "affine", "track_running_stats"),
        capture=LayerCall(("aten.instance_norm",), "channels"),
        autocast=False,
    )

    _name = "InstanceNorm1d"
    _ranks = (2, 3)
    _layout = "channels-last (N, L, C) or unbatched (L, C)"
    _spatial = 1


class InstanceNorm2d(_InstanceNorm):
    """Instance normalisation over channels-last images ``(N, H, W, C)`` or unbatched ``(H, W, C)``.

    PyTorch equivalent: ``torch.nn.InstanceNorm2d(num_features, eps=1e-5, momentum=0.1, affine=False,
    track_running_stats=False, *, bias=True)`` (torch takes NCHW / CHW: channel axis LAST here).

    Same rules as :class:`InstanceNorm1d`, with statistics over (H, W) per sample and channel.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.InstanceNorm2d(3)(jnp.ones((2, 4, 4, 3))).shape
    (2, 4, 4, 3)
    """

    torch_facts = TorchFacts(
        "InstanceNorm2d",
        slots=batch_norm_slots(),
        layout="channels_last",
        settings=("num_features", "eps", "momentum", "affine", "track_running_stats"),
        capture=LayerCall(("aten.instance_norm",), "channels"),
        autocast=False,
    )

    _name = "InstanceNorm2d"
    _ranks = (3, 4)
    _layout = "channels-last (N, H, W, C) or unbatched (H, W, C)"
    _spatial = 2


class RMSNorm(Module):
    """Root-mean-square normalisation over the trailing ``normalized_shape`` axes, torch's eps default.

    PyTorch equivalent: ``torch.nn.RMSNorm(normalized_shape, eps=None, elementwise_affine=True)``.

    ``y = x / sqrt(mean(x**2) + eps) * weight`` over the last ``len(normalized_shape)`` axes; ``weight``
    (ones, shape ``normalized_shape``) or none with ``elementwise_affine=False``; no bias. ``eps=None``
    (torch's default) is the machine epsilon of the computation dtype (see
    :func:`fnml.functional.rms_norm`).

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.RMSNorm((2, 3))
    RMSNorm((2, 3), eps=None, elementwise_affine=True)
    >>> layers.RMSNorm(3)(jnp.ones((4, 3))).shape
    (4, 3)
    """

    torch_facts = TorchFacts(
        "RMSNorm",
        slots=same_name_slots("weight"),
        layout="torch",
        settings=("normalized_shape", "eps", "elementwise_affine"),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float | None = None,
        elementwise_affine: bool = True,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        where = "RMSNorm"
        shape = as_normalized_shape(normalized_shape, where)
        if eps is not None:
            check_non_negative("eps", eps, where=where)
        check_bool("elementwise_affine", elementwise_affine, where=where)
        self.normalized_shape = shape
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.weight = nnx.Param(jnp.ones(shape, param_dtype)) if elementwise_affine else nnx.data(None)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        k = len(self.normalized_shape)
        if x.ndim < k or tuple(x.shape[-k:]) != self.normalized_shape:
            raise ValueError(
                f"RMSNorm(normalized_shape={self.normalized_shape}) got an input of shape {x.shape}; its "
                f"trailing axes must be {self.normalized_shape}"
            )
        weight = _params(self.weight)
        dtype = _compute_dtype(self.dtype, x, *(() if weight is None else (weight,)))
        axes = tuple(range(x.ndim - k, x.ndim))  # the trailing normalized_shape axes
        return rms_norm_unchecked(x.astype(dtype), axes, _cast(weight, dtype), self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class LocalResponseNorm(Module):
    """Local response normalisation across the channels of channels-last data ``(N, *, C)`` (at least 3-D).

    PyTorch equivalent: ``torch.nn.LocalResponseNorm(size, alpha=1e-4, beta=0.75, k=1.0)`` (torch takes
    ``(N, C, *)``: channel axis LAST here).

    ``y = x / (k + alpha / size * sum of x**2 over size neighbouring channels) ** beta``, zero-padded at the
    ends (see :func:`fnml.functional.local_response_norm`). No parameters.

    >>> import jax.numpy as jnp
    >>> from fnml import layers
    >>> layers.LocalResponseNorm(2)
    LocalResponseNorm(2, alpha=0.0001, beta=0.75, k=1.0)
    >>> layers.LocalResponseNorm(2)(jnp.ones((1, 4, 3))).shape
    (1, 4, 3)
    """

    torch_facts = TorchFacts(
        "LocalResponseNorm",
        slots=PARAMETERLESS,
        layout="channels_last",
        settings=("size", "alpha", "beta", "k"),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        where = "LocalResponseNorm"
        check_positive_int("size", size, where=where)
        for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
            check_number(name, value, where=where)
        self.size = size
        self.alpha = alpha
        self.beta = beta
        self.k = k

    def __call__(self, x: jax.Array) -> jax.Array:
        x = as_float_array("input", x, "LocalResponseNorm")
        if x.ndim < 3:
            raise ValueError(
                f"LocalResponseNorm: expected a channels-last input of at least 3 dimensions (N, *, C), got shape "
                f"{x.shape}"
            )
        return local_response_norm_unchecked(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"

"""The lowering table: every captured torch op, by name, with its jax implementation (torch signatures).

PyTorch equivalent: ``torch.ops.aten`` (the ops ``torch.export`` records) and ``torch.nn.functional``.

ONE table, :data:`OPS`, keyed by the ATen op name (``"aten.linear"``, ``"aten.conv2d"``, ...) or a
Python operator (``"operator.getitem"``); each entry takes the op's own torch arguments in torch layouts
(NCHW images, ``(out, in)`` weights) and returns jax values. The torch.fx path (``from_torch(module)``
without example inputs) indexes the same implementations by torch function / tensor method
(:func:`build_fx_tables`), so each op has one implementation.

Each entry carries its properties (:class:`Lowering`): ``random`` ops (dropout, ``rand*``, ``bernoulli``,
``multinomial``) take a ``jax.random`` key first, which the twin draws from its ``nnx.Rngs`` (same
distribution as torch, never torch's stream); ``elementwise`` ops may run on channels-last data; ``view``
ops return a view in torch (an in-place write into their result is refused). :data:`ELEMENTWISE` and
:data:`VIEWS` are read off the entries. The ops an fnml layer replaces in a twin are declared on the layer
(``torch_facts.capture``, see :mod:`fnml.layers._facts`).
"""

from __future__ import annotations

import builtins
import math
import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnml import functional as F
from fnml._torch import canonical_dtype

__all__ = ["ELEMENTWISE", "OPS", "VIEWS", "Lowering", "UnsupportedTorchOpError", "lookup"]


class UnsupportedTorchOpError(NotImplementedError):
    """``from_torch`` met a torch module, function or method it cannot express in JAX.

    PyTorch equivalent: none (torch runs it; the message names the op, the module path and the source line).
    """


class Lowering(NamedTuple):
    """One table entry: the jax implementation and the op's properties.

    PyTorch equivalent: an ATen op's schema tags (``pointwise``, ``view``, ``nondeterministic_seeded``).
    """

    fn: Callable
    random: bool = False  # takes a jax.random key first (the twin draws it from its nnx.Rngs)
    # The output element at an index depends only on the inputs' elements at that (broadcast) index: the op
    # commutes with any permutation of the axes, so a twin may run it on channels-last data (see
    # fnml.interop.capture) and keep the layout between convolutions. Dropout's mask is drawn per element,
    # so its distribution is layout-free too (the twin never reproduces torch's random stream anyway).
    elementwise: bool = False
    view: bool = False  # torch returns a view of the first argument: in-place writes into it are refused


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def jax_dtype(dtype: Any) -> Any:
    """A torch dtype (or name) -> the dtype JAX holds for it (the torch bridge's map; float64 needs x64)."""
    return None if dtype is None else canonical_dtype(dtype)


def _dims(dims: tuple) -> tuple:
    """``view(2, 3)`` / ``view((2, 3))`` / ``permute([1, 0])`` -> a tuple of ints."""
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        return tuple(dims[0])
    return tuple(dims)


def _axis(dim: Any) -> Any:
    """torch ``dim`` (int, list, None) -> a jnp ``axis``."""
    if isinstance(dim, (list, tuple)):
        return tuple(dim) if dim else None
    return dim


def _float_dtype(x: Any) -> Any:
    """The dtype torch computes a float op in for ``x`` (ints promote to the default float)."""
    return x.dtype if jnp.issubdtype(x.dtype, jnp.inexact) else jax.dtypes.canonicalize_dtype(jnp.float32)


def _factory_dtype(dtype: Any, default: Any = None) -> Any:
    return jax_dtype(dtype) if dtype is not None else jax.dtypes.canonicalize_dtype(default or jnp.float32)


# --------------------------------------------------------------------------------------------------
# Arithmetic, comparisons, activations
# --------------------------------------------------------------------------------------------------


def add(x, y, *, alpha=1):
    """torch.add(x, y, alpha=...)."""
    return x + (y if alpha == 1 else alpha * y)


def sub(x, y, *, alpha=1):
    """torch.sub(x, y, alpha=...)."""
    return x - (y if alpha == 1 else alpha * y)


def rsub(x, y, alpha=1):
    """aten.rsub: y - alpha * x."""
    return y - (x if alpha == 1 else alpha * x)


def div(x, y, *, rounding_mode=None):
    """torch.div with rounding_mode None / 'floor' / 'trunc'."""
    if rounding_mode == "floor":
        return jnp.floor_divide(x, y)
    if rounding_mode == "trunc":
        return jnp.trunc(x / y)
    return jnp.true_divide(x, y)


def clamp(x, min=None, max=None):  # noqa: A002 - torch's argument names
    """torch.clamp(x, min, max)."""
    return jnp.clip(x, min, max)


def masked_fill(x, mask, value):
    """x.masked_fill(mask, value)."""
    return jnp.where(mask, jnp.asarray(value, x.dtype), x)


def diff(x, n=1, dim=-1, prepend=None, append=None):
    """torch.diff(x, n, dim, prepend, append): prepend / append are joined to ``x`` along ``dim`` first."""
    parts = [p for p in (prepend, x, append) if p is not None]
    return jnp.diff(jnp.concatenate(parts, dim) if len(parts) > 1 else x, n=n, axis=dim)


def cross_entropy_loss(x, target, weight=None, reduction=1, ignore_index=-100, label_smoothing=0.0):
    """aten.cross_entropy_loss: ``F.cross_entropy`` with torch's reduction enum (0 none, 1 mean, 2 sum)."""
    from fnml import losses

    return losses.cross_entropy(
        x,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction=("none", "mean", "sum")[reduction],
        label_smoothing=label_smoothing,
    )


def where(condition, x, y):
    """torch.where(condition, x, y) with torch's type promotion of Python scalars."""
    return jnp.where(condition, x, y)


# --------------------------------------------------------------------------------------------------
# Shapes and indexing
# --------------------------------------------------------------------------------------------------


def view(x, *shape):
    """x.view(shape) / aten.view(x, shape): a reshape (jax arrays have no strides)."""
    return jnp.reshape(x, _dims(shape))


def flatten(x, start_dim=0, end_dim=-1):
    """torch.flatten: merge dims start_dim..end_dim."""
    if x.ndim == 0:
        return x.reshape(1)
    start, end = start_dim % x.ndim, end_dim % x.ndim
    return x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1 :])  # (..., d_start..d_end, ...) -> (..., prod, ...)


def unflatten(x, dim, sizes):
    """torch.unflatten(x, dim, sizes)."""
    dim = dim % x.ndim
    return x.reshape(x.shape[:dim] + tuple(sizes) + x.shape[dim + 1 :])


def permute(x, *dims):
    """x.permute(dims)."""
    return jnp.transpose(x, _dims(dims))


def squeeze(x, dim=None):
    """torch.squeeze: a non-size-1 dim is left alone (jnp.squeeze would raise)."""
    if dim is None:
        return jnp.squeeze(x)
    dims = tuple(dim) if isinstance(dim, (list, tuple)) else (dim,)
    dims = tuple(d % x.ndim for d in dims if x.ndim and x.shape[d] == 1)
    return jnp.squeeze(x, axis=dims) if dims else x


def expand(x, *size, implicit=False):
    """x.expand(sizes): -1 keeps a dim."""
    size = _dims(size)
    lead = len(size) - x.ndim
    target = tuple(x.shape[i - lead] if s == -1 else s for i, s in enumerate(size))
    return jnp.broadcast_to(x, target)


def repeat(x, *repeats):
    """x.repeat(*sizes) (numpy's tile)."""
    repeats = _dims(repeats)
    x = x.reshape((1,) * (len(repeats) - x.ndim) + x.shape)
    return jnp.tile(x, repeats)


def slice_(x, dim=0, start=None, end=None, step=1):
    """aten.slice(x, dim, start, end, step): torch clamps out-of-range bounds, as Python slices do."""
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, end, step)
    return x[tuple(index)]


def select(x, dim, index):
    """aten.select(x, dim, index)."""
    return jnp.take(x, index, axis=dim)


def narrow(x, dim, start, length):
    """torch.narrow(x, dim, start, length)."""
    return slice_(x, dim, start, start + length)


def index(x, indices):
    """aten.index(x, [i0, None, i2, ...]): advanced indexing, None keeps a dim."""
    return x[tuple(slice(None) if i is None else i for i in indices)]


def index_put(x, indices, values, accumulate=False):
    """aten.index_put(x, indices, values, accumulate): a functional scatter."""
    where_ = tuple(slice(None) if i is None else i for i in indices)
    return x.at[where_].add(values) if accumulate else x.at[where_].set(values)


def view_scatter(base, value, steps):
    """``base`` with ``value`` written where a chain of ``aten.slice`` / ``aten.select`` views looks into it.

    The twin's form of torch's write through a view (``x[a:b, i] = v``, ``x[:, 1:].fill_(0)``): ``steps`` are
    the views' ATen arguments, ``("slice", dim, start, end, step)`` / ``("select", dim, index)``, each on the
    previous view; jax arrays have no shared storage, so the new base is returned.
    """
    positions = [np.arange(size) for size in base.shape]  # per remaining view dim: the base positions it covers
    axes = list(range(base.ndim))  # view dim -> base dim
    index: list[Any] = [slice(None)] * base.ndim
    for kind, dim, *bounds in steps:
        dim = dim % len(axes)
        if kind == "slice":
            start, end, step = (list(bounds) + [None, None, 1])[:3]
            positions[dim] = positions[dim][slice(start, end, step)]
        else:
            index[axes[dim]] = int(positions[dim][bounds[0]])
            del positions[dim], axes[dim]
    for dim, covered in zip(axes, positions):
        step = int(covered[1] - covered[0]) if len(covered) > 1 else 1
        index[dim] = slice(int(covered[0]), int(covered[-1]) + 1, step) if len(covered) else slice(0, 0)
    return base.at[tuple(index)].set(jnp.asarray(value, base.dtype))


def view_gather(base, steps):
    """The view a chain of ``aten.slice`` / ``aten.select`` steps takes of ``base`` (see :func:`view_scatter`):
    a view read after a write into its base is taken again from the base's new value."""
    for kind, dim, *bounds in steps:
        base = slice_(base, dim, *bounds) if kind == "slice" else select(base, dim, *bounds)
    return base


def cat(tensors, dim=0):
    """torch.cat(tensors, dim); torch skips empty 1-D tensors."""
    tensors = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)]
    return jnp.concatenate(tensors, axis=dim)


def stack(tensors, dim=0):
    """torch.stack(tensors, dim)."""
    return jnp.stack(tensors, axis=dim)


def split(x, split_size, dim=0):
    """torch.split(x, int | sizes, dim) -> a tuple."""
    length = x.shape[dim]
    if isinstance(split_size, int):
        sizes = [split_size] * (length // split_size) + ([length % split_size] if length % split_size else [])
    else:
        sizes = list(split_size)
    offsets = np.cumsum([0, *sizes])
    return tuple(slice_(x, dim, int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:]))


def chunk(x, chunks, dim=0):
    """torch.chunk(x, chunks, dim)."""
    return split(x, -(-x.shape[dim] // chunks), dim)


def unbind(x, dim=0):
    """torch.unbind(x, dim)."""
    return tuple(jnp.moveaxis(x, dim, 0))


def gather(x, dim, index, *, sparse_grad=False):
    """torch.gather(x, dim, index)."""
    return jnp.take_along_axis(x, index, axis=dim)


def roll(x, shifts, dims=()):
    """torch.roll(x, shifts, dims)."""
    return jnp.roll(x, shifts, axis=_axis(dims) if dims not in ((), []) else None)


def tril(x, diagonal=0):
    """torch.tril."""
    return jnp.tril(x, diagonal)


def triu(x, diagonal=0):
    """torch.triu."""
    return jnp.triu(x, diagonal)


def size(x, dim=None):
    """x.size() / x.size(dim)."""
    return tuple(x.shape) if dim is None else x.shape[dim]


def to(x, *args, dtype=None, **kwargs):
    """x.to(dtype / device / other): only the dtype matters here (placement is fnml.device's job)."""
    for arg in args:
        if hasattr(arg, "dtype") and hasattr(arg, "shape"):
            dtype = arg.dtype
        elif arg is not None and not isinstance(arg, (str, bool)):
            try:
                dtype = jax_dtype(arg)
            except (TypeError, AttributeError):
                pass  # a device
    return x if dtype is None else x.astype(jax_dtype(dtype))


def _to_copy(x, *, dtype=None, **kwargs):
    """aten._to_copy(x, dtype=...)."""
    return x if dtype is None else x.astype(jax_dtype(dtype))


def type_as(x, other):
    """x.type_as(other)."""
    return x.astype(other.dtype)


def identity(x, *args, **kwargs):
    """contiguous / clone / detach / alias / lift_fresh_copy: values, not storage, so the same array."""
    return x


# --------------------------------------------------------------------------------------------------
# Factories and random ops
# --------------------------------------------------------------------------------------------------


def zeros(size, *, dtype=None, **kwargs):
    """torch.zeros(size, dtype=...)."""
    return jnp.zeros(tuple(size), _factory_dtype(dtype))


def ones(size, *, dtype=None, **kwargs):
    """torch.ones(size, dtype=...)."""
    return jnp.ones(tuple(size), _factory_dtype(dtype))


def full(size, fill_value, *, dtype=None, **kwargs):
    """torch.full(size, fill_value): the dtype follows the fill value as torch's does."""
    if dtype is None:
        default = (
            jnp.float32 if isinstance(fill_value, float) else (bool if isinstance(fill_value, bool) else jnp.int64)
        )
        dtype = jax.dtypes.canonicalize_dtype(default)
    return jnp.full(tuple(size), fill_value, jax_dtype(dtype))


def arange(*args, dtype=None, **kwargs):
    """torch.arange(end) / (start, end) / (start, end, step): int64 for integer bounds, as torch."""
    if dtype is None:
        floating = any(isinstance(a, float) for a in args)
        dtype = "float32" if floating else "int64"  # names: jax_dtype reads a dtype by its name
    return jnp.arange(*args, dtype=jax_dtype(dtype))


def like(fill: Callable) -> Callable:
    """zeros_like / ones_like / empty_like (empty: zeros)."""

    def factory(x, *, dtype=None, **kwargs):
        return fill(x.shape, dtype=jax_dtype(dtype) if dtype is not None else x.dtype)

    return factory


def full_like(x, fill_value, *, dtype=None, **kwargs):
    """torch.full_like(x, fill_value)."""
    return jnp.full(x.shape, fill_value, jax_dtype(dtype) if dtype is not None else x.dtype)


def new_factory(fill: Callable) -> Callable:
    """x.new_zeros(size) / new_ones / new_empty: x's dtype unless given."""

    def factory(x, size, *, dtype=None, **kwargs):
        return fill(tuple(size), dtype=jax_dtype(dtype) if dtype is not None else x.dtype)

    return factory


def new_full(x, size, fill_value, *, dtype=None, **kwargs):
    """x.new_full(size, fill_value)."""
    return jnp.full(tuple(size), fill_value, jax_dtype(dtype) if dtype is not None else x.dtype)


def rand(key, size, *, dtype=None, **kwargs):
    """torch.rand(size): U[0, 1)."""
    return jax.random.uniform(key, tuple(size), _factory_dtype(dtype))


def randn(key, size, *, dtype=None, **kwargs):
    """torch.randn(size): N(0, 1)."""
    return jax.random.normal(key, tuple(size), _factory_dtype(dtype))


def rand_like(key, x, *, dtype=None, **kwargs):
    """torch.rand_like(x)."""
    return jax.random.uniform(key, x.shape, jax_dtype(dtype) if dtype is not None else x.dtype)


def randn_like(key, x, *, dtype=None, **kwargs):
    """torch.randn_like(x)."""
    return jax.random.normal(key, x.shape, jax_dtype(dtype) if dtype is not None else x.dtype)


def randint(key, *args, dtype=None, **kwargs):
    """torch.randint(high, size) / (low, high, size): int64 by default."""
    low, high, shape = (0, *args) if len(args) == 2 else args
    return jax.random.randint(key, tuple(shape), low, high, _factory_dtype(dtype, jnp.int64))


def bernoulli(key, x, p=None, *, generator=None):
    """torch.bernoulli(probs) / x.bernoulli(p): 1.0 with probability p, in x's dtype."""
    probs = x if p is None else jnp.full(x.shape, p, x.dtype)
    return jax.random.bernoulli(key, probs).astype(x.dtype)


def multinomial(key, probs, num_samples, replacement=False, *, generator=None):
    """torch.multinomial(probs, num_samples, replacement): int64 indices per row (Gumbel top-k without replacement)."""
    logits = jnp.log(probs)
    if replacement:
        samples = jax.random.categorical(key, logits, axis=-1, shape=(num_samples, *probs.shape[:-1]))
        samples = jnp.moveaxis(samples, 0, -1)  # (num_samples, ...) -> (..., num_samples)
    else:
        gumbel = jax.random.gumbel(key, probs.shape, logits.dtype)
        samples = jax.lax.top_k(logits + gumbel, num_samples)[1]
    return samples.astype(jax.dtypes.canonicalize_dtype(jnp.int64))


# --------------------------------------------------------------------------------------------------
# Reductions, matmuls
# --------------------------------------------------------------------------------------------------


def reduce(fn: Callable) -> Callable:
    """torch.sum / torch.mean signature: (x, dim=None, keepdim=False, *, dtype=None)."""

    def reduce_(x, dim=None, keepdim=False, *, dtype=None):
        if dtype is not None:
            x = x.astype(jax_dtype(dtype))
        return fn(x, axis=_axis(dim), keepdims=keepdim)

    return reduce_


def max_min(fn: Callable, arg: Callable) -> Callable:
    """torch.max / torch.min: full reduction, elementwise with a tensor, or (values, indices) over dim."""

    def reduce_(x, dim=None, keepdim=False):
        if dim is None:
            return fn(x)
        if not isinstance(dim, int):  # torch.max(x, other): elementwise
            return jnp.maximum(x, dim) if fn is jnp.max else jnp.minimum(x, dim)
        return fn(x, axis=dim, keepdims=keepdim), arg(x, axis=dim, keepdims=keepdim)

    return reduce_


def arg_reduce(fn: Callable) -> Callable:
    """torch.argmax / argmin(x, dim=None, keepdim=False), int64."""

    def reduce_(x, dim=None, keepdim=False):
        out = fn(x.reshape(-1)) if dim is None else fn(x, axis=dim, keepdims=keepdim)
        return out.astype(jax.dtypes.canonicalize_dtype(jnp.int64))

    return reduce_


def var(x, dim=None, *, correction=1, keepdim=False):
    """aten.var.correction(x, dim, correction, keepdim)."""
    return jnp.var(x, axis=_axis(dim), ddof=1 if correction is None else correction, keepdims=keepdim)


def std(x, dim=None, *, correction=1, keepdim=False):
    """aten.std.correction(x, dim, correction, keepdim)."""
    return jnp.std(x, axis=_axis(dim), ddof=1 if correction is None else correction, keepdims=keepdim)


def vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None):  # noqa: A002 - torch's name
    """torch.linalg.vector_norm."""
    return jnp.linalg.norm(x if dim is not None else x.reshape(-1), ord=ord, axis=_axis(dim), keepdims=keepdim)


def logsumexp(x, dim, keepdim=False):
    """torch.logsumexp."""
    return jax.nn.logsumexp(x, axis=_axis(dim), keepdims=keepdim)


def cumsum(x, dim, *, dtype=None):
    """torch.cumsum."""
    return jnp.cumsum(x, axis=dim, dtype=jax_dtype(dtype))


def addmm(bias, x, y, *, beta=1, alpha=1):
    """torch.addmm(bias, x, y): beta * bias + alpha * x @ y."""
    return beta * bias + alpha * (x @ y)


def baddbmm(bias, x, y, *, beta=1, alpha=1):
    """torch.baddbmm(bias, x, y)."""
    return beta * bias + alpha * (x @ y)


def einsum(equation, tensors, *, path=None):
    """torch.einsum(equation, [tensors])."""
    return jnp.einsum(equation, *tensors)


# --------------------------------------------------------------------------------------------------
# nn ops: ATen signatures onto fnml.functional (torch layouts: NC[L|HW], (out, in) weights)
# --------------------------------------------------------------------------------------------------


def _stride(stride: Any) -> Any:
    """ATen pools spell the default stride ``[]``; torch.nn.functional spells it None."""
    return None if stride in (None, (), []) else stride


def max_pool(x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    """aten.max_pool1d/2d -> F.max_pool1d/2d."""
    pool = F.max_pool1d if x.ndim - 2 == 1 or len(_tuple_of(kernel_size)) == 1 and x.ndim == 3 else F.max_pool2d
    return pool(x, kernel_size, _stride(stride), padding, dilation, ceil_mode)


def max_pool_with_indices(x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    """aten.max_pool2d_with_indices -> F.max_pool2d(..., return_indices=True)."""
    return F.max_pool2d(x, kernel_size, _stride(stride), padding, dilation, ceil_mode, True)


def avg_pool1d(x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True):
    """aten.avg_pool1d -> F.avg_pool1d."""
    return F.avg_pool1d(x, kernel_size, _stride(stride), padding, ceil_mode, count_include_pad)


def avg_pool2d(x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    """aten.avg_pool2d -> F.avg_pool2d."""
    return F.avg_pool2d(x, kernel_size, _stride(stride), padding, ceil_mode, count_include_pad, divisor_override)


def _tuple_of(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def constant_pad(x, pad, value=0.0):
    """aten.constant_pad_nd -> F.pad(mode='constant')."""
    return F.pad(x, list(pad), "constant", value)


def pad(x, pad, mode="constant", value=None):
    """aten.pad -> F.pad."""
    return F.pad(x, list(pad), mode, value)


def _pad_mode(mode: str) -> Callable:
    def pad_(x, pad):
        return F.pad(x, list(pad), mode)

    return pad_


def _upsample(mode: str, *, corners: bool) -> Callable:
    """aten.upsample_*.vec(input, output_size, [align_corners,] scale_factors) -> F.interpolate."""

    def upsample(x, output_size, *rest):
        align_corners, scale_factors = (rest[0], rest[1]) if corners else (None, rest[0])
        size = None if output_size is None else tuple(output_size)
        scale = None if scale_factors is None else tuple(scale_factors)
        return F.interpolate(x, size=size, scale_factor=scale, mode=mode, align_corners=align_corners)

    return upsample


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    """aten.layer_norm -> F.layer_norm."""
    return F.layer_norm(x, tuple(normalized_shape), weight, bias, eps)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    """aten.group_norm -> F.group_norm."""
    return F.group_norm(x, num_groups, weight, bias, eps)


def batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enable=True):
    """aten.batch_norm -> F.batch_norm, without the running-statistics update (nn.BatchNorm layers do that)."""
    if training and running_mean is not None:
        raise UnsupportedTorchOpError(
            "F.batch_norm(training=True) with running statistics outside an nn.BatchNorm module (the buffer "
            "update is hidden inside the op); use nn.BatchNorm1d/2d"
        )
    return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)


def batch_norm_with_stats(x, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enable=True):
    """aten.batch_norm's arguments -> ``(out, new_running_mean, new_running_var)`` (F.batch_norm_with_stats).

    A twin runs this for ``F.batch_norm(training=True)`` on a module's own buffers and writes the two
    statistics back (see ``fnml.interop.capture``), as torch's op updates them in place.
    """
    return F.batch_norm_with_stats(x, running_mean, running_var, weight, bias, training, momentum, eps)


def instance_norm(x, weight, bias, running_mean, running_var, use_input_stats, momentum, eps, cudnn_enabled=True):
    """aten.instance_norm -> F.instance_norm (per-sample statistics)."""
    if running_mean is not None and use_input_stats:
        raise UnsupportedTorchOpError("instance_norm with track_running_stats=True in training mode")
    return F.instance_norm(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)


def embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    """aten.embedding(weight, indices) -> F.embedding(indices, weight) (padding row: no gradient, as torch)."""
    return F.embedding(indices, weight, padding_idx=None if padding_idx < 0 else padding_idx)


def scaled_dot_product_attention(
    rng, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None, enable_gqa=False
):
    """aten.scaled_dot_product_attention -> F.scaled_dot_product_attention (dropout key from the twin)."""
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, dropout_key=rng if dropout_p else None
    )


def softmax(x, dim=None, dtype=None):
    """aten.softmax(x, dim, dtype) -> F.softmax."""
    return F.softmax(x, dim, dtype=dtype)


def log_softmax(x, dim=None, dtype=None):
    """aten.log_softmax(x, dim, dtype) -> F.log_softmax."""
    return F.log_softmax(x, dim, dtype=dtype)


def _internal_softmax(fn):
    def softmax_(x, dim, half_to_float=False):
        return fn(x, dim)

    return softmax_


def elu(x, alpha=1.0, scale=1.0, input_scale=1.0):
    """aten.elu(x, alpha, scale, input_scale): F.elu when scale == input_scale == 1 (selu otherwise)."""
    if scale == 1.0 and input_scale == 1.0:
        return F.elu(x, alpha)
    return scale * jnp.where(x > 0, x, alpha * jnp.expm1(x * input_scale))


def dropout(key, x, p=0.5, train=True):
    """aten.dropout(x, p, train) -> F.dropout with the twin's key."""
    return F.dropout(x, p, train, key=key)


def feature_dropout(key, x, p=0.5, train=True):
    """aten.feature_dropout(x, p, train): F.dropout1d/2d/3d's channel-wise dropout, torch's ATen form.

    One keep/drop draw per (dim 0, dim 1) pair broadcast over the remaining dims, scaled by 1 / (1 - p), as
    ATen's ``make_feature_noise`` (so a 3-D input to ``F.dropout2d`` drops (N, C) rows of an (N, C, L)
    tensor, as torch does). The mask comes from the twin's key, never torch's stream.
    """
    if not train or p == 0 or x.size == 0:
        return x
    if p == 1:
        return x * jnp.zeros_like(x)
    keep = jax.random.bernoulli(key, 1 - p, x.shape[:2] + (1,) * (x.ndim - 2))
    return x * (keep.astype(x.dtype) / (1 - p))


def _lstm_gates(x, hx, w_ih, w_hh, b_ih, b_hh):
    gates = x @ w_ih.T + hx @ w_hh.T  # (B, in) @ (in, G*H) + (B, H) @ (H, G*H)
    if b_ih is not None:
        gates = gates + b_ih + b_hh
    return gates


def lstm_cell(x, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """aten.lstm_cell(input, [h, c], w_ih, w_hh, b_ih, b_hh) -> (h', c'), torch's gate order i, f, g, o."""
    h, c = hx
    i, f, g, o = jnp.split(_lstm_gates(x, h, w_ih, w_hh, b_ih, b_hh), 4, axis=-1)
    c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c_new), c_new


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """aten.gru_cell: r, z, n gates with the reset gate applied to the hidden projection (torch's form)."""
    gi = x @ w_ih.T + (0 if b_ih is None else b_ih)
    gh = h @ w_hh.T + (0 if b_hh is None else b_hh)
    i_r, i_z, i_n = jnp.split(gi, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
    r, z = jax.nn.sigmoid(i_r + h_r), jax.nn.sigmoid(i_z + h_z)
    n = jnp.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def _rnn_cell(activation: Callable) -> Callable:
    def cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
        """aten.rnn_tanh_cell / rnn_relu_cell."""
        return activation(_lstm_gates(x, h, w_ih, w_hh, b_ih, b_hh))

    return cell


# --------------------------------------------------------------------------------------------------
# Python values, symbolic sizes, asserts
# --------------------------------------------------------------------------------------------------


def sym_size(x, dim):
    """aten.sym_size.int: a dimension as a Python int (the twin's shapes are concrete under jit)."""
    return x.shape[dim]


def assert_scalar(condition, message):
    """aten._assert_scalar: a runtime check the captured code made (assert on a size)."""
    if not bool(condition):
        raise ValueError(f"from_torch twin: the captured forward's check failed: {message}")


def item(x):
    """aten.item of a tensor computed from sizes only (the twin evaluates it on concrete values): a Python number."""
    return np.asarray(x).item()


def noop(*args, **kwargs):
    """Metadata asserts and range hints: nothing to compute."""
    return None


def _getattr(x, name):
    """Tensor attributes used for shapes: x.shape, x.ndim, x.T."""
    if name == "shape":
        return tuple(x.shape)
    if name == "ndim":
        return x.ndim
    if name == "T":
        return x.T
    raise UnsupportedTorchOpError(f"tensor attribute .{name}")


def _unary(fn: Callable) -> Callable:
    """An elementwise op that ignores torch's ``inplace`` flag (values are immutable here)."""

    def op(x, *args, inplace=False, **kwargs):
        return fn(x, *args, **kwargs)

    return op


_ACTIVATIONS: dict[str, Callable] = {
    "relu": F.relu,
    "relu6": F.relu6,
    "sigmoid": F.sigmoid,
    "tanh": F.tanh,
    "silu": F.silu,
    "gelu": F.gelu,
    "leaky_relu": F.leaky_relu,
    "softplus": F.softplus,
    "hardtanh": F.hardtanh,
    "hardswish": F.hardswish,
    "hardsigmoid": F.hardsigmoid,
    "mish": F.mish,
    "exp": jnp.exp,
    "log": jnp.log,
    "sqrt": jnp.sqrt,
    "rsqrt": jax.lax.rsqrt,
    "abs": jnp.abs,
    "neg": jnp.negative,
    "sin": jnp.sin,
    "cos": jnp.cos,
    "erf": jax.scipy.special.erf,
}


def _build_ops() -> dict[str, Lowering]:
    """The table: ATen op name (overload dropped) or ``operator.<name>`` -> implementation and properties."""
    table: dict[str, Lowering] = {}

    def register(entries: dict[str, Callable], **properties: bool) -> None:
        for name, fn in entries.items():
            table[name] = Lowering(fn, **properties)

    # elementwise arithmetic, comparisons and activations
    register(
        {
            "aten.add": add,
            "aten.sub": sub,
            "aten.rsub": rsub,
            "aten.mul": jnp.multiply,
            "aten.div": div,
            "aten.true_divide": jnp.true_divide,
            "aten.floor_divide": jnp.floor_divide,
            "aten.remainder": jnp.remainder,
            "aten.fmod": jnp.fmod,
            "aten.pow": jnp.power,
            "aten.reciprocal": jnp.reciprocal,
            "aten.square": jnp.square,
            "aten.log1p": jnp.log1p,
            "aten.expm1": jnp.expm1,
            "aten.log2": jnp.log2,
            "aten.sign": jnp.sign,
            "aten.floor": jnp.floor,
            "aten.ceil": jnp.ceil,
            "aten.round": jnp.round,
            "aten.trunc": jnp.trunc,
            "aten.clamp": clamp,
            "aten.clamp_min": lambda x, min: jnp.maximum(x, min),  # noqa: A006
            "aten.clamp_max": lambda x, max: jnp.minimum(x, max),  # noqa: A006
            "aten.clip": clamp,
            "aten.maximum": jnp.maximum,
            "aten.minimum": jnp.minimum,
            "aten.where": where,
            "aten.masked_fill": masked_fill,
            "aten.eq": jnp.equal,
            "aten.ne": jnp.not_equal,
            "aten.lt": jnp.less,
            "aten.le": jnp.less_equal,
            "aten.gt": jnp.greater,
            "aten.ge": jnp.greater_equal,
            "aten.logical_not": jnp.logical_not,
            "aten.logical_and": jnp.logical_and,
            "aten.logical_or": jnp.logical_or,
            "aten.bitwise_not": jnp.invert,
            "aten.bitwise_and": jnp.bitwise_and,
            "aten.bitwise_or": jnp.bitwise_or,
            # Python's & | ^ on tensors (transformers' mask code: ``mask_a & mask_b``) record these names.
            "aten.__and__": jnp.bitwise_and,
            "aten.__or__": jnp.bitwise_or,
            "aten.__xor__": jnp.bitwise_xor,
            "aten.bitwise_xor": jnp.bitwise_xor,
            "aten.isnan": jnp.isnan,
            "aten.elu": elu,
            "aten.contiguous": identity,
            "aten.clone": identity,
            "aten.lift_fresh_copy": identity,
            "aten._to_copy": _to_copy,
            "aten.type_as": type_as,
            **{f"aten.{name}": _unary(fn) for name, fn in _ACTIVATIONS.items()},
        },
        elementwise=True,
    )
    register({"aten.detach": identity, "aten.alias": identity}, elementwise=True, view=True)
    # views
    register(
        {
            "aten.view": view,
            "aten.unflatten": unflatten,
            "aten.transpose": jnp.swapaxes,
            "aten.permute": permute,
            "aten.t": lambda x: x.T,
            "aten.unsqueeze": jnp.expand_dims,
            "aten.squeeze": squeeze,
            "aten.expand": expand,
            "aten.expand_as": lambda x, other: jnp.broadcast_to(x, other.shape),
            "aten.slice": slice_,
            "aten.select": select,
            "aten.narrow": narrow,
            "aten.split": split,
            "aten.split_with_sizes": split,
            "aten.chunk": chunk,
            "aten.unbind": unbind,
        },
        view=True,
    )
    register(
        {
            # softmax, triangles
            "aten.softmax": softmax,
            "aten._softmax": _internal_softmax(jax.nn.softmax),
            "aten.log_softmax": log_softmax,
            "aten._log_softmax": _internal_softmax(jax.nn.log_softmax),
            "aten.logsumexp": logsumexp,
            "aten.tril": tril,
            "aten.triu": triu,
            # shapes and indexing (copies, or views torch may return as copies)
            "aten._unsafe_view": view,
            "aten.reshape": view,
            "aten.flatten": flatten,
            "aten.swapaxes": jnp.swapaxes,
            "aten.numpy_T": lambda x: x.T,
            "aten.repeat": repeat,
            "aten.index": index,
            "aten.index_put": index_put,
            "aten.index_select": lambda x, dim, idx: jnp.take(x, idx, axis=dim),
            "aten.gather": gather,
            "aten.cat": cat,
            "aten.concat": cat,
            "aten.stack": stack,
            "aten.flip": lambda x, dims: jnp.flip(x, axis=tuple(dims)),
            "aten.roll": roll,
            "aten.to": to,
            "aten.fill": lambda x, value: jnp.full(x.shape, value, x.dtype),
            "aten.copy": lambda x, src, non_blocking=False: jnp.broadcast_to(src, x.shape).astype(x.dtype),
            "aten.zero": jnp.zeros_like,
            # factories
            "aten.zeros": zeros,
            "aten.ones": ones,
            "aten.empty": zeros,
            "aten.full": full,
            "aten.scalar_tensor": lambda value, *, dtype=None, **k: jnp.asarray(value, _factory_dtype(dtype)),
            "aten.arange": arange,
            "aten.zeros_like": like(jnp.zeros),
            "aten.ones_like": like(jnp.ones),
            "aten.empty_like": like(jnp.zeros),
            "aten.full_like": full_like,
            "aten.new_zeros": new_factory(jnp.zeros),
            "aten.new_ones": new_factory(jnp.ones),
            "aten.new_empty": new_factory(jnp.zeros),
            "aten.new_full": new_full,
            # reductions and matmuls
            "aten.sum": reduce(jnp.sum),
            "aten.mean": reduce(jnp.mean),
            "aten.prod": reduce(jnp.prod),
            "aten.amax": lambda x, dim=(), keepdim=False: jnp.max(x, axis=_axis(dim), keepdims=keepdim),
            "aten.amin": lambda x, dim=(), keepdim=False: jnp.min(x, axis=_axis(dim), keepdims=keepdim),
            "aten.max": max_min(jnp.max, jnp.argmax),
            "aten.min": max_min(jnp.min, jnp.argmin),
            "aten.argmax": arg_reduce(jnp.argmax),
            "aten.argmin": arg_reduce(jnp.argmin),
            "aten.all": lambda x, dim=None, keepdim=False: jnp.all(x, axis=_axis(dim), keepdims=keepdim),
            "aten.any": lambda x, dim=None, keepdim=False: jnp.any(x, axis=_axis(dim), keepdims=keepdim),
            "aten.var": var,
            "aten.std": std,
            "aten.linalg_vector_norm": vector_norm,
            "aten.cumsum": cumsum,
            "aten.diff": diff,
            "aten.matmul": jnp.matmul,
            "aten.mm": jnp.matmul,
            "aten.bmm": jnp.matmul,
            "aten.mv": jnp.matmul,
            "aten.dot": jnp.dot,
            "aten.outer": jnp.outer,
            "aten.addmm": addmm,
            "aten.baddbmm": baddbmm,
            "aten.einsum": einsum,
            "aten.linear": F.linear,
            # nn ops
            "aten.conv1d": F.conv1d,
            "aten.conv2d": F.conv2d,
            "aten.conv_transpose1d": F.conv_transpose1d,
            "aten.conv_transpose2d": F.conv_transpose2d,
            "aten.max_pool1d": max_pool,
            "aten.max_pool2d": max_pool,
            "aten.max_pool2d_with_indices": max_pool_with_indices,
            "aten.avg_pool1d": avg_pool1d,
            "aten.avg_pool2d": avg_pool2d,
            "aten.adaptive_avg_pool1d": F.adaptive_avg_pool1d,
            "aten.adaptive_avg_pool2d": F.adaptive_avg_pool2d,
            "aten.adaptive_max_pool1d": lambda x, size: F.adaptive_max_pool1d(x, size, True),
            "aten.adaptive_max_pool2d": lambda x, size: F.adaptive_max_pool2d(x, size, True),
            "aten.constant_pad_nd": constant_pad,
            "aten.pad": pad,
            "aten.reflection_pad1d": _pad_mode("reflect"),
            "aten.reflection_pad2d": _pad_mode("reflect"),
            "aten.replication_pad1d": _pad_mode("replicate"),
            "aten.replication_pad2d": _pad_mode("replicate"),
            "aten._pad_circular": _pad_mode("circular"),
            "aten.upsample_nearest1d": _upsample("nearest", corners=False),
            "aten.upsample_nearest2d": _upsample("nearest", corners=False),
            "aten._upsample_nearest_exact1d": _upsample("nearest-exact", corners=False),
            "aten._upsample_nearest_exact2d": _upsample("nearest-exact", corners=False),
            "aten.upsample_linear1d": _upsample("linear", corners=True),
            "aten.upsample_bilinear2d": _upsample("bilinear", corners=True),
            "aten.upsample_bicubic2d": _upsample("bicubic", corners=True),
            "aten.pixel_shuffle": F.pixel_shuffle,
            "aten.pixel_unshuffle": F.pixel_unshuffle,
            "aten.layer_norm": layer_norm,
            "aten.group_norm": group_norm,
            "aten.batch_norm": batch_norm,
            "fnml.batch_norm_with_stats": batch_norm_with_stats,
            "fnml.view_scatter": view_scatter,
            "fnml.view_gather": view_gather,
            "fnml.item": item,
            "aten.instance_norm": instance_norm,
            "aten.embedding": embedding,
            "aten.cross_entropy_loss": cross_entropy_loss,
            "aten.lstm_cell": lstm_cell,
            "aten.gru_cell": gru_cell,
            "aten.rnn_tanh_cell": _rnn_cell(jnp.tanh),
            "aten.rnn_relu_cell": _rnn_cell(jax.nn.relu),
            # Python values, sizes, asserts
            "aten.sym_size": sym_size,
            "aten.sym_numel": lambda x: x.size,
            "aten._assert_scalar": assert_scalar,
            "aten._assert_tensor_metadata": noop,
            "aten.sym_constrain_range_for_size": noop,
            "aten.sym_constrain_range": noop,
            "aten._assert_async": noop,
            "operator.getitem": operator.getitem,
            "operator.add": operator.add,
            "operator.sub": operator.sub,
            "operator.mul": operator.mul,
            "operator.truediv": operator.truediv,
            "operator.floordiv": operator.floordiv,
            "operator.mod": operator.mod,
            "operator.pow": operator.pow,
            "operator.neg": operator.neg,
            "operator.eq": operator.eq,
            "operator.ne": operator.ne,
            "operator.lt": operator.lt,
            "operator.le": operator.le,
            "operator.gt": operator.gt,
            "operator.ge": operator.ge,
            "operator.and_": operator.and_,
            "operator.or_": operator.or_,
            "operator.not_": operator.not_,
            "torch.sym_float": float,
            "torch.sym_int": int,
            "torch.sym_not": operator.not_,
            "torch.sym_max": builtins.max,
            "torch.sym_min": builtins.min,
            "torch._sym_sqrt": math.sqrt,
            "math.sqrt": math.sqrt,
            "math.ceil": math.ceil,
            "math.floor": math.floor,
        }
    )
    # random ops: a jax.random key first
    register({"aten.dropout": dropout}, random=True, elementwise=True)
    # one draw per (sample, channel): not elementwise (channels-last data would move the channel axis)
    register({"aten.feature_dropout": feature_dropout}, random=True)
    register(
        {
            "aten.rand": rand,
            "aten.randn": randn,
            "aten.rand_like": rand_like,
            "aten.randn_like": randn_like,
            "aten.randint": randint,
            "aten.bernoulli": bernoulli,
            "aten.multinomial": multinomial,
            "aten.scaled_dot_product_attention": scaled_dot_product_attention,
        },
        random=True,
    )
    return table


OPS: dict[str, Lowering] = _build_ops()

# Read off the entries (see Lowering): ops a twin may run on channels-last data, and ops returning a view.
ELEMENTWISE: frozenset[str] = frozenset(name for name, entry in OPS.items() if entry.elementwise)
VIEWS: frozenset[str] = frozenset(name for name, entry in OPS.items() if entry.view)

# In-place ATen ops ("aten.add_") lower like their functional form; the twin writes buffers back.
INPLACE_SUFFIX = "_"


def lookup(name: str) -> Lowering | None:
    """The table entry for a captured op name, or None (``aten.add_`` falls back to ``aten.add``).

    PyTorch equivalent: ``torch.ops.aten.<name>`` (the op a captured graph calls).

    >>> from fnml.interop import lowering
    >>> lowering.lookup("aten.relu_").fn is lowering.lookup("aten.relu").fn
    True
    >>> lowering.lookup("aten.linalg_svdvals") is None
    True
    """
    if name in OPS:
        return OPS[name]
    if name.endswith(INPLACE_SUFFIX) and name[:-1] in OPS:
        return OPS[name[:-1]]
    return None


# --------------------------------------------------------------------------------------------------
# The torch.fx path: torch functions / tensor methods onto the same implementations
# --------------------------------------------------------------------------------------------------


def _fx_dropout(x, p=0.5, training=True, inplace=False):
    """F.dropout in an fx-traced forward: only the identity cases (eval mode or p=0)."""
    if training and p > 0:
        raise UnsupportedTorchOpError(
            "F.dropout(training=True, p>0) in a forward traced without example inputs: pass example inputs "
            "(interop.from_torch(model, x)) or use an nn.Dropout module"
        )
    return x


def _fx_pool(fn: Callable) -> Callable:
    def pool(x, kernel_size, stride=None, *args, **kwargs):
        if kwargs.pop("return_indices", False):
            raise UnsupportedTorchOpError("F.max_pool2d with return_indices=True")
        return fn(x, kernel_size, stride, *args, **kwargs)

    return pool


def build_fx_tables() -> tuple[dict[Any, Callable], dict[str, Callable]]:
    """torch function objects and tensor method names -> the implementations above."""
    import torch
    import torch.nn.functional as F_torch

    activations = {name: _unary(fn) for name, fn in _ACTIVATIONS.items()}
    activations["softmax"] = F.softmax
    activations["log_softmax"] = F.log_softmax
    functions: dict[Any, Callable] = {
        operator.add: operator.add,
        operator.sub: operator.sub,
        operator.mul: operator.mul,
        operator.truediv: operator.truediv,
        operator.floordiv: jnp.floor_divide,
        operator.matmul: jnp.matmul,
        operator.neg: operator.neg,
        operator.pow: jnp.power,
        operator.getitem: operator.getitem,
        builtins.getattr: _getattr,
        torch.add: add,
        torch.sub: sub,
        torch.mul: jnp.multiply,
        torch.div: div,
        torch.matmul: jnp.matmul,
        torch.mm: jnp.matmul,
        torch.bmm: jnp.matmul,
        torch.pow: jnp.power,
        torch.flatten: flatten,
        torch.reshape: lambda x, shape: jnp.reshape(x, tuple(shape)),
        torch.cat: cat,
        torch.concat: cat,
        torch.stack: stack,
        torch.mean: reduce(jnp.mean),
        torch.sum: reduce(jnp.sum),
        torch.transpose: jnp.swapaxes,
        torch.permute: lambda x, dims: jnp.transpose(x, tuple(dims)),
        torch.squeeze: squeeze,
        torch.unsqueeze: jnp.expand_dims,
        torch.clamp: clamp,
        torch.max: max_min(jnp.max, jnp.argmax),
        torch.min: max_min(jnp.min, jnp.argmin),
        F_torch.linear: F.linear,
        F_torch.max_pool2d: _fx_pool(F.max_pool2d),
        F_torch.avg_pool2d: F.avg_pool2d,
        F_torch.adaptive_avg_pool2d: F.adaptive_avg_pool2d,
        F_torch.dropout: _fx_dropout,
    }
    for name, fn in activations.items():
        for namespace in (torch, F_torch):
            target = getattr(namespace, name, None)
            if target is not None:
                functions[target] = fn
    methods: dict[str, Callable] = {
        "view": view,
        "reshape": view,
        "flatten": flatten,
        "size": size,
        "dim": lambda x: x.ndim,
        "contiguous": identity,
        "mean": reduce(jnp.mean),
        "sum": reduce(jnp.sum),
        "transpose": jnp.swapaxes,
        "permute": permute,
        "squeeze": squeeze,
        "unsqueeze": jnp.expand_dims,
        "t": lambda x: x.T,
        "add": add,
        "sub": sub,
        "mul": jnp.multiply,
        "div": div,
        "matmul": jnp.matmul,
        "pow": jnp.power,
        "clamp": clamp,
        "max": max_min(jnp.max, jnp.argmax),
        "min": max_min(jnp.min, jnp.argmin),
        "__getitem__": operator.getitem,
        **activations,
    }
    return functions, methods


def fx_elementwise_targets() -> tuple[frozenset, frozenset]:
    """The torch.fx path's elementwise ops (see :data:`ELEMENTWISE`): torch functions and tensor method names.

    PyTorch equivalent: ``torch.add``, ``operator.mul``, ``F.relu``, ``x.sigmoid()``... (pointwise ops).

    >>> import operator
    >>> from fnml.interop import lowering
    >>> functions, methods = lowering.fx_elementwise_targets()
    >>> operator.add in functions, "relu" in methods, "view" in methods
    (True, True, False)
    """
    import torch
    import torch.nn.functional as F_torch

    functions = {operator.add, operator.sub, operator.mul, operator.truediv, operator.neg}
    functions |= {torch.add, torch.sub, torch.mul, torch.div, torch.clamp}
    for name in _ACTIVATIONS:
        for namespace in (torch, F_torch):
            target = getattr(namespace, name, None)
            if target is not None:
                functions.add(target)
    methods = {"add", "sub", "mul", "div", "clamp", "contiguous", *_ACTIVATIONS}
    return frozenset(functions), frozenset(methods)

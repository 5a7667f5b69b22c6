"""The one implementation of every neural-network op, with torch's names, arguments and defaults.

PyTorch equivalent: ``torch.nn.functional``.

Layers in :mod:`fnml.layers` hold parameters and call these functions; ``fnml.interop``'s ``from_torch``
lowers captured torch ops onto them. Layouts: where torch users call an op with torch's layout, the
function takes torch's layout and says so (``linear``'s weight is ``(out_features, in_features)``,
attention is ``(B, heads, T, head_dim)``); image ops take torch's NCHW by default and channels-last
``(N, H, W, C)`` with the keyword ``channels_last=True`` (the fast path fnml's layers use on XLA, where the
layout decision is made once, in the function).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fnml._validation import (
    check_bool,
    check_choice,
    check_int,
    check_key,
    check_ndim,
    check_number,
    check_pair,
    check_positive,
    check_positive_int,
)

__all__: list[str] = []

# --------------------------------------------------------------------------------------------------
# Linear (owner: linear family)
# --------------------------------------------------------------------------------------------------


def _as_float_array(name: str, value: Any, where: str) -> jax.Array:
    """``value`` as a floating-point jax array (TypeError for integer / bool data)."""
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise TypeError(f"{where}: {name} must be a floating-point array, got dtype {array.dtype}")
    return array


def linear(input: Any, weight: Any, bias: Any = None) -> jax.Array:
    """Affine map ``y = input @ weight.T + bias`` with torch's ``(out_features, in_features)`` weight.

    PyTorch equivalent: ``torch.nn.functional.linear(input, weight, bias=None)``.

    Shapes: ``input: (*, in_features)``, ``weight: (out_features, in_features)`` (torch's layout; the
    :class:`fnml.layers.Linear` layer stores ``kernel = weight.T`` and passes ``kernel.T`` here, which XLA
    folds into the contraction), ``bias: (out_features,)`` or None -> ``(*, out_features)``. Mixed dtypes
    are promoted (torch requires equal dtypes).

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.linear(jnp.ones((2, 3)), jnp.ones((4, 3)), jnp.arange(4.0)).tolist()
    [[3.0, 4.0, 5.0, 6.0], [3.0, 4.0, 5.0, 6.0]]
    """
    where = "linear"
    x = _as_float_array("input", input, where)
    w = _as_float_array("weight", weight, where)
    check_ndim("weight", w.shape, (2,), where=where)
    if x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(
            f"{where}: input of shape {x.shape} does not match weight of shape {w.shape} "
            f"(expected input (*, {w.shape[1]}) for weight (out_features, in_features))"
        )
    b = None
    if bias is not None:
        b = _as_float_array("bias", bias, where)
        if b.shape != (w.shape[0],):
            raise ValueError(f"{where}: bias must have shape ({w.shape[0]},) for weight {w.shape}, got {b.shape}")
    dtype = jnp.result_type(x, w, *(() if b is None else (b,)))
    x, w = x.astype(dtype), w.astype(dtype)
    accumulate = _accumulation_dtype(dtype)
    # N-D inputs run as ONE 2-D matmul over the rows: XLA CPU's gradient of a 3-D contraction falls off its fast
    # matmul path (see benchmarks/README.md, W6).
    rows = x.reshape(-1, x.shape[-1]) if x.ndim > 2 else x  # (*, in) -> (prod(*), in)
    # Contract the input's last axis with weight's in_features axis: (rows, in) x (out, in) -> (rows, out).
    y = lax.dot_general(rows, w, (((rows.ndim - 1,), (1,)), ((), ())), preferred_element_type=accumulate)
    if x.ndim > 2:
        y = y.reshape(*x.shape[:-1], w.shape[0])  # (prod(*), out) -> (*, out)
    if b is not None:
        y = y + jnp.reshape(b.astype(accumulate), (1,) * (y.ndim - 1) + (-1,))
    return y.astype(dtype)


def _accumulation_dtype(dtype: Any) -> Any:
    """The dtype products are summed in: float32 for bfloat16/float16 operands, else the operands' own.

    torch's CPU kernels (and so its autocast) accumulate half-precision matmuls and convolutions in float32
    and add the bias before the single rounding to the half-precision result; XLA would round the product
    first and add the bias in half precision (two roundings).
    """
    return jnp.float32 if jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)) else dtype


__all__ += ["linear"]


# --------------------------------------------------------------------------------------------------
# Embedding (owner: sparse family)
# --------------------------------------------------------------------------------------------------


def _embedding_indices(input: Any, num_embeddings: int, where: str) -> jax.Array:
    indices = jnp.asarray(input)
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        raise TypeError(f"{where}: indices must be an integer array, got dtype {indices.dtype}")
    if not isinstance(indices, jax.core.Tracer) and indices.size:
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= num_embeddings:
            bad = low if low < 0 else high
            raise IndexError(
                f"{where}(num_embeddings={num_embeddings}): index {bad} is out of range [0, {num_embeddings - 1}]"
            )
    return indices


def _row_norms(rows: jax.Array, norm_type: float) -> jax.Array:
    """The ``norm_type``-norm of each row ``(..., D) -> (...)``, as torch's ``Tensor.norm(p)``."""
    magnitude = jnp.abs(rows)
    if norm_type == 2:
        return jnp.sqrt(jnp.sum(rows * rows, axis=-1))
    if norm_type == 1:
        return jnp.sum(magnitude, axis=-1)
    if math.isinf(norm_type):
        return jnp.max(magnitude, axis=-1)
    return jnp.sum(magnitude**norm_type, axis=-1) ** (1.0 / norm_type)


def _check_renorm_args(max_norm: Any, norm_type: Any, where: str) -> None:
    check_number("max_norm", max_norm, where=where)
    if not max_norm >= 0:
        raise ValueError(f"{where}: max_norm must be >= 0, got max_norm={max_norm!r}")
    check_number("norm_type", norm_type, where=where)
    if not norm_type > 0:
        raise ValueError(f"{where}: norm_type must be > 0 (a p-norm), got norm_type={norm_type!r}")


def embedding_renorm(weight: jax.Array, input: jax.Array, max_norm: float, norm_type: float = 2.0) -> jax.Array:
    """The weight with every row that ``input`` refers to rescaled to norm ``<= max_norm`` (a new array).

    PyTorch equivalent: ``torch.embedding_renorm_(weight, input, max_norm, norm_type)`` (in place there; here
    the renormalised weight is returned, torch's values).

    A referenced row whose ``norm_type``-norm exceeds ``max_norm`` is multiplied by
    ``max_norm / (norm + 1e-7)`` (torch's formula, the scale computed in float64 when x64 is on, as torch
    computes it in double); other rows are unchanged. No gradient flows through the renormalisation (torch
    runs it under ``no_grad``). Indices outside ``[0, num_embeddings)`` are ignored.

    >>> w = jnp.array([[3.0, 4.0], [0.3, 0.4]])
    >>> print(np.asarray(embedding_renorm(w, jnp.array([0, 1]), max_norm=1.0)).round(4))
    [[0.6 0.8]
     [0.3 0.4]]
    """
    where = "embedding_renorm"
    _check_renorm_args(max_norm, norm_type, where)
    w = lax.stop_gradient(jnp.asarray(weight))
    check_ndim("weight", w.shape, (2,), where=where)
    indices = jnp.asarray(input).reshape(-1)  # (*) -> (M,)
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        raise TypeError(f"{where}: indices must be an integer array, got dtype {indices.dtype}")
    rows = jnp.take(w, indices, axis=0, mode="clip")  # (M,) -> (M, D)
    norms = _row_norms(rows, float(norm_type))  # (M,)
    wide = jax.dtypes.canonicalize_dtype(jnp.float64)
    scale = (max_norm / (norms.astype(wide) + 1e-7)).astype(w.dtype)
    scaled = jnp.where((norms > max_norm)[:, None], rows * scale[:, None], rows)
    # A repeated index writes the same row twice; out-of-range indices are dropped.
    return w.at[indices].set(scaled, mode="drop")


_PARAM_WRITES_DROPPED = contextvars.ContextVar("fnml_param_writes_dropped", default=False)


@contextlib.contextmanager
def dropping_param_writes():
    """While active, ops that write into an ``nnx.Param`` in place (``embedding``'s ``max_norm``) raise.

    fnml's evaluation step (``train.make_eval_step``, ``fit``'s validation) traces the forward pass and returns
    no parameters, so such a write would be lost there while torch keeps it: refused loudly instead.
    """
    token = _PARAM_WRITES_DROPPED.set(True)
    try:
        yield
    finally:
        _PARAM_WRITES_DROPPED.reset(token)


_REVERSE_MODE_ONLY = contextvars.ContextVar("fnml_reverse_mode_only", default=False)


@contextlib.contextmanager
def reverse_mode_only():
    """While active (at trace time), ops may use hand-written reverse-mode gradients (``jax.custom_vjp``).

    PyTorch equivalent: none (torch's kernels carry their own backward formulas).

    fnml's training step differentiates only in reverse mode (``jax.value_and_grad``), so it turns this on:
    BatchNorm's training-mode forward then carries its closed-form backward (one pass over the activations
    and two per-channel sums). Outside it, the ops stay differentiable in every mode (``jax.jvp``,
    ``jax.hessian``): forward-mode AD cannot go through a ``custom_vjp`` function. Same values either way.

    >>> import jax, jax.numpy as jnp
    >>> from fnml import functional as F
    >>> f = lambda x: F.batch_norm(x, None, None, training=True).sum()
    >>> with F.reverse_mode_only():
    ...     g = jax.grad(f)(jnp.array([[1.0], [2.0]]))
    >>> print(g.ravel())
    [0. 0.]
    """
    token = _REVERSE_MODE_ONLY.set(True)
    try:
        yield
    finally:
        _REVERSE_MODE_ONLY.reset(token)


def embedding(
    input: jax.Array,
    weight: Any,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> jax.Array:
    """Look up rows of ``weight``: integer ``input (*)`` -> ``(*, embedding_dim)``.

    PyTorch equivalent: ``torch.nn.functional.embedding(input, weight, padding_idx=None, max_norm=None,
    norm_type=2.0, scale_grad_by_freq=False, sparse=False)``.

    - ``weight``: ``(num_embeddings, embedding_dim)``, an array or an ``nnx.Param`` (e.g. ``emb.weight``).
    - ``padding_idx``: rows looked up at that index get no gradient (their value is still returned).
    - ``max_norm``: torch first renormalises the referenced rows of ``weight`` IN PLACE (see
      :func:`embedding_renorm`), so later calls and the optimizer see the renormalised weight. fnml does the
      same when ``weight`` is an ``nnx.Param`` (its value is replaced; kept by eager code, ``nnx.jit`` and
      ``nnx.value_and_grad``, and by ``fnml.train``'s step, whose optimizer then updates the renormalised
      weight as torch's does). A plain array cannot be changed in place: that is a ``ValueError`` (use
      ``embedding_renorm`` and keep the returned weight). Inside ``fnml.train``'s evaluation step, which
      returns no parameters and would silently drop the write, it is a ``NotImplementedError``.
    - ``scale_grad_by_freq``: each row's gradient is divided by how often its index occurs in ``input``.
    - ``sparse=True`` is a ``ValueError``: JAX has dense gradients only (same values).
    - Out-of-range indices: an ``IndexError`` when ``input`` is concrete (as torch); when traced (inside
      ``jit``) the check cannot run and the rows come out as NaN (never a silently clamped row).

    >>> w = jnp.arange(6.0).reshape(3, 2)
    >>> print(embedding(jnp.array([[2, 0]]), w).round(4))
    [[[4. 5.]
      [0. 1.]]]
    """
    where = "embedding"
    from flax import nnx

    check_bool("scale_grad_by_freq", scale_grad_by_freq, where=where)
    check_bool("sparse", sparse, where=where)
    if sparse:
        raise ValueError(
            f"{where}: sparse=True (sparse gradients) has no JAX counterpart; JAX gradients are dense with the same "
            "values: use sparse=False"
        )
    variable = weight if isinstance(weight, nnx.Variable) else None
    w = jnp.asarray(variable[...] if variable is not None else weight)
    check_ndim("weight", w.shape, (2,), where=where)
    num_embeddings = w.shape[0]
    if padding_idx is not None:
        check_int("padding_idx", padding_idx, where=where)
        if not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(
                f"{where}: padding_idx must be within num_embeddings={num_embeddings} "
                f"(in [-{num_embeddings}, {num_embeddings - 1}]), got padding_idx={padding_idx}"
            )
        padding_idx = padding_idx % num_embeddings
    indices = _embedding_indices(input, num_embeddings, where)
    if max_norm is not None:
        _check_renorm_args(max_norm, norm_type, where)
        if variable is None:
            raise ValueError(
                f"{where}: max_norm renormalises the weight IN PLACE in torch (later lookups and the optimizer see "
                "the renormalised rows), and a JAX array cannot be changed in place: pass the nnx.Param itself "
                "(e.g. emb.weight, or use layers.Embedding(max_norm=...)), or call "
                "w = functional.embedding_renorm(w, input, max_norm, norm_type) and keep w"
            )
        if _PARAM_WRITES_DROPPED.get():
            raise NotImplementedError(
                f"{where}: max_norm inside fnml's evaluation step (train.make_eval_step / fit's validation) would "
                "differ from torch silently: torch renormalises the weight in place even in eval mode, and this "
                "step returns no parameters to keep the write. Evaluate with model(x) outside the step (nnx.jit "
                "keeps the write), or use max_norm=None"
            )
        renormed = embedding_renorm(w, indices, max_norm, norm_type)
        # Value: exactly the renormalised weight. Gradient: straight to ``weight``, as torch's no_grad renorm.
        w = renormed + (w - lax.stop_gradient(w))
        variable[...] = w
    valid = (indices >= 0) & (indices < num_embeddings)
    rows = jnp.take(w, jnp.where(valid, indices, 0), axis=0)  # (*) -> (*, embedding_dim)
    if jnp.issubdtype(rows.dtype, jnp.inexact):
        rows = jnp.where(valid[..., None], rows, jnp.asarray(jnp.nan, rows.dtype))  # only when traced
    if scale_grad_by_freq:
        counts = jnp.zeros((num_embeddings,), rows.dtype).at[indices.reshape(-1)].add(1, mode="drop")
        inverse = (1 / jnp.maximum(jnp.take(counts, indices, mode="clip"), 1))[..., None]  # (*, 1)
        frozen = lax.stop_gradient(rows)
        rows = frozen + (rows - frozen) * inverse  # value unchanged; gradient divided by the count
    if padding_idx is not None:
        rows = jnp.where((indices == padding_idx)[..., None], lax.stop_gradient(rows), rows)
    return rows


__all__ += ["embedding", "embedding_renorm"]


# --------------------------------------------------------------------------------------------------
# Convolution (owner: conv family)
# --------------------------------------------------------------------------------------------------

# Layout: every image op below works on channels-last (N, *spatial, C) inside; torch's (N, C, *spatial) is
# moved to channels-last on entry and back on exit, so the choice of layout is made here, once.
_LAYOUT_NAMES = {(1, False): "NCL", (1, True): "NLC", (2, False): "NCHW", (2, True): "NHWC"}


def _layout(spatial: int, channels_last: bool) -> str:
    return _LAYOUT_NAMES[(spatial, channels_last)]


def _ntuple(name: str, value: Any, spatial: int, *, where: str, minimum: int = 1) -> tuple[int, ...]:
    """An int or a tuple of ``spatial`` ints, each >= ``minimum`` (torch's ``_single`` / ``_pair``)."""
    if isinstance(value, (tuple, list)) and len(value) != spatial:
        raise ValueError(f"{where}: {name} must be an int or a tuple of {spatial} ints, got {name}={value!r}")
    return check_pair(name, value, n=spatial, minimum=minimum, where=where)


def _channels_last_batched(input: Any, spatial: int, channels_last: bool, *, where: str) -> tuple[jax.Array, bool]:
    """(N, C, *S) / (C, *S) (or channels-last) -> (N, *S, C), and whether the input was unbatched."""
    x = jnp.asarray(input)
    layout = _layout(spatial, channels_last)
    unbatched_layout = layout.replace("N", "", 1)
    check_ndim(
        "input", x.shape, (spatial + 1, spatial + 2), where=f"{where} ({layout} or unbatched {unbatched_layout})"
    )
    unbatched = x.ndim == spatial + 1
    if unbatched:
        x = x[None]  # (*S, C) / (C, *S) -> (1, ...)
    if not channels_last:
        x = jnp.moveaxis(x, 1, -1)  # (N, C, *S) -> (N, *S, C)
    return x, unbatched


def _restore_layout(y: jax.Array, unbatched: bool, channels_last: bool) -> jax.Array:
    """(N, *S, C) -> the caller's layout (torch's (N, C, *S) unless ``channels_last``), unbatched again."""
    if not channels_last:
        y = jnp.moveaxis(y, -1, 1)  # (N, *S, C) -> (N, C, *S)
    return y[0] if unbatched else y


def _as_2d(x: jax.Array, spatial: int) -> jax.Array:
    """1-d ops run as 2-d ops over a unit height: (N, L, C) -> (N, 1, L, C)."""
    return x[:, None] if spatial == 1 else x


def _from_2d(y: jax.Array, spatial: int) -> jax.Array:
    return y[:, 0] if spatial == 1 else y  # (N, 1, L, C) -> (N, L, C)


def _lift_2d(values: tuple[int, ...], spatial: int, unit: int) -> tuple[int, int]:
    """A 1-d setting (k,) becomes (unit, k) for the unit height axis."""
    return (unit, values[0]) if spatial == 1 else (values[0], values[1])


# Convolutions lower to im2col + one matmul when a patch holds at least this many values (in_channels*kh*kw)
# and the layer has at least _IM2COL_MIN_OUT output channels: XLA CPU's matmul on (N*Ho*Wo, depth) patches
# with a narrow (depth, 16) kernel was 2-10x slower than its own convolution (ResNet's 16-channel stage; the
# W7 step -19% with lax there), while from 32 output channels im2col wins (W3's 32 -> 64 conv).
_IM2COL_MIN_DEPTH = 64
_IM2COL_MIN_OUT = 32


def _use_im2col(in_channels: int, out_channels: int, kernel_hw: tuple[int, int], groups: int) -> bool:
    """The lowering rule: CPU backend, ``groups == 1``, patch depth ``in_channels * kh * kw >= 64`` and
    ``out_channels >= 32``."""
    kh, kw = kernel_hw
    deep = in_channels * kh * kw >= _IM2COL_MIN_DEPTH and out_channels >= _IM2COL_MIN_OUT
    return groups == 1 and deep and jax.default_backend() == "cpu"


def _conv2d_im2col(x, kernel, stride, padding, dilation):
    """NHWC convolution (groups=1) as shifted strided views stacked into patches + one contraction."""
    (pt, pb), (pl, pr) = padding
    if pt or pb or pl or pr:
        x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    kh, kw, cin, cout = kernel.shape
    (sh, sw), (dh, dw) = stride, dilation
    n, h, w, _ = x.shape
    ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    views = [
        # (N, H, W, C) -> (N, Ho, Wo, C): the input pixels under kernel tap (i, j) for every output pixel.
        lax.slice(
            x, (0, i * dh, j * dw, 0), (n, i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1, cin), (1, sh, sw, 1)
        )
        for i in range(kh)
        for j in range(kw)
    ]
    # k views of (N, Ho, Wo, C) -> (N, Ho, Wo, k, C) -> (N*Ho*Wo, k*C), taps in HWIO's (i, j, c) order.
    patches = jnp.stack(views, axis=3).reshape(n * ho * wo, kh * kw * cin)
    # (kh, kw, C, O) -> (kh*kw*C, O): one plain 2-D matmul (measured faster on XLA CPU than an einsum over
    # separate tap and channel axes, and than a dot_general on the 4-D patches: its weight gradient then
    # contracts one (N*Ho*Wo) axis instead of three).
    y = jnp.matmul(patches, kernel.reshape(kh * kw * cin, cout), preferred_element_type=_accumulation_dtype(x.dtype))
    return y.reshape(n, ho, wo, cout)  # (N*Ho*Wo, O) -> (N, Ho, Wo, O)


def _conv_padding_pairs(
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
    return tuple((p, p) for p in _ntuple("padding", padding, spatial, where=where, minimum=0))


def _check_conv_input(x, in_channels, spatial, channels_last, where):
    """Channel count of the (batched, channels-last) input, with a hint when the layout looks swapped."""
    if x.shape[-1] == in_channels:
        return
    layout = _layout(spatial, channels_last)
    if channels_last:
        shape, axis = x.shape, "last axis"
        looks_swapped = x.shape[1] == in_channels
        hint = f"; the input looks {_layout(spatial, False)}: convert it with fnml.tensors.nchw_to_nhwc"
    else:
        shape, axis = (x.shape[0], x.shape[-1], *x.shape[1:-1]), "axis 1"  # back to torch's (N, C, *S)
        looks_swapped = x.shape[-2] == in_channels
        hint = f"; the input looks channels-last ({_layout(spatial, True)}): pass channels_last=True"
    raise ValueError(
        f"{where}(in_channels={in_channels}) got an input with {x.shape[-1]} channels ({axis} of {layout} shape "
        f"{shape}); expected {in_channels}{hint if looks_swapped else ''}"
    )


def _check_padded_size(x, pairs, kernel, dilation, layout, where):
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
    x, unbatched = _channels_last_batched(input, spatial, channels_last, where=where)
    weight = jnp.asarray(weight)
    kernel_layout = ("WIO" if spatial == 1 else "HWIO") if channels_last else ("OIW" if spatial == 1 else "OIHW")
    check_ndim("weight", weight.shape, (spatial + 2,), where=f"{where} ({kernel_layout} weight)")
    if not channels_last:
        weight = jnp.moveaxis(weight, (0, 1), (-1, -2))  # (O, I/g, *k) -> (*k, I/g, O), e.g. OIHW -> HWIO
    kernel_size = tuple(weight.shape[:spatial])
    in_per_group, out_channels = weight.shape[-2], weight.shape[-1]
    if out_channels % groups:
        raise ValueError(f"{where}: out_channels={out_channels} (of the weight) must be divisible by groups={groups}")
    _check_conv_input(x, in_per_group * groups, spatial, channels_last, where)
    stride = _ntuple("stride", stride, spatial, where=where)
    dilation = _ntuple("dilation", dilation, spatial, where=where)
    pairs = _conv_padding_pairs(padding, kernel_size, stride, dilation, where=where)
    _check_padded_size(x, pairs, kernel_size, dilation, _layout(spatial, channels_last), where)
    if bias is not None:
        bias = jnp.asarray(bias)
        if bias.shape != (out_channels,):
            raise ValueError(f"{where}: bias must have shape ({out_channels},), got {bias.shape}")
    dtype = jnp.result_type(x, weight) if bias is None else jnp.result_type(x, weight, bias)
    x, weight = _as_2d(x.astype(dtype), spatial), weight.astype(dtype)
    if spatial == 1:
        weight = weight[None]  # (k, I/g, O) -> (1, k, I/g, O)
    stride, dilation = _lift_2d(stride, spatial, 1), _lift_2d(dilation, spatial, 1)
    pairs = ((0, 0), pairs[0]) if spatial == 1 else pairs
    if _use_im2col(in_per_group * groups, out_channels, weight.shape[:2], groups):
        y = _conv2d_im2col(x, weight, stride, pairs, dilation)
    else:
        y = lax.conv_general_dilated(
            x,
            weight,
            window_strides=stride,
            padding=pairs,
            rhs_dilation=dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
            preferred_element_type=_accumulation_dtype(dtype),
        )
    if bias is not None:
        y = y + bias.astype(y.dtype)
    return _restore_layout(_from_2d(y.astype(dtype), spatial), unbatched, channels_last)


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
    ``groups == 1`` and a patch depth ``C_in * kh * kw >= 64``, the convolution runs as im2col: the
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
    x, unbatched = _channels_last_batched(input, spatial, channels_last, where=where)
    weight = jnp.asarray(weight)
    kernel_layout = ("WIO" if spatial == 1 else "HWIO") if channels_last else ("IOW" if spatial == 1 else "IOHW")
    check_ndim("weight", weight.shape, (spatial + 2,), where=f"{where} ({kernel_layout} weight)")
    if not channels_last:
        weight = jnp.moveaxis(weight, (0, 1), (-2, -1))  # (C_in, O/g, *k) -> (*k, C_in, O/g)
    kernel_size = tuple(weight.shape[:spatial])
    in_channels, out_per_group = weight.shape[-2], weight.shape[-1]
    if in_channels % groups:
        raise ValueError(f"{where}: in_channels={in_channels} (of the weight) must be divisible by groups={groups}")
    _check_conv_input(x, in_channels, spatial, channels_last, where)
    stride = _ntuple("stride", stride, spatial, where=where)
    padding = _ntuple("padding", padding, spatial, where=where, minimum=0)
    output_padding = _ntuple("output_padding", output_padding, spatial, where=where, minimum=0)
    dilation = _ntuple("dilation", dilation, spatial, where=where)
    _check_output_padding(output_padding, stride, dilation, where)
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
    out_channels = out_per_group * groups
    if bias is not None:
        bias = jnp.asarray(bias)
        if bias.shape != (out_channels,):
            raise ValueError(f"{where}: bias must have shape ({out_channels},), got {bias.shape}")
    dtype = jnp.result_type(x, weight) if bias is None else jnp.result_type(x, weight, bias)
    x, weight = _as_2d(x.astype(dtype), spatial), weight.astype(dtype)
    if spatial == 1:
        weight = weight[None]  # (k, C_in, O/g) -> (1, k, C_in, O/g)
    kernel = _transposed_to_forward_kernel(weight, groups)
    stride, dilation = _lift_2d(stride, spatial, 1), _lift_2d(dilation, spatial, 1)
    padding, output_padding = _lift_2d(padding, spatial, 0), _lift_2d(output_padding, spatial, 0)
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
        preferred_element_type=_accumulation_dtype(dtype),
    )
    if bias is not None:
        y = y + bias.astype(y.dtype)
    return _restore_layout(_from_2d(y.astype(dtype), spatial), unbatched, channels_last)


def _check_output_padding(output_padding, stride, dilation, where):
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


__all__ += ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"]

# --------------------------------------------------------------------------------------------------
# Pooling (owner: pooling family)
# --------------------------------------------------------------------------------------------------

# Every pool runs on channels-last (N, H, W, C); the 1-d pools run over a unit height (N, 1, L, C).


def _pool_output_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """torch's pooling_output_shape: floor/ceil division, last window must start inside the input."""
    numerator = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = numerator // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pool_windows(
    x: jax.Array,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: tuple[int, int],
    out_size: tuple[int, int],
    fill: float,
) -> jax.Array:
    """All pooling windows on a trailing axis: (N, H, W, C) -> (N, Ho, Wo, C, kh*kw), row-major order."""
    (kh, kw), (sh, sw), (dh, dw), (ph, pw), (oh, ow) = kernel, stride, dilation, padding, out_size
    # Extra bottom/right padding so that the last (ceil-mode) window fits.
    need_h = (oh - 1) * sh + dh * (kh - 1) + 1
    need_w = (ow - 1) * sw + dw * (kw - 1) + 1
    extra_h = max(need_h - x.shape[1] - ph, 0)
    extra_w = max(need_w - x.shape[2] - pw, 0)
    x = jnp.pad(x, ((0, 0), (ph, extra_h), (pw, extra_w), (0, 0)), constant_values=fill)
    slices = [
        x[:, i * dh : i * dh + (oh - 1) * sh + 1 : sh, j * dw : j * dw + (ow - 1) * sw + 1 : sw, :]
        for i in range(kh)
        for j in range(kw)
    ]
    return jnp.stack(slices, axis=-1)  # kh*kw x (N, Ho, Wo, C) -> (N, Ho, Wo, C, kh*kw)


def _tiling_windows(x: jax.Array, kernel: tuple[int, int], out: tuple[int, int]) -> jax.Array:
    """Non-overlapping windows as a reshape: (N, H, W, C) -> (N, Ho, Wo, C, kh*kw), row-major order."""
    (kh, kw), (oh, ow) = kernel, out
    n, c = x.shape[0], x.shape[3]
    x = x[:, : oh * kh, : ow * kw, :]  # floor mode drops the incomplete last windows
    x = x.reshape(n, oh, kh, ow, kw, c)  # (N, Ho*kh, Wo*kw, C) -> (N, Ho, kh, Wo, kw, C)
    x = x.transpose(0, 1, 3, 5, 2, 4)  # -> (N, Ho, Wo, C, kh, kw)
    return x.reshape(n, oh, ow, c, kh * kw)  # -> (N, Ho, Wo, C, kh*kw)


def _max_first(windows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Max over the last axis whose gradient goes to ONE element per window: the first maximum, as torch.

    ``jnp.max``'s gradient splits among tied elements; torch's goes to the first maximum in row-major
    window order. The value is read through a one-hot of the argmax, so the backward pass is an
    elementwise select: far cheaper on XLA CPU than reduce_window's select-and-scatter, and no
    custom_vjp (every autodiff mode works). NaN propagates to the output as in torch; with several
    NaNs in one window the gradient goes to the first NaN (torch: the last), which only matters when
    the loss is already NaN. Returns the maxima and the argmax (window tap index).
    """
    first = jnp.argmax(lax.stop_gradient(windows), axis=-1)  # first maximum (first NaN if any)
    one_hot = first[..., None] == jnp.arange(windows.shape[-1])  # (..., K)
    return jnp.sum(jnp.where(one_hot, windows, jnp.zeros((), windows.dtype)), axis=-1), first


def _index_dtype() -> Any:
    # torch's indices are int64; without jax x64 the widest available int is int32.
    return jax.dtypes.canonicalize_dtype(jnp.int64)


class _PoolArgs:
    """torch's pooling arguments checked once, as 2-d tuples (1-d pools get a unit height axis)."""

    def __init__(self, kernel_size, stride, padding, dilation, ceil_mode, spatial, where):
        kernel = _ntuple("kernel_size", kernel_size, spatial, where=where)
        # torch: stride None (or an empty list) means the kernel size.
        shown_stride = kernel_size if stride is None or (isinstance(stride, (tuple, list)) and not stride) else stride
        stride = _ntuple("stride", shown_stride, spatial, where=where)
        pad = _ntuple("padding", padding, spatial, where=where, minimum=0)
        dil = _ntuple("dilation", dilation, spatial, where=where)
        check_bool("ceil_mode", ceil_mode, where=where)
        for p, k in zip(pad, kernel):
            if p > k // 2:  # torch: of the kernel size itself (and so of the effective one), whatever the dilation
                of = "the effective kernel size and of the kernel size" if where.startswith(("max", "Max")) else ""
                raise ValueError(
                    f"{where}: padding should be at most half of {of or 'the kernel size'}, got "
                    f"padding={padding}, kernel_size={kernel_size}, dilation={dilation}"
                )
        self.kernel, self.stride = _lift_2d(kernel, spatial, 1), _lift_2d(stride, spatial, 1)
        self.padding, self.dilation = _lift_2d(pad, spatial, 0), _lift_2d(dil, spatial, 1)
        self.ceil_mode, self.spatial, self.where = ceil_mode, spatial, where
        self.shown = f"kernel_size={kernel_size}, stride={shown_stride}, padding={padding}"

    def output_size(self, x: jax.Array, layout: str) -> tuple[int, int]:
        out = tuple(
            _pool_output_size(x.shape[axis], k, s, p, d, self.ceil_mode)
            for axis, k, s, p, d in zip((1, 2), self.kernel, self.stride, self.padding, self.dilation)
        )
        if min(out) < 1:
            shape = x.shape if self.spatial == 2 else (x.shape[0], *x.shape[2:])
            shown = out if self.spatial == 2 else out[1:]
            raise ValueError(
                f"{self.where}: input of shape {shape} ({layout}) is too small for {self.shown}: output size {shown}"
            )
        return out

    def is_tiling(self, x: jax.Array, out: tuple[int, int]) -> bool:
        """Non-overlapping windows that tile the (cropped) input: the reshape fast path applies."""
        return (
            self.stride == self.kernel
            and self.padding == (0, 0)
            and self.dilation == (1, 1)
            and out[0] * self.kernel[0] <= x.shape[1]
            and out[1] * self.kernel[1] <= x.shape[2]
        )


def _max_pool_nd(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, channels_last, spatial):
    where = f"max_pool{spatial}d"
    check_bool("return_indices", return_indices, where=where)
    check_bool("channels_last", channels_last, where=where)
    args = _PoolArgs(kernel_size, stride, padding, dilation, ceil_mode, spatial, where)
    x, unbatched = _channels_last_batched(input, spatial, channels_last, where=where)
    x = _as_2d(x, spatial)
    out = args.output_size(x, _layout(spatial, channels_last))
    if args.is_tiling(x, out):
        windows = _tiling_windows(x, args.kernel, out)
    else:
        fill = -jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
        windows = _pool_windows(x, args.kernel, args.stride, args.dilation, args.padding, out, fill)
    y, tap = _max_first(windows)
    y = _restore_layout(_from_2d(y, spatial), unbatched, channels_last)
    if not return_indices:
        return y
    # Flat index into each input plane (torch: h * W + w), from the window's tap (i, j) and its position.
    (_, kw), (sh, sw), (ph, pw), (dh, dw) = args.kernel, args.stride, args.padding, args.dilation
    rows = (np.arange(out[0]) * sh - ph)[None, :, None, None] + (tap // kw) * dh  # (N, Ho, Wo, C)
    cols = (np.arange(out[1]) * sw - pw)[None, None, :, None] + (tap % kw) * dw
    index = (rows * x.shape[2] + cols).astype(_index_dtype())
    return y, _restore_layout(_from_2d(index, spatial), unbatched, channels_last)


def max_pool1d(
    input: Any,
    kernel_size: int | tuple[int],
    stride: int | tuple[int] | None = None,
    padding: int | tuple[int] = 0,
    dilation: int | tuple[int] = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    *,
    channels_last: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """1-D max pooling with torch's output size, -inf padding and first-maximum gradient.

    PyTorch equivalent: ``torch.nn.functional.max_pool1d(input, kernel_size, stride=None, padding=0,
    dilation=1, ceil_mode=False, return_indices=False)``.

    ``input (N, C, L)`` or ``(C, L)`` (``channels_last=True``: ``(N, L, C)`` / ``(L, C)``). Runs as
    :func:`max_pool2d` over a unit height: same output-size rule, same gradient (to the FIRST maximum of
    each window, as torch), ``return_indices`` gives the position along ``L`` (int64, torch's).

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.max_pool1d(jnp.array([[[1.0, 3.0, 2.0, 5.0, 4.0]]]), 2).tolist()
    [[[3.0, 5.0]]]
    """
    return _max_pool_nd(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, channels_last, 1)


def max_pool2d(
    input: Any,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    *,
    channels_last: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """2-D max pooling with torch's defaults, output size and gradient.

    PyTorch equivalent: ``torch.nn.functional.max_pool2d(input, kernel_size, stride=None, padding=0,
    dilation=1, ceil_mode=False, return_indices=False)``.

    Shapes: ``(N, C, H, W)`` or ``(C, H, W)`` -> ``(N, C, H_out, W_out)`` (``channels_last=True``: NHWC
    in and out), ``H_out`` by torch's formula (``ceil_mode`` rounds up; the last window must start inside
    the input or its left padding). ``stride`` defaults to ``kernel_size``. Padding is -inf, at most half
    the kernel size (torch's rule, whatever the dilation). The gradient goes entirely to the FIRST
    maximal element of each window (row-major), as torch's (``jnp.max`` splits it among ties); NaN
    propagates as in torch. ``return_indices=True`` also returns torch's flat ``h * W + w`` index of
    each maximum (int64).

    Performance: windows that tile the input (stride == kernel, no padding/dilation) are a reshape, the
    general case stacks the kh*kw strided views; the max is read through a one-hot of the argmax, so the
    backward pass is an elementwise select, much cheaper on XLA CPU than ``reduce_window``'s
    select-and-scatter.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.max_pool2d(jnp.arange(16.0).reshape(1, 1, 4, 4), 2).tolist()
    [[[[5.0, 7.0], [13.0, 15.0]]]]
    """
    return _max_pool_nd(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, channels_last, 2)


def _avg_pool_divisors(size_hw, args: _PoolArgs, out, count_include_pad: bool) -> np.ndarray:
    """Per-output-position divisor (Ho, Wo), torch's avg_pool rule, as a host constant."""
    per_axis = []
    for size, k, s, p, o in zip(size_hw, args.kernel, args.stride, args.padding, out):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, size + p)
        padded_count = end - start  # a ceil-mode window hanging past the padding does not count the overhang
        real_count = np.minimum(end, size) - np.maximum(start, 0)
        per_axis.append(padded_count if count_include_pad else real_count)
    return np.outer(per_axis[0], per_axis[1])


def _avg_pool_nd(
    input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, channels_last, spatial
):
    where = f"avg_pool{spatial}d"
    check_bool("count_include_pad", count_include_pad, where=where)
    check_bool("channels_last", channels_last, where=where)
    if divisor_override is not None:
        check_positive_int("divisor_override", divisor_override, where=where)
    args = _PoolArgs(kernel_size, stride, padding, 1, ceil_mode, spatial, where)
    x, unbatched = _channels_last_batched(input, spatial, channels_last, where=where)
    x = _as_2d(x, spatial)
    out = args.output_size(x, _layout(spatial, channels_last))
    if args.is_tiling(x, out):
        sums = _tiling_windows(x, args.kernel, out).sum(axis=-1)  # (N, Ho, Wo, C, kh*kw) -> (N, Ho, Wo, C)
    else:
        sums = _pool_windows(x, args.kernel, args.stride, (1, 1), args.padding, out, 0).sum(axis=-1)
    if divisor_override is not None:
        divisor = np.full(out, divisor_override)
    else:
        divisor = _avg_pool_divisors(x.shape[1:3], args, out, count_include_pad)
    y = sums / jnp.asarray(divisor, sums.dtype)[:, :, None]  # (Ho, Wo) -> (Ho, Wo, 1)
    return _restore_layout(_from_2d(y, spatial), unbatched, channels_last)


def avg_pool1d(
    input: Any,
    kernel_size: int | tuple[int],
    stride: int | tuple[int] | None = None,
    padding: int | tuple[int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    *,
    channels_last: bool = False,
) -> jax.Array:
    """1-D average pooling with torch's divisor rules.

    PyTorch equivalent: ``torch.nn.functional.avg_pool1d(input, kernel_size, stride=None, padding=0,
    ceil_mode=False, count_include_pad=True)``.

    ``input (N, C, L)`` or ``(C, L)`` (``channels_last=True``: ``(N, L, C)``); as torch, it is
    :func:`avg_pool2d` over a unit height (same divisor rules).

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.avg_pool1d(jnp.array([[[1.0, 3.0, 2.0, 6.0]]]), 2).tolist()
    [[[2.0, 4.0]]]
    """
    return _avg_pool_nd(input, kernel_size, stride, padding, ceil_mode, count_include_pad, None, channels_last, 1)


def avg_pool2d(
    input: Any,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    *,
    channels_last: bool = False,
) -> jax.Array:
    """2-D average pooling with torch's divisor rules.

    PyTorch equivalent: ``torch.nn.functional.avg_pool2d(input, kernel_size, stride=None, padding=0,
    ceil_mode=False, count_include_pad=True, divisor_override=None)``.

    Shapes as :func:`max_pool2d` (NCHW by default, NHWC with ``channels_last=True``). Each window's sum
    (zero padding) is divided by: ``divisor_override`` if given; else with ``count_include_pad`` the
    window size clipped to the padded input (a ceil-mode window hanging past the padding does not count
    the overhang, as torch); else the number of real input elements in the window.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.avg_pool2d(jnp.ones((1, 1, 3, 3)), 2, stride=1, padding=1).tolist()[0][0][0]
    [0.25, 0.5, 0.5, 0.25]
    """
    return _avg_pool_nd(
        input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, channels_last, 2
    )


def _adaptive_output(output_size: Any, spatial: int, where: str) -> tuple[int | None, ...]:
    """torch's output_size: an int or a tuple of ints / None (None keeps the input size)."""
    items = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * spatial
    if len(items) != spatial or not all(
        v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1) for v in items
    ):
        raise ValueError(
            f"{where}: output_size must be a positive int or a tuple of {spatial} positive ints (or None), "
            f"got output_size={output_size!r}"
        )
    return items


def _adaptive_bounds(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's adaptive windows: output i covers [floor(i*size/out), ceil((i+1)*size/out))."""
    i = np.arange(out)
    return (i * size) // out, -((-(i + 1) * size) // out)


def _adaptive_membership(size: int, out: int) -> np.ndarray:
    """(out, size) 0/1 matrix of the adaptive windows."""
    start, end = _adaptive_bounds(size, out)
    positions = np.arange(size)
    return ((positions >= start[:, None]) & (positions < end[:, None])).astype(np.float64)


def _adaptive_prepare(input, output_size, spatial, channels_last, where):
    check_bool("channels_last", channels_last, where=where)
    items = _adaptive_output(output_size, spatial, where)
    x, unbatched = _channels_last_batched(input, spatial, channels_last, where=where)
    x = _as_2d(x, spatial)
    items = _lift_2d(items, spatial, 1)
    out = tuple(x.shape[axis] if o is None else int(o) for axis, o in zip((1, 2), items))
    return x, unbatched, out


def _adaptive_avg_pool_nd(input, output_size, channels_last, spatial):
    where = f"adaptive_avg_pool{spatial}d"
    x, unbatched, (oh, ow) = _adaptive_prepare(input, output_size, spatial, channels_last, where)
    height, width = x.shape[1], x.shape[2]
    if (oh, ow) == (1, 1):
        y = jnp.mean(x, axis=(1, 2), keepdims=True)  # global average pool
    else:
        # 0/1 membership matrices (out, in) from torch's start/end indices; sum then divide by count.
        rows, cols = _adaptive_membership(height, oh), _adaptive_membership(width, ow)
        sums = jnp.einsum(
            "ih,nhwc,jw->nijc",
            jnp.asarray(rows, x.dtype),
            x,
            jnp.asarray(cols, x.dtype),
            precision=lax.Precision.HIGHEST,
        )
        counts = np.outer(rows.sum(1), cols.sum(1))  # (Ho, Wo)
        y = sums / jnp.asarray(counts, x.dtype)[:, :, None]
    return _restore_layout(_from_2d(y, spatial), unbatched, channels_last)


def adaptive_avg_pool1d(input: Any, output_size: int | tuple[int], *, channels_last: bool = False) -> jax.Array:
    """Average pooling to a fixed length with torch's (possibly overlapping) windows.

    PyTorch equivalent: ``torch.nn.functional.adaptive_avg_pool1d(input, output_size)``.

    ``input (N, C, L)`` or ``(C, L)`` (``channels_last=True``: ``(N, L, C)``) -> length ``output_size``;
    output ``i`` averages ``[floor(i*L/out), ceil((i+1)*L/out))``. An output longer than the input is
    allowed, as torch (windows repeat).

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.adaptive_avg_pool1d(jnp.array([[[1.0, 2.0, 3.0, 4.0, 5.0]]]), 2).tolist()
    [[[2.0, 4.0]]]
    """
    return _adaptive_avg_pool_nd(input, output_size, channels_last, 1)


def adaptive_avg_pool2d(
    input: Any, output_size: int | tuple[int | None, int | None], *, channels_last: bool = False
) -> jax.Array:
    """Average pooling to a fixed output size with torch's window formula.

    PyTorch equivalent: ``torch.nn.functional.adaptive_avg_pool2d(input, output_size)``.

    ``(N, C, H, W)`` or ``(C, H, W)`` (``channels_last=True``: NHWC) -> ``(.., out_h, out_w)``;
    ``output_size`` is an int or a tuple whose ``None`` entries keep the input size. Output ``i``
    averages rows ``[floor(i * H / out_h), ceil((i + 1) * H / out_h))`` (windows may overlap). ``(1, 1)``
    is a plain mean; otherwise two 0/1 membership matrices and one einsum.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.adaptive_avg_pool2d(jnp.arange(16.0).reshape(1, 1, 4, 4), 2).tolist()
    [[[[2.5, 4.5], [10.5, 12.5]]]]
    """
    return _adaptive_avg_pool_nd(input, output_size, channels_last, 2)


def _adaptive_max_pool_nd(input, output_size, return_indices, channels_last, spatial):
    where = f"adaptive_max_pool{spatial}d"
    check_bool("return_indices", return_indices, where=where)
    x, unbatched, (oh, ow) = _adaptive_prepare(input, output_size, spatial, channels_last, where)
    height, width = x.shape[1], x.shape[2]
    taps = []
    for size, out in ((height, oh), (width, ow)):
        start, end = _adaptive_bounds(size, out)
        longest = int((end - start).max())
        # (out, K) input positions of each window; short windows repeat their last position (the max is
        # unchanged and the first maximum stays a real, earlier position).
        taps.append(np.minimum(start[:, None] + np.arange(longest), end[:, None] - 1))
    rows, cols = taps
    windows = x[:, rows][:, :, :, cols]  # (N, H, W, C) -> (N, Ho, Kh, Wo, Kw, C)
    kh, kw = rows.shape[1], cols.shape[1]
    windows = windows.transpose(0, 1, 3, 5, 2, 4).reshape(x.shape[0], oh, ow, x.shape[3], kh * kw)
    y, tap = _max_first(windows)  # (N, Ho, Wo, C, Kh*Kw): row-major window order, first maximum as torch
    y = _restore_layout(_from_2d(y, spatial), unbatched, channels_last)
    if not return_indices:
        return y
    # The input position of each window's first maximum: (N, Ho, Wo, C) tap -> row and column.
    row = jnp.asarray(rows)[jnp.arange(oh)[None, :, None, None], tap // kw]
    col = jnp.asarray(cols)[jnp.arange(ow)[None, None, :, None], tap % kw]
    index = (row * width + col).astype(_index_dtype())
    return y, _restore_layout(_from_2d(index, spatial), unbatched, channels_last)


def adaptive_max_pool1d(
    input: Any, output_size: int | tuple[int], return_indices: bool = False, *, channels_last: bool = False
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Max pooling to a fixed length with torch's windows and first-maximum gradient.

    PyTorch equivalent: ``torch.nn.functional.adaptive_max_pool1d(input, output_size, return_indices=False)``.

    Windows as :func:`adaptive_avg_pool1d`; the gradient goes to the first maximum of each window, as
    torch; ``return_indices`` gives the position along ``L`` (int64).

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.adaptive_max_pool1d(jnp.array([[[1.0, 5.0, 3.0, 2.0, 4.0]]]), 2).tolist()
    [[[5.0, 4.0]]]
    """
    return _adaptive_max_pool_nd(input, output_size, return_indices, channels_last, 1)


def adaptive_max_pool2d(
    input: Any,
    output_size: int | tuple[int | None, int | None],
    return_indices: bool = False,
    *,
    channels_last: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Max pooling to a fixed output size with torch's windows and first-maximum gradient.

    PyTorch equivalent: ``torch.nn.functional.adaptive_max_pool2d(input, output_size, return_indices=False)``.

    Windows as :func:`adaptive_avg_pool2d` (gathered, padded to the longest window by repeating its last
    position); the max is read through a one-hot of the first argmax (row-major window order), so the
    gradient goes to one element, as torch. ``return_indices`` gives torch's flat ``h * W + w`` (int64).

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.adaptive_max_pool2d(jnp.arange(16.0).reshape(1, 1, 4, 4), (1, 2)).tolist()
    [[[[13.0, 15.0]]]]
    """
    return _adaptive_max_pool_nd(input, output_size, return_indices, channels_last, 2)


__all__ += [
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "max_pool1d",
    "max_pool2d",
]

# --------------------------------------------------------------------------------------------------
# Padding, resampling, pixel shuffle (owner: conv family)
# --------------------------------------------------------------------------------------------------

_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _pad_widths(pad_arg: Any, ndim: int, channels_last: bool, mode: str) -> list[tuple[int, int]]:
    """torch's flat pad tuple (last dim first) as (before, after) per axis of the input."""
    where = "pad"
    if not isinstance(pad_arg, (tuple, list)) or not all(
        isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in pad_arg
    ):
        raise TypeError(f"{where}: pad must be a tuple of ints (last dimension first), got pad={pad_arg!r}")
    if len(pad_arg) % 2:
        raise ValueError(f"{where}: the pad length must be divisible by 2, got pad={tuple(pad_arg)}")
    pairs = len(pad_arg) // 2
    padded_axes = ndim - 1 if channels_last else ndim
    if pairs > padded_axes:
        raise ValueError(
            f"{where}: pad={tuple(pad_arg)} pads {pairs} dimensions but the input has {ndim}"
            + (" (channels_last: the last axis is never padded)" if channels_last else "")
        )
    if mode != "constant":
        if not (pairs <= 3 and ndim in (pairs + 1, pairs + 2)):
            raise ValueError(
                f"pad: mode={mode!r} pads the last 1, 2 or 3 spatial dimensions of a batched or unbatched input "
                f"(2-D/3-D input for 2 values, 3-D/4-D for 4, 4-D/5-D for 6), got pad={tuple(pad_arg)} for a "
                f"{ndim}-D input"
            )
    widths = [(0, 0)] * ndim
    last = ndim - 2 if channels_last else ndim - 1  # the last padded axis
    for i in range(pairs):
        widths[last - i] = (int(pad_arg[2 * i]), int(pad_arg[2 * i + 1]))
    return widths


def pad(
    input: Any, pad: Sequence[int], mode: str = "constant", value: float | None = None, *, channels_last: bool = False
) -> jax.Array:
    """Pad (or, with negative values, crop) the trailing dimensions, torch's pad-tuple order and modes.

    PyTorch equivalent: ``torch.nn.functional.pad(input, pad, mode="constant", value=None)``.

    ``pad`` lists (before, after) pairs starting from the LAST dimension, as torch:
    ``(left, right)`` pads the last axis, ``(left, right, top, bottom)`` the last two. Modes:
    ``"constant"`` (``value``, default 0; any rank; negative values crop), ``"reflect"`` (mirror without
    repeating the edge; each pad must be smaller than that dimension), ``"replicate"`` (repeat the edge),
    ``"circular"`` (wrap around; each pad at most the dimension). The non-constant modes pad the last 1,
    2 or 3 spatial dimensions of a batched or unbatched input, as torch. With ``channels_last=True`` the
    last axis is the channel axis and is skipped: ``pad=(left, right, top, bottom)`` pads W and H of an
    NHWC image, i.e. the same numbers as torch on the NCHW image.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.pad(jnp.array([[[1.0, 2.0, 3.0]]]), (2, 1), mode="reflect").tolist()
    [[[3.0, 2.0, 1.0, 2.0, 3.0, 2.0]]]
    """
    where = "pad"
    check_choice("mode", mode, tuple(_PAD_MODES), where=where)
    check_bool("channels_last", channels_last, where=where)
    x = jnp.asarray(input)
    widths = _pad_widths(pad, x.ndim, channels_last, mode)
    if mode == "constant":
        fill = 0.0 if value is None else check_number("value", value, where=where)
        # lax.pad takes negative widths (crops) directly.
        return lax.pad(x, jnp.asarray(fill, x.dtype), [(before, after, 0) for before, after in widths])
    if value is not None and value != 0:
        raise ValueError(f"pad: mode={mode!r} does not take a value argument, got value={value!r}")
    for axis, (before, after) in enumerate(widths):
        size = x.shape[axis]
        if mode == "reflect" and max(before, after) >= size:
            raise ValueError(
                f"pad: mode='reflect' needs each padding smaller than the dimension it pads, got padding "
                f"({before}, {after}) for axis {axis} of size {size} (input shape {x.shape})"
            )
        if mode == "circular" and max(before, after) > size:
            raise ValueError(
                f"pad: mode='circular' needs each padding at most the dimension it pads (it would wrap around "
                f"more than once), got padding ({before}, {after}) for axis {axis} of size {size}"
            )
    positive = [(max(b, 0), max(a, 0)) for b, a in widths]
    if mode == "circular":  # torch crops first, then wraps the cropped signal around
        return jnp.pad(_crop(x, widths), positive, mode="wrap")
    # reflect / replicate: torch pads from the original borders, then crops the negative sides.
    return _crop(jnp.pad(x, positive, mode=_PAD_MODES[mode]), widths)


def _crop(x: jax.Array, widths: list[tuple[int, int]]) -> jax.Array:
    """Remove ``-before`` / ``-after`` elements where a pad width is negative."""
    return x[tuple(slice(max(-b, 0), x.shape[axis] - max(-a, 0)) for axis, (b, a) in enumerate(widths))]


# --- interpolate: torch's coordinate maps (aten/src/ATen/native/UpSample.h), one axis at a time --------


def _opmath(dtype: Any) -> Any:
    """torch's accumulation type for the interpolation weights: double for float64, else float."""
    return np.float64 if jnp.dtype(dtype) == jnp.float64 else np.float32


def _source_scale(in_size: int, out_size: int, align_corners: bool, scale: float | None, opmath: Any):
    """area_pixel_compute_scale: (in-1)/(out-1) with align_corners, else 1/scale_factor or in/out."""
    if align_corners:
        return opmath(in_size - 1) / opmath(out_size - 1) if out_size > 1 else opmath(0)
    if scale is not None and scale > 0:
        return opmath(1.0 / scale)
    return opmath(in_size) / opmath(out_size)


def _source_index(scale, out_size: int, align_corners: bool, cubic: bool, opmath: Any) -> np.ndarray:
    """area_pixel_compute_source_index for every output position (negative clamped to 0 unless cubic)."""
    dst = np.arange(out_size).astype(opmath)
    if align_corners:
        return scale * dst
    src = scale * (dst + opmath(0.5)) - opmath(0.5)
    return src if cubic else np.maximum(src, opmath(0))


def _nearest_taps(in_size: int, out_size: int, scale: float | None, exact: bool) -> np.ndarray:
    """torch's nearest_idx (floor(dst * scale), in float32) or nearest_exact_idx (floor((dst + 0.5) * scale))."""
    if not exact and out_size == in_size:
        return np.arange(out_size)
    if not exact and out_size == 2 * in_size:
        return np.arange(out_size) >> 1
    ratio = np.float32(1.0 / scale) if scale is not None and scale > 0 else np.float32(in_size) / np.float32(out_size)
    dst = np.arange(out_size)
    if exact:  # (dst + 0.5) is a double in torch, times the float scale
        src = np.floor((dst + 0.5) * np.float64(ratio))
    else:
        src = np.floor(dst.astype(np.float32) * ratio)
    return np.minimum(src.astype(np.int64), in_size - 1)


def _linear_taps(in_size, out_size, align_corners, scale, opmath):
    """compute_source_index_and_lambda: two taps and their weights per output position."""
    if out_size == in_size:  # torch copies
        index = np.arange(out_size)
        return [index, index], [np.ones(out_size, opmath), np.zeros(out_size, opmath)]
    ratio = _source_scale(in_size, out_size, align_corners, scale, opmath)
    src = _source_index(ratio, out_size, align_corners, False, opmath)
    index0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lambda1 = np.clip(src - index0.astype(opmath), opmath(0), opmath(1)).astype(opmath)
    index1 = index0 + (index0 < in_size - 1)
    return [index0, index1], [opmath(1) - lambda1, lambda1]


def _cubic_coefficients(t: np.ndarray, opmath: Any) -> list[np.ndarray]:
    """get_cubic_upsample_coefficients with A = -0.75 (torch's bicubic)."""
    a = opmath(-0.75)

    def near(x):  # cubic_convolution1, |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # cubic_convolution2, 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    one = opmath(1.0)
    return [far(t + one), near(t), near(one - t), far((one - t) + one)]


def _cubic_taps(in_size, out_size, align_corners, scale, opmath):
    """Four taps (source index clamped to the input) and the cubic weights per output position."""
    ratio = _source_scale(in_size, out_size, align_corners, scale, opmath)
    src = _source_index(ratio, out_size, align_corners, True, opmath)
    index = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    t = np.clip(src - index.astype(opmath), opmath(0), opmath(1)).astype(opmath)
    taps = [np.clip(index - 1 + j, 0, in_size - 1) for j in range(4)]
    return taps, _cubic_coefficients(t, opmath)


def _interpolate_axis(x: jax.Array, axis: int, taps: list[np.ndarray], weights: list[np.ndarray] | None) -> jax.Array:
    """Gather ``taps`` along ``axis`` and sum them with per-position ``weights`` (None: a plain gather)."""
    if weights is None:
        return jnp.take(x, jnp.asarray(taps[0]), axis=axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    total = None
    for index, weight in zip(taps, weights):
        term = jnp.take(x, jnp.asarray(index), axis=axis) * jnp.asarray(weight, x.dtype).reshape(shape)
        total = term if total is None else total + term
    return total


_INTERPOLATE_MODES = ("nearest", "nearest-exact", "linear", "bilinear", "bicubic", "area")


def _interpolate_sizes(spatial_shape, size, scale_factor, recompute_scale_factor):
    """torch's rule: exactly one of size / scale_factor; output = floor(in * scale); which scales reach the kernel."""
    where = "interpolate"
    spatial = len(spatial_shape)
    if size is not None and scale_factor is not None:
        raise ValueError(f"{where}: only one of size or scale_factor should be defined, got both")
    if size is None and scale_factor is None:
        raise ValueError(f"{where}: either size or scale_factor should be defined")
    if recompute_scale_factor is not None:
        check_bool("recompute_scale_factor", recompute_scale_factor, where=where)
    if size is not None:
        if recompute_scale_factor:
            raise ValueError(f"{where}: recompute_scale_factor is not meaningful with an explicit size")
        items = tuple(size) if isinstance(size, (tuple, list)) else (size,) * spatial
        if len(items) != spatial:
            raise ValueError(
                f"{where}: size={size!r} must have one entry per spatial dimension of the input "
                f"{tuple(spatial_shape)} (torch layout (N, C, d1, ...))"
            )
        return tuple(check_positive_int("size", s, where=where) for s in items), (None,) * spatial
    factors = tuple(scale_factor) if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * spatial
    if len(factors) != spatial:
        raise ValueError(
            f"{where}: scale_factor={scale_factor!r} must have one entry per spatial dimension of the input "
            f"{tuple(spatial_shape)}"
        )
    factors = tuple(float(check_positive("scale_factor", f, where=where)) for f in factors)
    out = tuple(int(math.floor(n * f)) for n, f in zip(spatial_shape, factors))
    if min(out) < 1:
        raise ValueError(
            f"{where}: scale_factor={scale_factor!r} gives an empty output {out} for {tuple(spatial_shape)}"
        )
    return out, ((None,) * spatial if recompute_scale_factor else factors)


def interpolate(
    input: Any,
    size: int | tuple[int, ...] | None = None,
    scale_factor: float | tuple[float, ...] | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
    *,
    channels_last: bool = False,
) -> jax.Array:
    """Resize 1-d signals / 2-d images with torch's coordinate maps, exactly.

    PyTorch equivalent: ``torch.nn.functional.interpolate(input, size=None, scale_factor=None,
    mode="nearest", align_corners=None, recompute_scale_factor=None, antialias=False)``.

    ``input (N, C, L)`` (modes ``nearest``, ``nearest-exact``, ``linear``, ``area``) or ``(N, C, H, W)``
    (``nearest``, ``nearest-exact``, ``bilinear``, ``bicubic``, ``area``); ``channels_last=True`` takes
    ``(N, L, C)`` / NHWC. Give exactly one of ``size`` and ``scale_factor``: the output size is
    ``floor(in * scale_factor)``, and unless ``recompute_scale_factor=True`` the coordinate map uses
    ``1 / scale_factor`` itself (not ``in / out``), as torch. Maps (torch's):

    - ``nearest``: source ``min(floor(dst * scale), in - 1)`` in float32 (NOT ``nearest-exact``'s
      ``floor((dst + 0.5) * scale)``); equal sizes copy, doubling repeats each element;
    - ``linear``/``bilinear``: source ``scale * (dst + 0.5) - 0.5`` clamped at 0 (``align_corners=True``:
      ``dst * (in - 1) / (out - 1)``), two taps; equal sizes copy;
    - ``bicubic``: the same source index unclamped, four taps with clamped indices, Keys' cubic with
      ``A = -0.75``;
    - ``area``: :func:`adaptive_avg_pool1d` / :func:`adaptive_avg_pool2d`.

    Weights are computed in float64 for float64 inputs and in float32 otherwise, as torch. 2-d modes are
    applied one axis at a time (separable, the same taps and weights). ``antialias=True`` is not
    implemented (NotImplementedError). One gradient differs from torch's, on purpose: ``bicubic`` with a
    ``scale_factor`` that keeps the size (e.g. 1.05 on 5 pixels) interpolates in both forwards, but torch's
    backward then copies the gradient; fnml's is the true derivative of the (matching) forward.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.interpolate(jnp.array([[[1.0, 2.0]]]), scale_factor=2, mode="linear").tolist()
    [[[1.0, 1.25, 1.75, 2.0]]]
    """
    where = "interpolate"
    check_choice("mode", mode, _INTERPOLATE_MODES, where=where)
    check_bool("channels_last", channels_last, where=where)
    check_bool("antialias", antialias, where=where)
    if mode in ("nearest", "nearest-exact", "area"):
        if align_corners is not None:
            raise ValueError(
                f"{where}: align_corners can only be set with the interpolating modes linear, bilinear and "
                f"bicubic, got align_corners={align_corners!r} with mode={mode!r}"
            )
    else:
        align_corners = False if align_corners is None else check_bool("align_corners", align_corners, where=where)
    if antialias:
        raise NotImplementedError(f"{where}: antialias=True is not implemented")
    x = jnp.asarray(input)
    layouts = "(N, L, C) or NHWC" if channels_last else "(N, C, L) or NCHW"
    check_ndim("input", x.shape, (3, 4), where=f"{where} (batched {layouts})")
    spatial = x.ndim - 2
    needs = {"linear": 1, "bilinear": 2, "bicubic": 2}
    if mode in needs and needs[mode] != spatial:
        raise ValueError(f"{where}: mode={mode!r} needs a {needs[mode] + 2}-D input, got a {x.ndim}-D one")
    if not channels_last:
        x = jnp.moveaxis(x, 1, -1)  # (N, C, *S) -> (N, *S, C)
    out, scales = _interpolate_sizes(x.shape[1:-1], size, scale_factor, recompute_scale_factor)
    if mode == "area":
        pool = adaptive_avg_pool1d if spatial == 1 else adaptive_avg_pool2d
        y = pool(x, out, channels_last=True)
    else:
        opmath = _opmath(x.dtype)
        if not jnp.issubdtype(x.dtype, jnp.floating) and mode not in ("nearest", "nearest-exact"):
            raise TypeError(f"{where}: mode={mode!r} needs a floating-point input, got dtype {x.dtype}")
        y = x
        for axis, (n_in, n_out, scale) in enumerate(zip(x.shape[1:-1], out, scales), start=1):
            if mode in ("nearest", "nearest-exact"):
                y = _interpolate_axis(y, axis, [_nearest_taps(n_in, n_out, scale, mode == "nearest-exact")], None)
            elif mode == "bicubic":
                y = _interpolate_axis(y, axis, *_cubic_taps(n_in, n_out, align_corners, scale, opmath))
            else:
                y = _interpolate_axis(y, axis, *_linear_taps(n_in, n_out, align_corners, scale, opmath))
    return y if channels_last else jnp.moveaxis(y, -1, 1)  # (N, *S, C) -> (N, C, *S)


def _check_shuffle_input(x: jax.Array, factor: int, name: str, where: str) -> None:
    factor = check_positive_int(name, factor, where=where)
    if x.ndim < 3:
        raise ValueError(f"{where}: input must be at least 3-D (*, C, H, W), got a {x.ndim}-D array of shape {x.shape}")


def pixel_shuffle(input: Any, upscale_factor: int, *, channels_last: bool = False) -> jax.Array:
    """Rearrange ``(*, C*r*r, H, W)`` into ``(*, C, H*r, W*r)``, torch's channel order.

    PyTorch equivalent: ``torch.nn.functional.pixel_shuffle(input, upscale_factor)``.

    Channel ``c*r*r + i*r + j`` becomes pixel ``(h*r + i, w*r + j)`` of output channel ``c``. With
    ``channels_last=True`` the input is ``(*, H, W, C*r*r)`` and the output ``(*, H*r, W*r, C)``, the same
    numbers as torch on the channels-first image.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.pixel_shuffle(jnp.arange(4.0).reshape(1, 4, 1, 1), 2).tolist()
    [[[[0.0, 1.0], [2.0, 3.0]]]]
    """
    where = "pixel_shuffle"
    check_bool("channels_last", channels_last, where=where)
    x = jnp.asarray(input)
    _check_shuffle_input(x, upscale_factor, "upscale_factor", where)
    r = upscale_factor
    *lead, c, h, w = x.shape if not channels_last else (*x.shape[:-3], x.shape[-1], *x.shape[-3:-1])
    if c % (r * r):
        raise ValueError(
            f"{where}: the channel count {c} must be divisible by upscale_factor**2 = {r * r} (upscale_factor={r})"
        )
    oc = c // (r * r)
    if channels_last:
        y = x.reshape(*lead, h, w, oc, r, r)  # (*, H, W, C*r*r) -> (*, H, W, C, r, r)
        y = jnp.moveaxis(y, (-5, -4, -3, -2, -1), (-5, -3, -1, -4, -2))  # -> (*, H, r, W, r, C)
        return y.reshape(*lead, h * r, w * r, oc)  # -> (*, H*r, W*r, C)
    y = x.reshape(*lead, oc, r, r, h, w)  # (*, C*r*r, H, W) -> (*, C, r, r, H, W)
    y = jnp.moveaxis(y, (-5, -4, -3, -2, -1), (-5, -3, -1, -4, -2))  # -> (*, C, H, r, W, r)
    return y.reshape(*lead, oc, h * r, w * r)  # -> (*, C, H*r, W*r)


def pixel_unshuffle(input: Any, downscale_factor: int, *, channels_last: bool = False) -> jax.Array:
    """Rearrange ``(*, C, H*r, W*r)`` into ``(*, C*r*r, H, W)``: the inverse of :func:`pixel_shuffle`.

    PyTorch equivalent: ``torch.nn.functional.pixel_unshuffle(input, downscale_factor)``.

    With ``channels_last=True``: ``(*, H*r, W*r, C)`` -> ``(*, H, W, C*r*r)``. H and W must be divisible by r.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> F.pixel_unshuffle(jnp.arange(4.0).reshape(1, 1, 2, 2), 2).reshape(-1).tolist()
    [0.0, 1.0, 2.0, 3.0]
    """
    where = "pixel_unshuffle"
    check_bool("channels_last", channels_last, where=where)
    x = jnp.asarray(input)
    _check_shuffle_input(x, downscale_factor, "downscale_factor", where)
    r = downscale_factor
    *lead, c, h, w = x.shape if not channels_last else (*x.shape[:-3], x.shape[-1], *x.shape[-3:-1])
    if h % r or w % r:
        raise ValueError(f"{where}: the spatial size ({h}, {w}) must be divisible by downscale_factor={r}")
    oh, ow = h // r, w // r
    if channels_last:
        y = x.reshape(*lead, oh, r, ow, r, c)  # (*, H*r, W*r, C) -> (*, H, r, W, r, C)
        y = jnp.moveaxis(y, (-5, -3, -1, -4, -2), (-5, -4, -3, -2, -1))  # -> (*, H, W, C, r, r)
        return y.reshape(*lead, oh, ow, c * r * r)  # -> (*, H, W, C*r*r)
    y = x.reshape(*lead, c, oh, r, ow, r)  # (*, C, H*r, W*r) -> (*, C, H, r, W, r)
    y = jnp.moveaxis(y, (-5, -3, -1, -4, -2), (-5, -4, -3, -2, -1))  # -> (*, C, r, r, H, W)
    return y.reshape(*lead, c * r * r, oh, ow)  # -> (*, C*r*r, H, W)


__all__ += ["interpolate", "pad", "pixel_shuffle", "pixel_unshuffle"]

# --------------------------------------------------------------------------------------------------
# Normalisation (owner: normalization family)
# --------------------------------------------------------------------------------------------------


def _normalized_shape(normalized_shape: Any, where: str) -> tuple[int, ...]:
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


def _check_affine(name: str, value: Any, shape: tuple[int, ...], where: str) -> jax.Array | None:
    """An optional affine parameter (weight / bias / running statistic) of exactly ``shape``."""
    if value is None:
        return None
    array = _as_float_array(name, value, where)
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{where}: {name} must have shape {tuple(shape)}, got {tuple(array.shape)}")
    return array


def _affine(y: jax.Array, weight: jax.Array | None, bias: jax.Array | None) -> jax.Array:
    """``y * weight + bias`` (either may be None), in y's dtype; parameters broadcast on trailing axes."""
    if weight is not None:
        y = y * weight.astype(y.dtype)
    if bias is not None:
        y = y + bias.astype(y.dtype)
    return y


def _promote(*arrays: jax.Array | None) -> Any:
    return jnp.result_type(*(a for a in arrays if a is not None))


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
    shape = _normalized_shape(normalized_shape, where)
    x = _as_float_array("input", input, where)
    axes = _check_trailing(x, shape, where)
    check_number("eps", eps, where=where)
    weight = _check_affine("weight", weight, shape, where)
    bias = _check_affine("bias", bias, shape, where)
    x = x.astype(_promote(x, weight, bias))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    var = jnp.mean(jnp.square(centred), axis=axes, keepdims=True)
    return _affine(centred * lax.rsqrt(var + jnp.asarray(eps, x.dtype)), weight, bias)


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
    shape = _normalized_shape(normalized_shape, where)
    x = _as_float_array("input", input, where)
    axes = _check_trailing(x, shape, where)
    if eps is not None:
        check_number("eps", eps, where=where)
    weight = _check_affine("weight", weight, shape, where)
    out_dtype = _promote(x, weight)
    # torch upcasts float16 / bfloat16 to float32 (its opmath type) and casts the result back.
    compute = jnp.float64 if out_dtype == jnp.float64 else jnp.float32
    if eps is None:
        eps = float(jnp.finfo(compute).eps)
    x = x.astype(compute)
    y = x * lax.rsqrt(jnp.mean(jnp.square(x), axis=axes, keepdims=True) + jnp.asarray(eps, compute))
    if weight is not None:
        y = y * weight.astype(compute)
    return y.astype(out_dtype)


def _to_channels_last(x: jax.Array, channels_last: bool) -> jax.Array:
    # (N, C, *spatial) -> (N, *spatial, C); a pure transpose (bit-exact).
    return x if channels_last else jnp.moveaxis(x, 1, -1)


def _from_channels_last(y: jax.Array, channels_last: bool) -> jax.Array:
    # (N, *spatial, C) -> (N, C, *spatial)
    return y if channels_last else jnp.moveaxis(y, -1, 1)


def _channel_count(x: jax.Array, channels_last: bool, where: str, *, min_ndim: int = 2) -> int:
    if x.ndim < min_ndim:
        layout = "(N, *, C)" if channels_last else "(N, C, *)"
        raise ValueError(f"{where}: expected an input of at least {min_ndim} dimensions {layout}, got shape {x.shape}")
    return x.shape[-1] if channels_last else x.shape[1]


def _batch_norm_core(
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
    """Channels-last batch norm ``(M..., C)`` over all leading axes; returns (out, new_mean, new_var)."""
    count = math.prod(x.shape[:-1])
    x = x.astype(_promote(x, weight))
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
        if _REVERSE_MODE_ONLY.get():
            return _batch_norm_train(x, weight, bias, float(eps)), new_mean, new_var
        return _affine(_standardize(x, float(eps)), weight, bias), new_mean, new_var
    y = (x - mean) * lax.rsqrt(var + jnp.asarray(eps, x.dtype))
    return _affine(y, weight, bias), new_mean, new_var


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
    return _affine(_standardized(x, eps)[0], weight, bias)


def _batch_norm_train_fwd(x: jax.Array, weight: Any, bias: Any, eps: float) -> tuple[jax.Array, tuple]:
    normalized, inv_std = _standardized(x, eps)
    return _affine(normalized, weight, bias), (normalized, inv_std, weight, bias)


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
    x = _as_float_array("input", input, where)
    check_bool("training", training, where=where)
    check_bool("channels_last", channels_last, where=where)
    check_number("eps", eps, where=where)
    channels = (_channel_count(x, channels_last, where),)
    stats = [
        _check_affine(name, v, channels, where)
        for name, v in (("running_mean", running_mean), ("running_var", running_var))
    ]
    if (stats[0] is None) != (stats[1] is None):
        raise ValueError(f"{where}: running_mean and running_var must both be given or both be None")
    return (
        x,
        stats[0],
        stats[1],
        _check_affine("weight", weight, channels, where),
        _check_affine("bias", bias, channels, where),
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
    y, new_mean, new_var = _batch_norm_core(
        _to_channels_last(x, channels_last), mean, var, weight, bias, training, momentum, eps, where
    )
    return _from_channels_last(y, channels_last), new_mean, new_var


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
    x = _to_channels_last(x, channels_last)  # (N, *spatial, C)
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

    y, new_mean, new_var = _batch_norm_core(
        flat, tile(mean), tile(var), tile(weight), tile(bias), use_input_stats, momentum, eps, where
    )
    y = jnp.moveaxis(y.reshape(per_instance.shape), -2, 0)  # (*spatial, N, C) -> (N, *spatial, C)
    if mean is not None:
        new_mean = new_mean.reshape(batch, channels).mean(axis=0)  # torch: running_mean_.view(b, c).mean(0)
        new_var = new_var.reshape(batch, channels).mean(axis=0)
    return _from_channels_last(y, channels_last), new_mean, new_var


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
    x = _as_float_array("input", input, where)
    check_bool("channels_last", channels_last, where=where)
    check_positive_int("num_groups", num_groups, where=where)
    check_number("eps", eps, where=where)
    channels = _channel_count(x, channels_last, where)
    if channels % num_groups:
        raise ValueError(
            f"{where}: expected the number of channels ({channels}) to be divisible by num_groups={num_groups}, "
            f"got input of shape {x.shape}"
        )
    weight = _check_affine("weight", weight, (channels,), where)
    bias = _check_affine("bias", bias, (channels,), where)
    x = _to_channels_last(x, channels_last).astype(_promote(x, weight, bias))  # (N, *, C)
    grouped = x.reshape(x.shape[:-1] + (num_groups, channels // num_groups))  # (N, *, C) -> (N, *, G, C/G)
    axes = tuple(range(1, x.ndim - 1)) + (x.ndim,)  # spatial axes and the within-group axis
    mean = jnp.mean(grouped, axis=axes, keepdims=True)
    centred = grouped - mean
    var = jnp.mean(jnp.square(centred), axis=axes, keepdims=True)
    y = (centred * lax.rsqrt(var + jnp.asarray(eps, x.dtype))).reshape(x.shape)  # (N, *, G, C/G) -> (N, *, C)
    return _from_channels_last(_affine(y, weight, bias), channels_last)


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
    x = _as_float_array("input", input, where)
    check_bool("channels_last", channels_last, where=where)
    check_positive_int("size", size, where=where)
    for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
        check_number(name, value, where=where)
    _channel_count(x, channels_last, where, min_ndim=3)
    x = _to_channels_last(x, channels_last)  # (N, *, C)
    channels = x.shape[-1]
    squared = jnp.square(x)
    padded = jnp.pad(squared, [(0, 0)] * (x.ndim - 1) + [(size // 2, (size - 1) // 2)])
    window_sum = sum(padded[..., offset : offset + channels] for offset in range(size))
    div = (window_sum / size * alpha + k) ** beta
    return _from_channels_last(x / div, channels_last)


__all__ += [
    "layer_norm",
    "rms_norm",
    "batch_norm",
    "batch_norm_with_stats",
    "instance_norm",
    "instance_norm_with_stats",
    "group_norm",
    "local_response_norm",
]


# --------------------------------------------------------------------------------------------------
# Attention (owner: transformer family)
# --------------------------------------------------------------------------------------------------


def _check_mask_dtype(name: str, mask: Any, where: str) -> jax.Array:
    """A bool or floating-point mask array (torch refuses integer masks)."""
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_ and not jnp.issubdtype(mask.dtype, jnp.floating):
        raise TypeError(f"{where}: {name} must be a bool or floating-point array, got dtype {mask.dtype}")
    return mask


def _additive_mask(mask: jax.Array | None, dtype: Any, *, masked_when: bool) -> jax.Array | None:
    """A bool mask as 0 / -inf in ``dtype`` (``-inf`` where the bool equals ``masked_when``); floats pass."""
    if mask is None or mask.dtype != jnp.bool_:
        return None if mask is None else mask.astype(dtype)
    return jnp.where(mask == masked_when, jnp.asarray(-jnp.inf, dtype), jnp.asarray(0.0, dtype))


def _safe_softmax(scores: jax.Array) -> jax.Array:
    """Softmax over the last axis that gives 0 (not NaN) for a row masked entirely with -inf, as torch's SDPA."""
    row_max = lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
    fully_masked = row_max == -jnp.inf
    unnormalised = jnp.exp(scores - jnp.where(fully_masked, 0.0, row_max))
    total = jnp.sum(unnormalised, axis=-1, keepdims=True)
    return unnormalised / jnp.where(fully_masked, 1.0, total)


def _attention_dropout(weights: jax.Array, p: float, key: Any, where: str) -> jax.Array:
    """torch's ``dropout(weights, p)`` on attention probabilities: the one :func:`dropout`, keyed by ``dropout_key``."""
    if p == 0.0:
        return weights
    if key is None:
        raise ValueError(f"{where}: dropout_p={p} > 0 needs dropout_key=jax.random.key(seed) (a JAX PRNG key)")
    check_key("dropout_key", key, where=where)
    return dropout(weights, p, key=key)


def scaled_dot_product_attention(
    query: Any,
    key: Any,
    value: Any,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    dropout_key: Any = None,
) -> jax.Array:
    """Attention ``softmax(q @ k^T * scale + bias) @ v`` on torch's ``(*, heads, T, head_dim)`` layout.

    PyTorch equivalent: ``torch.nn.functional.scaled_dot_product_attention(query, key, value,
    attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False)``.

    Shapes: ``query: (*, L, E)``, ``key: (*, S, E)``, ``value: (*, S, Ev)`` -> ``(*, L, Ev)``, leading axes
    broadcast (usually ``(B, heads)``). ``scale`` defaults to ``1 / sqrt(E)``. ``attn_mask`` broadcasts to
    ``(*, L, S)``: a bool mask keeps the positions where it is True (True = attend, as torch), a float
    mask is ADDED to the scores. ``is_causal=True`` applies torch's top-left aligned ``tril(ones(L, S))``
    (for ``L != S`` the query i sees keys ``0..i``) and refuses an explicit ``attn_mask``, as torch.
    A query row whose keys are all masked gives zeros (torch's behaviour), not NaN. ``enable_gqa=True``:
    ``key`` / ``value`` may have fewer heads (axis -3) than ``query``; each is repeated
    ``heads_q / heads_kv`` times (torch's ``repeat_interleave``).

    Dropout on the attention probabilities (``dropout_p > 0``) draws its mask from ``dropout_key`` (a
    keyword-only ``jax.random`` key: the argument ``key`` is the attention keys, as in torch); torch
    applies it whenever ``dropout_p > 0`` (training or not), and so does this. ``dropout_p=0`` is exact.
    Masks cannot match torch's random stream.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> q = k = jnp.eye(2)[None, None]                   # (B=1, heads=1, T=2, E=2)
    >>> v = jnp.array([[[[1.0, 0.0], [0.0, 1.0]]]])
    >>> print(F.scaled_dot_product_attention(q, k, v, is_causal=True).round(3))
    [[[[1.   0.  ]
       [0.33 0.67]]]]
    """
    where = "scaled_dot_product_attention"
    q = _as_float_array("query", query, where)
    k = _as_float_array("key", key, where)
    v = _as_float_array("value", value, where)
    check_bool("is_causal", is_causal, where=where)
    check_bool("enable_gqa", enable_gqa, where=where)
    check_number("dropout_p", dropout_p, where=where)
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"{where}: dropout_p must be in [0, 1], got dropout_p={dropout_p!r}")
    for name, array in (("query", q), ("key", k), ("value", v)):
        if array.ndim < 2:
            raise ValueError(f"{where}: {name} must be at least 2-D (*, T, E), got shape {array.shape}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{where}: query's last axis ({q.shape[-1]}) must equal key's ({k.shape[-1]})")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{where}: key and value must have the same length S, got {k.shape} and {v.shape}")
    if enable_gqa and q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        if q.shape[-3] % k.shape[-3] or k.shape[-3] != v.shape[-3]:
            raise ValueError(
                f"{where}: with enable_gqa the query heads ({q.shape[-3]}) must be a multiple of the key/value "
                f"heads ({k.shape[-3]}, {v.shape[-3]})"
            )
        repeats = q.shape[-3] // k.shape[-3]
        k = jnp.repeat(k, repeats, axis=-3)  # (*, Hkv, S, E) -> (*, Hq, S, E), torch's repeat_interleave
        v = jnp.repeat(v, repeats, axis=-3)
    length_q, length_k = q.shape[-2], k.shape[-2]
    dtype = jnp.result_type(q, k, v)
    q, k, v = q.astype(dtype), k.astype(dtype), v.astype(dtype)
    mask = None
    if attn_mask is not None:
        if is_causal:
            raise ValueError(f"{where}: an explicit attn_mask must not be given with is_causal=True (torch refuses it)")
        mask = _check_mask_dtype("attn_mask", attn_mask, where)
        try:
            jnp.broadcast_shapes(mask.shape, q.shape[:-2] + (length_q, length_k))
        except ValueError:
            raise ValueError(
                f"{where}: attn_mask of shape {mask.shape} does not broadcast to the scores' shape "
                f"{q.shape[:-2] + (length_q, length_k)} (*, L, S)"
            ) from None
    elif is_causal:
        mask = jnp.tril(jnp.ones((length_q, length_k), bool))  # top-left aligned, True = attend
    bias = _additive_mask(mask, dtype, masked_when=False)
    scale_factor = 1.0 / math.sqrt(q.shape[-1]) if scale is None else check_number("scale", scale, where=where)
    scores = jnp.matmul(q, jnp.swapaxes(k, -2, -1)) * jnp.asarray(scale_factor, dtype)  # (*, L, S)
    if bias is not None:
        scores = scores + bias
    weights = _attention_dropout(_safe_softmax(scores), float(dropout_p), dropout_key, where)
    return jnp.matmul(weights, v)  # (*, L, S) @ (*, S, Ev) -> (*, L, Ev)


def _check_mha_shapes(query, key, value, key_padding_mask, attn_mask, num_heads, where) -> bool:
    """torch's ``_mha_shape_check``: True for batched (3-D) inputs, False for unbatched (2-D)."""
    if query.ndim == 3:
        if key.ndim != 3 or value.ndim != 3:
            raise ValueError(
                f"{where}: for a batched (3-D) query, key and value must be 3-D, got {key.ndim}-D and {value.ndim}-D"
            )
        if key_padding_mask is not None and key_padding_mask.ndim != 2:
            raise ValueError(
                f"{where}: for a batched (3-D) query, key_padding_mask must be None or 2-D (N, S), "
                f"got a {key_padding_mask.ndim}-D array"
            )
        if attn_mask is not None and attn_mask.ndim not in (2, 3):
            raise ValueError(
                f"{where}: for a batched (3-D) query, attn_mask must be None, 2-D or 3-D, got {attn_mask.ndim}-D"
            )
        return True
    if query.ndim == 2:
        if key.ndim != 2 or value.ndim != 2:
            raise ValueError(
                f"{where}: for an unbatched (2-D) query, key and value must be 2-D, got {key.ndim}-D and {value.ndim}-D"
            )
        if key_padding_mask is not None and key_padding_mask.ndim != 1:
            raise ValueError(
                f"{where}: for an unbatched (2-D) query, key_padding_mask must be None or 1-D (S,), "
                f"got a {key_padding_mask.ndim}-D array"
            )
        if attn_mask is not None:
            if attn_mask.ndim not in (2, 3):
                raise ValueError(
                    f"{where}: for an unbatched (2-D) query, attn_mask must be None, 2-D or 3-D, got {attn_mask.ndim}-D"
                )
            expected = (num_heads, query.shape[0], key.shape[0])
            if attn_mask.ndim == 3 and tuple(attn_mask.shape) != expected:
                raise ValueError(f"{where}: expected a 3-D attn_mask of shape {expected}, got {attn_mask.shape}")
        return False
    raise ValueError(f"{where}: query must be unbatched 2-D (L, E) or batched 3-D (L, N, E), got shape {query.shape}")


def _pad_last(mask: jax.Array | None) -> jax.Array | None:
    # torch's pad(mask, (0, 1)): one zero column for the appended key (bias_k or the zero attention).
    return None if mask is None else jnp.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, 1)])


def multi_head_attention_forward(
    query: Any,
    key: Any,
    value: Any,
    embed_dim_to_check: int,
    num_heads: int,
    in_proj_weight: Any,
    in_proj_bias: Any,
    bias_k: Any,
    bias_v: Any,
    add_zero_attn: bool,
    dropout_p: float,
    out_proj_weight: Any,
    out_proj_bias: Any,
    training: bool = True,
    key_padding_mask: Any = None,
    need_weights: bool = True,
    attn_mask: Any = None,
    use_separate_proj_weight: bool = False,
    q_proj_weight: Any = None,
    k_proj_weight: Any = None,
    v_proj_weight: Any = None,
    static_k: Any = None,
    static_v: Any = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
    *,
    dropout_key: Any = None,
) -> tuple[jax.Array, jax.Array | None]:
    """Multi-head attention on torch's sequence-first ``(L, N, E)`` layout: torch's reference path, step by step.

    PyTorch equivalent: ``torch.nn.functional.multi_head_attention_forward(...)`` (same arguments, same
    order; ``MultiheadAttention`` calls it).

    Shapes: ``query: (L, N, E)`` or unbatched ``(L, E)``; ``key: (S, N, kdim)``, ``value: (S, N, vdim)``.
    Weights in torch's layouts: ``in_proj_weight (3E, E)`` (or ``q/k/v_proj_weight (E, E/kdim/vdim)`` with
    ``use_separate_proj_weight``), ``in_proj_bias (3E,)``, ``bias_k / bias_v (1, 1, E)``,
    ``out_proj_weight (E, E)``. Masks, as torch's MODULE (the opposite of :func:`scaled_dot_product_attention`'s
    bool convention): a bool ``key_padding_mask (N, S)`` / ``attn_mask (L, S) or (N * heads, L, S)`` is
    True where attention is NOT allowed; float masks are added to the scores. ``is_causal`` is torch's
    hint: it needs ``attn_mask``; with no ``key_padding_mask`` and ``need_weights=False`` the mask is
    replaced by the causal one, exactly as torch does. Returns ``(output (L, N, E), weights)``: weights
    ``(N, L, S)`` averaged over heads, ``(N, heads, L, S)`` with ``average_attn_weights=False``, None with
    ``need_weights=False``. Dropout (``training=True``, ``dropout_p > 0``) needs ``dropout_key``.

    >>> import jax.numpy as jnp
    >>> from fnml import functional as F
    >>> x = jnp.ones((3, 1, 4))                                   # (L=3, N=1, E=4)
    >>> out, w = F.multi_head_attention_forward(x, x, x, 4, 2, jnp.ones((12, 4)), jnp.zeros(12), None, None,
    ...                                         False, 0.0, jnp.eye(4), jnp.zeros(4))
    >>> out.shape, w.shape
    ((3, 1, 4), (1, 3, 3))
    """
    where = "multi_head_attention_forward"
    q_in = _as_float_array("query", query, where)
    k_in = _as_float_array("key", key, where)
    v_in = _as_float_array("value", value, where)
    check_positive_int("num_heads", num_heads, where=where)
    for name, flag in (
        ("add_zero_attn", add_zero_attn),
        ("training", training),
        ("need_weights", need_weights),
        ("use_separate_proj_weight", use_separate_proj_weight),
        ("average_attn_weights", average_attn_weights),
        ("is_causal", is_causal),
    ):
        check_bool(name, flag, where=where)
    kpm = None if key_padding_mask is None else _check_mask_dtype("key_padding_mask", key_padding_mask, where)
    mask = None if attn_mask is None else _check_mask_dtype("attn_mask", attn_mask, where)
    is_batched = _check_mha_shapes(q_in, k_in, v_in, kpm, mask, num_heads, where)
    if not is_batched:  # (L, E) -> (L, 1, E); (S,) -> (1, S)
        q_in, k_in, v_in = q_in[:, None], k_in[:, None], v_in[:, None]
        kpm = None if kpm is None else kpm[None]
    tgt_len, bsz, embed_dim = q_in.shape
    src_len = k_in.shape[0]
    dtype = jnp.result_type(q_in, k_in, v_in)
    kpm = _additive_mask(kpm, dtype, masked_when=True)  # True = ignored, as torch's module
    if is_causal and mask is None:
        raise ValueError(
            f"{where}: is_causal=True needs attn_mask (it is a hint that attn_mask is causal); build one with "
            "layers.Transformer.generate_square_subsequent_mask(L)"
        )
    use_causal_kernel = is_causal and kpm is None and not need_weights
    if use_causal_kernel:
        mask = None  # torch drops the mask and lets SDPA apply its own causal one
    else:
        mask = _additive_mask(mask, dtype, masked_when=True)
    if embed_dim != embed_dim_to_check:
        raise ValueError(f"{where}: expected embedding dimension {embed_dim_to_check}, got query of shape {q_in.shape}")
    head_dim = embed_dim // num_heads
    if head_dim * num_heads != embed_dim:
        raise ValueError(f"{where}: embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
    if use_separate_proj_weight:
        if k_in.shape[:2] != v_in.shape[:2]:
            raise ValueError(
                f"{where}: key's sequence and batch axes {k_in.shape[:2]} must match value's {v_in.shape[:2]}"
            )
        if q_proj_weight is None or k_proj_weight is None or v_proj_weight is None:
            raise ValueError(
                f"{where}: use_separate_proj_weight=True needs q_proj_weight, k_proj_weight and v_proj_weight"
            )
        weights = (q_proj_weight, k_proj_weight, v_proj_weight)
    else:
        if k_in.shape != v_in.shape:
            raise ValueError(f"{where}: key shape {k_in.shape} does not match value shape {v_in.shape}")
        if in_proj_weight is None:
            raise ValueError(f"{where}: use_separate_proj_weight=False needs in_proj_weight")
        w = _as_float_array("in_proj_weight", in_proj_weight, where)
        if w.shape != (3 * embed_dim, embed_dim):
            raise ValueError(f"{where}: in_proj_weight must have shape {(3 * embed_dim, embed_dim)}, got {w.shape}")
        weights = (w[:embed_dim], w[embed_dim : 2 * embed_dim], w[2 * embed_dim :])  # (3E, E) -> 3 x (E, E)
    biases = (None, None, None)
    if in_proj_bias is not None:
        b = _as_float_array("in_proj_bias", in_proj_bias, where)
        biases = (b[:embed_dim], b[embed_dim : 2 * embed_dim], b[2 * embed_dim :])
    q = linear(q_in, weights[0], biases[0])  # (L, N, E)
    k = linear(k_in, weights[1], biases[1])  # (S, N, E)
    v = linear(v_in, weights[2], biases[2])  # (S, N, E)

    if mask is not None:
        if mask.ndim == 2:
            if mask.shape != (tgt_len, src_len):
                raise ValueError(f"{where}: the 2-D attn_mask has shape {mask.shape}, expected {(tgt_len, src_len)}")
            mask = mask[None]  # (L, S) -> (1, L, S)
        elif mask.shape != (bsz * num_heads, tgt_len, src_len):
            raise ValueError(
                f"{where}: the 3-D attn_mask has shape {mask.shape}, expected {(bsz * num_heads, tgt_len, src_len)}"
            )
    if bias_k is not None and bias_v is not None:
        if static_k is not None or static_v is not None:
            raise ValueError(f"{where}: bias_k / bias_v cannot be added to static_k / static_v")
        k = jnp.concatenate([k, jnp.broadcast_to(jnp.asarray(bias_k, dtype), (1, bsz, embed_dim))])  # (S+1, N, E)
        v = jnp.concatenate([v, jnp.broadcast_to(jnp.asarray(bias_v, dtype), (1, bsz, embed_dim))])
        mask, kpm = _pad_last(mask), _pad_last(kpm)
    elif (bias_k is None) != (bias_v is None):
        raise ValueError(f"{where}: bias_k and bias_v must both be given or both be None")

    q = jnp.swapaxes(q.reshape(tgt_len, bsz * num_heads, head_dim), 0, 1)  # (L, N, E) -> (N*H, L, hd)
    if static_k is None:
        k = jnp.swapaxes(k.reshape(k.shape[0], bsz * num_heads, head_dim), 0, 1)  # (S, N, E) -> (N*H, S, hd)
    else:
        k = jnp.asarray(static_k, dtype)
        if k.shape[0] != bsz * num_heads or k.shape[2] != head_dim:
            raise ValueError(f"{where}: static_k must have shape ({bsz * num_heads}, S, {head_dim}), got {k.shape}")
    if static_v is None:
        v = jnp.swapaxes(v.reshape(v.shape[0], bsz * num_heads, head_dim), 0, 1)  # (S, N, E) -> (N*H, S, hd)
    else:
        v = jnp.asarray(static_v, dtype)
        if v.shape[0] != bsz * num_heads or v.shape[2] != head_dim:
            raise ValueError(f"{where}: static_v must have shape ({bsz * num_heads}, S, {head_dim}), got {v.shape}")
    if add_zero_attn:
        zeros = jnp.zeros((bsz * num_heads, 1, head_dim), dtype)
        k = jnp.concatenate([k, zeros], axis=1)  # (N*H, S+1, hd)
        v = jnp.concatenate([v, zeros], axis=1)
        mask, kpm = _pad_last(mask), _pad_last(kpm)
    src_len = k.shape[1]

    if kpm is not None:
        if kpm.shape != (bsz, src_len):
            raise ValueError(f"{where}: key_padding_mask must have shape {(bsz, src_len)}, got {kpm.shape}")
        # (N, S) -> (N, 1, 1, S) -> (N, H, 1, S) -> (N*H, 1, S)
        kpm = jnp.broadcast_to(kpm[:, None, None, :], (bsz, num_heads, 1, src_len)).reshape(bsz * num_heads, 1, src_len)
        mask = kpm if mask is None else mask + kpm
    if not training:
        dropout_p = 0.0
    check_number("dropout_p", dropout_p, where=where)

    if need_weights:
        q_scaled = q * jnp.asarray(math.sqrt(1.0 / float(head_dim)), dtype)
        scores = jnp.matmul(q_scaled, jnp.swapaxes(k, -2, -1))  # (N*H, L, S)
        if mask is not None:
            scores = mask + scores  # torch.baddbmm(mask, q_scaled, k^T)
        probabilities = _attention_dropout(jax.nn.softmax(scores, axis=-1), float(dropout_p), dropout_key, where)
        output = jnp.matmul(probabilities, v)  # (N*H, L, hd)
        output = jnp.swapaxes(output, 0, 1).reshape(tgt_len * bsz, embed_dim)  # -> (L, N*H, hd) -> (L*N, E)
        output = linear(output, out_proj_weight, out_proj_bias).reshape(tgt_len, bsz, -1)  # (L, N, E)
        attention = probabilities.reshape(bsz, num_heads, tgt_len, src_len)  # (N*H, L, S) -> (N, H, L, S)
        if average_attn_weights:
            attention = attention.mean(axis=1)  # (N, L, S)
        if not is_batched:
            output, attention = output[:, 0], attention[0]
        return output, attention
    if mask is not None:
        # (1, L, S) -> (1, 1, L, S); (N*H, L|1, S) -> (N, H, L|1, S)
        mask = mask[None] if mask.shape[0] == 1 else mask.reshape(bsz, num_heads, -1, src_len)
    q = q.reshape(bsz, num_heads, tgt_len, head_dim)  # (N*H, L, hd) -> (N, H, L, hd)
    k = k.reshape(bsz, num_heads, src_len, head_dim)
    v = v.reshape(bsz, num_heads, src_len, head_dim)
    output = scaled_dot_product_attention(
        q, k, v, mask, float(dropout_p), use_causal_kernel, dropout_key=dropout_key
    )  # (N, H, L, hd)
    output = jnp.transpose(output, (2, 0, 1, 3)).reshape(bsz * tgt_len, embed_dim)  # (L, N, H, hd) -> (L*N, E)
    output = linear(output, out_proj_weight, out_proj_bias).reshape(tgt_len, bsz, -1)  # (L, N, E)
    if not is_batched:
        output = output[:, 0]
    return output, None


__all__ += ["scaled_dot_product_attention", "multi_head_attention_forward"]


# --------------------------------------------------------------------------------------------------
# Activations and softmax (owner: activation family)
# --------------------------------------------------------------------------------------------------

# Torch's elementwise activations, with the gradient torch defines at each kink (written with jnp.where on the
# same comparison torch's backward kernel uses, so relu'(0) = 0, hardtanh' = 0 at both bounds, leaky_relu'(0) =
# negative_slope, elu'(0) = alpha, threshold' = 0 at the threshold). ``inplace`` is accepted (torch's signature)
# and ignored: JAX arrays are immutable, the returned array is the result either way.


def _as_float_input(input: Any, where: str) -> jax.Array:
    x = jnp.asarray(input)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        raise TypeError(f"{where}: input must be a floating-point array, got dtype {x.dtype}")
    return x


def _check_inplace(inplace: Any, where: str) -> None:
    check_bool("inplace", inplace, where=where)


def relu(input: jax.Array, inplace: bool = False) -> jax.Array:
    """``max(x, 0)``; gradient 0 at ``x = 0`` as in torch; NaN stays NaN (with gradient 1, as torch's).

    PyTorch equivalent: ``torch.nn.functional.relu(input, inplace=False)`` (``inplace`` is a no-op).

    >>> print(relu(jnp.array([-1.0, 0.0, 2.0])).round(4))
    [0. 0. 2.]
    """
    _check_inplace(inplace, "relu")
    x = _as_float_input(input, "relu")
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
    x = _as_float_input(input, "threshold")
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
    x = _as_float_input(input, "hardtanh")
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
    return hardtanh(_as_float_input(input, "relu6"), 0.0, 6.0)


def leaky_relu(input: jax.Array, negative_slope: float = 0.01, inplace: bool = False) -> jax.Array:
    """``x if x > 0 else negative_slope * x``; gradient ``negative_slope`` at ``x = 0`` as in torch.

    PyTorch equivalent: ``torch.nn.functional.leaky_relu(input, negative_slope=0.01, inplace=False)``.

    ``jax.nn.leaky_relu`` gives gradient 1 at 0; this follows torch.

    >>> print(np.asarray(leaky_relu(jnp.array([-1.0, 2.0]), 0.1)).round(4))
    [-0.1  2. ]
    """
    check_number("negative_slope", negative_slope, where="leaky_relu")
    _check_inplace(inplace, "leaky_relu")
    x = _as_float_input(input, "leaky_relu")
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
    return _elu(_as_float_input(input, "elu"), alpha, 1.0, 1.0)


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
    return _elu(_as_float_input(input, "selu"), _SELU_ALPHA, _SELU_SCALE, 1.0)


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
    return _celu(_as_float_input(input, "celu"), float(alpha))


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
    return jax.nn.gelu(_as_float_input(input, "gelu"), approximate=approximate == "tanh")


def silu(input: jax.Array, inplace: bool = False) -> jax.Array:
    """``x * sigmoid(x)`` (swish).

    PyTorch equivalent: ``torch.nn.functional.silu(input, inplace=False)``.

    >>> print(np.asarray(silu(jnp.array([1.0]))).round(4))
    [0.7311]
    """
    _check_inplace(inplace, "silu")
    return jax.nn.silu(_as_float_input(input, "silu"))


def mish(input: jax.Array, inplace: bool = False) -> jax.Array:
    """``x * tanh(softplus(x))`` (softplus without torch's threshold, as torch's mish kernel).

    PyTorch equivalent: ``torch.nn.functional.mish(input, inplace=False)``.

    ``softplus`` is evaluated as ``logaddexp(x, 0)`` (torch: ``log1p(exp(x))``): the same value to rounding,
    and no ``inf / inf`` NaN in the gradient for large ``x``.

    >>> print(np.asarray(mish(jnp.array([1.0]))).round(4))
    [0.8651]
    """
    _check_inplace(inplace, "mish")
    x = _as_float_input(input, "mish")
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
    return _hardswish(_as_float_input(input, "hardswish"))


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
    return _hardsigmoid(_as_float_input(input, "hardsigmoid"))


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
    x = _as_float_input(input, "softplus")
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
    x = _as_float_input(input, "softsign")
    return x / (jnp.abs(x) + 1)


def logsigmoid(input: jax.Array) -> jax.Array:
    """``log(sigmoid(x))`` = ``min(x, 0) - log1p(exp(-|x|))``, stable for large ``|x|``.

    PyTorch equivalent: ``torch.nn.functional.logsigmoid(input)``.

    >>> print(logsigmoid(jnp.array([0.0])).round(4))
    [-0.6931]
    """
    # jax.nn.log_sigmoid is -logaddexp(-x, 0): the same operations as torch's kernel, and a smooth gradient
    # (1/2 at 0, as torch's), where min(x, 0) would give JAX's tie gradient.
    return jax.nn.log_sigmoid(_as_float_input(input, "logsigmoid"))


def sigmoid(input: jax.Array) -> jax.Array:
    """Logistic ``1 / (1 + exp(-x))``.

    PyTorch equivalent: ``torch.nn.functional.sigmoid(input)`` / ``torch.sigmoid``.

    >>> print(sigmoid(jnp.array([0.0])).round(4))
    [0.5]
    """
    return jax.nn.sigmoid(_as_float_input(input, "sigmoid"))


def tanh(input: jax.Array) -> jax.Array:
    """Hyperbolic tangent.

    PyTorch equivalent: ``torch.nn.functional.tanh(input)`` / ``torch.tanh``.

    >>> print(tanh(jnp.array([0.0])).round(4))
    [0.]
    """
    return jnp.tanh(_as_float_input(input, "tanh"))


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
    x = _as_float_input(input, "prelu")
    w = jnp.asarray(weight)
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
    x = _as_float_input(input, "glu")
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
    x = _as_float_input(input, where)
    if dtype is not None:
        x = x.astype(dtype)  # torch casts the input before the op
    return x, _wrap_dim(dim, x.ndim, where)


def softmax(input: jax.Array, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> jax.Array:
    """``exp(x) / sum(exp(x))`` along ``dim``; ``dtype`` casts the input first, as in torch.

    PyTorch equivalent: ``torch.nn.functional.softmax(input, dim=None, _stacklevel=3, dtype=None)``.

    Difference: ``dim`` is required (``TypeError`` when omitted); torch picks one implicitly with a
    deprecation warning. ``_stacklevel`` is accepted and ignored.

    >>> print(softmax(jnp.array([[0.0, 0.0]]), dim=-1).round(4))
    [[0.5 0.5]]
    """
    x, axis = _softmax_input(input, dim, dtype, "softmax")
    if x.ndim == 0:  # torch accepts a 0-D input (dim 0 or -1): softmax of one value
        return jax.nn.softmax(x.reshape(1), axis=0).reshape(())
    return jax.nn.softmax(x, axis=axis)


def log_softmax(input: jax.Array, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> jax.Array:
    """``x - logsumexp(x)`` along ``dim``; ``dtype`` casts the input first, as in torch.

    PyTorch equivalent: ``torch.nn.functional.log_softmax(input, dim=None, _stacklevel=3, dtype=None)``.

    Difference: ``dim`` is required (``TypeError`` when omitted), as for :func:`softmax`.

    >>> print(log_softmax(jnp.array([[0.0, 0.0]]), dim=1).round(4))
    [[-0.6931 -0.6931]]
    """
    x, axis = _softmax_input(input, dim, dtype, "log_softmax")
    if x.ndim == 0:
        return jax.nn.log_softmax(x.reshape(1), axis=0).reshape(())
    return jax.nn.log_softmax(x, axis=axis)


__all__ += [
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


# --------------------------------------------------------------------------------------------------
# Dropout (owner: dropout family)
# --------------------------------------------------------------------------------------------------

# One dropout: the layers (Dropout, Dropout1d/2d, AlphaDropout, the recurrent layers' inter-layer dropout) draw
# a key and call these. Masks come from ``jax.random.bernoulli(key, 1 - p, noise_shape)``: same key, same mask.
# They cannot equal torch's masks (different generators); everything else does.


def _dropout_args(input: Any, p: Any, training: Any, inplace: Any, key: Any, where: str) -> jax.Array:
    check_number("p", p, where=where)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{where}: dropout probability has to be between 0 and 1, but got p={p}")
    check_bool("training", training, where=where)
    check_bool("inplace", inplace, where=where)
    if key is not None:
        check_key("key", key, where=where)
    return _as_float_input(input, where)


def _needs_key(key: Any, where: str) -> Any:
    if key is None:
        raise ValueError(
            f"{where}: training=True needs random numbers: pass key=jax.random.key(seed) (a fresh key per call), "
            "or training=False for the identity"
        )
    return key


def _masked(x: jax.Array, p: float, key: Any, noise_shape: tuple[int, ...]) -> jax.Array:
    """torch's ``input * (mask / (1 - p))``, the mask ``(noise_shape)`` broadcast over ``x``."""
    keep = jax.random.bernoulli(key, 1.0 - p, noise_shape)
    # torch multiplies by mask / (1 - p) (not x / (1 - p)): same rounding.
    scale = jnp.asarray(1.0 / (1.0 - p), x.dtype)
    return x * (keep.astype(x.dtype) * scale)


def dropout(
    input: jax.Array, p: float = 0.5, training: bool = True, inplace: bool = False, *, key: jax.Array | None = None
) -> jax.Array:
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)`` when ``training``.

    PyTorch equivalent: ``torch.nn.functional.dropout(input, p=0.5, training=True, inplace=False)``.

    ``y = x * (mask / (1 - p))``, ``mask ~ Bernoulli(1 - p)`` drawn from ``key`` (keyword-only, a
    ``jax.random.key``; the same key gives the same mask; training without a key is a ``ValueError``).
    ``training=False``, ``p=0`` or an empty input: the input itself (exact identity). ``p=1``: ``x * 0``
    (zeros, NaN/inf propagate as in torch). ``inplace`` is accepted and ignored (JAX arrays are immutable).

    >>> x = jnp.ones((2, 4))
    >>> y = dropout(x, 0.5, key=jax.random.key(0))
    >>> sorted(set(y.ravel().tolist()))
    [0.0, 2.0]
    >>> bool((dropout(x, 0.5, training=False) == x).all())
    True
    """
    x = _dropout_args(input, p, training, inplace, key, "dropout")
    if not training or p == 0.0 or x.size == 0:
        return x
    if p == 1.0:
        return x * jnp.zeros_like(x)  # torch: input * 0 (keeps NaN/inf propagation)
    return _masked(x, float(p), _needs_key(key, "dropout"), x.shape)


def _feature_dropout(x: jax.Array, p: float, training: bool, key: Any, channel_axis: int, where: str) -> jax.Array:
    """torch's feature (channel-wise) dropout: one mask entry per (sample, channel), broadcast over the rest."""
    if not training or p == 0.0 or x.size == 0:
        return x
    if p == 1.0:
        return x * jnp.zeros_like(x)
    # (N, C, *spatial) -> noise (N, C, 1, ...); channels-last (N, *spatial, C) -> noise (N, 1, ..., C)
    noise_shape = tuple(size if axis in (0, channel_axis) else 1 for axis, size in enumerate(x.shape))
    return _masked(x, float(p), _needs_key(key, where), noise_shape)


def dropout1d(
    input: jax.Array,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    key: jax.Array | None = None,
    channels_last: bool = False,
) -> jax.Array:
    """Zero whole channels (each a 1-D sequence) with probability ``p``, scale the rest by ``1 / (1 - p)``.

    PyTorch equivalent: ``torch.nn.functional.dropout1d(input, p=0.5, training=True, inplace=False)``.

    Input: torch's ``(N, C, L)`` or unbatched ``(C, L)``; with ``channels_last=True`` fnml's ``(N, L, C)``
    / ``(L, C)``. One Bernoulli(1 - p) draw per (sample, channel) from ``key``, broadcast along ``L``.
    Other ranks are a ``ValueError``; ``training=False`` / ``p=0`` are the exact identity, as :func:`dropout`.

    >>> y = dropout1d(jnp.ones((1, 4, 3)), 0.5, key=jax.random.key(0))   # (N, C, L)
    >>> all(len(set(row.tolist())) == 1 for row in y[0])   # each channel all kept (2.0) or all dropped (0.0)
    True
    """
    where = "dropout1d"
    x = _dropout_args(input, p, training, inplace, key, where)
    check_bool("channels_last", channels_last, where=where)
    if x.ndim not in (2, 3):
        layout = "(N, L, C) or (L, C)" if channels_last else "(N, C, L) or (C, L)"
        raise ValueError(
            f"{where}: expected a 2-D or 3-D input {layout} (channel-wise dropout over 1 spatial dimension), "
            f"got a {x.ndim}-D input of shape {x.shape}"
        )
    batched = x[None] if x.ndim == 2 else x  # (C, L) -> (1, C, L) as torch does
    y = _feature_dropout(batched, p, training, key, 2 if channels_last else 1, where)
    return y[0] if x.ndim == 2 else y


def dropout2d(
    input: jax.Array,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    key: jax.Array | None = None,
    channels_last: bool = False,
) -> jax.Array:
    """Zero whole channels (each a 2-D feature map) with probability ``p``, scale the rest by ``1 / (1 - p)``.

    PyTorch equivalent: ``torch.nn.functional.dropout2d(input, p=0.5, training=True, inplace=False)``.

    Input: torch's ``(N, C, H, W)``; with ``channels_last=True`` fnml's ``(N, H, W, C)`` (fnml's conv
    layout). One Bernoulli(1 - p) draw per (sample, channel) from ``key``, broadcast over ``H, W``. A 3-D
    input is treated as torch treats it, ``(N, C, L)`` (channels-last ``(N, L, C)``) channel-wise 1-D
    dropout, with torch's warning; other ranks are a ``ValueError`` (torch: a deprecation warning).

    >>> y = dropout2d(jnp.ones((1, 2, 2, 3)), 0.5, key=jax.random.key(1), channels_last=True)   # (N, H, W, C)
    >>> y[0, :, :, 0].tolist() in ([[2.0, 2.0], [2.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]])
    True
    """
    where = "dropout2d"
    x = _dropout_args(input, p, training, inplace, key, where)
    check_bool("channels_last", channels_last, where=where)
    if x.ndim not in (3, 4):
        layout = "(N, H, W, C)" if channels_last else "(N, C, H, W)"
        raise ValueError(
            f"{where}: expected a 4-D input {layout} (or torch's 3-D (N, C, L) form), "
            f"got a {x.ndim}-D input of shape {x.shape}; use dropout for element-wise dropout"
        )
    if x.ndim == 3:
        warnings.warn(
            "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D dropout behavior is "
            "desired - input is interpreted as shape (N, C, L) ((N, L, C) with channels_last=True), as torch "
            "does. To maintain the 1D channel-wise dropout behavior, please switch to using dropout1d instead.",
            UserWarning,
            stacklevel=2,
        )
    return _feature_dropout(x, p, training, key, x.ndim - 1 if channels_last else 1, where)


# torch's SELU-derived alpha dropout constant: -selu_scale * selu_alpha (aten/src/ATen/native/Dropout.cpp).
_ALPHA_DROPOUT_ALPHA = 1.7580993408473766


def alpha_dropout(
    input: jax.Array, p: float = 0.5, training: bool = False, inplace: bool = False, *, key: jax.Array | None = None
) -> jax.Array:
    """Dropout for SELU networks: keeps zero mean and unit variance of a standard-normal input.

    PyTorch equivalent: ``torch.nn.functional.alpha_dropout(input, p=0.5, training=False, inplace=False)``
    (note torch's default ``training=False`` here).

    Dropped elements are set to SELU's negative saturation ``-alpha'`` (``alpha' = 1.7581``), then
    ``y = a * x_masked + b`` with ``a = 1 / sqrt((alpha'^2 p + 1)(1 - p))`` and ``b = a alpha' p`` chosen so
    that mean and variance are preserved; computed in torch's order (``noise = mask * a``,
    ``b = (mask - 1) * alpha' a + alpha' a p``, ``y = x * noise + b``). ``p=1``: ``x * 0``. The mask is one
    Bernoulli(1 - p) per element from ``key`` (required when training).

    >>> y = alpha_dropout(jnp.zeros(1000), 0.5, training=True, key=jax.random.key(0))
    >>> sorted({round(v, 4) for v in y.tolist()})
    [-0.7792, 0.7792]
    """
    where = "alpha_dropout"
    x = _dropout_args(input, p, training, inplace, key, where)
    if not training or p == 0.0 or x.size == 0:
        return x
    if p == 1.0:
        return x * jnp.zeros_like(x)
    p = float(p)
    keep = jax.random.bernoulli(_needs_key(key, where), 1.0 - p, x.shape).astype(x.dtype)
    alpha = _ALPHA_DROPOUT_ALPHA
    a = 1.0 / math.sqrt((alpha * alpha * p + 1) * (1 - p))
    b = (keep - 1) * jnp.asarray(alpha * a, x.dtype) + jnp.asarray(alpha * a * p, x.dtype)
    return x * (keep * jnp.asarray(a, x.dtype)) + b


__all__ += ["alpha_dropout", "dropout", "dropout1d", "dropout2d"]

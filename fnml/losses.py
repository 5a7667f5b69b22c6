"""Loss functions with ``torch.nn.functional`` semantics, as pure JAX functions.

Every loss takes ``(input, target)`` in torch's argument order, keyword-only options with torch's names
(``weight``, ``ignore_index``, ``reduction``, ``label_smoothing``, ``pos_weight``, ``beta``, ``delta``,
``log_target``) and torch's defaults, and returns what torch returns: a scalar for
``reduction="mean"`` / ``"sum"`` and the per-element losses for ``"none"``. Gradients match torch's,
including at the kinks (``|x|`` at 0 has gradient 0, BCE's clamped logarithms use torch's backward
formula).

CamelCase criteria (``MSELoss()``, ``CrossEntropyLoss(label_smoothing=0.1)``, ...) are small frozen
dataclasses holding the options, checked when the criterion is built; calling one runs the functional
loss, so the tutorial reads the same:

>>> from fnml import losses
>>> criterion = losses.MSELoss()
>>> output, target = jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0])
>>> float(criterion(output, target))
2.5

Input checks run eagerly in plain Python, before any tracing: unknown ``reduction``, shape and dtype
mismatches, bad hyperparameters. Checks on *values* (class indices in ``[0, C)``, BCE probabilities in
``[0, 1]``) run when the array is concrete (a regular array, not a ``jit``/``vmap``/``grad`` tracer; under
``jax.grad`` the integer targets stay concrete and are checked, the differentiated input is traced). On
traced values nothing can be raised, so the offending elements produce NaN (``jnp.where`` guard) instead
of a plausible wrong number.

Where fnml is stricter than torch: element-wise losses require ``target.shape == input.shape`` (torch
broadcasts, with a warning for ``mse_loss``/``l1_loss``); targets and weights are cast to the input's
dtype (torch raises on a float64 weight with float32 input).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.custom_derivatives import SymbolicZero
from jax.scipy.special import xlogy

from fnml._validation import (
    check_bool,
    check_choice,
    check_in_interval,
    check_int,
    check_non_negative,
    check_positive,
)

__all__ = [
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
    "MSELoss",
    "L1Loss",
    "SmoothL1Loss",
    "HuberLoss",
    "CrossEntropyLoss",
    "NLLLoss",
    "BCELoss",
    "BCEWithLogitsLoss",
    "KLDivLoss",
]

_REDUCTIONS = ("mean", "sum", "none")
_KL_REDUCTIONS = ("mean", "batchmean", "sum", "none")
# torch's BCE backward divides by max((1 - x) * x, EPSILON), EPSILON = 1e-12 stored as a C++ float
# (9.99999996e-13): the double literal would differ by 4e-9 relative in the 1e12-sized gradients at 0 and 1.
_BCE_BACKWARD_EPSILON = float(np.float32(1e-12))
# torch clamps BCE's logarithms at -100 so that x = 0 or 1 gives a finite loss.
_BCE_LOG_FLOOR = -100.0


# ---------------------------------------------------------------------------------------------------
# Private helpers: eager checks and reductions
# ---------------------------------------------------------------------------------------------------


def _is_concrete(value: Any) -> bool:
    """True when ``value`` holds real numbers now (not a jit/vmap/grad tracer)."""
    return not isinstance(value, jax.core.Tracer)


def _floating_array(name: str, value: Any, where: str) -> jax.Array:
    """``value`` as a jax array with a floating dtype, else TypeError naming ``name``."""
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise TypeError(f"{where}: {name} must have a floating dtype, got dtype {array.dtype}")
    return array


def _real_array(name: str, value: Any, where: str) -> jax.Array:
    """``value`` as a jax array of real numbers (integer or floating, not bool/complex/str)."""
    # Look at the dtype before jnp.asarray, which fails on strings and objects with an unrelated message.
    array = value if isinstance(value, jax.Array) else np.asarray(value)
    if array.dtype == np.bool_ or not (
        jnp.issubdtype(array.dtype, jnp.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise TypeError(f"{where}: {name} must have a real numeric dtype, got dtype {array.dtype}")
    return jnp.asarray(array)


def _check_same_shape(input: jax.Array, target: jax.Array, where: str) -> None:
    """Element-wise losses need ``target.shape == input.shape`` (torch would broadcast)."""
    if input.shape != target.shape:
        raise ValueError(
            f"{where}: target shape {tuple(target.shape)} does not match input shape "
            f"{tuple(input.shape)}; expected the same shape (fnml does not broadcast the target)"
        )


def _check_ignore_index(ignore_index: Any, where: str) -> int:
    """``ignore_index`` is an int (not bool), like torch's int64 argument."""
    return check_int("ignore_index", ignore_index, where=where)


def _broadcast_weight(name: str, weight: Any, shape: tuple[int, ...], dtype, where: str) -> jax.Array:
    """A per-element weight broadcastable to the input ``shape``, cast to the input ``dtype``."""
    array = _real_array(name, weight, where)
    try:
        broadcast = np.broadcast_shapes(array.shape, shape)
    except ValueError:
        broadcast = None
    if broadcast != tuple(shape):
        raise ValueError(
            f"{where}: {name} of shape {tuple(array.shape)} does not broadcast to the input shape {tuple(shape)}"
        )
    return array.astype(dtype)


def _class_weight(weight: Any, num_classes: int, dtype, where: str) -> jax.Array | None:
    """Per-class ``weight`` of shape (C,), cast to the input dtype; None stays None."""
    if weight is None:
        return None
    array = _real_array("weight", weight, where)
    if array.shape != (num_classes,):
        raise ValueError(
            f"{where}: weight must have shape (C,) = ({num_classes},), one entry per class, "
            f"got shape {tuple(array.shape)}"
        )
    return array.astype(dtype)


def _reduce(loss: jax.Array, reduction: str) -> jax.Array:
    """torch's ``apply_loss_reduction``: mean over all elements, sum, or the elements themselves."""
    if reduction == "mean":
        return jnp.mean(loss)
    if reduction == "sum":
        return jnp.sum(loss)
    return loss


def _check_class_indices(target: jax.Array, num_classes: int, ignore_index: int, where: str) -> None:
    """Concrete class indices must lie in [0, C) unless equal to ``ignore_index``."""
    if not _is_concrete(target):
        return  # traced: the NaN guard in _class_index_terms makes bad entries visible instead
    values = np.asarray(target)
    bad = (values != ignore_index) & ((values < 0) | (values >= num_classes))
    if bad.any():
        raise ValueError(
            f"{where}: target holds class index {values[bad].flat[0]} outside [0, {num_classes}) "
            f"({int(bad.sum())} of {values.size} entries; ignore_index={ignore_index} is the only "
            "other value allowed)"
        )


def _class_index_terms(target: jax.Array, num_classes: int, weight: jax.Array | None, ignore_index: int, dtype):
    """Safe gather indices, w[y] (0 where ignored), the ignored mask and the out-of-range mask."""
    ignored = target == ignore_index
    invalid = ~ignored & ((target < 0) | (target >= num_classes))
    safe_target = jnp.where(ignored | invalid, 0, target)
    if weight is None:
        target_weight = jnp.ones(target.shape, dtype)
    else:
        target_weight = weight[safe_target]
    # torch's mean divides by the sum of w[y] over the targets it keeps.
    target_weight = jnp.where(ignored, jnp.zeros((), dtype), target_weight)
    return safe_target, target_weight, ignored, invalid


def _reduce_class_losses(loss: jax.Array, target_weight: jax.Array, reduction: str) -> jax.Array:
    """nll_loss's reduction: "mean" divides by sum of w[y] over kept targets (NaN if none is kept)."""
    if reduction == "mean":
        return jnp.sum(loss) / jnp.sum(target_weight)
    if reduction == "sum":
        return jnp.sum(loss)
    return loss


def _class_input(input: Any, where: str) -> jax.Array:
    """Logits / log-probabilities: floating, (C,) or (N, C, d1, ...)."""
    array = _floating_array("input", input, where)
    if array.ndim == 0:
        raise ValueError(f"{where}: input must be (C,), (N, C) or (N, C, d1, ...), got a 0-D array")
    return array


def _index_target_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The class-index target shape for an input: (N, C, d1, ...) -> (N, d1, ...); (C,) -> ()."""
    if len(input_shape) == 1:
        return ()
    return (input_shape[0], *input_shape[2:])


def _check_index_target(target: jax.Array, input_shape: tuple[int, ...], where: str) -> None:
    """Class indices: integer dtype, shape (N, d1, ...) for input (N, C, d1, ...)."""
    expected = _index_target_shape(input_shape)
    if target.shape != expected:
        raise ValueError(
            f"{where}: target shape {tuple(target.shape)} does not match input shape {tuple(input_shape)}; "
            f"expected class indices of shape {expected}"
        )
    if not jnp.issubdtype(target.dtype, jnp.integer):
        raise TypeError(
            f"{where}: class-index target must have an integer dtype, got dtype {target.dtype} "
            f"(class probabilities need the input's shape {tuple(input_shape)})"
        )


def _nan_where(mask: jax.Array, loss: jax.Array) -> jax.Array:
    """NaN where ``mask`` (invalid input found under tracing), ``loss`` elsewhere."""
    return jnp.where(mask, jnp.asarray(jnp.nan, loss.dtype), loss)


# ---------------------------------------------------------------------------------------------------
# Regression losses
# ---------------------------------------------------------------------------------------------------


def mse_loss(input: Any, target: Any, *, reduction: str = "mean") -> jax.Array:
    """Mean squared error, ``(input - target) ** 2`` reduced.

    PyTorch equivalent: ``torch.nn.functional.mse_loss(input, target, reduction=...)``.

    ``input``, ``target``: the same shape ``(*)``; returns a scalar, or ``(*)`` for ``reduction="none"``.
    Built on ``optax.squared_error`` (not ``optax.l2_loss``, which has a factor 1/2). Unlike torch, a
    target of another shape raises instead of broadcasting with a warning.

    >>> float(mse_loss(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0])))  # (1 + 4) / 2
    2.5
    >>> print(mse_loss(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0]), reduction="none"))
    [1. 4.]
    """
    where = "mse_loss"
    check_choice("reduction", reduction, _REDUCTIONS, where=where)
    x = _floating_array("input", input, where)
    y = _real_array("target", target, where)
    _check_same_shape(x, y, where)
    return _reduce(optax.squared_error(x, y.astype(x.dtype)), reduction)


def l1_loss(input: Any, target: Any, *, reduction: str = "mean") -> jax.Array:
    """Mean absolute error, ``|input - target|`` reduced; gradient 0 where ``input == target``.

    PyTorch equivalent: ``torch.nn.functional.l1_loss(input, target, reduction=...)``.

    ``input``, ``target``: the same shape ``(*)``. The gradient is ``sign(input - target)`` with
    ``sign(0) = 0`` as in torch; ``jax.grad(jnp.abs)(0.0)`` is 1, so the absolute value is written as
    ``d * sign(d)`` (the same value, and JAX differentiates ``sign`` to 0).

    >>> float(l1_loss(jnp.array([1.0, -2.0]), jnp.array([0.0, 0.0])))  # (1 + 2) / 2
    1.5
    >>> print(jax.grad(l1_loss)(jnp.array([1.0, 0.0]), jnp.zeros(2)))  # 0 at the kink, like torch
    [0.5 0. ]
    """
    where = "l1_loss"
    check_choice("reduction", reduction, _REDUCTIONS, where=where)
    x = _floating_array("input", input, where)
    y = _real_array("target", target, where)
    _check_same_shape(x, y, where)
    return _reduce(_abs_torch_grad(x - y.astype(x.dtype)), reduction)


def _abs_torch_grad(difference: jax.Array) -> jax.Array:
    """|d| with torch's gradient sign(d) (0 at d == 0): d * sign(d) is exactly |d|."""
    return difference * jnp.sign(difference)


def smooth_l1_loss(input: Any, target: Any, *, reduction: str = "mean", beta: float = 1.0) -> jax.Array:
    """Smooth L1: ``0.5 d**2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta`` (``d = input - target``).

    PyTorch equivalent: ``torch.nn.functional.smooth_l1_loss(input, target, reduction=..., beta=1.0)``.

    ``beta >= 0``; ``beta = 0`` is exactly ``l1_loss`` (as in torch, gradient 0 at ``d = 0``). For
    ``beta > 0`` it is ``optax.huber_loss(delta=beta) / beta``; the gradient is ``clip(d / beta, -1, 1)``,
    continuous at the kink ``|d| = beta``.

    >>> float(smooth_l1_loss(jnp.array([0.5, 3.0]), jnp.zeros(2)))  # (0.5 * 0.5**2 + (3 - 0.5)) / 2
    1.3125
    """
    where = "smooth_l1_loss"
    check_choice("reduction", reduction, _REDUCTIONS, where=where)
    check_non_negative("beta", beta, where=where)
    if beta == 0:
        return l1_loss(input, target, reduction=reduction)
    x = _floating_array("input", input, where)
    y = _real_array("target", target, where)
    _check_same_shape(x, y, where)
    return _reduce(optax.huber_loss(x, y.astype(x.dtype), delta=beta) / beta, reduction)


def huber_loss(input: Any, target: Any, *, reduction: str = "mean", delta: float = 1.0) -> jax.Array:
    """Huber: ``0.5 d**2`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)`` (``d = input - target``).

    PyTorch equivalent: ``torch.nn.functional.huber_loss(input, target, reduction=..., delta=1.0)``.

    ``delta > 0`` (torch rejects non-positive values too). Elements come from ``optax.huber_loss``,
    which has the same formula; the gradient is ``clip(d, -delta, delta)``.

    >>> float(huber_loss(jnp.array([0.5, 3.0]), jnp.zeros(2), delta=2.0))  # (0.5 * 0.5**2 + 2 * (3 - 1)) / 2
    2.0625
    """
    where = "huber_loss"
    check_choice("reduction", reduction, _REDUCTIONS, where=where)
    check_positive("delta", delta, where=where)
    x = _floating_array("input", input, where)
    y = _real_array("target", target, where)
    _check_same_shape(x, y, where)
    return _reduce(optax.huber_loss(x, y.astype(x.dtype), delta=delta), reduction)


# ---------------------------------------------------------------------------------------------------
# Classification losses
# ---------------------------------------------------------------------------------------------------


def nll_loss(
    input: Any,
    target: Any,
    *,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> jax.Array:
    """Negative log-likelihood of class-index targets given log-probabilities.

    PyTorch equivalent: ``torch.nn.functional.nll_loss(input, target, weight=None, ignore_index=-100,
    reduction="mean")``.

    Shapes (torch's convention, classes in dim 1): ``input`` ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)``
    holding log-probabilities; ``target`` integer class indices ``(N,)``, ``(N, d1, ...)`` or ``()``.
    Element loss ``-w[y] * input[n, y]`` (0 where ``y == ignore_index``); ``"mean"`` divides the sum by
    ``sum(w[y])`` over the kept targets (the count of kept targets without ``weight``), so it is NaN if
    every target is ignored, as in torch. ``weight``: ``(C,)``, cast to the input dtype.

    Class indices outside ``[0, C)`` other than ``ignore_index`` raise ``ValueError`` when ``target``
    is concrete; under ``jit`` they give NaN for that element (and hence a NaN reduced loss).

    >>> logp = jax.nn.log_softmax(jnp.array([[1.0, 2.0, 0.5]]), axis=1)
    >>> round(float(nll_loss(logp, jnp.array([1]))), 4)  # -log p_1
    0.4644
    """
    where = "nll_loss"
    check_choice("reduction", reduction, _REDUCTIONS, where=where)
    ignore_index = _check_ignore_index(ignore_index, where)
    x = _class_input(input, where)
    t = jnp.asarray(target)
    _check_index_target(t, x.shape, where)
    num_classes = x.shape[1] if x.ndim > 1 else x.shape[0]
    w = _class_weight(weight, num_classes, x.dtype, where)
    _check_class_indices(t, num_classes, ignore_index, where)
    unbatched = x.ndim == 1
    if unbatched:
        x, t = x[None], t[None]  # (C,) -> (1, C), () -> (1,)
    safe_t, target_weight, ignored, invalid = _class_index_terms(t, num_classes, w, ignore_index, x.dtype)
    # (N, C, d1, ...) gathered at (N, 1, d1, ...) -> (N, d1, ...)
    picked = jnp.take_along_axis(x, safe_t[:, None], axis=1)[:, 0]
    loss = jnp.where(ignored, jnp.zeros((), x.dtype), -target_weight * picked)
    loss = _reduce_class_losses(_nan_where(invalid, loss), target_weight, reduction)
    return loss[0] if (reduction == "none" and unbatched) else loss


def cross_entropy(
    input: Any,
    target: Any,
    *,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> jax.Array:
    """Softmax cross entropy of logits against class indices or class probabilities.

    PyTorch equivalent: ``torch.nn.functional.cross_entropy(input, target, weight=None,
    ignore_index=-100, reduction="mean", label_smoothing=0.0)``.

    Shapes follow torch, classes in dim 1 (this is the functional twin of ``F.cross_entropy``, so it
    keeps torch's convention for the loss input even though fnml images are NHWC: move the class axis
    with ``jnp.moveaxis(logits, -1, 1)`` first): ``input`` ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)``.
    ``target`` is either

    - class indices, integer ``(N,)`` / ``(N, d1, ...)`` / ``()``: ``(1 - eps) * nll + eps / C * smooth``
      with ``nll = -w[y] log p_y`` and ``smooth = -sum_c w[c] log p_c``, both 0 where
      ``y == ignore_index``; ``"mean"`` divides both sums by ``sum(w[y])`` over kept targets;
    - class probabilities, floating, the input's shape: ``-sum_c w[c] q_c log p_c`` with
      ``q = (1 - eps) target + eps / C``; ``"mean"`` divides by ``N * d1 * ...`` (not by the weights),
      and ``ignore_index`` must be negative (torch rejects it too).

    ``eps = label_smoothing`` in ``[0, 1]``; ``weight`` ``(C,)`` is cast to the input dtype. Terms come
    from ``optax.softmax_cross_entropy_with_integer_labels`` / ``optax.softmax_cross_entropy``
    (per-example, unweighted); weights, ``ignore_index``, smoothing and torch's reductions are added
    here. Out-of-range class indices raise when ``target`` is concrete and give NaN under ``jit``.

    >>> logits = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    >>> round(float(cross_entropy(logits, jnp.array([0, 2]))), 4)
    0.1755
    >>> round(float(cross_entropy(logits, jnp.array([0, 2]), label_smoothing=0.1)), 4)
    0.3455
    >>> round(float(cross_entropy(logits, jnp.array([0, -100]))), 4)  # the second target is ignored
    0.2413
    """
    where = "cross_entropy"
    check_choice("reduction", reduction, _REDUCTIONS, where=where)
    check_in_interval("label_smoothing", label_smoothing, 0.0, 1.0, closed_high=True, where=where)
    ignore_index = _check_ignore_index(ignore_index, where)
    x = _class_input(input, where)
    t = jnp.asarray(target)
    num_classes = x.shape[1] if x.ndim > 1 else x.shape[0]
    w = _class_weight(weight, num_classes, x.dtype, where)
    unbatched = x.ndim == 1
    if t.shape == x.shape:
        if not jnp.issubdtype(t.dtype, jnp.floating):
            raise TypeError(
                f"{where}: a target of the input's shape {tuple(x.shape)} holds class probabilities and "
                f"must have a floating dtype, got dtype {t.dtype}"
            )
        if ignore_index >= 0:
            raise ValueError(
                f"{where}: ignore_index={ignore_index} is not supported with class-probability targets "
                "(use a negative value, e.g. the default -100)"
            )
        if unbatched:
            x, t = x[None], t[None]  # (C,) -> (1, C)
        loss = _cross_entropy_probabilities(x, t.astype(x.dtype), w, reduction, label_smoothing)
    else:
        _check_index_target(t, x.shape, where)
        _check_class_indices(t, num_classes, ignore_index, where)
        if unbatched:
            x, t = x[None], t[None]  # (C,) -> (1, C), () -> (1,)
        loss = _cross_entropy_indices(x, t, w, ignore_index, reduction, label_smoothing)
    return loss[0] if (reduction == "none" and unbatched) else loss


def _class_axis_weight(weight: jax.Array, ndim: int) -> jax.Array:
    """(C,) -> (C, 1, ..., 1) so it broadcasts against (N, C, d1, ...)."""
    return weight.reshape((weight.shape[0],) + (1,) * (ndim - 2))


def _cross_entropy_indices(x, t, weight, ignore_index, reduction, label_smoothing):
    """torch's class-index cross entropy for batched (N, C, d1, ...) logits."""
    num_classes = x.shape[1]
    safe_t, target_weight, ignored, invalid = _class_index_terms(t, num_classes, weight, ignore_index, x.dtype)
    zero = jnp.zeros((), x.dtype)
    # -log p_y per element, (N, d1, ...)
    neg_log_p = optax.softmax_cross_entropy_with_integer_labels(x, safe_t, axis=1)
    nll = jnp.where(ignored, zero, target_weight * neg_log_p)
    loss = _reduce_class_losses(_nan_where(invalid, nll), target_weight, reduction)
    if label_smoothing > 0:
        # -sum_c w[c] log p_c per element: optax's cross entropy with the weights as "labels".
        class_weight = jnp.ones((num_classes,), x.dtype) if weight is None else weight
        labels = jnp.broadcast_to(_class_axis_weight(class_weight, x.ndim), x.shape)
        smooth = jnp.where(ignored, zero, optax.softmax_cross_entropy(x, labels, axis=1))
        smooth = _reduce_class_losses(_nan_where(invalid, smooth), target_weight, reduction)
        loss = (1 - label_smoothing) * loss + smooth * (label_smoothing / num_classes)
    return loss


def _cross_entropy_probabilities(x, t, weight, reduction, label_smoothing):
    """torch's class-probability cross entropy for batched (N, C, d1, ...) logits."""
    num_classes = x.shape[1]
    if label_smoothing > 0:
        t = t * (1 - label_smoothing) + label_smoothing / num_classes
    if weight is not None:
        t = t * _class_axis_weight(weight, x.ndim)
    # (N, C, d1, ...) -> (N, d1, ...); torch's "mean" divides by that count, N * d1 * ..., not by weights.
    return _reduce(optax.softmax_cross_entropy(x, t, axis=1), reduction)


@jax.custom_jvp
def _binary_cross_entropy_elements(x: jax.Array, y: jax.Array) -> jax.Array:
    """torch's BCE element: (y - 1) max(log1p(-x), -100) - y max(log x, -100)."""
    return (y - 1) * jnp.maximum(jnp.log1p(-x), _BCE_LOG_FLOOR) - y * jnp.maximum(jnp.log(x), _BCE_LOG_FLOOR)


def _binary_cross_entropy_jvp(primals, tangents):
    """torch's BCE backward: d/dx = (x - y) / max((1 - x) x, 1e-12), d/dy = -logit(x)."""
    x, y = primals
    dx, dy = tangents
    out = _binary_cross_entropy_elements(x, y)
    tangent = jnp.zeros_like(out)
    # Symbolic zeros skip the term of an argument that is not differentiated: -logit(0) is inf and
    # inf * 0 would turn an input-only gradient into NaN.
    if not isinstance(dx, SymbolicZero):
        tangent = tangent + (x - y) / jnp.maximum((1 - x) * x, _BCE_BACKWARD_EPSILON) * dx
    if not isinstance(dy, SymbolicZero):
        tangent = tangent + -jnp.log(x / (1 - x)) * dy
    return out, tangent


_binary_cross_entropy_elements.defjvp(_binary_cross_entropy_jvp, symbolic_zeros=True)


def binary_cross_entropy(input: Any, target: Any, *, weight: Any = None, reduction: str = "mean") -> jax.Array:
    """Binary cross entropy of probabilities, logarithms clamped at -100 like torch.

    PyTorch equivalent: ``torch.nn.functional.binary_cross_entropy(input, target, weight=None,
    reduction="mean")``.

    ``input`` (probabilities in ``[0, 1]``) and ``target`` (floating, in ``[0, 1]``) have the same shape
    ``(*)``; ``weight`` broadcasts to it. Element:
    ``-w (y max(log x, -100) + (1 - y) max(log(1 - x), -100))``.
    Gradients are torch's closed forms, not autodiff of the clamp: ``w (x - y) / max(x (1 - x), 1e-12)``
    for the input (finite at 0 and 1) and ``-w logit(x)`` for the target (infinite at 0 and 1, as in
    torch). Values outside ``[0, 1]`` raise when concrete and give NaN under tracing (torch raises).
    Prefer ``binary_cross_entropy_with_logits`` for numerical stability.

    >>> round(float(binary_cross_entropy(jnp.array([0.9, 0.2]), jnp.array([1.0, 0.0]))), 4)
    0.1643
    >>> float(binary_cross_entropy(jnp.array([0.0]), jnp.array([1.0])))  # log 0 clamped at -100
    100.0
    """
    where = "binary_cross_entropy"
    check_choice("reduction", reduction, _REDUCTIONS, where=where)
    x = _floating_array("input", input, where)
    y = _floating_array("target", target, where)
    _check_same_shape(x, y, where)
    for name, value in (("input", x), ("target", y)):
        if _is_concrete(value):
            values = np.asarray(value)
            outside = ~((values >= 0) & (values <= 1))
            if outside.any():
                raise ValueError(
                    f"{where}: all elements of {name} must be in [0, 1], "
                    f"got {float(values[outside].flat[0])} "
                    f"({int(outside.sum())} of {values.size} outside)"
                )
    y = y.astype(x.dtype)
    loss = _binary_cross_entropy_elements(x, y)
    if weight is not None:
        loss = loss * _broadcast_weight("weight", weight, x.shape, x.dtype, where)
    # Under tracing nothing can be raised: NaN marks probabilities outside [0, 1].
    valid = (x >= 0) & (x <= 1) & (y >= 0) & (y <= 1)
    return _reduce(_nan_where(~valid, loss), reduction)


def binary_cross_entropy_with_logits(
    input: Any,
    target: Any,
    *,
    weight: Any = None,
    reduction: str = "mean",
    pos_weight: Any = None,
) -> jax.Array:
    """Sigmoid + binary cross entropy in one numerically stable expression, with ``pos_weight``.

    PyTorch equivalent: ``torch.nn.functional.binary_cross_entropy_with_logits(input, target,
    weight=None, reduction="mean", pos_weight=None)``.

    ``input`` (logits) and ``target`` (floating) have the same shape ``(*)``. Torch's formula:
    ``w ((1 - y) x - (1 + (p - 1) y) log_sigmoid(x))`` with ``p = pos_weight`` (1 if None), stable for
    any logit. ``weight`` and ``pos_weight`` broadcast to the input shape like torch (``pos_weight`` of
    shape ``(C,)`` weights the positives of each class of an ``(N, C)`` input); both are cast to the input
    dtype. ``optax.sigmoid_binary_cross_entropy`` has the same element without ``pos_weight``.

    >>> logits, labels = jnp.array([2.0, -1.0]), jnp.array([1.0, 0.0])
    >>> round(float(binary_cross_entropy_with_logits(logits, labels)), 4)
    0.2201
    >>> round(float(binary_cross_entropy_with_logits(logits, labels, pos_weight=jnp.array([3.0]))), 4)
    0.347
    """
    where = "binary_cross_entropy_with_logits"
    check_choice("reduction", reduction, _REDUCTIONS, where=where)
    x = _floating_array("input", input, where)
    y = _floating_array("target", target, where).astype(x.dtype)
    _check_same_shape(x, y, where)
    log_sigmoid = jax.nn.log_sigmoid(x)
    if pos_weight is not None:
        positive = _broadcast_weight("pos_weight", pos_weight, x.shape, x.dtype, where)
        log_sigmoid = log_sigmoid * ((positive - 1) * y + 1)
    loss = (1 - y) * x - log_sigmoid
    if weight is not None:
        loss = loss * _broadcast_weight("weight", weight, x.shape, x.dtype, where)
    return _reduce(loss, reduction)


def kl_div(
    input: Any,
    target: Any,
    *,
    reduction: str = "mean",
    log_target: bool = False,
) -> jax.Array:
    """Kullback-Leibler divergence with ``input`` = log-probabilities, element-wise like torch.

    PyTorch equivalent: ``torch.nn.functional.kl_div(input, target, reduction="mean",
    log_target=False)``.

    Element: ``xlogy(t, t) - t * input`` (0 where ``t == 0``), or ``exp(t) (t - input)`` with
    ``log_target=True``. ``reduction``: ``"mean"`` averages over ALL elements (torch's default, which
    torch warns about; fnml does not warn), ``"batchmean"`` divides the sum by ``input.shape[0]`` (the
    true KL divergence per sample), ``"sum"``, ``"none"``. ``optax.kl_divergence`` sums over the last
    axis per example instead, so the elements are written here. As in torch, the gradient w.r.t. a
    probability target is NaN where the target is 0 (log 0). Shapes must match (torch broadcasts).

    >>> log_q = jax.nn.log_softmax(jnp.array([[1.0, 2.0, 0.5]]), axis=1)
    >>> round(float(kl_div(log_q, jnp.array([[0.2, 0.5, 0.3]]), reduction="batchmean")), 4)
    0.0847
    """
    where = "kl_div"
    check_choice("reduction", reduction, _KL_REDUCTIONS, where=where)
    check_bool("log_target", log_target, where=where)
    x = _floating_array("input", input, where)
    t = _floating_array("target", target, where).astype(x.dtype)
    _check_same_shape(x, t, where)
    if log_target:
        loss = jnp.exp(t) * (t - x)
    else:
        loss = xlogy(t, t) - t * x
    if reduction == "batchmean":
        return jnp.sum(loss) / x.shape[0] if x.ndim > 0 else jnp.sum(loss)
    return _reduce(loss, reduction)


# ---------------------------------------------------------------------------------------------------
# CamelCase criteria (torch.nn.*Loss modules as frozen dataclasses)
# ---------------------------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    """Readable repr of a criterion option (arrays as short lists)."""
    if isinstance(value, (jax.Array, np.ndarray)):
        array = np.asarray(value)
        if array.size <= 8:
            return repr(array.tolist())
        return f"<array shape={array.shape} dtype={array.dtype}>"
    return repr(value)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class _Criterion:
    """Base of the criteria: options as fields, repr like torch's (non-default options only)."""

    _reductions = _REDUCTIONS

    def __post_init__(self) -> None:
        # Options are checked when the criterion is built, not at its first call inside a train step.
        self._validate()

    def _validate(self) -> None:
        """Check the options eagerly (subclasses extend)."""
        check_choice("reduction", self.reduction, self._reductions, where=type(self).__name__)

    def __repr__(self) -> str:
        shown = [
            f"{field.name}={_describe(getattr(self, field.name))}"
            for field in dataclasses.fields(self)
            if not _is_default(getattr(self, field.name), field.default)
        ]
        return f"{type(self).__name__}({', '.join(shown)})"


def _is_default(value: Any, default: Any) -> bool:
    """Whether an option still has its default (arrays never are)."""
    if isinstance(value, (jax.Array, np.ndarray)):
        return False
    return value == default and type(value) is type(default)


def _as_optional_array(name: str, value: Any, where: str) -> jax.Array | None:
    """Convert an optional weight-like option to a jax array once, at construction."""
    return None if value is None else _real_array(name, value, where)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class MSELoss(_Criterion):
    """Criterion for :func:`mse_loss`. PyTorch equivalent: ``torch.nn.MSELoss(reduction="mean")``.

    >>> criterion = MSELoss()
    >>> float(criterion(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0])))
    2.5
    >>> MSELoss(reduction="sum")
    MSELoss(reduction='sum')
    """

    reduction: str = "mean"

    def __call__(self, input: Any, target: Any) -> jax.Array:
        return mse_loss(input, target, reduction=self.reduction)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class L1Loss(_Criterion):
    """Criterion for :func:`l1_loss`. PyTorch equivalent: ``torch.nn.L1Loss(reduction="mean")``.

    >>> float(L1Loss()(jnp.array([1.0, -2.0]), jnp.zeros(2)))
    1.5
    """

    reduction: str = "mean"

    def __call__(self, input: Any, target: Any) -> jax.Array:
        return l1_loss(input, target, reduction=self.reduction)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class SmoothL1Loss(_Criterion):
    """Criterion for :func:`smooth_l1_loss`.

    PyTorch equivalent: ``torch.nn.SmoothL1Loss(reduction="mean", beta=1.0)``.

    >>> float(SmoothL1Loss(beta=0.5)(jnp.array([0.25, 3.0]), jnp.zeros(2)))  # (0.5 * 0.25**2 / 0.5 + (3 - 0.25)) / 2
    1.40625
    """

    reduction: str = "mean"
    beta: float = 1.0

    def _validate(self) -> None:
        super()._validate()
        check_non_negative("beta", self.beta, where="SmoothL1Loss")

    def __call__(self, input: Any, target: Any) -> jax.Array:
        return smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class HuberLoss(_Criterion):
    """Criterion for :func:`huber_loss`. PyTorch equivalent: ``torch.nn.HuberLoss(reduction, delta=1.0)``.

    >>> float(HuberLoss(delta=2.0)(jnp.array([0.5, 3.0]), jnp.zeros(2)))
    2.0625
    """

    reduction: str = "mean"
    delta: float = 1.0

    def _validate(self) -> None:
        super()._validate()
        check_positive("delta", self.delta, where="HuberLoss")

    def __call__(self, input: Any, target: Any) -> jax.Array:
        return huber_loss(input, target, reduction=self.reduction, delta=self.delta)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class CrossEntropyLoss(_Criterion):
    """Criterion for :func:`cross_entropy` (logits with classes in dim 1, like torch).

    PyTorch equivalent: ``torch.nn.CrossEntropyLoss(weight=None, ignore_index=-100, reduction="mean",
    label_smoothing=0.0)``.

    >>> criterion = CrossEntropyLoss(label_smoothing=0.1)
    >>> criterion
    CrossEntropyLoss(label_smoothing=0.1)
    >>> logits = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])  # (N, C)
    >>> round(float(criterion(logits, jnp.array([0, 2]))), 4)  # labels (N,) int
    0.3455
    """

    weight: Any = None
    ignore_index: int = -100
    reduction: str = "mean"
    label_smoothing: float = 0.0

    def _validate(self) -> None:
        where = "CrossEntropyLoss"
        super()._validate()
        _check_ignore_index(self.ignore_index, where)
        check_in_interval("label_smoothing", self.label_smoothing, 0.0, 1.0, closed_high=True, where=where)
        object.__setattr__(self, "weight", _as_optional_array("weight", self.weight, where))

    def __call__(self, input: Any, target: Any) -> jax.Array:
        return cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class NLLLoss(_Criterion):
    """Criterion for :func:`nll_loss` (log-probabilities with classes in dim 1, like torch).

    PyTorch equivalent: ``torch.nn.NLLLoss(weight=None, ignore_index=-100, reduction="mean")``.

    >>> logits = jnp.array([[1.0, 2.0, 0.5]])
    >>> round(float(NLLLoss()(jax.nn.log_softmax(logits, axis=1), jnp.array([1]))), 4)
    0.4644
    """

    weight: Any = None
    ignore_index: int = -100
    reduction: str = "mean"

    def _validate(self) -> None:
        super()._validate()
        _check_ignore_index(self.ignore_index, "NLLLoss")
        object.__setattr__(self, "weight", _as_optional_array("weight", self.weight, "NLLLoss"))

    def __call__(self, input: Any, target: Any) -> jax.Array:
        return nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class BCELoss(_Criterion):
    """Criterion for :func:`binary_cross_entropy`.

    PyTorch equivalent: ``torch.nn.BCELoss(weight=None, reduction="mean")``.

    >>> round(float(BCELoss()(jax.nn.sigmoid(jnp.array([2.0, -1.0])), jnp.array([1.0, 0.0]))), 4)
    0.2201
    """

    weight: Any = None
    reduction: str = "mean"

    def _validate(self) -> None:
        super()._validate()
        object.__setattr__(self, "weight", _as_optional_array("weight", self.weight, "BCELoss"))

    def __call__(self, input: Any, target: Any) -> jax.Array:
        return binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class BCEWithLogitsLoss(_Criterion):
    """Criterion for :func:`binary_cross_entropy_with_logits`.

    PyTorch equivalent: ``torch.nn.BCEWithLogitsLoss(weight=None, reduction="mean", pos_weight=None)``.

    >>> criterion = BCEWithLogitsLoss(pos_weight=jnp.array([3.0]))
    >>> criterion
    BCEWithLogitsLoss(pos_weight=[3.0])
    >>> round(float(criterion(jnp.array([2.0, -1.0]), jnp.array([1.0, 0.0]))), 4)
    0.347
    """

    weight: Any = None
    reduction: str = "mean"
    pos_weight: Any = None

    def _validate(self) -> None:
        where = "BCEWithLogitsLoss"
        super()._validate()
        object.__setattr__(self, "weight", _as_optional_array("weight", self.weight, where))
        object.__setattr__(self, "pos_weight", _as_optional_array("pos_weight", self.pos_weight, where))

    def __call__(self, input: Any, target: Any) -> jax.Array:
        return binary_cross_entropy_with_logits(
            input, target, weight=self.weight, reduction=self.reduction, pos_weight=self.pos_weight
        )


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class KLDivLoss(_Criterion):
    """Criterion for :func:`kl_div`.

    PyTorch equivalent: ``torch.nn.KLDivLoss(reduction="mean", log_target=False)``.

    >>> log_q = jax.nn.log_softmax(jnp.array([[1.0, 2.0, 0.5]]), axis=1)
    >>> round(float(KLDivLoss(reduction="batchmean")(log_q, jnp.array([[0.2, 0.5, 0.3]]))), 4)
    0.0847
    """

    _reductions = _KL_REDUCTIONS

    reduction: str = "mean"
    log_target: bool = False

    def _validate(self) -> None:
        super()._validate()
        check_bool("log_target", self.log_target, where="KLDivLoss")

    def __call__(self, input: Any, target: Any) -> jax.Array:
        return kl_div(input, target, reduction=self.reduction, log_target=self.log_target)

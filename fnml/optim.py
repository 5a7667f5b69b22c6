"""torch.optim re-expressed as optax: optimizers with PyTorch's names, defaults and exact update math.

Every factory returns an :class:`optax.GradientTransformation`; use it the optax way::

    tx = optim.adam(lr=1e-3)                     # torch.optim.Adam(model.parameters(), lr=1e-3)
    opt_state = tx.init(params)                  # (the optimizer's state, a pytree)
    grads = jax.grad(loss_fn)(params)            # loss.backward()
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)  # optimizer.step()

There is no ``zero_grad``: gradients are return values, never accumulated into the parameters.

Conventions shared by every optimizer here:

- ``params`` may be any pytree (an ``nnx.State``, a dict of arrays, ...), in float32 or float64; the
  optimizer state has the parameters' structure and dtype. The step count is an int32 array in the
  state, so a jitted update compiles once.
- Scalars (bias corrections, step sizes) are computed like torch computes them on the host: in
  float64 when JAX's x64 mode is on, otherwise in float32 with accurate formulas (``1 - b**t`` as
  ``-expm1(t * log(b))``), then rounded to the parameter dtype, as torch rounds its Python floats.
- ``lr`` is a float or a schedule ``count -> lr`` (optax convention: ``count`` = number of updates done
  so far, starting at 0; torch's ``scheduler.step()`` after every ``optimizer.step()`` gives the same
  sequence). A schedule carrying a non-None attribute ``.momentum`` (``count -> value``, e.g. fnml's
  one-cycle schedule) also drives beta1 (Adam family) or momentum (SGD, RMSprop) unless you pass your
  own callable for it: this is how torch's ``OneCycleLR(cycle_momentum=True)`` rewrites the
  optimizer's momentum at every step. ``betas[0]`` / ``momentum`` may also be given as a callable.
- ``maximize`` negates the gradient first and ``weight_decay`` adds ``weight_decay * param`` to it
  (torch's coupled L2), both as stock optax pieces (``optax.scale(-1)``, ``optax.add_decayed_weights``)
  chained before the core update; AdamW / ``decoupled_weight_decay=True`` instead multiply the
  parameter by ``1 - lr * weight_decay`` before the step, as torch does.
- Hyperparameters are checked eagerly like torch's constructors check them (plain ``ValueError``).

Parameter groups (torch's ``[{"params": ..., "lr": ...}, ...]``) are :func:`param_groups`; gradient
clipping (``torch.nn.utils.clip_grad_norm_`` / ``clip_grad_value_``) is :func:`clip_grad_norm` /
:func:`clip_grad_value`, chained before any optimizer with ``optax.chain``.

LR schedules (``torch.optim.lr_scheduler``) live in :mod:`fnml.schedules` and are re-exported here, so
``optim.adam(lr=optim.cosine_annealing_lr(lr=0.1, T_max=10))`` reads like torch.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fnml import _validation as check
from fnml.schedules import (  # re-exported: torch keeps schedulers under torch.optim too
    ChainedScheduler,
    ConstantLR,
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    ExponentialLR,
    LinearLR,
    MultiStepLR,
    OneCycleLR,
    ReduceLROnPlateau,
    ReduceLROnPlateauState,
    SequentialLR,
    StepLR,
    _record_lr,
    _recorded_lr,
    chained_scheduler,
    constant_lr,
    cosine_annealing_lr,
    cosine_annealing_warm_restarts,
    current_lr,
    exponential_lr,
    linear_lr,
    multistep_lr,
    one_cycle_lr,
    reduce_lr_on_plateau,
    sequential_lr,
    step_lr,
)

__all__ = [
    "AdagradState",
    "AdamState",
    "NAdamState",
    "RMSpropState",
    "SGDState",
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "bias_and_norm_labels",
    "clip_grad_norm",
    "clip_grad_value",
    "clip_grads_with_norm",
    "get_total_norm",
    "is_bias_or_norm",
    "label_by",
    "nadam",
    "param_groups",
    "radam",
    "rmsprop",
    "sgd",
    # schedules (fnml.schedules)
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "ExponentialLR",
    "LinearLR",
    "MultiStepLR",
    "OneCycleLR",
    "ReduceLROnPlateau",
    "ReduceLROnPlateauState",
    "SequentialLR",
    "StepLR",
    "chained_scheduler",
    "constant_lr",
    "cosine_annealing_lr",
    "cosine_annealing_warm_restarts",
    "current_lr",
    "exponential_lr",
    "linear_lr",
    "multistep_lr",
    "one_cycle_lr",
    "reduce_lr_on_plateau",
    "sequential_lr",
    "step_lr",
]

ScalarOrSchedule = float | Callable[[jax.Array], Any]


# ----------------------------------------------------------------------------------------------------
# Torch habits: errors that teach the fnml spelling
# ----------------------------------------------------------------------------------------------------

# Names users bring from optax / Keras / papers -> torch.optim's (fnml's) keyword.
_TORCH_KEYWORDS = {
    "learning_rate": "lr",
    "learningrate": "lr",
    "beta1": "betas",
    "beta_1": "betas",
    "b1": "betas",
    "beta2": "betas",
    "beta_2": "betas",
    "b2": "betas",
    "decay": "weight_decay",
    "wd": "weight_decay",
    "weight_decay_rate": "weight_decay",
    "l2": "weight_decay",
    "epsilon": "eps",
    "mu": "momentum",
    "initial_accumulator": "initial_accumulator_value",
}
# Per optimizer: optax's rmsprop calls alpha "decay".
_TORCH_KEYWORDS_FOR = {"rmsprop": {"decay": "alpha"}}


# Keywords under which torch code (or a guess) hands the model's parameters to an optimizer.
_PARAMETER_KEYWORDS = ("params", "parameters", "named_parameters", "param_groups", "model", "module")


def _looks_like_parameters(value: Any) -> bool:
    """What torch's ``Optimizer(params, ...)`` takes: a module, a parameter tree, a generator, tensors."""
    from flax import nnx

    if isinstance(value, (nnx.Module, nnx.State, dict, list, tuple)) or inspect.isgenerator(value):
        return True
    # An array of rank >= 1 is a parameter, not a learning rate (a 0-d one is left to lr's own check).
    if getattr(value, "ndim", 0) and hasattr(value, "shape"):
        return True
    # torch tensors / modules without importing torch
    return hasattr(value, "requires_grad") or hasattr(value, "named_parameters") or hasattr(value, "__next__")


def _no_parameters_error(name: str, got: str) -> TypeError:
    return TypeError(
        f"optim.{name}: fnml optimizers take no parameters (got {got}, as torch.optim's "
        f"Optimizer(model.parameters(), ...) would); the optimizer state is "
        f"built from the model instead: state = train.TrainState.create(model, optim.{name}(lr=...))"
    )


def _torch_habits(factory: Callable[..., optax.GradientTransformation]) -> Callable[..., optax.GradientTransformation]:
    """Wrap an optimizer factory: parameters as first argument and unknown keywords get teaching errors."""
    name = factory.__name__
    signature = inspect.signature(factory)
    accepted = list(signature.parameters)
    # The on/off options (nesterov, amsgrad, maximize, centered...): declared by their bool default.
    flags = [key for key, parameter in signature.parameters.items() if isinstance(parameter.default, bool)]

    @functools.wraps(factory)
    def checked(*args: Any, **kwargs: Any) -> optax.GradientTransformation:
        # Messages name the argument and its type, never its values (a parameter tree would print every array).
        if args and _looks_like_parameters(args[0]):
            raise _no_parameters_error(name, f"{check.describe(args[0])} as the first argument")
        for keyword in kwargs:
            if keyword in accepted:
                continue
            if keyword in _PARAMETER_KEYWORDS:
                raise _no_parameters_error(name, f"{keyword}={check.describe(kwargs[keyword])}")
            guess = _TORCH_KEYWORDS_FOR.get(name, {}).get(keyword, _TORCH_KEYWORDS.get(keyword))
            if guess not in accepted:
                close = difflib.get_close_matches(keyword, accepted, n=1)
                guess = close[0] if close else None
            hint = f"; did you mean {guess}=" if guess else ""
            if guess == "betas":
                hint += " (one pair: betas=(beta1, beta2))"
            raise TypeError(
                f"optim.{name}: unknown keyword {keyword}={check.describe(kwargs[keyword])}{hint}? fnml uses "
                f"torch.optim's names: {', '.join(accepted)}"
            )
        for flag in flags:
            # torch takes any truthy value here; fnml refuses 1 / "yes" / an array, as for the layers' flags.
            if flag in kwargs:
                check.check_bool(flag, kwargs[flag], where=f"optim.{name}")
        tx = factory(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        _record_lr(tx, bound.arguments["lr"])  # schedules.current_lr(state) reads it back from state.tx
        return tx

    return checked


# ----------------------------------------------------------------------------------------------------
# Private helpers
# ----------------------------------------------------------------------------------------------------


def _scalar_dtype() -> jnp.dtype:
    """float64 when x64 is on (torch's host doubles), else float32."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def _at(value: ScalarOrSchedule, count: jax.Array) -> jax.Array:
    """A float or a schedule evaluated at ``count``, as a scalar in the scalar dtype."""
    if callable(value):
        return jnp.asarray(value(count)).astype(_scalar_dtype())
    return jnp.asarray(value, _scalar_dtype())


def _step_number(count: jax.Array) -> jax.Array:
    """torch's ``state['step']`` after its increment: the 1-based step, as a float scalar."""
    return (count + 1).astype(_scalar_dtype())


def _one_minus_pow(base: jax.Array, exponent: jax.Array) -> jax.Array:
    """``1 - base**exponent`` without float32 cancellation (relative error ~1e-7, not 1.3e-5)."""
    return -jnp.expm1(exponent * jnp.log(base))


def _as(scalar: jax.Array, like: jax.Array) -> jax.Array:
    """Round a host-precision scalar to a leaf's dtype (torch rounds its Python floats the same way)."""
    return scalar.astype(like.dtype)


def _lerp(start: jax.Array, end: jax.Array, weight: jax.Array) -> jax.Array:
    """torch.lerp's two-branch formula (``start + w*(end-start)`` for ``|w| < 0.5``)."""
    w = _as(weight, start)
    one_minus_w = _as(1 - weight, start)
    return jnp.where(jnp.abs(weight) < 0.5, start + w * (end - start), end - (end - start) * one_minus_w)


def _increment(count: jax.Array) -> jax.Array:
    """count + 1, saturating (optax's safe increment)."""
    return optax.safe_increment(count)


def _zero_count() -> jax.Array:
    """A fresh step counter: an int32 array, so jit sees the same type at every step."""
    return jnp.zeros([], jnp.int32)


def _params_dtype(params: Any) -> jnp.dtype:
    """The common dtype of a pytree's leaves (float32 for an empty tree)."""
    leaves = jax.tree.leaves(params)
    return jnp.result_type(*leaves) if leaves else jnp.dtype(jnp.float32)


def _require_params(params: Any, where: str) -> None:
    """Decoupled weight decay reads the parameters: fail clearly when update() got none."""
    if params is None:
        raise ValueError(f"{where}: update(grads, state, params) needs params for decoupled weight decay")


def _check_lr(lr: Any, where: str) -> ScalarOrSchedule:
    """lr is a number >= 0 (torch: 'Invalid learning rate') or a schedule callable."""
    if callable(lr):
        return lr
    return check.check_non_negative("lr", lr, where=where)


def _check_hyper(name: str, value: Any, where: str) -> ScalarOrSchedule:
    """A hyperparameter that must be >= 0, or a callable ``count -> value``."""
    if callable(value):
        return value
    return check.check_non_negative(name, value, where=where)


def _check_betas(betas: Any, where: str) -> tuple[ScalarOrSchedule, ScalarOrSchedule]:
    """betas is a pair, each in [0, 1) (torch: 'Invalid beta parameter at index i') or a callable."""
    if not isinstance(betas, (tuple, list)):
        raise TypeError(f"{where}: betas must be a pair (beta1, beta2), got {check.describe(betas)}")
    if len(betas) != 2:
        raise ValueError(f"{where}: betas must be a pair (beta1, beta2), got betas={check.describe(betas)}")
    for index, beta in enumerate(betas):
        if not callable(beta):
            check.check_in_interval(f"betas[{index}]", beta, 0.0, 1.0, where=where)
    return betas[0], betas[1]


def _momentum_source(value: ScalarOrSchedule, lr: ScalarOrSchedule) -> ScalarOrSchedule:
    """The momentum / beta1 to use: the user's callable, else ``lr.momentum`` (OneCycleLR), else value."""
    if callable(value):
        return value
    from_schedule = getattr(lr, "momentum", None) if callable(lr) else None
    return from_schedule if from_schedule is not None else value


def _refuse_cycled_momentum(lr: ScalarOrSchedule, where: str) -> None:
    """torch's OneCycleLR refuses to cycle momentum on an optimizer that has none; so do we."""
    if callable(lr) and getattr(lr, "momentum", None) is not None:
        raise ValueError(
            f"{where}: the lr schedule cycles momentum (lr.momentum is set) but {where} has no momentum or "
            "beta1; build the schedule with cycle_momentum=False"
        )


def _prepare(maximize: bool, weight_decay: float) -> list[optax.GradientTransformation]:
    """torch's first lines of every step: ``g = -g`` if maximize, then ``g += weight_decay * p``."""
    parts = []
    if maximize:
        parts.append(optax.scale(-1.0))
    if weight_decay != 0:
        parts.append(optax.add_decayed_weights(weight_decay))
    return parts


def _decoupled(update: jax.Array, param: jax.Array, factor: jax.Array) -> jax.Array:
    """Update that takes ``param`` to ``param * factor + update`` (torch's ``p.mul_(1 - lr*wd)`` first)."""
    # Returned as new - param: exact (Sterbenz) whenever new and param are within a factor 2.
    return (param * _as(factor, param) + update) - param


# ----------------------------------------------------------------------------------------------------
# SGD
# ----------------------------------------------------------------------------------------------------


class SGDState(NamedTuple):
    """State of :func:`sgd` with dampening or a scheduled momentum (torch ``state['momentum_buffer']``).

    PyTorch equivalent: ``optimizer.state[p]`` of ``torch.optim.SGD`` (``momentum_buffer``).
    """

    count: jax.Array  # (), int32: updates done so far
    momentum_buffer: optax.Updates  # params' structure, shapes and dtypes


def _scale_by_sgd_momentum(
    momentum: ScalarOrSchedule, dampening: float, nesterov: bool
) -> optax.GradientTransformation:
    """torch SGD's buffer: ``buf = g`` on step 1, then ``buf = mu*buf + (1-dampening)*g``; nesterov adds."""

    def init_fn(params):
        return SGDState(_zero_count(), optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        mu = _at(momentum, state.count)
        first_step = state.count == 0
        keep = jnp.asarray(1 - dampening, _scalar_dtype())

        def new_buffer(g, buf):
            # torch: buf.mul_(momentum).add_(g, alpha=1 - dampening); the first step clones g.
            return jnp.where(first_step, g, buf * _as(mu, g) + _as(keep, g) * g)

        buffer = jax.tree.map(new_buffer, updates, state.momentum_buffer)
        if nesterov:
            out = jax.tree.map(lambda g, buf: g + _as(mu, g) * buf, updates, buffer)
        else:
            out = buffer
        return out, SGDState(_increment(state.count), buffer)

    return optax.GradientTransformation(init_fn, update_fn)


@_torch_habits
def sgd(
    lr: ScalarOrSchedule = 1e-3,
    *,
    momentum: ScalarOrSchedule = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """Stochastic gradient descent with torch's momentum, dampening, nesterov and L2 weight decay.

    PyTorch equivalent: ``torch.optim.SGD(params, lr, momentum, dampening, weight_decay, nesterov,
    maximize=...)``.

    Update (torch's formula): ``g = -g if maximize``; ``g = g + weight_decay * p``; with momentum
    ``buf = g`` on the first step and ``buf = momentum * buf + (1 - dampening) * g`` after;
    ``d = g + momentum * buf`` if nesterov else ``buf``; ``p = p - lr * d``.

    Built from stock optax (``add_decayed_weights``, ``trace``, ``scale_by_learning_rate``): optax's
    trace starts from zeros, which equals torch's ``buf = g`` start only without dampening, so
    dampening != 0 or a scheduled momentum use a small custom trace (:class:`SGDState`).

    With an ``lr`` schedule carrying ``.momentum`` (one-cycle), that schedule replaces a float
    ``momentum`` at every step, even 0, exactly as torch's ``OneCycleLR(cycle_momentum=True)`` rewrites
    ``group["momentum"]``; pass ``cycle_momentum=False`` to the schedule to keep your own.

    >>> from fnml import optim
    >>> params, grads = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.5, -0.5])}
    >>> tx = optim.sgd(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    >>> updates, state = tx.update(grads, tx.init(params), params)
    >>> [round(u, 6) for u in updates["w"].tolist()]  # -lr * (1 + momentum) * (g + wd * p)
    [-0.095019, 0.095038]
    """
    where = "sgd"
    lr = _check_lr(lr, where)
    momentum = _check_hyper("momentum", momentum, where)
    check.check_number("dampening", dampening, where=where)
    check.check_non_negative("weight_decay", weight_decay, where=where)
    if nesterov and ((not callable(momentum) and momentum <= 0) or dampening != 0):
        raise ValueError(
            f"{where}: nesterov=True requires momentum > 0 and dampening=0 (as torch.optim.SGD), "
            f"got momentum={check.describe(momentum)}, dampening={dampening!r}"
        )
    parts = _prepare(maximize, weight_decay)
    momentum = _momentum_source(momentum, lr)
    if callable(momentum) or (momentum != 0 and dampening != 0):
        parts.append(_scale_by_sgd_momentum(momentum, dampening, nesterov))
    elif momentum != 0:
        parts.append(optax.trace(decay=momentum, nesterov=nesterov))
    parts.append(optax.scale_by_learning_rate(lr))
    return optax.chain(*parts)


# ----------------------------------------------------------------------------------------------------
# Adam family
# ----------------------------------------------------------------------------------------------------


class AdamState(NamedTuple):
    """State of :func:`adam`, :func:`adamw`, :func:`radam` and scheduled-beta1 :func:`adamax`.

    PyTorch equivalent: ``optimizer.state[p]`` of ``torch.optim.Adam`` / ``AdamW`` (``step``, ``exp_avg``,
    ``exp_avg_sq``, ``max_exp_avg_sq``).
    """

    count: jax.Array  # (), int32: updates done so far (torch's state['step'] before this update)
    exp_avg: optax.Updates  # params' structure and dtypes: first moment m
    exp_avg_sq: optax.Updates  # params' structure and dtypes: second moment v (adamax: infinity norm u)
    max_exp_avg_sq: optax.Updates  # params' structure and dtypes with amsgrad=True; None otherwise


def _adam_init(amsgrad: bool = False) -> Callable[[Any], AdamState]:
    """init_fn for :class:`AdamState`: zero moments, step 0."""

    def init_fn(params):
        zeros = optax.tree.zeros_like
        return AdamState(_zero_count(), zeros(params), zeros(params), zeros(params) if amsgrad else None)

    return init_fn


def _scale_by_torch_adam(
    lr: ScalarOrSchedule,
    beta1: ScalarOrSchedule,
    beta2: ScalarOrSchedule,
    eps: float,
    *,
    amsgrad: bool,
    decoupled_weight_decay: float,
) -> optax.GradientTransformation:
    """torch's ``_single_tensor_adam`` (non-capturable): the full step including ``-lr``."""

    def update_fn(updates, state, params=None):
        if decoupled_weight_decay:
            _require_params(params, "adamw")
        count = state.count
        t = _step_number(count)
        lr_t, b1, b2 = _at(lr, count), _at(beta1, count), _at(beta2, count)
        # torch: bias_correction = 1 - beta**step in Python doubles (note: with the *current* beta1).
        bias_correction1 = _one_minus_pow(b1, t)
        bias_correction2_sqrt = jnp.sqrt(_one_minus_pow(b2, t))
        step_size = lr_t / bias_correction1
        exp_avg = jax.tree.map(lambda g, m: _lerp(m, g, 1 - b1), updates, state.exp_avg)
        exp_avg_sq = jax.tree.map(lambda g, v: v * _as(b2, v) + _as(1 - b2, g) * g * g, updates, state.exp_avg_sq)
        if amsgrad:
            # torch: max over the raw v, later divided by the *current* sqrt(bias_correction2).
            max_exp_avg_sq = jax.tree.map(jnp.maximum, state.max_exp_avg_sq, exp_avg_sq)
            second = max_exp_avg_sq
        else:
            max_exp_avg_sq = None
            second = exp_avg_sq

        def step(m, v):
            denom = jnp.sqrt(v) / _as(bias_correction2_sqrt, v) + _as(jnp.asarray(eps), v)
            return _as(-step_size, m) * m / denom  # torch: p.addcdiv_(m, denom, value=-step_size)

        out = jax.tree.map(step, exp_avg, second)
        if decoupled_weight_decay:
            factor = 1 - lr_t * decoupled_weight_decay
            out = jax.tree.map(lambda u, p: _decoupled(u, p, factor), out, params)
        return out, AdamState(_increment(count), exp_avg, exp_avg_sq, max_exp_avg_sq)

    return optax.GradientTransformation(_adam_init(amsgrad), update_fn)


@_torch_habits
def adam(
    lr: ScalarOrSchedule = 1e-3,
    *,
    betas: tuple[ScalarOrSchedule, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """Adam with torch's coupled L2 weight decay, accurate bias correction and torch's amsgrad.

    PyTorch equivalent: ``torch.optim.Adam(params, lr, betas, eps, weight_decay, amsgrad, maximize=...)``.

    Update (torch's formula, step t from 1): ``g = g + weight_decay * p``;
    ``m = lerp(m, g, 1 - b1)``; ``v = b2 * v + (1 - b2) * g**2``; with amsgrad ``v_max = max(v_max, v)``
    (of the raw v); ``p = p - lr / (1 - b1**t) * m / (sqrt(v or v_max) / sqrt(1 - b2**t) + eps)``.

    Why custom (:class:`AdamState`): ``optax.adam`` computes ``1 - b2**t`` in float32 (relative error
    1.3e-5 for b2=0.999; torch uses doubles), and its amsgrad takes the max of the bias-corrected v.
    ``optax.adamw`` is not torch's ``weight_decay`` here: torch's Adam decay is coupled L2, added to
    the gradient (``optax.add_decayed_weights`` before the update, as done here).

    >>> from fnml import optim
    >>> params, grads = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.5, -0.5])}
    >>> tx = optim.adam(lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4, amsgrad=True)
    >>> updates, state = tx.update(grads, tx.init(params), params)
    >>> [round(u, 6) for u in updates["w"].tolist()]  # first step: -lr * sign(g)
    [-0.001, 0.001]
    """
    where = "adam"
    lr = _check_lr(lr, where)
    beta1, beta2 = _check_betas(betas, where)
    check.check_non_negative("eps", eps, where=where)
    check.check_non_negative("weight_decay", weight_decay, where=where)
    core = _scale_by_torch_adam(
        lr, _momentum_source(beta1, lr), beta2, eps, amsgrad=amsgrad, decoupled_weight_decay=0.0
    )
    return optax.chain(*_prepare(maximize, weight_decay), core)


@_torch_habits
def adamw(
    lr: ScalarOrSchedule = 1e-3,
    *,
    betas: tuple[ScalarOrSchedule, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """AdamW: Adam with decoupled weight decay, torch's default ``weight_decay=1e-2``.

    PyTorch equivalent: ``torch.optim.AdamW(params, lr, betas, eps, weight_decay=0.01, amsgrad,
    maximize=...)``.

    Update (torch's formula): ``p = p * (1 - lr * weight_decay)`` first, then the :func:`adam` step
    (without L2 in the gradient). ``lr`` in the decay is the scheduled lr of this step.

    Differences from ``optax.adamw``: optax's default weight_decay is 1e-4 (torch 1e-2) and its bias
    correction is float32; this one matches torch (see :func:`adam`).

    >>> from fnml import optim
    >>> params, grads = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.5, -0.5])}
    >>> tx = optim.adamw(lr=1e-3, weight_decay=0.05)
    >>> updates, state = tx.update(grads, tx.init(params), params)
    >>> [round(u, 6) for u in updates["w"].tolist()]  # -lr * wd * p - lr * sign(g)
    [-0.00105, 0.0011]
    """
    where = "adamw"
    lr = _check_lr(lr, where)
    beta1, beta2 = _check_betas(betas, where)
    check.check_non_negative("eps", eps, where=where)
    check.check_non_negative("weight_decay", weight_decay, where=where)
    core = _scale_by_torch_adam(
        lr, _momentum_source(beta1, lr), beta2, eps, amsgrad=amsgrad, decoupled_weight_decay=weight_decay
    )
    return optax.chain(*_prepare(maximize, 0.0), core)


def _scale_by_torch_adamax(
    lr: ScalarOrSchedule, beta1: ScalarOrSchedule, beta2: float, eps: float
) -> optax.GradientTransformation:
    """torch's ``_single_tensor_adamax`` with a beta1 that may change every step."""

    def update_fn(updates, state, params=None):
        del params
        count = state.count
        lr_t, b1, b2 = _at(lr, count), _at(beta1, count), _at(beta2, count)
        clr = lr_t / _one_minus_pow(b1, _step_number(count))
        exp_avg = jax.tree.map(lambda g, m: _lerp(m, g, 1 - b1), updates, state.exp_avg)
        # torch: exp_inf = max(exp_inf * b2, |g| + eps)
        exp_inf = jax.tree.map(
            lambda g, u: jnp.maximum(u * _as(b2, u), jnp.abs(g) + _as(jnp.asarray(eps), g)),
            updates,
            state.exp_avg_sq,
        )
        out = jax.tree.map(lambda m, u: _as(-clr, m) * m / u, exp_avg, exp_inf)
        return out, AdamState(_increment(count), exp_avg, exp_inf, None)

    return optax.GradientTransformation(_adam_init(), update_fn)


@_torch_habits
def adamax(
    lr: ScalarOrSchedule = 2e-3,
    *,
    betas: tuple[ScalarOrSchedule, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """Adamax (Adam with the infinity norm), torch's defaults.

    PyTorch equivalent: ``torch.optim.Adamax(params, lr=2e-3, betas, eps, weight_decay, maximize=...)``.

    Update (torch's formula): ``g = g + weight_decay * p``; ``m = lerp(m, g, 1 - b1)``;
    ``u = max(b2 * u, |g| + eps)``; ``p = p - lr / (1 - b1**t) * m / u``.

    Stock ``optax.scale_by_adamax`` has exactly this math and is used for a constant beta1; when beta1
    is scheduled (a callable, or ``lr.momentum``) torch uses the current beta1 in ``1 - b1**t``, which
    a small custom transform (:class:`AdamState`) reproduces.

    >>> from fnml import optim
    >>> params, grads = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.5, -0.5])}
    >>> tx = optim.adamax(lr=2e-3)
    >>> updates, state = tx.update(grads, tx.init(params), params)
    >>> [round(u, 6) for u in updates["w"].tolist()]  # first step: -lr * sign(g)
    [-0.002, 0.002]
    """
    where = "adamax"
    lr = _check_lr(lr, where)
    beta1, beta2 = _check_betas(betas, where)
    check.check_non_negative("eps", eps, where=where)
    check.check_non_negative("weight_decay", weight_decay, where=where)
    beta1 = _momentum_source(beta1, lr)
    if callable(beta1) or callable(beta2):
        core = _scale_by_torch_adamax(lr, beta1, beta2, eps)
    else:
        core = optax.chain(optax.scale_by_adamax(b1=beta1, b2=beta2, eps=eps), optax.scale_by_learning_rate(lr))
    return optax.chain(*_prepare(maximize, weight_decay), core)


class NAdamState(NamedTuple):
    """State of :func:`nadam` (torch's ``state['mu_product']`` included).

    PyTorch equivalent: ``optimizer.state[p]`` of ``torch.optim.NAdam`` (``step``, ``mu_product``,
    ``exp_avg``, ``exp_avg_sq``).
    """

    count: jax.Array  # (), int32: updates done so far
    mu_product: jax.Array  # (), params' dtype: product of mu_1 .. mu_t
    exp_avg: optax.Updates  # params' structure and dtypes: first moment m
    exp_avg_sq: optax.Updates  # params' structure and dtypes: second moment v


def _scale_by_torch_nadam(
    lr: ScalarOrSchedule,
    beta1: ScalarOrSchedule,
    beta2: ScalarOrSchedule,
    eps: float,
    momentum_decay: float,
    decoupled_weight_decay: float,
) -> optax.GradientTransformation:
    """torch's ``_single_tensor_nadam`` (non-capturable): the full step including ``-lr``."""

    def init_fn(params):
        zeros = optax.tree.zeros_like
        mu_product = jnp.ones([], _params_dtype(params))
        return NAdamState(_zero_count(), mu_product, zeros(params), zeros(params))

    def update_fn(updates, state, params=None):
        if decoupled_weight_decay:
            _require_params(params, "nadam")
        count = state.count
        t = _step_number(count)
        lr_t, b1, b2 = _at(lr, count), _at(beta1, count), _at(beta2, count)
        bias_correction2 = _one_minus_pow(b2, t)
        log_096 = math.log(0.96)
        # torch: mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay)), and the same at t + 1.
        mu = b1 * (1.0 - 0.5 * jnp.exp(t * momentum_decay * log_096))
        mu_next = b1 * (1.0 - 0.5 * jnp.exp((t + 1) * momentum_decay * log_096))
        # torch keeps mu_product as a tensor (its dtype here: the params'); the rest in host precision.
        mu_product = state.mu_product * mu.astype(state.mu_product.dtype)
        mu_product_host = mu_product.astype(_scalar_dtype())
        grad_coef = -lr_t * (1.0 - mu) / (1.0 - mu_product_host)
        avg_coef = (-lr_t * mu_next) / (1.0 - mu_product_host * mu_next)
        exp_avg = jax.tree.map(lambda g, m: _lerp(m, g, 1 - b1), updates, state.exp_avg)
        exp_avg_sq = jax.tree.map(lambda g, v: v * _as(b2, v) + _as(1 - b2, g) * g * g, updates, state.exp_avg_sq)

        def step(g, m, v):
            denom = jnp.sqrt(v / _as(bias_correction2, v)) + _as(jnp.asarray(eps), v)
            # torch: two addcdiv_ calls, first the gradient term, then the momentum term.
            return _as(grad_coef, g) * g / denom + _as(avg_coef, m) * m / denom

        out = jax.tree.map(step, updates, exp_avg, exp_avg_sq)
        if decoupled_weight_decay:
            factor = 1 - lr_t * decoupled_weight_decay
            out = jax.tree.map(lambda u, p: _decoupled(u, p, factor), out, params)
        return out, NAdamState(_increment(count), mu_product, exp_avg, exp_avg_sq)

    return optax.GradientTransformation(init_fn, update_fn)


@_torch_habits
def nadam(
    lr: ScalarOrSchedule = 2e-3,
    *,
    betas: tuple[ScalarOrSchedule, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """NAdam with torch's momentum-decay schedule ``mu_t`` and its running product.

    PyTorch equivalent: ``torch.optim.NAdam(params, lr=2e-3, betas, eps, weight_decay,
    momentum_decay=4e-3, decoupled_weight_decay, maximize=...)``.

    Update (torch's formula): ``mu_t = b1 * (1 - 0.5 * 0.96**(t * momentum_decay))``,
    ``P_t = mu_1 * ... * mu_t``; m, v as in Adam; ``denom = sqrt(v / (1 - b2**t)) + eps``;
    ``p = p - lr * (1 - mu_t) / (1 - P_t) * g / denom - lr * mu_{t+1} / (1 - P_t * mu_{t+1}) * m / denom``.
    Weight decay is L2 on the gradient, or ``p *= 1 - lr * weight_decay`` with decoupled_weight_decay.

    Why custom (:class:`NAdamState`): ``optax.nadam`` uses a constant beta1 (no ``mu_t`` schedule),
    0.16 off torch after 100 steps.

    >>> from fnml import optim
    >>> params, grads = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.5, -0.5])}
    >>> tx = optim.nadam(lr=2e-3, momentum_decay=4e-3)
    >>> updates, state = tx.update(grads, tx.init(params), params)
    >>> [round(u, 6) for u in updates["w"].tolist()]
    [-0.002113, 0.002113]
    """
    where = "nadam"
    lr = _check_lr(lr, where)
    beta1, beta2 = _check_betas(betas, where)
    check.check_non_negative("eps", eps, where=where)
    check.check_non_negative("weight_decay", weight_decay, where=where)
    check.check_non_negative("momentum_decay", momentum_decay, where=where)
    decoupled = weight_decay if decoupled_weight_decay else 0.0
    core = _scale_by_torch_nadam(lr, _momentum_source(beta1, lr), beta2, eps, momentum_decay, decoupled)
    return optax.chain(*_prepare(maximize, 0.0 if decoupled_weight_decay else weight_decay), core)


def _scale_by_torch_radam(
    lr: ScalarOrSchedule,
    beta1: ScalarOrSchedule,
    beta2: ScalarOrSchedule,
    eps: float,
    decoupled_weight_decay: float,
) -> optax.GradientTransformation:
    """torch's ``_single_tensor_radam`` (non-capturable): the full step including ``-lr``."""

    def update_fn(updates, state, params=None):
        if decoupled_weight_decay:
            _require_params(params, "radam")
        count = state.count
        t = _step_number(count)
        lr_t, b1, b2 = _at(lr, count), _at(beta1, count), _at(beta2, count)
        bias_correction1 = _one_minus_pow(b1, t)
        bias_correction2 = _one_minus_pow(b2, t)
        beta2_pow_t = 1 - bias_correction2
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * beta2_pow_t / bias_correction2
        rectify = rho_t > 5.0  # torch: strictly greater than 5 (optax: >= 5)
        safe_rho_t = jnp.where(rectify, rho_t, 6.0)  # keep the unused branch finite
        rect = jnp.sqrt((safe_rho_t - 4) * (safe_rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * safe_rho_t))
        bias_correction2_sqrt = jnp.sqrt(bias_correction2)
        exp_avg = jax.tree.map(lambda g, m: _lerp(m, g, 1 - b1), updates, state.exp_avg)
        exp_avg_sq = jax.tree.map(lambda g, v: v * _as(b2, v) + _as(1 - b2, g) * g * g, updates, state.exp_avg_sq)

        def step(m, v):
            corrected = m / _as(bias_correction1, m) * _as(lr_t, m)
            # torch: sqrt(bias_correction2) / (sqrt(v) + eps), eps outside the bias correction
            adaptive = _as(bias_correction2_sqrt, v) / (jnp.sqrt(v) + _as(jnp.asarray(eps), v))
            return -jnp.where(rectify, corrected * adaptive * _as(rect, m), corrected)

        out = jax.tree.map(step, exp_avg, exp_avg_sq)
        if decoupled_weight_decay:
            factor = 1 - lr_t * decoupled_weight_decay
            out = jax.tree.map(lambda u, p: _decoupled(u, p, factor), out, params)
        return out, AdamState(_increment(count), exp_avg, exp_avg_sq, None)

    return optax.GradientTransformation(_adam_init(), update_fn)


@_torch_habits
def radam(
    lr: ScalarOrSchedule = 1e-3,
    *,
    betas: tuple[ScalarOrSchedule, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """RAdam (rectified Adam) with torch's rectification rule and eps placement.

    PyTorch equivalent: ``torch.optim.RAdam(params, lr, betas, eps, weight_decay,
    decoupled_weight_decay, maximize=...)``.

    Update (torch's formula): m, v as in Adam; ``rho_inf = 2 / (1 - b2) - 1``,
    ``rho_t = rho_inf - 2 t b2**t / (1 - b2**t)``; if ``rho_t > 5``:
    ``p = p - lr * m / (1 - b1**t) * sqrt(1 - b2**t) / (sqrt(v) + eps) * r_t`` with
    ``r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))``, else
    ``p = p - lr * m / (1 - b1**t)``.

    Why custom (:class:`AdamState`): ``optax.radam`` adds eps to the bias-corrected ``sqrt(v_hat)`` and
    rectifies when ``rho_t >= 5``.

    >>> from fnml import optim
    >>> params, grads = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.5, -0.5])}
    >>> tx = optim.radam(lr=1e-3, weight_decay=1e-2, decoupled_weight_decay=True)
    >>> updates, state = tx.update(grads, tx.init(params), params)
    >>> [round(u, 6) for u in updates["w"].tolist()]  # early steps: -lr * wd * p - lr * g
    [-0.00051, 0.00052]
    """
    where = "radam"
    lr = _check_lr(lr, where)
    beta1, beta2 = _check_betas(betas, where)
    check.check_non_negative("eps", eps, where=where)
    check.check_non_negative("weight_decay", weight_decay, where=where)
    decoupled = weight_decay if decoupled_weight_decay else 0.0
    core = _scale_by_torch_radam(lr, _momentum_source(beta1, lr), beta2, eps, decoupled)
    return optax.chain(*_prepare(maximize, 0.0 if decoupled_weight_decay else weight_decay), core)


# ----------------------------------------------------------------------------------------------------
# RMSprop, Adagrad, Adadelta
# ----------------------------------------------------------------------------------------------------


class RMSpropState(NamedTuple):
    """State of :func:`rmsprop` (torch's square_avg, grad_avg, momentum_buffer).

    PyTorch equivalent: ``optimizer.state[p]`` of ``torch.optim.RMSprop`` (``square_avg``,
    ``momentum_buffer``, ``grad_avg``).
    """

    count: jax.Array  # (), int32: updates done so far
    square_avg: optax.Updates  # params' structure and dtypes: running mean of g**2
    grad_avg: optax.Updates  # params' structure and dtypes with centered=True; None otherwise
    momentum_buffer: optax.Updates  # params' structure and dtypes with momentum; None otherwise


def _scale_by_torch_rmsprop(
    lr: ScalarOrSchedule, alpha: float, eps: float, momentum: ScalarOrSchedule, centered: bool
) -> optax.GradientTransformation:
    """torch's ``_single_tensor_rmsprop``: the full step including ``-lr`` (applied after momentum)."""
    use_momentum = callable(momentum) or momentum > 0

    def init_fn(params):
        zeros = optax.tree.zeros_like
        return RMSpropState(
            _zero_count(),
            zeros(params),
            zeros(params) if centered else None,
            zeros(params) if use_momentum else None,
        )

    def update_fn(updates, state, params=None):
        del params
        count = state.count
        lr_t, a = _at(lr, count), _at(alpha, count)
        square_avg = jax.tree.map(lambda g, s: s * _as(a, s) + _as(1 - a, g) * g * g, updates, state.square_avg)
        if centered:
            grad_avg = jax.tree.map(lambda g, ga: _lerp(ga, g, 1 - a), updates, state.grad_avg)
            # torch: square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
            avg = jax.tree.map(lambda s, ga: jnp.sqrt(s - ga * ga), square_avg, grad_avg)
        else:
            grad_avg = None
            avg = jax.tree.map(jnp.sqrt, square_avg)
        avg = jax.tree.map(lambda x: x + _as(jnp.asarray(eps), x), avg)
        if use_momentum:
            mu = _at(momentum, count)
            buffer = jax.tree.map(lambda g, d, b: b * _as(mu, b) + g / d, updates, avg, state.momentum_buffer)
            out = jax.tree.map(lambda b: _as(-lr_t, b) * b, buffer)
        else:
            buffer = None
            out = jax.tree.map(lambda g, d: _as(-lr_t, g) * g / d, updates, avg)
        return out, RMSpropState(_increment(count), square_avg, grad_avg, buffer)

    return optax.GradientTransformation(init_fn, update_fn)


@_torch_habits
def rmsprop(
    lr: ScalarOrSchedule = 1e-2,
    *,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: ScalarOrSchedule = 0.0,
    centered: bool = False,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """RMSprop with torch's defaults (alpha=0.99, eps outside the sqrt, lr applied after momentum).

    PyTorch equivalent: ``torch.optim.RMSprop(params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay,
    momentum, centered, maximize=...)``.

    Update (torch's formula): ``s = alpha * s + (1 - alpha) * g**2``; centered:
    ``ga = lerp(ga, g, 1 - alpha)``, ``avg = sqrt(s - ga**2) + eps``, else ``avg = sqrt(s) + eps``;
    with momentum ``buf = momentum * buf + g / avg``, ``p = p - lr * buf``; else ``p = p - lr * g / avg``.

    Why custom (:class:`RMSpropState`): ``optax.rmsprop`` defaults to decay 0.9 and eps inside the
    sqrt, and multiplies by lr inside the momentum trace, which differs from torch once lr is scheduled.

    >>> from fnml import optim
    >>> params, grads = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.5, -0.5])}
    >>> tx = optim.rmsprop(lr=1e-2, momentum=0.9, centered=True)
    >>> updates, state = tx.update(grads, tx.init(params), params)
    >>> [round(u, 6) for u in updates["w"].tolist()]
    [-0.100504, 0.100504]
    """
    where = "rmsprop"
    lr = _check_lr(lr, where)
    check.check_non_negative("alpha", alpha, where=where)
    check.check_non_negative("eps", eps, where=where)
    check.check_non_negative("weight_decay", weight_decay, where=where)
    momentum = _check_hyper("momentum", momentum, where)
    core = _scale_by_torch_rmsprop(lr, alpha, eps, _momentum_source(momentum, lr), centered)
    return optax.chain(*_prepare(maximize, weight_decay), core)


class AdagradState(NamedTuple):
    """State of :func:`adagrad` (torch's ``state['sum']``).

    PyTorch equivalent: ``optimizer.state[p]`` of ``torch.optim.Adagrad`` (``step``, ``sum``).
    """

    count: jax.Array  # (), int32: updates done so far
    sum: optax.Updates  # params' structure and dtypes: initial_accumulator_value + sum of g**2


def _scale_by_torch_adagrad(
    lr: ScalarOrSchedule, lr_decay: float, initial_accumulator_value: float, eps: float
) -> optax.GradientTransformation:
    """torch's ``_single_tensor_adagrad`` (dense): the full step including ``-clr``."""

    def init_fn(params):
        accumulator = jax.tree.map(lambda p: jnp.full_like(p, initial_accumulator_value), params)
        return AdagradState(_zero_count(), accumulator)

    def update_fn(updates, state, params=None):
        del params
        count = state.count
        # torch: clr = lr / (1 + (step - 1) * lr_decay), step counted from 1
        clr = _at(lr, count) / (1 + count.astype(_scalar_dtype()) * lr_decay)
        total = jax.tree.map(lambda g, s: s + g * g, updates, state.sum)
        out = jax.tree.map(lambda g, s: _as(-clr, g) * g / (jnp.sqrt(s) + _as(jnp.asarray(eps), s)), updates, total)
        return out, AdagradState(_increment(count), total)

    return optax.GradientTransformation(init_fn, update_fn)


@_torch_habits
def adagrad(
    lr: ScalarOrSchedule = 1e-2,
    *,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """Adagrad with torch's defaults (accumulator starts at 0, eps=1e-10 outside the sqrt, lr_decay).

    PyTorch equivalent: ``torch.optim.Adagrad(params, lr=1e-2, lr_decay, weight_decay,
    initial_accumulator_value, eps=1e-10, maximize=...)``.

    Update (torch's formula, step t from 1): ``clr = lr / (1 + (t - 1) * lr_decay)``;
    ``s = s + g**2``; ``p = p - clr * g / (sqrt(s) + eps)``.

    Why custom (:class:`AdagradState`): ``optax.adagrad`` starts the accumulator at 0.1, puts eps=1e-7
    inside the sqrt and has no lr_decay.

    >>> from fnml import optim
    >>> params, grads = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.5, -0.5])}
    >>> tx = optim.adagrad(lr=1e-2, lr_decay=1e-3)
    >>> updates, state = tx.update(grads, tx.init(params), params)
    >>> [round(u, 6) for u in updates["w"].tolist()]  # first step: -lr * sign(g)
    [-0.01, 0.01]
    """
    where = "adagrad"
    lr = _check_lr(lr, where)
    check.check_non_negative("lr_decay", lr_decay, where=where)
    check.check_non_negative("weight_decay", weight_decay, where=where)
    check.check_non_negative("initial_accumulator_value", initial_accumulator_value, where=where)
    check.check_non_negative("eps", eps, where=where)
    _refuse_cycled_momentum(lr, where)
    core = _scale_by_torch_adagrad(lr, lr_decay, initial_accumulator_value, eps)
    return optax.chain(*_prepare(maximize, weight_decay), core)


@_torch_habits
def adadelta(
    lr: ScalarOrSchedule = 1.0,
    *,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """Adadelta with torch's default ``lr=1.0``.

    PyTorch equivalent: ``torch.optim.Adadelta(params, lr=1.0, rho=0.9, eps=1e-6, weight_decay,
    maximize=...)``.

    Update (torch's formula): ``s = rho * s + (1 - rho) * g**2``;
    ``d = sqrt(a + eps) / sqrt(s + eps) * g``; ``a = rho * a + (1 - rho) * d**2``; ``p = p - lr * d``.

    Built from stock ``optax.scale_by_adadelta`` (same math) and ``scale_by_learning_rate``. Note:
    ``optax.adadelta``'s default ``learning_rate=None`` never negates the update (gradient ascent).

    >>> from fnml import optim
    >>> params, grads = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.5, -0.5])}
    >>> tx = optim.adadelta()
    >>> updates, state = tx.update(grads, tx.init(params), params)
    >>> [round(u, 6) for u in updates["w"].tolist()]  # lr=1.0, yet small first steps
    [-0.003162, 0.003162]
    """
    where = "adadelta"
    lr = _check_lr(lr, where)
    check.check_in_interval("rho", rho, 0.0, 1.0, closed_high=True, where=where)
    check.check_non_negative("eps", eps, where=where)
    check.check_non_negative("weight_decay", weight_decay, where=where)
    _refuse_cycled_momentum(lr, where)
    return optax.chain(
        *_prepare(maximize, weight_decay),
        optax.scale_by_adadelta(rho=rho, eps=eps),
        optax.scale_by_learning_rate(lr),
    )


# ----------------------------------------------------------------------------------------------------
# Parameter groups
# ----------------------------------------------------------------------------------------------------


def _path_name(path: tuple[Any, ...]) -> str:
    """A key path as a dotted name (``fc1.bias``); nnx Variable ``.value`` steps are dropped."""
    names = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            names.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            names.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            if key.name not in ("value", "raw_value"):
                names.append(key.name)
        else:
            names.append(str(key))
    return ".".join(names)


def label_by(fn: Callable[[str, jax.Array], Hashable]) -> Callable[[Any], Any]:
    """Turn a per-parameter function ``(dotted_name, array) -> label`` into a label tree builder.

    PyTorch equivalent: the list comprehensions over ``model.named_parameters()`` that build torch's
    param groups.

    ``dotted_name`` joins the key path with dots (``"fc1.kernel"``, ``"layers.0.bias"``; an nnx
    Variable's ``.value`` is left out). Returns ``params -> tree of labels`` for :func:`param_groups`.
    A boolean predicate works too: the labels are then ``True`` / ``False``.

    >>> from fnml import optim
    >>> params = {"fc1": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}, "fc2": {"kernel": jnp.ones((3, 1))}}
    >>> labels = optim.label_by(lambda name, p: "head" if name.startswith("fc2") else "body")
    >>> labels(params)
    {'fc1': {'bias': 'body', 'kernel': 'body'}, 'fc2': {'kernel': 'head'}}
    """
    if not callable(fn):
        raise TypeError(f"label_by: fn must be a callable (name, array) -> label, got {check.describe(fn)}")

    def labels(params):
        return jax.tree_util.tree_map_with_path(lambda path, leaf: fn(_path_name(path), leaf), params)

    return labels


def is_bias_or_norm(name: str, param: jax.Array) -> bool:
    """True for parameters that conventionally get no weight decay: biases and norm scales/shifts.

    PyTorch equivalent: the idiom ``p.ndim <= 1 or name.endswith("bias")`` used to build a
    ``weight_decay=0`` param group.

    Rule: the last name component is ``bias``, or the array has at most one dimension (every bias,
    LayerNorm / BatchNorm ``weight`` / ``scale`` / ``bias``); matrices, conv kernels and embeddings
    are decayed.

    >>> from fnml import optim
    >>> optim.is_bias_or_norm("fc1.bias", jnp.zeros(3)), optim.is_bias_or_norm("norm.scale", jnp.ones(3))
    (True, True)
    >>> optim.is_bias_or_norm("fc1.kernel", jnp.ones((2, 3)))
    False
    """
    return name.split(".")[-1] == "bias" or jnp.ndim(param) <= 1


def bias_and_norm_labels(params: Any) -> Any:
    """Label tree ``"no_decay"`` for biases / norm parameters (:func:`is_bias_or_norm`), else ``"decay"``.

    PyTorch equivalent: splitting ``model.named_parameters()`` into a decayed and a
    ``weight_decay=0`` param group.

    >>> from fnml import optim
    >>> params = {"fc1": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}, "norm": {"scale": jnp.ones(3)}}
    >>> optim.bias_and_norm_labels(params)
    {'fc1': {'bias': 'no_decay', 'kernel': 'decay'}, 'norm': {'scale': 'no_decay'}}
    >>> tx = optim.param_groups(
    ...     {
    ...         "decay": optim.adamw(lr=1e-3, weight_decay=0.1),
    ...         "no_decay": optim.adamw(lr=1e-3, weight_decay=0.0),
    ...     },
    ...     labels=optim.bias_and_norm_labels,
    ... )
    >>> state = tx.init(params)
    """
    return label_by(lambda name, leaf: "no_decay" if is_bias_or_norm(name, leaf) else "decay")(params)


def param_groups(
    groups: Mapping[Hashable, optax.GradientTransformation], *, labels: Any
) -> optax.GradientTransformation:
    """Different optimizers / hyperparameters for different parts of the parameter tree.

    PyTorch equivalent: ``torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
    {"params": no_decay, "weight_decay": 0.0}], lr=...)``.

    ``groups`` maps a label to the transformation for the parameters with that label (build each
    with the group's own lr / weight_decay). ``labels`` is a pytree of labels with the parameters'
    structure, or a function ``params -> label tree`` (e.g. :func:`bias_and_norm_labels`, or
    :func:`label_by` over names). Every parameter must carry a label present in ``groups``. Each group
    keeps its own state and step count, as torch keeps per-parameter state. Built on
    ``optax.multi_transform``.

    >>> from fnml import optim
    >>> tx = optim.param_groups(
    ...     {"body": optim.sgd(lr=0.01, momentum=0.9), "head": optim.sgd(lr=0.1, momentum=0.9)},
    ...     labels=optim.label_by(lambda name, p: "head" if name.startswith("fc2") else "body"),
    ... )
    >>> params = {"fc1": jnp.ones(2), "fc2": jnp.ones(2)}
    >>> grads = {"fc1": jnp.ones(2), "fc2": jnp.ones(2)}
    >>> updates, state = tx.update(grads, tx.init(params), params)
    >>> {name: [round(u, 6) for u in update.tolist()] for name, update in updates.items()}  # -lr * g each
    {'fc1': [-0.01, -0.01], 'fc2': [-0.1, -0.1]}
    """
    if not isinstance(groups, Mapping):
        raise TypeError(
            f"param_groups: groups must be a non-empty mapping label -> optimizer, got {check.describe(groups)}"
        )
    if not groups:
        raise ValueError("param_groups: groups must be a non-empty mapping label -> optimizer, got {}")
    for label, transform in groups.items():
        if not isinstance(transform, optax.GradientTransformation):
            raise TypeError(
                f"param_groups: groups[{label!r}] must be an optax.GradientTransformation, "
                f"got {check.received(transform)}"
            )

    def checked_labels(params):
        tree = labels(params) if callable(labels) else labels
        unknown = {label for label in jax.tree.leaves(tree)} - set(groups)
        if unknown:
            raise ValueError(
                f"param_groups: labels {sorted(map(repr, unknown))} have no entry in groups "
                f"(groups has {sorted(map(repr, groups))})"
            )
        return tree

    tx = optax.multi_transform(dict(groups), checked_labels)
    group_lrs = {label: _recorded_lr(transform) for label, transform in groups.items()}
    if all(lr is not None for lr in group_lrs.values()):
        _record_lr(tx, group_lrs)  # schedules.current_lr(state) -> {label: lr}
    return tx


# ----------------------------------------------------------------------------------------------------
# Gradient clipping
# ----------------------------------------------------------------------------------------------------


def _check_norm_type(norm_type: Any, where: str) -> float:
    """norm_type is a float p > 0, inf or -inf (or the string 'inf', as torch accepts)."""
    if isinstance(norm_type, str) and norm_type == "inf":
        return math.inf
    check.check_number("norm_type", norm_type, where=where)
    if not (norm_type > 0 or norm_type == -math.inf) or math.isnan(norm_type):
        raise ValueError(f"{where}: norm_type must be > 0, inf or -inf, got norm_type={norm_type!r}")
    return float(norm_type)


def _vector_norm(x: jax.Array, norm_type: float) -> jax.Array:
    """torch.linalg.vector_norm(x, norm_type) over all elements."""
    x = jnp.ravel(x)
    if norm_type == math.inf:
        return jnp.max(jnp.abs(x), initial=0.0).astype(x.dtype)
    if norm_type == -math.inf:
        return jnp.min(jnp.abs(x), initial=math.inf).astype(x.dtype)
    if norm_type == 1.0:
        return jnp.sum(jnp.abs(x))
    if norm_type == 2.0:
        return jnp.sqrt(jnp.sum(x * x))
    return jnp.sum(jnp.abs(x) ** norm_type) ** (1.0 / norm_type)


def _raise_if_nonfinite(total_norm: Any, norm_type: float) -> None:
    """torch's error_if_nonfinite message (host side; also called back from inside jit)."""
    if not math.isfinite(float(total_norm)):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients is non-finite ({float(total_norm)}), so it "
            "cannot be clipped. To scale the gradients by the non-finite norm anyway, set "
            "error_if_nonfinite=False"
        )


def get_total_norm(grads: Any, norm_type: float = 2.0, *, error_if_nonfinite: bool = False) -> jax.Array:
    """The norm of all gradient leaves seen as one vector: the norm of the per-leaf norms.

    PyTorch equivalent: ``torch.nn.utils.get_total_norm(grads, norm_type, error_if_nonfinite)``.

    ``norm_type``: p > 0, ``inf`` (max |g|) or ``-inf``. With ``error_if_nonfinite=True`` a nan/inf
    norm raises ``RuntimeError`` eagerly; inside ``jit`` the same check runs as a host callback and
    the error surfaces as a ``jax.errors.JaxRuntimeError`` carrying torch's message.

    >>> from fnml import optim
    >>> grads = {"a": jnp.array([3.0]), "b": jnp.array([[4.0]])}
    >>> round(float(optim.get_total_norm(grads)), 6)  # 2-norm over every leaf
    5.0
    >>> round(float(optim.get_total_norm(grads, norm_type="inf")), 6)
    4.0
    """
    norm_type = _check_norm_type(norm_type, "get_total_norm")
    check.check_bool("error_if_nonfinite", error_if_nonfinite, where="get_total_norm")
    leaves = jax.tree.leaves(grads)
    if not leaves:
        return jnp.zeros([], _scalar_dtype())
    norms = jnp.stack([_vector_norm(leaf, norm_type) for leaf in leaves])  # (n_leaves,)
    total_norm = _vector_norm(norms, norm_type)
    if error_if_nonfinite:
        if isinstance(total_norm, jax.core.Tracer):
            jax.debug.callback(_raise_if_nonfinite, total_norm, norm_type)
        else:
            _raise_if_nonfinite(total_norm, norm_type)
    return total_norm


def clip_grads_with_norm(grads: Any, max_norm: float, total_norm: jax.Array) -> Any:
    """Scale gradients by torch's ``min(max_norm / (total_norm + 1e-6), 1)`` (always multiplied).

    PyTorch equivalent: ``torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total_norm)``.

    Difference from ``optax.clip_by_global_norm``: torch adds 1e-6 to the norm and multiplies even when
    the coefficient is 1 (exact then); optax has no 1e-6.

    >>> from fnml import optim
    >>> grads = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}
    >>> clipped = optim.clip_grads_with_norm(grads, 1.0, optim.get_total_norm(grads))  # norm 5 -> 1
    >>> {name: [round(g, 6) for g in leaf.tolist()] for name, leaf in clipped.items()}
    {'a': [0.6], 'b': [0.8]}
    """
    check.check_non_negative("max_norm", max_norm, where="clip_grads_with_norm")
    clip_coef = max_norm / (total_norm + 1e-6)
    clip_coef_clamped = jnp.minimum(clip_coef, 1.0)
    return jax.tree.map(lambda g: g * clip_coef_clamped.astype(g.dtype), grads)


def clip_grad_norm(
    max_norm: float, norm_type: float = 2.0, *, error_if_nonfinite: bool = False
) -> optax.GradientTransformation:
    """Gradient transformation that clips the total gradient norm like torch.

    PyTorch equivalent: ``torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm, norm_type,
    error_if_nonfinite)`` called between ``loss.backward()`` and ``optimizer.step()``.

    ``g = g * min(max_norm / (total_norm + 1e-6), 1)`` with ``total_norm`` from
    :func:`get_total_norm` (any p-norm, ``inf``). Chain it before an optimizer:
    ``optax.chain(optim.clip_grad_norm(1.0), optim.adam(1e-3))``. Stateless.

    >>> from fnml import optim
    >>> tx = optax.chain(optim.clip_grad_norm(max_norm=1.0, norm_type=2.0), optim.sgd(lr=0.1))
    >>> params, grads = {"w": jnp.zeros(2)}, {"w": jnp.array([3.0, 4.0])}
    >>> updates, state = tx.update(grads, tx.init(params), params)
    >>> [round(u, 6) for u in updates["w"].tolist()]  # -lr * g * 1 / (5 + 1e-6)
    [-0.06, -0.08]
    """
    where = "clip_grad_norm"
    check.check_non_negative("max_norm", max_norm, where=where)
    norm_type = _check_norm_type(norm_type, where)
    check.check_bool("error_if_nonfinite", error_if_nonfinite, where=where)

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        total_norm = get_total_norm(updates, norm_type, error_if_nonfinite=error_if_nonfinite)
        return clip_grads_with_norm(updates, max_norm, total_norm), state

    return optax.GradientTransformation(init_fn, update_fn)


def clip_grad_value(clip_value: float) -> optax.GradientTransformation:
    """Gradient transformation clamping every gradient element to ``[-clip_value, clip_value]``.

    PyTorch equivalent: ``torch.nn.utils.clip_grad_value_(model.parameters(), clip_value)``.

    Stock ``optax.clip`` (same math). Chain it before an optimizer.

    >>> from fnml import optim
    >>> clip = optim.clip_grad_value(0.5)
    >>> updates, _ = clip.update({"w": jnp.array([-2.0, 0.25, 3.0])}, clip.init(None))
    >>> updates["w"].tolist()
    [-0.5, 0.25, 0.5]
    >>> tx = optax.chain(optim.clip_grad_value(0.5), optim.adam(1e-3))  # clip, then step
    """
    check.check_non_negative("clip_value", clip_value, where="clip_grad_value")
    return optax.clip(clip_value)

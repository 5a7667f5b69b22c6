"""Learning-rate schedules with ``torch.optim.lr_scheduler`` semantics, as optax schedules.

Every factory takes the base ``lr`` plus torch's argument names and returns a small frozen dataclass
that is callable ``count -> lr`` (an optax ``Schedule``: pass it wherever optax or ``fnml.optim``
accepts a learning rate). ``count`` is the number of optimizer updates already applied (optax's
convention: 0 for the first update); it may be a Python int or a traced integer array inside
``jax.jit`` (no recompilation across counts), or an integer array of counts (evaluated elementwise).

Mapping to torch. A torch scheduler stepped ``k`` times leaves ``lr(k)`` in the optimizer, and torch's
optimizer uses that value for its next update. fnml's ``schedule(count)`` is that ``lr(count)``:

- default: one scheduler step per optimizer update (``scheduler.step()`` after every
  ``optimizer.step()``);
- ``steps_per_epoch=N``: one scheduler step per epoch of ``N`` updates (``scheduler.step()`` after each
  epoch): ``schedule(count) = lr(count // N)``.

torch's schedulers are "chainable": they update ``group["lr"]`` recursively from its current value.
fnml evaluates the closed form, which equals the recursion up to rounding (``tests/test_schedules.py``
compares against real torch schedulers over three times the schedule length, float64 within 1e-12).

Every schedule is a frozen dataclass that checks its fields when it is built, by its factory or
directly (``StepLR(lr=0.1, step_size=0)`` raises ``ValueError``, ``step_size=2.5`` ``TypeError``).

OneCycle momentum: every schedule object carries ``.momentum``: ``None``, except :func:`one_cycle_lr`
with ``cycle_momentum=True``, where it is a callable ``count -> momentum`` following torch's inverse
cycle. ``fnml.optim`` uses it as Adam's ``beta1`` / SGD's ``momentum`` at every step, like
``torch.optim.lr_scheduler.OneCycleLR`` does to the optimizer's ``param_groups``.

:func:`reduce_lr_on_plateau` is metric driven, not a function of the count: a pure ``init`` /
``step(state, metric)`` pair plus an optax transformation that applies the current lr.

Composites: :func:`sequential_lr` (torch's ``SequentialLR``: each schedule restarted from its own step 0
at its milestone) and :func:`chained_scheduler` (torch's ``ChainedScheduler``: the schedules' factors
multiplied, with torch's cosine restarts), both closed forms of torch's stepping; combinations torch's
recursion gives no closed form for are refused by name. :func:`current_lr` reads the lr an optimizer state
applies next (torch's ``scheduler.get_last_lr()[0]``).
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fnml._validation import (
    check_bool,
    check_choice,
    check_in_interval,
    check_int,
    check_non_negative,
    check_number,
    check_positive,
    check_positive_int,
)

__all__ = [
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


# ----------------------------------------------------------------------------------------------------
# Shared machinery
# ----------------------------------------------------------------------------------------------------


def _float_dtype():
    """jax's default float dtype (float64 with x64 enabled, else float32)."""
    return jnp.result_type(float)


def _check_steps_per_epoch(steps_per_epoch: Any, where: str) -> int | None:
    """``None`` (step per update) or a positive int (step per epoch of that many updates)."""
    if steps_per_epoch is None:
        return None
    return check_positive_int("steps_per_epoch", steps_per_epoch, where=where)


def _set(schedule: Any, name: str, value: Any) -> None:
    """Store a checked (normalised) value on a frozen dataclass."""
    object.__setattr__(schedule, name, value)


class _Schedule:
    """Base of the schedule dataclasses: checks on construction; ``__call__`` maps updates to scheduler steps."""

    # Only OneCycleLR (with cycle_momentum=True) provides a momentum schedule; read by fnml.optim.
    momentum: ClassVar[Callable[[Any], jax.Array] | None] = None
    steps_per_epoch: int | None

    def __post_init__(self) -> None:
        # Every public schedule class checks its fields, whether built by its factory or directly.
        where = type(self).__name__
        _set(self, "steps_per_epoch", _check_steps_per_epoch(self.steps_per_epoch, where))
        self._validate(where)

    def _validate(self, where: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, count) -> jax.Array:
        """Learning rate for the update after ``count`` updates (scalar or elementwise over an array)."""
        return self._lr_at_step(self._scheduler_steps(count))

    def _scheduler_steps(self, count) -> jax.Array:
        """Optimizer updates -> number of ``scheduler.step()`` calls torch would have made."""
        count = jnp.asarray(count)
        if self.steps_per_epoch is not None:
            count = count // self.steps_per_epoch  # one scheduler step per epoch of updates
        return count

    def _lr_at_step(self, step: jax.Array) -> jax.Array:  # pragma: no cover - abstract
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------------
# Step-indexed schedules
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepLR(_Schedule):
    """``lr * gamma ** (step // step_size)``; built by :func:`step_lr`, fields checked on construction.

    PyTorch equivalent: ``torch.optim.lr_scheduler.StepLR``.

    >>> StepLR(lr=0.1, step_size=0)
    Traceback (most recent call last):
    ValueError: StepLR: step_size must be a positive integer, got step_size=0
    """

    lr: float
    step_size: int
    gamma: float = 0.1
    steps_per_epoch: int | None = None

    def _validate(self, where: str) -> None:
        check_positive("lr", self.lr, where=where)
        _set(self, "step_size", check_positive_int("step_size", self.step_size, where=where))
        check_positive("gamma", self.gamma, where=where)

    def _lr_at_step(self, step):
        exponent = (step // self.step_size).astype(_float_dtype())
        return self.lr * jnp.power(self.gamma, exponent)


def step_lr(lr: float, step_size: int, gamma: float = 0.1, *, steps_per_epoch: int | None = None) -> StepLR:
    """Decay the learning rate by ``gamma`` every ``step_size`` scheduler steps.

    PyTorch equivalent: ``torch.optim.lr_scheduler.StepLR(optimizer, step_size, gamma=0.1)``.

    ``lr(k) = lr * gamma ** (k // step_size)`` where ``k`` is the number of scheduler steps (``count``,
    or ``count // steps_per_epoch`` when ``steps_per_epoch`` is given). Same values as
    ``optax.exponential_decay(lr, step_size, gamma, staircase=True)``.

    Differences from torch: ``gamma <= 0`` is rejected (torch accepts it silently).

    >>> schedule = step_lr(0.1, step_size=30, gamma=0.1)  # scheduler.step() after every update
    >>> [round(float(schedule(count)), 6) for count in (0, 29, 30, 60)]
    [0.1, 0.1, 0.01, 0.001]
    >>> per_epoch = step_lr(0.1, step_size=2, steps_per_epoch=100)  # scheduler.step() after each epoch
    >>> [round(float(per_epoch(count)), 6) for count in (0, 199, 200)]
    [0.1, 0.1, 0.01]
    >>> from fnml import optim
    >>> optimizer = optim.sgd(lr=schedule, momentum=0.9)  # any fnml / optax optimizer takes the schedule
    """
    return StepLR(lr=lr, step_size=step_size, gamma=gamma, steps_per_epoch=steps_per_epoch)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MultiStepLR(_Schedule):
    """``lr * gamma ** (number of milestones <= step)``; built by :func:`multistep_lr`.

    PyTorch equivalent: ``torch.optim.lr_scheduler.MultiStepLR``.
    """

    lr: float
    milestones: tuple[int, ...]
    gamma: float = 0.1
    steps_per_epoch: int | None = None

    def _validate(self, where: str) -> None:
        check_positive("lr", self.lr, where=where)
        milestones = self.milestones
        if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
            raise TypeError(f"{where}: milestones must be a non-empty list of ints, got milestones={milestones!r}")
        if not milestones:
            raise ValueError(f"{where}: milestones must be a non-empty list of ints, got milestones={milestones!r}")
        checked = tuple(check_int("each milestone", m, minimum=0, where=where) for m in milestones)
        if any(later <= earlier for earlier, later in zip(checked, checked[1:])):
            raise ValueError(f"{where}: milestones must be strictly increasing, got milestones={list(milestones)!r}")
        _set(self, "milestones", checked)
        check_positive("gamma", self.gamma, where=where)

    def _lr_at_step(self, step):
        milestones = jnp.asarray(self.milestones, dtype=step.dtype)
        passed = jnp.sum(step[..., None] >= milestones, axis=-1)  # (...,) milestones reached so far
        return self.lr * jnp.power(self.gamma, passed.astype(_float_dtype()))


def multistep_lr(
    lr: float, milestones: Sequence[int], gamma: float = 0.1, *, steps_per_epoch: int | None = None
) -> MultiStepLR:
    """Decay the learning rate by ``gamma`` at each milestone.

    PyTorch equivalent: ``torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)``.

    ``lr(k) = lr * gamma ** #{m in milestones : m <= k}``. Same values as
    ``optax.piecewise_constant_schedule``.

    Differences from torch: ``milestones`` must be strictly increasing non-negative ints (torch's
    docs require "increasing"; torch itself also accepts unsorted or repeated milestones and counts a
    repeated milestone several times). ``gamma <= 0`` is rejected.

    >>> schedule = multistep_lr(0.05, milestones=[30, 80], gamma=0.1)
    >>> [round(float(schedule(count)), 6) for count in (29, 30, 80)]
    [0.05, 0.005, 0.0005]
    """
    return MultiStepLR(lr=lr, milestones=milestones, gamma=gamma, steps_per_epoch=steps_per_epoch)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExponentialLR(_Schedule):
    """``lr * gamma ** step``; built by :func:`exponential_lr`.

    PyTorch equivalent: ``torch.optim.lr_scheduler.ExponentialLR``.
    """

    lr: float
    gamma: float
    steps_per_epoch: int | None = None

    def _validate(self, where: str) -> None:
        check_positive("lr", self.lr, where=where)
        check_positive("gamma", self.gamma, where=where)

    def _lr_at_step(self, step):
        return self.lr * jnp.power(self.gamma, step.astype(_float_dtype()))


def exponential_lr(lr: float, gamma: float, *, steps_per_epoch: int | None = None) -> ExponentialLR:
    """Decay the learning rate by ``gamma`` every scheduler step.

    PyTorch equivalent: ``torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)``.

    ``lr(k) = lr * gamma ** k``; same values as ``optax.exponential_decay(lr, 1, gamma)``.
    ``gamma <= 0`` is rejected (torch accepts it).

    >>> schedule = exponential_lr(0.1, gamma=0.5)
    >>> [round(float(schedule(count)), 6) for count in range(4)]
    [0.1, 0.05, 0.025, 0.0125]
    """
    return ExponentialLR(lr=lr, gamma=gamma, steps_per_epoch=steps_per_epoch)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CosineAnnealingLR(_Schedule):
    """torch's closed-form cosine, continued past ``T_max``; built by :func:`cosine_annealing_lr`.

    PyTorch equivalent: ``torch.optim.lr_scheduler.CosineAnnealingLR``.
    """

    lr: float
    T_max: int  # noqa: N815 - torch's argument name
    eta_min: float = 0.0
    steps_per_epoch: int | None = None

    def _validate(self, where: str) -> None:
        check_positive("lr", self.lr, where=where)
        _set(self, "T_max", check_positive_int("T_max", self.T_max, where=where))
        check_non_negative("eta_min", self.eta_min, where=where)

    def _lr_at_step(self, step):
        # Same operation order as torch's _get_closed_form_lr: pi * k / T_max.
        cosine = 1 + jnp.cos(math.pi * step.astype(_float_dtype()) / self.T_max)
        return self.eta_min + (self.lr - self.eta_min) * cosine / 2


def cosine_annealing_lr(
    lr: float,
    T_max: int,
    eta_min: float = 0.0,
    *,
    steps_per_epoch: int | None = None,  # noqa: N803
) -> CosineAnnealingLR:
    """Cosine annealing from ``lr`` to ``eta_min`` over ``T_max`` scheduler steps, without restarts.

    PyTorch equivalent: ``torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max, eta_min=0)``.

    ``lr(k) = eta_min + (lr - eta_min) * (1 + cos(pi * k / T_max)) / 2`` for every ``k``: past
    ``T_max`` the lr rises again (period ``2 * T_max``), as torch's scheduler does when stepped further.
    ``optax.cosine_decay_schedule`` agrees inside ``T_max`` but clamps at ``eta_min`` afterwards.

    torch's ``step()`` applies a recursive (chainable) form whose rounding drifts from this closed
    form after ``T_max``, where ``lr - eta_min`` passes near zero; the drift grows with ``T_max``
    (figures in ``benchmarks/README.md``, "Schedules"). That drift is torch's rounding error; this
    closed form is the exact value of the formula torch documents.

    >>> schedule = cosine_annealing_lr(lr=0.1, T_max=10, eta_min=0.001)
    >>> [round(float(schedule(count)), 6) for count in (0, 5, 10, 15)]  # rises again after T_max, like torch
    [0.1, 0.0505, 0.001, 0.0505]
    """
    return CosineAnnealingLR(lr=lr, T_max=T_max, eta_min=eta_min, steps_per_epoch=steps_per_epoch)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LinearLR(_Schedule):
    """Linear factor ramp from ``start_factor`` to ``end_factor``; built by :func:`linear_lr`.

    PyTorch equivalent: ``torch.optim.lr_scheduler.LinearLR``.
    """

    lr: float
    start_factor: float = 1.0 / 3
    end_factor: float = 1.0
    total_iters: int = 5
    steps_per_epoch: int | None = None

    def _validate(self, where: str) -> None:
        check_positive("lr", self.lr, where=where)
        check_number("start_factor", self.start_factor, where=where)
        if not 0 < self.start_factor <= 1:
            raise ValueError(f"{where}: start_factor must be in (0, 1], got start_factor={self.start_factor!r}")
        check_in_interval("end_factor", self.end_factor, 0.0, 1.0, closed_high=True, where=where)
        _set(self, "total_iters", check_int("total_iters", self.total_iters, minimum=0, where=where))

    def _lr_at_step(self, step):
        if self.total_iters == 0:
            # torch's step(): lr * start_factor at step 0, then "step > total_iters" keeps it forever.
            return jnp.full(step.shape, self.lr * self.start_factor, dtype=_float_dtype())
        progress = jnp.minimum(step, self.total_iters).astype(_float_dtype())
        factor = self.start_factor + (self.end_factor - self.start_factor) * progress / self.total_iters
        return self.lr * factor


def linear_lr(
    lr: float,
    start_factor: float = 1.0 / 3,
    end_factor: float = 1.0,
    total_iters: int = 5,
    *,
    steps_per_epoch: int | None = None,
) -> LinearLR:
    """Multiply ``lr`` by a factor moving linearly from ``start_factor`` to ``end_factor``.

    PyTorch equivalent: ``torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1/3,
    end_factor=1.0, total_iters=5)``.

    ``lr(k) = lr * (start_factor + (end_factor - start_factor) * min(k, total_iters) / total_iters)``;
    same values as ``optax.linear_schedule(lr * start_factor, lr * end_factor, total_iters)``. With
    ``total_iters=0`` the factor stays ``start_factor`` forever, which is what torch's ``step()``
    produces (its closed form would divide by zero). Validation as torch: ``0 < start_factor <= 1``,
    ``0 <= end_factor <= 1``.

    >>> warmup = linear_lr(1e-3, start_factor=0.1, total_iters=4)
    >>> [round(float(warmup(count)), 6) for count in (0, 2, 4, 10)]
    [0.0001, 0.00055, 0.001, 0.001]
    """
    return LinearLR(
        lr=lr,
        start_factor=start_factor,
        end_factor=end_factor,
        total_iters=total_iters,
        steps_per_epoch=steps_per_epoch,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConstantLR(_Schedule):
    """``lr * factor`` for the first ``total_iters`` steps, then ``lr``; built by :func:`constant_lr`.

    PyTorch equivalent: ``torch.optim.lr_scheduler.ConstantLR``.
    """

    lr: float
    factor: float = 1.0 / 3
    total_iters: int = 5
    steps_per_epoch: int | None = None

    def _validate(self, where: str) -> None:
        check_positive("lr", self.lr, where=where)
        check_number("factor", self.factor, where=where)
        if not 0 < self.factor <= 1:
            raise ValueError(f"{where}: factor must be in (0, 1], got factor={self.factor!r}")
        _set(self, "total_iters", check_int("total_iters", self.total_iters, minimum=0, where=where))

    def _lr_at_step(self, step):
        if self.total_iters == 0:
            # torch's step(): lr * factor at step 0; the restore only happens at step == total_iters.
            return jnp.full(step.shape, self.lr * self.factor, dtype=_float_dtype())
        return jnp.where(step < self.total_iters, self.lr * self.factor, self.lr).astype(_float_dtype())


def constant_lr(
    lr: float, factor: float = 1.0 / 3, total_iters: int = 5, *, steps_per_epoch: int | None = None
) -> ConstantLR:
    """Multiply ``lr`` by a constant ``factor`` for the first ``total_iters`` scheduler steps.

    PyTorch equivalent: ``torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1/3, total_iters=5)``.

    ``lr(k) = lr * factor`` if ``k < total_iters`` else ``lr``. With ``total_iters=0`` the factor stays
    forever, as torch's ``step()`` gives. ``factor`` must be in ``(0, 1]`` (torch accepts 0 and then
    divides by it when restoring the lr).

    >>> schedule = constant_lr(0.1, factor=0.5, total_iters=4)
    >>> [round(float(schedule(count)), 6) for count in (0, 3, 4)]
    [0.05, 0.05, 0.1]
    """
    return ConstantLR(lr=lr, factor=factor, total_iters=total_iters, steps_per_epoch=steps_per_epoch)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CosineAnnealingWarmRestarts(_Schedule):
    """Cosine annealing restarted every ``T_0 * T_mult**i`` steps; built by :func:`cosine_annealing_warm_restarts`.

    PyTorch equivalent: ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``.
    """

    lr: float
    T_0: int  # noqa: N815 - torch's argument name
    T_mult: int = 1  # noqa: N815 - torch's argument name
    eta_min: float = 0.0
    steps_per_epoch: int | None = None

    def _validate(self, where: str) -> None:
        check_positive("lr", self.lr, where=where)
        _set(self, "T_0", check_positive_int("T_0", self.T_0, where=where))
        _set(self, "T_mult", check_int("T_mult", self.T_mult, minimum=1, where=where))
        check_non_negative("eta_min", self.eta_min, where=where)

    def _cycles(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(first scheduler step, length) of every cycle that starts below 2**31 (fnml's int32 counts)."""
        starts, lengths = [0], [self.T_0]
        while self.T_mult > 1 and starts[-1] + lengths[-1] < 2**31:
            starts.append(starts[-1] + lengths[-1])
            lengths.append(lengths[-1] * self.T_mult)
        return tuple(starts), tuple(lengths)

    def _lr_at_step(self, step):
        # torch's step(): T_cur += 1; once T_cur >= T_i, T_cur -= T_i and T_i *= T_mult. In closed form on
        # integers (torch's step(epoch) instead takes a float log, which can land in the wrong cycle).
        dtype = _float_dtype()
        if self.T_mult == 1:
            t_cur, t_i = step % self.T_0, self.T_0
        else:
            starts, lengths = self._cycles()
            cycle = jnp.sum(step[..., None] >= jnp.asarray(starts[1:], dtype=step.dtype), axis=-1)
            t_cur = step - jnp.asarray(starts, dtype=step.dtype)[cycle]
            t_i = jnp.asarray(lengths, dtype=dtype)[cycle]
        # Same operation order as torch's get_lr: pi * T_cur / T_i.
        cosine = 1 + jnp.cos(math.pi * t_cur.astype(dtype) / t_i)
        return self.eta_min + (self.lr - self.eta_min) * cosine / 2


def cosine_annealing_warm_restarts(
    lr: float,
    T_0: int,  # noqa: N803 - torch's argument name
    T_mult: int = 1,  # noqa: N803 - torch's argument name
    eta_min: float = 0.0,
    *,
    steps_per_epoch: int | None = None,
) -> CosineAnnealingWarmRestarts:
    """Cosine annealing from ``lr`` to ``eta_min``, restarting at ``lr`` after each cycle (SGDR).

    PyTorch equivalent: ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0, T_mult=1,
    eta_min=0)`` stepped with ``scheduler.step()`` (no argument).

    ``lr(k) = eta_min + (lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2``, where the first cycle lasts
    ``T_i = T_0`` scheduler steps, each next one ``T_mult`` times longer, and ``T_cur`` counts the steps
    since the last restart. This is torch's integer recursion in closed form; torch's own
    ``step(epoch)`` (a float epoch, deprecated for the other schedulers) is not reproduced: pass the
    per-update count instead, with ``steps_per_epoch`` for one scheduler step per epoch.
    Validation as torch: ``T_0`` a positive int, ``T_mult`` an int >= 1; also ``eta_min >= 0``.

    >>> schedule = cosine_annealing_warm_restarts(0.1, T_0=4, T_mult=2)
    >>> [round(float(schedule(count)), 6) for count in (0, 2, 3, 4, 8, 11, 12)]  # cycles of 4, 8, ...
    [0.1, 0.05, 0.014645, 0.1, 0.05, 0.003806, 0.1]
    """
    return CosineAnnealingWarmRestarts(lr=lr, T_0=T_0, T_mult=T_mult, eta_min=eta_min, steps_per_epoch=steps_per_epoch)


# ----------------------------------------------------------------------------------------------------
# OneCycle
# ----------------------------------------------------------------------------------------------------


class _Phase(NamedTuple):
    """One OneCycle phase: ends at (fractional) scheduler step ``end_step``."""

    end_step: float
    start_lr: float
    end_lr: float
    start_momentum: float
    end_momentum: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class OneCycleLR(_Schedule):
    """torch's 1cycle policy with its phase boundaries; built by :func:`one_cycle_lr`.

    PyTorch equivalent: ``torch.optim.lr_scheduler.OneCycleLR``.

    ``total_steps`` is the number of scheduler steps of the cycle; ``steps_per_epoch`` here is the
    per-epoch divisor of the count (set only with ``one_cycle_lr(per_epoch=True)``).
    """

    max_lr: float
    total_steps: int
    pct_start: float = 0.3
    anneal_strategy: str = "cos"
    cycle_momentum: bool = True
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False
    steps_per_epoch: int | None = None

    def _validate(self, where: str) -> None:
        check_positive("max_lr", self.max_lr, where=where)
        _set(self, "total_steps", check_positive_int("total_steps", self.total_steps, where=where))
        check_in_interval("pct_start", self.pct_start, 0.0, 1.0, closed_high=True, where=where)
        check_choice("anneal_strategy", self.anneal_strategy, ("cos", "linear"), where=where)
        _set(self, "cycle_momentum", check_bool("cycle_momentum", self.cycle_momentum, where=where))
        check_non_negative("base_momentum", self.base_momentum, where=where)
        check_non_negative("max_momentum", self.max_momentum, where=where)
        check_positive("div_factor", self.div_factor, where=where)
        check_positive("final_div_factor", self.final_div_factor, where=where)
        _set(self, "three_phase", check_bool("three_phase", self.three_phase, where=where))
        _check_one_cycle_phases(self, where)

    @property
    def initial_lr(self) -> float:
        """torch's ``group["initial_lr"] = max_lr / div_factor``."""
        return self.max_lr / self.div_factor

    @property
    def min_lr(self) -> float:
        """torch's ``group["min_lr"] = initial_lr / final_div_factor``."""
        return self.initial_lr / self.final_div_factor

    @property
    def momentum(self) -> Callable[[Any], jax.Array] | None:  # type: ignore[override]
        """``count -> momentum`` (Adam's beta1 / SGD's momentum), or ``None`` without cycle_momentum."""
        return self._momentum_at_count if self.cycle_momentum else None

    def phases(self) -> tuple[_Phase, ...]:
        """torch's ``_schedule_phases`` with the lr / momentum endpoints filled in."""
        total, pct = self.total_steps, self.pct_start
        initial, peak, final = self.initial_lr, self.max_lr, self.min_lr
        low, high = self.base_momentum, self.max_momentum
        if self.three_phase:
            return (
                _Phase(float(pct * total) - 1, initial, peak, high, low),
                _Phase(float(2 * pct * total) - 2, peak, initial, low, high),
                _Phase(total - 1, initial, final, high, high),
            )
        return (
            _Phase(float(pct * total) - 1, initial, peak, high, low),
            _Phase(total - 1, peak, final, low, high),
        )

    def _anneal(self, start, end, pct):
        """torch's _annealing_cos / _annealing_linear, same operation order."""
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (jnp.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _evaluate(self, step, which: str):
        """Value of ``which`` ("lr" or "momentum") at scheduler step ``step``, as torch's get_lr."""
        # torch raises after total_steps scheduler steps; the optimizer then keeps the last value.
        step = jnp.minimum(step, self.total_steps).astype(_float_dtype())
        phases = self.phases()
        starts = (0.0,) + tuple(phase.end_step for phase in phases[:-1])
        values = []
        for phase, start_step in zip(phases, starts):
            span = phase.end_step - start_step
            span = span if span != 0 else 1.0  # never selected (checked by one_cycle_lr); avoids 0/0
            pct = (step - start_step) / span
            if which == "lr":
                values.append(self._anneal(phase.start_lr, phase.end_lr, pct))
            else:
                values.append(self._anneal(phase.start_momentum, phase.end_momentum, pct))
        # The first phase whose end_step >= step wins; the last phase takes everything after.
        result = values[-1]
        for phase, value in zip(reversed(phases[:-1]), reversed(values[:-1])):
            result = jnp.where(step <= phase.end_step, value, result)
        return result

    def _lr_at_step(self, step):
        return self._evaluate(step, "lr")

    def _momentum_at_count(self, count) -> jax.Array:
        """Momentum / beta1 torch's OneCycleLR puts in the optimizer for the update after ``count``."""
        return self._evaluate(self._scheduler_steps(count), "momentum")


def _check_one_cycle_phases(schedule: OneCycleLR, where: str) -> None:
    """Reject phases of zero length that a step would select (torch raises ZeroDivisionError there)."""
    phases = schedule.phases()
    previous_max = -math.inf
    start_step = 0.0
    for index, phase in enumerate(phases):
        last = index == len(phases) - 1
        upper = schedule.total_steps if last else min(phase.end_step, schedule.total_steps)
        lowest_step = 0 if previous_max == -math.inf else max(0, math.floor(previous_max) + 1)
        selected = math.floor(upper) >= lowest_step
        if selected and phase.end_step - start_step == 0:
            raise ValueError(
                f"{where}: phase {index + 1} of the cycle has zero length with pct_start="
                f"{schedule.pct_start!r} and total_steps={schedule.total_steps!r} (torch divides by "
                "zero there); choose pct_start so that pct_start * total_steps is not 1 and every phase "
                "is non-empty"
            )
        previous_max = max(previous_max, phase.end_step)
        start_step = phase.end_step


def one_cycle_lr(
    max_lr: float,
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
    *,
    per_epoch: bool = False,
) -> OneCycleLR:
    """The 1cycle policy: warm up to ``max_lr``, anneal far below the start, momentum cycling inversely.

    PyTorch equivalent: ``torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr, total_steps=None,
    epochs=None, steps_per_epoch=None, pct_start=0.3, anneal_strategy="cos", cycle_momentum=True,
    base_momentum=0.85, max_momentum=0.95, div_factor=25.0, final_div_factor=1e4, three_phase=False)``.

    Like torch: the cycle has ``total_steps`` scheduler steps, or ``epochs * steps_per_epoch`` when
    ``total_steps`` is None. Phase boundaries are torch's (``pct_start * total_steps - 1``, then
    ``total_steps - 1``; three-phase adds ``2 * pct_start * total_steps - 2``), between
    ``initial_lr = max_lr / div_factor``, ``max_lr`` and ``min_lr = initial_lr / final_div_factor``,
    annealed by ``end + (start - end) / 2 * (1 + cos(pi * pct))`` or linearly.
    ``optax.cosine_onecycle_schedule`` peaks and ends one step later (3e-3 off) and does not cycle
    momentum.

    Momentum: with ``cycle_momentum=True`` the returned object's ``.momentum`` is a callable
    ``count -> momentum`` going ``max_momentum -> base_momentum -> max_momentum`` on the same phases;
    ``fnml.optim`` uses it as Adam's beta1 / SGD's momentum at every update, as torch does by default.
    With ``cycle_momentum=False``, ``.momentum`` is ``None``.

    Stepping: default one scheduler step per optimizer update (torch's usual use of OneCycleLR;
    ``steps_per_epoch`` keeps torch's meaning here). ``per_epoch=True`` reproduces a OneCycleLR
    stepped once per epoch: the cycle then has ``total_steps`` (or ``epochs``) scheduler steps and
    ``steps_per_epoch`` is the number of updates per epoch: ``schedule(count) = lr(count //
    steps_per_epoch)``.

    Difference from torch: torch raises ``ValueError`` when stepped more than ``total_steps`` times;
    here the value reached at ``total_steps`` is held (what the optimizer keeps if you stop stepping).
    A single ``max_lr`` (fnml's parameter groups are separate transformations, each with its own
    schedule). Zero-length phases that torch would divide by zero in raise ``ValueError`` up front.

    >>> schedule = one_cycle_lr(max_lr=0.01, total_steps=10)
    >>> [round(float(schedule(count)), 6) for count in (0, 2)]  # max_lr / div_factor, then the peak
    [0.0004, 0.01]
    >>> f"{float(schedule(9)):.1e}"  # initial_lr / final_div_factor at the end
    '4.0e-08'
    >>> [round(float(schedule.momentum(count)), 6) for count in (0, 2, 9)]  # beta1 / momentum cycles inversely
    [0.95, 0.85, 0.95]
    >>> one_cycle_lr(max_lr=0.01, epochs=10, steps_per_epoch=100).total_steps
    1000
    """
    where = "one_cycle_lr"
    check_bool("per_epoch", per_epoch, where=where)
    if total_steps is not None:
        cycle_steps = check_positive_int("total_steps", total_steps, where=where)
    elif epochs is not None and (steps_per_epoch is not None or per_epoch):
        check_positive_int("epochs", epochs, where=where)
        cycle_steps = (
            epochs if per_epoch else epochs * check_positive_int("steps_per_epoch", steps_per_epoch, where=where)
        )
    else:
        raise ValueError(
            f"{where}: define either total_steps or (epochs and steps_per_epoch); got total_steps="
            f"{total_steps!r}, epochs={epochs!r}, steps_per_epoch={steps_per_epoch!r}"
        )
    if per_epoch:
        if steps_per_epoch is None:
            raise ValueError(
                f"{where}: per_epoch=True needs steps_per_epoch (optimizer updates per epoch), got steps_per_epoch=None"
            )
        check_positive_int("steps_per_epoch", steps_per_epoch, where=where)
    return OneCycleLR(
        max_lr=max_lr,
        total_steps=cycle_steps,
        pct_start=pct_start,
        anneal_strategy=anneal_strategy,
        cycle_momentum=cycle_momentum,
        base_momentum=base_momentum,
        max_momentum=max_momentum,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        three_phase=three_phase,
        steps_per_epoch=steps_per_epoch if per_epoch else None,
    )


# ----------------------------------------------------------------------------------------------------
# ReduceLROnPlateau
# ----------------------------------------------------------------------------------------------------


class ReduceLROnPlateauState(NamedTuple):
    """State of :class:`ReduceLROnPlateau`; every field is a scalar array.

    PyTorch equivalent: the attributes of torch's ``ReduceLROnPlateau`` (``best``, ``num_bad_epochs``,
    ``cooldown_counter``, the group lr).
    """

    lr: jax.Array  # () float: current lr (torch: optimizer.param_groups[0]["lr"])
    best: jax.Array  # () float: best metric so far (torch: scheduler.best; +inf for "min", -inf for "max")
    num_bad_epochs: jax.Array  # () int32: epochs without improvement (torch: scheduler.num_bad_epochs)
    cooldown_counter: jax.Array  # () int32: epochs of cooldown left (torch: scheduler.cooldown_counter)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReduceLROnPlateau:
    """Metric-driven lr reduction, pure and jittable; built by :func:`reduce_lr_on_plateau`.

    PyTorch equivalent: ``torch.optim.lr_scheduler.ReduceLROnPlateau``.
    """

    lr: float
    mode: str = "min"
    factor: float = 0.1
    patience: int = 10
    threshold: float = 1e-4
    threshold_mode: str = "rel"
    cooldown: int = 0
    min_lr: float = 0.0
    eps: float = 1e-8

    def __post_init__(self) -> None:
        where = "ReduceLROnPlateau"
        check_positive("lr", self.lr, where=where)
        check_choice("mode", self.mode, ("min", "max"), where=where)
        check_number("factor", self.factor, where=where)
        if not 0 <= self.factor < 1:
            raise ValueError(f"{where}: factor must be in [0, 1) (new_lr = lr * factor), got factor={self.factor!r}")
        _set(self, "patience", check_int("patience", self.patience, minimum=0, where=where))
        check_non_negative("threshold", self.threshold, where=where)
        check_choice("threshold_mode", self.threshold_mode, ("rel", "abs"), where=where)
        _set(self, "cooldown", check_int("cooldown", self.cooldown, minimum=0, where=where))
        check_non_negative("min_lr", self.min_lr, where=where)
        check_non_negative("eps", self.eps, where=where)

    def init(self) -> ReduceLROnPlateauState:
        """Fresh state: lr = base lr, best = worst possible value, no bad epochs, no cooldown."""
        dtype = _float_dtype()
        worst = math.inf if self.mode == "min" else -math.inf
        return ReduceLROnPlateauState(
            lr=jnp.asarray(self.lr, dtype=dtype),
            best=jnp.asarray(worst, dtype=dtype),
            num_bad_epochs=jnp.asarray(0, dtype=jnp.int32),
            cooldown_counter=jnp.asarray(0, dtype=jnp.int32),
        )

    def _is_better(self, metric, best):
        """torch's _is_better, same operation order."""
        if self.mode == "min" and self.threshold_mode == "rel":
            return metric < best * (1.0 - self.threshold)
        if self.mode == "min":
            return metric < best - self.threshold
        if self.threshold_mode == "rel":
            return metric > best * (self.threshold + 1.0)
        return metric > best + self.threshold

    def step(self, state: ReduceLROnPlateauState, metric) -> ReduceLROnPlateauState:
        """One ``scheduler.step(metric)``: torch's rules, as a pure function (jittable)."""
        metric = jnp.asarray(metric, dtype=state.best.dtype)
        better = self._is_better(metric, state.best)
        best = jnp.where(better, metric, state.best)
        num_bad = jnp.where(better, 0, state.num_bad_epochs + 1)
        in_cooldown = state.cooldown_counter > 0
        cooldown_counter = jnp.where(in_cooldown, state.cooldown_counter - 1, state.cooldown_counter)
        num_bad = jnp.where(in_cooldown, 0, num_bad)  # bad epochs during cooldown are ignored
        reduce = num_bad > self.patience
        reduced_lr = jnp.maximum(state.lr * self.factor, self.min_lr)  # min_lr is absolute
        # torch skips reductions smaller than eps (e.g. once min_lr is reached).
        lr = jnp.where(reduce & (state.lr - reduced_lr > self.eps), reduced_lr, state.lr)
        cooldown_counter = jnp.where(reduce, self.cooldown, cooldown_counter)
        num_bad = jnp.where(reduce, 0, num_bad)
        return ReduceLROnPlateauState(
            lr=lr.astype(state.lr.dtype),
            best=best,
            num_bad_epochs=num_bad.astype(jnp.int32),
            cooldown_counter=cooldown_counter.astype(jnp.int32),
        )

    def scale_updates(self) -> optax.GradientTransformation:
        """An optax transformation multiplying the final updates by ``current lr / base lr``.

        Chain it after an optimizer built with the same base lr:
        ``optax.chain(optim.adam(lr=plateau.lr), plateau.scale_updates())``. Its state is a
        :class:`ReduceLROnPlateauState`; advance it once per epoch with :meth:`step_opt_state`.
        Every torch optimizer multiplies its final update by lr (SGD, Adam, AdamW's decoupled decay
        ``p *= 1 - lr * wd`` included), so scaling the final update by ``lr_t / lr_0`` reproduces
        torch with ``param_groups[...]["lr"] = lr_t``.
        """
        base_lr = self.lr

        def init_fn(params):
            del params
            return self.init()

        def update_fn(updates, state, params=None):
            del params
            scale = state.lr / base_lr
            updates = jax.tree_util.tree_map(lambda update: update * scale.astype(update.dtype), updates)
            return updates, state

        return optax.GradientTransformation(init_fn, update_fn)

    def step_opt_state(self, opt_state, metric):
        """Step every :class:`ReduceLROnPlateauState` inside an optax state with ``metric`` (pure)."""

        def visit(node):
            return self.step(node, metric) if isinstance(node, ReduceLROnPlateauState) else node

        return jax.tree_util.tree_map(visit, opt_state, is_leaf=lambda node: isinstance(node, ReduceLROnPlateauState))

    def state_in(self, opt_state) -> ReduceLROnPlateauState:
        """The (first) :class:`ReduceLROnPlateauState` inside an optax state, e.g. to log ``.lr``."""
        found = [
            node
            for node in jax.tree_util.tree_leaves(
                opt_state, is_leaf=lambda node: isinstance(node, ReduceLROnPlateauState)
            )
            if isinstance(node, ReduceLROnPlateauState)
        ]
        if not found:
            raise ValueError(
                "ReduceLROnPlateau.state_in: opt_state holds no ReduceLROnPlateauState; "
                "chain plateau.scale_updates() into the optimizer"
            )
        return found[0]


def reduce_lr_on_plateau(
    lr: float,
    mode: str = "min",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_lr: float = 0.0,
    eps: float = 1e-8,
) -> ReduceLROnPlateau:
    """Reduce the learning rate by ``factor`` when a metric has stopped improving.

    PyTorch equivalent: ``torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min",
    factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8)``.

    Rules (torch's, per ``step(state, metric)``, usually once per epoch): the metric improves if it
    beats ``best * (1 - threshold)`` ("min", "rel"), ``best - threshold`` ("min", "abs"),
    ``best * (1 + threshold)`` ("max", "rel") or ``best + threshold`` ("max", "abs"); otherwise it is
    a bad epoch. Bad epochs during cooldown do not count. After more than ``patience`` bad epochs,
    ``lr = max(lr * factor, min_lr)`` unless that changes lr by ``eps`` or less, the bad-epoch count
    resets and ``cooldown`` epochs of cooldown start.

    It is not a function of the step count, so it is a pure state machine:

    - ``plateau.init() -> ReduceLROnPlateauState`` and ``plateau.step(state, metric) -> state``;
    - ``plateau.scale_updates()``: an optax transformation that multiplies the final updates by
      ``state.lr / lr``; chain it after any fnml / optax optimizer built with the same ``lr``. This
      is exact for every torch optimizer, since each one multiplies its final update by lr.
    - ``plateau.step_opt_state(opt_state, metric)`` steps the state inside the optimizer state;
      ``plateau.state_in(opt_state).lr`` reads the current lr.

    ``optax.contrib.reduce_on_plateau`` differs: its ``patience=p`` is torch's ``p - 1``, its
    ``min_scale`` is relative (torch's ``min_lr`` is absolute) and it counts every update as an epoch.
    A single scalar ``min_lr`` (no per-param-group list).

    >>> plateau = reduce_lr_on_plateau(lr=0.1, patience=1)
    >>> state = plateau.init()
    >>> for val_loss in (1.0, 1.0, 1.0):  # no improvement after the first epoch
    ...     state = plateau.step(state, val_loss)
    ...     print(round(float(state.lr), 6), int(state.num_bad_epochs))
    0.1 0
    0.1 1
    0.01 0

    In a training loop, chain its transformation after an optimizer built with the same lr and step it
    once per epoch inside the optimizer state:

    >>> import optax
    >>> optimizer = optax.chain(optax.sgd(0.1), plateau.scale_updates())
    >>> opt_state = optimizer.init({"w": jnp.zeros(2)})
    >>> opt_state = plateau.step_opt_state(opt_state, 0.5)  # after each epoch: the validation loss
    >>> round(float(plateau.state_in(opt_state).lr), 6)
    0.1
    """
    return ReduceLROnPlateau(
        lr=lr,
        mode=mode,
        factor=factor,
        patience=patience,
        threshold=threshold,
        threshold_mode=threshold_mode,
        cooldown=cooldown,
        min_lr=min_lr,
        eps=eps,
    )


# ----------------------------------------------------------------------------------------------------
# Composite schedules: SequentialLR, ChainedScheduler
# ----------------------------------------------------------------------------------------------------

# Schedules whose torch update multiplies group["lr"] by a factor (torch's "chainable" ones).
_MULTIPLICATIVE = (StepLR, MultiStepLR, ExponentialLR, ConstantLR, LinearLR)
# Schedules whose torch update sets group["lr"] from the base lr at some steps (restarts).
_RESETTING = (CosineAnnealingLR, CosineAnnealingWarmRestarts)


def _check_sub_schedules(schedulers: Any, allowed: tuple[type, ...], where: str) -> tuple[_Schedule, ...]:
    """A non-empty list of fnml schedules of the ``allowed`` kinds, stepped by the composite, with one base lr."""
    if isinstance(schedulers, (str, bytes)) or not isinstance(schedulers, Sequence):
        raise TypeError(
            f"{where}: schedulers must be a non-empty list of fnml schedules, got schedulers={schedulers!r}"
        )
    if not schedulers:
        raise ValueError(f"{where}: schedulers must be a non-empty list of fnml schedules, got schedulers=[]")
    names = ", ".join(kind.__name__ for kind in allowed)
    for index, schedule in enumerate(schedulers):
        if isinstance(schedule, ReduceLROnPlateau):
            raise ValueError(
                f"{where}: schedulers[{index}] is a ReduceLROnPlateau, which {where} cannot step (torch refuses "
                "it too: its step needs the metric)"
            )
        if isinstance(schedule, (SequentialLR, ChainedScheduler)):
            raise ValueError(
                f"{where}: schedulers[{index}] is a {type(schedule).__name__}; composites cannot be nested (torch "
                f"fails when a milestone or a chain reaches one); expected one of {names}"
            )
        if not isinstance(schedule, allowed):
            raise TypeError(f"{where}: schedulers[{index}] must be one of {names}, got {schedule!r}")
        if schedule.steps_per_epoch is not None:
            raise ValueError(
                f"{where}: schedulers[{index}] must have steps_per_epoch=None (the composite steps it; give "
                f"steps_per_epoch to {where} instead), got steps_per_epoch={schedule.steps_per_epoch!r}"
            )
        if schedule.lr != schedulers[0].lr:
            # torch's sub-schedulers all start from the optimizer's group["initial_lr"]: one base lr.
            raise ValueError(
                f"{where}: every schedule must have the same lr (torch's schedulers of one optimizer share its "
                f"initial lr), got lr={schedulers[0].lr!r} for schedulers[0] and lr={schedule.lr!r} for "
                f"schedulers[{index}]"
            )
    return tuple(schedulers)


def _safe_ratio(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """``numerator / denominator``, and 1 where they are equal (an lr held at 0 stays held, no 0/0)."""
    same = numerator == denominator
    return jnp.where(same, 1.0, numerator / jnp.where(same, 1.0, denominator))


@dataclasses.dataclass(frozen=True)
class SequentialLR(_Schedule):
    """Schedules run one after another, switching at the milestones; built by :func:`sequential_lr`.

    PyTorch equivalent: ``torch.optim.lr_scheduler.SequentialLR``.

    ``SequentialLR([warmup, cosine], milestones=[5])`` reads like torch's ``SequentialLR(optimizer,
    [warmup, cosine], milestones=[5])``; the fields are checked on construction.

    >>> SequentialLR([linear_lr(0.1)], milestones=[5])
    Traceback (most recent call last):
    ValueError: SequentialLR: milestones must have one entry fewer than schedulers (1 schedulers), got milestones=[5]
    """

    schedulers: tuple[_Schedule, ...]
    milestones: tuple[int, ...]
    _: dataclasses.KW_ONLY
    steps_per_epoch: int | None = None

    _ALLOWED: ClassVar[tuple[type, ...]] = (*_MULTIPLICATIVE, CosineAnnealingLR, CosineAnnealingWarmRestarts)

    def _validate(self, where: str) -> None:
        schedulers = _check_sub_schedules(self.schedulers, self._ALLOWED, where)
        milestones = self.milestones
        if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
            raise TypeError(f"{where}: milestones must be a list of ints, got milestones={milestones!r}")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                f"{where}: milestones must have one entry fewer than schedulers ({len(schedulers)} schedulers), "
                f"got milestones={list(milestones)!r}"
            )
        checked = tuple(check_int("each milestone", m, minimum=1, where=where) for m in milestones)
        if any(later <= earlier for earlier, later in zip(checked, checked[1:])):
            raise ValueError(f"{where}: milestones must be strictly increasing, got milestones={list(milestones)!r}")
        for index, schedule in enumerate(schedulers[1:], start=1):
            if isinstance(schedule, LinearLR) and schedule.total_iters == 0:
                raise ValueError(
                    f"{where}: schedulers[{index}] is a LinearLR with total_iters=0, which torch's SequentialLR "
                    "divides by zero at its milestone (closed form); use total_iters >= 1"
                )
        _set(self, "schedulers", schedulers)
        _set(self, "milestones", checked)

    @property
    def lr(self) -> float:
        """The base lr every schedule starts from (torch's ``group["initial_lr"]``)."""
        return self.schedulers[0].lr

    def _lr_at_step(self, step):
        result = self.schedulers[0]._lr_at_step(step)
        for milestone, schedule in zip(self.milestones, self.schedulers[1:]):
            local = jnp.maximum(step - milestone, 0)  # torch restarts the schedule's own count at its milestone
            if isinstance(schedule, ConstantLR) and schedule.total_iters == 0:
                # torch enters with the closed form at 0 (lr * 1), and step() never changes it afterwards.
                value = jnp.full(step.shape, schedule.lr, dtype=_float_dtype())
            else:
                value = schedule._lr_at_step(local)
            result = jnp.where(step >= milestone, value, result)
        return result


def sequential_lr(
    schedulers: Sequence[_Schedule], milestones: Sequence[int], *, steps_per_epoch: int | None = None
) -> SequentialLR:
    """Run ``schedulers[i]`` from ``milestones[i - 1]`` on, each restarted from its own step 0.

    PyTorch equivalent: ``torch.optim.lr_scheduler.SequentialLR(optimizer, schedulers, milestones)``.

    Torch's semantics: at scheduler step ``k``, the active schedule is ``i = bisect_right(milestones, k)``
    and the lr is ``schedulers[i]`` at its own step ``k - milestones[i - 1]`` (``k`` for the first): torch
    calls ``scheduler._update_lr(0)`` at the milestone, which restarts that scheduler's counter and
    evaluates its closed form there from the base lr, then steps it. Every torch scheduler of the
    optimizer starts from the same base lr (the group's ``initial_lr``, which SequentialLR restores before
    the first step), so every schedule here must have the same ``lr``; the values at the sub-schedules'
    own construction (torch steps each once in its constructor, then SequentialLR undoes it) play no part.

    Schedules: :class:`StepLR`, :class:`MultiStepLR`, :class:`ExponentialLR`, :class:`ConstantLR`,
    :class:`LinearLR`, :class:`CosineAnnealingLR`, :class:`CosineAnnealingWarmRestarts`, each with
    ``steps_per_epoch=None`` (give ``steps_per_epoch`` here). Refused with a clear error: OneCycleLR (it
    rewrites the group's ``initial_lr`` and momentum), ReduceLROnPlateau (torch refuses it), nested
    composites (torch fails at the milestone), and a LinearLR with ``total_iters=0`` after the first
    (torch divides by zero at its milestone). A ConstantLR with ``total_iters=0`` after the first keeps
    ``lr`` (torch's closed form at the milestone gives ``lr``, and its step never changes it).

    Differences from torch: ``milestones`` must be strictly increasing ints >= 1 (torch also accepts
    unsorted, repeated or zero milestones, where ``bisect_right`` skips schedules).

    >>> warmup = linear_lr(0.1, start_factor=0.1, total_iters=5)
    >>> cosine = cosine_annealing_lr(0.1, T_max=10)
    >>> schedule = sequential_lr([warmup, cosine], milestones=[5])  # warm-up, then cosine from its step 0
    >>> [round(float(schedule(count)), 6) for count in (0, 4, 5, 10, 15)]
    [0.01, 0.082, 0.1, 0.05, 0.0]
    """
    return SequentialLR(schedulers, milestones, steps_per_epoch=steps_per_epoch)


@dataclasses.dataclass(frozen=True)
class ChainedScheduler(_Schedule):
    """Schedules stepped together, their factors multiplied; built by :func:`chained_scheduler`.

    PyTorch equivalent: ``torch.optim.lr_scheduler.ChainedScheduler``.

    >>> ChainedScheduler([])
    Traceback (most recent call last):
    ValueError: ChainedScheduler: schedulers must be a non-empty list of fnml schedules, got schedulers=[]
    """

    schedulers: tuple[_Schedule, ...]
    _: dataclasses.KW_ONLY
    steps_per_epoch: int | None = None

    _ALLOWED: ClassVar[tuple[type, ...]] = (*_MULTIPLICATIVE, CosineAnnealingLR, CosineAnnealingWarmRestarts)

    def _validate(self, where: str) -> None:
        schedulers = _check_sub_schedules(self.schedulers, self._ALLOWED, where)
        for index, schedule in enumerate(schedulers):
            if isinstance(schedule, CosineAnnealingLR) and schedule.eta_min != 0:
                raise ValueError(
                    f"{where}: schedulers[{index}] is a CosineAnnealingLR with eta_min={schedule.eta_min!r}; torch's "
                    "chained update eta_min + (lr - eta_min) * ratio is not a factor, so this chain has no exact "
                    "closed form: use eta_min=0 in a chain (or SequentialLR)"
                )
        resetting = [index for index, schedule in enumerate(schedulers) if isinstance(schedule, _RESETTING)]
        if len(resetting) > 1:
            # A cosine restart adds to group["lr"], which is 0 there only if nothing else rewrote it since.
            raise ValueError(
                f"{where}: at most one CosineAnnealingLR or CosineAnnealingWarmRestarts per chain (torch's restarts "
                f"then interfere with no closed form), got "
                + " and ".join(f"schedulers[{i}] ({type(schedulers[i]).__name__})" for i in resetting)
            )
        _set(self, "schedulers", schedulers)

    @property
    def lr(self) -> float:
        """The base lr the chain starts from (torch's ``group["initial_lr"]``)."""
        return self.schedulers[0].lr

    def _factor(self, schedule: _Schedule, step: jax.Array) -> jax.Array:
        """``schedule``'s lr at ``step`` relative to its base lr; 1 at step -1 (before construction)."""
        value = schedule._lr_at_step(jnp.maximum(step, 0)) / schedule.lr
        return jnp.where(step < 0, 1.0, value)

    def _lr_at_step(self, step):
        # torch applies every scheduler's update to group["lr"] in list order, at each step. Multiplicative
        # updates compose into a product of factors; CosineAnnealingWarmRestarts (every step) and
        # CosineAnnealingLR (at the restarts T_max + 1 + 2j T_max, where the lr has just been 0) overwrite
        # it from the base lr. So: the value of the last overwrite (scheduler step, list position), or the
        # base lr before step 0, times every factor the schedules applied after it.
        count = len(self.schedulers)
        event_step = jnp.full(step.shape, -1, dtype=step.dtype)
        event_position = jnp.full(step.shape, count)
        event_value = jnp.full(step.shape, self.lr, dtype=_float_dtype())
        for position, schedule in enumerate(self.schedulers):
            if isinstance(schedule, CosineAnnealingWarmRestarts):
                when, value = step, schedule._lr_at_step(step)
            elif isinstance(schedule, CosineAnnealingLR):
                period, first = 2 * schedule.T_max, schedule.T_max + 1
                when = jnp.where(step >= first, step - (step - first) % period, -1)
                # torch: group["lr"] (0 there) + (base_lr - eta_min) * (1 - cos(pi / T_max)) / 2
                value = 0.0 + (self.lr - 0.0) * (1 - math.cos(math.pi / schedule.T_max)) / 2
            else:
                continue
            later = (when > event_step) | ((when == event_step) & (when >= 0) & (position > event_position))
            event_step = jnp.where(later, when, event_step)
            event_position = jnp.where(later, position, event_position)
            event_value = jnp.where(later, value, event_value)
        result = event_value
        for position, schedule in enumerate(self.schedulers):
            if isinstance(schedule, CosineAnnealingWarmRestarts):
                continue  # it overwrites at every step, so nothing of it follows the last overwrite
            # Steps whose update came after the overwrite: from its step on for later list positions.
            start = jnp.where(position > event_position, event_step - 1, event_step)
            result = result * _safe_ratio(self._factor(schedule, step), self._factor(schedule, start))
        return result


def chained_scheduler(schedulers: Sequence[_Schedule], *, steps_per_epoch: int | None = None) -> ChainedScheduler:
    """Step several schedules at once, composing their updates in list order.

    PyTorch equivalent: ``torch.optim.lr_scheduler.ChainedScheduler(schedulers, optimizer=None)``, with the
    schedulers constructed in list order on one optimizer.

    torch's ``step()`` calls every scheduler's ``step()`` in turn, each updating ``group["lr"]`` from its
    current value. :class:`StepLR`, :class:`MultiStepLR`, :class:`ExponentialLR`, :class:`ConstantLR` and
    :class:`LinearLR` multiply it by a factor, so the chain gives ``lr * prod_i factor_i(k)`` with
    ``factor_i(k) = schedulers[i](k) / lr``. Two schedules overwrite it from the base lr instead, and the
    chain keeps torch's result: :class:`CosineAnnealingWarmRestarts` at every step (the factors of the
    schedules after it in the list still apply), :class:`CosineAnnealingLR` (``eta_min=0`` only) at its
    restarts ``T_max + 1 + 2 j T_max``, where its own factor had just taken the lr to 0. All schedules
    must share the same ``lr`` and have ``steps_per_epoch=None`` (give ``steps_per_epoch`` here).

    Refused, with an error naming the schedule: a CosineAnnealingLR with ``eta_min != 0`` (torch's
    update ``eta_min + (lr - eta_min) * ratio`` is affine: no exact closed form in a chain), more than
    one CosineAnnealingLR / CosineAnnealingWarmRestarts in a chain (torch's restart adds to an lr that
    the other one has rewritten), OneCycleLR, ReduceLROnPlateau (torch refuses it) and nested composites.

    >>> schedule = chained_scheduler([constant_lr(0.05, factor=0.1, total_iters=2), exponential_lr(0.05, gamma=0.9)])
    >>> [round(float(schedule(count)), 6) for count in (0, 1, 2, 3)]  # torch's docstring example
    [0.005, 0.0045, 0.0405, 0.03645]
    """
    return ChainedScheduler(schedulers, steps_per_epoch=steps_per_epoch)


# ----------------------------------------------------------------------------------------------------
# The current learning rate of an optimizer state
# ----------------------------------------------------------------------------------------------------

# fnml.optim records the lr each optimizer was built with, keyed by its update function (weakly: the
# entry goes with the optimizer); current_lr reads it back from a TrainState's tx.
_RECORDED_LR: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _record_lr(tx: optax.GradientTransformation, lr: Any) -> None:
    """Remember the lr (a float, a schedule, or {label: lr} for param groups) ``tx`` was built with."""
    try:
        _RECORDED_LR[tx.update] = lr
    except TypeError:  # an update that cannot be weakly referenced: current_lr then needs lr=
        pass


def _recorded_lr(tx: Any) -> Any:
    """The lr :func:`_record_lr` remembered for ``tx``, else None."""
    update = getattr(tx, "update", None)
    try:
        return _RECORDED_LR.get(update) if update is not None else None
    except TypeError:  # not weakly referenceable: never recorded
        return None


def _count_in(opt_state: Any) -> jax.Array | None:
    """The first optimizer step counter (a field named ``count``) inside an optax state, else None."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == "count":
            return leaf
    return None


def _lr_from_state(lr: Any, opt_state: Any, step: Any, where: str) -> jax.Array:
    if isinstance(lr, ReduceLROnPlateau):
        return lr.state_in(opt_state).lr
    if not callable(lr):
        check_number("lr", lr, where=where)
        return jnp.asarray(lr, dtype=_float_dtype())
    count = _count_in(opt_state)
    if count is None:
        count = step
    if count is None:
        raise ValueError(
            f"{where}: the optimizer state holds no step counter (a 'count' field) to evaluate the lr schedule "
            "at; pass the TrainState (its step is used)"
        )
    return jnp.asarray(lr(count))


def current_lr(state: Any, lr: Any = None) -> jax.Array | dict[Any, jax.Array]:
    """The learning rate the optimizer applies at its next update: torch's ``scheduler.get_last_lr()[0]``.

    PyTorch equivalent: ``scheduler.get_last_lr()[0]`` (or ``optimizer.param_groups[0]["lr"]``) between two
    training steps, after ``scheduler.step()`` has followed every ``optimizer.step()``.

    ``state`` is a ``train.TrainState`` or a bare optax optimizer state. ``lr`` is what the optimizer was
    built with: a float, a schedule (``count -> lr``), a :class:`ReduceLROnPlateau` chained with its
    ``scale_updates()`` (its state's current lr is returned), or a dict ``{label: lr}`` for
    ``optim.param_groups`` (a dict ``{label: current lr}`` is returned, torch's list per group). With
    ``lr=None`` it is read off ``state.tx`` when that is an optimizer built by an ``fnml.optim`` factory or
    ``optim.param_groups`` of them; a ``TrainState`` of any other transformation (e.g. an ``optax.chain``
    around one) needs ``lr=``.

    Convention (torch's): after ``k`` training steps this is ``schedule(k)``, the value torch's
    ``get_last_lr()`` shows after ``k`` ``scheduler.step()`` calls, which the optimizer uses for step
    ``k + 1``. The schedule is evaluated at the step counter inside the optimizer state (each fnml
    optimizer's ``count``, so ``optax.MultiSteps`` micro-batches are not counted), or at
    ``TrainState.step`` when the state has none. The scheduled lr, as torch reports it: Adagrad's
    ``lr_decay`` and OneCycle's momentum are not folded in. Jittable (returns a scalar array).

    >>> from flax import nnx
    >>> from fnml import layers, optim, train
    >>> state = train.TrainState.create(layers.SimpleNN(rngs=nnx.Rngs(0)), optim.sgd(lr=step_lr(0.1, 2)))
    >>> round(float(current_lr(state)), 6)
    0.1
    >>> opt_state = optim.adam(lr=0.01).init({"w": jnp.zeros(2)})  # a bare optax state: give the lr
    >>> round(float(current_lr(opt_state, lr=0.01)), 6)
    0.01
    """
    where = "current_lr"
    tx = getattr(state, "tx", None)
    is_train_state = tx is not None and hasattr(state, "opt_state")
    opt_state = state.opt_state if is_train_state else state
    step = getattr(state, "step", None) if is_train_state else None
    if lr is None:
        if not is_train_state:
            raise ValueError(
                f"{where}: with a bare optimizer state, pass lr= (the float or schedule the optimizer was "
                f"built with), got lr=None and a {type(state).__name__}"
            )
        lr = _recorded_lr(tx)
        if lr is None:
            raise ValueError(
                f"{where}: the lr of state.tx is not known (it was not built by an fnml.optim factory, e.g. an "
                "optax.chain around one); pass lr= (the float or schedule the optimizer was built with)"
            )
    if isinstance(lr, Mapping):
        groups = [node for node in jax.tree_util.tree_leaves(opt_state, is_leaf=_is_partition_state)]
        groups = [node for node in groups if _is_partition_state(node)]
        if not groups:
            raise ValueError(
                f"{where}: lr is a dict of param groups but the optimizer state holds no optim.param_groups "
                f"state, got lr={lr!r}"
            )
        inner = groups[0].inner_states
        missing = sorted(set(lr) - set(inner), key=repr)
        if missing:
            raise ValueError(
                f"{where}: lr has groups {missing!r} that the optimizer state lacks "
                f"(it has {sorted(inner, key=repr)!r})"
            )
        return {label: _lr_from_state(lr[label], inner[label], step, where) for label in lr}
    if not (callable(lr) or isinstance(lr, ReduceLROnPlateau)) and not isinstance(lr, (int, float)):
        raise TypeError(f"{where}: lr must be a float, a schedule, a ReduceLROnPlateau or a dict of them, got {lr!r}")
    return _lr_from_state(lr, opt_state, step, where)


def _is_partition_state(node: Any) -> bool:
    """optax.multi_transform's state (what optim.param_groups builds)."""
    return isinstance(node, optax.MultiTransformState)

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
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
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
    "ConstantLR",
    "CosineAnnealingLR",
    "ExponentialLR",
    "LinearLR",
    "MultiStepLR",
    "OneCycleLR",
    "ReduceLROnPlateau",
    "ReduceLROnPlateauState",
    "StepLR",
    "constant_lr",
    "cosine_annealing_lr",
    "exponential_lr",
    "linear_lr",
    "multistep_lr",
    "one_cycle_lr",
    "reduce_lr_on_plateau",
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

"""fnml.schedules against real torch.optim.lr_scheduler, stepped exactly like a user would.

Every schedule is compared over three times its length, per optimizer update and per epoch, in
float64 (max |diff| <= 1e-12): torch's lr is a Python float (double), so the float64 comparison is the
exactness check. The lr (and OneCycle's momentum) is read from torch's optimizer param_groups before
each ``optimizer.step()``, i.e. the value torch's optimizer actually uses for that update.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from helpers import assert_trees_close, cache_size, max_abs_diff, one_torch_thread, tolerance
from torch.optim import lr_scheduler

from fnml import schedules


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():  # torch on tiny tensors: its thread pool only costs (helpers.one_torch_thread)
        yield


F64 = tolerance("float64")


def _torch_trace(make_scheduler, *, updates, steps_per_epoch=None, optimizer="sgd", max_scheduler_steps=None):
    """lr and momentum torch's optimizer uses at each update (scheduler stepped per epoch if given)."""
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    if optimizer == "adam":
        opt = torch.optim.Adam([param], lr=0.1)
    else:
        opt = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    scheduler = make_scheduler(opt)
    per = steps_per_epoch or 1
    lrs, momenta, scheduler_steps = [], [], 0
    for update in range(updates):
        group = opt.param_groups[0]
        lrs.append(group["lr"])
        momenta.append(group["betas"][0] if optimizer == "adam" else group["momentum"])
        opt.step()
        if (update + 1) % per == 0 and (max_scheduler_steps is None or scheduler_steps < max_scheduler_steps):
            scheduler.step()
            scheduler_steps += 1
    return np.asarray(lrs), np.asarray(momenta)


# (id, torch scheduler factory, fnml factory taking steps_per_epoch, schedule length in scheduler steps)
CASES = [
    (
        "step_lr",
        lambda o: lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
        lambda spe: schedules.step_lr(0.1, step_size=3, gamma=0.5, steps_per_epoch=spe),
        12,
    ),
    (
        "step_lr-default-gamma",
        lambda o: lr_scheduler.StepLR(o, step_size=4),
        lambda spe: schedules.step_lr(0.1, 4, steps_per_epoch=spe),
        12,
    ),
    (
        "multistep_lr",
        lambda o: lr_scheduler.MultiStepLR(o, milestones=[2, 5, 9], gamma=0.3),
        lambda spe: schedules.multistep_lr(0.1, milestones=[2, 5, 9], gamma=0.3, steps_per_epoch=spe),
        10,
    ),
    (
        "multistep_lr-milestone-0",
        lambda o: lr_scheduler.MultiStepLR(o, milestones=[0, 4]),
        lambda spe: schedules.multistep_lr(0.1, [0, 4], steps_per_epoch=spe),
        6,
    ),
    (
        "exponential_lr",
        lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9),
        lambda spe: schedules.exponential_lr(0.1, gamma=0.9, steps_per_epoch=spe),
        20,
    ),
    (
        "cosine-T10-eta1e-3",
        lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
        lambda spe: schedules.cosine_annealing_lr(0.1, T_max=10, eta_min=0.001, steps_per_epoch=spe),
        10,
    ),
    (
        "cosine-T7",
        lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=7),
        lambda spe: schedules.cosine_annealing_lr(0.1, T_max=7, steps_per_epoch=spe),
        7,
    ),
    (
        "cosine-T1",
        lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=1, eta_min=0.01),
        lambda spe: schedules.cosine_annealing_lr(0.1, T_max=1, eta_min=0.01, steps_per_epoch=spe),
        4,
    ),
    (
        "cosine-T100-eta5e-2",
        lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=100, eta_min=0.05),
        lambda spe: schedules.cosine_annealing_lr(0.1, T_max=100, eta_min=0.05, steps_per_epoch=spe),
        100,
    ),
    (
        "cosine-T1000",
        lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=1000, eta_min=0.001),
        lambda spe: schedules.cosine_annealing_lr(0.1, T_max=1000, eta_min=0.001, steps_per_epoch=spe),
        1000,
    ),
    (
        "linear_lr-default",
        lambda o: lr_scheduler.LinearLR(o),
        lambda spe: schedules.linear_lr(0.1, steps_per_epoch=spe),
        5,
    ),
    (
        "linear_lr-ramp",
        lambda o: lr_scheduler.LinearLR(o, start_factor=0.25, end_factor=0.75, total_iters=8),
        lambda spe: schedules.linear_lr(0.1, start_factor=0.25, end_factor=0.75, total_iters=8, steps_per_epoch=spe),
        8,
    ),
    (
        "linear_lr-decay-to-0",
        lambda o: lr_scheduler.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=4),
        lambda spe: schedules.linear_lr(0.1, start_factor=1.0, end_factor=0.0, total_iters=4, steps_per_epoch=spe),
        4,
    ),
    (
        "linear_lr-total_iters-0",
        lambda o: lr_scheduler.LinearLR(o, start_factor=0.5, total_iters=0),
        lambda spe: schedules.linear_lr(0.1, start_factor=0.5, total_iters=0, steps_per_epoch=spe),
        3,
    ),
    (
        "constant_lr-default",
        lambda o: lr_scheduler.ConstantLR(o),
        lambda spe: schedules.constant_lr(0.1, steps_per_epoch=spe),
        5,
    ),
    (
        "constant_lr-0.3x4",
        lambda o: lr_scheduler.ConstantLR(o, factor=0.3, total_iters=4),
        lambda spe: schedules.constant_lr(0.1, factor=0.3, total_iters=4, steps_per_epoch=spe),
        4,
    ),
    (
        "constant_lr-total_iters-0",
        lambda o: lr_scheduler.ConstantLR(o, factor=0.5, total_iters=0),
        lambda spe: schedules.constant_lr(0.1, factor=0.5, total_iters=0, steps_per_epoch=spe),
        3,
    ),
]


@pytest.mark.parametrize("steps_per_epoch", [None, 2], ids=["per-update", "per-epoch"])
@pytest.mark.parametrize(("make_torch", "make_fnml", "length"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_schedule_matches_torch(make_torch, make_fnml, length, steps_per_epoch):
    updates = 3 * length * (steps_per_epoch or 1)
    torch_lr, torch_momentum = _torch_trace(make_torch, updates=updates, steps_per_epoch=steps_per_epoch)
    schedule = make_fnml(steps_per_epoch)
    fnml_lr = np.asarray(jax.jit(schedule)(jnp.arange(updates)))  # one compile instead of op-by-op
    assert fnml_lr.dtype == np.float64
    assert max_abs_diff(fnml_lr, torch_lr) <= F64["atol"]
    # Python int counts give the same values.
    for count in (0, 1, updates // 2, updates - 1):
        assert float(schedule(count)) == pytest.approx(torch_lr[count], abs=F64["atol"], rel=0)
    # No momentum schedule outside OneCycle; torch leaves the momentum alone too.
    assert schedule.momentum is None
    assert np.all(torch_momentum == 0.9)


def test_cosine_keeps_oscillating_past_t_max():
    # Past T_max torch rises again (period 2 * T_max); optax's cosine decay clamps at eta_min.
    torch_lr, _ = _torch_trace(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.001), updates=30)
    schedule = schedules.cosine_annealing_lr(0.1, T_max=10, eta_min=0.001)
    assert torch_lr[20] == pytest.approx(0.1) and torch_lr[10] == pytest.approx(0.001)
    assert max_abs_diff(np.asarray(schedule(jnp.arange(30))), torch_lr) <= F64["atol"]
    optax_lr = np.asarray(optax.cosine_decay_schedule(0.1, 10, alpha=0.01)(jnp.arange(30)))
    assert max_abs_diff(optax_lr, torch_lr) > 0.05


ONE_CYCLE = [
    ("cos", dict(max_lr=0.1, total_steps=20)),
    ("linear", dict(max_lr=0.1, total_steps=20, anneal_strategy="linear")),
    ("three-phase", dict(max_lr=0.2, total_steps=30, three_phase=True, pct_start=0.4)),
    ("three-phase-linear", dict(max_lr=0.2, total_steps=25, three_phase=True, anneal_strategy="linear")),
    ("epochs-x-steps", dict(max_lr=0.05, epochs=4, steps_per_epoch=5)),
    (
        "custom",
        dict(
            max_lr=0.3,
            total_steps=100,
            pct_start=0.25,
            div_factor=10.0,
            final_div_factor=100.0,
            base_momentum=0.8,
            max_momentum=0.9,
        ),
    ),
    ("pct_start-below-1-step", dict(max_lr=0.1, total_steps=10, pct_start=0.05)),
]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("kwargs", [c[1] for c in ONE_CYCLE], ids=[c[0] for c in ONE_CYCLE])
def test_one_cycle_lr_and_momentum_match_torch_per_update(kwargs, optimizer):
    schedule = schedules.one_cycle_lr(**kwargs)
    total = schedule.total_steps
    # torch refuses to step past total_steps; the optimizer then keeps the last values (fnml holds them).
    torch_lr, torch_momentum = _torch_trace(
        lambda o: lr_scheduler.OneCycleLR(o, **kwargs),
        updates=3 * total,
        optimizer=optimizer,
        max_scheduler_steps=total,
    )
    counts = jnp.arange(3 * total)
    assert max_abs_diff(np.asarray(schedule(counts)), torch_lr) <= F64["atol"]
    assert max_abs_diff(np.asarray(schedule.momentum(counts)), torch_momentum) <= F64["atol"]
    # Not a constant: the cycle really moves both lr and momentum.
    assert np.ptp(torch_lr) > 0.5 * kwargs["max_lr"] and np.ptp(torch_momentum) > 0.05


@pytest.mark.parametrize("kwargs", [c[1] for c in ONE_CYCLE[:3]], ids=[c[0] for c in ONE_CYCLE[:3]])
def test_one_cycle_per_epoch_matches_torch(kwargs):
    # torch's OneCycleLR(total_steps=epochs) stepped once per epoch of 4 updates.
    epochs = kwargs["total_steps"]
    schedule = schedules.one_cycle_lr(**kwargs, steps_per_epoch=4, per_epoch=True)
    torch_lr, torch_beta1 = _torch_trace(
        lambda o: lr_scheduler.OneCycleLR(o, **kwargs),
        updates=3 * epochs * 4,
        steps_per_epoch=4,
        optimizer="adam",
        max_scheduler_steps=epochs,
    )
    counts = jnp.arange(3 * epochs * 4)
    assert max_abs_diff(np.asarray(schedule(counts)), torch_lr) <= F64["atol"]
    assert max_abs_diff(np.asarray(schedule.momentum(counts)), torch_beta1) <= F64["atol"]


def test_one_cycle_without_momentum_cycling_and_torch_refusal():
    schedule = schedules.one_cycle_lr(0.1, total_steps=10, cycle_momentum=False)
    assert schedule.momentum is None
    torch_lr, torch_momentum = _torch_trace(
        lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=10, cycle_momentum=False),
        updates=10,
        max_scheduler_steps=10,
    )
    assert np.all(torch_momentum == 0.9)
    assert max_abs_diff(np.asarray(schedule(jnp.arange(10))), torch_lr) <= F64["atol"]
    # The documented difference: torch raises one step after total_steps, fnml holds the last value.
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    for _ in range(10):
        opt.step()
        scheduler.step()
    with pytest.raises(ValueError, match="Tried to step 11 times"):
        opt.step()
        scheduler.step()
    assert float(schedule(11)) == float(schedule(10)) == float(schedule(10_000))


def test_one_cycle_differs_from_optax_onecycle():
    # optax's cosine_onecycle_schedule peaks and ends one step late (SEMANTICS.md): not torch's boundaries.
    torch_lr, _ = _torch_trace(lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=20), updates=20)
    optax_schedule = optax.cosine_onecycle_schedule(20, 0.1, pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    optax_schedule = jax.jit(optax_schedule)  # takes scalar counts only
    optax_lr = np.asarray([optax_schedule(jnp.asarray(count)) for count in range(20)])
    fnml_lr = np.asarray(schedules.one_cycle_lr(0.1, total_steps=20)(jnp.arange(20)))
    assert max_abs_diff(fnml_lr, torch_lr) <= F64["atol"]
    assert max_abs_diff(optax_lr, torch_lr) > 1e-3


def test_one_cycle_zero_length_phase_raises_like_torch_divides_by_zero():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    with pytest.raises(ZeroDivisionError):
        lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10, pct_start=0.1)
    with pytest.raises(ValueError, match=r"phase 1 of the cycle has zero length with pct_start=0.1"):
        schedules.one_cycle_lr(0.1, total_steps=10, pct_start=0.1)
    with pytest.raises(ValueError, match=r"phase 2 of the cycle has zero length with pct_start=1.0"):
        schedules.one_cycle_lr(0.1, total_steps=10, pct_start=1.0)


JIT_SCHEDULES = [
    ("step_lr", schedules.step_lr(0.1, 3, steps_per_epoch=2)),
    ("multistep_lr", schedules.multistep_lr(0.1, [2, 5])),
    ("exponential_lr", schedules.exponential_lr(0.1, 0.9)),
    ("cosine", schedules.cosine_annealing_lr(0.1, 10, 0.001)),
    ("linear_lr", schedules.linear_lr(0.1)),
    ("constant_lr", schedules.constant_lr(0.1)),
    ("one_cycle", schedules.one_cycle_lr(0.1, total_steps=20, three_phase=True)),
]


@pytest.mark.parametrize("schedule", [c[1] for c in JIT_SCHEDULES], ids=[c[0] for c in JIT_SCHEDULES])
def test_schedules_under_jit_do_not_recompile(schedule):
    jitted = jax.jit(lambda count: (schedule(count), schedule.momentum(count) if schedule.momentum else 0.0))
    eager = np.asarray(schedule(jnp.arange(40)))
    for count in range(40):
        lr, _ = jitted(jnp.asarray(count))
        assert abs(float(lr) - eager[count]) <= F64["atol"]
    assert cache_size(jitted) == 1


def test_jitted_optax_update_with_schedule_matches_torch_sgd_and_does_not_recompile():
    schedule = schedules.cosine_annealing_lr(0.1, T_max=5, eta_min=0.01)
    tx = optax.sgd(learning_rate=schedule)
    params = {"w": jnp.asarray([1.0, -2.0], dtype=jnp.float64)}
    state = tx.init(params)
    grad = {"w": jnp.asarray([0.5, 0.25], dtype=jnp.float64)}

    @jax.jit
    def step(params, state):
        updates, state = tx.update(grad, state, params)
        return optax.apply_updates(params, updates), state

    param = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = torch.optim.SGD([param], lr=0.1)
    scheduler = lr_scheduler.CosineAnnealingLR(opt, T_max=5, eta_min=0.01)
    for _ in range(12):
        params, state = step(params, state)
        param.grad = torch.tensor([0.5, 0.25], dtype=torch.float64)
        opt.step()
        scheduler.step()
    assert_trees_close(params, {"w": param}, dtype="float64")
    assert cache_size(step) == 1


# ----------------------------------------------------------------------------------------------------
# ReduceLROnPlateau
# ----------------------------------------------------------------------------------------------------

PLATEAU_CASES = [
    ("improve-then-plateau", dict(patience=2), [10, 9, 8, 8, 8, 8, 8, 7.9999, 8, 8, 8, 7, 7, 7, 7, 7]),
    ("cooldown", dict(patience=1, cooldown=2, factor=0.5), [5.0] * 14 + [4.0, 4.0, 4.0, 4.0]),
    ("min_lr-and-eps", dict(patience=0, factor=0.5, min_lr=0.02), [1.0] * 10),
    ("eps-skips-small-reductions", dict(patience=0, factor=0.5, eps=0.02), [1.0] * 8),
    (
        "mode-max-rel",
        dict(mode="max", patience=1, threshold=0.1),
        [1, 1.05, 1.2, 1.25, 1.3, 1.33, 1.5, 1.5, 1.5],
    ),
    (
        "mode-max-abs",
        dict(mode="max", patience=1, threshold=0.1, threshold_mode="abs"),
        [1, 1.05, 1.2, 1.25, 1.3, 1.33, 1.5, 1.5, 1.5],
    ),
    (
        "mode-min-abs",
        dict(patience=1, threshold=0.5, threshold_mode="abs"),
        [10, 9.6, 9.4, 9.0, 8.9, 8.8, 8.3, 8.3],
    ),
    (
        "threshold-0-and-nan",
        dict(patience=1, threshold=0.0),
        [3, 3, 2, float("nan"), 2, 1.5, float("nan"), 1.5],
    ),
    ("negative-metrics", dict(patience=1), [-1.0, -1.0001, -1.00005, -2.0, -2.0, -1.5, -1.5, -1.5]),
]


def _torch_plateau_trace(kwargs, metrics):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))], lr=0.1)
    scheduler = lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    trace = []
    for metric in metrics:
        scheduler.step(metric)
        trace.append((opt.param_groups[0]["lr"], scheduler.best, scheduler.num_bad_epochs, scheduler.cooldown_counter))
    return np.asarray(trace, dtype=np.float64)


@pytest.mark.parametrize(("kwargs", "metrics"), [c[1:] for c in PLATEAU_CASES], ids=[c[0] for c in PLATEAU_CASES])
def test_reduce_lr_on_plateau_matches_torch(kwargs, metrics):
    torch_trace = _torch_plateau_trace(kwargs, metrics)
    plateau = schedules.reduce_lr_on_plateau(lr=0.1, **kwargs)
    jitted_step = jax.jit(plateau.step)
    eager_state = jit_state = plateau.init()
    eager, jitted = [], []
    for metric in metrics:
        eager_state = plateau.step(eager_state, metric)
        jit_state = jitted_step(jit_state, jnp.asarray(metric, dtype=jnp.float64))
        eager.append([float(x) for x in eager_state])
        jitted.append([float(x) for x in jit_state])
    np.testing.assert_allclose(np.asarray(eager), torch_trace, **F64)
    np.testing.assert_allclose(np.asarray(jitted), torch_trace, **F64)
    assert cache_size(jitted_step) == 1
    assert torch_trace[-1, 0] < 0.1  # every script reduces the lr at least once


def test_reduce_lr_on_plateau_init_state():
    state = schedules.reduce_lr_on_plateau(lr=0.5, mode="max").init()
    assert float(state.lr) == 0.5 and float(state.best) == -math.inf
    assert int(state.num_bad_epochs) == 0 and int(state.cooldown_counter) == 0
    assert float(schedules.reduce_lr_on_plateau(lr=0.5).init().best) == math.inf


def test_reduce_lr_on_plateau_drives_adam_like_torch(dtype, torch_dtype):
    """Adam + ReduceLROnPlateau through a short training run, metric scripted per epoch."""
    lr, epochs, batches = 0.05, 10, 3
    metric_script = [1.0, 0.9, 0.95, 0.97, 0.85, 0.9, 0.9, 0.9, 0.8, 0.81]
    x = torch.randn(batches, 4, 3, dtype=torch.float64)
    y = torch.randn(batches, 4, 2, dtype=torch.float64)
    model = torch.nn.Linear(3, 2).to(torch_dtype)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = lr_scheduler.ReduceLROnPlateau(opt, patience=1, factor=0.5, cooldown=1)

    # fnml side: same initial weights, kernel = weight.T (in, out).
    params = {
        "kernel": jnp.asarray(model.weight.detach().numpy().T),
        "bias": jnp.asarray(model.bias.detach().numpy()),
    }
    plateau = schedules.reduce_lr_on_plateau(lr=lr, patience=1, factor=0.5, cooldown=1)
    tx = optax.chain(optax.adam(lr), plateau.scale_updates())
    opt_state = tx.init(params)

    def loss_fn(params, xb, yb):
        return jnp.mean((xb @ params["kernel"] + params["bias"] - yb) ** 2)

    @jax.jit
    def train_step(params, opt_state, xb, yb):
        grads = jax.grad(loss_fn)(params, xb, yb)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    step_plateau = jax.jit(plateau.step_opt_state)
    torch_lrs, fnml_lrs = [], []
    for epoch in range(epochs):
        for b in range(batches):
            xb, yb = x[b].to(torch_dtype), y[b].to(torch_dtype)
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(xb), yb).backward()
            opt.step()
            params, opt_state = train_step(params, opt_state, jnp.asarray(xb.numpy()), jnp.asarray(yb.numpy()))
        scheduler.step(metric_script[epoch])
        opt_state = step_plateau(opt_state, metric_script[epoch])
        torch_lrs.append(opt.param_groups[0]["lr"])
        fnml_lrs.append(float(plateau.state_in(opt_state).lr))
    np.testing.assert_allclose(fnml_lrs, torch_lrs, **F64)
    assert len(set(torch_lrs)) >= 3  # the script triggers two reductions
    expected = {"kernel": model.weight.detach().T, "bias": model.bias.detach()}
    tol = "float64" if dtype == "float64" else "float32_trajectory"
    assert_trees_close(params, expected, dtype=tol)
    assert cache_size(train_step) == 1 and cache_size(step_plateau) == 1


def test_plateau_state_in_without_plateau_raises():
    plateau = schedules.reduce_lr_on_plateau(lr=0.1)
    with pytest.raises(ValueError, match="opt_state holds no ReduceLROnPlateauState"):
        plateau.state_in(optax.adam(0.1).init({"w": jnp.zeros(2)}))


# ----------------------------------------------------------------------------------------------------
# Validation: every error path
# ----------------------------------------------------------------------------------------------------

S = schedules
ERRORS = [
    ("step-lr-negative-lr", lambda: S.step_lr(-0.1, 3), ValueError, r"StepLR: lr must be > 0 .*got lr=-0.1"),
    (
        "step-size-0",
        lambda: S.step_lr(0.1, 0),
        ValueError,
        r"step_size must be a positive integer, got step_size=0",
    ),
    (
        "step-size-float",
        lambda: S.step_lr(0.1, 2.5),
        TypeError,
        r"step_size must be a positive integer, got 2.5 \(float\)",
    ),
    (
        "step-gamma-0",
        lambda: S.step_lr(0.1, 3, gamma=0.0),
        ValueError,
        r"StepLR: gamma must be > 0.*gamma=0.0",
    ),
    (
        "steps_per_epoch-0",
        lambda: S.step_lr(0.1, 3, steps_per_epoch=0),
        ValueError,
        r"steps_per_epoch must be a positive integer, got steps_per_epoch=0",
    ),
    (
        "milestones-not-list",
        lambda: S.multistep_lr(0.1, 5),
        TypeError,
        r"milestones must be a non-empty list",
    ),
    ("milestones-empty", lambda: S.multistep_lr(0.1, []), ValueError, r"milestones must be a non-empty list"),
    (
        "milestones-not-increasing",
        lambda: S.multistep_lr(0.1, [5, 3]),
        ValueError,
        r"milestones must be strictly increasing, got milestones=\[5, 3\]",
    ),
    ("milestones-repeated", lambda: S.multistep_lr(0.1, [3, 3]), ValueError, r"strictly increasing"),
    (
        "milestone-negative",
        lambda: S.multistep_lr(0.1, [-1, 3]),
        ValueError,
        r"each milestone must be an int >= 0, got each milestone=-1",
    ),
    (
        "multistep-gamma-negative",
        lambda: S.multistep_lr(0.1, [3], gamma=-0.1),
        ValueError,
        r"gamma must be > 0",
    ),
    (
        "exponential-gamma-0",
        lambda: S.exponential_lr(0.1, 0),
        ValueError,
        r"ExponentialLR: gamma must be > 0",
    ),
    ("exponential-gamma-str", lambda: S.exponential_lr(0.1, "0.9"), TypeError, r"gamma must be a number"),
    (
        "cosine-T_max-0",
        lambda: S.cosine_annealing_lr(0.1, 0),
        ValueError,
        r"T_max must be a positive integer, got T_max=0",
    ),
    (
        "cosine-eta_min-negative",
        lambda: S.cosine_annealing_lr(0.1, 5, -1.0),
        ValueError,
        r"eta_min must be >= 0",
    ),
    (
        "linear-start-0",
        lambda: S.linear_lr(0.1, start_factor=0.0),
        ValueError,
        r"start_factor must be in \(0, 1\], got start_factor=0.0",
    ),
    (
        "linear-start-above-1",
        lambda: S.linear_lr(0.1, start_factor=1.5),
        ValueError,
        r"start_factor must be in",
    ),
    (
        "linear-end-above-1",
        lambda: S.linear_lr(0.1, end_factor=1.5),
        ValueError,
        r"end_factor must be in \[0.0, 1.0\]",
    ),
    (
        "linear-total-negative",
        lambda: S.linear_lr(0.1, total_iters=-1),
        ValueError,
        r"total_iters must be an int >= 0, got total_iters=-1",
    ),
    ("constant-factor-0", lambda: S.constant_lr(0.1, factor=0.0), ValueError, r"factor must be in \(0, 1\]"),
    (
        "constant-total-float",
        lambda: S.constant_lr(0.1, total_iters=2.0),
        TypeError,
        r"total_iters must be an int, got 2.0 \(float\)",
    ),
    (
        "one-cycle-no-length",
        lambda: S.one_cycle_lr(0.1),
        ValueError,
        r"define either total_steps or \(epochs and steps_per_epoch\)",
    ),
    (
        "one-cycle-epochs-only",
        lambda: S.one_cycle_lr(0.1, epochs=3),
        ValueError,
        r"define either total_steps",
    ),
    (
        "one-cycle-total-0",
        lambda: S.one_cycle_lr(0.1, total_steps=0),
        ValueError,
        r"total_steps must be a positive integer, got total_steps=0",
    ),
    (
        "one-cycle-epochs-0",
        lambda: S.one_cycle_lr(0.1, epochs=0, steps_per_epoch=3),
        ValueError,
        r"epochs must be a positive integer",
    ),
    (
        "one-cycle-steps_per_epoch-0",
        lambda: S.one_cycle_lr(0.1, epochs=2, steps_per_epoch=0),
        ValueError,
        r"steps_per_epoch must be a positive integer",
    ),
    (
        "one-cycle-per-epoch-without-steps",
        lambda: S.one_cycle_lr(0.1, total_steps=5, per_epoch=True),
        ValueError,
        r"per_epoch=True needs steps_per_epoch",
    ),
    (
        "one-cycle-per_epoch-not-bool",
        lambda: S.one_cycle_lr(0.1, total_steps=5, per_epoch=1),
        TypeError,
        r"per_epoch must be a bool",
    ),
    (
        "one-cycle-pct_start-above-1",
        lambda: S.one_cycle_lr(0.1, total_steps=10, pct_start=1.5),
        ValueError,
        r"pct_start must be in \[0.0, 1.0\], got pct_start=1.5",
    ),
    (
        "one-cycle-pct_start-negative",
        lambda: S.one_cycle_lr(0.1, total_steps=10, pct_start=-0.1),
        ValueError,
        r"pct_start must be in",
    ),
    (
        "one-cycle-anneal",
        lambda: S.one_cycle_lr(0.1, total_steps=10, anneal_strategy="exp"),
        ValueError,
        r"anneal_strategy must be one of 'cos', 'linear'; got anneal_strategy='exp'",
    ),
    (
        "one-cycle-cycle_momentum-not-bool",
        lambda: S.one_cycle_lr(0.1, total_steps=10, cycle_momentum="yes"),
        TypeError,
        r"cycle_momentum must be a bool",
    ),
    (
        "one-cycle-base_momentum-negative",
        lambda: S.one_cycle_lr(0.1, total_steps=10, base_momentum=-0.1),
        ValueError,
        r"base_momentum must be >= 0",
    ),
    (
        "one-cycle-max_momentum-str",
        lambda: S.one_cycle_lr(0.1, total_steps=10, max_momentum="0.9"),
        TypeError,
        r"max_momentum must be a number",
    ),
    (
        "one-cycle-div_factor-0",
        lambda: S.one_cycle_lr(0.1, total_steps=10, div_factor=0),
        ValueError,
        r"div_factor must be > 0",
    ),
    (
        "one-cycle-final_div_factor-negative",
        lambda: S.one_cycle_lr(0.1, total_steps=10, final_div_factor=-1.0),
        ValueError,
        r"final_div_factor must be > 0",
    ),
    (
        "one-cycle-three_phase-not-bool",
        lambda: S.one_cycle_lr(0.1, total_steps=10, three_phase=None),
        TypeError,
        r"three_phase must be a bool",
    ),
    ("one-cycle-max_lr-0", lambda: S.one_cycle_lr(0.0, total_steps=10), ValueError, r"max_lr must be > 0"),
    (
        "plateau-mode",
        lambda: S.reduce_lr_on_plateau(0.1, mode="minimum"),
        ValueError,
        r"mode must be one of 'min', 'max'; got mode='minimum'",
    ),
    (
        "plateau-factor-1",
        lambda: S.reduce_lr_on_plateau(0.1, factor=1.0),
        ValueError,
        r"factor must be in \[0, 1\) \(new_lr = lr \* factor\), got factor=1.0",
    ),
    (
        "plateau-factor-negative",
        lambda: S.reduce_lr_on_plateau(0.1, factor=-0.5),
        ValueError,
        r"factor must be in",
    ),
    (
        "plateau-factor-str",
        lambda: S.reduce_lr_on_plateau(0.1, factor="0.1"),
        TypeError,
        r"factor must be a number",
    ),
    (
        "plateau-patience-negative",
        lambda: S.reduce_lr_on_plateau(0.1, patience=-1),
        ValueError,
        r"patience must be an int >= 0, got patience=-1",
    ),
    (
        "plateau-threshold-negative",
        lambda: S.reduce_lr_on_plateau(0.1, threshold=-1e-4),
        ValueError,
        r"threshold must be >= 0",
    ),
    (
        "plateau-threshold_mode",
        lambda: S.reduce_lr_on_plateau(0.1, threshold_mode="relative"),
        ValueError,
        r"threshold_mode must be one of 'rel', 'abs'",
    ),
    (
        "plateau-cooldown-float",
        lambda: S.reduce_lr_on_plateau(0.1, cooldown=1.5),
        TypeError,
        r"cooldown must be an int, got 1.5 \(float\)",
    ),
    (
        "plateau-min_lr-negative",
        lambda: S.reduce_lr_on_plateau(0.1, min_lr=-1.0),
        ValueError,
        r"min_lr must be >= 0",
    ),
    ("plateau-eps-negative", lambda: S.reduce_lr_on_plateau(0.1, eps=-1e-8), ValueError, r"eps must be >= 0"),
    (
        "plateau-lr-0",
        lambda: S.reduce_lr_on_plateau(0.0),
        ValueError,
        r"ReduceLROnPlateau: lr must be > 0",
    ),
]


@pytest.mark.parametrize(("build", "error", "match"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_invalid_arguments_raise(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_torch_rejects_what_fnml_rejects():
    # The checks mirror torch's own where torch has one (others are documented as stricter).
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="Factor should be < 1.0"):
        lr_scheduler.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode minimum is unknown"):
        lr_scheduler.ReduceLROnPlateau(opt, mode="minimum")
    with pytest.raises(ValueError, match="Starting multiplicative factor"):
        lr_scheduler.LinearLR(opt, start_factor=0.0)
    with pytest.raises(ValueError, match="Expected float between 0 and 1 pct_start"):
        lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10, pct_start=1.5)
    with pytest.raises(ValueError, match="You must define either total_steps OR"):
        lr_scheduler.OneCycleLR(opt, max_lr=0.1)

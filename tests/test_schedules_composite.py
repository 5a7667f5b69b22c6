"""SequentialLR, ChainedScheduler, CosineAnnealingWarmRestarts and current_lr against real torch.

Schedules: torch's scheduler drives a real torch optimizer and ``optimizer.param_groups[0]["lr"]`` is
read after each ``scheduler.step()`` (and once after construction), 200 scheduler steps, float64 within
1e-12. End to end: an fnml optimizer with the schedule trains a tiny linear model through
``train.make_train_step`` and matches torch's optimizer + scheduler trajectory in float64 (1e-12), while
``schedules.current_lr(state)`` matches torch's ``scheduler.get_last_lr()[0]`` after every step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from helpers import assert_trees_close, cache_size, max_abs_diff, one_torch_thread, tolerance
from torch.optim import lr_scheduler

from fnml import layers, losses, optim, schedules, train

S = schedules
F64 = tolerance("float64")
LR = 0.1


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():
        yield


def _torch_lrs(build, *, scheduler_steps):
    """group["lr"] after construction and after each of ``scheduler_steps - 1`` scheduler steps."""
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([param], lr=LR)
    scheduler = build(opt)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(scheduler_steps - 1):
        opt.step()
        scheduler.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert scheduler.get_last_lr()[0] == lrs[-1]
    return np.asarray(lrs)


# (id, torch scheduler factory, fnml schedule factory taking steps_per_epoch)
T = lr_scheduler
CASES = [
    (
        "sequential-warmup-cosine",
        lambda o: T.SequentialLR(
            o, [T.LinearLR(o, start_factor=0.1, total_iters=10), T.CosineAnnealingLR(o, T_max=50, eta_min=1e-3)], [10]
        ),
        lambda spe: S.sequential_lr(
            [S.linear_lr(LR, start_factor=0.1, total_iters=10), S.cosine_annealing_lr(LR, T_max=50, eta_min=1e-3)],
            milestones=[10],
            steps_per_epoch=spe,
        ),
    ),
    (
        "sequential-constant-exponential-restarts",
        lambda o: T.SequentialLR(
            o,
            [
                T.ConstantLR(o, factor=0.5, total_iters=3),
                T.ExponentialLR(o, 0.95),
                T.CosineAnnealingWarmRestarts(o, 7, 2),
            ],
            [20, 60],
        ),
        lambda spe: S.sequential_lr(
            [S.constant_lr(LR, 0.5, 3), S.exponential_lr(LR, 0.95), S.cosine_annealing_warm_restarts(LR, 7, 2)],
            [20, 60],
            steps_per_epoch=spe,
        ),
    ),
    (
        "sequential-step-constant0-multistep0",
        lambda o: T.SequentialLR(
            o, [T.StepLR(o, 3, 0.5), T.ConstantLR(o, 0.5, total_iters=0), T.MultiStepLR(o, [0, 4, 9])], [20, 60]
        ),
        lambda spe: S.sequential_lr(
            [S.step_lr(LR, 3, 0.5), S.constant_lr(LR, 0.5, 0), S.multistep_lr(LR, [0, 4, 9])],
            [20, 60],
            steps_per_epoch=spe,
        ),
    ),
    (
        "sequential-cosine-then-linear",
        lambda o: T.SequentialLR(o, [T.CosineAnnealingLR(o, 8), T.LinearLR(o, 0.2, 0.6, total_iters=30)], [13]),
        lambda spe: S.sequential_lr(
            [S.cosine_annealing_lr(LR, 8), S.linear_lr(LR, 0.2, 0.6, 30)], [13], steps_per_epoch=spe
        ),
    ),
    (
        "warm-restarts-T_mult-1",
        lambda o: T.CosineAnnealingWarmRestarts(o, T_0=10, eta_min=0.01),
        lambda spe: S.cosine_annealing_warm_restarts(LR, T_0=10, eta_min=0.01, steps_per_epoch=spe),
    ),
    (
        "warm-restarts-T_mult-2",
        lambda o: T.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2),
        lambda spe: S.cosine_annealing_warm_restarts(LR, T_0=3, T_mult=2, steps_per_epoch=spe),
    ),
    (
        "warm-restarts-T_0-1-T_mult-3",
        lambda o: T.CosineAnnealingWarmRestarts(o, T_0=1, T_mult=3, eta_min=0.02),
        lambda spe: S.cosine_annealing_warm_restarts(LR, 1, 3, 0.02, steps_per_epoch=spe),
    ),
    (
        "chained-constant-exponential",
        lambda o: T.ChainedScheduler([T.ConstantLR(o, factor=0.1, total_iters=20), T.ExponentialLR(o, gamma=0.9)]),
        lambda spe: S.chained_scheduler(
            [S.constant_lr(LR, factor=0.1, total_iters=20), S.exponential_lr(LR, gamma=0.9)], steps_per_epoch=spe
        ),
    ),
    (
        "chained-warmup-cosine-past-T_max",
        lambda o: T.ChainedScheduler([T.LinearLR(o, 0.1, total_iters=10), T.CosineAnnealingLR(o, 30)]),
        lambda spe: S.chained_scheduler(
            [S.linear_lr(LR, 0.1, total_iters=10), S.cosine_annealing_lr(LR, 30)], steps_per_epoch=spe
        ),
    ),
    (
        "chained-cosine-step",
        lambda o: T.ChainedScheduler([T.CosineAnnealingLR(o, 25), T.StepLR(o, 7, 0.7)]),
        lambda spe: S.chained_scheduler([S.cosine_annealing_lr(LR, 25), S.step_lr(LR, 7, 0.7)], steps_per_epoch=spe),
    ),
    (
        "chained-linear-to-0-cosine-multistep",
        lambda o: T.ChainedScheduler(
            [T.LinearLR(o, 1.0, 0.0, total_iters=10), T.CosineAnnealingLR(o, 20), T.MultiStepLR(o, [5, 50], 0.5)]
        ),
        lambda spe: S.chained_scheduler(
            [S.linear_lr(LR, 1.0, 0.0, 10), S.cosine_annealing_lr(LR, 20), S.multistep_lr(LR, [5, 50], 0.5)],
            steps_per_epoch=spe,
        ),
    ),
    (
        "chained-exponential-restarts",
        lambda o: T.ChainedScheduler([T.ExponentialLR(o, 0.99), T.CosineAnnealingWarmRestarts(o, 10, 2, 1e-3)]),
        lambda spe: S.chained_scheduler(
            [S.exponential_lr(LR, 0.99), S.cosine_annealing_warm_restarts(LR, 10, 2, 1e-3)], steps_per_epoch=spe
        ),
    ),
    (
        "chained-restarts-exponential",
        lambda o: T.ChainedScheduler([T.CosineAnnealingWarmRestarts(o, 10, 2, 1e-3), T.ExponentialLR(o, 0.99)]),
        lambda spe: S.chained_scheduler(
            [S.cosine_annealing_warm_restarts(LR, 10, 2, 1e-3), S.exponential_lr(LR, 0.99)], steps_per_epoch=spe
        ),
    ),
    (
        "chained-cosine-T_max-1-exponential",
        lambda o: T.ChainedScheduler([T.CosineAnnealingLR(o, 1), T.ExponentialLR(o, 0.9)]),
        lambda spe: S.chained_scheduler([S.cosine_annealing_lr(LR, 1), S.exponential_lr(LR, 0.9)], steps_per_epoch=spe),
    ),
    (
        "chained-single",
        lambda o: T.ChainedScheduler([T.MultiStepLR(o, [0, 30], 0.5)]),
        lambda spe: S.chained_scheduler([S.multistep_lr(LR, [0, 30], 0.5)], steps_per_epoch=spe),
    ),
]


@pytest.mark.parametrize(("make_torch", "make_fnml"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_schedule_matches_torch_for_200_steps(make_torch, make_fnml):
    torch_lr = _torch_lrs(make_torch, scheduler_steps=200)
    schedule = make_fnml(None)
    fnml_lr = np.asarray(jax.jit(schedule)(jnp.arange(200)))
    assert fnml_lr.dtype == np.float64
    assert max_abs_diff(fnml_lr, torch_lr) <= F64["atol"]
    assert np.ptp(torch_lr) > 0.01  # the schedule really moves
    assert float(schedule(7)) == pytest.approx(torch_lr[7], abs=F64["atol"], rel=0)  # Python int counts too
    assert schedule.momentum is None
    # One scheduler step per epoch of 3 updates: scheduler step k // 3.
    per_epoch = make_fnml(3)
    per_epoch_lr = np.asarray(jax.jit(per_epoch)(jnp.arange(600)))
    assert max_abs_diff(per_epoch_lr, np.repeat(torch_lr, 3)) <= F64["atol"]


@pytest.mark.parametrize(("make_fnml",), [(c[2],) for c in CASES[:1] + CASES[5:6] + CASES[8:9]])
def test_composites_under_jit_do_not_recompile(make_fnml):
    schedule = make_fnml(None)
    jitted = jax.jit(schedule)
    eager = np.asarray(schedule(jnp.arange(30)))
    for count in range(30):
        assert abs(float(jitted(jnp.asarray(count, dtype=jnp.int32))) - eager[count]) <= F64["atol"]
    assert cache_size(jitted) == 1


def test_composites_are_hashable_values():
    # TrainState keeps tx static; a schedule is a frozen dataclass, equal by value, hashable.
    a = S.sequential_lr([S.linear_lr(LR), S.cosine_annealing_lr(LR, 5)], [5])
    b = S.SequentialLR([S.linear_lr(LR), S.cosine_annealing_lr(LR, 5)], milestones=(5,))
    assert a == b and hash(a) == hash(b) and a.lr == LR
    assert S.chained_scheduler([S.constant_lr(LR)]).lr == LR


def test_warm_restarts_restart_at_torchs_cycle_boundaries():
    # Cycles of 2, 6, 18, ... steps: fnml's integer closed form restarts where torch's step() does.
    torch_lr = _torch_lrs(lambda o: T.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=3), scheduler_steps=2000)
    schedule = S.cosine_annealing_warm_restarts(LR, T_0=2, T_mult=3)
    assert max_abs_diff(np.asarray(schedule(jnp.arange(2000))), torch_lr) <= F64["atol"]
    restarts = [k for k in range(1, 2000) if torch_lr[k] == LR]
    assert restarts == [2, 8, 26, 80, 242, 728]


# ----------------------------------------------------------------------------------------------------
# End to end: fnml optimizer + schedule through make_train_step == torch optimizer + scheduler
# ----------------------------------------------------------------------------------------------------

STEPS = 30
# (id, torch scheduler, fnml schedule, optimizer name); one case per schedule type.
TRAIN_CASES = [
    ("constant-lr", None, LR, "sgd"),
    ("step", lambda o: T.StepLR(o, 4, 0.5), S.step_lr(LR, 4, 0.5), "sgd"),
    ("multistep", lambda o: T.MultiStepLR(o, [3, 9]), S.multistep_lr(LR, [3, 9]), "sgd"),
    ("exponential", lambda o: T.ExponentialLR(o, 0.9), S.exponential_lr(LR, 0.9), "sgd"),
    ("cosine", lambda o: T.CosineAnnealingLR(o, 10, 1e-3), S.cosine_annealing_lr(LR, 10, 1e-3), "sgd"),
    ("linear", lambda o: T.LinearLR(o, 0.2, total_iters=6), S.linear_lr(LR, 0.2, total_iters=6), "sgd"),
    ("constant", lambda o: T.ConstantLR(o, 0.5, 4), S.constant_lr(LR, 0.5, 4), "sgd"),
    ("one-cycle", lambda o: T.OneCycleLR(o, LR, total_steps=STEPS + 1), S.one_cycle_lr(LR, STEPS + 1), "adamw"),
    (
        "warm-restarts",
        lambda o: T.CosineAnnealingWarmRestarts(o, 4, 2),
        S.cosine_annealing_warm_restarts(LR, 4, 2),
        "sgd",
    ),
    (
        "sequential-warmup-cosine",
        lambda o: T.SequentialLR(o, [T.LinearLR(o, 0.1, total_iters=5), T.CosineAnnealingLR(o, 12)], [5]),
        S.sequential_lr([S.linear_lr(LR, 0.1, total_iters=5), S.cosine_annealing_lr(LR, 12)], [5]),
        "adamw",
    ),
    (
        "sequential-warmup-cosine-sgd",
        lambda o: T.SequentialLR(o, [T.LinearLR(o, 0.1, total_iters=5), T.CosineAnnealingLR(o, 12)], [5]),
        S.sequential_lr([S.linear_lr(LR, 0.1, total_iters=5), S.cosine_annealing_lr(LR, 12)], [5]),
        "sgd",
    ),
    (
        "chained-constant-exponential",
        lambda o: T.ChainedScheduler([T.ConstantLR(o, 0.5, 6), T.ExponentialLR(o, 0.9)]),
        S.chained_scheduler([S.constant_lr(LR, 0.5, 6), S.exponential_lr(LR, 0.9)]),
        "adamw",
    ),
]


def _torch_optimizer(name, params):
    if name == "adamw":
        return torch.optim.AdamW(params, lr=LR, weight_decay=0.05)
    return torch.optim.SGD(params, lr=LR, momentum=0.9)


def _fnml_optimizer(name, lr):
    return optim.adamw(lr=lr, weight_decay=0.05) if name == "adamw" else optim.sgd(lr=lr, momentum=0.9)


@pytest.mark.parametrize(
    ("make_torch", "lr", "optimizer"), [c[1:] for c in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES]
)
def test_training_with_schedule_matches_torch_and_current_lr_is_get_last_lr(make_torch, lr, optimizer):
    torch.manual_seed(0)
    x = torch.randn(STEPS, 8, 3, dtype=torch.float64)
    y = torch.randn(STEPS, 8, 2, dtype=torch.float64)
    model = torch.nn.Linear(3, 2).double()
    opt = _torch_optimizer(optimizer, model.parameters())
    scheduler = make_torch(opt) if make_torch is not None else None

    fnml_model = layers.Linear(3, 2, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    fnml_model.kernel[...] = jnp.asarray(model.weight.detach().numpy().T.copy())
    fnml_model.bias[...] = jnp.asarray(model.bias.detach().numpy().copy())
    state = train.TrainState.create(fnml_model, _fnml_optimizer(optimizer, lr))
    step = train.make_train_step(losses.MSELoss())
    read_lr = jax.jit(S.current_lr)  # jittable: the TrainState is a pytree, its tx static

    torch_lrs, fnml_lrs = [opt.param_groups[0]["lr"]], [float(S.current_lr(state))]
    for b in range(STEPS):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x[b]), y[b]).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        torch_lrs.append(scheduler.get_last_lr()[0] if scheduler is not None else opt.param_groups[0]["lr"])
        state, _ = step(state, jnp.asarray(x[b].numpy()), jnp.asarray(y[b].numpy()))
        fnml_lrs.append(float(read_lr(state)))
    np.testing.assert_allclose(fnml_lrs, torch_lrs, **F64)
    expected = {"kernel": model.weight.detach().numpy().T, "bias": model.bias.detach().numpy()}
    assert_trees_close(state.params, expected, dtype="float64")
    if make_torch is not None:
        assert len(set(torch_lrs)) >= 2  # the lr really changes during the run


# ----------------------------------------------------------------------------------------------------
# current_lr: every optimizer, param groups, plateau, bare states, errors
# ----------------------------------------------------------------------------------------------------

FACTORIES = [optim.sgd, optim.adam, optim.adamw, optim.adamax, optim.nadam, optim.radam, optim.rmsprop]
FACTORIES += [optim.adagrad, optim.adadelta]


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_current_lr_reads_every_fnml_optimizer(factory):
    schedule = S.sequential_lr([S.linear_lr(LR, 0.5, total_iters=2), S.exponential_lr(LR, 0.5)], [2])
    params = {"w": jnp.asarray([1.0, -2.0])}
    grads = {"w": jnp.asarray([0.5, 0.25])}
    for lr in (0.3, schedule):
        tx = factory(lr=lr)
        assert S._recorded_lr(tx) is lr  # recorded by fnml.optim, read back from TrainState.tx
        opt_state = tx.init(params)
        for count in range(4):
            state = train.TrainState(graphdef=None, tx=tx, params=params, rest={}, opt_state=opt_state, step=count)
            expected = lr if not callable(lr) else float(lr(count))
            assert float(S.current_lr(state)) == pytest.approx(expected, abs=1e-15)
            assert float(S.current_lr(opt_state, lr)) == pytest.approx(expected, abs=1e-15)
            _, opt_state = tx.update(grads, opt_state, params)
    # Positional default: sgd() records its default lr.
    assert S._recorded_lr(optim.sgd()) == 1e-3


def test_current_lr_without_a_counter_uses_train_state_step():
    # optax's own sgd keeps no count: a TrainState's step is used; a bare state cannot be read.
    schedule = S.step_lr(LR, 2)
    tx = optax.sgd(0.1)
    opt_state = tx.init({"w": jnp.zeros(2)})
    state = train.TrainState(graphdef=None, tx=tx, params={}, rest={}, opt_state=opt_state, step=jnp.asarray(3))
    assert float(S.current_lr(state, lr=schedule)) == pytest.approx(LR * 0.1)
    with pytest.raises(ValueError, match=r"current_lr: the optimizer state holds no step counter"):
        S.current_lr(opt_state, lr=schedule)


def test_current_lr_param_groups_match_torch_get_last_lr():
    body, head = torch.nn.Parameter(torch.ones(2, dtype=torch.float64)), torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([{"params": [body], "lr": 0.01}, {"params": [head], "lr": 0.1}], momentum=0.9)
    scheduler = T.StepLR(opt, 2, 0.5)
    tx = optim.param_groups(
        {"body": optim.sgd(lr=S.step_lr(0.01, 2, 0.5), momentum=0.9), "head": optim.sgd(lr=S.step_lr(0.1, 2, 0.5))},
        labels={"body": "body", "head": "head"},
    )
    params = {"body": jnp.ones(2), "head": jnp.ones(2)}
    opt_state = tx.init(params)
    for _ in range(5):
        state = train.TrainState(graphdef=None, tx=tx, params=params, rest={}, opt_state=opt_state, step=0)
        lrs = S.current_lr(state)
        assert [float(lrs["body"]), float(lrs["head"])] == pytest.approx(scheduler.get_last_lr(), abs=1e-15)
        _, opt_state = tx.update(params, opt_state, params)
        opt.step()
        scheduler.step()
    # A group built outside fnml.optim: param_groups records nothing, lr= is needed.
    mixed = optim.param_groups({"a": optim.sgd(lr=0.1), "b": optax.sgd(0.1)}, labels={"w": "a"})
    with pytest.raises(ValueError, match="the lr of state.tx is not known"):
        S.current_lr(train.TrainState(None, mixed, {}, {}, mixed.init({"w": jnp.zeros(1)}), 0))


def test_current_lr_reduce_lr_on_plateau_matches_torch():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))], lr=LR)
    scheduler = T.ReduceLROnPlateau(opt, patience=1, factor=0.5)
    plateau = S.reduce_lr_on_plateau(LR, patience=1, factor=0.5)
    tx = optax.chain(optim.sgd(lr=LR), plateau.scale_updates())
    opt_state = tx.init({"w": jnp.zeros(1)})
    for metric in (1.0, 1.0, 1.0, 0.5, 0.6, 0.7, 0.8):
        scheduler.step(metric)
        opt_state = plateau.step_opt_state(opt_state, metric)
        assert float(S.current_lr(opt_state, lr=plateau)) == pytest.approx(scheduler.get_last_lr()[0], abs=1e-15)
    assert scheduler.get_last_lr()[0] < LR / 3


def test_current_lr_counts_multisteps_updates_not_micro_batches():
    schedule = S.step_lr(LR, 1, 0.5)
    model = layers.Linear(2, 1, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    state = train.TrainState.create(model, optax.MultiSteps(optim.sgd(lr=schedule), every_k_schedule=2))
    step = train.make_train_step(losses.MSELoss())
    x, y = jnp.ones((4, 2)), jnp.zeros((4, 1))
    for _ in range(6):  # 6 micro-batches, 3 optimizer updates
        state, _ = step(state, x, y)
    assert int(state.step) == 6
    assert float(S.current_lr(state, lr=schedule)) == pytest.approx(LR * 0.5**3)


CURRENT_LR_ERRORS = [
    (
        "bare-state-without-lr",
        lambda: S.current_lr(optim.adam(lr=0.1).init({"w": jnp.zeros(1)})),
        ValueError,
        r"current_lr: with a bare optimizer state, pass lr= .*got lr=None and a tuple",
    ),
    (
        "optax-chain-unknown-lr",
        lambda: S.current_lr(
            train.TrainState.create(
                layers.Linear(1, 1, rngs=nnx.Rngs(0)), optax.chain(optim.clip_grad_norm(1.0), optim.adam(lr=0.1))
            )
        ),
        ValueError,
        r"current_lr: the lr of state.tx is not known .*pass lr=",
    ),
    (
        "lr-wrong-type",
        lambda: S.current_lr(optim.adam(lr=0.1).init({"w": jnp.zeros(1)}), lr="0.1"),
        TypeError,
        r"current_lr: lr must be a float, a schedule, a ReduceLROnPlateau or a dict of them, got '0.1'",
    ),
    (
        "groups-without-param-groups",
        lambda: S.current_lr(optim.adam(lr=0.1).init({"w": jnp.zeros(1)}), lr={"a": 0.1}),
        ValueError,
        r"current_lr: lr is a dict of param groups but the optimizer state holds no optim.param_groups state",
    ),
    (
        "groups-unknown-label",
        lambda: S.current_lr(
            optim.param_groups({"a": optim.sgd(lr=0.1)}, labels={"w": "a"}).init({"w": jnp.zeros(1)}),
            lr={"a": 0.1, "b": 0.2},
        ),
        ValueError,
        r"current_lr: lr has groups \['b'\] that the optimizer state lacks \(it has \['a'\]\)",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "match"), [c[1:] for c in CURRENT_LR_ERRORS], ids=[c[0] for c in CURRENT_LR_ERRORS]
)
def test_current_lr_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------------------------------
# Validation of the new schedules
# ----------------------------------------------------------------------------------------------------

ERRORS = [
    (
        "cawr-lr-0",
        lambda: S.cosine_annealing_warm_restarts(0.0, 5),
        ValueError,
        r"CosineAnnealingWarmRestarts: lr must be > 0",
    ),
    (
        "cawr-T_0-0",
        lambda: S.cosine_annealing_warm_restarts(LR, 0),
        ValueError,
        r"T_0 must be a positive integer, got T_0=0",
    ),
    (
        "cawr-T_0-float",
        lambda: S.cosine_annealing_warm_restarts(LR, 2.5),
        TypeError,
        r"T_0 must be a positive integer, got 2.5 \(float\)",
    ),
    (
        "cawr-T_mult-0",
        lambda: S.cosine_annealing_warm_restarts(LR, 5, 0),
        ValueError,
        r"T_mult must be an int >= 1, got T_mult=0",
    ),
    (
        "cawr-T_mult-float",
        lambda: S.cosine_annealing_warm_restarts(LR, 5, 1.5),
        TypeError,
        r"T_mult must be an int, got 1.5 \(float\)",
    ),
    (
        "cawr-eta_min-negative",
        lambda: S.cosine_annealing_warm_restarts(LR, 5, eta_min=-0.1),
        ValueError,
        r"eta_min must be >= 0 and finite, got eta_min=-0.1",
    ),
    (
        "cawr-steps_per_epoch-0",
        lambda: S.cosine_annealing_warm_restarts(LR, 5, steps_per_epoch=0),
        ValueError,
        r"steps_per_epoch must be a positive integer, got steps_per_epoch=0",
    ),
    (
        "sequential-not-a-list",
        lambda: S.sequential_lr(S.linear_lr(LR), []),
        TypeError,
        r"SequentialLR: schedulers must be a non-empty list of fnml schedules, got schedulers=LinearLR",
    ),
    (
        "sequential-empty",
        lambda: S.sequential_lr([], []),
        ValueError,
        r"SequentialLR: schedulers must be a non-empty list of fnml schedules, got schedulers=\[\]",
    ),
    (
        "sequential-not-a-schedule",
        lambda: S.sequential_lr([S.linear_lr(LR), lambda count: 0.1], [3]),
        TypeError,
        r"SequentialLR: schedulers\[1\] must be one of StepLR, MultiStepLR, ExponentialLR, ConstantLR, LinearLR, "
        r"CosineAnnealingLR, CosineAnnealingWarmRestarts, got <function",
    ),
    (
        "sequential-one-cycle",
        lambda: S.sequential_lr([S.linear_lr(LR), S.one_cycle_lr(LR, 10)], [3]),
        TypeError,
        r"SequentialLR: schedulers\[1\] must be one of .*, got OneCycleLR",
    ),
    (
        "sequential-plateau",
        lambda: S.sequential_lr([S.linear_lr(LR), S.reduce_lr_on_plateau(LR)], [3]),
        ValueError,
        r"SequentialLR: schedulers\[1\] is a ReduceLROnPlateau, which SequentialLR cannot step",
    ),
    (
        "sequential-nested",
        lambda: S.sequential_lr([S.linear_lr(LR), S.chained_scheduler([S.constant_lr(LR)])], [3]),
        ValueError,
        r"SequentialLR: schedulers\[1\] is a ChainedScheduler; composites cannot be nested",
    ),
    (
        "sequential-sub-steps_per_epoch",
        lambda: S.sequential_lr([S.linear_lr(LR), S.exponential_lr(LR, 0.9, steps_per_epoch=4)], [3]),
        ValueError,
        r"SequentialLR: schedulers\[1\] must have steps_per_epoch=None .*got steps_per_epoch=4",
    ),
    (
        "sequential-different-lr",
        lambda: S.sequential_lr([S.linear_lr(LR), S.exponential_lr(0.2, 0.9)], [3]),
        ValueError,
        r"SequentialLR: every schedule must have the same lr .*got lr=0.1 for schedulers\[0\] and lr=0.2 for "
        r"schedulers\[1\]",
    ),
    (
        "sequential-milestones-not-list",
        lambda: S.sequential_lr([S.linear_lr(LR), S.exponential_lr(LR, 0.9)], 3),
        TypeError,
        r"SequentialLR: milestones must be a list of ints, got milestones=3",
    ),
    (
        "sequential-milestones-count",
        lambda: S.sequential_lr([S.linear_lr(LR), S.exponential_lr(LR, 0.9)], [3, 5]),
        ValueError,
        r"milestones must have one entry fewer than schedulers \(2 schedulers\), got milestones=\[3, 5\]",
    ),
    (
        "sequential-milestone-0",
        lambda: S.sequential_lr([S.linear_lr(LR), S.exponential_lr(LR, 0.9)], [0]),
        ValueError,
        r"SequentialLR: each milestone must be an int >= 1, got each milestone=0",
    ),
    (
        "sequential-milestone-float",
        lambda: S.sequential_lr([S.linear_lr(LR), S.exponential_lr(LR, 0.9)], [2.5]),
        TypeError,
        r"SequentialLR: each milestone must be an int, got 2.5 \(float\)",
    ),
    (
        "sequential-milestones-not-increasing",
        lambda: S.sequential_lr([S.linear_lr(LR), S.exponential_lr(LR, 0.9), S.constant_lr(LR)], [5, 5]),
        ValueError,
        r"SequentialLR: milestones must be strictly increasing, got milestones=\[5, 5\]",
    ),
    (
        "sequential-linear-total_iters-0-later",
        lambda: S.sequential_lr([S.exponential_lr(LR, 0.9), S.linear_lr(LR, total_iters=0)], [5]),
        ValueError,
        r"SequentialLR: schedulers\[1\] is a LinearLR with total_iters=0, which torch's SequentialLR divides by zero",
    ),
    (
        "sequential-steps_per_epoch-0",
        lambda: S.sequential_lr([S.linear_lr(LR)], [], steps_per_epoch=0),
        ValueError,
        r"SequentialLR: steps_per_epoch must be a positive integer, got steps_per_epoch=0",
    ),
    (
        "chained-empty",
        lambda: S.chained_scheduler(()),
        ValueError,
        r"ChainedScheduler: schedulers must be a non-empty list",
    ),
    (
        "chained-cosine-eta_min",
        lambda: S.chained_scheduler([S.linear_lr(LR), S.cosine_annealing_lr(LR, 10, eta_min=0.01)]),
        ValueError,
        r"ChainedScheduler: schedulers\[1\] is a CosineAnnealingLR with eta_min=0.01; .*use eta_min=0",
    ),
    (
        "chained-two-cosines",
        lambda: S.chained_scheduler(
            [S.cosine_annealing_lr(LR, 10), S.exponential_lr(LR, 0.9), S.cosine_annealing_warm_restarts(LR, 7)]
        ),
        ValueError,
        r"ChainedScheduler: at most one CosineAnnealingLR or CosineAnnealingWarmRestarts per chain .*got "
        r"schedulers\[0\] \(CosineAnnealingLR\) and schedulers\[2\] \(CosineAnnealingWarmRestarts\)",
    ),
    (
        "chained-plateau",
        lambda: S.chained_scheduler([S.reduce_lr_on_plateau(LR)]),
        ValueError,
        r"ChainedScheduler: schedulers\[0\] is a ReduceLROnPlateau",
    ),
    (
        "chained-nested",
        lambda: S.chained_scheduler([S.sequential_lr([S.linear_lr(LR)], [])]),
        ValueError,
        r"ChainedScheduler: schedulers\[0\] is a SequentialLR; composites cannot be nested",
    ),
    (
        "chained-different-lr",
        lambda: S.chained_scheduler([S.constant_lr(LR), S.constant_lr(0.2)]),
        ValueError,
        r"ChainedScheduler: every schedule must have the same lr",
    ),
    (
        "chained-sub-steps_per_epoch",
        lambda: S.chained_scheduler([S.constant_lr(LR, steps_per_epoch=2)]),
        ValueError,
        r"ChainedScheduler: schedulers\[0\] must have steps_per_epoch=None",
    ),
]


@pytest.mark.parametrize(("build", "error", "match"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_invalid_arguments_raise(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_torch_rejects_what_fnml_rejects():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    with pytest.raises(ValueError, match="Expected positive integer T_0"):
        T.CosineAnnealingWarmRestarts(opt, T_0=0)
    with pytest.raises(ValueError, match="Expected integer T_mult >= 1"):
        T.CosineAnnealingWarmRestarts(opt, T_0=5, T_mult=0)
    with pytest.raises(ValueError, match="number of milestones to be equal to 2"):
        T.SequentialLR(opt, [T.ExponentialLR(opt, 0.9), T.ConstantLR(opt)], milestones=[3, 5])
    with pytest.raises(ValueError, match="does not support `ReduceLROnPlateau`"):
        T.ChainedScheduler([T.ReduceLROnPlateau(opt)])
    # A LinearLR with total_iters=0 reached at a milestone: torch divides by zero (fnml refuses up front).
    fresh = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    sequential = T.SequentialLR(fresh, [T.ExponentialLR(fresh, 0.9), T.LinearLR(fresh, total_iters=0)], [1])
    with pytest.raises(ZeroDivisionError):
        fresh.step()
        sequential.step()


def test_chained_cosine_with_eta_min_is_not_a_product_in_torch():
    # Why the chain refuses eta_min != 0: torch's result is not lr * factor_a * factor_b.
    build = lambda o: T.ChainedScheduler([T.ExponentialLR(o, 0.9), T.CosineAnnealingLR(o, 10, eta_min=0.01)])  # noqa: E731
    torch_lr = _torch_lrs(build, scheduler_steps=20)
    product = (
        np.asarray(S.exponential_lr(LR, 0.9)(jnp.arange(20)))
        * np.asarray(S.cosine_annealing_lr(LR, 10, 0.01)(jnp.arange(20)))
        / LR
    )
    assert max_abs_diff(product, torch_lr) > 1e-3


@pytest.mark.parametrize(
    "build",
    [
        lambda o: T.ChainedScheduler([T.CosineAnnealingLR(o, 10), T.ExponentialLR(o, 0.98), T.CosineAnnealingLR(o, 7)]),
        lambda o: T.ChainedScheduler([T.CosineAnnealingWarmRestarts(o, 5), T.CosineAnnealingLR(o, 9)]),
    ],
    ids=["two-cosines", "restarts-then-cosine"],
)
def test_two_restarting_schedules_in_torch_are_not_a_product(build):
    # Why the chain refuses two of them: torch's restart adds to an lr the other one rewrote (not 0).
    torch_lr = _torch_lrs(build, scheduler_steps=60)
    assert torch_lr.max() > LR * 1.01  # above the base lr: no product of factors <= 1 gives that

"""fnml.optim optimizers and parameter groups against real torch.optim, 100 steps on a small MLP.

Every configuration runs twice on the fnml side, in one jitted function:
- "full": fnml computes its own gradients (jax.grad) on its own parameters, like a real training run;
- "optimizer only": fnml's optimizer is fed torch's gradient of each step, so any difference is the
  optimizer's, not the gradients'.
Both are compared with torch's parameters after every one of the 100 steps.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from helpers import cache_size, one_torch_thread, torch_dtype

from fnml import optim

STEPS = 100
BATCH = 8
N_BATCHES = 4
SIZES = (3, 8, 8, 2)  # 3-8-8-2 tanh MLP
LIMITS = {"float64": 1e-12, "float32": 1e-5}
NAMES = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():  # torch on tiny tensors: its thread pool only costs (helpers.one_torch_thread)
        yield


# ----------------------------------------------------------------------------------------------------
# The two training loops, written once
# ----------------------------------------------------------------------------------------------------


@functools.cache
def problem() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Initial weights (torch layout, float64) and a dataset of N_BATCHES minibatches."""
    rng = np.random.default_rng(1234)
    init = {}
    for k, (fan_in, fan_out) in enumerate(zip(SIZES[:-1], SIZES[1:]), start=1):
        bound = 1 / np.sqrt(fan_in)
        init[f"fc{k}.weight"] = rng.uniform(-bound, bound, size=(fan_out, fan_in))  # torch (out, in)
        init[f"fc{k}.bias"] = rng.uniform(-bound, bound, size=(fan_out,))
    x = rng.normal(size=(N_BATCHES, BATCH, SIZES[0]))
    y = np.stack([np.sin(x[..., 0] + x[..., 1]), np.cos(x[..., 2])], axis=-1)  # (N_BATCHES, BATCH, 2)
    return init, x, y


def torch_forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    h = torch.tanh(x @ params["fc1.weight"].T + params["fc1.bias"])
    h = torch.tanh(h @ params["fc2.weight"].T + params["fc2.bias"])
    return h @ params["fc3.weight"].T + params["fc3.bias"]


def jax_loss(params: dict[str, jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
    h = jnp.tanh(x @ params["fc1.weight"].T + params["fc1.bias"])
    h = jnp.tanh(h @ params["fc2.weight"].T + params["fc2.bias"])
    out = h @ params["fc3.weight"].T + params["fc3.bias"]
    return jnp.mean((out - y) ** 2)


def torch_run(make_optimizer, dtype: str, *, scheduler=None, clip=None, steps: int = STEPS):
    """torch's loop: returns ({name: (steps, ...) params after each step}, {name: (steps, ...) grads}).

    ``make_optimizer(named_params: dict) -> torch optimizer``; ``scheduler(optimizer)`` is stepped after
    every optimizer step; ``clip(params_list)`` runs between backward and step.
    """
    torch_type = torch_dtype(dtype)
    previous = torch.get_default_dtype()
    # torch keeps scalar state (step, NAdam's mu_product) in the default dtype: the params' here.
    torch.set_default_dtype(torch_type)
    try:
        init, x, y = problem()
        params = {n: torch.tensor(init[n], dtype=torch_type, requires_grad=True) for n in NAMES}
        xs, ys = torch.tensor(x, dtype=torch_type), torch.tensor(y, dtype=torch_type)
        optimizer = make_optimizer(params)
        sched = scheduler(optimizer) if scheduler else None
        trajectory = {n: [] for n in NAMES}
        grads = {n: [] for n in NAMES}
        for step in range(steps):
            optimizer.zero_grad()
            loss = torch.mean((torch_forward(params, xs[step % N_BATCHES]) - ys[step % N_BATCHES]) ** 2)
            loss.backward()
            for n in NAMES:
                grads[n].append(params[n].grad.detach().clone())
            if clip is not None:
                clip(list(params.values()))
            optimizer.step()
            if sched is not None:
                sched.step()
            for n in NAMES:
                trajectory[n].append(params[n].detach().clone())
    finally:
        torch.set_default_dtype(previous)
    stack = lambda tree: {n: torch.stack(v).numpy() for n, v in tree.items()}  # noqa: E731
    return stack(trajectory), stack(grads)


_grad = jax.jit(jax.grad(jax_loss))  # compiled once per dtype, shared by every configuration


def fnml_run(tx: optax.GradientTransformation, dtype: str, torch_grads, *, steps: int = STEPS):
    """fnml's loop, one jitted step: (full-run, optimizer-only) trajectories, each {name: (steps, ...)}.

    The inputs (minibatches, torch's gradient of every step) become jax arrays before the loop, and the
    trajectories come back in one transfer at the end: the loop itself only dispatches compiled calls.
    """
    init, x, y = problem()
    params0 = {n: jnp.asarray(init[n], dtype) for n in NAMES}
    batches = [(jnp.asarray(x[i], dtype), jnp.asarray(y[i], dtype)) for i in range(N_BATCHES)]  # (x, y) pairs
    # torch's gradient of every step, on the device in one call (not one conversion per leaf per step).
    fed = jax.device_put([{n: np.asarray(torch_grads[n][k], dtype) for n in NAMES} for k in range(steps)])

    @jax.jit
    def step(params, opt_state, grads):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    trajectories = []
    for feed_torch_grads in (False, True):
        params, opt_state, trajectory = params0, tx.init(params0), []
        for k in range(steps):
            if feed_torch_grads:  # "optimizer only": torch's gradient at torch's parameters
                grads = fed[k]
            else:
                grads = _grad(params, *batches[k % N_BATCHES])
            params, opt_state = step(params, opt_state, grads)
            trajectory.append(params)
        for n in NAMES:
            assert params[n].dtype == jnp.dtype(dtype), f"{n} changed dtype to {params[n].dtype}"
        trajectory = jax.device_get(trajectory)  # one transfer for the whole trajectory
        trajectories.append({n: np.stack([p[n] for p in trajectory]) for n in NAMES})
    assert cache_size(step) == 1, "the jitted step recompiled during the run"
    return tuple(trajectories)


def max_diff(fnml_traj, torch_traj) -> float:
    return max(float(np.max(np.abs(np.asarray(fnml_traj[n], np.float64) - torch_traj[n]))) for n in NAMES)


def assert_parity(tx, make_torch_optimizer, dtype, *, scheduler=None, clip=None, min_travel=1e-3):
    """Run both frameworks, check both fnml variants against torch at every step; return the diffs."""
    torch_traj, torch_grads = torch_run(make_torch_optimizer, dtype, scheduler=scheduler, clip=clip)
    full, only = fnml_run(tx, dtype, torch_grads)
    init = problem()[0]
    # The optimizer must actually move the weights, else parity would be vacuous.
    travel = max(float(np.max(np.abs(torch_traj[n][-1] - init[n]))) for n in NAMES)
    assert travel > min_travel, f"torch's parameters barely moved ({travel:.2e}): the test would be vacuous"
    diff_full, diff_only = max_diff(full, torch_traj), max_diff(only, torch_traj)
    limit = LIMITS[dtype]
    assert diff_only <= limit, f"optimizer only: max|param diff| = {diff_only:.3g} > {limit:g}"
    assert diff_full <= limit, f"full run: max|param diff| = {diff_full:.3g} > {limit:g}"
    return diff_full, diff_only


# ----------------------------------------------------------------------------------------------------
# Every optimizer, every option
# ----------------------------------------------------------------------------------------------------


def _torch(cls, **kwargs):
    return lambda named: cls(list(named.values()), **kwargs)


# (id, fnml factory, torch class, kwargs shared by both). One case per code path of each factory (the
# flags that add or change a piece of the update); hyperparameter values that only change a number in the
# same path are checked inside those cases (adagrad-all: lr_decay and initial_accumulator_value).
CASES = [
    ("sgd-plain", optim.sgd, torch.optim.SGD, dict(lr=0.1)),
    ("sgd-momentum", optim.sgd, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    ("sgd-nesterov", optim.sgd, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("sgd-dampening", optim.sgd, torch.optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.5)),
    ("sgd-weight_decay", optim.sgd, torch.optim.SGD, dict(lr=0.1, weight_decay=0.05)),
    ("sgd-maximize", optim.sgd, torch.optim.SGD, dict(lr=0.01, maximize=True)),
    (
        "sgd-nesterov-wd",
        optim.sgd,
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-2),
    ),
    (
        "sgd-all",
        optim.sgd,
        torch.optim.SGD,
        dict(lr=1e-3, momentum=0.9, dampening=0.1, weight_decay=1e-3, maximize=True),
    ),
    ("adam-default", optim.adam, torch.optim.Adam, dict()),
    ("adam-amsgrad", optim.adam, torch.optim.Adam, dict(lr=1e-2, amsgrad=True)),
    ("adam-weight_decay", optim.adam, torch.optim.Adam, dict(lr=1e-2, weight_decay=0.1)),
    ("adam-maximize", optim.adam, torch.optim.Adam, dict(lr=1e-3, maximize=True)),
    ("adam-betas-eps", optim.adam, torch.optim.Adam, dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6)),
    (
        "adam-all",
        optim.adam,
        torch.optim.Adam,
        dict(lr=1e-2, betas=(0.85, 0.995), weight_decay=0.01, amsgrad=True),
    ),
    ("adamw-default", optim.adamw, torch.optim.AdamW, dict(lr=1e-2)),
    ("adamw-wd-amsgrad", optim.adamw, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    ("adamw-maximize", optim.adamw, torch.optim.AdamW, dict(lr=1e-3, maximize=True)),
    ("rmsprop-default", optim.rmsprop, torch.optim.RMSprop, dict(lr=1e-2)),
    ("rmsprop-momentum", optim.rmsprop, torch.optim.RMSprop, dict(lr=1e-3, momentum=0.9)),
    ("rmsprop-centered", optim.rmsprop, torch.optim.RMSprop, dict(lr=1e-3, centered=True)),
    (
        "rmsprop-alpha-eps-wd",
        optim.rmsprop,
        torch.optim.RMSprop,
        dict(lr=1e-2, alpha=0.9, eps=1e-6, weight_decay=0.05),
    ),
    ("rmsprop-maximize", optim.rmsprop, torch.optim.RMSprop, dict(lr=1e-3, maximize=True)),
    (
        "rmsprop-all",
        optim.rmsprop,
        torch.optim.RMSprop,
        dict(lr=1e-3, momentum=0.5, centered=True, weight_decay=1e-2),
    ),
    ("adagrad-default", optim.adagrad, torch.optim.Adagrad, dict(lr=5e-2)),
    (
        "adagrad-wd-maximize",
        optim.adagrad,
        torch.optim.Adagrad,
        dict(lr=1e-2, weight_decay=0.1, maximize=True),
    ),
    (
        "adagrad-all",
        optim.adagrad,
        torch.optim.Adagrad,
        dict(lr=5e-2, lr_decay=1e-2, weight_decay=1e-2, initial_accumulator_value=0.5, eps=1e-6),
    ),
    ("adadelta-default", optim.adadelta, torch.optim.Adadelta, dict()),
    ("adadelta-rho-eps", optim.adadelta, torch.optim.Adadelta, dict(rho=0.95, eps=1e-5)),
    (
        "adadelta-wd-maximize",
        optim.adadelta,
        torch.optim.Adadelta,
        dict(lr=0.5, weight_decay=0.1, maximize=True),
    ),
    ("adamax-default", optim.adamax, torch.optim.Adamax, dict()),
    (
        "adamax-betas-wd",
        optim.adamax,
        torch.optim.Adamax,
        dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.05),
    ),
    ("adamax-maximize", optim.adamax, torch.optim.Adamax, dict(maximize=True, eps=1e-6)),
    ("nadam-default", optim.nadam, torch.optim.NAdam, dict()),
    ("nadam-momentum_decay", optim.nadam, torch.optim.NAdam, dict(lr=1e-2, momentum_decay=0.05)),
    ("nadam-weight_decay", optim.nadam, torch.optim.NAdam, dict(lr=1e-2, weight_decay=0.1)),
    (
        "nadam-decoupled",
        optim.nadam,
        torch.optim.NAdam,
        dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
    ),
    ("nadam-maximize-betas", optim.nadam, torch.optim.NAdam, dict(maximize=True, betas=(0.8, 0.99))),
    ("radam-default", optim.radam, torch.optim.RAdam, dict(lr=1e-2)),
    ("radam-weight_decay", optim.radam, torch.optim.RAdam, dict(lr=1e-2, weight_decay=0.1)),
    (
        "radam-decoupled",
        optim.radam,
        torch.optim.RAdam,
        dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
    ),
    (
        "radam-maximize-betas",
        optim.radam,
        torch.optim.RAdam,
        dict(lr=1e-3, maximize=True, betas=(0.9, 0.99), eps=1e-6),
    ),
]
# float32 runs a representative subset (every optimizer, the flags that touch the arithmetic most).
FLOAT32_CASES = {
    "sgd-all",
    "sgd-nesterov-wd",
    "adam-default",
    "adam-all",
    "adam-maximize",
    "adamw-wd-amsgrad",
    "rmsprop-default",
    "rmsprop-all",
    "adagrad-all",
    "adadelta-default",
    "adadelta-wd-maximize",
    "adamax-betas-wd",
    "nadam-default",
    "nadam-decoupled",
    "radam-default",
    "radam-maximize-betas",
}
PARAMS = [pytest.param(case, "float64", id=f"{case[0]}-float64") for case in CASES] + [
    pytest.param(case, "float32", id=f"{case[0]}-float32") for case in CASES if case[0] in FLOAT32_CASES
]


@pytest.mark.parametrize("case, dtype", PARAMS)
def test_100_steps_match_torch(case, dtype):
    _, factory, torch_cls, kwargs = case
    assert_parity(factory(**kwargs), _torch(torch_cls, **kwargs), dtype)


# ----------------------------------------------------------------------------------------------------
# lr (and momentum / beta1) driven by a schedule
# ----------------------------------------------------------------------------------------------------


class RecordedSchedule:
    """A schedule replaying torch's per-step lr (and momentum) tables; carries ``.momentum`` like fnml's
    one-cycle schedule (the protocol: ``count -> value``, count = updates done so far)."""

    def __init__(self, lrs, momenta=None):
        self.lrs = jnp.asarray(np.asarray(lrs, np.float64))
        self.momentum = None if momenta is None else (lambda count: jnp.asarray(np.asarray(momenta))[count])

    def __call__(self, count):
        return self.lrs[count]


def _record(make_optimizer, make_scheduler, key):
    """torch's lr and momentum/beta1 before each of the STEPS optimizer steps."""
    params = [torch.zeros(2, requires_grad=True)]
    optimizer = make_optimizer({"p": params[0]})
    scheduler = make_scheduler(optimizer)
    lrs, momenta = [], []
    for _ in range(STEPS):
        group = optimizer.param_groups[0]
        lrs.append(group["lr"])
        momenta.append(group["betas"][0] if key == "betas" else group.get("momentum", 0.0))
        optimizer.step()
        scheduler.step()
    return lrs, momenta


ONE_CYCLE = [
    # (id, fnml factory, torch class, kwargs, key holding the cycled momentum)
    ("sgd", optim.sgd, torch.optim.SGD, dict(lr=0.05, momentum=0.9), "momentum"),
    ("sgd-nesterov", optim.sgd, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True), "momentum"),
    ("rmsprop", optim.rmsprop, torch.optim.RMSprop, dict(lr=1e-3, momentum=0.9), "momentum"),
    ("adam", optim.adam, torch.optim.Adam, dict(lr=1e-2, amsgrad=True), "betas"),
    ("adamw", optim.adamw, torch.optim.AdamW, dict(lr=1e-2), "betas"),
    ("adamax", optim.adamax, torch.optim.Adamax, dict(lr=1e-2), "betas"),
    ("nadam", optim.nadam, torch.optim.NAdam, dict(lr=1e-2), "betas"),
    ("radam", optim.radam, torch.optim.RAdam, dict(lr=1e-2), "betas"),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ONE_CYCLE, ids=[c[0] for c in ONE_CYCLE])
def test_one_cycle_lr_and_momentum_schedule_match_torch(case, dtype):
    """torch's OneCycleLR cycles lr AND momentum/beta1; a schedule with .momentum drives both here."""
    _, factory, torch_cls, kwargs, key = case

    def make_scheduler(opt):
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=kwargs["lr"], total_steps=STEPS)

    lrs, momenta = _record(_torch(torch_cls, **kwargs), make_scheduler, key)
    assert max(momenta) - min(momenta) > 0.05, "torch did not cycle the momentum: the test would be vacuous"
    schedule = RecordedSchedule(lrs, momenta)
    fnml_kwargs = {k: v for k, v in kwargs.items() if k != "lr"}
    assert_parity(factory(schedule, **fnml_kwargs), _torch(torch_cls, **kwargs), dtype, scheduler=make_scheduler)


SCHEDULED_LR = [
    ("sgd-momentum", optim.sgd, torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
    ("rmsprop-momentum", optim.rmsprop, torch.optim.RMSprop, dict(lr=1e-2, momentum=0.9, centered=True)),
    ("adagrad-lr_decay", optim.adagrad, torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.01)),
    ("adadelta", optim.adadelta, torch.optim.Adadelta, dict(lr=1.0)),
    ("adam", optim.adam, torch.optim.Adam, dict(lr=1e-2)),
    ("adamw", optim.adamw, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    ("adamax", optim.adamax, torch.optim.Adamax, dict(lr=1e-2)),
    (
        "nadam-decoupled",
        optim.nadam,
        torch.optim.NAdam,
        dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
    ),
    (
        "radam-decoupled",
        optim.radam,
        torch.optim.RAdam,
        dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
    ),
]


@pytest.mark.parametrize("case", SCHEDULED_LR, ids=[c[0] for c in SCHEDULED_LR])
def test_scheduled_lr_matches_torch_scheduler(case):
    """lr as a callable ``count -> lr``: torch's StepLR stepped after every step gives the same sequence.

    (rmsprop with momentum is the row where optax's lr-inside-the-trace differs from torch.)
    """
    _, factory, torch_cls, kwargs = case
    make_scheduler = lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)  # noqa: E731
    lrs, _ = _record(_torch(torch_cls, **kwargs), make_scheduler, "momentum")
    assert len(set(lrs)) > 5
    fnml_kwargs = {k: v for k, v in kwargs.items() if k != "lr"}
    assert_parity(
        factory(RecordedSchedule(lrs), **fnml_kwargs),
        _torch(torch_cls, **kwargs),
        "float64",
        scheduler=make_scheduler,
    )


def test_callable_beta1_and_momentum_given_directly():
    """betas[0] / momentum may be callables themselves (and then win over lr.momentum)."""
    make_scheduler = lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=STEPS)  # noqa: E731
    lrs, betas = _record(_torch(torch.optim.Adam, lr=1e-2), make_scheduler, "betas")
    beta1 = RecordedSchedule(betas)
    wrong = RecordedSchedule(lrs, np.zeros(STEPS))  # a .momentum that must be ignored
    tx = optim.adam(wrong, betas=(beta1, 0.999))
    assert_parity(tx, _torch(torch.optim.Adam, lr=1e-2), "float64", scheduler=make_scheduler)
    lrs, momenta = _record(_torch(torch.optim.SGD, lr=0.05, momentum=0.9), make_scheduler, "momentum")
    tx = optim.sgd(RecordedSchedule(lrs), momentum=RecordedSchedule(momenta))
    assert_parity(tx, _torch(torch.optim.SGD, lr=0.05, momentum=0.9), "float64", scheduler=make_scheduler)


def test_jitted_update_with_schedule_does_not_recompile():
    tx = optim.adam(RecordedSchedule(np.linspace(1e-2, 1e-3, STEPS), np.linspace(0.85, 0.95, STEPS)))
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    for step in range(4):
        grads = jax.tree.map(lambda p, step=step: jnp.full_like(p, 0.1 * (step + 1)), params)
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
    assert cache_size(update) == 1
    assert int(state[-1].count) == 4


def test_stock_optax_differs_where_semantics_says_so():
    """Controls: the harness detects the differences fnml fixes (stock optax fails the same checks)."""
    with pytest.raises(AssertionError, match="max\\|param diff\\|"):
        assert_parity(optax.rmsprop(1e-2), _torch(torch.optim.RMSprop, lr=1e-2), "float64")
    with pytest.raises(AssertionError, match="max\\|param diff\\|"):
        assert_parity(optax.nadam(1e-2), _torch(torch.optim.NAdam, lr=1e-2), "float64")


# ----------------------------------------------------------------------------------------------------
# Parameter groups
# ----------------------------------------------------------------------------------------------------


def test_param_groups_no_decay_on_biases_matches_torch(dtype):
    """The torch idiom: weight decay on weights only, and a larger lr for the head (fc3)."""

    def torch_groups(named):
        decay = [p for n, p in named.items() if not n.endswith("bias") and not n.startswith("fc3")]
        no_decay = [p for n, p in named.items() if n.endswith("bias") and not n.startswith("fc3")]
        head = [p for n, p in named.items() if n.startswith("fc3")]
        return torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": 0.1},
                {"params": no_decay, "weight_decay": 0.0},
                {"params": head, "lr": 3e-2, "weight_decay": 0.0},
            ],
            lr=1e-2,
        )

    def label(name, leaf):
        if name.startswith("fc3"):
            return "head"
        return "no_decay" if optim.is_bias_or_norm(name, leaf) else "decay"

    tx = optim.param_groups(
        {
            "decay": optim.adamw(lr=1e-2, weight_decay=0.1),
            "no_decay": optim.adamw(lr=1e-2, weight_decay=0.0),
            "head": optim.adamw(lr=3e-2, weight_decay=0.0),
        },
        labels=optim.label_by(label),
    )
    assert_parity(tx, torch_groups, dtype)


def test_param_groups_with_bias_and_norm_labels_and_sgd():
    def torch_groups(named):
        decay = [p for n, p in named.items() if n.endswith("weight")]
        no_decay = [p for n, p in named.items() if n.endswith("bias")]
        return torch.optim.SGD(
            [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=0.05,
            momentum=0.9,
            weight_decay=0.05,
        )

    tx = optim.param_groups(
        {
            "decay": optim.sgd(0.05, momentum=0.9, weight_decay=0.05),
            "no_decay": optim.sgd(0.05, momentum=0.9),
        },
        labels=optim.bias_and_norm_labels,
    )
    assert_parity(tx, torch_groups, "float64")


def test_bias_and_norm_labels_on_nnx_state():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.fc = nnx.Linear(3, 4, rngs=rngs)
            self.norm = nnx.LayerNorm(4, rngs=rngs)
            self.embed = nnx.Embed(5, 4, rngs=rngs)

    state = nnx.state(Net(nnx.Rngs(0)), nnx.Param)
    labels = optim.bias_and_norm_labels(state)
    flat = {optim._path_name(path): label for path, label in jax.tree_util.tree_flatten_with_path(labels)[0]}
    assert flat == {
        "embed.embedding": "decay",
        "fc.bias": "no_decay",
        "fc.kernel": "decay",
        "norm.bias": "no_decay",
        "norm.scale": "no_decay",
    }


def test_param_groups_unknown_label_raises():
    tx = optim.param_groups(
        {"a": optim.sgd(0.1)}, labels=optim.label_by(lambda name, p: "b" if "bias" in name else "a")
    )
    with pytest.raises(ValueError, match="labels \\[\"'b'\"\\] have no entry in groups"):
        tx.init({"w": jnp.ones(2), "bias": jnp.ones(2)})


def test_param_groups_bad_arguments_raise():
    with pytest.raises(ValueError, match="groups must be a non-empty mapping"):
        optim.param_groups({}, labels=lambda p: p)
    with pytest.raises(TypeError, match="groups\\['a'\\] must be an optax.GradientTransformation"):
        optim.param_groups({"a": 0.1}, labels=lambda p: p)
    with pytest.raises(TypeError, match="label_by: fn must be a callable"):
        optim.label_by("bias")


# ----------------------------------------------------------------------------------------------------
# Pytrees and dtypes
# ----------------------------------------------------------------------------------------------------

ALL_FACTORIES = [
    optim.sgd,
    optim.adam,
    optim.adamw,
    optim.rmsprop,
    optim.adagrad,
    optim.adadelta,
    optim.adamax,
    optim.nadam,
    optim.radam,
]


@pytest.mark.parametrize("factory", ALL_FACTORIES, ids=[f.__name__ for f in ALL_FACTORIES])
def test_works_on_nnx_state_like_on_a_dict(factory):
    """Same numbers on an nnx.State as on the equivalent dict; state keeps the params' dtype."""
    model = nnx.Linear(3, 2, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    as_dict = {"kernel": state["kernel"][...], "bias": state["bias"][...]}
    tx = factory(weight_decay=0.01)
    results = []
    for params in (state, as_dict):
        opt_state = tx.init(params)
        for step in range(3):  # eager: jit is covered by the parity tests
            grads = jax.tree.map(lambda p, step=step: jnp.sin(p + step), params)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
        for leaf in jax.tree.leaves(opt_state):
            if jnp.issubdtype(leaf.dtype, jnp.floating):
                assert leaf.dtype == jnp.float64
        results.append(params)
    assert jnp.array_equal(results[0]["kernel"][...], results[1]["kernel"])
    assert jnp.array_equal(results[0]["bias"][...], results[1]["bias"])
    assert not jnp.array_equal(results[1]["kernel"], as_dict["kernel"])


def test_decoupled_weight_decay_needs_params():
    tx = optim.adamw()
    state = tx.init({"w": jnp.ones(2)})
    with pytest.raises(ValueError, match="adamw: update\\(grads, state, params\\) needs params"):
        tx.update({"w": jnp.ones(2)}, state)


# ----------------------------------------------------------------------------------------------------
# Validation (torch's constructor checks)
# ----------------------------------------------------------------------------------------------------

BAD = [
    (optim.sgd, dict(lr=-0.1), ValueError, "sgd: lr must be >= 0 and finite, got lr=-0.1"),
    (optim.sgd, dict(lr="0.1"), TypeError, "sgd: lr must be a number"),
    (optim.sgd, dict(lr=0.1, momentum=-0.5), ValueError, "sgd: momentum must be >= 0"),
    (optim.sgd, dict(lr=0.1, weight_decay=-1.0), ValueError, "sgd: weight_decay must be >= 0"),
    (optim.sgd, dict(lr=0.1, dampening="x"), TypeError, "sgd: dampening must be a number"),
    (
        optim.sgd,
        dict(lr=0.1, nesterov=True),
        ValueError,
        "nesterov=True requires momentum > 0 and dampening=0",
    ),
    (
        optim.sgd,
        dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
        ValueError,
        "got momentum=0.9, dampening=0.1",
    ),
    (optim.adam, dict(lr=-1e-3), ValueError, "adam: lr must be >= 0"),
    (
        optim.adam,
        dict(betas=(1.0, 0.999)),
        ValueError,
        "adam: betas\\[0\\] must be in \\[0.0, 1.0\\), got betas\\[0\\]=1.0",
    ),
    (optim.adam, dict(betas=(0.9, -0.1)), ValueError, "adam: betas\\[1\\] must be in"),
    (optim.adam, dict(betas=(0.9,)), ValueError, "adam: betas must be a pair"),
    (optim.adam, dict(eps=-1e-8), ValueError, "adam: eps must be >= 0"),
    (optim.adam, dict(weight_decay=-0.1), ValueError, "adam: weight_decay must be >= 0"),
    (optim.adamw, dict(betas=(0.9, 1.5)), ValueError, "adamw: betas\\[1\\] must be in"),
    (optim.adamw, dict(weight_decay=-0.01), ValueError, "adamw: weight_decay must be >= 0"),
    (optim.adamw, dict(eps=-1.0), ValueError, "adamw: eps must be >= 0"),
    (optim.rmsprop, dict(alpha=-0.9), ValueError, "rmsprop: alpha must be >= 0"),
    (optim.rmsprop, dict(momentum=-0.1), ValueError, "rmsprop: momentum must be >= 0"),
    (optim.rmsprop, dict(eps=-1.0), ValueError, "rmsprop: eps must be >= 0"),
    (optim.rmsprop, dict(weight_decay=-1.0), ValueError, "rmsprop: weight_decay must be >= 0"),
    (optim.rmsprop, dict(lr=-1.0), ValueError, "rmsprop: lr must be >= 0"),
    (optim.adagrad, dict(lr_decay=-0.1), ValueError, "adagrad: lr_decay must be >= 0"),
    (
        optim.adagrad,
        dict(initial_accumulator_value=-1.0),
        ValueError,
        "adagrad: initial_accumulator_value must be >= 0",
    ),
    (optim.adagrad, dict(eps=-1.0), ValueError, "adagrad: eps must be >= 0"),
    (optim.adagrad, dict(weight_decay=-1.0), ValueError, "adagrad: weight_decay must be >= 0"),
    (optim.adagrad, dict(lr=-1.0), ValueError, "adagrad: lr must be >= 0"),
    (optim.adadelta, dict(rho=1.5), ValueError, "adadelta: rho must be in \\[0.0, 1.0\\]"),
    (optim.adadelta, dict(eps=-1.0), ValueError, "adadelta: eps must be >= 0"),
    (optim.adadelta, dict(weight_decay=-1.0), ValueError, "adadelta: weight_decay must be >= 0"),
    (optim.adadelta, dict(lr=-1.0), ValueError, "adadelta: lr must be >= 0"),
    (optim.adamax, dict(betas=(-0.1, 0.999)), ValueError, "adamax: betas\\[0\\] must be in"),
    (optim.adamax, dict(eps=-1.0), ValueError, "adamax: eps must be >= 0"),
    (optim.adamax, dict(weight_decay=-1.0), ValueError, "adamax: weight_decay must be >= 0"),
    (optim.adamax, dict(lr=-1.0), ValueError, "adamax: lr must be >= 0"),
    (optim.nadam, dict(momentum_decay=-1e-3), ValueError, "nadam: momentum_decay must be >= 0"),
    (optim.nadam, dict(betas=(0.9, 1.0)), ValueError, "nadam: betas\\[1\\] must be in"),
    (optim.nadam, dict(eps=-1.0), ValueError, "nadam: eps must be >= 0"),
    (optim.nadam, dict(weight_decay=-1.0), ValueError, "nadam: weight_decay must be >= 0"),
    (optim.nadam, dict(lr=-1.0), ValueError, "nadam: lr must be >= 0"),
    (optim.radam, dict(betas=(2.0, 0.999)), ValueError, "radam: betas\\[0\\] must be in"),
    (optim.radam, dict(eps=-1.0), ValueError, "radam: eps must be >= 0"),
    (optim.radam, dict(weight_decay=-1.0), ValueError, "radam: weight_decay must be >= 0"),
    (optim.radam, dict(lr=-1.0), ValueError, "radam: lr must be >= 0"),
]


@pytest.mark.parametrize(
    "factory, kwargs, error, match",
    BAD,
    ids=[f"{f.__name__}-{'-'.join(k)}-{i}" for i, (f, k, _, _) in enumerate(BAD)],
)
def test_bad_hyperparameters_raise(factory, kwargs, error, match):
    with pytest.raises(error, match=match):
        factory(**kwargs)


def test_torch_raises_on_the_same_hyperparameters():
    """The checks mirror torch's constructors: torch rejects the same values."""
    p = [torch.zeros(1, requires_grad=True)]
    for cls, kwargs in [
        (torch.optim.SGD, dict(lr=-0.1)),
        (torch.optim.Adam, dict(betas=(1.0, 0.999))),
        (torch.optim.SGD, dict(lr=0.1, nesterov=True)),
        (torch.optim.Adadelta, dict(rho=1.5)),
        (torch.optim.NAdam, dict(momentum_decay=-1e-3)),
        (torch.optim.RMSprop, dict(alpha=-0.9)),
    ]:
        with pytest.raises(ValueError):
            cls(p, **kwargs)


@pytest.mark.parametrize("factory", [optim.adagrad, optim.adadelta], ids=["adagrad", "adadelta"])
def test_cycled_momentum_on_optimizer_without_momentum_raises(factory):
    """torch's OneCycleLR(cycle_momentum=True) refuses Adagrad/Adadelta; so does fnml."""
    with pytest.raises(ValueError, match="the lr schedule cycles momentum"):
        factory(RecordedSchedule(np.ones(STEPS), np.ones(STEPS)))
    with pytest.raises(ValueError, match="must support momentum or beta1"):
        torch.optim.lr_scheduler.OneCycleLR(
            {"adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta}[factory.__name__](
                [torch.zeros(1, requires_grad=True)]
            ),
            max_lr=0.1,
            total_steps=10,
        )


@pytest.mark.parametrize(
    "factory, torch_cls, kwargs",
    [
        (optim.adam, torch.optim.Adam, dict()),
        (optim.sgd, torch.optim.SGD, dict(momentum=0.9, nesterov=True)),
    ],
    ids=["adam", "sgd-nesterov"],
)
def test_with_fnml_one_cycle_schedule(factory, torch_cls, kwargs):
    """Integration with fnml.schedules: its one_cycle_lr drives lr and beta1 / momentum like torch's."""
    from fnml import schedules

    def make_scheduler(opt):
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=STEPS)

    schedule = schedules.one_cycle_lr(max_lr=0.05, total_steps=STEPS)
    assert schedule.momentum is not None
    assert_parity(
        factory(schedule, **kwargs), _torch(torch_cls, lr=0.05, **kwargs), "float64", scheduler=make_scheduler
    )

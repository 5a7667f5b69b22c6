"""The benchmark workloads W1..W4 of issue 7, defined once for both frameworks.

Every workload has the same shapes, initial weights, data and hyperparameters on both sides: torch
draws the weights and data (seeded), and the fnml twin loads them through ``fnml.interop``. Each
``build_*`` returns a :class:`Workload` whose runners each execute ``k`` optimizer steps and block
until the result is ready (torch CPU is synchronous; JAX dispatches asynchronously, so every fnml
runner ends with ``jax.block_until_ready``).

- W1 the tutorial model: SimpleNN 2-2-1, MSE, Adam lr=1e-3, full batch X (10, 2), 100 steps.
- W2 MLP 784-512-512-10, ReLU, cross-entropy, Adam lr=1e-3, batch 128.
- W3 CNN on 1x28x28: Conv(32, 3x3) - ReLU - MaxPool 2 - Conv(64, 3x3) - ReLU - MaxPool 2 - Linear(10),
  batch 64, SGD lr=0.01 momentum 0.9.
- W4 LSTM: 1 layer, input 32, hidden 128, sequence 50, batch 32, Linear(128, 10) head on the last
  step's output, cross-entropy, Adam lr=1e-3.

Implementations: ``torch_eager`` (the tutorial loop: zero_grad, forward, loss, backward, step),
``torch_compile`` (the same loop with ``torch.compile(model)``; the optimizer step stays eager, as in
the usual recipe), ``fnml_jit`` (``fnml.train.make_train_step``: one jitted pure step per iteration),
``fnml_fused`` (``k`` steps in one jitted ``lax.scan``: what ``fit(fused=True)`` runs).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn as nn
from flax import nnx

from fnml import interop, layers, losses, optim, train

# --------------------------------------------------------------------------------------------------
# Models, torch side and fnml side (same architecture, same state_dict names)
# --------------------------------------------------------------------------------------------------


class TorchSimpleNN(nn.Module):
    """The tutorial's SimpleNN: Linear(2, 2) - ReLU - Linear(2, 1)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(2, 2)
        self.fc2 = nn.Linear(2, 1)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def torch_mlp() -> nn.Module:
    """W2's MLP 784-512-512-10."""
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))


def fnml_mlp() -> nnx.Module:
    """W2's MLP, fnml layers."""
    rngs = nnx.Rngs(0)
    return layers.Sequential(
        layers.Linear(784, 512, rngs=rngs),
        layers.ReLU(),
        layers.Linear(512, 512, rngs=rngs),
        layers.ReLU(),
        layers.Linear(512, 10, rngs=rngs),
    )


def torch_cnn() -> nn.Module:
    """W3's CNN on NCHW (N, 1, 28, 28): 28 -conv3-> 26 -pool-> 13 -conv3-> 11 -pool-> 5; 64*5*5 = 1600."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 5 * 5, 10),
    )


def fnml_cnn() -> nnx.Module:
    """W3's CNN, fnml layers on NHWC (N, 28, 28, 1); interop maps the flatten order to torch's."""
    rngs = nnx.Rngs(0)
    return layers.Sequential(
        layers.Conv2d(1, 32, 3, rngs=rngs),
        layers.ReLU(),
        layers.MaxPool2d(2),
        layers.Conv2d(32, 64, 3, rngs=rngs),
        layers.ReLU(),
        layers.MaxPool2d(2),
        layers.Flatten(),
        layers.Linear(64 * 5 * 5, 10, rngs=rngs),
    )


class TorchLSTMHead(nn.Module):
    """W4: LSTM(32, 128) over (T, N, 32), Linear(128, 10) on the last step's output."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(32, 128)
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        output, _ = self.lstm(x)  # (T, N, 32) -> (T, N, 128)
        return self.head(output[-1])  # (N, 128) -> (N, 10)


class FnmlLSTMHead(nnx.Module):
    """W4, fnml layers (same attribute names as the torch module, so state_dicts match)."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.lstm = layers.LSTM(32, 128, rngs=rngs)
        self.head = layers.Linear(128, 10, rngs=rngs)

    def __call__(self, x):
        output, _ = self.lstm(x)  # (T, N, 32) -> (T, N, 128)
        return self.head(output[-1])  # (N, 128) -> (N, 10)


# --------------------------------------------------------------------------------------------------
# Workload description
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Workload:
    """One workload: runners ``name -> run(k)`` (k optimizer steps, result ready on return)."""

    name: str
    description: str
    steps_per_block: int  # k used for timing: one timed block runs this many steps
    runners: dict[str, Callable[[int], None]]
    compile_seconds: dict[str, float]  # first-call cost per implementation (compilation included)
    flops_per_step: float | None = None  # forward + backward matmul FLOPs, for throughput


def _torch_loop(model: nn.Module, criterion, optimizer, batches: Callable[[int], tuple]) -> Callable[[int], None]:
    """The tutorial loop, k steps; batch i comes from ``batches(i)``."""

    def run(k: int) -> None:
        for i in range(k):
            x, y = batches(i)
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()

    return run


def _timed_first_call(run: Callable[[int], None], k: int) -> float:
    """Seconds of the first ``run(k)`` (compilation included)."""
    start = time.perf_counter()
    run(k)
    return time.perf_counter() - start


def _fnml_runners(
    model: nnx.Module,
    tx,
    criterion,
    xs: jax.Array,
    ys: jax.Array,
    *,
    fused: bool,
    donate: bool,
    k_fused: int,
) -> dict[str, Callable[[int], None]]:
    """fnml_jit (one jitted step per iteration) and fnml_fused (k steps in one lax.scan).

    ``xs``/``ys`` hold ``B`` batches on a leading axis (B = 1 for full-batch workloads); step i uses
    batch ``i % B``. The fused runner scans over exactly ``k_fused`` stacked batches.
    """
    step = train.make_train_step(criterion, donate=donate)
    box = {"state": train.TrainState.create(model, tx)}
    num_batches = xs.shape[0]
    batch_list = [(xs[i], ys[i]) for i in range(num_batches)]

    def run_jit(k: int) -> None:
        state = box["state"]
        loss = None
        for i in range(k):
            x, y = batch_list[i % num_batches]
            state, loss = step(state, x, y)
        box["state"] = state
        jax.block_until_ready(loss)

    runners = {"fnml_jit": run_jit}
    if fused:
        # (k_fused, B, ...) stacked batches: step i reads batch i % num_batches, as run_jit.
        order = np.arange(k_fused) % num_batches
        xs_k, ys_k = xs[order], ys[order]
        pure = train._pure_train_step(criterion)  # the un-jitted step fit's fused path scans (private)

        def scan_steps(state, xs_k, ys_k):
            if num_batches == 1:
                # Full batch (W1, the tutorial): every step sees the same (X, Y), as the torch loop does.
                x, y = xs_k[0], ys_k[0]
                return jax.lax.scan(lambda s, _: pure(s, x, y), state, None, length=k_fused)
            return jax.lax.scan(lambda s, b: pure(s, b[0], b[1]), state, (xs_k, ys_k))

        fused_fn = jax.jit(scan_steps, donate_argnums=(0,) if donate else ())
        fbox = {"state": train.TrainState.create(model, tx)}

        def run_fused(k: int) -> None:
            if k % k_fused:
                raise ValueError(f"fused runner: k={k} must be a multiple of {k_fused}")
            state = fbox["state"]
            losses_ = None
            for _ in range(k // k_fused):
                state, losses_ = fused_fn(state, xs_k, ys_k)
            fbox["state"] = state
            jax.block_until_ready(losses_)

        runners["fnml_fused"] = run_fused
    return runners


def _compiled(model: nn.Module) -> nn.Module | None:
    """``torch.compile(model)`` or None when torch.compile is unusable here."""
    try:
        return torch.compile(model)
    except Exception:  # noqa: BLE001 - reported as unavailable
        return None


def _finish(
    name: str,
    description: str,
    k: int,
    torch_builder: Callable[[bool], Callable[[int], None]],
    fnml_runners: dict[str, Callable[[int], None]],
    *,
    with_compile: bool,
    flops: float | None = None,
) -> Workload:
    """Assemble a Workload: build torch runners, run every runner once (first-call cost recorded)."""
    runners: dict[str, Callable[[int], None]] = {"torch_eager": torch_builder(False)}
    if with_compile:
        runners["torch_compile"] = torch_builder(True)
    runners.update(fnml_runners)
    compile_seconds = {}
    for label, run in runners.items():
        try:
            compile_seconds[label] = _timed_first_call(run, k)
        except Exception as error:  # noqa: BLE001 - torch.compile may fail on this machine
            if label != "torch_compile":
                raise
            compile_seconds[label] = float("nan")
            runners[label] = None
            print(f"  {name}: torch.compile failed: {type(error).__name__}: {str(error)[:200]}")
    runners = {label: run for label, run in runners.items() if run is not None}
    return Workload(name, description, k, runners, compile_seconds, flops)


# --------------------------------------------------------------------------------------------------
# W1 .. W4
# --------------------------------------------------------------------------------------------------


def build_w1(*, with_compile: bool = True) -> Workload:
    """W1: the tutorial model, 100 full-batch Adam steps per block."""
    torch.manual_seed(0)
    initial = TorchSimpleNN().state_dict()
    x, y = torch.randn(10, 2), torch.randn(10, 1)

    def torch_builder(compiled: bool):
        model = TorchSimpleNN()
        model.load_state_dict(initial)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        net = _compiled(model) if compiled else model
        return _torch_loop(net, nn.MSELoss(), optimizer, lambda i: (x, y))

    model = layers.SimpleNN(rngs=nnx.Rngs(0))
    interop.load_state_dict(model, initial)
    fnml = _fnml_runners(
        model,
        optim.adam(lr=1e-3),
        losses.MSELoss(),
        jnp.asarray(x.numpy())[None],
        jnp.asarray(y.numpy())[None],
        fused=True,
        donate=False,
        k_fused=100,
    )
    return _finish(
        "W1",
        "SimpleNN 2-2-1, MSE, Adam, X (10, 2) full batch",
        100,
        torch_builder,
        fnml,
        with_compile=with_compile,
    )


def build_w2(*, with_compile: bool = True, donate: bool = True) -> Workload:
    """W2: MLP 784-512-512-10, Adam, batch 128; 8 distinct batches cycled (20 steps per block)."""
    torch.manual_seed(0)
    initial = torch_mlp().state_dict()
    xs, ys = torch.randn(8, 128, 784), torch.randint(0, 10, (8, 128))
    k = 20

    def torch_builder(compiled: bool):
        model = torch_mlp()
        model.load_state_dict(initial)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        net = _compiled(model) if compiled else model
        return _torch_loop(net, nn.CrossEntropyLoss(), optimizer, lambda i: (xs[i % 8], ys[i % 8]))

    model = fnml_mlp()
    interop.load_state_dict(model, initial)
    fnml = _fnml_runners(
        model,
        optim.adam(lr=1e-3),
        losses.CrossEntropyLoss(),
        jnp.asarray(xs.numpy()),
        jnp.asarray(ys.numpy().astype(np.int32)),
        fused=True,
        donate=donate,
        k_fused=k,
    )
    # forward 2*B*(784*512 + 512*512 + 512*10); backward twice that (input grads + weight grads)
    flops = 3 * 2 * 128 * (784 * 512 + 512 * 512 + 512 * 10)
    return _finish(
        "W2",
        "MLP 784-512-512-10, CE, Adam, batch 128",
        k,
        torch_builder,
        fnml,
        with_compile=with_compile,
        flops=flops,
    )


def build_w3(*, with_compile: bool = True, fused: bool = True) -> Workload:
    """W3: the small CNN, SGD momentum 0.9, batch 64; 4 distinct batches cycled (8 steps per block)."""
    torch.manual_seed(0)
    initial = torch_cnn().state_dict()
    xs, ys = torch.randn(4, 64, 1, 28, 28), torch.randint(0, 10, (4, 64))
    k = 8

    def torch_builder(compiled: bool):
        model = torch_cnn()
        model.load_state_dict(initial)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        net = _compiled(model) if compiled else model
        return _torch_loop(net, nn.CrossEntropyLoss(), optimizer, lambda i: (xs[i % 4], ys[i % 4]))

    model = fnml_cnn()
    # torch flattens (C, H, W), the NHWC model (H, W, C): permute the Linear's input columns once.
    interop.load_state_dict(model, initial, flatten_nhwc={"7": (64, 5, 5)})
    xs_nhwc = jnp.asarray(xs.numpy().transpose(0, 1, 3, 4, 2))  # (B, N, C, H, W) -> (B, N, H, W, C)
    fnml = _fnml_runners(
        model,
        optim.sgd(lr=0.01, momentum=0.9),
        losses.CrossEntropyLoss(),
        xs_nhwc,
        jnp.asarray(ys.numpy().astype(np.int32)),
        fused=fused,
        donate=True,
        k_fused=k,
    )
    return _finish(
        "W3",
        "CNN conv32-pool-conv64-pool-linear, CE, SGD m=0.9, batch 64",
        k,
        torch_builder,
        fnml,
        with_compile=with_compile,
    )


def build_w4(*, with_compile: bool = True, fused: bool = True, donate: bool = False) -> Workload:
    """W4: LSTM(32, 128), T=50, batch 32, Linear head, Adam; 4 distinct batches cycled (8 steps per block)."""
    torch.manual_seed(0)
    initial = TorchLSTMHead().state_dict()
    xs, ys = torch.randn(4, 50, 32, 32), torch.randint(0, 10, (4, 32))
    k = 8

    def torch_builder(compiled: bool):
        model = TorchLSTMHead()
        model.load_state_dict(initial)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        net = _compiled(model) if compiled else model
        return _torch_loop(net, nn.CrossEntropyLoss(), optimizer, lambda i: (xs[i % 4], ys[i % 4]))

    model = FnmlLSTMHead(rngs=nnx.Rngs(0))
    interop.load_state_dict(model, initial)
    fnml = _fnml_runners(
        model,
        optim.adam(lr=1e-3),
        losses.CrossEntropyLoss(),
        jnp.asarray(xs.numpy()),
        jnp.asarray(ys.numpy().astype(np.int32)),
        fused=fused,
        donate=donate,
        k_fused=k,
    )
    return _finish(
        "W4",
        "LSTM(32, 128) T=50 + Linear head, CE, Adam, batch 32",
        k,
        torch_builder,
        fnml,
        with_compile=with_compile,
    )


BUILDERS = {"W1": build_w1, "W2": build_w2, "W3": build_w3, "W4": build_w4}

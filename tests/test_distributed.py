"""Data parallelism with jax.sharding: multi-device fit == single-device fit == torch on the global batch.

The suite runs with ONE CPU device, so every multi-device check runs in a SUBPROCESS with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (N = 4, 8) or as two processes joined by
``jax.distributed`` on 127.0.0.1. Each subprocess runs one worker script (below) that trains and writes
its results to an .npz; the assertions (and the torch and single-device references) live here.
Every subprocess is bounded by a (scaled, generous) deadline, killed on failure, and its pipe closed.
Checkpoints cross device AND process counts: the two processes save into one shared directory (restored
and resumed here in one process), resume a checkpoint written here by one process, and save a state split
across both of them.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
import subprocess
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from helpers import ROOT, child_env, end, finish, max_abs_diff, spawn_python, tolerance

from fnml import checkpoint, data, interop, layers, losses, optim, train
from fnml import device as fdevice

SUBPROCESS_TIMEOUT = 300  # seconds (scaled by helpers.deadline), per worker process; only bounds a hang
DTYPES = ("float64", "float32")
MODELS = ("mlp", "cnn")
STEPS = 100  # optimizer steps per trajectory: 25 epochs x 4 batches (mlp), 50 epochs x 2 batches (cnn)
CONFIG = {
    #        n samples, batch size, epochs
    "mlp": (64, 16, 25),
    "cnn": (32, 16, 50),
}
LR, MOMENTUM = 0.05, 0.9
CONTINUE_STEPS = 5  # steps taken after restoring a checkpoint on another device count
PROCESS_EPOCHS = 20  # full-batch epochs of the two-process run (checkpoints at 10 and 20)


# ---------------------------------------------------------------------------------------------------
# models (fnml and torch twins with the same torch state_dict names)
# ---------------------------------------------------------------------------------------------------


def fnml_model(name: str, dtype: str) -> nnx.Module:
    """MLP 8-16-4 (Tanh) or a CNN conv3x3 -> BatchNorm2d -> ReLU -> global avg pool -> Linear (NHWC)."""
    rngs, dt = nnx.Rngs(0), jnp.dtype(dtype)
    if name == "mlp":
        return layers.Sequential(
            layers.Linear(8, 16, rngs=rngs, param_dtype=dt),
            layers.Tanh(),
            layers.Linear(16, 4, rngs=rngs, param_dtype=dt),
        )
    return layers.Sequential(
        layers.Conv2d(2, 4, 3, padding=1, rngs=rngs, param_dtype=dt),
        layers.BatchNorm2d(4, param_dtype=dt),
        layers.ReLU(),
        layers.AdaptiveAvgPool2d(1),  # (N, H, W, C) -> (N, 1, 1, C): same flatten order as torch's NCHW
        layers.Flatten(),
        layers.Linear(4, 3, rngs=rngs, param_dtype=dt),
    )


def torch_model(name: str, dtype: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "mlp":
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    else:
        model = torch.nn.Sequential(
            torch.nn.Conv2d(2, 4, 3, padding=1),
            torch.nn.BatchNorm2d(4),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(4, 3),
        )
    return model.to(getattr(torch, dtype))


def criterion(name: str):
    return losses.MSELoss() if name == "mlp" else losses.CrossEntropyLoss()


def dataset(name: str, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Fixed inputs: mlp X (64, 8) -> Y (64, 4); cnn X (32, 6, 6, 2) NHWC -> class labels (32,)."""
    n = CONFIG[name][0]
    rng = np.random.default_rng(1)
    if name == "mlp":
        return rng.normal(size=(n, 8)).astype(dtype), rng.normal(size=(n, 4)).astype(dtype)
    return rng.normal(size=(n, 6, 6, 2)).astype(dtype), rng.integers(0, 3, size=n)


# ---------------------------------------------------------------------------------------------------
# the worker run in subprocesses (writes results.npz; imports fnml from this checkout)
# ---------------------------------------------------------------------------------------------------

WORKER = textwrap.dedent(
    r"""
    import json, os, sys
    mode, workdir = sys.argv[1], sys.argv[2]
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={int(sys.argv[3])}".strip()
    import jax
    import numpy as np
    from fnml import device as fdevice
    if mode == "process":
        process_id, port = int(sys.argv[4]), int(sys.argv[5])
        wait = int(300 * float(os.environ.get("FNML_TEST_TIMEOUT_SCALE", "1")))  # bounds a hang only
        fdevice.init_distributed(f"127.0.0.1:{port}", 2, process_id, initialization_timeout=wait)
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_default_matmul_precision", "highest")
    sys.path.insert(0, os.path.join(os.environ["FNML_ROOT"], "tests"))
    import test_distributed as T
    from fnml import checkpoint, interop, optim, train

    out = {}
    if mode == "devices":
        m = fdevice.mesh()
        out["mesh_shape"] = np.array([m.shape["data"], m.shape["model"]])
        for name in T.MODELS:
            for dtype in T.DTYPES:
                out.update(T.run_fit(name, dtype, workdir, mesh=m, prefix=f"{name}_{dtype}_"))
        # uneven global batch: a clear error before any step
        X, Y = T.dataset("mlp", "float64")
        try:
            train.fit(T.fnml_model("mlp", "float64"), optim.sgd(lr=0.1), T.criterion("mlp"), X, Y,
                      epochs=1, batch_size=10, mesh=m, verbose=False)
        except ValueError as error:
            out["uneven_error"] = np.array(str(error))
        try:
            fdevice.shard_batch(X[:10], m)
        except ValueError as error:
            out["uneven_shard_error"] = np.array(str(error))
        # checkpoint saved on ONE device -> restored here, replicated, trained on -> saved for 1 device
        model = T.fnml_model("cnn", "float64")
        interop.load_state_dict(model, dict(np.load(os.path.join(workdir, "torch_cnn_float64.npz"))))
        tx = optim.sgd(lr=T.LR, momentum=T.MOMENTUM)
        template = train.TrainState.create(model, tx)
        state = fdevice.replicate(checkpoint.restore_checkpoint(os.path.join(workdir, "ckpt_single"),
                                                                template=template), m)
        step = train.make_train_step(T.criterion("cnn"), mesh=m)
        X, Y = T.dataset("cnn", "float64")
        for _ in range(T.CONTINUE_STEPS):
            state, _ = step(state, X[:16], Y[:16])
        out["continued_sharding"] = np.array(str(state.params["layers"][0]["kernel"][...].sharding.spec))
        checkpoint.save_checkpoint(os.path.join(workdir, f"ckpt_from_{m.size}"), state, step=int(state.step))
        if m.size == 8:
            # opt-in parameter sharding on a (data=4, model=2) mesh: same numbers, kernels split over "model"
            m2 = fdevice.mesh(data=4, model=2)
            state = fdevice.replicate(checkpoint.restore_checkpoint(os.path.join(workdir, "ckpt_single"),
                                                                    template=template), m2)
            run = fdevice.data_parallel(train.make_train_step(T.criterion("cnn")), m2, shard_min_size=16)
            for _ in range(T.CONTINUE_STEPS):
                state, _ = run(state, X[:16], Y[:16])
            out["model_sharded_spec"] = np.array(str(state.params["layers"][0]["kernel"][...].sharding.spec))
            target = os.path.join(workdir, "ckpt_model_sharded")
            checkpoint.save_checkpoint(target, state, step=int(state.step))
    else:  # two processes, each feeding its half of every global batch
        m = fdevice.mesh()
        process_id = fdevice.process_index()
        X, Y = T.dataset("mlp", "float64")
        half = len(X) // 2
        rows = slice(process_id * half, (process_id + 1) * half)
        model = T.fnml_model("mlp", "float64")
        interop.load_state_dict(model, dict(np.load(os.path.join(workdir, "torch_mlp_float64.npz"))))
        tx = optim.sgd(lr=T.LR, momentum=T.MOMENTUM)
        # both processes save into ONE shared directory (epochs 10 and 20), restored by ONE process in the test
        result = train.fit(model, tx, T.criterion("mlp"), X[rows], Y[rows], epochs=T.PROCESS_EPOCHS, mesh=m,
                           verbose=False, checkpoint_dir=os.path.join(workdir, "ckpt_two_processes"),
                           checkpoint_every=T.PROCESS_EPOCHS // 2)
        out["losses"] = result.losses
        out["devices"] = np.array([len(jax.devices()), len(jax.local_devices()), fdevice.process_count()])
        out["main"] = np.array(fdevice.is_main_process())
        out.update({f"param_{k}": v for k, v in interop.state_dict(fdevice.to_host(result.model)).items()})
        # a checkpoint written by ONE process (the test, epoch 10) resumed by both: epochs 11..20 on the mesh
        model = T.fnml_model("mlp", "float64")
        interop.load_state_dict(model, dict(np.load(os.path.join(workdir, "torch_mlp_float64.npz"))))
        resumed = train.fit(model, tx, T.criterion("mlp"), X[rows], Y[rows], epochs=T.PROCESS_EPOCHS, mesh=m,
                            verbose=False, resume_from=os.path.join(workdir, "ckpt_one_process"))
        out["resumed_losses"] = resumed.losses
        out["resumed_sharding"] = np.array(str(resumed.state.params["layers"][0]["kernel"].sharding.spec))
        out.update({f"resumed_param_{k}": v for k, v in interop.state_dict(fdevice.to_host(resumed.model)).items()})
        out.update({f"resumed_opt_{i}": np.asarray(v) for i, v in enumerate(jax.tree.leaves(resumed.state.opt_state))})
        # that state with its kernels split ACROSS the two processes (model=2), saved by both: gathered, one copy
        split = fdevice.shard_params(resumed.state, fdevice.mesh(data=1, model=2), min_size=16)
        kernel = split.params["layers"][0]["kernel"]
        out["split_kernel"] = np.array([str(kernel.sharding.spec), str(kernel.is_fully_addressable)])
        checkpoint.save_checkpoint(os.path.join(workdir, "ckpt_split"), split, step=int(split.step))
        workdir = os.path.join(workdir, f"process{process_id}")
        os.makedirs(workdir, exist_ok=True)
    np.savez(os.path.join(workdir, f"results_{mode}_{sys.argv[3]}.npz"), **out)
    print("WORKER DONE", flush=True)
    """
)


def run_fit(name: str, dtype: str, workdir: str, *, mesh=None, prefix: str = "") -> dict[str, np.ndarray]:
    """fnml fit from the saved torch weights: losses, final torch-named state, validation losses."""
    model = fnml_model(name, dtype)
    interop.load_state_dict(model, dict(np.load(os.path.join(workdir, f"torch_{name}_{dtype}.npz"))))
    X, Y = dataset(name, dtype)
    n, batch_size, epochs = CONFIG[name]
    result = train.fit(
        model,
        optim.sgd(lr=LR, momentum=MOMENTUM),
        criterion(name),
        X,
        Y,
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        key=jax.random.key(7),
        validation=(X[:16], Y[:16]) if name == "mlp" else None,
        mesh=mesh,
        verbose=False,
    )
    out = {f"{prefix}losses": result.losses}
    if name == "mlp":
        out[f"{prefix}val_loss"] = np.asarray(result.history["val_loss"])
    out.update({f"{prefix}param_{k}": np.asarray(v) for k, v in interop.state_dict(result.model).items()})
    return out


@functools.cache
def torch_trajectory(name: str, dtype: str, *, bn_per_shard: int | None = None) -> dict[str, np.ndarray]:
    """torch SGD on the same batches (fnml.data's shuffle order), one process, the GLOBAL batch.

    ``bn_per_shard=k``: only the first step, with the batch split into k shards whose BatchNorm
    statistics are computed separately (DDP without SyncBatchNorm); returns that step's mean loss.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only contend with the concurrent workers
    try:
        return _torch_trajectory(name, dtype, bn_per_shard)
    finally:
        torch.set_num_threads(threads)


def _torch_trajectory(name: str, dtype: str, bn_per_shard: int | None) -> dict[str, np.ndarray]:
    """torch_trajectory's body."""
    model = torch_model(name, dtype)
    X, Y = dataset(name, dtype)
    if name == "cnn":
        X = X.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    tx, ty = torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(Y)
    loss_fn = torch.nn.MSELoss() if name == "mlp" else torch.nn.CrossEntropyLoss()
    n, batch_size, epochs = CONFIG[name]
    if bn_per_shard is not None:
        index = torch.from_numpy(
            np.asarray(data.batch_indices(n, batch_size, shuffle=True, key=jax.random.key(7), epoch=0)[0])
        )
        shards = zip(tx[index].chunk(bn_per_shard), ty[index].chunk(bn_per_shard))
        with torch.no_grad():
            return {"loss": np.array(np.mean([loss_fn(model(xs), ys).item() for xs, ys in shards]))}
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    history = []
    for epoch in range(epochs):
        for index in data.batch_indices(n, batch_size, shuffle=True, key=jax.random.key(7), epoch=epoch):
            index = torch.from_numpy(np.asarray(index))
            opt.zero_grad()
            loss = loss_fn(model(tx[index]), ty[index])
            loss.backward()
            opt.step()
            history.append(loss.item())
    out = {"losses": np.array(history)}
    out.update({f"param_{k}": v.detach().numpy() for k, v in model.state_dict().items()})
    return out


# ---------------------------------------------------------------------------------------------------
# fixtures: references in this process, workers in subprocesses
# ---------------------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = child_env(x64=True, fast_compile=True, FNML_ROOT=str(ROOT))
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    return env


def _start(workdir: str, *args: str) -> subprocess.Popen:
    return spawn_python([os.path.join(workdir, "worker.py"), *args], env=_env(), cwd=workdir)


def _wait(processes: list[subprocess.Popen], what: str) -> None:
    """Wait for every process (bounded); kill all of them on timeout or failure; fail with their output."""
    try:
        for proc in processes:
            output = finish(proc, timeout=SUBPROCESS_TIMEOUT)
            if proc.returncode != 0 or "WORKER DONE" not in output:
                pytest.fail(f"{what}: worker exited with {proc.returncode}:\n{output[-4000:]}")
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"{what}: worker timed out after {expired.timeout:.0f} s:\n{(expired.output or '')[-4000:]}")
    finally:
        for proc in processes:
            end(proc)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> str:
    """Torch weights (npz), the worker script and a single-device checkpoint shared by all workers."""
    path = str(tmp_path_factory.mktemp("distributed"))
    for name in MODELS:
        for dtype in DTYPES:
            sd = {k: v.detach().numpy() for k, v in torch_model(name, dtype).state_dict().items()}
            np.savez(os.path.join(path, f"torch_{name}_{dtype}.npz"), **sd)
    with open(os.path.join(path, "worker.py"), "w") as f:
        f.write(WORKER)
    # The single-device checkpoint that the multi-device workers restore.
    model = fnml_model("cnn", "float64")
    interop.load_state_dict(model, dict(np.load(os.path.join(path, "torch_cnn_float64.npz"))))
    state = train.TrainState.create(model, optim.sgd(lr=LR, momentum=MOMENTUM))
    step = train.make_train_step(criterion("cnn"))
    X, Y = dataset("cnn", "float64")
    for _ in range(3):
        state, _ = step(state, X[16:], Y[16:])
    checkpoint.save_checkpoint(os.path.join(path, "ckpt_single"), state, step=int(state.step))
    # The one-process fit checkpoint (mlp, epoch 10 of 20) that the two processes resume.
    _one_process_mlp_fit(path, epochs=PROCESS_EPOCHS // 2, checkpoint_dir=os.path.join(path, "ckpt_one_process"))
    return path


def _one_process_mlp_fit(workdir: str, **options) -> train.FitResult:
    """The mlp full-batch fit in one process on one device (what the two processes each feed half of)."""
    model = fnml_model("mlp", "float64")
    interop.load_state_dict(model, dict(np.load(os.path.join(workdir, "torch_mlp_float64.npz"))))
    X, Y = dataset("mlp", "float64")
    return train.fit(model, optim.sgd(lr=LR, momentum=MOMENTUM), criterion("mlp"), X, Y, verbose=False, **options)


@pytest.fixture(scope="module")
def single(workdir) -> dict[str, np.ndarray]:
    """Single-device (this process) fit of every model x dtype."""
    out = {}
    for name in MODELS:
        for dtype in DTYPES:
            out.update(run_fit(name, dtype, workdir, prefix=f"{name}_{dtype}_"))
    return out


@pytest.fixture(scope="module")
def launched(workdir) -> dict[str, list[subprocess.Popen]]:
    """Every worker, started at once (they overlap with each other and with the in-process references)."""
    port = _free_port()
    workers = {
        "4": [_start(workdir, "devices", workdir, "4")],
        "8": [_start(workdir, "devices", workdir, "8")],
        "processes": [_start(workdir, "process", workdir, "1", str(pid), str(port)) for pid in (0, 1)],
    }
    yield workers
    for procs in workers.values():  # never leave a worker behind, nor an open pipe
        for proc in procs:
            end(proc)


@pytest.fixture(scope="module", params=[4, 8], ids=["4dev", "8dev"])
def multi(request, workdir, launched, single) -> tuple[int, dict[str, np.ndarray]]:
    """The worker's results on N simulated CPU devices (one bounded subprocess each)."""
    n = request.param
    _wait(launched[str(n)], f"{n}-device worker")
    return n, dict(np.load(os.path.join(workdir, f"results_devices_{n}.npz")))


def _split(results: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in results.items() if k.startswith(prefix)}


def _tol(dtype: str) -> float:
    """The acceptance tolerance: float64 1e-12, float32 1e-5 (over 100 steps)."""
    return tolerance(dtype)["atol"]


# ---------------------------------------------------------------------------------------------------
# multi-device == single device == torch on the global batch
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", MODELS)
def test_data_parallel_fit_matches_single_device(multi, single, name, dtype):
    n, results = multi
    assert results["mesh_shape"].tolist() == [n, 1]
    dp, one = _split(results, f"{name}_{dtype}_"), _split(single, f"{name}_{dtype}_")
    assert len(dp["losses"]) == STEPS
    assert max_abs_diff(dp["losses"], one["losses"]) <= _tol(dtype)
    # Parameters AND BatchNorm buffers (running stats over the global batch, num_batches_tracked).
    assert max_abs_diff(dp, one) <= _tol(dtype)
    if name == "mlp":  # validation ran on the replicated state
        assert max_abs_diff(dp["val_loss"], one["val_loss"]) <= _tol(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", MODELS)
def test_data_parallel_fit_matches_torch_global_batch(multi, name, dtype):
    """DDP == single-process torch on the global batch; BatchNorm here == torch SyncBatchNorm semantics."""
    _, results = multi
    dp, ref = _split(results, f"{name}_{dtype}_"), torch_trajectory(name, dtype)
    tol = tolerance(dtype if dtype == "float64" else "float32_trajectory")
    np.testing.assert_allclose(dp["losses"], ref["losses"], **tol)
    for key in ref:
        np.testing.assert_allclose(dp[key].astype(np.float64), ref[key].astype(np.float64), err_msg=key, **tol)


def test_batchnorm_statistics_are_global_not_per_device(multi):
    """Sharded batch inside one jit: BatchNorm normalises with GLOBAL batch statistics (SyncBatchNorm).

    The first loss equals torch's BatchNorm over the whole global batch (which is what SyncBatchNorm
    computes) and differs from DDP's default per-device statistics (the batch split into N shards).
    """
    n, results = multi
    first = results["cnn_float64_losses"][0]
    global_stats = torch_trajectory("cnn", "float64")["losses"][0]
    per_device = float(torch_trajectory("cnn", "float64", bn_per_shard=n)["loss"])
    assert abs(first - global_stats) <= 1e-12
    assert abs(first - per_device) > 1e-3


def test_uneven_global_batch_is_a_clear_error(multi):
    n, results = multi
    message = str(results["uneven_error"])
    assert re.search(rf"the global batch size 10 is not divisible by the mesh's 'data' axis size {n}", message)
    assert f"use a batch size that is a multiple of {n} (e.g. 8 or {8 + n})" in message
    assert "the global batch size 10 is not divisible" in str(results["uneven_shard_error"])


# ---------------------------------------------------------------------------------------------------
# checkpoints across device counts
# ---------------------------------------------------------------------------------------------------


def _continue_single(workdir: str) -> train.TrainState:
    """The single-device twin of the worker's restore-and-continue."""
    model = fnml_model("cnn", "float64")
    interop.load_state_dict(model, dict(np.load(os.path.join(workdir, "torch_cnn_float64.npz"))))
    template = train.TrainState.create(model, optim.sgd(lr=LR, momentum=MOMENTUM))
    state = checkpoint.restore_checkpoint(os.path.join(workdir, "ckpt_single"), template=template)
    step = train.make_train_step(criterion("cnn"))
    X, Y = dataset("cnn", "float64")
    for _ in range(CONTINUE_STEPS):
        state, _ = step(state, X[:16], Y[:16])
    return state, template


def test_checkpoint_single_to_multi_to_single(multi, workdir):
    """1 device -> save -> restore on N devices, replicate, train -> save -> restore on 1 device."""
    n, results = multi
    assert str(results["continued_sharding"]) == str(jax.sharding.PartitionSpec())
    expected, template = _continue_single(workdir)
    restored = checkpoint.restore_checkpoint(os.path.join(workdir, f"ckpt_from_{n}"), template=template)
    assert int(restored.step) == 3 + CONTINUE_STEPS
    assert max_abs_diff(jax.tree.leaves(restored.params), jax.tree.leaves(expected.params)) <= 1e-12
    assert max_abs_diff(jax.tree.leaves(restored.opt_state), jax.tree.leaves(expected.opt_state)) <= 1e-12
    assert max_abs_diff(jax.tree.leaves(restored.rest), jax.tree.leaves(expected.rest)) <= 1e-12
    if n == 8:  # parameters split along "model" on a (4, 2) mesh: same numbers, restorable on 1 device
        assert str(results["model_sharded_spec"]) == str(jax.sharding.PartitionSpec(None, None, None, "model"))
        sharded = checkpoint.restore_checkpoint(os.path.join(workdir, "ckpt_model_sharded"), template=template)
        assert max_abs_diff(jax.tree.leaves(sharded.params), jax.tree.leaves(expected.params)) <= 1e-12


# ---------------------------------------------------------------------------------------------------
# two processes on 127.0.0.1 (jax.distributed + gloo CPU collectives)
# ---------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(workdir, launched) -> list[dict[str, np.ndarray]]:
    """The two processes' results (each fed half of every global batch)."""
    _wait(launched["processes"], "two-process run")
    return [dict(np.load(os.path.join(workdir, f"process{p}", "results_process_1.npz"))) for p in (0, 1)]


@pytest.fixture(scope="module")
def one_process(workdir) -> train.FitResult:
    """The reference: one process, one device, the whole batch, all epochs uninterrupted."""
    return _one_process_mlp_fit(workdir, epochs=PROCESS_EPOCHS)


def test_two_processes_match_single_process(two_processes, one_process):
    per_process, ref = two_processes, one_process
    expected = {f"param_{k}": v for k, v in interop.state_dict(ref.model).items()}
    for pid, got in enumerate(per_process):
        assert got["devices"].tolist() == [2, 1, 2]  # 2 global devices, 1 local, 2 processes
        assert bool(got["main"]) == (pid == 0)
        assert max_abs_diff(got["losses"], ref.losses) <= 1e-12
        assert max_abs_diff({k: got[k] for k in expected}, expected) <= 1e-12
    # Both processes end with bitwise-identical parameters.
    assert max_abs_diff({k: per_process[0][k] for k in expected}, {k: per_process[1][k] for k in expected}) == 0.0


def _state_diff(a: train.TrainState, b: train.TrainState) -> float:
    """max |a - b| over parameters, optimizer state and the other variables; the steps must be equal."""
    assert int(a.step) == int(b.step)
    return max_abs_diff(
        jax.tree.leaves((a.params, a.opt_state, a.rest)), jax.tree.leaves((b.params, b.opt_state, b.rest))
    )


def test_checkpoint_written_by_two_processes_restores_in_one(workdir, two_processes, one_process, tmp_path):
    """Both processes saved into one directory (epochs 10 and 20); one process restores and resumes it."""
    directory = os.path.join(workdir, "ckpt_two_processes")
    half = _one_process_mlp_fit(workdir, epochs=PROCESS_EPOCHS // 2)
    assert checkpoint.all_steps(directory) == [PROCESS_EPOCHS // 2, PROCESS_EPOCHS]  # one step per save, both saved
    for step in checkpoint.all_steps(directory):
        assert checkpoint.verify_checkpoint(directory, step=step)  # the manifest, written once
    template = train.TrainState.create(fnml_model("mlp", "float64"), optim.sgd(lr=LR, momentum=MOMENTUM))
    middle, end = PROCESS_EPOCHS // 2, PROCESS_EPOCHS  # full batch: one step per epoch
    restored = {step: checkpoint.restore_checkpoint(directory, template=template, step=step) for step in (middle, end)}
    diffs = {
        f"epoch {middle}": _state_diff(restored[middle], half.state),
        f"epoch {end}": _state_diff(restored[end], one_process.state),
    }
    meta = checkpoint.checkpoint_metadata(directory)
    diffs["saved losses"] = max_abs_diff(np.asarray(meta["losses"]), one_process.losses)
    # resume the epoch-10 checkpoint here, in one process on one device, up to epoch 20
    copy = tmp_path / "middle"
    shutil.copytree(os.path.join(directory, str(middle)), copy / str(middle))
    resumed = _one_process_mlp_fit(workdir, epochs=PROCESS_EPOCHS, resume_from=str(copy))
    diffs["resumed losses"] = max_abs_diff(resumed.losses, one_process.losses)
    diffs["resumed state"] = _state_diff(resumed.state, one_process.state)
    print("2 processes -> checkpoint -> 1 process:", {k: f"{v:.1e}" for k, v in diffs.items()})
    assert meta["epoch"] == PROCESS_EPOCHS
    assert max(diffs.values()) <= 1e-12, diffs


def test_checkpoint_written_by_one_process_resumes_in_two(two_processes, one_process):
    """One process saved epoch 10; both processes resumed it on their mesh and trained epochs 11..20."""
    opt = [np.asarray(v) for v in jax.tree.leaves(one_process.state.opt_state)]
    expected = {f"resumed_param_{k}": v for k, v in interop.state_dict(one_process.model).items()}
    for pid, got in enumerate(two_processes):
        assert str(got["resumed_sharding"]) == str(jax.sharding.PartitionSpec())  # replicated on the 2-process mesh
        losses = max_abs_diff(got["resumed_losses"], one_process.losses)  # the saved 10, then the 10 resumed
        params = max_abs_diff({k: got[k] for k in expected}, expected)
        moments = max_abs_diff([got[f"resumed_opt_{i}"] for i in range(len(opt))], opt)
        print(f"1 process -> checkpoint -> process {pid} of 2: losses {losses:.1e}, params {params:.1e}, ", end="")
        print(f"sgd momentum {moments:.1e}")
        assert len(got["resumed_losses"]) == PROCESS_EPOCHS
        assert max(losses, params, moments) <= 1e-12


def test_checkpoint_of_a_state_split_across_two_processes_restores_in_one(workdir, two_processes, one_process):
    """The resumed state with every kernel split along "model" across the 2 processes, saved by both."""
    for got in two_processes:  # the (8, 16) kernel on (data=1, model=2): half of it on each process
        assert got["split_kernel"].tolist() == [str(jax.sharding.PartitionSpec(None, "model")), "False"]
    template = train.TrainState.create(fnml_model("mlp", "float64"), optim.sgd(lr=LR, momentum=MOMENTUM))
    restored = checkpoint.restore_checkpoint(os.path.join(workdir, "ckpt_split"), template=template)
    assert _state_diff(restored, one_process.state) <= 1e-12


# ---------------------------------------------------------------------------------------------------
# in-process (one device): API, placement, errors
# ---------------------------------------------------------------------------------------------------


def test_mesh_over_one_device_and_shardings():
    m = fdevice.mesh()
    assert m.axis_names == ("data", "model") and m.shape["data"] == len(jax.devices()) and m.shape["model"] == 1
    assert fdevice.batch_sharding(m).spec == jax.sharding.PartitionSpec("data")
    assert fdevice.replicated_sharding(m).spec == jax.sharding.PartitionSpec()
    x = fdevice.shard_batch({"x": np.ones((4, 3))}, m)["x"]
    assert isinstance(x, jax.Array) and x.sharding == fdevice.batch_sharding(m)
    assert fdevice.shard_batch(x, m) is x  # already placed: passes through
    model = fdevice.replicate(nnx.Linear(2, 1, rngs=nnx.Rngs(0)), m)
    assert isinstance(model, nnx.Linear) and model.kernel[...].sharding == fdevice.replicated_sharding(m)
    assert fdevice.process_index() == 0 and fdevice.process_count() == 1 and fdevice.is_main_process()
    host = fdevice.to_host({"w": jnp.ones(2)})
    assert isinstance(host["w"], np.ndarray)


def test_param_shardings_rule():
    m = fdevice.mesh(devices=["cpu:0"])
    tree = {"big": jnp.zeros((64, 128)), "small": jnp.zeros(3)}
    specs = jax.tree.map(lambda s: s.spec, fdevice.param_shardings(tree, m, min_size=16))
    assert specs == {"big": jax.sharding.PartitionSpec(), "small": jax.sharding.PartitionSpec()}  # model=1
    placed = fdevice.shard_params(tree, m, min_size=16)
    np.testing.assert_array_equal(placed["big"], tree["big"])


def test_fit_and_step_with_a_one_device_mesh_equal_no_mesh():
    m = fdevice.mesh()
    X, Y = dataset("mlp", "float64")
    model = fnml_model("mlp", "float64")
    tx = optim.sgd(lr=0.1)
    a = train.fit(model, tx, losses.MSELoss(), X, Y, epochs=3, batch_size=32, verbose=False)
    b = train.fit(model, tx, losses.MSELoss(), X, Y, epochs=3, batch_size=32, mesh=m, verbose=False)
    assert max_abs_diff(a.losses, b.losses) == 0.0
    step = train.make_train_step(losses.MSELoss(), mesh=m)
    state = train.TrainState.create(model, tx)
    for _ in range(3):
        state, loss = step(state, X, Y)
    assert step._cache_size() == 1  # no recompilation after the first step


def test_mesh_errors():
    count = len(jax.devices())
    with pytest.raises(
        ValueError, match=rf"mesh: data \* model must equal the number of devices \({count}\); got data=2"
    ):
        fdevice.mesh(data=2 * count)
    with pytest.raises(ValueError, match="mesh: model must be a positive int, got model=0"):
        fdevice.mesh(model=0)
    with pytest.raises(ValueError, match=rf"mesh: model={count + 1} does not divide the {count} devices"):
        fdevice.mesh(model=count + 1)
    with pytest.raises(ValueError, match="mesh: data must be a positive int or None, got data=1.5"):
        fdevice.mesh(data=1.5)
    with pytest.raises(ValueError, match="mesh: devices is empty"):
        fdevice.mesh(devices=[])
    with pytest.raises(ValueError, match=r"mesh: devices contains duplicates: \['cpu:0', 'cpu:0'\]"):
        fdevice.mesh(devices=["cpu:0", "cpu:0"])


def test_sharding_helper_errors():
    m = fdevice.mesh()
    for fn in (fdevice.batch_sharding, fdevice.replicated_sharding):
        with pytest.raises(TypeError, match=r"mesh must be a jax.sharding.Mesh with a 'data' axis .* got str"):
            fn("data")
    with pytest.raises(TypeError, match=r"shard_batch: mesh must be a jax.sharding.Mesh"):
        fdevice.shard_batch(np.ones(2), None)
    with pytest.raises(ValueError, match="shard_batch: got a scalar leaf 3.0; every leaf needs a leading batch axis"):
        fdevice.shard_batch(3.0, m)
    with pytest.raises(ValueError, match="global_batch: got a scalar leaf 3.0"):
        fdevice.global_batch(3.0, m)
    with pytest.raises(ValueError, match="param_shardings: min_size must be a positive int, got min_size=0"):
        fdevice.param_shardings({}, m, min_size=0)
    with pytest.raises(TypeError, match="data_parallel: step must be callable"):
        fdevice.data_parallel(None, m)
    with pytest.raises(TypeError, match="fit: mesh must be a jax.sharding.Mesh"):
        train.fit(
            fnml_model("mlp", "float64"),
            optim.sgd(lr=0.1),
            losses.MSELoss(),
            *dataset("mlp", "float64"),
            epochs=1,
            mesh="data",
            verbose=False,
        )


def test_global_batch_single_process_equals_shard_batch():
    m = fdevice.mesh()
    x = np.arange(12.0).reshape(4, 3)
    g = fdevice.global_batch(x, m)
    assert g.sharding == fdevice.batch_sharding(m)
    np.testing.assert_array_equal(g, x)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("localhost", 2, 0), {}, "coordinator_address must be 'host:port', got 'localhost'"),
        (("127.0.0.1:1234", 0, 0), {}, "num_processes must be a positive int, got num_processes=0"),
        (
            ("127.0.0.1:1234", 2, 2),
            {},
            r"process_id must be an int in 0\.\.1 \(num_processes=2\), got process_id=2",
        ),
        (
            ("127.0.0.1:1234", 2, 0),
            {"cpu_collectives": "nccl"},
            "cpu_collectives must be 'gloo', 'mpi' or None",
        ),
    ],
    ids=["address", "num_processes", "process_id", "collectives"],
)
def test_init_distributed_checks_its_arguments_eagerly(args, kwargs, message):
    with pytest.raises(ValueError, match=f"init_distributed: {message}"):
        fdevice.init_distributed(*args, **kwargs)

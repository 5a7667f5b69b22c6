"""The W6 GPT scaled out: 8 simulated CPU devices, mesh data=4 x model=2, parameters sharded along "model".

The suite runs with ONE CPU device, so the multi-device run is ONE SUBPROCESS with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (as ``tests/test_distributed.py``). The worker
trains a tiny ``benchmarks/workloads.FnmlGPT`` for 20 AdamW steps in float64 through the public API and
writes the per-step losses, final parameters and the shardings it saw to an .npz:

- ``single``: ``train.make_train_step(loss_fn=...)`` on one device (no mesh), the reference of the steps;
- ``step_fsdp``: ``train.make_train_step(loss_fn=..., mesh=mesh, shard_min_size=256)`` (FSDP-style: every
  state array of >= 256 elements split along "model", the batch along "data");
- ``fit_single``: ``train.fit`` on one device (unfused, with validation), the reference of the fits;
- ``fit_fsdp``: ``fit(mesh=mesh, shard_min_size=256, fused=False)``: one sharded jitted step per batch;
- ``fit_fsdp_fused``: ``fit(mesh=mesh, shard_min_size=256, fused=True)`` with validation and a callback
  that records the sharding of the state it is handed inside fit: each epoch one jitted ``lax.scan``;
- ``fit_mesh``: ``fit(mesh=mesh)`` (data-parallel, replicated parameters, ``fused="auto"``: fused);
- ``eval``: ``make_eval_step(loss_fn=..., mesh=mesh, shard_min_size=256)`` on the sharded final state.

Asserted here: each sharded run == one device within float64 1e-12 at every step and at the end, the
parameters really were sharded inside fit and in its result, and the fused runs really ran fused.
"""

from __future__ import annotations

import subprocess
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import ROOT, child_env, max_abs_diff, run_python, tolerance

from fnml import _fit as fit_pipeline
from fnml import device, interop, layers, losses, optim, train

SUBPROCESS_TIMEOUT = 300  # seconds (scaled by helpers.deadline); only bounds a hang
STEPS = 20  # 5 epochs of 4 batches of 8 sequences
MIN_SIZE = 256  # arrays of >= 256 elements are split along "model" (every matrix of the tiny GPT)

WORKER = textwrap.dedent(
    r"""
    import os, sys
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_default_matmul_precision", "highest")
    import jax.numpy as jnp
    import numpy as np
    root, out_path, steps, min_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sys.path.insert(0, os.path.join(root, "benchmarks"))
    import workloads as W
    from fnml import _fit as fit_pipeline
    from fnml import device, interop, optim, train

    SHAPE = dict(vocab=32, block=8, n_layer=2, n_head=2, n_embd=16)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, SHAPE["vocab"], size=(32, SHAPE["block"] + 1))  # 4 batches of 8 sequences
    X, Y = jnp.asarray(tokens[:, :-1]), jnp.asarray(tokens[:, 1:])
    batches = [(X[i * 8 : (i + 1) * 8], Y[i * 8 : (i + 1) * 8]) for i in range(4)]
    mesh = device.mesh(data=4, model=2)
    out = {"devices": np.array(len(jax.devices()))}

    def fresh_model():
        return W.FnmlGPT(**SHAPE, param_dtype=jnp.float64)

    def kernel_of(state):  # an mlp up-projection (16, 64) of the first block
        return next(leaf for leaf in jax.tree.leaves(state.params) if leaf.shape == (16, 64))

    def record_sharding(name, state):
        kernel = kernel_of(state)
        out[f"{name}_kernel_spec"] = np.array([str(axis) for axis in kernel.sharding.spec])  # ["None", "model"]
        out[f"{name}_kernel_shard_shape"] = np.array(kernel.addressable_shards[0].data.shape)
        # the AdamW moments of the (16, 64) kernels are split the same way (FSDP shards the optimizer state too)
        moments = [leaf for leaf in jax.tree.leaves(state.opt_state) if getattr(leaf, "shape", None) == (16, 64)]
        out[f"{name}_moment_specs"] = np.array([str(m.sharding.spec) for m in moments])

    def params_of(model):
        return {k: np.asarray(v) for k, v in interop.state_dict(model).items()}

    # make_train_step: one device, then FSDP-style on the mesh
    for name, options in (("single", {}), ("step_fsdp", dict(mesh=mesh, shard_min_size=min_size))):
        step = train.make_train_step(loss_fn=W.gpt_loss, **options)
        state, losses = train.TrainState.create(fresh_model(), optim.adamw(lr=1e-2)), []
        for i in range(steps):
            state, loss = step(state, *batches[i % 4])
            losses.append(float(loss))
        out[f"{name}_losses"] = np.array(losses)
        out.update({f"{name}/{k}": v for k, v in params_of(state.model()).items()})
        if options:
            record_sharding(name, state)
            out["step_fsdp_compilations"] = np.array(step._cache_size())
            single_eval = train.make_eval_step(loss_fn=W.gpt_loss)
            mesh_eval = train.make_eval_step(loss_fn=W.gpt_loss, **options)
            out["eval_single"] = np.asarray(single_eval(jax.device_put(state, jax.devices()[0]), X, Y)["loss"])
            out["eval_mesh"] = np.asarray(mesh_eval(state, X, Y)["loss"])

    # fit: count the fused builds, to know which runs really fused
    builds = []
    real_build = fit_pipeline._make_fused_epochs  # fit's pipeline builds its fused epochs there
    fit_pipeline._make_fused_epochs = lambda fn, **o: builds.append(o.get("mesh") is not None) or real_build(fn, **o)

    class Spy(train.Callback):
        specs = []

        def on_epoch_end(self, epoch, logs, state):
            self.specs.append([str(axis) for axis in kernel_of(state).sharding.spec])

    runs = {
        "fit_single": dict(fused=False, validation=(X[:8], Y[:8])),
        "fit_fsdp": dict(mesh=mesh, shard_min_size=min_size, fused=False),
        "fit_fsdp_fused": dict(mesh=mesh, shard_min_size=min_size, fused=True, validation=(X[:8], Y[:8]),
                               callbacks=[Spy()]),
        "fit_mesh": dict(mesh=mesh),  # replicated, fused="auto"
    }
    for name, options in runs.items():
        before = len(builds)
        result = train.fit(fresh_model(), optim.adamw(lr=1e-2), loss_fn=W.gpt_loss, data=(X, Y), batch_size=8,
                           epochs=steps // 4, verbose=False, **options)
        out[f"{name}_losses"] = np.asarray(result.losses)
        out[f"{name}_fused_builds_on_mesh"] = np.array(sum(builds[before:]))
        if "validation" in options:
            out[f"{name}_val_loss"] = np.asarray(result.history["val_loss"])
        out.update({f"{name}/{k}": v for k, v in params_of(result.model).items()})
        if "shard_min_size" in options:
            record_sharding(name, result.state)
    out["callback_kernel_specs"] = np.array(Spy.specs)

    # fused on the mesh through the other batch shapes (a small MLP): a shuffled epoch with a last partial
    # batch (16, 16, 8 rows), and gradient accumulation (2 micro-batches of 4 rows per step)
    from flax import nnx
    from fnml import layers, losses
    rng = np.random.default_rng(1)
    A, B = rng.normal(size=(40, 8)), rng.normal(size=(40, 64))
    shapes = {"remainder": dict(data=(A, B), batch_size=16, shuffle=True, key=jax.random.key(5)),
              "accumulate": dict(data=(A[:32], B[:32]), batch_size=4, accumulate_steps=2)}
    for name, options in shapes.items():
        for run, placement in (("single", {}), ("fused", dict(mesh=mesh, shard_min_size=256, fused=True))):
            model = layers.Sequential(layers.Linear(8, 64, rngs=nnx.Rngs(0), param_dtype=jnp.float64), layers.Tanh())
            mse = lambda m, x, y: losses.mse_loss(m(x), y)  # noqa: E731
            before = len(builds)
            result = train.fit(model, optim.adam(lr=1e-2), loss_fn=mse, epochs=3, verbose=False, **options,
                               **placement)
            out[f"mlp_{name}_{run}_losses"] = np.asarray(result.losses)
            out[f"mlp_{name}_{run}_fused_builds_on_mesh"] = np.array(sum(builds[before:]))
            out.update({f"mlp_{name}_{run}/{k}": v for k, v in params_of(result.model).items()})
            if run == "fused":  # the (8, 64) kernel: 512 elements, split along "model"
                out[f"mlp_{name}_kernel_spec"] = np.array(str(result.state.params["layers"][0]["kernel"].sharding.spec))
    np.savez(out_path, **out)
    print("WORKER DONE")
    """
)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, np.ndarray]:
    path = tmp_path_factory.mktemp("gpt_sharding")
    script, out = path / "worker.py", path / "results.npz"
    script.write_text(WORKER)
    env = child_env(x64=True, fast_compile=True)
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    try:
        completed = run_python(
            [str(script), str(ROOT), str(out), str(STEPS), str(MIN_SIZE)], env=env, cwd=path, timeout=SUBPROCESS_TIMEOUT
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"8-device GPT worker timed out after {expired.timeout:.0f} s")
    output = completed.stdout + completed.stderr
    if completed.returncode != 0 or "WORKER DONE" not in output:
        pytest.fail(f"8-device GPT worker exited with {completed.returncode}:\n{output[-4000:]}")
    return dict(np.load(out))


def _params(results: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) + 1 :]: v for k, v in results.items() if k.startswith(prefix + "/")}


def _report(name: str, losses: float, params: float) -> None:
    print(f"GPT data=4 x model=2, {name} vs one device, {STEPS} steps: losses {losses:.2e}, parameters {params:.2e}")


def test_worker_ran_on_eight_devices_with_sharded_parameters(results):
    assert int(results["devices"]) == 8
    # mlp.0 kernel (16, 64): split on its largest axis along "model" -> each shard (16, 32); its two AdamW
    # moments too; in make_train_step's state, in fit's returned states, and in the state fit hands a callback
    for name in ("step_fsdp", "fit_fsdp", "fit_fsdp_fused"):
        assert list(results[f"{name}_kernel_spec"]) == ["None", "model"], name
        assert tuple(results[f"{name}_kernel_shard_shape"]) == (16, 32), name
        # the (16, 64) kernels of both blocks x AdamW's two moments
        assert list(results[f"{name}_moment_specs"]) == [str(jax.sharding.PartitionSpec(None, "model"))] * 4, name
    assert results["callback_kernel_specs"].tolist() == [["None", "model"]] * (STEPS // 4)
    assert int(results["step_fsdp_compilations"]) == 1  # the out shardings feed the next step: no recompile


def test_fused_fits_on_the_mesh_really_fused(results):
    assert int(results["fit_fsdp_fused_fused_builds_on_mesh"]) == 1  # fused=True
    assert int(results["fit_mesh_fused_builds_on_mesh"]) == 1  # fused="auto" on a mesh (a GPT: no convolution)
    assert int(results["fit_fsdp_fused_builds_on_mesh"]) == 0  # fused=False


def test_make_train_step_with_sharded_parameters_equals_one_device(results):
    atol = tolerance("float64")["atol"]
    losses = max_abs_diff(results["step_fsdp_losses"], results["single_losses"])
    params = max_abs_diff(_params(results, "step_fsdp"), _params(results, "single"))
    _report("make_train_step(mesh=, shard_min_size=256)", losses, params)
    assert results["step_fsdp_losses"].shape == (STEPS,)
    assert losses <= atol
    assert params <= atol
    assert results["single_losses"][-1] < results["single_losses"][0]  # it trained


@pytest.mark.parametrize("name", ["fit_fsdp", "fit_fsdp_fused", "fit_mesh"], ids=["fsdp", "fsdp-fused", "ddp-auto"])
def test_fit_on_the_mesh_equals_fit_on_one_device(results, name):
    atol = tolerance("float64")["atol"]
    losses = max_abs_diff(results[f"{name}_losses"], results["fit_single_losses"])
    params = max_abs_diff(_params(results, name), _params(results, "fit_single"))
    _report(name, losses, params)
    assert results[f"{name}_losses"].shape == (STEPS,)
    assert losses <= atol
    assert params <= atol
    if f"{name}_val_loss" in results:  # validation on the sharded state
        assert max_abs_diff(results[f"{name}_val_loss"], results["fit_single_val_loss"]) <= atol
    # fit on one device takes the same batches as the hand-written step loop
    assert max_abs_diff(results["fit_single_losses"], results["single_losses"]) <= atol


@pytest.mark.parametrize("name", ["remainder", "accumulate"])
def test_fused_on_the_mesh_with_a_partial_batch_and_with_accumulation(results, name):
    atol = tolerance("float64")["atol"]
    assert int(results[f"mlp_{name}_fused_fused_builds_on_mesh"]) == 1
    assert str(results[f"mlp_{name}_kernel_spec"]) == str(jax.sharding.PartitionSpec(None, "model"))
    got, expected = f"mlp_{name}_fused", f"mlp_{name}_single"
    assert results[f"{got}_losses"].shape == (9 if name == "remainder" else 12,)
    losses = max_abs_diff(results[f"{got}_losses"], results[f"{expected}_losses"])
    params = max_abs_diff(_params(results, got), _params(results, expected))
    print(f"MLP fused on data=4 x model=2 ({name}) vs one device: losses {losses:.2e}, parameters {params:.2e}")
    assert losses <= atol
    assert params <= atol


def test_eval_step_on_the_mesh_equals_one_device(results):
    assert max_abs_diff(results["eval_mesh"], results["eval_single"]) <= tolerance("float64")["atol"]


# ---------------------------------------------------------------------------------------------------
# in-process (one device): the options' errors and the single-process rule of fused epochs on a mesh
# ---------------------------------------------------------------------------------------------------


def _tiny() -> tuple[nnx.Module, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    model = layers.Sequential(layers.Linear(3, 4, rngs=nnx.Rngs(0), param_dtype=jnp.float64), layers.Tanh())
    return model, rng.normal(size=(16, 3)), rng.normal(size=(16, 4))


def _fit(model, X, Y, **options) -> train.FitResult:
    return train.fit(
        model, optim.adam(lr=1e-2), losses.MSELoss(), X, Y, epochs=3, batch_size=4, verbose=False, **options
    )


BAD_SHARD_MIN_SIZE = [
    (0, ValueError, "shard_min_size must be a positive integer, got shard_min_size=0"),
    (-4, ValueError, "shard_min_size must be a positive integer, got shard_min_size=-4"),
    (2.5, TypeError, r"shard_min_size must be a positive integer, got 2.5 \(float\)"),
    (True, TypeError, r"shard_min_size must be a positive integer, got True \(bool\)"),
    ("256", TypeError, r"shard_min_size must be a positive integer, got '256' \(str\)"),
]


@pytest.mark.parametrize(
    ("value", "error", "message"), BAD_SHARD_MIN_SIZE, ids=["zero", "negative", "float", "bool", "str"]
)
def test_shard_min_size_is_checked(value, error, message):
    model, X, Y = _tiny()
    mesh = device.mesh()
    with pytest.raises(error, match=f"make_train_step: {message}"):
        train.make_train_step(losses.MSELoss(), mesh=mesh, shard_min_size=value)
    with pytest.raises(error, match=f"make_eval_step: {message}"):
        train.make_eval_step(losses.MSELoss(), mesh=mesh, shard_min_size=value)
    with pytest.raises(error, match=f"fit: {message}"):
        _fit(model, X, Y, mesh=mesh, shard_min_size=value)


def test_shard_min_size_needs_a_mesh():
    model, X, Y = _tiny()
    needs = r"shard_min_size=256 splits state arrays along a mesh's 'model' axis and needs mesh= .* got mesh=None"
    with pytest.raises(ValueError, match=f"make_train_step: {needs}"):
        train.make_train_step(losses.MSELoss(), shard_min_size=256)
    with pytest.raises(ValueError, match=f"make_eval_step: {needs}"):
        train.make_eval_step(losses.MSELoss(), shard_min_size=256)
    with pytest.raises(ValueError, match=f"fit: {needs}"):
        _fit(model, X, Y, shard_min_size=256)
    with pytest.raises(TypeError, match="make_eval_step: mesh must be a jax.sharding.Mesh with a 'data' axis"):
        train.make_eval_step(losses.MSELoss(), mesh="data")


def test_fused_epochs_on_a_one_device_mesh_equal_no_mesh():
    model, X, Y = _tiny()
    mesh = device.mesh()
    reference = _fit(model, X, Y, fused=False)
    for fused in (True, False):
        got = _fit(model, X, Y, mesh=mesh, shard_min_size=8, fused=fused)
        assert max_abs_diff(got.losses, reference.losses) <= tolerance("float64")["atol"]
        assert max_abs_diff(interop.state_dict(got.model), interop.state_dict(reference.model)) <= 1e-12
    evaluate = train.make_eval_step(losses.MSELoss(), mesh=mesh, shard_min_size=8)
    plain = train.make_eval_step(losses.MSELoss())
    assert max_abs_diff(evaluate(got.state, X, Y)["loss"], plain(reference.state, X, Y)["loss"]) <= 1e-12


def test_fused_epochs_on_a_mesh_need_one_process(monkeypatch):
    """Several processes (faked): fused=True is a clear error, fused="auto" keeps one jitted step per batch."""
    model, X, Y = _tiny()
    mesh = device.mesh()
    reference = _fit(model, X, Y, mesh=mesh)
    builds = []
    real_build = fit_pipeline._make_fused_epochs
    monkeypatch.setattr(fit_pipeline, "_make_fused_epochs", lambda fn, **o: builds.append(o) or real_build(fn, **o))
    monkeypatch.setattr(device, "process_count", lambda: 2)
    with pytest.raises(
        ValueError,
        match=r"fit: fused=True with mesh= needs a single process, got jax.process_count\(\) == 2: fused epochs "
        r"draw every batch from the whole training set .* use fused='auto' or fused=False",
    ):
        _fit(model, X, Y, mesh=mesh, fused=True)
    # a different option set than the reference (shuffle), so nothing comes from fit's memo of built pieces
    options = dict(shuffle=True, key=jax.random.key(3))
    per_step = _fit(model, X, Y, mesh=mesh, **options)
    assert builds == []  # "auto" did not fuse
    monkeypatch.setattr(device, "process_count", lambda: 1)
    fused = _fit(model, X, Y, mesh=mesh, **options)
    assert len(builds) == 1  # one process: "auto" fuses (an MLP)
    assert max_abs_diff(per_step.losses, fused.losses) <= tolerance("float64")["atol"]
    assert len(reference.losses) == len(per_step.losses) == 12

"""The W6 GPT scaled out: 8 simulated CPU devices, mesh data=4 x model=2, parameters sharded along "model".

The suite runs with ONE CPU device, so the multi-device run is a SUBPROCESS with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (as ``tests/test_distributed.py``). The worker
trains a tiny ``benchmarks/workloads.FnmlGPT`` for 20 AdamW steps in float64 three ways and writes the
per-step losses and final parameters to an .npz:

- ``single``: ``train.make_train_step(loss_fn=...)`` on one device (no mesh);
- ``fsdp``: the same jitted step under ``jax.jit(step, in_shardings, out_shardings)`` with the state on
  ``device.param_shardings(state, mesh, min_size=...)`` (FSDP-style: every large array split along
  "model") and the batch on ``device.batch_sharding(mesh)`` (split along "data"). ``fit(mesh=...)`` and
  ``make_train_step(mesh=...)`` replicate the state (``device.data_parallel`` without
  ``shard_min_size``), so the sharded step is driven here;
- ``fit_mesh``: ``train.fit(..., mesh=mesh)`` (data-parallel, replicated parameters), against
  ``train.fit`` on one device.

- ``fused``: the 20 steps in ONE jitted ``lax.scan`` (what ``fit``'s fused epochs run) with the same
  sharded state and the stacked batches split along "data";

Asserted here: sharded == one device within float64 1e-12 at every step and at the end, and the
parameters really were sharded (their shardings are recorded by the worker).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import tolerance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBPROCESS_TIMEOUT = 300  # seconds (a few small compilations; ~30-60 s on 2 busy cores)
STEPS = 20
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
    from fnml import device, interop, optim, train

    SHAPE = dict(vocab=32, block=8, n_layer=2, n_head=2, n_embd=16)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, SHAPE["vocab"], size=(4, 8, SHAPE["block"] + 1))  # 4 batches of 8 sequences
    batches = [(jnp.asarray(t[:, :-1]), jnp.asarray(t[:, 1:])) for t in tokens]

    def fresh_state():
        model = W.FnmlGPT(**SHAPE, param_dtype=jnp.float64)
        return train.TrainState.create(model, optim.adamw(lr=1e-2))

    def params_of(state):
        return {k: np.asarray(v) for k, v in interop.state_dict(train.to_module(state)).items()}

    out = {"devices": np.array(len(jax.devices()))}
    step = train.make_train_step(loss_fn=W.gpt_loss)

    # one device
    state, losses = fresh_state(), []
    for i in range(steps):
        state, loss = step(state, *batches[i % 4])
        losses.append(float(loss))
    out["single_losses"] = np.array(losses)
    out.update({f"single/{k}": v for k, v in params_of(state).items()})

    # FSDP-style: state split along "model", batch along "data"
    mesh = device.mesh(data=4, model=2)
    state = fresh_state()
    shardings = device.param_shardings(state, mesh, min_size=min_size)
    batch_sharding, rep = device.batch_sharding(mesh), device.replicated_sharding(mesh)
    sharded_step = jax.jit(
        step, in_shardings=(shardings, batch_sharding, batch_sharding), out_shardings=(shardings, rep)
    )
    state = jax.device_put(state, shardings)
    losses = []
    for i in range(steps):
        x, y = batches[i % 4]
        state, loss = sharded_step(state, jax.device_put(x, batch_sharding), jax.device_put(y, batch_sharding))
        losses.append(float(loss))
    out["fsdp_losses"] = np.array(losses)
    out["fsdp_compilations"] = np.array(sharded_step._cache_size())
    kernel = next(leaf for leaf in jax.tree.leaves(state.params) if leaf.shape == (16, 64))  # an mlp up-projection
    out["fsdp_kernel_spec"] = np.array([str(axis) for axis in kernel.sharding.spec])  # ["None", "model"]
    out["fsdp_kernel_shard_shape"] = np.array(kernel.addressable_shards[0].data.shape)
    out["fsdp_kernel_shape"] = np.array(kernel.shape)
    out.update({f"fsdp/{k}": v for k, v in params_of(state).items()})

    # fused: all 20 steps in ONE jitted lax.scan (what fit's fused epochs run), state sharded as above,
    # the stacked batches (steps, 8, T) split along "data" on their batch axis
    order = np.arange(steps) % 4
    xs = jnp.stack([batches[i][0] for i in order]); ys = jnp.stack([batches[i][1] for i in order])
    stacked = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))
    scan = lambda s, xs, ys: jax.lax.scan(lambda c, b: step(c, b[0], b[1]), s, (xs, ys))  # noqa: E731
    state = fresh_state()
    shardings = device.param_shardings(state, mesh, min_size=min_size)  # this state's own tree structure
    fused = jax.jit(scan, in_shardings=(shardings, stacked, stacked), out_shardings=(shardings, rep))
    state, fused_losses = fused(jax.device_put(state, shardings), xs, ys)
    out["fused_losses"] = np.asarray(fused_losses)
    out.update({f"fused/{k}": v for k, v in params_of(state).items()})

    # fit with a mesh (data-parallel, replicated) vs fit on one device; full batches of 8, 2 epochs of 4
    X = jnp.concatenate([b[0] for b in batches]); Y = jnp.concatenate([b[1] for b in batches])
    for name, m in (("fit_single", None), ("fit_mesh", mesh)):
        result = train.fit(fresh_state().model(), optim.adamw(lr=1e-2), loss_fn=W.gpt_loss, data=(X, Y),
                           batch_size=8, epochs=2, verbose=False, mesh=m)
        out[f"{name}_losses"] = np.asarray(result.losses)
        out.update({f"{name}/{k}": np.asarray(v) for k, v in interop.state_dict(result.model).items()})
    np.savez(out_path, **out)
    print("WORKER DONE")
    """
)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, np.ndarray]:
    path = tmp_path_factory.mktemp("gpt_sharding")
    script, out = path / "worker.py", path / "results.npz"
    script.write_text(WORKER)
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_ENABLE_X64="1")
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    try:
        completed = subprocess.run(
            [sys.executable, str(script), ROOT, str(out), str(STEPS), str(MIN_SIZE)],
            env=env,
            cwd=str(path),
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"8-device GPT worker timed out after {SUBPROCESS_TIMEOUT} s")
    output = completed.stdout + completed.stderr
    if completed.returncode != 0 or "WORKER DONE" not in output:
        pytest.fail(f"8-device GPT worker exited with {completed.returncode}:\n{output[-4000:]}")
    return dict(np.load(out))


def _params(results: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) + 1 :]: v for k, v in results.items() if k.startswith(prefix + "/")}


def _max_param_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert sorted(a) == sorted(b)
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def test_worker_ran_on_eight_devices_with_sharded_parameters(results):
    assert int(results["devices"]) == 8
    # mlp.0 kernel (16, 64): split on its largest axis along "model" -> each shard (16, 32)
    assert list(results["fsdp_kernel_spec"]) == ["None", "model"]
    assert tuple(results["fsdp_kernel_shard_shape"]) == (16, 32)
    assert tuple(results["fsdp_kernel_shape"]) == (16, 64)
    assert int(results["fsdp_compilations"]) == 1  # the out shardings feed the next step: no recompile


def test_fsdp_sharded_training_equals_one_device(results):
    atol = tolerance("float64")["atol"]
    losses = np.max(np.abs(results["fsdp_losses"] - results["single_losses"]))
    params = _max_param_diff(_params(results, "fsdp"), _params(results, "single"))
    print(f"GPT data=4 x model=2 vs one device, {STEPS} steps: losses {losses:.2e}, final parameters {params:.2e}")
    assert results["fsdp_losses"].shape == (STEPS,)
    assert losses <= atol
    assert params <= atol
    assert results["single_losses"][-1] < results["single_losses"][0]  # it trained


def test_fused_steps_on_the_mesh_equal_one_device(results):
    # 20 steps in one jitted lax.scan with the sharded state and the stacked batches split along "data"
    atol = tolerance("float64")["atol"]
    losses = np.max(np.abs(results["fused_losses"] - results["single_losses"]))
    params = _max_param_diff(_params(results, "fused"), _params(results, "single"))
    print(f"fused lax.scan of {STEPS} steps on the mesh vs one device: losses {losses:.2e}, parameters {params:.2e}")
    assert results["fused_losses"].shape == (STEPS,)
    assert losses <= atol
    assert params <= atol


def test_fit_with_a_mesh_equals_fit_on_one_device(results):
    atol = tolerance("float64")["atol"]
    losses = np.max(np.abs(results["fit_mesh_losses"] - results["fit_single_losses"]))
    params = _max_param_diff(_params(results, "fit_mesh"), _params(results, "fit_single"))
    print(f"fit(mesh=data 4 x model 2) vs fit(): losses {losses:.2e}, final parameters {params:.2e}")
    assert results["fit_mesh_losses"].shape == (8,)
    assert losses <= atol
    assert params <= atol

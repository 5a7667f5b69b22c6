"""fnml.device: torch-style names, lookup errors, moving arrays / pytrees / NNX modules, default device."""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from helpers import child_env, run_python

from fnml import device as fdevice

CPU0 = jax.local_devices(backend="cpu")[0]


@pytest.mark.parametrize(
    "spec",
    ["cpu", "cpu:0", "CPU", " cpu ", CPU0, torch.device("cpu"), torch.device("cpu", 0)],
    ids=["cpu", "cpu:0", "upper", "spaces", "jax_device", "torch_device", "torch_device_0"],
)
def test_device_names_the_cpu(spec):
    assert fdevice.device(spec) == CPU0


def test_device_none_is_the_default():
    assert fdevice.device() == jax.local_devices()[0]
    assert fdevice.device(None) == jnp.zeros(1).devices().pop()


@pytest.mark.parametrize("spec", ["cuda", "gpu", "cuda:0", "gpu:0"])
def test_cuda_and_gpu_mean_jax_gpu(spec):
    if fdevice.cuda_is_available():
        assert fdevice.device(spec) == jax.local_devices(backend="gpu")[0]
    else:
        with pytest.raises(
            fdevice.DeviceNotFoundError,
            match=rf"device '{spec}' is not available: JAX sees no gpu devices here\. Available: cpu:0",
        ):
            fdevice.device(spec)


@pytest.mark.parametrize("spec", ["cuda:99", "cpu:99", "tpu:99"])
def test_absent_index_names_what_exists(spec):
    with pytest.raises(fdevice.DeviceNotFoundError, match=r"(does not exist|is not available).*Available: .*cpu:0"):
        fdevice.device(spec)


@pytest.mark.parametrize("spec", ["mps", "cuda0", "cuda:-1", "gpu:x", "", "cuda:0:1"])
def test_unknown_device_string(spec):
    with pytest.raises(ValueError, match=rf"device: unknown device string '{spec}'; expected \"cpu\", \"cuda\""):
        fdevice.device(spec)


def test_device_type_error():
    with pytest.raises(TypeError, match="device: expected .* got int 0"):
        fdevice.device(0)


def test_counts_and_availability():
    assert fdevice.device_count() == len(jax.local_devices())
    assert fdevice.device_count("cpu") == len(jax.local_devices(backend="cpu")) >= 1
    assert fdevice.device_count("cuda") == fdevice.device_count("gpu")
    assert fdevice.cuda_is_available() == (fdevice.device_count("cuda") > 0)
    # torch.cuda.device_count() is 0 without CUDA; fnml's counterpart agrees on a CPU-only jax.
    if not fdevice.cuda_is_available():
        assert fdevice.device_count("cuda") == 0
    with pytest.raises(
        ValueError, match="device_count: kind must be one of 'cpu', 'cuda', 'gpu', 'tpu' or None; got 'npu'"
    ):
        fdevice.device_count("npu")


def test_available_devices_and_describe():
    devices = fdevice.available_devices()
    assert CPU0 in devices
    assert fdevice.device_name(CPU0) == "cpu:0"
    text = fdevice.describe()
    lines = text.splitlines()
    assert lines[0].startswith("cpu: ") and "cpu:0" in lines[0]
    assert lines[1].startswith("cuda/gpu: ") and lines[2].startswith("tpu: ")
    assert lines[-1] == f"default device: {fdevice.device_name(jax.local_devices()[0])}"


def test_to_moves_arrays_and_pytrees():
    tree = {"w": jnp.ones((2, 2)), "b": [np.zeros(2), 3.0]}
    moved = fdevice.to(tree, "cpu")
    assert jax.tree_util.tree_structure(moved) == jax.tree_util.tree_structure(tree)
    for leaf in jax.tree_util.tree_leaves(moved):
        assert isinstance(leaf, jax.Array) and leaf.devices() == {CPU0}
    np.testing.assert_array_equal(moved["w"], tree["w"])
    with pytest.raises(ValueError, match="unknown device string 'nowhere'"):
        fdevice.to(tree, "nowhere")


def test_to_moves_a_module_and_returns_a_new_one():
    torch_model = torch.nn.Linear(2, 1)
    assert torch_model.to("cpu") is torch_model  # torch moves in place and returns self

    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    moved = fdevice.to(model, fdevice.device("cpu"))
    assert moved is not model and isinstance(moved, nnx.Linear)  # fnml returns a new module
    assert moved.kernel is not model.kernel
    for leaf in jax.tree_util.tree_leaves(nnx.state(moved)):
        assert leaf.devices() == {CPU0}
    x = jnp.ones((3, 2))
    np.testing.assert_array_equal(moved(x), model(x))
    # The input module still works and is unchanged.
    np.testing.assert_array_equal(nnx.state(model)["kernel"][...], nnx.state(moved)["kernel"][...])


def test_default_device_context():
    with fdevice.default_device("cpu:0") as dev:
        assert dev == CPU0
        assert jnp.zeros(2).devices() == {CPU0}
        assert fdevice.device() == CPU0
    with pytest.raises(ValueError, match="unknown device string"):
        with fdevice.default_device("floppy"):
            pass


_TWO_CPUS_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp
    from flax import nnx
    from fnml import device as fdevice

    second = fdevice.device("cpu:1")
    assert second == jax.local_devices(backend="cpu")[1] and fdevice.device_name(second) == "cpu:1"
    assert fdevice.device_count("cpu") == 2
    x = fdevice.to(jnp.arange(3.0), "cpu:1")
    assert x.devices() == {second}
    model = fdevice.to(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), second)
    assert all(leaf.devices() == {second} for leaf in jax.tree_util.tree_leaves(nnx.state(model)))
    assert model(fdevice.to(jnp.ones((1, 2)), second)).devices() == {second}
    with fdevice.default_device("cpu:1"):
        assert jnp.ones(2).devices() == {second}
        assert fdevice.describe().splitlines()[-1] == "default device: cpu:1"
    try:
        fdevice.device("cpu:2")
    except fdevice.DeviceNotFoundError as error:
        assert "there are 2 cpu device(s) (indices 0..1). Available: cpu:0, cpu:1" in str(error), error
    else:
        raise SystemExit("cpu:2 should not exist")
    print("OK")
    """
)


def test_moves_between_two_devices():
    env = child_env(x64=True, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    completed = run_python(["-c", _TWO_CPUS_SCRIPT], env=env, timeout=300)
    assert completed.returncode == 0 and completed.stdout.strip() == "OK", completed.stderr[-3000:]

"""The one torch bridge (``fnml._torch``): detection, torch <-> numpy/jax with bfloat16 kept, dtype maps.

Checked against torch: bfloat16 tensors (which ``tensor.numpy()`` refuses) reach training (``fit``), parity
(``compare_forward``), capture (``interop.from_torch``), state dicts, weight files and the tour helpers with
their exact bits; the import graph has no cycles (the two that existed only for lack of a bridge are gone).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from fnml import _torch, device, interop, layers, losses, optim, parity, sidebyside, tensors, train
from fnml.interop import lowering

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "fnml")


def _bf16(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16)


def _bits(values) -> np.ndarray:
    """The 16-bit patterns of bfloat16 values (numpy/jax array or torch tensor): equal bits, equal values."""
    if isinstance(values, torch.Tensor):
        return values.detach().view(torch.int16).numpy()
    return np.asarray(values).view(np.int16)


# ---- the import graph ---------------------------------------------------------------------------


def _module_files() -> dict[str, str]:
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(folder, file)
                name = os.path.relpath(path[:-3], ROOT).replace(os.sep, ".").removesuffix(".__init__")
                found[name] = path
    return found


def _import_graph() -> dict[str, set[str]]:
    """fnml module -> the fnml modules it imports ANYWHERE (function-level imports included)."""
    files = _module_files()
    graph = {}
    for name, path in files.items():
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        targets = set()
        with open(path, encoding="utf-8") as source:
            tree = ast.parse(source.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base)
        graph[name] = {target for target in targets if target in files and target != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_two_bridge_cycles_are_gone():
    graph = _import_graph()
    assert "fnml.tensors" not in graph["fnml.device"], "device imports tensors again (tensors imports device)"
    assert "fnml.interop.files" not in graph["fnml.interop.state_dicts"], "state_dicts imports files again"
    assert "fnml._torch" in graph["fnml.device"] and "fnml._torch" in graph["fnml.tensors"]


def test_the_package_import_graph_has_no_cycles():
    assert _cycles(_import_graph()) == []


@pytest.mark.parametrize("module", ["fnml.device", "fnml.tensors", "fnml.interop.files", "fnml.interop.state_dicts"])
def test_each_former_cycle_member_imports_first_in_a_fresh_process(module):
    code = f"import {module}, sys; assert 'torch' not in sys.modules, 'importing {module} imported torch'"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr


def test_detection_never_imports_torch():
    code = (
        "import sys, numpy as np; from fnml import _torch, tensors; "
        "assert not _torch.is_tensor(np.ones(2)) and not _torch.is_module(object()); "
        "assert not _torch.is_dtype('float32'); "
        "assert tensors.to_numpy(np.ones(2)).shape == (2,); assert 'torch' not in sys.modules"
    )
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr


def test_detection_with_torch_loaded():
    assert _torch.is_tensor(torch.ones(2)) and _torch.is_tensor(torch.nn.Parameter(torch.ones(2)))
    assert not _torch.is_tensor(np.ones(2)) and not _torch.is_tensor(jnp.ones(2))
    assert _torch.is_module(torch.nn.Linear(1, 1)) and not _torch.is_module(torch.ones(1))
    assert _torch.is_dtype(torch.bfloat16) and _torch.is_device(torch.device("cpu"))


# ---- dtypes: one map ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", _torch.SUPPORTED_DTYPES)
def test_one_dtype_map_both_ways(name):
    torch_type = getattr(torch, name)
    assert _torch.jax_dtype(torch_type) == jnp.dtype(name) == tensors.jax_dtype(torch_type)
    assert _torch.torch_dtype(jnp.dtype(name)) is torch_type is tensors.torch_dtype(name)
    # the lowering table reads dtypes through the same map, as JAX holds them (float64 needs x64)
    assert lowering.jax_dtype(torch_type) == jax.dtypes.canonicalize_dtype(jnp.dtype(name))


def test_torch_aliases_and_refusals():
    assert _torch.jax_dtype(torch.float) == np.float32 and _torch.jax_dtype(torch.long) == np.int64
    assert _torch.jax_dtype("double") == np.float64 and _torch.jax_dtype("torch.half") == np.float16
    assert lowering.jax_dtype(None) is None
    with pytest.raises(TypeError, match=r"unsupported dtype torch.complex64; fnml maps these dtypes"):
        lowering.jax_dtype(torch.complex64)


# ---- values: bfloat16 kept, bit for bit ----------------------------------------------------------


def test_bfloat16_tensor_to_numpy_and_jax_keeps_the_bits():
    t = _bf16(3, 4)
    with pytest.raises(TypeError, match="BFloat16"):
        t.numpy()  # what every copy of the bridge used to call
    converted_ways = (_torch.to_numpy(t), _torch.as_numpy(t), _torch.as_jax(t), _torch.to_jax(t), tensors.from_torch(t))
    for converted in converted_ways:
        assert converted.dtype == jnp.bfloat16
        np.testing.assert_array_equal(_bits(converted), _bits(t))
    np.testing.assert_array_equal(np.asarray(_torch.to_numpy(t), np.float32), t.float().numpy())


def test_bfloat16_back_to_torch_keeps_the_bits():
    t = _bf16(5)
    back = _torch.to_torch(_torch.as_jax(t))
    assert back.dtype == torch.bfloat16 and torch.equal(back, t)
    assert torch.equal(tensors.to_torch(_torch.as_jax(t)), t)


def test_non_contiguous_and_grad_tensors():
    t = torch.arange(6.0, requires_grad=True).reshape(2, 3).T
    np.testing.assert_array_equal(_torch.to_numpy(t), t.detach().numpy())
    np.testing.assert_array_equal(np.asarray(_torch.to_jax(t)), t.detach().numpy())


def test_device_to_accepts_bfloat16_tensors():
    t = _bf16(4)
    moved = device.to({"x": t}, "cpu")["x"]
    assert moved.dtype == jnp.bfloat16
    np.testing.assert_array_equal(_bits(moved), _bits(t))


def test_tour_helpers_accept_bfloat16():
    t = _bf16(3)
    tree = sidebyside.to_numpy_tree({"w": t})
    np.testing.assert_array_equal(_bits(tree["w"]), _bits(t))
    assert sidebyside.max_abs_diff({"w": t}, {"w": t.float().numpy()}) == 0.0


# ---- training -------------------------------------------------------------------------------------


def test_fit_accepts_bfloat16_tensors():
    X, Y = _bf16(16, 2, seed=1), _bf16(16, 1, seed=2)
    criterion = losses.MSELoss()

    def run(x, y):
        model = layers.SimpleNN(rngs=nnx.Rngs(0))
        return train.fit(model, optim.sgd(lr=0.1), criterion, x, y, epochs=3, batch_size=8, verbose=False)

    from_torch = run(X, Y)
    as_arrays = run(jnp.asarray(X.float().numpy(), jnp.bfloat16), jnp.asarray(Y.float().numpy(), jnp.bfloat16))
    np.testing.assert_array_equal(from_torch.losses, as_arrays.losses)
    assert np.all(np.isfinite(from_torch.losses)) and from_torch.losses.shape == (6,)


def test_fit_general_form_and_validation_accept_bfloat16_tensors():
    X, Y = _bf16(8, 2, seed=3), _bf16(8, 1, seed=4)

    def loss_fn(model, x, y):
        return jnp.mean((model(x) - y) ** 2)

    result = train.fit(
        layers.SimpleNN(rngs=nnx.Rngs(0)),
        optim.sgd(lr=0.1),
        loss_fn=loss_fn,
        data=(X, Y),
        validation=(X, Y),
        epochs=2,
        verbose=False,
    )
    assert np.all(np.isfinite(result.history["val_loss"]))


# ---- state dicts, weight files, capture, parity ---------------------------------------------------


def _bf16_torch_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).to(torch.bfloat16)


def test_load_state_dict_from_bfloat16_tensors_rounds_nothing():
    torch_model = torch.nn.Linear(2, 2).to(torch.bfloat16)
    model = layers.Linear(2, 2, rngs=nnx.Rngs(0))
    interop.load_state_dict(model, torch_model.state_dict())
    np.testing.assert_array_equal(np.asarray(model.kernel[...]), torch_model.weight.float().detach().numpy().T)


def test_safetensors_keep_bfloat16(tmp_path):
    t = _bf16(2, 3)
    path = interop.save_safetensors({"w": t}, tmp_path / "w.safetensors")
    loaded = interop.load_safetensors(path)["w"]
    assert loaded.dtype == jnp.bfloat16
    np.testing.assert_array_equal(_bits(loaded), _bits(t))


def test_capture_of_a_bfloat16_module_on_a_bfloat16_input():
    torch_model, x = _bf16_torch_model(), _bf16(5, 4, seed=5)
    twin = interop.from_torch(torch_model, x)
    kernel = np.asarray(interop.state_dict(twin)["0.weight"])
    assert kernel.dtype == jnp.bfloat16  # the twin is built in the module's dtype, weights bit for bit
    np.testing.assert_array_equal(_bits(kernel), _bits(torch_model[0].weight))
    out = twin(_torch.as_jax(x))
    assert out.dtype == jnp.bfloat16
    with torch.no_grad():
        expected = torch_model(x).float().numpy()
    # bfloat16 keeps 8 bits of mantissa: one rounding step of the largest output is the scale here
    np.testing.assert_allclose(np.asarray(out, np.float32), expected, atol=2**-7 * np.abs(expected).max())


def test_parity_accepts_bfloat16_tensors():
    torch_model, x = _bf16_torch_model(), _bf16(5, 4, seed=6)
    twin = interop.from_torch(torch_model, x)
    forward = parity.compare_forward(torch_model, twin, x)
    assert forward.max_abs_diff < 0.05  # bfloat16 rounding, not a porting error
    divergence = parity.first_divergence(torch_model, twin, x, atol=0.05, rtol=0.05)
    assert divergence.first_divergent is None
    y = _bf16(5, 2, seed=7)
    gradients = parity.compare_gradients(torch_model, twin, x, y, (torch.nn.MSELoss(), losses.MSELoss()))
    assert [row.name for row in gradients.parameters] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert gradients.max_abs_diff < 0.1

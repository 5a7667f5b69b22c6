"""The test suite's shared helpers: one tolerance table, one dtype map, tree comparison, the weight copier,
torch-reference helpers and the one way to run a Python child process (scaled deadlines, pipes always closed).

Import them by name (``from helpers import tolerance, assert_trees_close``): pytest puts ``tests/`` on
``sys.path`` (``rootdir/tests`` holds no ``__init__.py``), so no ``try/except ImportError`` is needed.
``tests/conftest.py`` sets JAX's x64 mode and the matmul precision before this module imports jax.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
from _compile_flags import FAST_COMPILE_FLAGS

# One table of tolerances, per dtype. float64 is where exactness is the question: ~1e-14 is rounding,
# anything above 1e-12 is a real difference in the math. float32 is the working tolerance.
TOLERANCES: dict[str, dict[str, float]] = {
    "float64": {"atol": 1e-12, "rtol": 1e-12},
    "float32": {"atol": 1e-5, "rtol": 1e-5},
    # Long float32 trajectories (100 optimizer steps): summation order drifts ~1e-7..1e-6.
    "float32_trajectory": {"atol": 1e-5, "rtol": 1e-4},
    # bfloat16 values (8 significand bits): two kernels may round one ulp (2^-8 relative) apart.
    "bfloat16": {"atol": 1e-2, "rtol": 8e-3},
}
DTYPES = ("float64", "float32")

# The one dtype map of the tests: a dtype name -> the jax and the torch dtype.
_JAX_DTYPES = {"float64": jnp.float64, "float32": jnp.float32, "float16": jnp.float16, "bfloat16": jnp.bfloat16}
_TORCH_DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def _dtype_name(dtype: Any) -> str:
    """'float32' for 'float32', np.float32, jnp.float32 or torch.float32."""
    return dtype if isinstance(dtype, str) else str(np.dtype(str(dtype).replace("torch.", "")))


def tolerance(dtype: Any) -> dict[str, float]:
    """The tolerance entry for a dtype name, numpy/jax/torch dtype, or a table key."""
    name = _dtype_name(dtype)
    if name not in TOLERANCES:
        raise KeyError(f"no tolerance for dtype {name!r}; the table has {sorted(TOLERANCES)}")
    return TOLERANCES[name]


def jax_dtype(name: Any):
    """The jax dtype for a dtype name ('float64') or a torch dtype."""
    return _JAX_DTYPES[_dtype_name(name)]


def torch_dtype(name: Any) -> torch.dtype:
    """The torch dtype for a dtype name ('float64') or a numpy/jax dtype."""
    return _TORCH_DTYPES[_dtype_name(name)]


def to_numpy(value: Any) -> np.ndarray:
    """torch tensor / jax array / number -> numpy array (no copy semantics promised)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten dicts/lists/tuples (and torch/jax leaves) into {path: leaf}, keeping structure visible."""
    if isinstance(tree, dict):
        out = {}
        for key in tree:
            out.update(_flatten(tree[key], f"{prefix}/{key}" if prefix else str(key)))
        return out
    if isinstance(tree, (list, tuple)):
        out = {}
        for index, item in enumerate(tree):
            out.update(_flatten(item, f"{prefix}[{index}]"))
        return out
    return {prefix: tree}


def assert_trees_close(actual, expected, *, dtype="float64", atol=None, rtol=None) -> None:
    """Structure first (same paths, same shapes), then values within the dtype's tolerance.

    ``actual`` is fnml's value, ``expected`` torch's; pytrees of dicts/lists/tuples/arrays/tensors.
    """
    tol = dict(tolerance(dtype))
    if atol is not None:
        tol["atol"] = atol
    if rtol is not None:
        tol["rtol"] = rtol
    actual_flat, expected_flat = _flatten(actual), _flatten(expected)
    assert sorted(actual_flat) == sorted(expected_flat), (
        f"tree structures differ:\n  fnml:  {sorted(actual_flat)}\n  torch: {sorted(expected_flat)}"
    )
    for path in expected_flat:
        a, e = to_numpy(actual_flat[path]), to_numpy(expected_flat[path])
        assert a.shape == e.shape, f"{path or 'value'}: shape {a.shape} (fnml) != {e.shape} (torch)"
        np.testing.assert_allclose(
            a.astype(np.float64) if a.dtype != bool else a,
            e.astype(np.float64) if e.dtype != bool else e,
            err_msg=f"at {path or 'value'}",
            **tol,
        )


def max_abs_diff(actual, expected) -> float:
    """Largest |actual - expected| over two pytrees of the same structure."""
    actual_flat, expected_flat = _flatten(actual), _flatten(expected)
    assert sorted(actual_flat) == sorted(expected_flat)
    return max(
        (
            float(np.max(np.abs(to_numpy(actual_flat[p]).astype(np.float64) - to_numpy(expected_flat[p]))))
            if to_numpy(expected_flat[p]).size
            else 0.0
            for p in expected_flat
        ),
        default=0.0,
    )


def finite_max_abs_diff(actual, expected) -> float:
    """max |actual - expected| where the two differ (equal infinities and NaN pairs count as 0)."""
    a = to_numpy(actual).astype(np.float64)
    e = to_numpy(expected).astype(np.float64)
    same = (a == e) | (np.isnan(a) & np.isnan(e))
    with np.errstate(invalid="ignore"):  # inf - inf where both are the same infinity: masked by `same`
        return float(np.max(np.abs(a - e), where=~same, initial=0.0))


def cache_size(jitted) -> int:
    """Number of compiled versions a jitted function holds (the recompile guard reads it)."""
    return jitted._cache_size()


# ---------------------------------------------------------------------------------------------------
# torch references
# ---------------------------------------------------------------------------------------------------


def torch_value_and_vjp(
    torch_fn: Callable[..., torch.Tensor], arrays: Sequence[np.ndarray], differentiable: Sequence[int], cotangent
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """torch's ``fn(*arrays)`` and the gradients of ``sum(cotangent * fn)`` w.r.t. ``arrays[differentiable]``.

    ``cotangent`` may be a callable ``shape -> array`` (drawn once the output shape is known).
    """
    args = [torch.tensor(a, requires_grad=index in differentiable) for index, a in enumerate(arrays)]
    value = torch_fn(*args)
    weights = cotangent(tuple(value.shape)) if callable(cotangent) else cotangent
    grads = torch.autograd.grad(value, [args[i] for i in differentiable], grad_outputs=torch.as_tensor(weights))
    return value.detach(), list(grads)


def jax_value_and_vjp(
    fn: Callable[..., jax.Array], arrays: Sequence[np.ndarray], differentiable: Sequence[int], cotangent
) -> tuple[jax.Array, list[jax.Array]]:
    """fnml's counterpart of :func:`torch_value_and_vjp`: ``jax.vjp`` over the same arguments."""

    def of_differentiable(*values):
        args = [jnp.asarray(a) for a in arrays]
        for index, value in zip(differentiable, values):
            args[index] = value
        return fn(*args)

    value, pullback = jax.vjp(of_differentiable, *[jnp.asarray(arrays[i]) for i in differentiable])
    return value, list(pullback(jnp.asarray(cotangent)))


# ---------------------------------------------------------------------------------------------------
# The weight copier
# ---------------------------------------------------------------------------------------------------


def _to_fnml_layout(torch_name: str, value: np.ndarray, fnml_name: str) -> np.ndarray:
    """A torch parameter in the layout of the fnml attribute it goes to (kernels are transposed)."""
    if not fnml_name.startswith("kernel"):
        return value  # bias, LayerNorm/BatchNorm weight, Embedding table, buffers: same layout
    if value.ndim == 2:
        return value.T  # Linear / RNN (out, in) -> (in, out)
    if value.ndim == 3:
        return value.transpose(2, 1, 0)  # Conv1d (O, I, L) -> (L, I, O)
    if value.ndim == 4:
        return value.transpose(2, 3, 1, 0)  # Conv2d (O, I, kh, kw) -> (kh, kw, I, O)
    raise ValueError(f"{torch_name}: no kernel layout for a {value.ndim}-D weight")


def _resolve(module: Any, dotted: str) -> tuple[Any, str]:
    """The owner of the last attribute of a dotted torch name (``layers.0.weight`` -> (layers[0], 'weight'))."""
    *path, leaf = dotted.split(".")
    owner = module
    for part in path:
        owner = owner[int(part)] if part.isdigit() else getattr(owner, part)
    return owner, leaf


def copy_torch_weights(fnml_module: Any, torch_module: torch.nn.Module) -> None:
    """Write every torch parameter and buffer into the fnml twin, independently of ``fnml.interop``.

    Names follow torch's; ``weight`` goes to ``kernel`` (transposed to fnml's layout) where the fnml
    module has a ``kernel``, else to ``weight`` as is (norms, embeddings); RNN ``weight_ih_l0`` goes to
    ``kernel_ih_l0`` transposed. Shapes are checked before writing. ``num_batches_tracked`` is skipped
    where the fnml module does not keep it. Used by parity tests that must not trust the converter they test.
    """
    named = dict(torch_module.named_parameters())
    named.update(dict(torch_module.named_buffers()))
    for torch_name, tensor in named.items():
        owner, leaf = _resolve(fnml_module, torch_name)
        fnml_leaf = leaf
        if leaf.startswith("weight") and hasattr(owner, "kernel" + leaf[len("weight") :]):
            fnml_leaf = "kernel" + leaf[len("weight") :]
        if not hasattr(owner, fnml_leaf):
            if leaf == "num_batches_tracked":
                continue
            raise AttributeError(f"{torch_name}: the fnml module has no attribute {fnml_leaf!r}")
        # .copy(): jnp.asarray may share the numpy buffer, which shares torch's memory: an in-place torch update
        # (a BatchNorm running statistic in a train-mode forward) would otherwise change the fnml model too.
        value = _to_fnml_layout(torch_name, tensor.detach().cpu().numpy().copy(), fnml_leaf)
        target = getattr(owner, fnml_leaf)
        assert tuple(target[...].shape) == value.shape, (torch_name, tuple(target[...].shape), value.shape)
        target[...] = jnp.asarray(value, dtype=target[...].dtype)


# --------------------------------------------------------------------------------------------------
# Child processes: generous deadlines scaled for slow machines, readiness by signal, pipes always closed
# --------------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def deadline(seconds: float) -> float:
    """A child's deadline: ``seconds`` times ``$FNML_TEST_TIMEOUT_SCALE`` (default 1; raise it on a slow machine).

    Deadlines only bound a hang: tests wait for a child's readiness line or its exit, never for a time.
    """
    return seconds * float(os.environ.get("FNML_TEST_TIMEOUT_SCALE", "1"))


def child_env(*, x64: bool = False, fast_compile: bool = False, **overrides: str) -> dict[str, str]:
    """The environment of a Python child: this repository first on the path, CPU, jax's defaults unless ``x64``.

    The child writes bytecode (the sandbox may set ``PYTHONDONTWRITEBYTECODE``: every child would then
    recompile fnml's sources) and shares the suite's JAX compilation cache (``JAX_COMPILATION_CACHE_DIR``,
    set by conftest.py), so a program compiled by one child is loaded by the next. It compiles with XLA's
    defaults, as a user's program does, unless ``fast_compile`` keeps the suite's cheaper-compile settings
    (``_compile_flags.FAST_COMPILE_FLAGS``: workers and examples that compile much and compute little).
    """
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if not fast_compile:
        fast = {flag.split("=")[0] for flag in FAST_COMPILE_FLAGS}
        env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if f.split("=")[0] not in fast)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    if x64:
        env["JAX_ENABLE_X64"] = "1"
    else:
        env.pop("JAX_ENABLE_X64", None)
    env.update(overrides)
    return env


def run_python(args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 600, cwd=None):
    """``python *args`` to completion (output captured as text); its pipes are closed whatever happens."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=child_env() if env is None else env,
        cwd=str(cwd or ROOT),
        timeout=deadline(timeout),
        stdin=subprocess.DEVNULL,
    )


def spawn_python(
    args: Sequence[str], *, env: dict[str, str] | None = None, cwd=None, stdin_pipe: bool = False
) -> subprocess.Popen:
    """``python *args`` in the background, stdout and stderr merged into one text pipe; end it with :func:`finish`.

    ``stdin_pipe=True`` gives the child a text pipe on stdin (``process.stdin``) for requests.
    """
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
        text=True,
        env=child_env() if env is None else env,
        cwd=str(cwd or ROOT),
    )


def wait_for_line(process: subprocess.Popen, prefix: str, *, timeout: float = 300) -> str:
    """Read the child's lines until one starts with ``prefix``; returns what was read.

    The child signals readiness by printing the line; the deadline only bounds a hang (and is scaled).
    """
    seen: list[str] = []
    limit = deadline(timeout)
    found = threading.Event()

    def read() -> None:
        for line in process.stdout:
            seen.append(line)
            if line.startswith(prefix):
                found.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(limit)
    if not found.is_set():
        if reader.is_alive():  # neither the line nor EOF within the deadline: a hang
            process.kill()  # the reader then sees EOF and ends; nobody else reads the pipe meanwhile
            reader.join()
            end(process)
            why = f"within {limit:.0f} s"
        else:  # EOF: the child closed its output, it is exiting
            finish(process)
            why = f"before it exited with code {process.returncode}"
        raise AssertionError(f"the child did not print {prefix!r} {why}; output:\n{''.join(seen)}")
    return "".join(seen)


def end(process: subprocess.Popen) -> str:
    """End the child now if it still runs (teardown) and close its pipes; returns its remaining output."""
    if process.poll() is None:
        process.kill()
    return finish(process)


def finish(process: subprocess.Popen, *, timeout: float = 300) -> str:
    """The child's remaining output once it exits; its pipes are closed whatever happens.

    Past the (scaled) deadline the child is killed and ``subprocess.TimeoutExpired`` raised, carrying the
    output so far.
    """
    try:
        try:
            out, _ = process.communicate(timeout=deadline(timeout))
        except subprocess.TimeoutExpired as expired:
            process.kill()
            out, _ = process.communicate()
            expired.output = out
            raise
        return out or ""
    finally:
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None and not stream.closed:
                stream.close()
        if process.poll() is None:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------------------------------
# torch's intra-op threads
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def one_torch_thread():
    """Run torch on one intra-op thread inside the block (the previous count is restored after).

    The parity tests run torch on tiny tensors, where the thread pool only costs: with the cores shared
    (``pytest -n 2`` on 2 cores, or a loaded machine) its threads wait on each other, and a 50-step loop of a
    small CNN took 2.9 s instead of 0.2 s. The references are still real torch's: float64 results were
    bitwise the same on 1 and 2 threads in that loop; float32 ones can differ in the last bits (a kernel's
    split changes its summation order), well inside the float32 tolerances, as on any other machine.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

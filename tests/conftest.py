"""Shared test settings: real PyTorch required, pinned precision, one tolerance table, tree comparison.

Parity tests compare fnml against real torch computed in the same test. torch is a hard requirement:
if it is missing the whole suite fails at collection (never skips).
"""

from __future__ import annotations

import os

# Before jax is imported anywhere: float64 must be available for the exactness checks.
os.environ.setdefault("JAX_ENABLE_X64", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

try:
    import torch  # noqa: E402
except ImportError as error:  # pragma: no cover - exercised only on a broken install
    raise pytest.UsageError(
        "PyTorch is required by the fnml test suite (parity is checked against real torch); "
        "install it with `make test` or `pip install -e '.[test]' -c constraints.txt`"
    ) from error

jax.config.update("jax_enable_x64", True)
# Pin matmul precision on both sides: full-precision fp32 dots in XLA, no TF32 in torch.
jax.config.update("jax_default_matmul_precision", "highest")
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_float32_matmul_precision("highest")

# One table of tolerances, per dtype. float64 is where exactness is the question: ~1e-14 is rounding,
# anything above 1e-12 is a real difference in the math. float32 is the working tolerance.
TOLERANCES: dict[str, dict[str, float]] = {
    "float64": {"atol": 1e-12, "rtol": 1e-12},
    "float32": {"atol": 1e-5, "rtol": 1e-5},
    # Long float32 trajectories (100 optimizer steps): summation order drifts ~1e-7..1e-6.
    "float32_trajectory": {"atol": 1e-5, "rtol": 1e-4},
}
DTYPES = ("float64", "float32")


def tolerance(dtype) -> dict[str, float]:
    """The tolerance entry for a dtype name, numpy/jax/torch dtype, or a table key."""
    name = dtype if isinstance(dtype, str) else str(np.dtype(str(dtype).replace("torch.", "")))
    if name not in TOLERANCES:
        raise KeyError(f"no tolerance for dtype {name!r}; the table has {sorted(TOLERANCES)}")
    return TOLERANCES[name]


def to_numpy(value):
    """torch tensor / jax array / number -> numpy array (no copy semantics promised)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _flatten(tree, prefix=""):
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


def assert_trees_close(actual, expected, *, dtype="float64", atol=None, rtol=None):
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


def cache_size(jitted) -> int:
    """Number of compiled versions a jitted function holds (the recompile guard reads it)."""
    return jitted._cache_size()


@pytest.fixture(params=DTYPES)
def dtype(request) -> str:
    """Parametrize a test over float64 (exactness) and float32 (working tolerance)."""
    return request.param


@pytest.fixture
def torch_dtype(dtype):
    return {"float64": torch.float64, "float32": torch.float32}[dtype]


@pytest.fixture(autouse=True)
def _seed_torch():
    # Deterministic torch draws in every test; fnml draws come from explicit jax keys.
    torch.manual_seed(0)
    yield

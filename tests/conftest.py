"""Shared test settings: real PyTorch required, x64 on, pinned precision, the dtype fixtures.

Parity tests compare fnml against real torch computed in the same test. torch is a hard requirement:
if it is missing the whole suite fails at collection (never skips).
"""

from __future__ import annotations

import os

# Before jax is imported anywhere: float64 must be available for the exactness checks.
os.environ.setdefault("JAX_ENABLE_X64", "1")

import jax  # noqa: E402
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

# The tolerance table, dtype map, tree comparison and torch helpers live in tests/helpers.py (import them
# from there); they are re-exported here for test files that still import them from conftest.
from helpers import (  # noqa: E402, F401
    DTYPES,
    TOLERANCES,
    assert_trees_close,
    cache_size,
    max_abs_diff,
    to_numpy,
    tolerance,
)
from helpers import torch_dtype as _torch_dtype  # noqa: E402


@pytest.fixture(params=DTYPES)
def dtype(request) -> str:
    """Parametrize a test over float64 (exactness) and float32 (working tolerance)."""
    return request.param


@pytest.fixture
def torch_dtype(dtype):
    return _torch_dtype(dtype)


@pytest.fixture(autouse=True)
def _seed_torch():
    # Deterministic torch draws in every test; fnml draws come from explicit jax keys.
    torch.manual_seed(0)
    yield

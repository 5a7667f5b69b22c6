"""Shared test settings: real PyTorch required, x64 on, pinned precision, the dtype fixtures, one JAX
compilation cache for the whole run, and the run's timing line.

Parity tests compare fnml against real torch computed in the same test. torch is a hard requirement:
if it is missing the whole suite fails at collection (never skips).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# Before jax is imported anywhere: float64 must be available for the exactness checks.
os.environ.setdefault("JAX_ENABLE_X64", "1")
# One persistent compilation cache for the run: the xdist workers and every child process (examples,
# multi-device workers, trainers) share it, so a program compiled once is loaded elsewhere, and a second run
# of the suite starts warm. It lives in pytest's cache directory (ignored by git; `make clean` removes it).
# Programs that compile in under 0.1 s are cheaper to compile again than to read back.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax-compilation")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
# The suite compiles thousands of small programs and runs most of them once, so compiling costs more than
# running. Two XLA CPU settings make compiling cheaper (_compile_flags.py): LLVM at optimisation level 0 (a
# quarter of the fuzz and porting-corpus time) and XLA's classic loop emitters instead of its newer fusion
# emitters (a further quarter to a third of the loss, activation and pooling tests). Child processes that
# run as a user runs them (the crash-safety trainers, the installed tour) get XLA's defaults back
# (helpers.child_env).
from _compile_flags import FAST_COMPILE_FLAGS  # noqa: E402

os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *FAST_COMPILE_FLAGS]).strip()

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
# Torch on one intra-op thread: the references are tiny tensors, and with the cores shared (two xdist workers
# on two cores, or a loaded machine) a thread pool only waits on itself (helpers.one_torch_thread has the
# measurement). float64 references are bitwise the same; float32 ones may differ in the last bits.
torch.set_num_threads(1)

# The tolerance table, dtype map, tree comparison and torch helpers live in tests/helpers.py.
from helpers import DTYPES  # noqa: E402
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


# --------------------------------------------------------------------------------------------------
# Scheduling: the longest modules start first, so the two xdist workers (make test: --dist loadfile, one
# module per worker) finish together instead of one waiting on a long module picked up last.
# --------------------------------------------------------------------------------------------------

LONGEST_FIRST = (
    "test_library_vision.py",
    "test_library_hf.py",
    "test_gpt_sharding.py",
    "test_distributed.py",
    "test_examples.py",
    "test_crash_safety.py",
    "test_porting_corpus.py",
    "test_transformer.py",
    "test_doctests.py",
    "test_fuzz_layers.py",
    "test_fuzz_losses.py",
    "test_fuzz_norm_attention.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept otherwise


# --------------------------------------------------------------------------------------------------
# The run's timing line (the README quotes it): wall time, cores, and the machine's load around the run
# --------------------------------------------------------------------------------------------------

_START = {"wall": time.monotonic(), "load": os.getloadavg()[0]}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if hasattr(config, "workerinput"):  # an xdist worker: the controller prints the line
        return
    wall = time.monotonic() - _START["wall"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    terminalreporter.write_line(
        f"fnml suite: {wall:.0f} s wall ({wall / 60:.1f} min) on {cores} cores; "
        f"1-min load average {_START['load']:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )

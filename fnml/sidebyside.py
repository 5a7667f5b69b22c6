"""Side-by-side printing for the tour: PyTorch code and output on the left, fnml on the right.

Every example in ``examples/`` is built from one :class:`SideBySide`::

    tour = SideBySide("01 tensors", "Tensors: creation and basic operations")

    def torch_side():
        e = torch.randn(2, 3)
        print(e + e)
        return e + e

    def fnml_side():
        e = tensors.from_torch(E)        # same random values, shared
        print(e + e)
        return e + e

    t, f = tour.compare("Addition", torch_side, fnml_side)
    tour.check("e + e", t, f, tol=0.0)
    tour.finish()                          # prints the example's PARITY line, exits 1 on failure

The code shown in each column is the body of the function, read with :mod:`inspect`, so
what is printed is exactly what ran. Output is produced with rich and stays readable when
piped to a file (no colour, a fixed width).

PyTorch equivalent: none; this is the presentation layer of the tour.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import math
import os
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from fnml import _torch
from fnml._validation import check_non_negative, check_number

# The tour's parent process reads lines that start with this marker.
PARITY_MARKER = "PARITY"
# Width used when stdout is not a terminal (a file, a pipe, a test's capture).
_PIPED_WIDTH = 130


def make_console() -> Console:
    """A rich console that reads well both on a terminal and piped to a file.

    PyTorch equivalent: none (the tour's presentation layer).
    """
    if sys.stdout.isatty():
        return Console(highlight=False)
    return Console(width=_PIPED_WIDTH, highlight=False, no_color=True, force_terminal=False)


def output_dir() -> str:
    """Folder for files an example writes (plots, checkpoints): ``$FNML_OUTPUT_DIR`` or ./fnml_output.

    PyTorch equivalent: none (the tour's presentation layer).
    """
    path = os.environ.get("FNML_OUTPUT_DIR", "fnml_output")
    os.makedirs(path, exist_ok=True)
    return path


def quick_mode() -> bool:
    """True when ``$FNML_QUICK=1``: examples shorten long training runs (the test suite sets it).

    PyTorch equivalent: none (the tour's presentation layer).
    """
    return os.environ.get("FNML_QUICK", "0") not in ("", "0", "false", "False")


def function_body(fn: Callable[..., Any]) -> str:
    """Source of ``fn`` without its ``def`` line (and decorators), dedented.

    PyTorch equivalent: none (the tour's presentation layer).

    >>> def fnml_side():
    ...     e = 1 + 1
    ...     return e
    >>> print(function_body(fnml_side))
    e = 1 + 1
    return e
    """
    source = textwrap.dedent(inspect.getsource(fn))
    lines = source.splitlines()
    # Skip decorators and a possibly multi-line signature: the body starts after the line ending in ':'.
    start = 0
    while start < len(lines) and not lines[start].rstrip().endswith(":"):
        start += 1
    body = textwrap.dedent("\n".join(lines[start + 1 :]))
    # A leading docstring is presentation noise in a code column.
    stripped = body.lstrip()
    if stripped.startswith(('"""', "'''")):
        quote = stripped[:3]
        end = stripped.find(quote, 3)
        if end != -1:
            body = stripped[end + 3 :].lstrip("\n")
    return body.rstrip()


def run_captured(fn: Callable[[], Any]) -> tuple[Any, str]:
    """Call ``fn()`` and return ``(its result, what it printed)``.

    PyTorch equivalent: none (the tour's presentation layer).

    >>> run_captured(lambda: print("hello") or 42)
    (42, 'hello')
    """
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = fn()
    return result, buffer.getvalue().rstrip()


def to_numpy_tree(value: Any) -> Any:
    """Convert torch tensors / jax arrays / numbers inside a pytree-like value to numpy arrays.

    PyTorch equivalent: ``tensor.detach().cpu().numpy()`` over a tree.

    >>> import torch
    >>> to_numpy_tree({"w": torch.ones(2), "b": [0.5]})
    {'w': array([1., 1.], dtype=float32), 'b': [array(0.5)]}
    """
    if isinstance(value, dict):
        return {k: to_numpy_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_numpy_tree(v) for v in value)
    return _torch.as_numpy(value)  # a torch tensor (bfloat16 kept), jax array or number


def max_abs_diff(expected: Any, actual: Any) -> float:
    """Largest |expected - actual| over matching leaves (dicts by key, sequences by position).

    PyTorch equivalent: ``(a - b).abs().max()`` over matching leaves.

    >>> import torch
    >>> max_abs_diff({"w": torch.tensor([1.0, 2.0])}, {"w": np.array([1.0, 2.5])})
    0.5
    """
    expected, actual = to_numpy_tree(expected), to_numpy_tree(actual)
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or set(expected) != set(actual):
            raise ValueError(f"structures differ: keys {sorted(expected)} vs {sorted(actual)}")
        return max((max_abs_diff(expected[k], actual[k]) for k in expected), default=0.0)
    if isinstance(expected, (list, tuple)):
        if not isinstance(actual, (list, tuple)) or len(expected) != len(actual):
            raise ValueError(f"structures differ: length {len(expected)} vs {actual!r}")
        return max((max_abs_diff(e, a) for e, a in zip(expected, actual, strict=True)), default=0.0)
    expected_array = np.asarray(expected, dtype=np.float64)
    actual_array = np.asarray(actual, dtype=np.float64)
    if expected_array.shape != actual_array.shape:
        raise ValueError(f"shapes differ: {expected_array.shape} (PyTorch) vs {actual_array.shape} (fnml)")
    if expected_array.size == 0:
        return 0.0
    return float(np.max(np.abs(expected_array - actual_array)))


@dataclass(frozen=True)
class ParityCheck:
    """One measured comparison: a label, the max |difference| and the tolerance it must meet.

    PyTorch equivalent: none (the tour's presentation layer).

    A NaN or infinite difference never passes.

    >>> ParityCheck("loss", 2e-7, 1e-6).passed, ParityCheck("loss", float("nan"), 1e-6).passed
    (True, False)
    """

    label: str
    max_abs_diff: float
    tol: float

    def __post_init__(self) -> None:
        if not isinstance(self.label, str):
            raise TypeError(f"ParityCheck: label must be a str, got {self.label!r} ({type(self.label).__name__})")
        check_number("max_abs_diff", self.max_abs_diff, where="ParityCheck")  # NaN allowed: it fails
        check_non_negative("tol", self.tol, where="ParityCheck")

    @property
    def passed(self) -> bool:
        return math.isfinite(self.max_abs_diff) and self.max_abs_diff <= self.tol


@dataclass
class SideBySide:
    """One example of the tour: titled sections of PyTorch next to fnml, and their parity checks.

    PyTorch equivalent: none (the tour's presentation layer).
    """

    name: str
    title: str = ""
    console: Console = field(default_factory=make_console)
    checks: list[ParityCheck] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.console.rule(f"[bold]{self.name}[/bold]  {self.title}".rstrip())

    def section(self, heading: str, text: str = "") -> None:
        """Print a section heading (and an optional explanation) between comparisons."""
        self.console.print()
        self.console.print(Text(heading, style="bold"))
        if text:
            self.console.print(Text(textwrap.dedent(text).strip()))

    def show(self, heading: str, torch_code: str, torch_output: str, fnml_code: str, fnml_output: str) -> None:
        """Print two columns: the PyTorch code and its output, the fnml code and its output."""
        table = Table(title=heading, title_justify="left", expand=True, show_lines=True)
        table.add_column("PyTorch", ratio=1, overflow="fold")
        table.add_column("fnml", ratio=1, overflow="fold")
        table.add_row(
            Syntax(torch_code, "python", theme="ansi_dark", word_wrap=True),
            Syntax(fnml_code, "python", theme="ansi_dark", word_wrap=True),
        )
        table.add_row(Text(torch_output or "(no output)"), Text(fnml_output or "(no output)"))
        self.console.print(table)

    def compare(self, heading: str, torch_fn: Callable[[], Any], fnml_fn: Callable[[], Any]) -> tuple[Any, Any]:
        """Run both functions, print their code and output side by side, return both results."""
        torch_result, torch_output = run_captured(torch_fn)
        fnml_result, fnml_output = run_captured(fnml_fn)
        self.show(heading, function_body(torch_fn), torch_output, function_body(fnml_fn), fnml_output)
        return torch_result, fnml_result

    def check(self, label: str, torch_value: Any, fnml_value: Any, *, tol: float) -> ParityCheck:
        """Measure max |PyTorch - fnml| over the values and record it against ``tol``."""
        diff = max_abs_diff(torch_value, fnml_value)
        return self.record(label, diff, tol=tol)

    def record(self, label: str, diff: float, *, tol: float) -> ParityCheck:
        """Record an already measured difference (e.g. a per-step trajectory maximum)."""
        check_non_negative("tol", tol, where="SideBySide.record")
        result = ParityCheck(label, float(diff), float(tol))
        self.checks.append(result)
        status = "ok" if result.passed else "FAIL"
        self.console.print(f"  parity  {label}: max|diff| = {result.max_abs_diff:.3g} (tol {tol:.0e}) {status}")
        return result

    def finish(self, *, exit_on_failure: bool = True) -> bool:
        """Print the example's PARITY summary line; exit with status 1 if any check failed."""
        if not self.checks:
            raise RuntimeError(f"example {self.name!r} made no parity check; every example must measure one")
        worst = max(self.checks, key=lambda c: (not c.passed, c.max_abs_diff / max(c.tol, 1e-300)))
        passed = all(c.passed for c in self.checks)
        largest = max(c.max_abs_diff for c in self.checks)
        self.console.print()
        # One machine-readable line; the tour and the tests parse it.
        line = (
            f"{PARITY_MARKER} {self.name}: max|diff| = {largest:.3g} over {len(self.checks)} checks; "
            f"tightest: {worst.label} ({worst.max_abs_diff:.3g} vs tol {worst.tol:.0e}) "
            f"{'PASS' if passed else 'FAIL'}"
        )
        print(line, flush=True)
        if not passed and exit_on_failure:
            sys.exit(1)
        return passed


def parse_parity_line(line: str) -> dict[str, Any] | None:
    """Parse a line written by :meth:`SideBySide.finish`; None if it is not one.

    PyTorch equivalent: none (the tour's presentation layer).

    >>> line = "PARITY 01 tensors: max|diff| = 0 over 5 checks; tightest: e + e (0 vs tol 0e+00) PASS"
    >>> parsed = parse_parity_line(line)
    >>> parsed["name"], parsed["checks"], parsed["passed"]
    ('01 tensors', 5, True)
    >>> parse_parity_line("loss 0.25") is None
    True
    """
    if not line.startswith(PARITY_MARKER + " "):
        return None
    head, _, rest = line[len(PARITY_MARKER) + 1 :].partition(": max|diff| = ")
    value, _, rest = rest.partition(" over ")
    count, _, rest = rest.partition(" checks; ")
    return {
        "name": head,
        "max_abs_diff": float(value),
        "checks": int(count),
        "detail": rest.rsplit(" ", 1)[0],
        "passed": rest.endswith("PASS"),
    }

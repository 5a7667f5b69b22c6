"""Command line: ``python -m fnml tour | parity | bench``.

- ``tour``: run every example in order (PyTorch next to fnml), then a parity summary.
- ``parity``: the same examples, printing only the parity summary table.
- ``bench``: the benchmark suite in ``benchmarks/`` (torch eager vs fnml, same process).

The examples ship with the package: ``fnml/_examples`` is a link to the checkout's ``examples/``, and
building a wheel copies the files, so ``pip install .`` then ``python -m fnml tour`` works from any
directory (the examples need the ``torch``, ``plot`` and ``data`` extras). Each example runs in its own
process from the current directory and writes its files under ``--output``. The benchmarks are not
shipped: ``bench`` needs a source checkout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from rich.table import Table

from fnml.sidebyside import make_console, parse_parity_line

_REPO_ROOT = Path(__file__).resolve().parent.parent
# The tour's examples, inside the package (a link to examples/ in a checkout, real files once installed).
_PACKAGED_EXAMPLES = Path(__file__).resolve().parent / "_examples"


def examples_dir(override: str | None = None) -> Path:
    """Where the tour's examples are: ``override``, else the ones shipped in the package."""
    path = Path(override) if override else _PACKAGED_EXAMPLES.resolve()
    if not path.is_dir():
        raise SystemExit(
            f"fnml: the examples folder was not found at {path}; reinstall fnml (pip install .) or pass --examples-dir"
        )
    return path


def _benchmarks_dir() -> Path:
    path = _REPO_ROOT / "benchmarks"
    if not path.is_dir():
        raise SystemExit(f"fnml: the benchmarks/ folder was not found at {path}; `bench` runs from a source checkout")
    return path


def _examples(folder: Path, only: list[str] | None) -> list[Path]:
    files = sorted(p for p in folder.glob("[0-9][0-9]*.py") if p.is_file())
    if only:
        files = [p for p in files if any(p.stem.startswith(prefix) for prefix in only)]
        if not files:
            raise SystemExit(f"fnml: --only={','.join(only)} matched no example in {folder}")
    return files


def _run_example(path: Path, env: dict[str, str], *, echo: bool) -> tuple[int, list[str], float]:
    """Run one example in its own process, streaming its output; return (rc, lines, seconds)."""
    start = time.perf_counter()
    lines = []
    with subprocess.Popen(
        [sys.executable, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    ) as process:
        for line in process.stdout:  # streamed, so a long example shows progress
            lines.append(line.rstrip("\n"))
            if echo:
                sys.stdout.write(line)
                sys.stdout.flush()
        rc = process.wait()
    return rc, lines, time.perf_counter() - start


def run_tour(*, only: list[str] | None, output: str, quick: bool, echo: bool, examples_folder: str | None) -> int:
    folder = examples_dir(examples_folder)
    env = dict(os.environ)
    env["FNML_OUTPUT_DIR"] = str(Path(output).resolve())
    env.setdefault("PYTHONUNBUFFERED", "1")
    # A persistent compilation cache: a second tour skips most XLA compilation.
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(output).resolve() / "jax_cache"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    if quick:
        env["FNML_QUICK"] = "1"
    if sys.stdout.isatty():
        env.setdefault("COLUMNS", str(os.get_terminal_size().columns))
    Path(output).mkdir(parents=True, exist_ok=True)

    console = make_console()
    rows = []
    for path in _examples(folder, only):
        rc, lines, seconds = _run_example(path, env, echo=echo)
        parsed = [p for p in (parse_parity_line(line) for line in lines) if p is not None]
        if rc != 0 and not echo:
            console.print("\n".join(lines[-30:]))
        rows.append((path.stem, rc, parsed[-1] if parsed else None, seconds))

    table = Table(title="fnml tour: measured parity with PyTorch", title_justify="left")
    for column in ("example", "checks", "max |PyTorch - fnml|", "tightest check", "time", "result"):
        table.add_column(column)
    failures = 0
    for name, rc, parity, seconds in rows:
        ok = rc == 0 and parity is not None and parity["passed"]
        failures += not ok
        table.add_row(
            name,
            str(parity["checks"]) if parity else "-",
            f"{parity['max_abs_diff']:.3g}" if parity else "-",
            parity["detail"] if parity else f"exit status {rc}, no PARITY line",
            f"{seconds:.1f} s",
            "PASS" if ok else "FAIL",
        )
    console.print()
    console.print(table)
    console.print(f"plots and files written to: {Path(output).resolve()}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fnml", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("tour", "run every example side by side with PyTorch, then the parity summary"),
        ("parity", "run every example quietly and print only the parity summary"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--only", help="comma-separated example prefixes, e.g. 01,05")
        p.add_argument("--output", default="fnml_output", help="folder for plots and files (default: %(default)s)")
        p.add_argument("--quick", action="store_true", help="shorter training runs (what the tests use)")
        p.add_argument("--examples-dir", help="where the examples are (default: the ones shipped with fnml)")
    bench = sub.add_parser("bench", help="run the benchmark suite (benchmarks/run.py)")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed to benchmarks/run.py")
    args = parser.parse_args(argv)

    if args.command in ("tour", "parity"):
        only = [s.strip() for s in args.only.split(",")] if args.only else None
        return run_tour(
            only=only,
            output=args.output,
            quick=args.quick,
            echo=args.command == "tour",
            examples_folder=args.examples_dir,
        )
    runner = _benchmarks_dir() / "run.py"
    if not runner.is_file():
        raise SystemExit(f"fnml: {runner} does not exist")
    return subprocess.call([sys.executable, str(runner), *args.args], cwd=str(_REPO_ROOT))


if __name__ == "__main__":
    sys.exit(main())

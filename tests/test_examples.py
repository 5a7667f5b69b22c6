"""Every example runs (in quick mode) and ends with a passing PARITY line; the tour summarises them.

Each example runs in its own process, forked from one that has imported torch, jax, flax and fnml once
(tests/_example_server.py): seconds of imports per example saved, nothing shared between examples.

The digits examples (07-09) also run at full length, with their accuracy targets, in
tests/test_digits_accuracy.py (marked slow: `make test-full`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import pytest
from helpers import child_env, end, spawn_python, wait_for_line

from fnml.__main__ import main as fnml_main
from fnml.sidebyside import parse_parity_line

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("[0-9][0-9]*.py"))


def test_there_are_examples():
    assert EXAMPLES, f"no examples found in {EXAMPLES_DIR}"


@pytest.fixture(scope="module")
def example_server():
    """tests/_example_server.py: imports torch/jax/flax/fnml once, forks a fresh child per example."""
    # Examples run like a user runs them: jax's defaults (no x64), quick mode; with the suite's cheaper-compile
    # XLA settings (a quarter of their time; the same numbers). `make demo` and test_installed_tour run them
    # with XLA's defaults, each in its own interpreter.
    env = child_env(fast_compile=True, FNML_QUICK="1")
    server_script = str(Path(__file__).with_name("_example_server.py"))
    server = spawn_python([server_script], env=env, cwd=EXAMPLES_DIR.parent, stdin_pipe=True)
    try:
        wait_for_line(server, "READY")
        yield server
    finally:
        end(server)


def _run_example(server, path: Path, tmp_path: Path) -> tuple[int, str, str]:
    """Run one example in a child forked by the server; returns (returncode, stdout, stderr)."""
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    request = {
        "path": str(path),
        "cwd": str(EXAMPLES_DIR.parent),
        "env": {"FNML_OUTPUT_DIR": str(tmp_path)},  # plots and saved files into tmp_path
        "stdout": str(out),
        "stderr": str(err),
    }
    server.stdin.write(json.dumps(request) + "\n")
    server.stdin.flush()
    pid = int(wait_for_line(server, "PID").split()[-1])
    try:
        lines = wait_for_line(server, "EXIT", timeout=900)
    except AssertionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        raise
    returncode = int(lines.strip().splitlines()[-1].split()[-1])
    return returncode, out.read_text(), err.read_text()


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_and_reports_parity(example_server, path, tmp_path):
    returncode, stdout, stderr = _run_example(example_server, path, tmp_path)
    output = stdout + stderr
    assert returncode == 0, output[-4000:]
    parsed = [p for p in map(parse_parity_line, stdout.splitlines()) if p]
    assert parsed, f"{path.name} printed no PARITY line:\n{output[-2000:]}"
    assert parsed[-1]["passed"], parsed[-1]
    assert stdout.rstrip().splitlines()[-1].startswith("PARITY"), "the PARITY line must end the example"


def test_the_example_server_reports_a_failing_example(example_server, tmp_path):
    """A crash in an example is its child's exit code and traceback, and the server goes on serving."""
    bad = tmp_path / "99_fails.py"
    bad.write_text("import os\nprint('before', os.environ['FNML_OUTPUT_DIR'] != '')\nraise RuntimeError('planted')\n")
    returncode, stdout, stderr = _run_example(example_server, bad, tmp_path)
    assert returncode == 1 and stdout == "before True\n" and "RuntimeError: planted" in stderr
    (tmp_path / "98_exits.py").write_text("import sys\nsys.exit(3)\n")
    assert _run_example(example_server, tmp_path / "98_exits.py", tmp_path)[0] == 3


def test_tour_summary_fails_on_a_failing_example(tmp_path, capsys):
    folder = tmp_path / "examples"
    folder.mkdir()
    (folder / "01_fails.py").write_text(
        "from fnml.sidebyside import SideBySide\n"
        "tour = SideBySide('01 fails')\n"
        "tour.check('x', 1.0, 2.0, tol=0.5)\n"
        "tour.finish()\n"
    )
    (folder / "02_passes.py").write_text(
        "from fnml.sidebyside import SideBySide\n"
        "tour = SideBySide('02 passes')\n"
        "tour.check('x', 1.0, 1.0, tol=0.0)\n"
        "tour.finish()\n"
    )
    rc = fnml_main(["parity", "--examples-dir", str(folder), "--output", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert rc == 1
    assert "01_fails" in out and "FAIL" in out and "02_passes" in out and "PASS" in out


def test_tour_rejects_unknown_only(tmp_path):
    with pytest.raises(SystemExit, match="matched no example"):
        fnml_main(["parity", "--only", "99", "--output", str(tmp_path)])

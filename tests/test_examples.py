"""Every example runs (in quick mode) and ends with a passing PARITY line; the tour summarises them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fnml.__main__ import main as fnml_main
from fnml.sidebyside import parse_parity_line

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
ALL_EXAMPLES = sorted(EXAMPLES_DIR.glob("[0-9][0-9]*.py"))
# The digits examples run at full length (accuracy targets + the same PARITY check) in
# tests/test_digits_accuracy.py; running them here again in quick mode would only cost time.
FULL_LENGTH_ELSEWHERE = {"07_digits_mlp.py", "08_digits_cnn.py", "09_digits_lstm.py"}
EXAMPLES = [p for p in ALL_EXAMPLES if p.name not in FULL_LENGTH_ELSEWHERE]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(FNML_QUICK="1", FNML_OUTPUT_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    # Examples run like a user runs them: jax's defaults, not the test suite's x64 mode.
    env.pop("JAX_ENABLE_X64", None)
    return env


def test_there_are_examples():
    assert EXAMPLES, f"no examples found in {EXAMPLES_DIR}"


def test_every_example_is_run_by_some_test():
    from test_digits_accuracy import CASES

    full_length = {case.values[0] for case in CASES}
    assert FULL_LENGTH_ELSEWHERE <= full_length, FULL_LENGTH_ELSEWHERE - full_length
    assert {p.name for p in ALL_EXAMPLES} == {p.name for p in EXAMPLES} | FULL_LENGTH_ELSEWHERE


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_and_reports_parity(path, tmp_path):
    completed = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        cwd=str(EXAMPLES_DIR.parent),
        timeout=900,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    parsed = [p for p in map(parse_parity_line, completed.stdout.splitlines()) if p]
    assert parsed, f"{path.name} printed no PARITY line:\n{output[-2000:]}"
    assert parsed[-1]["passed"], parsed[-1]
    assert completed.stdout.rstrip().splitlines()[-1].startswith("PARITY"), "the PARITY line must end the example"


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

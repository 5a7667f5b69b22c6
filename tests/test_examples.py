"""Every example runs (in quick mode) and ends with a passing PARITY line; the tour summarises them.

The digits examples (07-09) also run at full length, with their accuracy targets, in
tests/test_digits_accuracy.py (marked slow: `make test-full`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import child_env, run_python

from fnml.__main__ import main as fnml_main
from fnml.sidebyside import parse_parity_line

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("[0-9][0-9]*.py"))


def test_there_are_examples():
    assert EXAMPLES, f"no examples found in {EXAMPLES_DIR}"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_and_reports_parity(path, tmp_path):
    # Examples run like a user runs them: jax's defaults (no x64), quick mode, plots into tmp_path; with the
    # suite's cheaper-compile XLA settings (a quarter of their time; the same numbers). `make demo` and
    # test_installed_tour run them with XLA's defaults.
    env = child_env(fast_compile=True, FNML_QUICK="1", FNML_OUTPUT_DIR=str(tmp_path))
    completed = run_python([str(path)], env=env, timeout=900, cwd=EXAMPLES_DIR.parent)
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

"""The presentation layer of the tour: code capture, parity measurement, the PARITY line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fnml.sidebyside import SideBySide, function_body, max_abs_diff, parse_parity_line


def test_function_body_strips_signature_and_docstring():
    def sample(
        a=1,
    ):
        """Doc."""
        x = a + 1
        return x

    assert function_body(sample) == "x = a + 1\nreturn x"


def test_max_abs_diff_over_trees_with_torch_leaves():
    expected = {"w": torch.tensor([1.0, 2.0]), "b": [torch.tensor(3.0)]}
    actual = {"w": np.array([1.0, 2.5]), "b": [np.array(3.0)]}
    assert max_abs_diff(expected, actual) == 0.5


def test_max_abs_diff_rejects_shape_mismatch():
    with pytest.raises(ValueError, match=r"shapes differ: \(2,\) \(PyTorch\) vs \(3,\) \(fnml\)"):
        max_abs_diff(np.zeros(2), np.zeros(3))


def test_compare_prints_both_columns_and_finish_writes_parity_line(capsys):
    tour = SideBySide("00 demo", "a test")

    def torch_side():
        print("from torch")
        return torch.ones(2)

    def fnml_side():
        print("from fnml")
        return np.ones(2)

    t, f = tour.compare("Ones", torch_side, fnml_side)
    tour.check("ones", t, f, tol=0.0)
    assert tour.finish()
    out = capsys.readouterr().out
    assert "from torch" in out and "from fnml" in out and "torch.ones(2)" in out
    parsed = parse_parity_line(out.strip().splitlines()[-1])
    assert parsed == {
        "name": "00 demo",
        "max_abs_diff": 0.0,
        "checks": 1,
        "detail": "tightest: ones (0 vs tol 0e+00)",
        "passed": True,
    }


def test_finish_exits_on_failure_and_requires_a_check():
    tour = SideBySide("00 demo")
    with pytest.raises(RuntimeError, match="made no parity check"):
        tour.finish()
    tour.check("off", 1.0, 2.0, tol=0.1)
    with pytest.raises(SystemExit):
        tour.finish()

"""The fuzz budget is set once, in tests/_hypothesis_profiles.py: profiles scale every property's budget."""

from __future__ import annotations

import pytest
from _hypothesis_profiles import MIN_EXAMPLES, budget, examples


def test_quick_is_the_default_and_runs_a_quarter_with_a_floor(monkeypatch):
    monkeypatch.delenv("FNML_FUZZ_PROFILE", raising=False)
    monkeypatch.delenv("FNML_FUZZ_EXAMPLES", raising=False)
    assert budget(40) == 10 and budget(60) == 15
    assert budget(6) == MIN_EXAMPLES == 3
    assert examples(40).max_examples == 10
    assert examples(40).derandomize and examples(40).deadline is None


@pytest.mark.parametrize(("profile", "expected"), [("full", 40), ("long", 400)])
def test_named_profiles_scale_every_budget(monkeypatch, profile, expected):
    monkeypatch.delenv("FNML_FUZZ_EXAMPLES", raising=False)
    monkeypatch.setenv("FNML_FUZZ_PROFILE", profile)
    assert budget(40) == expected


def test_an_explicit_count_replaces_every_budget(monkeypatch):
    monkeypatch.setenv("FNML_FUZZ_PROFILE", "long")
    monkeypatch.setenv("FNML_FUZZ_EXAMPLES", "7")
    assert budget(40) == budget(6) == 7


def test_an_unknown_profile_is_refused_by_name(monkeypatch):
    monkeypatch.delenv("FNML_FUZZ_EXAMPLES", raising=False)
    monkeypatch.setenv("FNML_FUZZ_PROFILE", "fast")
    with pytest.raises(ValueError, match=r"FNML_FUZZ_PROFILE='fast' is not a profile; expected one of"):
        budget(40)

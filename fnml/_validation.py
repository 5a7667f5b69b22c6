"""Eager input checks shared by every module: messages name the argument, what was expected and received.

All checks run in plain Python before tracing (never inside ``jit``) and raise ``ValueError`` or
``TypeError``; they never use ``assert`` (which ``python -O`` removes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_number(name: str, value: Any, *, where: str = "") -> float:
    """``value`` must be a real number (int or float, not bool)."""
    if not _is_number(value):
        raise TypeError(f"{_prefix(where)}{name} must be a number, got {value!r} ({type(value).__name__})")
    return value


def check_non_negative(name: str, value: Any, *, where: str = "") -> float:
    """``value >= 0`` and finite."""
    check_number(name, value, where=where)
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{_prefix(where)}{name} must be >= 0 and finite, got {name}={value!r}")
    return value


def check_positive(name: str, value: Any, *, where: str = "") -> float:
    """``value > 0`` and finite."""
    check_number(name, value, where=where)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{_prefix(where)}{name} must be > 0 and finite, got {name}={value!r}")
    return value


def check_positive_int(name: str, value: Any, *, where: str = "") -> int:
    """``value`` is an int (not bool) and ``>= 1``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{_prefix(where)}{name} must be a positive integer, got {name}={value!r}")
    return value


def check_in_interval(
    name: str, value: Any, low: float, high: float, *, closed_high: bool = False, where: str = ""
) -> float:
    """``low <= value < high`` (or ``<= high`` with ``closed_high``)."""
    check_number(name, value, where=where)
    ok = low <= value <= high if closed_high else low <= value < high
    if not ok:
        interval = f"[{low}, {high}]" if closed_high else f"[{low}, {high})"
        raise ValueError(f"{_prefix(where)}{name} must be in {interval}, got {name}={value!r}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any], *, where: str = "") -> Any:
    """``value`` is one of ``choices``."""
    options = tuple(choices)
    if value not in options:
        listed = ", ".join(repr(c) for c in options)
        raise ValueError(f"{_prefix(where)}{name} must be one of {listed}; got {name}={value!r}")
    return value


def check_ndim(name: str, shape: tuple[int, ...], allowed: Iterable[int], *, where: str = "") -> None:
    """The array's rank is one of ``allowed``."""
    ranks = tuple(allowed)
    if len(shape) not in ranks:
        expected = " or ".join(f"{r}-D" for r in ranks)
        raise ValueError(f"{_prefix(where)}{name} must be {expected}, got a {len(shape)}-D array of shape {shape}")


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""

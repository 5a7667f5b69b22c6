"""Eager input checks shared by every module: messages name the argument, what was expected and received.

All checks run in plain Python before tracing (never inside ``jit``) and never use ``assert`` (which
``python -O`` removes). One rule everywhere: ``TypeError`` when the value has the wrong type, ``ValueError``
when it has the right type and a wrong value; the message names the argument, what was expected and what
was received (``Linear: in_features must be an int, got '3' (str)``).

The vocabulary: :func:`check_bool`, :func:`check_int` / :func:`check_positive_int`, :func:`check_number`
/ :func:`check_positive` / :func:`check_non_negative` / :func:`check_in_interval` (float ranges),
:func:`check_choice`, :func:`check_pair`, :func:`check_key`, :func:`check_ndim`.
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


def _is_int(value: Any) -> bool:
    # numpy integers count (shapes and sizes often come from numpy); bools do not.
    import numpy as np

    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_bool(name: str, value: Any, *, where: str = "") -> bool:
    """``value`` is a bool (``True``/``False``; ints such as 1 are refused, as a typo guard)."""
    if not isinstance(value, bool):
        raise TypeError(
            f"{_prefix(where)}{name} must be a bool (True or False), got {value!r} ({type(value).__name__})"
        )
    return value


def check_int(name: str, value: Any, *, minimum: int | None = None, where: str = "") -> int:
    """``value`` is an int (not bool), and ``>= minimum`` when given."""
    if not _is_int(value):
        raise TypeError(f"{_prefix(where)}{name} must be an int, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{_prefix(where)}{name} must be an int >= {minimum}, got {name}={value!r}")
    return int(value)


def check_positive_int(name: str, value: Any, *, where: str = "") -> int:
    """``value`` is an int (not bool) and ``>= 1``."""
    if not _is_int(value):
        raise TypeError(f"{_prefix(where)}{name} must be a positive integer, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{_prefix(where)}{name} must be a positive integer, got {name}={value!r}")
    return int(value)


def check_pair(name: str, value: Any, *, n: int = 2, minimum: int = 1, where: str = "") -> tuple[int, ...]:
    """An int or a tuple/list of ``n`` ints, each ``>= minimum``, as an ``n``-tuple (torch's ``_pair``)."""
    items = (value,) * n if _is_int(value) else value
    if not isinstance(items, (tuple, list)) or len(items) != n or not all(_is_int(v) for v in items):
        raise TypeError(f"{_prefix(where)}{name} must be an int or a tuple of {n} ints, got {name}={value!r}")
    if any(v < minimum for v in items):
        bound = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{_prefix(where)}{name} must be {bound}, got {name}={value!r}")
    return tuple(int(v) for v in items)


def check_key(name: str, value: Any, *, where: str = "") -> Any:
    """``value`` is a JAX PRNG key: a typed key (``jax.random.key``) or a raw uint32 ``(2,)`` key."""
    import jax
    import jax.numpy as jnp

    is_typed = isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jax.dtypes.prng_key)
    is_raw = isinstance(value, jax.Array) and value.dtype == jnp.uint32 and value.shape == (2,)
    if not (is_typed or is_raw):
        shown = (
            f"{type(value).__name__} of dtype {getattr(value, 'dtype', None)}"
            if hasattr(value, "dtype")
            else repr(value)
        )
        raise TypeError(f"{_prefix(where)}{name} must be a jax.random key (jax.random.key(seed)), got {shown}")
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

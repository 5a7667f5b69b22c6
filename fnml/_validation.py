"""Eager input checks shared by every module: messages name the argument, what was expected and received.

All checks run in plain Python before tracing (never inside ``jit``) and never use ``assert`` (which
``python -O`` removes). One rule everywhere: ``TypeError`` when the value has the wrong type, ``ValueError``
when it has the right type and a wrong value; the message names the argument, what was expected and what
was received (``Linear: in_features must be an int, got '3' (str)``).

The vocabulary: :func:`check_bool`, :func:`check_int` / :func:`check_positive_int`, :func:`check_number`
/ :func:`check_positive` / :func:`check_non_negative` / :func:`check_in_interval` (float ranges),
:func:`check_choice`, :func:`check_pair`, :func:`check_key`, :func:`check_ndim`. Each returns the checked
value (ints as Python ``int``, pairs as tuples), so a caller can write ``n = check_positive_int("n", n)``.
Messages quote a received value through :func:`describe`: an array, a tensor, a model or a parameter tree is
named by its type (and shape, dtype or length), never printed.

>>> check_positive_int("batch_size", 32, where="DataLoader")
32
>>> check_positive_int("batch_size", 2.5, where="DataLoader")
Traceback (most recent call last):
TypeError: DataLoader: batch_size must be a positive integer, got 2.5 (float)
>>> check_positive_int("batch_size", 0, where="DataLoader")
Traceback (most recent call last):
ValueError: DataLoader: batch_size must be a positive integer, got batch_size=0
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np


def _is_number(value: Any) -> bool:
    # Python and numpy real scalars count (np.float32(0.1) is a fine learning rate); bools do not.
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _is_int(value: Any) -> bool:
    # numpy integers count (shapes and sizes often come from numpy); bools do not.
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


_PLAIN = (type(None), bool, int, float, complex, str, bytes, np.generic)
_MAX_SHOWN = 80  # longest repr an error message quotes; longer values are summarised


def _is_plain(value: Any, depth: int = 0) -> bool:
    """A scalar, string or small container of them: safe and short to quote in an error message."""
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (tuple, list, set, frozenset)) and depth < 3 and len(value) <= 16:
        return all(_is_plain(item, depth + 1) for item in value)
    if isinstance(value, dict) and depth < 3 and len(value) <= 16:
        return all(_is_plain(k, depth + 1) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def describe(value: Any) -> str:
    """``value`` as an error message may quote it: never an array's or a tensor's values, never a whole model.

    Scalars, strings and small containers of them are quoted (``repr``, cut at 80 characters); arrays and
    tensors are named by type, shape and dtype; containers holding them by type and length; other objects
    by their one-line repr, or by type when that repr is long or spans lines (a module, a parameter tree).

    >>> import numpy as np
    >>> describe((3, 0)), describe("sum")
    ('(3, 0)', "'sum'")
    >>> describe(np.zeros((2, 3), np.float32))
    'a numpy.ndarray of shape (2, 3) and dtype float32'
    >>> describe({"w": np.zeros(3), "b": np.zeros(1)})
    'a dict of 2 entries (not shown)'
    """
    kind = type(value).__name__
    if not isinstance(value, np.generic) and hasattr(value, "shape") and hasattr(value, "dtype"):
        root = type(value).__module__.split(".")[0]
        array = {"jaxlib": "jax.Array", "jax": "jax.Array", "numpy": "numpy.ndarray"}.get(root, f"{root}.{kind}")
        return f"a {array} of shape {tuple(value.shape)} and dtype {value.dtype}"
    if _is_plain(value):
        text = repr(value)
        return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."
    if isinstance(value, (tuple, list, set, frozenset, dict)):
        one, many = ("entry", "entries") if isinstance(value, dict) else ("item", "items")
        unit = one if len(value) == 1 else many
        return f"{_article(kind)} {kind} of {len(value)} {unit} (not shown)"
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the error being reported
        text = ""
    if text and "\n" not in text and len(text) <= _MAX_SHOWN:
        return text
    return f"{_article(kind)} {kind} object"


def received(value: Any) -> str:
    """The value and its type, for TypeError messages: ``'3' (str)``; arrays and models summarised by :func:`describe`.

    >>> import numpy as np
    >>> received("3"), received(np.ones(3))
    ("'3' (str)", 'a numpy.ndarray of shape (3,) and dtype float64')
    """
    if _is_plain(value):
        return f"{describe(value)} ({type(value).__name__})"
    text = describe(value)  # an array, a model, a parameter tree: its type, never its values
    return text if text.startswith(("a ", "an ")) else f"{text} ({type(value).__name__})"


def check_number(name: str, value: Any, *, where: str = "") -> float:
    """``value`` must be a real number (int or float, Python or numpy; not bool).

    >>> check_number("lr", 0.1)
    0.1
    >>> check_number("lr", "0.1", where="adam")
    Traceback (most recent call last):
    TypeError: adam: lr must be a number, got '0.1' (str)
    """
    if not _is_number(value):
        raise TypeError(f"{_prefix(where)}{name} must be a number, got {received(value)}")
    return value


def check_non_negative(name: str, value: Any, *, where: str = "") -> float:
    """``value`` is a number, ``>= 0`` and finite.

    >>> check_non_negative("weight_decay", -0.1, where="sgd")
    Traceback (most recent call last):
    ValueError: sgd: weight_decay must be >= 0 and finite, got weight_decay=-0.1
    """
    check_number(name, value, where=where)
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{_prefix(where)}{name} must be >= 0 and finite, got {name}={value!r}")
    return value


def check_positive(name: str, value: Any, *, where: str = "") -> float:
    """``value`` is a number, ``> 0`` and finite.

    >>> check_positive("lr", float("nan"))
    Traceback (most recent call last):
    ValueError: lr must be > 0 and finite, got lr=nan
    """
    check_number(name, value, where=where)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{_prefix(where)}{name} must be > 0 and finite, got {name}={value!r}")
    return value


def check_bool(name: str, value: Any, *, where: str = "") -> bool:
    """``value`` is a bool (``True``/``False``; ints such as 1 are refused, as a typo guard).

    >>> check_bool("bias", 1, where="LSTM")
    Traceback (most recent call last):
    TypeError: LSTM: bias must be a bool (True or False), got 1 (int)
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{_prefix(where)}{name} must be a bool (True or False), got {received(value)}")
    return bool(value)


def check_int(name: str, value: Any, *, minimum: int | None = None, where: str = "") -> int:
    """``value`` is an int (not bool), and ``>= minimum`` when given.

    >>> check_int("patience", 0, minimum=0)
    0
    >>> check_int("patience", -1, minimum=0, where="ReduceLROnPlateau")
    Traceback (most recent call last):
    ValueError: ReduceLROnPlateau: patience must be an int >= 0, got patience=-1
    """
    if not _is_int(value):
        raise TypeError(f"{_prefix(where)}{name} must be an int, got {received(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{_prefix(where)}{name} must be an int >= {minimum}, got {name}={value!r}")
    return int(value)


def check_positive_int(name: str, value: Any, *, where: str = "") -> int:
    """``value`` is an int (not bool) and ``>= 1`` (``TypeError`` for 2.5, ``ValueError`` for 0).

    >>> check_positive_int("step_size", True)
    Traceback (most recent call last):
    TypeError: step_size must be a positive integer, got True (bool)
    """
    if not _is_int(value):
        raise TypeError(f"{_prefix(where)}{name} must be a positive integer, got {received(value)}")
    if value < 1:
        raise ValueError(f"{_prefix(where)}{name} must be a positive integer, got {name}={value!r}")
    return int(value)


def check_pair(name: str, value: Any, *, n: int = 2, minimum: int = 1, where: str = "") -> tuple[int, ...]:
    """An int or a tuple/list of ``n`` ints, each ``>= minimum``, as an ``n``-tuple (torch's ``_pair``).

    >>> check_pair("kernel_size", 3)
    (3, 3)
    >>> check_pair("kernel_size", (3, 0), where="Conv2d")
    Traceback (most recent call last):
    ValueError: Conv2d: kernel_size must be positive, got kernel_size=(3, 0)
    """
    items = (value,) * n if _is_int(value) else value
    if not isinstance(items, (tuple, list)) or len(items) != n or not all(_is_int(v) for v in items):
        raise TypeError(f"{_prefix(where)}{name} must be an int or a tuple of {n} ints, got {name}={describe(value)}")
    if any(v < minimum for v in items):
        bound = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{_prefix(where)}{name} must be {bound}, got {name}={value!r}")
    return tuple(int(v) for v in items)


def check_key(name: str, value: Any, *, where: str = "") -> Any:
    """``value`` is a JAX PRNG key: a typed key (``jax.random.key``) or a raw uint32 ``(2,)`` key.

    >>> import jax
    >>> _ = check_key("key", jax.random.key(0))
    >>> check_key("key", 0, where="DataLoader")
    Traceback (most recent call last):
    TypeError: DataLoader: key must be a jax.random key (jax.random.key(seed)), got 0 (int)
    """
    import jax
    import jax.numpy as jnp

    is_typed = isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jax.dtypes.prng_key)
    is_raw = isinstance(value, jax.Array) and value.dtype == jnp.uint32 and value.shape == (2,)
    if not (is_typed or is_raw):
        shown = (
            f"an array of dtype {value.dtype} and shape {tuple(value.shape)}"
            if hasattr(value, "dtype") and hasattr(value, "shape")
            else received(value)
        )
        raise TypeError(f"{_prefix(where)}{name} must be a jax.random key (jax.random.key(seed)), got {shown}")
    return value


def check_in_interval(
    name: str, value: Any, low: float, high: float, *, closed_high: bool = False, where: str = ""
) -> float:
    """``value`` is a number with ``low <= value < high`` (or ``<= high`` with ``closed_high``).

    >>> check_in_interval("label_smoothing", 1.5, 0.0, 1.0, closed_high=True)
    Traceback (most recent call last):
    ValueError: label_smoothing must be in [0.0, 1.0], got label_smoothing=1.5
    """
    check_number(name, value, where=where)
    ok = low <= value <= high if closed_high else low <= value < high
    if not ok:
        interval = f"[{low}, {high}]" if closed_high else f"[{low}, {high})"
        raise ValueError(f"{_prefix(where)}{name} must be in {interval}, got {name}={value!r}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any], *, where: str = "") -> Any:
    """``value`` is one of ``choices``: ``TypeError`` if its type is none of theirs, else ``ValueError``.

    Types are compared strictly: ``1`` is not accepted for ``True``, nor ``b'sum'`` for ``'sum'``.

    >>> check_choice("reduction", "sum", ("mean", "sum", "none"))
    'sum'
    >>> check_choice("reduction", "avg", ("mean", "sum", "none"), where="mse_loss")
    Traceback (most recent call last):
    ValueError: mse_loss: reduction must be one of 'mean', 'sum', 'none'; got reduction='avg'
    >>> check_choice("reduction", None, ("mean", "sum", "none"), where="mse_loss")
    Traceback (most recent call last):
    TypeError: mse_loss: reduction must be one of 'mean', 'sum', 'none'; got None (NoneType)
    """
    options = tuple(choices)
    listed = ", ".join(repr(c) for c in options)
    if not any(_same_kind(value, c) for c in options):
        raise TypeError(f"{_prefix(where)}{name} must be one of {listed}; got {received(value)}")
    if not any(_same_kind(value, c) and value == c for c in options):
        raise ValueError(f"{_prefix(where)}{name} must be one of {listed}; got {name}={value!r}")
    return value


def _same_kind(value: Any, choice: Any) -> bool:
    """Whether ``value`` has the type of ``choice`` (any str for a str; bools only for a bool)."""
    if isinstance(choice, str):
        return isinstance(value, str)
    if isinstance(choice, (bool, np.bool_)) or isinstance(value, (bool, np.bool_)):
        return isinstance(value, (bool, np.bool_)) and isinstance(choice, (bool, np.bool_))
    return isinstance(value, type(choice))


def check_ndim(name: str, shape: tuple[int, ...], allowed: Iterable[int], *, where: str = "") -> None:
    """The array's rank is one of ``allowed``.

    >>> check_ndim("x", (8, 3), (3, 4), where="nchw_to_nhwc")
    Traceback (most recent call last):
    ValueError: nchw_to_nhwc: x must be 3-D or 4-D, got a 2-D array of shape (8, 3)
    """
    ranks = tuple(allowed)
    if len(shape) not in ranks:
        expected = " or ".join(f"{r}-D" for r in ranks)
        raise ValueError(f"{_prefix(where)}{name} must be {expected}, got a {len(shape)}-D array of shape {shape}")


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""

"""Docstrings of every public fnml module: a PyTorch equivalent, examples as doctests, nothing machine-bound.

Modules are discovered with ``pkgutil.walk_packages`` (the same list as ``tests/test_doctests.py``), so
new modules are checked without editing this file. Each check lists every offender in its failure
message, across all modules at once.
"""

from __future__ import annotations

import importlib
import inspect
import re

import pytest
from test_doctests import MODULES

# Public modules: no private part in the dotted name, not the command-line entry point.
PUBLIC_MODULES = [name for name in MODULES if not any(part.startswith("_") for part in name.split(".")[1:])]
# Top-level modules that are not packages must each export something of their own.
TOP_LEVEL_MODULES = [
    name for name in PUBLIC_MODULES if name.count(".") == 1 and not hasattr(importlib.import_module(name), "__path__")
]


def _public_objects(module_name: str):
    """(qualified name, object) for each public function and class defined in the module."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    for name in names:
        obj = getattr(module, name)
        if getattr(obj, "__module__", None) != module.__name__:
            continue  # re-exported: checked where it is defined
        if inspect.isclass(obj) and issubclass(obj, (Exception, Warning)):
            continue  # error types are documented by the functions that raise them
        if inspect.isfunction(obj) or inspect.isclass(obj):
            yield f"{module_name}.{name}", obj


def _public_methods(cls):
    """(name, function) for the public methods and properties a class defines itself."""
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        function = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
        if inspect.isfunction(function):
            yield name, function


def _documented(module_name: str):
    """(qualified name, docstring) for the module itself, its public objects and their public methods."""
    module = importlib.import_module(module_name)
    yield module_name, inspect.getdoc(module) or ""
    for qualified, obj in _public_objects(module_name):
        yield qualified, inspect.getdoc(obj) or ""
        if inspect.isclass(obj):
            for name, method in _public_methods(obj):
                yield f"{qualified}.{name}", method.__doc__ or ""


_EXAMPLE_BLOCK = re.compile(r"^(?P<indent>[ \t]*)Examples?::[ \t]*$", re.MULTILINE)


def example_blocks_without_doctest(docstring: str) -> int:
    """How many ``Example::`` blocks in ``docstring`` hold no ``>>>`` line (a block: the indented lines after)."""
    count = 0
    lines = docstring.splitlines()
    for match in _EXAMPLE_BLOCK.finditer(docstring):
        start = docstring[: match.start()].count("\n") + 1
        indent = len(match.group("indent"))
        block = []
        for line in lines[start:]:
            if line.strip() and len(line) - len(line.lstrip()) <= indent:
                break
            block.append(line)
        if not any(line.lstrip().startswith(">>>") for line in block):
            count += 1
    return count


# Words that tie a docstring to one machine or to an internal tracker; measurements go to benchmarks/README.md.
_MACHINE_BOUND = re.compile(r"\bissues? #?\d+|\b\d+(\.\d+)? ?(us|µs|ms)\b", re.IGNORECASE)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_docstrings_name_the_pytorch_equivalent(module_name):
    missing = [
        name for name, obj in _public_objects(module_name) if "PyTorch equivalent" not in (inspect.getdoc(obj) or "")
    ]
    assert not missing, f"{module_name}: docstrings without 'PyTorch equivalent': {missing}"


@pytest.mark.parametrize("module_name", TOP_LEVEL_MODULES)
def test_module_has_public_api(module_name):
    assert list(_public_objects(module_name)), f"{module_name} exports nothing"


def test_examples_are_doctests():
    """No ``Example::`` block without ``>>>``: examples must run (tests/test_doctests.py runs them)."""
    offenders = [
        f"{name} ({count} block{'s' if count > 1 else ''})"
        for module_name in MODULES
        for name, doc in _documented(module_name)
        if (count := example_blocks_without_doctest(doc))
    ]
    assert not offenders, (
        f"{len(offenders)} docstrings still have an 'Example::' block without '>>>' (write it as a doctest "
        "with its real output):\n  " + "\n  ".join(offenders)
    )


def test_docstrings_carry_no_timings_or_tracker_references():
    """No machine timings ("42 us", "12.3 ms") or tracker references ("issue 7") in what a user reads."""
    offenders = [
        f"{name}: {match.group(0)!r}"
        for module_name in MODULES
        for name, doc in _documented(module_name)
        for match in _MACHINE_BOUND.finditer(doc)
    ]
    assert not offenders, (
        f"{len(offenders)} timings / tracker references in docstrings (move measurements to "
        "benchmarks/README.md):\n  " + "\n  ".join(offenders)
    )


@pytest.mark.parametrize(
    ("docstring", "expected"),
    [
        ("Summary.\n\nExample::\n\n    y = f(x)\n", 1),
        ("Summary.\n\nExample::\n\n    >>> f(1)\n    2\n", 0),
        ("Summary.\n\n    Examples::\n\n        a = 1\n\n    Returns x.\n", 1),
        ("Summary with >>> f(1) and no block.", 0),
    ],
    ids=["plain-block", "doctest-block", "indented-block", "no-block"],
)
def test_example_block_detector(docstring, expected):
    assert example_blocks_without_doctest(docstring) == expected

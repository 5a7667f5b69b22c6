"""Every ``>>>`` example in fnml's docstrings runs, with the output it shows.

One test per module; modules are discovered with ``pkgutil.walk_packages`` over the installed ``fnml``
package, so a module added later is covered without editing this file. Examples run with
``ELLIPSIS | NORMALIZE_WHITESPACE`` and under this suite's settings (x64 on): an example that prints a
dtype-dependent repr should print ``float(...)``, a shape, or ``...`` instead.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import fnml

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def fnml_modules() -> list[str]:
    """Every module and package under ``fnml`` (the command-line entry point included)."""
    names = ["fnml"]
    for info in pkgutil.walk_packages(fnml.__path__, prefix="fnml."):
        names.append(info.name)
    return sorted(names)


MODULES = fnml_modules()


def test_discovery_finds_the_whole_package():
    # A guard on the discovery itself: the core modules and the layers package are there.
    expected = {"fnml.losses", "fnml.schedules", "fnml.tensors", "fnml.data", "fnml.grad", "fnml.layers"}
    assert expected <= set(MODULES), expected - set(MODULES)


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name):
    module = importlib.import_module(module_name)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, module_name)
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    reports: list[str] = []
    for test in sorted(tests, key=lambda t: t.name):
        runner.run(test, out=reports.append)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples failed:\n" + "".join(reports)

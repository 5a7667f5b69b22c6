"""Every public function and class names its PyTorch equivalent (or says there is none)."""

from __future__ import annotations

import importlib
import inspect

import pytest

MODULES = (
    "checkpoint",
    "data",
    "device",
    "grad",
    "interop",
    "layers",
    "losses",
    "optim",
    "parity",
    "recurrent",
    "schedules",
    "sidebyside",
    "tensors",
    "train",
)


def _public_objects(module_name: str):
    module = importlib.import_module(f"fnml.{module_name}")
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    for name in names:
        obj = getattr(module, name)
        if getattr(obj, "__module__", None) != module.__name__:
            continue  # re-exported: checked where it is defined
        if inspect.isclass(obj) and issubclass(obj, (Exception, Warning)):
            continue  # error types are documented by the functions that raise them
        if inspect.isfunction(obj) or inspect.isclass(obj):
            yield name, obj


@pytest.mark.parametrize("module_name", MODULES)
def test_public_docstrings_name_the_pytorch_equivalent(module_name):
    missing = [
        name for name, obj in _public_objects(module_name) if "PyTorch equivalent" not in (inspect.getdoc(obj) or "")
    ]
    assert not missing, f"fnml.{module_name}: docstrings without 'PyTorch equivalent': {missing}"


@pytest.mark.parametrize("module_name", MODULES)
def test_module_has_public_api(module_name):
    assert list(_public_objects(module_name)), f"fnml.{module_name} exports nothing"

"""The tour works from an installed package, not only from a source checkout.

fnml is installed (``pip install --no-deps --no-build-isolation --target DIR``, no network) from a copy
of the checkout's package files, then ``python -m fnml tour`` runs from an empty temporary directory with
``PYTHONPATH=DIR``: the fnml imported there must be the installed one (``fnml.__file__`` under DIR), and
its examples must be real files inside the installed package. One quick example keeps the test short.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import deadline

from fnml.sidebyside import parse_parity_line

REPO = Path(__file__).resolve().parent.parent
QUICK_EXAMPLE = "01"


def _package_sources(destination: Path) -> Path:
    """What a source distribution holds: pyproject, README, the package (its examples link kept)."""
    source = destination / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "fnml", source / "fnml", symlinks=True, ignore=ignore)
    shutil.copytree(REPO / "examples", source / "examples", ignore=ignore)
    return source


def _clean_env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "JAX_", "FNML_", "XLA_"))}
    env.update(PYTHONPATH=str(site), PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """fnml installed into a fresh target folder; returns that folder."""
    root = tmp_path_factory.mktemp("installed")
    source, site = _package_sources(root), root / "site"
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet"]
        + ["--target", str(site), str(source)],
        capture_output=True,
        text=True,
        env=_clean_env(site),
        cwd=str(root),
        timeout=deadline(300),
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return site


def _run(args: list[str], site: Path, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=_clean_env(site),
        cwd=str(cwd),
        timeout=deadline(timeout),
        stdin=subprocess.DEVNULL,
    )


def _modules(root: Path) -> set[str]:
    """Dotted names of the .py modules under ``root/fnml`` (examples excluded)."""
    package = root / "fnml"
    return {
        ".".join(path.relative_to(root).with_suffix("").parts)
        for path in package.rglob("*.py")
        if "_examples" not in path.relative_to(package).parts
    }


def test_installed_package_ships_every_module_and_the_examples(installed):
    assert _modules(installed) == _modules(REPO), "the wheel misses (or adds) modules of the checkout"
    shipped = installed / "fnml" / "_examples"
    assert not shipped.is_symlink(), "the installed examples must be files, not a link back to a checkout"
    expected = {p.name for p in (REPO / "examples").glob("*.py")}
    assert {p.name for p in shipped.glob("*.py")} == expected


def test_tour_runs_from_the_installed_package_in_any_directory(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run(
        ["-c", "import fnml, fnml.__main__ as m; print(fnml.__file__); print(m.examples_dir())"], installed, elsewhere
    )
    assert where.returncode == 0, where.stderr
    module_file, examples = where.stdout.split()
    assert Path(module_file).is_relative_to(installed), f"imported {module_file}, not the installed fnml"
    assert Path(examples).is_relative_to(installed), f"examples from {examples}, not the installed package"

    tour = _run(["-m", "fnml", "tour", "--quick", "--only", QUICK_EXAMPLE, "--output", "out"], installed, elsewhere)
    output = tour.stdout + tour.stderr
    assert tour.returncode == 0, output[-4000:]
    parsed = [p for p in map(parse_parity_line, tour.stdout.splitlines()) if p]
    assert parsed and parsed[-1]["passed"], output[-4000:]
    assert (elsewhere / "out").is_dir()  # files go under --output, relative to where the tour runs

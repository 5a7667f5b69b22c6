# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Every install goes through constraints.txt so all machines get the same versions.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Each target installs the extras it needs once; a stamp records it (redone when the pins change).
STAMP_DEMO := $(VENV)/.stamp-demo
STAMP_TEST := $(VENV)/.stamp-test
STAMP_BENCH := $(VENV)/.stamp-bench
# Two workers: the suite is CPU-bound and CI machines have 2 cores. loadfile sends each test module to one
# worker, so every module-scoped fixture (compiled steps, ported models, subprocess workers) is built once;
# --no-loadscope-reorder keeps the collection order, where tests/conftest.py puts the longest modules first
# (xdist would otherwise start the modules with the most tests first), so the two workers end together.
# `make test` leaves out the tests marked slow (the digits examples at full length, the long fuzz profile);
# `make test-full` runs everything.
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder
# The suite writes bytecode even where the environment says not to (PYTHONDONTWRITEBYTECODE, set by some
# sandboxes): otherwise every worker and every run re-compiles fnml's sources and re-rewrites the test
# modules' asserts (seconds per process). The files go to the git-ignored __pycache__ folders.
PYTEST := PYTHONDONTWRITEBYTECODE= $(PY) -m pytest

.PHONY: demo test test-full lint bench venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel

$(STAMP_DEMO): $(PY) pyproject.toml constraints.txt
	$(PIP) install --quiet -c constraints.txt -e ".[torch,plot,data]"
	touch $@

$(STAMP_TEST): $(PY) pyproject.toml constraints.txt
	$(PIP) install --quiet -c constraints.txt -e ".[test]"
	touch $@

$(STAMP_BENCH): $(PY) pyproject.toml constraints.txt
	$(PIP) install --quiet -c constraints.txt -e ".[bench]"
	touch $@

venv: $(STAMP_TEST)

## demo: the side-by-side tour (PyTorch next to fnml, with measured parity).
demo: $(STAMP_DEMO)
	$(PY) -m fnml tour

## test: the whole suite, parity against real PyTorch included (the slow-marked long runs left out).
test: $(STAMP_TEST)
	$(PYTEST) $(PYTEST_ARGS) -m "not slow"

## test-full: the suite plus the slow-marked long runs (digits examples at full length with accuracy targets).
test-full: $(STAMP_TEST)
	$(PYTEST) $(PYTEST_ARGS)

## bench: fnml vs PyTorch benchmarks (W1-W7, W5 whole process, import overhead); writes benchmarks/results/.
bench: $(STAMP_BENCH)
	$(PY) benchmarks/run.py

lint: $(STAMP_TEST)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info fnml_output
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

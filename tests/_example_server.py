"""Runs the examples for tests/test_examples.py: one process imports what every example imports (torch, jax, flax,
optax, fnml; seconds each), then forks a fresh child per example, which runs the file as ``__main__``.

Each child is a new process with its own copy of everything, exactly as ``python examples/NN_x.py`` would be
from the point where the imports are done: nothing an example does (jax config, XLA flags before the first
computation, globals, output files) reaches the next one. The server itself never starts a JAX backend or a
torch thread pool before forking (checked: an example that sets ``XLA_FLAGS`` for more devices still gets
them), so the children start from an un-initialised runtime, as a fresh interpreter does.

Protocol, one JSON object per line on stdin: ``{"path", "cwd", "env", "stdout", "stderr"}``; the server
answers ``PID <pid>`` when the child starts and ``EXIT <pid> <returncode>`` when it ends. EOF ends the server.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import traceback

# What the examples import (see examples/*.py), loaded once here instead of once per example.
import jax  # noqa: F401
import jax.numpy  # noqa: F401
import numpy  # noqa: F401
import optax  # noqa: F401
import torch  # noqa: F401
import torch.nn  # noqa: F401
import torch.utils.data  # noqa: F401
from flax import nnx  # noqa: F401

import fnml.interop  # noqa: F401
import fnml.sidebyside  # noqa: F401
import fnml.train  # noqa: F401


def _backend_started() -> bool:
    from jax._src import xla_bridge

    return bool(getattr(xla_bridge, "_backends", None))


def _run_child(request: dict) -> None:
    """In the forked child: the example's environment, streams and argv, then the file as __main__."""
    code = 0
    try:
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(handle, fd)
            os.close(handle)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        null = os.open(os.devnull, os.O_RDONLY)  # not the server's request pipe
        os.dup2(null, 0)
        os.close(null)
        sys.argv = [request["path"]]
        sys.path[0] = os.path.dirname(os.path.abspath(request["path"]))  # as `python path` sets it
        runpy.run_path(request["path"], run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if not isinstance(stop.code, int) and stop.code is not None:
            print(stop.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - report anything, as the interpreter would
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)


def main() -> None:
    assert not _backend_started(), "the example server must not start a JAX backend before forking"
    print("READY", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _run_child(request)
        print(f"PID {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"EXIT {pid} {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    main()

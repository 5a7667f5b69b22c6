"""The child-process helpers' error paths: a child that never signals, or never exits, is ended, its pipes are
closed, and the error carries what it printed (the suite's crash-safety and multi-process tests rely on them)."""

from __future__ import annotations

import subprocess

import pytest
from helpers import end, finish, spawn_python, wait_for_line

# Prints one line, then waits far longer than any deadline below: the child never says READY nor exits.
# The 1 s deadlines below are the path under test, not a wait for readiness: this child can never become
# ready within them, so the outcome does not depend on how busy the machine is.
_SILENT = ["-c", "import time; print('started', flush=True); time.sleep(600)"]


def test_wait_for_line_past_its_deadline_kills_the_child_and_reports_its_output():
    process = spawn_python(_SILENT)
    # The child is known to be running (and asleep) before the short deadline starts: however slow its start
    # was on a busy machine, the 1 s wait can only end by its deadline.
    assert wait_for_line(process, "started") == "started\n"
    with pytest.raises(AssertionError, match=r"did not print 'READY' within 1 s; output:\n"):
        wait_for_line(process, "READY", timeout=1)
    assert process.returncode is not None  # killed and reaped
    assert process.stdout.closed


def test_wait_for_line_on_a_child_that_exits_without_the_line():
    process = spawn_python(["-c", "print('bye')"])
    with pytest.raises(AssertionError, match="did not print 'READY' before it exited with code 0; output:\nbye"):
        wait_for_line(process, "READY", timeout=300)
    assert process.returncode == 0


def test_finish_past_its_deadline_raises_with_the_output_and_closes_the_pipe():
    process = spawn_python(_SILENT)
    wait_for_line(process, "started")
    with pytest.raises(subprocess.TimeoutExpired) as raised:
        finish(process, timeout=1)
    assert process.returncode is not None
    assert process.stdout.closed
    assert raised.value.output == ""  # the line before was consumed by wait_for_line


def test_end_kills_a_running_child_and_returns_what_it_printed():
    process = spawn_python(_SILENT)
    assert wait_for_line(process, "started") == "started\n"
    end(process)
    assert process.returncode is not None
    assert process.stdout.closed

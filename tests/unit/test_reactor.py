"""install_reactor and run_reactor_in_thread, each in a fresh child process (a process gets one reactor)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPTS = Path(__file__).parent / "scripts"
REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.subprocess


def run_script(name: str) -> subprocess.CompletedProcess[str]:
    # A hang (deferToThread never answering, processEnded never firing) fails here instead of stalling CI.
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name)], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def run_json(name: str) -> dict[str, Any]:
    done = run_script(name)
    assert done.returncode == 0, done.stderr
    assert "Unhandled error" not in done.stderr, done.stderr
    return json.loads(done.stdout)


def test_install_reactor_on_a_loop_it_does_not_own() -> None:
    out = run_json("shared_loop.py")
    assert out["reactor"] == "SharedLoopReactor"
    assert out["idempotent"] and out["running"]
    assert out["deferToThread_ran_in_other_thread"], "the reactor's thread pool did not start"
    assert out["child_exit_code"] == 3, "spawnProcess child was not reaped"
    assert out["task_cancel_reached_deferred"] and out["deferred_cancel_reached_task"]
    assert out["loop_alive_after_stop"] and not out["reactor_running_after_stop"]


def test_bridge_with_the_reactor_in_its_own_thread() -> None:
    out = run_json("thread_mode.py")
    assert out["reactor"] == "EPollReactor"
    assert out["async_api"] == ["twisted-reactor", "r-7"]  # ran in the reactor thread, with our contextvars
    assert out["as_deferred"] == ["MainThread", "r-7"]  # the coroutine ran on the loop
    assert "raise_deep" in out["error_frames"]
    assert out["sync_raise"] == "raised in twisted-reactor"
    assert out["canceller_thread"] == "twisted-reactor"
    assert out["task_cancelled_in"] == ["MainThread"]
    assert out["child_exit_code"] == 4
    assert out["reactor_thread_stopped"]


def test_a_reactor_installed_too_early_gets_an_error_that_says_how_to_fix_it() -> None:
    done = run_script("wrong_reactor.py")
    assert done.returncode == 0, done.stderr
    assert "EPollReactor" in done.stdout
    assert "before bridge.install_reactor()" in done.stdout
    assert "twisted.internet import reactor" in done.stdout

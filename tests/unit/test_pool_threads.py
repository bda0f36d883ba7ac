"""pool.defer from a reactor running in its own thread: the thread-backed path, in a fresh child process."""

from __future__ import annotations

import pytest

from tests.unit.test_reactor import run_json

pytestmark = pytest.mark.subprocess


def test_defer_from_a_reactor_thread_answers_in_that_thread_and_cancels_across() -> None:
    out = run_json("pool_thread_mode.py")
    assert out["defer"] == [21, "twisted-reactor", ["twisted-reactor"]]  # on_start on the caller's reactor too
    assert out["failure"] == ["LookupError", "nope"]
    assert out["cancelled"] and out["worker_killed"]
    assert out["after"] == 49
    assert out["stats"] == {"completed": 2, "failed": 1, "cancelled": 1}

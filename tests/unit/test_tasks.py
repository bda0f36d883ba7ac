"""The background task manager and the task lease, through their public API.

Schedules are checked two ways. Exactly, on a virtual clock the manager takes
as ``clock``/``sleep``: each sleep moves time ahead at once, so the grid, the
skipped slots and the backoff sequence are compared with ==, however loaded the
machine. And on the real loop clock, with assertions that hold under any load:
runs never overlap, and every start is accounted for by the grid.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge import SerializationError, SharedPool
from bridge.errors import LeaseBusy
from bridge.tasks import TaskLease, TaskManager, TaskRegistry, TaskSpec, task, tasks
from bridge.testing import asyncio_test
from tests.conftest import WAIT, in_daemon_thread, until
from tests.unit import taskfns

REPO = Path(__file__).resolve().parents[2]
STATE_KEYS = {"owner", "running", "every", "cpu_bound", "runs", "failures", "missed", "last_run", "last_error",
              "next_run"}


class VirtualClock:
    """Virtual time: ``sleep(d)`` moves the clock ``d`` ahead at once and yields one loop turn.

    Exact for the single task that uses it, which is all these tests need."""

    def __init__(self, now: float = 1000.0, early: float = 0.0) -> None:
        self.start = self.now = now
        self.early = early  # how much sooner than asked each sleep ends, as a coarse timer may

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.now += delay - self.early
        await asyncio.sleep(0)

    def elapsed(self) -> float:
        return self.now - self.start


async def wait_for(event: asyncio.Event, what: str) -> None:
    try:
        await asyncio.wait_for(event.wait(), WAIT)
    except TimeoutError:
        raise AssertionError(f"timed out after {WAIT}s waiting for {what}") from None


def stubborn(entered: asyncio.Event, release: asyncio.Event) -> Callable[[], Coroutine[Any, Any, None]]:
    """A task body that ignores cancellation until the test sets ``release``, then returns."""

    async def body() -> None:
        entered.set()
        while True:
            try:
                await release.wait()
                return
            except asyncio.CancelledError:
                continue  # the bug under test: swallowing cancellation

    return body


# ---------------------------------------------------------------------- declaring


def test_the_decorator_registers_with_and_without_arguments() -> None:
    registry = TaskRegistry()

    @registry.task
    async def plain() -> None: ...

    @registry.task(every=5, owner="legacy", shutdown_timeout=2.5, startup=False)
    async def periodic() -> None: ...

    @registry.task("renamed")
    async def original() -> None: ...

    assert [spec.name for spec in registry] == ["plain", "periodic", "renamed"]
    assert registry["plain"] == TaskSpec("plain", plain)
    assert registry["periodic"] == TaskSpec("periodic", periodic, False, False, 2.5, 5, "legacy")
    assert plain.__name__ == "plain"  # returned unchanged: a cpu_bound function stays picklable by name
    assert "renamed" in registry and "original" not in registry and len(registry) == 3
    with pytest.raises(KeyError, match="no task named 'missing'"):
        registry["missing"]


def test_the_default_registry_backs_the_task_shortcut() -> None:
    assert isinstance(tasks, TaskRegistry)
    assert task == tasks.task


def test_bad_declarations_fail_when_declared() -> None:
    registry = TaskRegistry()

    async def job() -> None: ...

    registry.task(job)
    with pytest.raises(ValueError, match="already registered"):
        registry.task(job)
    with pytest.raises(ValueError, match="every must be a positive"):
        registry.task("zero", every=0)(job)
    with pytest.raises(ValueError, match="every must be a positive"):
        registry.task("negative", every=-1)(job)
    with pytest.raises(ValueError, match="shutdown_timeout"):
        registry.task("t", shutdown_timeout=-0.1)(job)
    with pytest.raises(ValueError, match="shutdown_timeout"):
        registry.task("t", shutdown_timeout=float("inf"))(job)
    with pytest.raises(TypeError, match="async def"):
        registry.task("blocking")(taskfns.append_pid)
    with pytest.raises(TypeError, match="not an async def"):
        registry.task("cpu", cpu_bound=True)(job)
    with pytest.raises(ValueError, match="pass the task's name"):
        registry.task(cpu_bound=True)(functools.partial(taskfns.append_pid, "x"))
    registry.task("by_partial", cpu_bound=True)(functools.partial(taskfns.append_pid, "x"))
    assert [spec.name for spec in registry] == ["job", "by_partial"]


def test_manager_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="stack"):
        TaskManager(TaskRegistry(), stack="")
    with pytest.raises(ValueError, match="backoff_initial"):
        TaskManager(TaskRegistry(), stack="modern", backoff_initial=0)
    with pytest.raises(ValueError, match="backoff_max"):
        TaskManager(TaskRegistry(), stack="modern", backoff_initial=2, backoff_max=1)


# ---------------------------------------------------------------------- periodic schedule


@pytest.mark.parametrize("early", [0.0, 1e-6])
@asyncio_test
async def test_a_periodic_task_keeps_to_its_grid_and_skips_the_slots_an_overrun_missed(early: float) -> None:
    clock = VirtualClock(early=early)
    registry = TaskRegistry()
    starts: list[float] = []
    # The third run overruns into the fifth slot, the fifth takes no time at all; the others take half a period.
    costs = {3: 0.625, 5: 0.0}
    enough = asyncio.Event()

    @registry.task(every=0.25)
    async def tick() -> None:
        starts.append(clock.elapsed())
        clock.now += costs.get(len(starts), 0.125)
        if len(starts) == 8:
            enough.set()

    manager = TaskManager(registry, stack="modern", clock=clock, sleep=clock.sleep)
    await manager.start()
    await wait_for(enough, "eight runs")
    await manager.stop()
    # Run 3 starts at 0.5 and ends at 1.125: slots 0.75 and 1.0 are skipped, not run late.
    assert starts[:8] == pytest.approx([0.0, 0.25, 0.5, 1.25, 1.5, 1.75, 2.0, 2.25], abs=1e-5)
    assert manager.state()["tick"]["missed"] == 2  # a timer firing a hair early still runs its own slot


@asyncio_test
async def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_success(caplog: pytest.LogCaptureFixture) -> None:
    clock = VirtualClock()
    registry = TaskRegistry()
    attempts: list[float] = []
    outcomes = itertools.chain(["fail"] * 5, ["ok"], ["fail"] * 2, itertools.repeat("ok"))
    enough = asyncio.Event()

    @registry.task(every=100)
    async def flaky() -> None:
        attempts.append(clock.elapsed())
        if len(attempts) == 10:
            enough.set()
        if next(outcomes) == "fail":
            raise ConnectionError(f"inbox unreachable (attempt {len(attempts)})")

    manager = TaskManager(registry, stack="modern", backoff_initial=1, backoff_max=8, clock=clock, sleep=clock.sleep)
    await manager.start()
    await wait_for(enough, "ten attempts")
    await manager.stop()
    # Five failures wait 1, 2, 4, 8 and 8 (not 16: the cap); the success at 23 goes back to the
    # grid (slot 1, at 100); the next failures back off from 1 again.
    assert attempts[:10] == [0, 1, 3, 7, 15, 23, 100, 101, 103, 200]
    state = manager.state()["flaky"]
    assert (state["runs"], state["failures"], state["missed"]) == (10, 7, 0)
    assert state["last_error"] == "ConnectionError: inbox unreachable (attempt 8)"
    failures = [r for r in caplog.records if r.name == "bridge.tasks" and r.levelno == logging.ERROR]
    assert len(failures) == 7
    assert all(r.exc_info and isinstance(r.exc_info[1], ConnectionError) for r in failures)
    assert [f.getMessage().rsplit(" ", 1)[1] for f in failures] == ["1s", "2s", "4s", "8s", "8s", "1s", "2s"]
    assert "in flaky" in caplog.text  # the traceback, down to the task's own frame


@asyncio_test
async def test_a_long_running_task_backs_off_until_it_has_run_for_backoff_max() -> None:
    clock = VirtualClock()
    registry = TaskRegistry()
    attempts: list[float] = []
    done = asyncio.Event()

    @registry.task
    async def consumer() -> None:
        attempts.append(clock.elapsed())
        if len(attempts) == 4:
            clock.now += 10  # a healthy stretch, longer than backoff_max, before failing again
        if len(attempts) == 6:
            done.set()
            return
        raise ConnectionResetError("broker went away")

    manager = TaskManager(registry, stack="modern", backoff_initial=1, backoff_max=8, clock=clock, sleep=clock.sleep)
    await manager.start()
    await wait_for(done, "the sixth start")
    await until(lambda: not manager.state()["consumer"]["running"], "the task to finish")
    # waits 1, 2, 4; then the fourth start ran 10s, so its failure waits 1 again, then 2.
    assert attempts == [0, 1, 3, 7, 18, 20]
    assert manager.state()["consumer"]["failures"] == 5
    await manager.stop()


@asyncio_test
async def test_a_periodic_task_runs_on_the_loop_clock_without_overlap_or_drift() -> None:
    every, cost = 0.05, 0.025
    registry = TaskRegistry()
    starts: list[tuple[float, int]] = []  # (loop time, slots missed so far)
    ends: list[float] = []
    enough = asyncio.Event()
    loop = asyncio.get_running_loop()
    manager: TaskManager

    @registry.task(every=every)
    async def tick() -> None:
        starts.append((loop.time(), manager.state()["tick"]["missed"]))
        await asyncio.sleep(cost)  # the work
        ends.append(loop.time())
        if len(ends) == 20:
            enough.set()

    manager = TaskManager(registry, stack="modern")
    await manager.start()
    await wait_for(enough, "twenty runs")
    assert await manager.stop() == []
    starts, ends = starts[:20], ends[:20]
    for (began, _), (previous_end) in zip(starts[1:], ends, strict=False):
        assert began >= previous_end  # run i+1 never overlaps run i
    # Whatever the load, the runs plus the slots skipped (a run started over 25ms late) span the
    # window on the loop clock, each start in a slot of its own.
    (first, missed_first), (last, missed_last) = starts[0], starts[-1]
    slots, missed = (last - first) / every, missed_last - missed_first
    assert abs(slots - (len(starts) - 1 + missed)) < 1.5, (slots, missed)
    # And few are skipped: a schedule that drifted by the run's duration each period would skip
    # one slot in three (about 9 here); the grid skips one only when a run starts over 25ms late.
    assert missed <= 4, (slots, missed)


@asyncio_test
async def test_run_now_runs_at_once_and_leaves_the_grid_alone() -> None:
    registry = TaskRegistry()
    outcomes = itertools.chain(["ok", "ok", "fail"], itertools.repeat("ok"))

    @registry.task(every=3600)
    async def hourly() -> None:
        if next(outcomes) == "fail":
            raise RuntimeError("no disk")

    @registry.task
    async def forever() -> None:
        await asyncio.Event().wait()

    manager = TaskManager(registry, stack="modern")
    await manager.start()
    await until(lambda: manager.state()["hourly"]["next_run"] is not None, "the first run")
    assert await manager.run_now("hourly") is True
    await until(lambda: manager.state()["hourly"]["next_run"] is not None, "the next slot")
    next_run = datetime.fromisoformat(manager.state()["hourly"]["next_run"])
    assert 3500 < (next_run - datetime.now(UTC)).total_seconds() <= 3600  # still the first run's slot 1
    assert await manager.run_now("hourly") is False
    state = manager.state()["hourly"]
    assert (state["runs"], state["failures"]) == (3, 1)
    with pytest.raises(ValueError, match="long-running"):
        await manager.run_now("forever")
    await manager.stop()
    with pytest.raises(RuntimeError, match="not running"):
        await manager.run_now("hourly")


@asyncio_test
async def test_run_now_during_a_run_waits_for_the_next_run_never_overlapping() -> None:
    registry = TaskRegistry()
    entered, gate = asyncio.Event(), asyncio.Event()
    active, peak = [0], [0]

    @registry.task(every=3600)
    async def report() -> None:
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        try:
            if not gate.is_set():  # the first run holds until the test opens the gate, then fails
                entered.set()
                await gate.wait()
                raise RuntimeError("first run")
        finally:
            active[0] -= 1

    async with TaskManager(registry, stack="modern") as manager:
        await wait_for(entered, "the first run")
        requested = asyncio.ensure_future(manager.run_now("report"))
        await asyncio.sleep(0)  # let run_now file its request while the first run is in progress
        assert not requested.done()
        gate.set()
        assert await asyncio.wait_for(requested, WAIT) is True  # the second run's outcome, not the first's
        assert manager.state()["report"]["runs"] == 2 and peak[0] == 1


# ---------------------------------------------------------------------- failures


@asyncio_test
async def test_a_failing_periodic_task_is_logged_retried_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    registry = TaskRegistry()
    loop = asyncio.get_running_loop()
    attempts: list[float] = []
    recovered = asyncio.Event()

    @registry.task(every=0.05)
    async def sync_inbox() -> None:
        attempts.append(loop.time())
        if len(attempts) <= 4:
            raise OSError(f"inbox missing ({len(attempts)})")
        if len(attempts) == 7:
            recovered.set()

    manager = TaskManager(registry, stack="modern", backoff_initial=0.02, backoff_max=0.05)
    await manager.start()
    await wait_for(recovered, "runs after the failures")
    await manager.stop()
    state = manager.state()["sync_inbox"]
    assert state["failures"] == 4 and state["runs"] >= 7
    assert state["last_error"] == "OSError: inbox missing (4)"
    gaps = [b - a for a, b in zip(attempts[:4], attempts[1:5], strict=True)]
    for gap, backoff in zip(gaps, [0.02, 0.04, 0.05, 0.05], strict=True):
        assert gap >= backoff - 0.001, gaps  # never sooner than the backoff; later only under load
    logged = [r for r in caplog.records if r.name == "bridge.tasks" and r.levelno == logging.ERROR]
    assert len(logged) == 4 and all(r.exc_info for r in logged)
    assert "OSError: inbox missing (1)" in caplog.text and "in sync_inbox" in caplog.text


@asyncio_test
async def test_a_long_running_task_that_raises_is_restarted_and_one_that_returns_is_finished() -> None:
    registry = TaskRegistry()
    serving, finished = asyncio.Event(), asyncio.Event()
    calls = {"watcher": 0, "migration": 0}

    @registry.task
    async def watcher() -> None:
        calls["watcher"] += 1
        if calls["watcher"] <= 2:
            raise RuntimeError("socket closed")
        serving.set()
        await asyncio.Event().wait()

    @registry.task
    async def migration() -> None:
        calls["migration"] += 1
        finished.set()

    manager = TaskManager(registry, stack="modern", backoff_initial=0.01, backoff_max=0.02)
    await manager.start()
    await wait_for(serving, "the third start")
    await wait_for(finished, "the one-shot task")
    await until(lambda: not manager.state()["migration"]["running"], "the one-shot task to end")
    state = manager.state()
    assert (state["watcher"]["runs"], state["watcher"]["failures"], state["watcher"]["running"]) == (3, 2, True)
    assert state["watcher"]["last_error"] == "RuntimeError: socket closed"
    assert (state["migration"]["runs"], state["migration"]["failures"]) == (1, 0)
    assert await manager.stop() == []
    assert calls == {"watcher": 3, "migration": 1}
    assert not manager.state()["watcher"]["running"]


# ---------------------------------------------------------------------- shutdown


@asyncio_test
async def test_stop_gives_up_on_a_task_that_ignores_cancellation_and_names_it() -> None:
    registry = TaskRegistry()
    entered, release, polite_entered = asyncio.Event(), asyncio.Event(), asyncio.Event()
    registry.task("stubborn", every=0.05, shutdown_timeout=0.3)(stubborn(entered, release))

    @registry.task(shutdown_timeout=30)
    async def polite() -> None:
        polite_entered.set()
        await asyncio.Event().wait()

    manager = TaskManager(registry, stack="modern")
    await manager.start()
    await wait_for(entered, "the stubborn task")
    await wait_for(polite_entered, "the polite task")
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await asyncio.wait_for(manager.stop(), WAIT) == ["stubborn"]
    elapsed = loop.time() - began
    assert 0.25 <= elapsed < 0.3 + 5
    state = manager.state()
    assert state["stubborn"]["running"] and not state["polite"]["running"]
    release.set()  # it swallowed the cancellation; when it returns it is not run again
    await until(lambda: not manager.state()["stubborn"]["running"], "the stubborn task to end")
    assert manager.state()["stubborn"]["runs"] == 1


@asyncio_test
async def test_stop_waits_for_all_tasks_at_once() -> None:
    registry = TaskRegistry()
    release = asyncio.Event()
    entered = [asyncio.Event() for _ in range(4)]
    for i, event in enumerate(entered):
        registry.task(f"stuck{i}", shutdown_timeout=0.6)(stubborn(event, release))
    manager = TaskManager(registry, stack="modern")
    await manager.start()
    for event in entered:
        await wait_for(event, "every task to start")
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        assert await manager.stop() == ["stuck0", "stuck1", "stuck2", "stuck3"]
        assert loop.time() - began < 2.0  # one timeout (0.6s), not four in a row (2.4s)
    finally:
        release.set()
    await until(lambda: not any(s["running"] for s in manager.state().values()), "the tasks to end")


@asyncio_test
async def test_a_task_never_runs_twice_at_once_even_when_an_old_one_ignores_cancellation() -> None:
    registry = TaskRegistry()
    release = asyncio.Event()
    active, peak, starts = [0], [0], asyncio.Queue[int]()

    @registry.task(shutdown_timeout=0.1)
    async def exporter() -> None:
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        starts.put_nowait(active[0])
        try:
            while not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    continue
        finally:
            active[0] -= 1

    manager = TaskManager(registry, stack="modern")
    await manager.start()
    assert await asyncio.wait_for(starts.get(), WAIT) == 1
    assert await manager.set_owner("exporter", "legacy") == ["exporter"]
    assert await manager.set_owner("exporter", "modern") == []  # the new instance waits for the old one
    assert manager.state()["exporter"]["runs"] == 1
    release.set()
    assert await asyncio.wait_for(starts.get(), WAIT) == 1
    await until(lambda: not manager.state()["exporter"]["running"], "both instances to end")
    assert manager.state()["exporter"]["runs"] == 2
    assert peak[0] == 1
    assert await manager.stop() == []


# ---------------------------------------------------------------------- the pool


@asyncio_test
async def test_a_cpu_bound_task_runs_in_the_pool(pool: SharedPool, tmp_path: Path) -> None:
    registry = TaskRegistry()
    record = tmp_path / "pids"
    registry.task("index", cpu_bound=True, every=0.05)(functools.partial(taskfns.append_pid, str(record)))
    async with TaskManager(registry, stack="modern", pool=pool) as manager:
        await until(lambda: record.exists() and len(record.read_text().split()) >= 3, "three runs in the pool")
    pids = {int(line) for line in record.read_text().split()}
    assert os.getpid() not in pids
    assert manager.state()["index"]["runs"] >= 3 and manager.state()["index"]["cpu_bound"] is True


@asyncio_test
async def test_a_failing_cpu_bound_task_logs_the_worker_traceback(
    pool: SharedPool, caplog: pytest.LogCaptureFixture
) -> None:
    registry = TaskRegistry()
    registry.task("ocr_batch", cpu_bound=True)(functools.partial(taskfns.fail_with, "model missing"))
    async with TaskManager(registry, stack="modern", pool=pool, backoff_initial=0.01, backoff_max=0.02) as manager:
        await until(lambda: manager.state()["ocr_batch"]["failures"] >= 2, "two failures")
    assert manager.state()["ocr_batch"]["last_error"] == "LookupError: model missing"
    assert "RemoteTraceback" in caplog.text and "taskfns.py" in caplog.text  # the worker's own frames


@asyncio_test
async def test_cpu_bound_tasks_are_checked_before_anything_starts() -> None:
    registry = TaskRegistry()

    @registry.task
    async def harmless() -> None: ...

    registry.task("index", cpu_bound=True)(functools.partial(taskfns.append_pid, "x"))
    manager = TaskManager(registry, stack="modern")
    with pytest.raises(ValueError, match="'index' is cpu_bound, but the modern TaskManager has no pool"):
        await manager.start()
    assert not manager.started and not manager.state()["harmless"]["running"]

    unpicklable = TaskRegistry()
    unpicklable.task("lambda", cpu_bound=True)(lambda: None)
    with pytest.raises(SerializationError, match="module-level"):
        await TaskManager(unpicklable, stack="modern", pool=SharedPool(processes=1, cpus=1)).start()


# ---------------------------------------------------------------------- ownership


@asyncio_test
async def test_only_the_owning_stack_runs_a_task_and_ownership_moves_at_runtime() -> None:
    registry = TaskRegistry()
    registry.task("data_sync", every=0.02, owner="legacy")(_noop)
    legacy = TaskManager(registry, stack="legacy")
    modern = TaskManager(registry, stack="modern")
    await legacy.start()
    await modern.start()
    try:
        await until(lambda: legacy.state()["data_sync"]["runs"] >= 2, "legacy runs")
        theirs = modern.state()["data_sync"]
        assert (theirs["owner"], theirs["running"], theirs["runs"]) == ("legacy", False, 0)

        # The cutover: legacy lets go, then modern takes over.
        assert await legacy.set_owner("data_sync", "modern") == []
        assert not legacy.state()["data_sync"]["running"]
        assert legacy.state()["data_sync"]["owner"] == "modern"
        stopped_at = legacy.state()["data_sync"]["runs"]
        assert await modern.set_owner("data_sync", "modern") == []
        await until(lambda: modern.state()["data_sync"]["runs"] >= 3, "modern runs")
        assert legacy.state()["data_sync"]["runs"] == stopped_at

        # And back, with reassign.
        assert await modern.reassign({"data_sync": "legacy"}) == []
        assert await legacy.reassign({"data_sync": "legacy"}) == []
        await until(lambda: legacy.state()["data_sync"]["runs"] >= stopped_at + 2, "legacy runs again")
        assert not modern.state()["data_sync"]["running"]
        with pytest.raises(KeyError, match="nope"):
            await legacy.reassign({"data_sync": "modern", "nope": "modern"})
        assert legacy.owner_of("data_sync") == "legacy"  # nothing changed
    finally:
        await legacy.stop()
        await modern.stop()


@asyncio_test
async def test_the_owners_mapping_overrides_the_declared_owner() -> None:
    registry = TaskRegistry()
    registry.task("reindex", every=0.02)(_noop)  # declared for modern
    async with (
        TaskManager(registry, stack="legacy", owners={"reindex": "legacy"}) as legacy,
        TaskManager(registry, stack="modern", owners={"reindex": "legacy"}) as modern,
    ):
        await until(lambda: legacy.state()["reindex"]["runs"] >= 2, "legacy runs")
        assert modern.state()["reindex"]["runs"] == 0
    with pytest.raises(ValueError, match="not registered: typo"):
        await TaskManager(registry, stack="modern", owners={"typo": "modern"}).start()


@asyncio_test
async def test_startup_false_tasks_wait_for_start_task() -> None:
    registry = TaskRegistry()
    ran = asyncio.Event()

    @registry.task(startup=False)
    async def backfill() -> None:
        ran.set()
        await asyncio.Event().wait()

    registry.task("elsewhere", owner="legacy")(_noop)
    async with TaskManager(registry, stack="modern") as manager:
        assert not manager.state()["backfill"]["running"]
        await manager.start_task("backfill")
        await wait_for(ran, "the started task")
        await manager.start_task("backfill")  # already running: nothing more
        assert manager.state()["backfill"]["runs"] == 1
        with pytest.raises(RuntimeError, match="owned by 'legacy'"):
            await manager.start_task("elsewhere")
        assert await manager.stop_task("backfill") is True
        assert not manager.state()["backfill"]["running"]
    with pytest.raises(RuntimeError, match="not started"):
        await manager.start_task("backfill")


@asyncio_test
async def test_start_twice_is_refused_and_stop_is_idempotent() -> None:
    manager = TaskManager(TaskRegistry(), stack="modern")
    assert await manager.stop() == []
    await manager.start()
    with pytest.raises(RuntimeError, match="already started"):
        await manager.start()
    assert await manager.stop() == []
    assert await manager.stop() == []


async def _noop() -> None:
    pass


# ---------------------------------------------------------------------- state


@asyncio_test
async def test_state_is_json_and_reflects_what_happened() -> None:
    registry = TaskRegistry()
    broke = asyncio.Event()

    @registry.task(every=3600)
    async def hourly() -> None:
        broke.set()
        raise ValueError("bad row 7")

    @registry.task(owner="legacy")
    async def theirs() -> None: ...

    manager = TaskManager(registry, stack="modern", backoff_initial=600, backoff_max=600)
    before = manager.state()
    assert before["hourly"] == {"owner": "modern", "running": False, "every": 3600, "cpu_bound": False, "runs": 0,
                                "failures": 0, "missed": 0, "last_run": None, "last_error": None, "next_run": None}
    await manager.start()
    await wait_for(broke, "the first run")
    await until(lambda: manager.state()["hourly"]["next_run"] is not None, "the retry to be scheduled")
    state = json.loads(json.dumps(manager.state()))
    await manager.stop()
    assert set(state) == {"hourly", "theirs"} and all(set(s) == STATE_KEYS for s in state.values())
    hourly_state = state["hourly"]
    assert (hourly_state["running"], hourly_state["runs"], hourly_state["failures"]) == (True, 1, 1)
    assert hourly_state["last_error"] == "ValueError: bad row 7"
    now = datetime.now(UTC)
    last_run = datetime.fromisoformat(hourly_state["last_run"])
    next_run = datetime.fromisoformat(hourly_state["next_run"])
    assert last_run.utcoffset() is not None and next_run.utcoffset() is not None
    assert abs((now - last_run).total_seconds()) < WAIT
    assert 500 < (next_run - now).total_seconds() <= 600  # the backoff, not the hour
    assert state["theirs"]["owner"] == "legacy" and not state["theirs"]["running"]
    assert not manager.state()["hourly"]["running"] and manager.state()["hourly"]["next_run"] is None


# ---------------------------------------------------------------------- leases


def test_a_lease_excludes_a_second_holder_in_the_same_process(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "nested" / "data_sync.lock"
    first, second = TaskLease(path), TaskLease(str(path))
    assert first.acquire() and first.held and path.exists()
    assert first.acquire()  # held stays held
    assert not second.acquire() and not second.held
    with pytest.raises(LeaseBusy, match=f"held by pid {os.getpid()}") as busy:
        with second:
            pytest.fail("entered a busy lease")
    assert busy.value.holder == os.getpid()
    first.release()
    assert not first.held
    with second:
        assert second.held and not first.acquire()
    assert not second.held
    assert first.acquire()
    first.release()
    first.release()  # a no-op


CHILD = """
import sys
from bridge.tasks import TaskLease
lease = TaskLease(sys.argv[1])
print("held" if lease.acquire() else "busy", flush=True)
sys.stdin.read()
"""


@pytest.mark.subprocess
@pytest.mark.parametrize("ending", ["exit", "kill"])
@asyncio_test
async def test_a_lease_held_by_another_process_is_free_once_it_ends(tmp_path: Path, ending: str) -> None:
    path = tmp_path / "data_sync.lock"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=REPO, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdin is not None
        assert (await in_daemon_thread(child.stdout.readline)).strip() == "held"
        lease = TaskLease(path)
        assert not lease.acquire()
        with pytest.raises(LeaseBusy) as busy:
            lease.__enter__()
        assert busy.value.holder == child.pid
        if ending == "kill":  # a crashed holder leaves no stale lease
            child.kill()
        else:  # exits without releasing: the kernel releases
            child.stdin.close()
        assert await in_daemon_thread(child.wait) == (-signal.SIGKILL if ending == "kill" else 0)
        assert lease.acquire()
        lease.release()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

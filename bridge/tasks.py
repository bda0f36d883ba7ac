"""Background tasks that are never silently dead, stop within a bound, and move between stacks.

Why not Starlette's ``BackgroundTasks`` or a bare ``asyncio.create_task`` in lifespan?

* A task that raises dies silently: its exception waits in a Task nobody awaits,
  and nothing restarts it.
* The loop keeps only weak references to tasks, so one created without a kept
  reference can be garbage-collected mid-flight (see ``asyncio.create_task``).
* Nothing bounds shutdown: one task that swallows ``CancelledError`` hangs
  lifespan exit, and waiting for tasks one by one adds their timeouts up.
* ``while True: await work(); await asyncio.sleep(n)`` drifts by the duration of
  ``work`` every period.

Here tasks are declared once in a :class:`TaskRegistry` and run by one
:class:`TaskManager` per stack::

    @task(every=5, owner="legacy")
    async def data_sync() -> None:
        ...

    manager = TaskManager(tasks, stack="modern", pool=get_pool())
    async with manager:          # lifespan: start(), then stop() on exit
        ...

**Kinds.** With ``every=None`` the function is long-running: it is called once;
returning means it is finished (it is not called again), raising means it is
restarted after a backoff. With ``every=N`` the function is called on a grid:
run *k* is due at ``start + k * N`` on the manager's clock, the first one at
start. Runs never overlap: a run that overruns its slot delays the next, and
the slots it overran are skipped (counted in ``state()["missed"]``) rather than
run back to back, so the schedule never drifts and never bunches up. With
``cpu_bound=True`` the function is a plain picklable function that runs in the
shared pool (``await pool.run(fn)``); otherwise it is an ``async def``.

**Failures.** A run that raises is logged with its traceback (ERROR on the
``cutover.tasks`` logger; a pool call's worker traceback is its ``__cause__``),
counted, kept as ``last_error``, and retried after ``backoff_initial`` seconds,
doubling per failure in a row up to ``backoff_max``. A periodic task's backoff
resets after a successful run, and the task then goes back to its grid; a
long-running task's resets when it fails after having run for at least
``backoff_max`` seconds, since it never "succeeds" while it works.

**Shutdown.** :meth:`TaskManager.stop` cancels every task and waits for each at
most its own ``shutdown_timeout``, all at once, so shutdown takes as long as the
slowest timeout, not their sum. A task still running past its timeout is named
in the result and logged, and left behind: nothing can stop a coroutine that
ignores cancellation. It is never restarted while it lives.

**Ownership.** During a cutover a task is run by exactly one stack: a manager
runs a task only if ``owners.get(name, spec.owner) == stack``.
:meth:`TaskManager.set_owner` and :meth:`TaskManager.reassign` move tasks at
runtime. Each manager keeps its own view, so a plan tells every manager; if a
misconfiguration ever lets two runners share one resource (two processes, or a
legacy ``LoopingCall`` and a modern task), a :class:`TaskLease` around the work
keeps it to one at a time.

Everything here runs on the event loop's thread; :class:`TaskLease` is the
exception and works in any thread or process.
"""

from __future__ import annotations

import asyncio
import fcntl
import inspect
import logging
import math
import os
import pickle
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .errors import LeaseBusy, SerializationError
from .ownership import TaskBoard, get_task_board

if TYPE_CHECKING:
    from .pool import SharedPool

__all__ = ["TaskLease", "TaskManager", "TaskRegistry", "TaskSpec", "task", "tasks"]

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)

# Slack, in slots, when placing a time on the periodic grid: float sums such as
# origin + k * every land a few ulps either side of a slot boundary.
_EPS = 1e-9


def _is_seconds(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------- declaring


@dataclass(frozen=True)
class TaskSpec:
    """One background task, as declared. Validated on creation, so a bad
    declaration fails at import time rather than when the service starts."""

    name: str
    fn: Callable[[], Any]
    cpu_bound: bool = False
    startup: bool = True
    shutdown_timeout: float = 10.0
    every: float | None = None
    owner: str = "modern"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a task name must be a non-empty string, got {self.name!r}")
        if not callable(self.fn):
            raise TypeError(f"task {self.name!r}: fn must be callable, got {self.fn!r}")
        if self.every is not None and not (_is_seconds(self.every) and self.every > 0):
            raise ValueError(f"task {self.name!r}: every must be a positive number of seconds, got {self.every!r}")
        if not (_is_seconds(self.shutdown_timeout) and self.shutdown_timeout >= 0):
            raise ValueError(
                f"task {self.name!r}: shutdown_timeout must be a finite number of seconds >= 0, "
                f"got {self.shutdown_timeout!r}"
            )
        if not isinstance(self.owner, str) or not self.owner:
            raise ValueError(f"task {self.name!r}: owner must be a non-empty string, got {self.owner!r}")
        is_async = inspect.iscoroutinefunction(self.fn)
        if self.cpu_bound and is_async:
            raise TypeError(
                f"task {self.name!r} is cpu_bound, so it runs in a worker process: "
                "fn must be a plain module-level function, not an async def"
            )
        if not self.cpu_bound and not is_async:
            raise TypeError(
                f"task {self.name!r}: fn must be an async def function (or a functools.partial of one); "
                "a blocking function would stall the event loop. Pass cpu_bound=True to run it in the pool."
            )


class TaskRegistry:
    """The tasks a service declares, by name. Both stacks' managers read one registry."""

    def __init__(self) -> None:
        self._specs: dict[str, TaskSpec] = {}

    @overload
    def task(self, name: F, /) -> F: ...

    @overload
    def task(
        self,
        name: str | None = None,
        *,
        cpu_bound: bool = False,
        startup: bool = True,
        shutdown_timeout: float = 10.0,
        every: float | None = None,
        owner: str = "modern",
    ) -> Callable[[F], F]: ...

    def task(
        self,
        name: Any = None,
        *,
        cpu_bound: bool = False,
        startup: bool = True,
        shutdown_timeout: float = 10.0,
        every: float | None = None,
        owner: str = "modern",
    ) -> Any:
        """Register a function as a task: ``@registry.task`` or ``@registry.task(every=5)``.

        The name defaults to the function's ``__name__`` (a ``functools.partial``
        has none: pass ``name``). The function is returned unchanged, so a
        cpu_bound one stays importable, and so picklable, under its own name.
        Raises ValueError for a name already registered.
        """
        if callable(name):
            return self.task()(name)

        def register(fn: F) -> F:
            task_name = name if name is not None else getattr(fn, "__name__", None)
            if task_name is None:
                raise ValueError(f"{fn!r} has no __name__ (a functools.partial?): pass the task's name")
            self.add(TaskSpec(task_name, fn, cpu_bound, startup, shutdown_timeout, every, owner))
            return fn

        return register

    def add(self, spec: TaskSpec) -> TaskSpec:
        """Register a spec built by hand; ValueError if its name is taken."""
        if spec.name in self._specs:
            raise ValueError(f"a task named {spec.name!r} is already registered")
        self._specs[spec.name] = spec
        return spec

    def __getitem__(self, name: str) -> TaskSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise KeyError(f"no task named {name!r} is registered") from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[TaskSpec]:
        """Specs in registration order."""
        return iter(list(self._specs.values()))

    def __len__(self) -> int:
        return len(self._specs)


tasks = TaskRegistry()
"""The process's default registry."""
task = tasks.task


# ---------------------------------------------------------------------- running


@dataclass(eq=False)
class _Instance:
    """One start of a task: its supervising asyncio Task and its own stop flag.

    The flag is per instance because an instance that ignored cancellation can
    outlive its stop, and must still see that it was told to stop after a new
    instance has been started."""

    task: asyncio.Task[None] | None = None
    stopping: bool = False
    waker: asyncio.Future[None] | None = None
    requests: list[tuple[int, asyncio.Future[bool]]] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()


@dataclass(eq=False)
class _Runner:
    """A task's record in one manager; its counts survive stops and restarts."""

    spec: TaskSpec
    instances: list[_Instance] = field(default_factory=list)
    runs: int = 0
    failures: int = 0
    missed: int = 0
    last_run: str | None = None
    last_error: str | None = None
    next_at: float | None = None  # on the manager's clock, while waiting to run

    def live(self) -> list[_Instance]:
        return [i for i in self.instances if i.alive]

    def current(self) -> _Instance | None:
        """The live instance that has not been told to stop."""
        return next((i for i in self.instances if i.alive and not i.stopping), None)


class TaskManager:
    """Runs the tasks of ``registry`` that ``stack`` owns, and stops them within a bound.

    ``owners`` maps task names to stacks, overriding each spec's ``owner``.
    ``pool`` runs cpu_bound tasks. ``backoff_initial`` and ``backoff_max`` bound
    the wait before retrying a failed task (see the module docstring).

    ``clock`` and ``sleep`` decide when to run (defaults: the running loop's
    ``time()`` and :func:`asyncio.sleep`); ``sleep(seconds)`` must wait that long
    as ``clock`` measures it. Tests pass a virtual clock to check schedules
    exactly. Shutdown timeouts are always real loop time: they bound real waits.
    """

    def __init__(
        self,
        registry: TaskRegistry,
        *,
        stack: str,
        owners: Mapping[str, str] | None = None,
        pool: SharedPool | None = None,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
        board: TaskBoard | None = None,
    ) -> None:
        if not isinstance(stack, str) or not stack:
            raise ValueError(f"stack must be a non-empty string, got {stack!r}")
        if not (_is_seconds(backoff_initial) and backoff_initial > 0):
            raise ValueError(f"backoff_initial must be a positive number of seconds, got {backoff_initial!r}")
        if not (_is_seconds(backoff_max) and backoff_max >= backoff_initial):
            raise ValueError(f"backoff_max must be a finite number >= backoff_initial, got {backoff_max!r}")
        self.registry = registry
        self.stack = stack
        self.pool = pool
        self.backoff_initial = float(backoff_initial)
        self.backoff_max = float(backoff_max)
        self._check_owners(owners or {}, known_only=False)
        self._owners: dict[str, str] = dict(owners or {})  # a copy: each manager has its own view
        self._clock = clock
        self._sleep = sleep or asyncio.sleep
        self._runners: dict[str, _Runner] = {}
        self._started = False
        self._given_board = board
        self._board: TaskBoard = board if board is not None else get_task_board()

    # ------------------------------------------------------------------ ownership

    def owner_of(self, name: str) -> str:
        """The stack that runs ``name``, as this manager sees it."""
        return self._owners.get(name, self.registry[name].owner)

    def owns(self, name: str) -> bool:
        return self.owner_of(name) == self.stack

    def task_names(self) -> list[str]:
        """The registered tasks, for the :class:`~bridge.ownership.TaskBoard`."""
        return [spec.name for spec in self.registry]

    async def set_owner(self, name: str, stack: str) -> list[str]:
        """Move one task to ``stack``; see :meth:`reassign`."""
        return await self.reassign({name: stack})

    async def reassign(self, owners: Mapping[str, str]) -> list[str]:
        """Change the owners of the named tasks (others keep theirs), and act on it.

        If the manager is running, tasks it no longer owns are stopped as by
        :meth:`stop`, and then tasks it now owns that have ``startup=True`` are
        started. Returns the names of tasks that did not stop in time. Raises
        KeyError for an unknown name, before changing anything.
        """
        self._check_owners(owners, known_only=True)
        before = {name: self.owns(name) for name in owners}
        if self._started:
            for name, stack in owners.items():
                if stack == self.stack and not before[name] and self.registry[name].startup:
                    self._check_runnable(self.registry[name])
        self._owners.update(owners)
        if not self._started:
            return []
        leaving = [self._runner(n) for n in owners if before[n] and not self.owns(n)]
        late = await self._stop_all(leaving)
        for name in owners:
            arriving = not before[name] and self.owns(name) and self.registry[name].startup
            if arriving and self._started and self._runner(name).current() is None:
                self._launch(self._runner(name))
        return late

    def _check_owners(self, owners: Mapping[str, str], *, known_only: bool) -> None:
        for name, stack in owners.items():
            if not isinstance(stack, str) or not stack:
                raise ValueError(f"the owner of {name!r} must be a non-empty string, got {stack!r}")
        unknown = sorted(name for name in owners if name not in self.registry)
        if unknown and known_only:
            raise KeyError(f"no task named {', '.join(map(repr, unknown))} is registered")

    # ------------------------------------------------------------------ lifecycle

    @property
    def started(self) -> bool:
        return self._started

    async def start(self) -> None:
        """Start every task this stack owns that has ``startup=True``, each as a
        Task this manager keeps a reference to.

        Raises, before starting anything: ValueError if ``owners`` names an
        unknown task or a cpu_bound task has no pool to run in,
        :class:`SerializationError` if a cpu_bound function cannot be pickled,
        RuntimeError if the manager is already started.
        """
        if self._started:
            raise RuntimeError(f"the {self.stack} TaskManager is already started")
        # The board of the host starting this manager (resolved now, not when it was built), whose plan
        # outranks the app's own defaults for the tasks this registry declares.
        self._board = self._given_board if self._given_board is not None else get_task_board()
        self._owners.update({k: v for k, v in self._board.owners().items() if k in self.registry})
        loop = asyncio.get_running_loop()
        if self._clock is None:
            self._clock = loop.time
        unknown = sorted(name for name in self._owners if name not in self.registry)
        if unknown:
            raise ValueError(f"owners names tasks that are not registered: {', '.join(unknown)}")
        chosen = [spec for spec in self.registry if spec.startup and self.owns(spec.name)]
        for spec in chosen:
            self._check_runnable(spec)
        self._started = True
        self._board.attach(self)
        for spec in chosen:
            self._launch(self._runner(spec.name))

    async def stop(self) -> list[str]:
        """Cancel every task and wait for each at most its ``shutdown_timeout``, concurrently.

        Returns (and logs) the names of tasks still running afterwards, in
        registry order: they ignored cancellation and are abandoned, never
        waited on again. Safe to call more than once, and before :meth:`start`.
        """
        self._started = False
        self._board.detach(self)
        late = await self._stop_all([r for r in self._runners.values() if r.live()])
        if late:
            log.warning("the %s stack stopped, but these tasks ignored cancellation and still run: %s",
                        self.stack, ", ".join(late))
        return late

    async def __aenter__(self) -> TaskManager:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start_task(self, name: str) -> None:
        """Start one owned task now, whatever its ``startup`` (a no-op if it is running).

        The way to run a ``startup=False`` task, or to run again a long-running
        task that finished. RuntimeError if the manager is not started or does
        not own the task.
        """
        runner = self._runner(name)
        if not self._started:
            raise RuntimeError(f"the {self.stack} TaskManager is not started")
        if not self.owns(name):
            raise RuntimeError(f"task {name!r} is owned by {self.owner_of(name)!r}, not {self.stack!r}")
        self._check_runnable(runner.spec)
        if runner.current() is None:
            self._launch(runner)

    async def stop_task(self, name: str) -> bool:
        """Stop one task as :meth:`stop` would; False if it ignored cancellation past its timeout."""
        return not await self._stop_all([self._runner(name)])

    async def run_now(self, name: str) -> bool:
        """Run a periodic task now instead of at its next slot, and wait for that run to end.

        Its grid is unchanged, and a run in progress is never overlapped: the new
        run starts once it ends. A pending backoff is skipped. Returns whether the
        run succeeded (a failure is also logged and counted as usual). ValueError
        for a long-running task; RuntimeError if the task is not running here or
        stops before the run.
        """
        runner = self._runner(name)
        if runner.spec.every is None:
            raise ValueError(f"task {name!r} is long-running; run_now applies to periodic tasks")
        instance = runner.current()
        if instance is None:
            raise RuntimeError(f"task {name!r} is not running in the {self.stack} TaskManager")
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        instance.requests.append((runner.runs + 1, done))
        if instance.waker is not None and not instance.waker.done():
            instance.waker.set_result(None)
        return await done

    # ------------------------------------------------------------------ status

    def state(self) -> dict[str, dict[str, Any]]:
        """Every registered task, owned here or not, as JSON-ready values for ``/status``.

        ``running`` is true while an instance of the task is alive in this
        manager, including one that ignored cancellation. ``runs`` counts calls
        started, ``failures`` those that raised; ``last_run`` is when the latest
        call started and ``next_run`` when the next is due (None while a call
        runs or nothing is scheduled), both ISO-8601 UTC. ``last_error`` is the
        latest failure, kept after later successes. ``missed`` counts grid slots
        in which no run started.
        """
        wall = datetime.now(UTC)
        now = self._clock() if self._clock is not None else None
        report: dict[str, dict[str, Any]] = {}
        for spec in self.registry:
            runner = self._runners.get(spec.name) or _Runner(spec)
            next_run = None
            if runner.next_at is not None and now is not None:
                next_run = _iso(wall + timedelta(seconds=max(0.0, runner.next_at - now)))
            report[spec.name] = {
                "owner": self.owner_of(spec.name),
                "running": bool(runner.live()),
                "every": spec.every,
                "cpu_bound": spec.cpu_bound,
                "runs": runner.runs,
                "failures": runner.failures,
                "missed": runner.missed,
                "last_run": runner.last_run,
                "last_error": runner.last_error,
                "next_run": next_run,
            }
        return report

    # ------------------------------------------------------------------ internals

    def _runner(self, name: str) -> _Runner:
        spec = self.registry[name]
        runner = self._runners.get(name)
        if runner is None or runner.spec is not spec:
            runner = self._runners[name] = _Runner(spec)
        return runner

    def _check_runnable(self, spec: TaskSpec) -> None:
        if not spec.cpu_bound:
            return
        if self.pool is None:
            raise ValueError(f"task {spec.name!r} is cpu_bound, but the {self.stack} TaskManager has no pool")
        try:
            pickle.dumps(spec.fn)
        except Exception as exc:
            raise SerializationError(
                f"cpu_bound task {spec.name!r} cannot be sent to a worker ({exc}): use a module-level "
                "function, or a functools.partial of one with picklable arguments"
            ) from exc

    def _launch(self, runner: _Runner) -> None:
        previous = [i.task for i in runner.live() if i.task is not None]
        instance = _Instance()
        runner.instances.append(instance)
        instance.task = asyncio.create_task(
            self._supervise(runner, instance, previous), name=f"cutover-task:{runner.spec.name}"
        )
        instance.task.add_done_callback(lambda done: self._reap(runner, instance, done))
        log.info("task %r started in the %s stack", runner.spec.name, self.stack)

    def _reap(self, runner: _Runner, instance: _Instance, done: asyncio.Task[None]) -> None:
        if instance in runner.instances:
            runner.instances.remove(instance)
        if done.cancelled():
            if not instance.stopping:  # cancelled by someone else (loop shutdown?): say so
                log.warning("task %r was cancelled from outside its TaskManager and no longer runs",
                            runner.spec.name)
        elif done.exception() is not None:
            # Only a BaseException (SystemExit, KeyboardInterrupt) or a bug here gets this far.
            log.critical("the supervisor of task %r died", runner.spec.name, exc_info=done.exception())

    async def _stop_all(self, runners: list[_Runner]) -> list[str]:
        stopped = await asyncio.gather(*(self._stop_one(r) for r in runners))
        late = {r.spec.name for r, ok in zip(runners, stopped, strict=True) if not ok}
        return [spec.name for spec in self.registry if spec.name in late]

    async def _stop_one(self, runner: _Runner) -> bool:
        live = runner.live()
        if not live:
            return True
        for instance in live:
            instance.stopping = True
            assert instance.task is not None
            instance.task.cancel()
        timeout = runner.spec.shutdown_timeout
        _, pending = await asyncio.wait([i.task for i in live if i.task is not None], timeout=timeout)
        if pending:
            log.warning("task %r ignored cancellation for %ss; it still runs, unsupervised",
                        runner.spec.name, timeout)
        return not pending

    def _now(self) -> float:
        assert self._clock is not None
        return self._clock()

    def _backoff(self, streak: int) -> float:
        return min(self.backoff_initial * 2.0 ** min(streak - 1, 64), self.backoff_max)

    async def _supervise(self, runner: _Runner, instance: _Instance, previous: list[asyncio.Task[None]]) -> None:
        try:
            if previous:  # an earlier instance ignored cancellation: never run two at once
                await asyncio.wait(previous)
            if runner.spec.every is None:
                await self._run_long(runner, instance)
            else:
                await self._run_periodic(runner, instance, runner.spec.every)
        finally:
            runner.next_at = None
            for _, done in instance.requests:
                if not done.done():
                    done.set_exception(RuntimeError(f"task {runner.spec.name!r} stopped before it ran"))

    async def _run_long(self, runner: _Runner, instance: _Instance) -> None:
        streak = 0
        while True:
            began = self._now()
            error = await self._run_once(runner, instance)
            if error is None:
                log.info("task %r finished", runner.spec.name)
                return
            if self._now() - began >= self.backoff_max:
                streak = 0  # it worked for a while before failing: start the backoff over
            streak += 1
            delay = self._backoff(streak)
            self._log_failure(runner, error, streak, delay)
            await self._wait_until(runner, instance, self._now() + delay)

    async def _run_periodic(self, runner: _Runner, instance: _Instance, every: float) -> None:
        origin = self._now()
        due = origin
        scheduled: int | None = 0  # the grid slot ``due`` stands for; None for a retry off the grid
        last = -1  # the latest grid slot in which a run started
        streak = 0
        while True:
            woken = await self._wait_until(runner, instance, due)
            began = self._now()
            slot = math.floor((began - origin) / every + _EPS)
            if scheduled is not None and not woken:
                slot = max(slot, scheduled)  # a timer may fire a hair early; the run is still this slot's
            runner.missed += max(0, slot - last - 1)
            last = max(last, slot)
            error = await self._run_once(runner, instance)
            self._answer_requests(runner, instance, error is None)
            finished = self._now()
            if error is None:
                streak = 0
                scheduled = max(last + 1, math.ceil((finished - origin) / every - _EPS))
                due = origin + scheduled * every
            else:
                streak += 1
                delay = self._backoff(streak)
                self._log_failure(runner, error, streak, delay)
                scheduled, due = None, finished + delay

    async def _run_once(self, runner: _Runner, instance: _Instance) -> BaseException | None:
        """One call of the task's function: None if it returned, else what it raised.

        Raises CancelledError when the instance is being stopped, even if the
        function swallowed the cancellation and returned."""
        spec = runner.spec
        runner.runs += 1
        runner.last_run = _iso(datetime.now(UTC))
        error: BaseException | None = None
        try:
            if spec.cpu_bound:
                assert self.pool is not None
                await self.pool.run(spec.fn)
            else:
                await spec.fn()
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if instance.stopping or (task is not None and task.cancelling()):
                raise
            error = exc  # a CancelledError from inside the function, not ours: a failure like any other
        except Exception as exc:
            error = exc
        if instance.stopping:
            raise asyncio.CancelledError
        if error is not None:
            runner.failures += 1
            runner.last_error = f"{type(error).__name__}: {error}"
        return error

    def _log_failure(self, runner: _Runner, error: BaseException, streak: int, delay: float) -> None:
        log.exception("task %r failed (%d in a row); next attempt in %.3gs",
                      runner.spec.name, streak, delay, exc_info=error)

    def _answer_requests(self, runner: _Runner, instance: _Instance, ok: bool) -> None:
        waiting = []
        for number, done in instance.requests:
            if done.done():
                continue
            if number <= runner.runs:
                done.set_result(ok)
            else:
                waiting.append((number, done))
        instance.requests = waiting

    async def _wait_until(self, runner: _Runner, instance: _Instance, due: float) -> bool:
        """Sleep until ``due`` on the manager's clock; True if run_now cut it short."""
        if instance.requests:
            return True
        delay = due - self._now()
        if delay <= 0:
            return False
        runner.next_at = due
        instance.waker = asyncio.get_running_loop().create_future()
        sleeper = asyncio.ensure_future(self._sleep(delay))
        try:
            await asyncio.wait([sleeper, instance.waker], return_when=asyncio.FIRST_COMPLETED)
        finally:
            runner.next_at = None
            sleeper.cancel()
        woken = instance.waker.done()
        instance.waker = None
        if sleeper.done() and not sleeper.cancelled() and sleeper.exception() is not None:
            raise sleeper.exception()  # type: ignore[misc]
        return woken


# ---------------------------------------------------------------------- leases


class TaskLease:
    """A non-blocking, exclusive, cross-process lease on a lock file (``flock``).

    Wrap the work of a task whose resource must never be worked on twice at
    once: whoever holds the lease works, everyone else skips this round::

        lease = TaskLease(var / "locks" / "data_sync.lock")
        if lease.acquire():
            try:
                ...
            finally:
                lease.release()

    The kernel releases the lock when its holder's descriptor closes, so a
    holder that crashes or is killed never leaves a stale lease behind. Locks
    belong to an open file description, not to a process: two TaskLease objects
    on one path exclude each other even inside one process. The holder's pid is
    written to the file for humans (``holder()``); the lock alone decides.

    Never delete a lock file: a process that opened the old one and one that
    creates a new one would both hold "the" lease. Use a local filesystem: on
    NFS, Linux emulates ``flock`` with POSIX locks, which do not exclude within
    one process. The descriptor is close-on-exec, so child programs do not
    inherit the lease.
    """

    def __init__(self, path: str | os.PathLike[str], *, label: str | None = None) -> None:
        self.path = Path(path)
        self.label = label  # written into the file while held; the pid when None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lease if it is free, without waiting: True if this object now holds it.

        A held lease stays held (True, nothing relocked). Creates the parent
        directories; other OS errors (permissions) propagate.
        """
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{self.label or os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is a courtesy; the lock is what counts
        return True

    def release(self) -> None:
        """Give the lease up (a no-op if not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # the only descriptor of this open file: closing it drops the lock

    def holder(self) -> int | None:
        """The pid written by the current holder, if any (advisory: read without the lock)."""
        try:
            return int(self.holder_label() or "")
        except ValueError:
            return None

    def holder_label(self) -> str | None:
        """What the current holder wrote: its label, or its pid (advisory: read without the lock)."""
        try:
            return self.path.read_text().strip() or None
        except OSError:
            return None

    def __enter__(self) -> TaskLease:
        if not self.acquire():
            raise LeaseBusy(self.path, self.holder())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __del__(self) -> None:
        # A lease dropped while held would keep its lock until the process exits.
        if getattr(self, "_fd", None) is not None:
            try:
                self.release()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass

    def __repr__(self) -> str:
        return f"TaskLease({str(self.path)!r}, held={self.held})"

"""The Twisted side of task ownership: named ``LoopingCall``\\ s that start and stop as the plan says.

A legacy service already runs its periodic work on ``LoopingCall``. Keep it
there, and give each one a name::

    from bridge.looping import LoopingTasks

    tasks = LoopingTasks(stack="legacy")
    tasks.add("data_sync", LoopingCall(sync.tick), every=5)
    tasks.start()            # in startService: runs the ones this stack owns
    ...
    yield tasks.stop()       # in stopService: fires once a tick in progress ends

While ``cutover serve`` hosts the service, the plan's ``[tasks]`` decides who
owns each name: the manager attaches to the process's
:class:`~bridge.ownership.TaskBoard`, and the host moves a task by stopping it
here (waiting for a tick in progress) before modern starts it, or the reverse.
Run alone, each task belongs to ``owner`` (default: this stack).

``LoopingCall`` semantics are kept: a tick that returns a Deferred delays the
next until it fires; a tick that fails stops that LoopingCall, so pass a tick
that handles its own errors, as a long-lived service must anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.task import LoopingCall
from twisted.python import log

from .deferreds import as_future
from .ownership import TaskBoard, get_task_board

__all__ = ["LoopingTasks"]


@dataclass
class _Looping:
    call: LoopingCall
    every: float
    startup: bool
    owner: str
    done: Deferred[Any] | None = None  # from LoopingCall.start: fires when it stops and its tick ended


class LoopingTasks:
    """Named LoopingCalls of one stack, run only where they are owned."""

    def __init__(self, stack: str = "legacy", *, owners: Mapping[str, str] | None = None,
                 board: TaskBoard | None = None) -> None:
        self.stack = stack
        self._tasks: dict[str, _Looping] = {}
        self._owners = dict(owners or {})
        self._given_board = board
        self._board = board if board is not None else get_task_board()
        self._started = False

    def add(self, name: str, call: LoopingCall, *, every: float, startup: bool = True, owner: str | None = None) -> None:
        """Declare a task. ``startup=False`` declares it without ever starting it (a disabled job)."""
        if name in self._tasks:
            raise ValueError(f"a task named {name!r} is already added")
        if not every > 0:
            raise ValueError(f"task {name!r}: every must be a positive number of seconds, got {every!r}")
        self._tasks[name] = _Looping(call, float(every), startup, owner or self.stack)

    def task_names(self) -> list[str]:
        return list(self._tasks)

    def owner_of(self, name: str) -> str:
        return self._owners.get(name, self._tasks[name].owner)

    def running(self, name: str) -> bool:
        return self._tasks[name].call.running

    def start(self) -> None:
        """Start the owned tasks and attach to the board (whose owners, set by a host, win)."""
        self._board = self._given_board if self._given_board is not None else get_task_board()
        self._owners.update({k: v for k, v in self._board.owners().items() if k in self._tasks})
        self._started = True
        self._board.attach(self)
        for name in self._tasks:
            self._follow(name)

    def stop(self) -> Deferred[None]:
        """Stop every task; the Deferred fires once the ticks in progress have ended."""
        self._started = False
        self._board.detach(self)
        waits = [d for d in (self._halt(name) for name in self._tasks) if d is not None]
        return DeferredList(waits).addCallback(lambda _: None) if waits else succeed(None)

    def set_owner(self, name: str, stack: str) -> Deferred[None]:
        """Move one task; the Deferred fires when it has stopped here (or started)."""
        if name not in self._tasks:
            raise KeyError(f"no task named {name!r} was added")
        self._owners[name] = stack
        return self._follow(name) or succeed(None)

    async def reassign(self, owners: Mapping[str, str]) -> list[str]:
        """The board's call: follow the new owners, waiting for ticks in progress to end."""
        unknown = [name for name in owners if name not in self._tasks]
        if unknown:
            raise KeyError(f"no task named {', '.join(map(repr, unknown))} was added")
        for name, stack in owners.items():
            await as_future(self.set_owner(name, stack))
        return []

    def state(self) -> dict[str, dict[str, Any]]:
        return {name: {"owner": self.owner_of(name), "running": t.call.running, "every": t.every}
                for name, t in self._tasks.items()}

    def _follow(self, name: str) -> Deferred[None] | None:
        task = self._tasks[name]
        if self._started and task.startup and self.owner_of(name) == self.stack:
            if not task.call.running:
                task.done = task.call.start(task.every, now=True)
                task.done.addErrback(lambda failure: log.err(failure, f"task {name} stopped on an error"))
            return None
        return self._halt(name)

    def _halt(self, name: str) -> Deferred[None] | None:
        task = self._tasks[name]
        if task.call.running:
            task.call.stop()
        done, task.done = task.done, None
        if done is None or done.called:
            return None
        waiter: Deferred[None] = Deferred()
        done.addBoth(lambda result: (waiter.callback(None), result)[1])
        return waiter

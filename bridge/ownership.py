"""Which stack runs each background task in this process: the hook between the host and the apps.

During a cutover both stacks declare the same periodic task (``data_sync``
as a ``LoopingCall`` in legacy, an ``@task`` in modern), and exactly one of
them may run it. The host knows who, from the plan's ``[tasks]``; the apps
know how. They meet here, on the host's :class:`TaskBoard` (one per host, found through
a context variable, so every app the host loads finds it), much as both
stacks meet on one :func:`bridge.get_pool`:

* an app's :class:`bridge.tasks.TaskManager` attaches itself when it starts
  (Twisted code starts one with ``bridge.as_deferred(manager.start())``), and
  takes the board's owners over its own;
* the host puts the plan's owners on the board before it loads the apps, reads
  :meth:`TaskBoard.known_tasks` to check the plan, and calls
  :meth:`TaskBoard.move` when the plan moves a task.

A manager that never starts, or an app with no tasks at all, is simply not on
the board. Anything with a ``stack`` attribute, a ``task_names()`` method and an
``async reassign(owners)`` method can attach, so a team's own scheduler can take
part too.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

__all__ = ["TaskBoard", "TaskOwnerManager", "get_task_board", "use_task_board"]

log = logging.getLogger(__name__)


@runtime_checkable
class TaskOwnerManager(Protocol):
    """What the board needs from a stack's task runner (:class:`bridge.tasks.TaskManager` is one)."""

    stack: str

    def task_names(self) -> Iterable[str]: ...

    async def reassign(self, owners: Mapping[str, str]) -> list[str]: ...


class TaskBoard:
    """The owners of this process's tasks, and the managers that obey them."""

    def __init__(self) -> None:
        self._owners: dict[str, str] = {}
        self._managers: list[TaskOwnerManager] = []

    def owners(self) -> dict[str, str]:
        """Owners set by the host (the plan); empty when nothing hosts this process."""
        return dict(self._owners)

    def set_owners(self, owners: Mapping[str, str]) -> None:
        """Replace the owners; managers attached later start by them. Used before the apps load."""
        self._owners = dict(owners)

    def clear(self) -> None:
        """Forget owners and managers (the host stopped)."""
        self._owners.clear()
        self._managers.clear()

    def attach(self, manager: TaskOwnerManager) -> None:
        if not isinstance(manager, TaskOwnerManager):
            raise TypeError(f"{manager!r} lacks stack, task_names() or reassign(): it cannot take part in ownership")
        if manager not in self._managers:
            self._managers.append(manager)

    def detach(self, manager: TaskOwnerManager) -> None:
        if manager in self._managers:
            self._managers.remove(manager)

    def managers(self) -> list[TaskOwnerManager]:
        return list(self._managers)

    def known_tasks(self) -> dict[str, list[str]]:
        """Each task some attached manager can run, with the stacks that declare it."""
        known: dict[str, list[str]] = {}
        for manager in self._managers:
            for name in manager.task_names():
                stacks = known.setdefault(name, [])
                if manager.stack not in stacks:
                    stacks.append(manager.stack)
        return dict(sorted(known.items()))

    async def move(self, task: str, owner: str) -> list[str]:
        """Give ``task`` to ``owner``: every other stack stops it first, then the owner starts it.

        Never both at once. Returns the tasks that ignored cancellation past their timeout.
        Raises KeyError if no attached manager declares ``task``.
        """
        holders = [m for m in self._managers if task in set(m.task_names())]
        if not holders:
            raise KeyError(f"no stack declares a task named {task!r}")
        self._owners[task] = owner
        late: list[str] = []
        # Stop where it is leaving before it starts where it arrives.
        for manager in sorted(holders, key=lambda m: m.stack == owner):
            late += await manager.reassign({task: owner})
        log.info("task %s now runs on %s", task, owner)
        return late


_default = TaskBoard()
_current: contextvars.ContextVar[TaskBoard | None] = contextvars.ContextVar("cutover_task_board", default=None)


def get_task_board() -> TaskBoard:
    """The board of the host this code runs under, else the process's default one.

    A host installs its own board (:func:`use_task_board`) before it loads the apps, so
    managers started while it loads them, in its lifespans and in the tasks those create,
    join that host's board; code outside any host (a test, a script) gets the default,
    whose owners are empty, and two hosts in one process never see each other's plan.
    """
    return _current.get() or _default


def use_task_board(board: TaskBoard) -> contextvars.Token[TaskBoard | None]:
    """Make ``board`` the current one in this context (and the tasks it creates from now on)."""
    return _current.set(board)

"""Twisted's reactor on an asyncio loop someone else runs (uvicorn, ``asyncio.run``).

``asyncioreactor.install(loop)`` alone is not enough on a loop Twisted does not
run itself. Three things are missing, and :func:`install_reactor` supplies them:

1. **Startup.** ``reactor.run()`` would call ``startRunning()`` and then
   ``loop.run_forever()``; the loop already runs, so only ``startRunning`` is
   called, exactly once. Without it the reactor's thread pool never starts and
   ``deferToThread`` hangs.
2. **Signals.** The loop's owner keeps SIGINT/SIGTERM (``installSignalHandlers``
   is false). That also drops Twisted's SIGCHLD handler, so children from
   ``spawnProcess`` were never reaped and ``processEnded`` never fired (Twisted
   #12681). We watch each child with a pidfd (Linux) and reap it when it exits,
   falling back to a periodic ``reapAllProcesses`` where pidfds do not exist.
3. **Shutdown.** ``reactor.stop()`` ends in ``crash()``, which on the asyncio
   reactor stops the loop, the owner's loop. Ours only stops the reactor.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from typing import Any

from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer

from .deferreds import as_future, set_bridge_loop
from .errors import ReactorInstallError

__all__ = ["install_reactor", "stop_reactor", "run_reactor_in_thread"]

_REAP_FALLBACK_INTERVAL = 0.1


def _describe(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def install_reactor(loop: asyncio.AbstractEventLoop | None = None) -> Any:
    """Install Twisted's asyncio reactor on ``loop`` (default: the running loop) and start it.

    Idempotent. Raises :class:`ReactorInstallError` if another reactor was
    installed first (something imported ``twisted.internet.reactor`` too early)
    or the asyncio reactor runs on a different loop.
    """
    loop = loop or asyncio.get_running_loop()
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    existing = sys.modules.get("twisted.internet.reactor")
    if existing is None:
        from twisted.internet.main import installReactor

        reactor = _shared_loop_reactor_class()(loop)
        installReactor(reactor)
    elif not isinstance(existing, AsyncioSelectorReactor):
        raise ReactorInstallError(
            f"Twisted's reactor is already installed as {_describe(existing)}, so the asyncio reactor "
            "cannot be. Something imported `twisted.internet.reactor` before bridge.install_reactor() "
            "ran. Call bridge.install_reactor() first thing in your entry point, and move module-level "
            "`from twisted.internet import reactor` into the functions that use it (or pass the reactor in)."
        )
    elif existing._asyncioEventloop is not loop:
        raise ReactorInstallError(
            f"Twisted's asyncio reactor already runs on another event loop ({existing._asyncioEventloop!r}), "
            f"not {loop!r}. Install it once, on the loop that serves the process."
        )
    else:
        reactor = existing

    if not reactor._started and not reactor.running:
        reactor.startRunning(installSignalHandlers=False)
    _reap_children(reactor)
    set_bridge_loop(loop)
    return reactor


def _shared_loop_reactor_class() -> type:
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor
    from twisted.internet.base import ReactorBase

    class SharedLoopReactor(AsyncioSelectorReactor):  # type: ignore[misc]
        """The asyncio reactor on a loop it does not own: stopping it leaves the loop running."""

        def crash(self) -> None:
            ReactorBase.crash(self)

    return SharedLoopReactor


async def stop_reactor() -> None:
    """Stop the reactor that :func:`install_reactor` installed: fire its shutdown
    triggers and stop its thread pool. The asyncio loop keeps running."""
    from twisted.internet import defer, reactor

    if not reactor.running:
        return
    stopped: defer.Deferred[None] = defer.Deferred()
    reactor.addSystemEventTrigger("after", "shutdown", stopped.callback, None)
    reactor.stop()
    await as_future(stopped)


def run_reactor_in_thread(loop: asyncio.AbstractEventLoop | None = None) -> threading.Thread:
    """Run the installed reactor (the platform default if none) in a daemon thread.

    ``loop`` (default: the running loop) becomes the loop :func:`bridge.as_deferred`
    schedules coroutines on when called from the reactor thread. Stop it with
    ``reactor.callFromThread(reactor.stop)`` and join the returned thread.
    """
    set_bridge_loop(loop or asyncio.get_running_loop())
    from twisted.internet import reactor

    if reactor.running:
        raise ReactorInstallError("the reactor is already running; run_reactor_in_thread() starts it")
    reactor.callWhenRunning(_reap_children, reactor)
    thread = threading.Thread(
        target=reactor.run, kwargs={"installSignalHandlers": False}, name="twisted-reactor", daemon=True
    )
    thread.start()
    return thread


# ---------------------------------------------------------------- child reaping


@implementer(IReadDescriptor)
class _ChildExitWatcher:
    """Readable when one child exits (a Linux pidfd); then lets Twisted reap it."""

    def __init__(self, reactor: Any, pid: int, fd: int) -> None:
        self._reactor, self._pid, self._fd = reactor, pid, fd

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return f"child-exit-watcher[{self._pid}]"

    def doRead(self) -> None:
        self._reactor.removeReader(self)
        os.close(self._fd)
        self._fd = -1
        _reap(self._pid)

    def connectionLost(self, reason: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _reap(pid: int) -> None:
    from twisted.internet import process

    handler = process.reapProcessHandlers.get(pid)
    if handler is not None:
        handler.reapProcess()


def _reap_children(reactor: Any) -> None:
    """Wrap ``reactor.spawnProcess`` so every child is reaped without a SIGCHLD handler."""
    if getattr(reactor, "_cutover_reaping", False):
        return
    reactor._cutover_reaping = True
    spawn = reactor.spawnProcess

    if not hasattr(os, "pidfd_open"):
        from twisted.internet import process, task

        reaper = task.LoopingCall(process.reapAllProcesses)
        reaper.clock = reactor
        reactor.callWhenRunning(reaper.start, _REAP_FALLBACK_INTERVAL, now=False)
        return

    def spawnProcess(*args: Any, **kwargs: Any) -> Any:
        proc = spawn(*args, **kwargs)
        pid = getattr(proc, "pid", None)
        if pid is not None:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                _reap(pid)  # already gone and reaped by someone else
            else:
                reactor.addReader(_ChildExitWatcher(reactor, pid, fd))
        return proc

    reactor.spawnProcess = spawnProcess

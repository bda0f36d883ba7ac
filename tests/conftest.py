"""Shared test set-up.

The suite runs under pytest-twisted with ``--reactor=asyncio`` (see
pyproject.toml), so Deferred-based and coroutine tests share one loop.
asyncio debug mode is on: slow callbacks are logged, and a call into the loop
from a wrong thread raises instead of passing silently.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

os.environ.setdefault("PYTHONASYNCIODEBUG", "1")

import workloads  # noqa: E402
from bridge import SharedPool  # noqa: E402
from bridge.testing import asyncio_fixture  # noqa: E402

pytest_plugins = ["tests.reliability"]  # the table of what the hardening tests survived

T = TypeVar("T")
WAIT = 60.0  # bound on any wait for a condition; a hang becomes a failure


@pytest.hookimpl(trylast=True)  # after pytest-twisted has installed the asyncio reactor
def pytest_configure(config: pytest.Config) -> None:
    from twisted.internet import reactor

    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is not None:
        loop.set_debug(True)


@pytest.fixture(scope="session")
@asyncio_fixture
async def warm_pool() -> AsyncIterator[SharedPool]:
    """One pool with every model loaded once per worker, as the services run it; shared by the session."""
    async with SharedPool(processes=2, cpus=2, initializer=workloads.warm_up) as shared:
        yield shared


@pytest.fixture
@asyncio_fixture
async def pool() -> AsyncIterator[SharedPool]:
    async with SharedPool(processes=2, cpus=2, max_queued=8) as shared:
        yield shared


async def in_daemon_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call in a daemon thread, bounded by WAIT: a stuck FIFO fails the test, never hangs it."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def target() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # noqa: BLE001
            error = exc
            loop.call_soon_threadsafe(lambda: future.done() or future.set_exception(error))
        else:
            loop.call_soon_threadsafe(lambda: future.done() or future.set_result(result))

    threading.Thread(target=target, daemon=True).start()
    return await asyncio.wait_for(future, WAIT)


class Gate:
    """Two FIFOs: a worker call announces it has started, then waits until the test opens the gate."""

    def __init__(self, directory: Path, name: str = "gate") -> None:
        self.started = str(directory / f"{name}.started")
        self.gate = str(directory / f"{name}.gate")
        os.mkfifo(self.started)
        os.mkfifo(self.gate)

    async def wait_started(self) -> int:
        """The pid of the worker that reached the gate."""
        return int(await in_daemon_thread(lambda: Path(self.started).read_text()))

    async def open(self) -> None:
        def release() -> None:
            with open(self.gate, "w") as fifo:
                fifo.write("go")

        await in_daemon_thread(release)


@pytest.fixture
def gate(tmp_path: Path) -> Gate:
    return Gate(tmp_path)


async def process_gone(pid: int) -> None:
    """Wait until a process has exited (a pidfd becomes readable), bounded by WAIT."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    try:
        await asyncio.wait_for(done, WAIT)
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def until(condition: Callable[[], bool], what: str, interval: float = 0.02) -> None:
    """Poll a condition the system under test will make true (files appearing, a job finishing), bounded by WAIT."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {WAIT}s waiting for {what}")
        await asyncio.sleep(interval)

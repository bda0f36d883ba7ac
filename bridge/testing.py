"""Test helpers for pytest-twisted on the asyncio reactor.

pytest-twisted drives ``async def`` tests and fixtures with Twisted's
``ensureDeferred``, under which awaiting an asyncio future fails with "await
wasn't used with future" (pytest-twisted #163, Twisted #11841). These
decorators run them as asyncio Tasks instead (:func:`bridge.as_deferred`), so
one test may await Deferreds, asyncio futures and ``pool.run`` alike::

    @asyncio_test
    async def test_both(pool):
        assert await pool.run(pow, 2, 8) == await as_future(threads.deferToThread(abs, -256))

    @pytest.fixture
    @asyncio_fixture
    async def pool():
        async with SharedPool(processes=1) as p:
            yield p
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import Deferred

from .deferreds import as_deferred

__all__ = ["asyncio_test", "asyncio_fixture"]


def asyncio_test(fn: Callable[..., Any]) -> Callable[..., Deferred[Any]]:
    """Run an ``async def`` test as an asyncio Task; pytest-twisted waits on the Deferred."""
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"@asyncio_test takes an async def function, not {fn!r}")

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Deferred[Any]:
        return as_deferred(fn(*args, **kwargs))

    return wrapper


def asyncio_fixture(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn an ``async def`` fixture (returning or yielding once) into a plain one.

    Apply it under ``@pytest.fixture``. Each step runs as an asyncio Task and is
    waited for with ``pytest_twisted.blockon``.
    """
    from pytest_twisted import blockon

    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            agen = fn(*args, **kwargs)
            yield blockon(as_deferred(agen.__anext__()))
            try:
                blockon(as_deferred(agen.__anext__()))
            except StopAsyncIteration:
                return
            raise RuntimeError(f"async fixture {fn.__qualname__} yielded more than once")

        return gen_wrapper
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return blockon(as_deferred(fn(*args, **kwargs)))

        return wrapper
    raise TypeError(f"@asyncio_fixture takes an async def function, not {fn!r}")

"""The server's watch on a request (:class:`bridge.asgi.RequestWatch`), through a real uvicorn on loopback.

With cutover's protocols, a legacy request whose body is in hears of its
client leaving from the server, with no task left waiting on ``receive()``;
under uvicorn's own protocol there is no watch, and the adapter keeps that task.
Either way Twisted's ``notifyFinish`` errbacks when the client hangs up.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.web import resource, server

from bridge.asgi import BodyGuard, h11_protocol, httptools_protocol, request_watch
from bridge.testing import asyncio_test
from bridge.twisted_asgi import TwistedSiteApp
from tests.conftest import WAIT, until
from tests.cutover.test_httptools_protocol import serving
from tests.resources import Hang

HEADER_TIMEOUT = 5.0
PROTOCOLS: dict[str, Callable[[], Any]] = {
    "httptools (shipped)": lambda: httptools_protocol(HEADER_TIMEOUT),
    "h11 (cutover's)": lambda: h11_protocol(HEADER_TIMEOUT),
    "uvicorn's own httptools": lambda: "httptools",
}


def feeders() -> list[asyncio.Task[Any]]:
    """Tasks on the loop waiting on a request's receive() for the client leaving (the adapter's feeder)."""
    return [task for task in asyncio.all_tasks() if getattr(task.get_coro(), "__qualname__", "").endswith("._feed")]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@asyncio_test
async def test_a_client_hanging_up_while_twisted_works_reaches_notify_finish(protocol: str) -> None:
    hang = Hang()
    root = resource.Resource()
    root.putChild(b"hang", hang)
    async with serving(TwistedSiteApp(server.Site(root)), http=PROTOCOLS[protocol]()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /hang HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\npayload")
        await writer.drain()
        await until(lambda: hang.rendered == 1, "the request to reach the resource")
        assert hang.finished == []
        waiting = feeders()
        if protocol == "uvicorn's own httptools":
            assert len(waiting) == 1, "without a watch, the adapter keeps a task on receive()"
        else:
            assert waiting == [], "the server tells of the client leaving: no task waits for it"
        # A reset, not a FIN: cutover's protocols take a FIN after a whole request as a half-close, and answer.
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        await until(lambda: hang.finished != [], "Twisted to hear that the client left")
    [outcome] = hang.finished
    assert isinstance(outcome, Failure) and outcome.check(ConnectionDone)
    assert feeders() == []


class Recorder:
    """An app that notes what the watch says at each step, then answers with the body it read."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.entered = asyncio.Event()
        self.answered = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        watch = request_watch(scope)
        note: dict[str, Any] = {"watch": watch is not None}
        self.seen.append(note)
        note["ready_at_entry"] = watch.body_ready() if watch is not None else None
        self.entered.set()
        guard = BodyGuard(receive, send, watch=watch)
        body = b""
        while True:
            message = await guard.receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await guard.send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await guard.send({"type": "http.response.body", "body": body})
        if watch is not None:
            note["watch_after_answer"] = watch.on_disconnect(lambda: None)
        self.answered.set()


async def _answer(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    return await asyncio.wait_for(reader.readexactly(length), WAIT)


@pytest.mark.parametrize("protocol", ["httptools (shipped)", "h11 (cutover's)"])
@asyncio_test
async def test_the_watch_says_whether_the_body_is_in_and_ends_with_the_answer(protocol: str) -> None:
    app = Recorder()
    async with serving(app, http=PROTOCOLS[protocol]()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            assert await _answer(reader) == b"hello"
            # The next request's head alone: the app is called before its body is sent.
            app.entered.clear()
            app.answered.clear()
            writer.write(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
            await asyncio.wait_for(app.entered.wait(), WAIT)
            writer.write(b"world")
            assert await _answer(reader) == b"world"
            await asyncio.wait_for(app.answered.wait(), WAIT)
        finally:
            writer.close()
    assert [note["watch"] for note in app.seen] == [True, True]
    assert [note["ready_at_entry"] for note in app.seen] == [True, False]
    assert [note["watch_after_answer"] for note in app.seen] == [False, False]  # nothing to watch once answered


@asyncio_test
async def test_a_slow_body_still_gets_408_when_the_watch_says_it_is_not_in() -> None:
    app = Recorder()

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        guard = BodyGuard(receive, send, timeout=0.5, watch=request_watch(scope))
        await guard.run(app, scope)

    async with serving(guarded) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhe")  # 3 bytes never come
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
            rest = await asyncio.wait_for(reader.read(), WAIT)
        finally:
            writer.close()
    assert head.startswith(b"HTTP/1.1 408 ")
    assert json.loads(rest)["error"]["code"] == "request_timeout"

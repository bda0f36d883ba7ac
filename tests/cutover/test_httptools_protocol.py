"""The HTTP/1.1 protocol `cutover serve` runs (httptools, llhttp) keeps the front door's head rules, as the h11 one does.

A real uvicorn on a loopback port, with the protocol the host ships and a
small echo app behind :class:`bridge.asgi.BodyLimitMiddleware` (the head
limits); raw bytes in, raw bytes out. The full hostile-input suite runs
against the h11 protocol in ``tests/hardening``; these are the places where
llhttp, left to itself, answers differently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from bridge.asgi import MAX_HEAD_BYTES, BodyLimitMiddleware, h11_protocol, httptools_protocol
from bridge.testing import asyncio_fixture, asyncio_test
from tests.conftest import WAIT, until
from tests.hardening.rawhttp import exchange

HEADER_TIMEOUT = 1.0


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    answer = json.dumps({"path": scope["path"], "body": body.decode("latin-1"),
                         "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


@contextlib.asynccontextmanager
async def serving(app: Any, **options: Any) -> AsyncIterator[int]:
    """uvicorn with the shipped protocol (or ``http=...``) on a loopback port, serving ``app``; yields the port."""
    options.setdefault("http", httptools_protocol(HEADER_TIMEOUT))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning", ws="none", **options)
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    await until(lambda: server.started or task.done(), "uvicorn to start")
    if task.done():
        task.result()
    try:
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        await task


@pytest.fixture
@asyncio_fixture
async def port() -> AsyncIterator[int]:
    async with serving(BodyLimitMiddleware(echo, 1024)) as bound:
        yield bound


@asyncio_test
async def test_a_plain_request_is_served(port: int) -> None:
    answer = await exchange(port, b"POST /a?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
    assert answer.status == 200 and json.loads(answer.raw.partition(b"\r\n\r\n")[2])["body"] == "abc"


@asyncio_test
async def test_a_partial_head_past_the_deadline_gets_408_and_is_closed(port: int) -> None:
    answer = await exchange(port, b"GET /slow HTTP/1.1\r\nHost: x\r\n")  # never ends
    assert answer.status == 408 and answer.error["code"] == "request_timeout"


@asyncio_test
async def test_a_head_that_passes_the_limit_before_it_ends_gets_431(port: int) -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(200))
    assert len(head) > MAX_HEAD_BYTES
    answer = await exchange(port, head)  # no blank line: the head never ends
    assert answer.status == 431 and answer.error["code"] == "header_too_large"


@pytest.mark.parametrize("head", [
    b"GET http://x/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",  # absolute form: not a path
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\nConnection: close\r\n\r\n",  # NUL in a value
    b"GET / HTTP/1.1\nHost: x\n\n",  # not HTTP/1.1 framing
    b"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\nContent-Length: 3\r\n\r\nabc",
])
@asyncio_test
async def test_what_is_not_a_request_to_serve_gets_400_in_the_error_shape(port: int, head: bytes) -> None:
    answer = await exchange(port, head)
    assert answer.status == 400 and answer.error["code"] == "malformed_request", answer.raw


@asyncio_test
async def test_a_header_value_h11_takes_is_taken(port: int) -> None:
    answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Odd: a\x7fb\x01c\r\nConnection: close\r\n\r\n")
    assert answer.status == 200
    assert json.loads(answer.raw.partition(b"\r\n\r\n")[2])["headers"]["x-odd"] == "a\x7fb\x01c"


@asyncio_test
async def test_an_upgrade_is_ignored_the_request_served_and_the_connection_closed(port: int) -> None:
    answer = await exchange(port, b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                                  b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
    assert answer.status == 200 and answer.headers.get("connection") == "close"


@asyncio_test
async def test_a_client_that_half_closes_after_its_request_still_gets_the_answer(port: int) -> None:
    answer = await exchange(port, b"GET /half HTTP/1.1\r\nHost: x\r\n\r\n", eof=True)
    assert answer.status == 200 and json.loads(answer.raw.partition(b"\r\n\r\n")[2])["path"] == "/half"


# ---------------------------------------------------------------- writes held to one send, and the deadline per connection


class Gated:
    """Streams a response: its head and first piece, then the rest once ``gate`` opens."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first;", "more_body": True})
        await self.gate.wait()
        await send({"type": "http.response.body", "body": b"last", "more_body": False})


@pytest.fixture
@asyncio_fixture
async def gated() -> AsyncIterator[tuple[int, Gated]]:
    app = Gated()
    async with serving(app) as bound:
        try:
            yield bound, app
        finally:
            app.gate.set()


@asyncio_test
async def test_a_streamed_first_piece_goes_out_before_the_rest_is_written(gated: tuple[int, Gated]) -> None:
    """Writes are held only to the end of a loop turn: a response that streams is never held back."""
    port, app = gated
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        seen = b""
        deadline = asyncio.get_running_loop().time() + WAIT
        while b"first;" not in seen:  # the gate is shut: these bytes came before the rest was even sent
            assert asyncio.get_running_loop().time() < deadline, seen
            seen += await asyncio.wait_for(reader.read(4096), WAIT)
        assert seen.startswith(b"HTTP/1.1 200 ")
        app.gate.set()
        seen += await asyncio.wait_for(reader.read(), WAIT)
        assert b"last" in seen and seen.endswith(b"0\r\n\r\n")
    finally:
        writer.close()


@asyncio_test
async def test_the_head_deadline_holds_for_each_request_on_a_kept_alive_connection(port: int) -> None:
    """One timer per connection, moved on by each response: a later request's slow head still gets 408."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(3):
            writer.write(b"GET /k%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
            assert head.startswith(b"HTTP/1.1 200 ")
            length = int(head.lower().partition(b"content-length: ")[2].partition(b"\r\n")[0])
            assert json.loads(await asyncio.wait_for(reader.readexactly(length), WAIT))["path"] == f"/k{i}"
        started = asyncio.get_running_loop().time()
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
        rest = await asyncio.wait_for(reader.read(), WAIT)  # answered, then closed
        assert rest.startswith(b"HTTP/1.1 408 ") and b"request_timeout" in rest
        assert asyncio.get_running_loop().time() - started >= HEADER_TIMEOUT * 0.9
    finally:
        writer.close()


KEEP_ALIVE = 0.3


async def _one_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: bytes) -> None:
    writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    assert head.startswith(b"HTTP/1.1 200 ")
    length = int(head.lower().partition(b"content-length: ")[2].partition(b"\r\n")[0])
    await asyncio.wait_for(reader.readexactly(length), WAIT)


@asyncio_test
async def test_an_idle_kept_alive_connection_closes_after_uvicorns_keep_alive_timeout() -> None:
    """The head timer keeps uvicorn's keep-alive timeout too: nothing sent after an answer, closed, unanswered."""
    async with serving(echo, timeout_keep_alive=KEEP_ALIVE) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(2):
                await _one_answer(reader, writer, b"/idle")
            started = asyncio.get_running_loop().time()
            rest = await asyncio.wait_for(reader.read(), WAIT)  # EOF: the server closed it
            waited = asyncio.get_running_loop().time() - started
            assert rest == b"" and KEEP_ALIVE * 0.9 <= waited < HEADER_TIMEOUT, waited
        finally:
            writer.close()


@asyncio_test
async def test_a_head_begun_within_the_keep_alive_timeout_gets_the_whole_head_deadline() -> None:
    """Once a byte of the next request came, the keep-alive timeout is over: its head has HEADER_TIMEOUT, then 408."""
    async with serving(echo, timeout_keep_alive=KEEP_ALIVE) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await _one_answer(reader, writer, b"/first")
            started = asyncio.get_running_loop().time()
            writer.write(b"GET /slow HTTP/1.1\r\n")  # begun at once, never finished
            rest = await asyncio.wait_for(reader.read(), WAIT)
            assert rest.startswith(b"HTTP/1.1 408 ") and b"request_timeout" in rest
            assert asyncio.get_running_loop().time() - started >= HEADER_TIMEOUT * 0.9
        finally:
            writer.close()


@pytest.mark.parametrize("protocol", ["httptools", "h11"])
@asyncio_test
async def test_a_request_waiting_unread_when_the_keep_alive_timeout_fires_is_served(protocol: str) -> None:
    """A busy loop may run the keep-alive timeout after the next request has reached the kernel, unread:
    closing then would reset a request the client sent in time. Here a callback holds the loop past the timeout,
    and the request is written in the same loop turn as the timeout runs, just before it."""
    keep_alive = 2.0  # the write below must come before the timeout: up to keep_alive / 2 of slack for a loaded loop
    factory = httptools_protocol(10.0) if protocol == "httptools" else h11_protocol(10.0)
    async with serving(echo, timeout_keep_alive=keep_alive, http=factory) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await _one_answer(reader, writer, b"/first")
            loop = asyncio.get_running_loop()
            now = loop.time()  # the server's keep-alive timeout runs out at most a few loop turns before now + keep_alive

            def hold_the_loop() -> None:
                time.sleep(keep_alive)  # the fault: a callback that blocks, past both times below

            loop.call_at(now + keep_alive * 0.3, hold_the_loop)
            loop.call_at(now + keep_alive * 0.5, writer.write, b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
            assert head.startswith(b"HTTP/1.1 200 "), head
        finally:
            writer.close()

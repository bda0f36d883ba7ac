"""The HTTP/1.1 protocol `cutover serve` runs (httptools, llhttp) keeps the front door's head rules, as the h11 one does.

A real uvicorn on a loopback port, with the protocol the host ships and a
small echo app behind :class:`bridge.asgi.BodyLimitMiddleware` (the head
limits); raw bytes in, raw bytes out. The full hostile-input suite runs
against the h11 protocol in ``tests/hardening``; these are the places where
llhttp, left to itself, answers differently.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from bridge.asgi import MAX_HEAD_BYTES, BodyLimitMiddleware, httptools_protocol
from bridge.testing import asyncio_fixture, asyncio_test
from tests.conftest import until
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


@pytest.fixture
@asyncio_fixture
async def port() -> AsyncIterator[int]:
    config = uvicorn.Config(BodyLimitMiddleware(echo, 1024), host="127.0.0.1", port=0, lifespan="off",
                            log_level="warning", http=httptools_protocol(HEADER_TIMEOUT), ws="none")
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    await until(lambda: server.started or serving.done(), "uvicorn to start")
    if serving.done():
        serving.result()
    try:
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        await serving


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

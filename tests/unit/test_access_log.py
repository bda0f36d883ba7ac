"""cutover's access log: one line per response, with who answered, written after the answer, batched per loop turn."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from bridge.host.access import AccessLog, line_for
from bridge.testing import asyncio_test


def _scope(raw_path: bytes, query: bytes = b"", client: tuple[str, int] | None = ("127.0.0.1", 5000)) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": raw_path.decode("latin-1"), "raw_path": raw_path,
            "query_string": query, "http_version": "1.1", "client": client, "headers": []}


async def _answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-length", b"2"), (b"x-served-by", b"modern")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _nothing() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


@asyncio_test
async def test_each_response_gets_one_line_after_its_answer_went_out_and_all_of_one_turn_in_one_write() -> None:
    writes: list[str] = []

    class Stream(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

    log = AccessLog(_answer, Stream())
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await log(_scope(b"/a", b"x=1"), _nothing, send)  # neither call yields to the loop: one turn
    await log(_scope(b"/b"), _nothing, send)
    assert len(sent) == 4 and writes == []  # the answers went out; the lines wait for the end of the turn
    await asyncio.sleep(0)
    assert writes == ['INFO:     127.0.0.1:5000 - "GET /a?x=1 HTTP/1.1" 201 modern\n'
                      'INFO:     127.0.0.1:5000 - "GET /b HTTP/1.1" 201 modern\n']


def test_a_line_says_dash_for_what_it_does_not_know_and_escapes_what_is_not_plain_ascii() -> None:
    assert line_for(_scope(b"/x", client=None), 503, []) == 'INFO:     - - "GET /x HTTP/1.1" 503 -\n'
    line = line_for(_scope(b"/caf\xc3\xa9\x1b[2J"), 404, [(b"x-served-by", b"legacy")])
    assert line == 'INFO:     127.0.0.1:5000 - "GET /caf\\xc3\\xa9\\x1b[2J HTTP/1.1" 404 legacy\n'


@asyncio_test
async def test_a_broken_stream_fails_no_request() -> None:
    stream = io.StringIO()
    stream.close()  # writing raises ValueError
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await AccessLog(_answer, stream)(_scope(b"/a"), _nothing, send)
    await asyncio.sleep(0)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]

"""Request heads past the limits get one answer, whichever stack the route goes to: 414 or 431, never a 500.

Before the front door held heads to :func:`bridge.asgi.head_refusal`, a header
line over 16 KiB on a legacy route got a plain 500 (twisted.web hangs up on
such a line, and the adapter had no answer to forward) while modern answered
200; past 16 KiB of head legacy answered a bare 400, and past 500 fields too.
Raw sockets, since a polite client would not send these heads.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge.asgi import MAX_HEAD_BYTES, MAX_HEADERS, MAX_TARGET_BYTES
from bridge.testing import asyncio_test
from tests.conftest import until
from tests.hardening.conftest import Door
from tests.hardening.rawhttp import Answer, exchange
from tests.reliability import record

BASE = b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"  # the server closes after answering


def with_header(size: int) -> bytes:
    """A GET /status whose one extra header line is ``size`` bytes long (name, colon, space and value)."""
    return BASE + b"X-Big: " + b"a" * (size - len(b"X-Big: ")) + b"\r\n\r\n"


def of_head_size(total: int) -> bytes:
    """A GET /status head of exactly ``total`` bytes, in header lines of at most 4 KiB."""
    head, end = bytearray(BASE), b"\r\n"
    n = 0
    while len(head) + len(end) < total:
        room = total - len(head) - len(end) - len(b"X-0000: \r\n")
        head += b"X-%04d: %s\r\n" % (n, b"v" * max(0, min(room, 4096)))
        n += 1
    head += end
    assert len(head) == total, (len(head), total)
    return bytes(head)


def with_fields(count: int) -> bytes:
    """A GET /status with ``count`` header fields in all (Host and Connection included)."""
    return BASE + b"".join(b"X-%d: v\r\n" % i for i in range(count - 2)) + b"\r\n"


def with_target(size: int) -> bytes:
    """A GET /status whose request target (path and query) is ``size`` bytes."""
    target = b"/status?q=" + b"a" * (size - len(b"/status?q="))
    return b"GET " + target + BASE[len(b"GET /status"):] + b"\r\n"


CASES: list[tuple[str, bytes, int, str | None]] = [
    # (name, head, status, error code)
    ("a 15 KiB header line", with_header(15 * 1024), 200, None),
    ("a 17,000-byte header line", with_header(17_000), 431, "header_too_large"),
    ("a 64 KiB header line", with_header(64 * 1024), 431, "header_too_large"),
    ("a head of exactly the limit", of_head_size(MAX_HEAD_BYTES), 200, None),
    ("a head one byte over the limit", of_head_size(MAX_HEAD_BYTES + 1), 431, "header_too_large"),
    (f"{MAX_HEADERS} header fields", with_fields(MAX_HEADERS), 200, None),
    (f"{MAX_HEADERS + 1} header fields", with_fields(MAX_HEADERS + 1), 431, "header_too_large"),
    ("600 header fields", with_fields(600), 431, "header_too_large"),
    ("a target of exactly the limit", with_target(MAX_TARGET_BYTES), 200, None),
    ("a target one byte over the limit", with_target(MAX_TARGET_BYTES + 1), 414, "uri_too_long"),
    ("a 20 KiB target", with_target(20 * 1024), 414, "uri_too_long"),
]


def problem(answer: Answer, status: int, code: str | None) -> str | None:
    if answer.status != status:
        return f"status {answer.status}: {answer.raw[:200]!r}"
    if code is None:
        return None
    if answer.headers.get("content-type") != "application/json" or answer.error.get("code") != code \
            or not answer.error.get("message"):
        return f"not the error shape with {code}: {answer.raw[:300]!r}"
    if answer.headers.get("x-served-by") not in (None, "cutover"):
        return f"answered by a stack, not the front door: {answer.headers.get('x-served-by')}"
    return None


@asyncio_test
async def test_heads_past_the_limits_get_the_same_answer_from_both_stacks(doors: dict[str, Door]) -> None:
    failures = []
    for stack, door in doors.items():
        survived = 0
        for name, head, status, code in CASES:
            wrong = problem(await exchange(door.port, head), status, code)
            survived += wrong is None
            if wrong:
                failures.append(f"{stack}: {name}: {wrong}")
        record("hostile input", f"request heads at and past the limits (line, head, fields, target), {stack}",
               tried=len(CASES), survived=survived, detail="414 `uri_too_long` / 431 `header_too_large`, 0 5xx")
    assert not failures, "\n".join(failures)


async def trickle(port: int, head: bytes, piece: int = 1024) -> Answer:
    """Send ``head`` in pieces, each after the last has surely been read, so the server sees a growing head."""
    async def pieces():  # type: ignore[no-untyped-def]
        for at in range(0, len(head), piece):
            await asyncio.sleep(0.01)  # pacing only: the assertion waits for the answer, not for time
            yield head[at:at + piece]

    return await exchange(port, b"", pieces())


@pytest.mark.parametrize("size", [17_000, 40_000])
@asyncio_test
async def test_a_head_that_arrives_in_pieces_past_the_limit_gets_431_in_the_error_shape(door: Door, size: int) -> None:
    answer = await trickle(door.port, with_header(size)[:-4])  # never complete: it is refused on its size alone
    assert problem(answer, 431, "header_too_large") is None, answer.raw[:300]
    assert answer.headers.get("connection") == "close"


@asyncio_test
async def test_a_head_in_pieces_under_the_limit_is_served(door: Door) -> None:
    answer = await trickle(door.port, with_header(15 * 1024))
    assert answer.status == 200, answer.raw[:300]


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@asyncio_test
async def test_a_client_that_half_closes_after_its_request_gets_its_answer(door: Door) -> None:
    answer = await exchange(door.port, BASE + b"\r\n", eof=True)
    assert answer.status == 200, answer.raw[:300]
    assert b'"service"' in answer.raw


@asyncio_test
async def test_a_client_that_half_closes_mid_body_costs_one_log_line_not_a_traceback(door: Door) -> None:
    handler = Lines()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "bridge.asgi")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        head = b"POST /v1/domains HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        answer = await exchange(door.port, head + b'{"text": "a', eof=True)
        assert answer.status in (0, 408), answer.raw[:300]  # nobody is left to answer, or the body timed out
        def left() -> list[logging.LogRecord]:
            return [r for r in handler.records if r.name == "bridge.asgi" and "left before the answer" in r.getMessage()]

        if door.stack == "modern":  # Starlette raises ClientDisconnect reading the body; Twisted just stops
            await until(lambda: bool(left()), "the one line about the client that left")
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
    tracebacks = [r.getMessage() for r in handler.records if r.exc_info]
    assert not tracebacks, tracebacks
    assert len(left()) == (1 if door.stack == "modern" else 0), [r.getMessage() for r in handler.records]

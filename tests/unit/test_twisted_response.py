"""The reader of what a twisted.web channel writes: each framing, fed in any pieces, and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.twisted_response import ResponseError, ResponseReader

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"


def read(data: bytes, piece: int, head_only: bool = False, close: bool = False) -> list[tuple[Any, ...]]:
    """Feed ``data`` ``piece`` bytes at a time; body events are merged so any split compares equal."""
    reader = ResponseReader(head_only)
    events: list[tuple[Any, ...]] = []
    for at in range(0, len(data), piece):
        events += reader.feed(data[at:at + piece])
    if close:
        events += reader.close()
    merged: list[tuple[Any, ...]] = []
    for event in events:
        if event[0] == "data" and merged and merged[-1][0] == "data":
            merged[-1] = ("data", merged[-1][1] + event[1])
        elif event != ("data", b""):
            merged.append(event)
    return merged


START = ("start", 200, [(b"content-type", b"text/plain")])


@pytest.mark.parametrize("piece", [1, 3, 7, 1000])
def test_each_framing_in_any_pieces(piece: int) -> None:
    length = HEAD + b"Content-Length: 5\r\n\r\nhelloIGNORED"
    assert read(length, piece) == [("start", 200, [*START[2], (b"content-length", b"5")]), ("data", b"hello"), ("end",)]
    chunked = HEAD + b"Transfer-Encoding: chunked\r\n\r\n4;x=1\r\none \r\n5\r\nthree\r\n0\r\nTrailer: t\r\n\r\n"
    assert read(chunked, piece) == [("start", 200, [*START[2], (b"transfer-encoding", b"chunked")]),
                                    ("data", b"one three"), ("end",)]
    unframed = HEAD + b"\r\nuntil the close"
    assert read(unframed, piece, close=True) == [START, ("data", b"until the close"), ("end",)]


def test_no_body_for_head_204_304_and_interim_responses_are_skipped() -> None:
    assert read(HEAD + b"Content-Length: 99\r\n\r\n", 5, head_only=True)[-1] == ("end",)
    assert read(b"HTTP/1.1 204 No Content\r\n\r\n", 4) == [("start", 204, []), ("end",)]
    assert read(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n", 6) == [("start", 304, []), ("end",)]


@pytest.mark.parametrize(("data", "closed", "message"), [
    (b"", True, "without a response"),
    (HEAD + b"Content-Length: 5\r\n\r\nhel", True, "in the middle of its response"),
    (b"SPDY/3 200 OK\r\n\r\n", False, "bad status line"),
    (HEAD + b"Content-Length: five\r\n\r\n", False, "bad Content-Length"),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", False, "bad chunk size"),
    (HEAD + b"no colon here\r\n\r\n", False, "bad header line"),
])
def test_what_cannot_be_framed_is_refused(data: bytes, closed: bool, message: str) -> None:
    reader = ResponseReader()
    with pytest.raises(ResponseError, match=message) as caught:
        reader.feed(data)
        reader.close()
    assert caught.value.closed is closed

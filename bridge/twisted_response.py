"""Read back the HTTP/1.1 response a twisted.web channel writes, without a general-purpose parser.

:class:`~bridge.twisted_asgi.TwistedSiteApp` hands each request to
Twisted's own channel and must turn what Twisted writes into ASGI messages.
h11 did that, and cost as much per request as Twisted's whole rendering of a
small JSON answer (its state machine, event objects and header validation run
in Python for every response). The writer here is always Twisted, whose
output is regular: a status line, header lines, a blank line, then a body
framed by ``Content-Length``, ``Transfer-Encoding: chunked`` or the close.
This reader handles exactly that, in a few byte-string operations per
response, and still refuses anything it cannot frame.

Events, as returned by :meth:`ResponseReader.feed` and :meth:`ResponseReader.close`:
``("start", status, headers)``, ``("data", bytes)``, ``("end",)``.
Interim (1xx) responses are skipped.
"""

from __future__ import annotations

from typing import Any

from .errors import CutoverError

__all__ = ["MAX_HEAD", "ResponseError", "ResponseReader"]

#: The longest response head accepted (h11's default limit was raised to this too).
MAX_HEAD = 256 * 1024

_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)
_NO_BODY = frozenset({204, 304})


class ResponseError(CutoverError):
    """The bytes are not a response this reader can frame; ``closed`` says the writer hung up first."""

    def __init__(self, message: str, *, closed: bool = False) -> None:
        super().__init__(message)
        self.closed = closed


class ResponseReader:
    """One response, fed as it is written. ``head_only``: the request was HEAD (no body follows)."""

    def __init__(self, head_only: bool = False) -> None:
        self.head_only = head_only
        self.started = False
        self.done = False
        self._state = _HEAD
        self._buffer = b""
        self._remaining = 0

    def feed(self, data: bytes) -> list[tuple[Any, ...]]:
        """The events ``data`` completes (bytes after the end of the response are ignored)."""
        if self._state == _DONE:
            return []
        self._buffer = self._buffer + data if self._buffer else data
        events: list[tuple[Any, ...]] = []
        while self._buffer and self._state != _DONE:
            if not self._step(events):
                break
        return events

    def close(self) -> list[tuple[Any, ...]]:
        """The writer hung up: the end of an unframed body, or :class:`ResponseError`."""
        if self._state == _DONE:
            return []
        if self._state == _UNTIL_CLOSE:
            self._state = _DONE
            self.done = True
            return [("end",)]
        what = "in the middle of its response" if self.started else "without a response"
        raise ResponseError(what, closed=True)

    # ------------------------------------------------------------------ states

    def _step(self, events: list[tuple[Any, ...]]) -> bool:
        """Consume what the current state can from the buffer; False when it needs more bytes."""
        state, buffer = self._state, self._buffer
        if state == _HEAD:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    raise ResponseError(f"a response head over {MAX_HEAD} bytes")
                return False
            self._buffer = buffer[end + 4:]
            self._head(buffer[:end], events)
        elif state == _LENGTH or state == _CHUNK_DATA:
            piece = buffer[: self._remaining]
            self._buffer = buffer[len(piece):]
            self._remaining -= len(piece)
            events.append(("data", piece))
            if not self._remaining:
                self._state = _CHUNK_END if state == _CHUNK_DATA else self._end(events)
        elif state == _UNTIL_CLOSE:
            self._buffer = b""
            events.append(("data", buffer))
        elif state == _CHUNK_SIZE:
            end = buffer.find(b"\r\n")
            if end < 0:
                return self._short(buffer, 1024, "a chunk size line")
            size = buffer[:end].partition(b";")[0].strip()
            try:
                self._remaining = int(size, 16)
            except ValueError:
                raise ResponseError(f"a bad chunk size {size[:20]!r}") from None
            self._buffer = buffer[end + 2:]
            self._state = _CHUNK_DATA if self._remaining else _TRAILERS
        elif state == _CHUNK_END:
            if len(buffer) < 2:
                return False
            if buffer[:2] != b"\r\n":
                raise ResponseError("a chunk not followed by CRLF")
            self._buffer = buffer[2:]
            self._state = _CHUNK_SIZE
        elif state == _TRAILERS:
            end = buffer.find(b"\r\n")
            if end < 0:
                return self._short(buffer, MAX_HEAD, "the trailers")
            self._buffer = buffer[end + 2:]
            if end == 0:
                self._state = self._end(events)
        return True

    def _head(self, head: bytes, events: list[tuple[Any, ...]]) -> None:
        status_line, *lines = head.split(b"\r\n")
        version, _, rest = status_line.partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ResponseError(f"a bad status line {status_line[:80]!r}")
        status = int(code)
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = None
        chunked = False
        for line in lines:
            name, colon, value = line.partition(b":")
            name = name.strip().lower()
            if not colon or not name:
                raise ResponseError(f"a bad header line {line[:80]!r}")
            value = value.strip()
            if name == b"content-length":
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise ResponseError(f"a bad Content-Length {value[:40]!r}")
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = chunked or b"chunked" in value.lower()
            headers.append((name, value))
        if 100 <= status < 200:
            return  # interim: the real response follows
        self.started = True
        events.append(("start", status, headers))
        if self.head_only or status in _NO_BODY:
            self._state = self._end(events)
        elif chunked:
            self._state = _CHUNK_SIZE
        elif length is not None:
            self._remaining = length
            self._state = _LENGTH if length else self._end(events)
        else:
            self._state = _UNTIL_CLOSE

    def _end(self, events: list[tuple[Any, ...]]) -> int:
        self.done = True
        self._buffer = b""
        events.append(("end",))
        return _DONE

    @staticmethod
    def _short(buffer: bytes, limit: int, what: str) -> bool:
        if len(buffer) > limit:
            raise ResponseError(f"{what} over {limit} bytes")
        return False

"""One access line per request, with the stack that answered it, written by cutover instead of uvicorn.

uvicorn's own access log goes through :mod:`logging` on every request: a
``LogRecord``, a formatter that copies it, a handler lock and a write. Profiled
on ``cutover serve`` under wrk, that was about a tenth of the CPU of a legacy
``GET /status``, more than the front door's routing and adapter together, and
its line could not say who answered. :class:`AccessLog` writes the same line
as uvicorn's default format plus the ``X-Served-By`` of the answer::

    INFO:     127.0.0.1:50312 - "GET /status HTTP/1.1" 200 legacy

A line is taken at the response's start, as uvicorn does, but formatted and
written after the answer has gone out: at the end of the loop turn, in one
write (and flush) however many requests answered in it. The request target is the one sent (``raw_path`` and the query), not a
re-quoted path: no work per request to rebuild it, and what the client sent
is what the log shows (non-ASCII bytes escaped).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, TextIO

from ..asgi import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AccessLog"]

_SERVED_BY = b"x-served-by"


class AccessLog:
    """ASGI middleware: one line per HTTP response on ``stream`` (uvicorn's access log goes to stdout too)."""

    def __init__(self, app: ASGIApp, stream: TextIO | None = None) -> None:
        self.app = app
        self.stream = stream
        self._held: list[tuple[Scope, int, Any]] = []  # (scope, status, response headers) of lines to write
        self._scheduled = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.hold(scope, message)
            await send(message)

        await self.app(scope, receive, logged)

    def hold(self, scope: Scope, start: Message) -> None:
        """Take the line of this response; it is written at the end of this loop turn (now, outside a loop)."""
        self._held.append((scope, start["status"], start.get("headers")))
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        held, self._held = self._held, []
        if not held:
            return
        stream = self.stream if self.stream is not None else sys.stdout  # read late: tests and daemons swap it
        try:
            stream.write("".join([line_for(scope, status, headers) for scope, status, headers in held]))
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stdout must not fail the requests
            pass


def line_for(scope: Scope, status: int, headers: Any) -> str:
    """The access line of one response: client, request line, status, and who answered (``-`` if unsaid)."""
    client = scope.get("client")
    peer = f"{client[0]}:{client[1]}" if client else "-"
    target = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
    query = scope.get("query_string")
    if query:
        target = target + b"?" + query
    served = "-"
    for name, value in reversed(headers or ()):
        if name == _SERVED_BY:
            served = value.decode("latin-1")
            break
    return (f'INFO:     {peer} - "{scope["method"]} {_text(target)} HTTP/{scope.get("http_version", "1.1")}" '
            f'{status} {served}\n')


#: The bytes a target is logged as they are; anything else (control characters, non-ASCII) as ``\\xNN``.
_PLAIN = bytes(range(0x21, 0x7F))


def _text(raw: Any) -> str:
    raw = bytes(raw)
    if not raw.translate(None, _PLAIN):
        return raw.decode("ascii")
    return "".join(chr(b) if 0x21 <= b < 0x7F else f"\\x{b:02x}" for b in raw)

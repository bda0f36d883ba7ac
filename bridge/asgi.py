"""ASGI pieces that any app behind cutover can use.

:class:`BodyLimitMiddleware` refuses oversized request bodies before they are
read whole: from the ``Content-Length`` header when there is one, else as soon
as the streamed body passes the limit. Starlette and FastAPI read bodies into
memory on ``await request.body()`` with no limit of their own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_BODY_TIMEOUT",
    "DEFAULT_MIN_BODY_RATE",
    "BodyGuard",
    "BodyLimitMiddleware",
    "h11_protocol",
    "json_error",
]

#: Seconds a request body may take, and the longest wait for its next piece.
DEFAULT_BODY_TIMEOUT = 30.0
#: Bytes per second that earn a body one more second (Apache mod_reqtimeout's MinRate): a slow
#: but honest upload keeps going, a client trickling a byte at a time is cut off.
DEFAULT_MIN_BODY_RATE = 500.0
#: The most a body may take however fast it arrives (Apache's maxtimeout): without it a client
#: sending just over MIN_BODY_RATE could hold a connection, and an admission slot, for hours.
DEFAULT_MAX_BODY_TIMEOUT = 300.0
#: Seconds a client may take to send a request's line and headers.
DEFAULT_HEADER_TIMEOUT = 20.0


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of an error in the contract's shape: ``{"error": {"code", "message"}}``."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    return raw, body


class BodyGuard:
    """One request's ``receive`` and ``send``, guarded: 413 past ``limit``, 408 when the body is too slow.

    The body must arrive within ``timeout`` seconds of the request, plus one
    second per ``min_rate`` bytes received, but never later than ``max_timeout``
    seconds after the request; and no piece may take longer than ``timeout``. On either refusal the app receives ``http.disconnect`` (so it
    stops reading), the client gets the error unless the app had already
    started a response, and whatever the app sends afterwards is dropped; the
    error says ``Connection: close``, so the server hangs up on the unread rest.
    Once the body is complete, ``receive`` is passed through untimed (apps
    wait on it for the client leaving).
    """

    def __init__(
        self,
        receive: Receive,
        send: Send,
        *,
        limit: int | None = None,
        timeout: float | None = DEFAULT_BODY_TIMEOUT,
        min_rate: float = DEFAULT_MIN_BODY_RATE,
        max_timeout: float = DEFAULT_MAX_BODY_TIMEOUT,
    ) -> None:
        self._receive, self._send = receive, send
        self.limit, self.timeout, self.min_rate = limit, timeout, min_rate
        self.received = 0
        self.body_done = False
        self.response_started = False
        self.rejected = False
        self._loop = asyncio.get_running_loop()
        start = self._loop.time()
        self._deadline = start + timeout if timeout is not None else 0.0
        self._cap = start + max(max_timeout, timeout or 0.0)

    async def receive(self) -> Message:
        if self.rejected:
            return {"type": "http.disconnect"}
        if self.body_done or self.timeout is None:
            message = await self._receive()
        else:
            wait = min(self.timeout, self._deadline - self._loop.time())
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    message = await self._receive()
            except TimeoutError:
                await self._reject(408, "request_timeout", f"the request body did not arrive in time ({self.received} bytes read)")
                return {"type": "http.disconnect"}
        if message["type"] == "http.request":
            size = len(message.get("body", b""))
            self.received += size
            self._deadline = min(self._deadline + size / self.min_rate, self._cap)
            if not message.get("more_body", False):
                self.body_done = True
            if self.limit is not None and self.received > self.limit:
                await self._reject(413, "body_too_large", f"the request body passed the limit of {self.limit} bytes")
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.rejected:
            return
        if message["type"] == "http.response.start":
            self.response_started = True
        await self._send(message)

    async def run(self, app: ASGIApp, scope: Scope) -> None:
        """Call ``app`` through the guard. An app failing on a body the guard refused (Starlette raises
        ``ClientDisconnect``) is not an error: the client already has its answer."""
        try:
            await app(scope, self.receive, self.send)
        except Exception:
            if not self.rejected:
                raise

    async def _reject(self, status: int, code: str, message: str) -> None:
        self.rejected = True
        if not self.response_started:
            self.response_started = True
            await _send_error(self._send, status, code, message)


class BodyLimitMiddleware:
    """Answer 413 ``body_too_large`` for HTTP request bodies over ``max_body_bytes``, 408 for slow bodies.

    With a ``Content-Length`` over the limit the app is never called and the
    body never read. A body without one (chunked) is counted as it streams,
    and refused by :class:`BodyGuard` as soon as it passes the limit; the
    server then closes the connection, since the rest of the body was not read.
    ``body_timeout=None`` turns the slow-body check off.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
        min_body_rate: float = DEFAULT_MIN_BODY_RATE,
        max_body_timeout: float = DEFAULT_MAX_BODY_TIMEOUT,
    ) -> None:
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.min_body_rate = min_body_rate
        self.max_body_timeout = max_body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_error(send, 413, "body_too_large", f"the request body is {declared} bytes; the limit is {limit}")
            return
        guard = BodyGuard(receive, send, limit=limit, timeout=self.body_timeout, min_rate=self.min_body_rate,
                          max_timeout=self.max_body_timeout)
        await guard.run(self.app, scope)


def h11_protocol(header_timeout: float = DEFAULT_HEADER_TIMEOUT) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, plus a deadline on each request head (uvicorn has none).

    Pass it as ``uvicorn.Config(http=...)``. A connection that has not sent a
    complete request line and headers within ``header_timeout`` seconds, from
    its opening or from the end of its previous response, is answered 408
    ``request_timeout`` if it sent part of a head, and closed either way.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None
        _head_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._head_timer is not None:
                self._head_bytes += len(data)
            super().data_received(data)

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a complete request head arrived
                self._disarm()

        def on_response_complete(self) -> None:
            self._arm()  # before the base class handles a pipelined request, which disarms it again
            super().on_response_complete()

        def _arm(self) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self._head_bytes = 0
                self._head_timer = self.loop.call_later(header_timeout, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing():
                return
            if self._head_bytes:
                headers, body = json_error(
                    408, "request_timeout", f"the request head did not arrive within {header_timeout:g} s",
                    {"Connection": "close"},
                )
                head = b"HTTP/1.1 408 Request Timeout\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers)
                self.transport.write(head + b"\r\n" + body)
            self.transport.close()

    return HeaderTimeoutH11Protocol


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    headers, body = json_error(status, code, message, {"Connection": "close"})
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""ASGI pieces that any app behind cutover can use.

:class:`BodyLimitMiddleware` refuses oversized request bodies before they are
read whole: from the ``Content-Length`` header when there is one, else as soon
as the streamed body passes the limit. Starlette and FastAPI read bodies into
memory on ``await request.body()`` with no limit of their own.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["BodyLimitMiddleware", "json_error"]


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of an error in the contract's shape: ``{"error": {"code", "message"}}``."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    return raw, body


class BodyLimitMiddleware:
    """Answer 413 ``body_too_large`` for HTTP request bodies over ``max_body_bytes``.

    With a ``Content-Length`` over the limit the app is never called and the
    body never read. A body without one (chunked) is counted as it streams;
    past the limit the app receives ``http.disconnect`` (so it stops reading),
    the client gets 413 unless the app had already started a response, and
    whatever the app sends afterwards is dropped. The server then closes the
    connection, since the rest of the body was not read.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_413(send, f"the request body is {declared} bytes; the limit is {limit}")
            return

        received = 0
        response_started = False
        rejected = False

        async def limited_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    rejected = True
                    if not response_started:
                        await _send_413(send, f"the request body passed the limit of {limit} bytes")
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if rejected:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        await self.app(scope, limited_receive, tracking_send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Send, message: str) -> None:
    headers, body = json_error(413, "body_too_large", message, {"Connection": "close"})
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})

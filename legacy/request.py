"""A twisted.web Request that refuses oversized bodies before reading them.

``twisted.web`` buffers a whole request body before ``render`` sees it. A
client announcing a 10 GB upload would be read to the end. This Request
answers 413 as soon as the headers show a ``Content-Length`` over the limit,
or as soon as a chunked body passes it, and closes the connection.
"""

from __future__ import annotations

from typing import Any

from twisted.web import server

from .errors import error_body


class LimitedRequest(server.Request):
    """Request with a body limit; ``site.max_body_bytes`` sets it."""

    _rejected = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Multipart bodies are parsed by the resource, off the loop, not here.
        self._parsePOSTFormSubmission = False
        self._received = 0

    @property
    def _limit(self) -> int:
        return int(getattr(self.channel.site, "max_body_bytes", 0) or 0)

    def gotLength(self, length: int | None) -> None:
        if length is not None and self._limit and length > self._limit:
            self._reject(f"the request body is {length} bytes; the limit is {self._limit}")
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._rejected:
            return
        self._received += len(data)
        if self._limit and self._received > self._limit:
            self._reject(f"the request body passed the limit of {self._limit} bytes")
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._rejected:
            return
        super().requestReceived(command, path, version)

    def _reject(self, message: str) -> None:
        """Answer 413 on the raw transport and hang up: the body is never read."""
        self._rejected = True
        body = error_body("body_too_large", message)
        transport = self.channel.transport
        transport.write(
            b"HTTP/1.1 413 Request Entity Too Large\r\n"
            b"Content-Type: application/json\r\n"
            b"Connection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        transport.loseConnection()


class LimitedSite(server.Site):
    """A Site whose requests carry the body limit."""

    requestFactory = LimitedRequest

    def __init__(self, resource: Any, max_body_bytes: int, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.max_body_bytes = max_body_bytes

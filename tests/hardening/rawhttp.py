"""HTTP by hand over asyncio streams, for what a polite client never sends: lying lengths, endless bodies, trickles.

Also the process's peak resident memory (the servers run in this process), to
show that a refused body was never held in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import WAIT

PIECE = b"\0" * 65536  # one buffer, sent again and again: the client itself never grows


@dataclass
class Answer:
    raw: bytes
    sent: int  # body bytes the server let us send before it answered or hung up

    @property
    def status(self) -> int:
        if not self.raw:
            return 0
        return int(self.raw.split(b" ", 2)[1])

    @property
    def error(self) -> dict[str, Any]:
        return json.loads(self.raw.partition(b"\r\n\r\n")[2])["error"]

    @property
    def headers(self) -> dict[str, str]:
        head = self.raw.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
        return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head)}


class _Client(asyncio.Protocol):
    """Keeps every byte the server sent, even when it then resets the connection (a 413 before a body it never read)."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.data = bytearray()
        self.answered: asyncio.Future[None] = loop.create_future()  # first byte back, or the connection gone
        self.closed: asyncio.Future[None] = loop.create_future()
        self.writable = asyncio.Event()
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        self.data += data
        if not self.answered.done():
            self.answered.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.answered, self.closed):
            if not future.done():
                future.set_result(None)
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


async def _first(awaitable: Any, stop: asyncio.Future[None]) -> tuple[bool, Any]:
    """Await ``awaitable`` unless ``stop`` completes first (bounded by WAIT); (True, result) if it finished."""
    task = asyncio.ensure_future(awaitable)
    await asyncio.wait({task, stop}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return True, task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
        await task
    if not stop.done():
        raise AssertionError(f"the server neither answered nor read on within {WAIT}s")
    return False, None


async def exchange(port: int, head: bytes, body: AsyncIterator[bytes] | None = None, *, eof: bool = False) -> Answer:
    """Send ``head``, then ``body`` piece by piece until the server answers or hangs up; read until it closes.

    ``eof``: then shut down our sending side (a half-close), as ``nc -N`` does.
    Everything is bounded by WAIT: a server that neither answers nor closes fails the test.
    """
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_connection(_Client, "127.0.0.1", port)
    sent = 0
    try:
        transport.write(head)
        if body is not None:
            pieces_left = body.__aiter__()
            try:
                while not client.answered.done():
                    got, piece = await _first(pieces_left.__anext__(), client.answered)
                    if not got:
                        break
                    writable, _ = await _first(client.writable.wait(), client.answered)
                    if not writable:
                        break
                    transport.write(piece)
                    sent += len(piece)
            except StopAsyncIteration:
                pass
            finally:
                await pieces_left.aclose()  # type: ignore[attr-defined]
        if eof and not client.closed.done():
            transport.write_eof()
        await asyncio.wait_for(asyncio.shield(client.closed), WAIT)
        return Answer(bytes(client.data), sent)
    finally:
        transport.abort()


async def pieces(total: int) -> AsyncIterator[bytes]:
    """``total`` bytes in 64 KiB pieces."""
    while total > 0:
        yield PIECE[:total]
        total -= len(PIECE)


async def chunked(limit_pieces: int) -> AsyncIterator[bytes]:
    """A chunked body that does not end (until ``limit_pieces``, a safety cap), in 64 KiB chunks."""
    frame = b"%x\r\n" % len(PIECE) + PIECE + b"\r\n"
    for _ in range(limit_pieces):
        yield frame


def _status_kib(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise LookupError(name)


@dataclass
class PeakGrowth:
    """Peak RSS of this process during a block, over its RSS at the start (KiB)."""

    kib: int = 0
    start: int = field(default=0, repr=False)


@contextlib.contextmanager
def peak_rss_growth() -> Iterator[PeakGrowth]:
    """Reset the kernel's high-water mark (``clear_refs`` 5), run the block, read VmHWM - VmRSS(start)."""
    Path("/proc/self/clear_refs").write_text("5")
    growth = PeakGrowth(start=_status_kib("VmRSS"))
    yield growth
    growth.kib = max(0, _status_kib("VmHWM") - growth.start)

"""The frames on a worker's private pipe, read and written without extra copies.

Each frame is a fixed header (body length, call id, kind, run time) and a body. The
parent writes frames with ``os.writev`` (header and pickled call as separate
buffers, never concatenated) and reads with ``os.read`` in large chunks, so a
loop turn's calls go in one write and a worker's results come back in one
read. A body larger than :data:`BIG` is read straight into its own buffer.

Parent -> worker: ``CALL`` (body: the pickled ``(fn, args, kwargs)``), ``CALL_BUFFERS`` (the
same with pickle protocol 5 out-of-band buffers: see :func:`buffers_head`),
``CANCEL`` (a prefetched call the worker must skip), ``EXIT``.
Worker -> parent: ``READY`` (its pid in the id field), ``INIT_FAILED`` (body: traceback text),
``OK`` (body: pickled result), ``OK_BYTES`` (body: a large ``bytes`` result itself, never pickled),
``ERROR`` (body: pickled ``(exception, traceback)``),
``ERROR_EXIT`` (the same, and the worker exits after it: it ran out of memory),
``SKIPPED`` (a cancelled call it did not run).
A worker's answer carries the seconds the call ran in the worker (0.0 in the parent's frames): the parent
sizes its prefetch from it, which a time measured across the pipe (queueing, a busy machine) would distort.
"""

from __future__ import annotations

import os
import select
import struct
from collections.abc import Sequence

HEADER = struct.Struct("<QqBf")
CALL, CANCEL, EXIT, CALL_BUFFERS = 1, 2, 3, 4
READY, INIT_FAILED, OK, ERROR, ERROR_EXIT, SKIPPED, OK_BYTES = 10, 11, 12, 13, 14, 15, 16
_COUNT = struct.Struct("<I")
CHUNK = 256 * 1024
#: The parent reads much less at a time: the frames of one read are settled in one loop callback (and
#: their waiters resumed in the next), so a read of a few dozen tiny answers keeps the loop's turns short
#: while 4000 calls are in flight. A larger answer is read straight into its own buffer (see
#: :class:`FrameReader`), so it still takes two reads, not one per chunk.
PARENT_CHUNK = 512
BIG = 64 * 1024
IOV_MAX = 512

Frame = tuple[int, int, bytes | bytearray, float]  # (call id, kind, body, seconds it ran)


def header(call_id: int, kind: int, length: int = 0, ran: float = 0.0) -> bytes:
    return HEADER.pack(length, call_id, kind, ran)


def buffers_head(buffers: Sequence[bytes]) -> bytes:
    """The start of a ``CALL_BUFFERS`` body: the buffer count and lengths. The pickle follows, then the
    buffers themselves, each written from its own memory."""
    return _COUNT.pack(len(buffers)) + struct.pack(f"<{len(buffers)}Q", *map(len, buffers))


def split_buffers(body: bytes | bytearray) -> tuple[memoryview, list[bytes]]:
    """A ``CALL_BUFFERS`` body as (the pickle, its buffers); each buffer is copied once, into the ``bytes``
    the caller passed."""
    view = memoryview(body)
    (count,) = _COUNT.unpack_from(view, 0)
    lengths = struct.unpack_from(f"<{count}Q", view, _COUNT.size)
    position = len(view) - sum(lengths)
    pickled = view[_COUNT.size + 8 * count:position]
    buffers = []
    for length in lengths:
        buffers.append(bytes(view[position:position + length]))
        position += length
    return pickled, buffers


class FrameReader:
    """Turns whatever a read returns into whole frames; keeps the partial rest for the next read.

    A frame that does not fit in the rest of a read and is larger than a read (or than :data:`BIG`)
    gets a buffer of its own, which the next read fills directly."""

    __slots__ = ("_buf", "_big", "_filled", "_big_head", "_chunk", "_direct")

    def __init__(self, chunk: int = CHUNK) -> None:
        self._chunk = chunk
        self._direct = min(BIG, chunk)
        self._buf = bytearray()
        self._big: bytearray | None = None
        self._filled = 0
        self._big_head: tuple[int, int, float] = (0, 0, 0.0)

    def read(self, fd: int) -> list[Frame] | None:
        """The frames completed by one read of ``fd``; None at end of file. May raise BlockingIOError."""
        if self._big is not None:
            with memoryview(self._big) as view:
                n = os.readv(fd, [view[self._filled:]])
            if n == 0:
                return None
            self._filled += n
            if self._filled < len(self._big):
                return []
            body, self._big = self._big, None
            call_id, kind, ran = self._big_head
            return [(call_id, kind, body, ran)]
        data: bytes | bytearray = os.read(fd, self._chunk)
        if not data:
            return None
        if self._buf:  # the rest of the last read leads
            self._buf += data
            data = self._buf
        frames: list[Frame] = []
        pos, size, end_of_data = 0, HEADER.size, len(data)
        unpack = HEADER.unpack_from
        while end_of_data - pos >= size:
            length, call_id, kind, ran = unpack(data, pos)
            start = pos + size
            end = start + length
            if end > end_of_data:
                if length >= self._direct:  # read the rest straight into the body's own buffer
                    big = self._big = bytearray(length)
                    with memoryview(data) as view:
                        big[:end_of_data - start] = view[start:end_of_data]
                    self._filled, self._big_head = end_of_data - start, (call_id, kind, ran)
                    pos = end_of_data
                break
            frames.append((call_id, kind, data[start:end], ran))  # a small body: one copy, no view to release
            pos = end
        if pos == end_of_data:
            self._buf = bytearray()
        elif type(data) is bytearray:
            del data[:pos]
            self._buf = data
        else:
            self._buf = bytearray(data[pos:])
        return frames


def write_all(fd: int, parts: Sequence[bytes | bytearray | memoryview]) -> None:
    """Write every part (the worker's side), waiting for room when the pipe is full."""
    pending = [memoryview(p) for p in parts if len(p)]
    while pending:
        try:
            n = os.writev(fd, pending[:IOV_MAX])
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        while n and pending:
            first = pending[0]
            if n >= len(first):
                n -= len(first)
                pending.pop(0)
            else:
                pending[0] = first[n:]
                n = 0

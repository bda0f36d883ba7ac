"""The frames on a worker's private pipe, read and written without extra copies.

Each frame is a fixed header (body length, call id, kind) and a body. The
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
"""

from __future__ import annotations

import os
import select
import struct
from collections.abc import Sequence

HEADER = struct.Struct("<QqB")
CALL, CANCEL, EXIT, CALL_BUFFERS = 1, 2, 3, 4
READY, INIT_FAILED, OK, ERROR, ERROR_EXIT, SKIPPED, OK_BYTES = 10, 11, 12, 13, 14, 15, 16
_COUNT = struct.Struct("<I")
CHUNK = 256 * 1024
#: The parent reads less at a time: the frames of one read are handled in one loop callback, and
#: a thousand tiny results at once would hold the loop for milliseconds.
PARENT_CHUNK = 16 * 1024
BIG = 64 * 1024
IOV_MAX = 512

Frame = tuple[int, int, bytes | bytearray]  # (call id, kind, body)


def header(call_id: int, kind: int, length: int = 0) -> bytes:
    return HEADER.pack(length, call_id, kind)


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
    """Turns whatever a read returns into whole frames; keeps the partial rest for the next read."""

    __slots__ = ("_buf", "_big", "_filled", "_big_head", "_chunk")

    def __init__(self, chunk: int = CHUNK) -> None:
        self._chunk = chunk
        self._buf = bytearray()
        self._big: bytearray | None = None
        self._filled = 0
        self._big_head = (0, 0)

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
            return [(*self._big_head, body)]
        data = os.read(fd, self._chunk)
        if not data:
            return None
        buf = self._buf
        if not buf:
            buf = bytearray(data)
        else:
            buf += data
        frames: list[Frame] = []
        pos, size, end_of_data = 0, HEADER.size, len(buf)
        with memoryview(buf) as view:
            while end_of_data - pos >= size:
                length, call_id, kind = HEADER.unpack_from(buf, pos)
                end = pos + size + length
                if end > end_of_data:
                    if length >= BIG:  # read the rest straight into the body's own buffer
                        self._big = bytearray(length)
                        have = end_of_data - pos - size
                        self._big[:have] = view[pos + size:end_of_data]
                        self._filled, self._big_head = have, (call_id, kind)
                        pos = end_of_data
                    break
                frames.append((call_id, kind, bytes(view[pos + size:end])))
                pos = end
        if pos == end_of_data:
            self._buf = bytearray()
        else:
            del buf[:pos]
            self._buf = buf
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

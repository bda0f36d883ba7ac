"""Mutated raw HTTP requests, and a bounded sender that sorts the answers by status class.

Each request starts as one of a few valid requests to the contract's routes
(with ``Connection: close``, so an answer ends the exchange) and takes one to
three mutations: bytes flipped, inserted, deleted or cut off, a lying or
malformed ``Content-Length``, broken chunked framing, a strange method,
version, target or header line, CR/LF and NUL smuggled in. A ``random.Random``
with a fixed seed makes every run send the same bytes.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tests.synth import bursts, encode, wav

TINY_WAV = wav(bursts(20.0, seconds=1.0))
TINY_PNG = encode(np.full((24, 32, 3), 200, dtype=np.uint8))


def _request(method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


BASES = [
    _request("GET", "/status", []),
    _request("POST", "/v1/domains", [("Content-Type", "application/json")], json.dumps({"text": "a.example.com b.org"}).encode()),
    _request("POST", "/v1/jobs", [("Content-Type", "application/json")], json.dumps({"kind": "domains", "text": "x.io"}).encode()),
    _request("GET", "/v1/jobs/0123456789abcdef0123456789abcdef", []),
    _request("DELETE", "/v1/jobs/nope", []),
    _request("POST", "/v1/audio/analyze?hop_ms=20&threshold=6", [("Content-Type", "audio/wav")], TINY_WAV),
    _request("POST", "/v1/faces", [("Content-Type", "image/png")], TINY_PNG),
    _request("GET", "/v1/nowhere?x=1", [("Accept", "application/json")]),
]
ODD = [b"\x00", b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b"%", b"\xff", b"\x80", b"\xc3\x28", b"?", b"#", b"/..", b";"]


def _head_end(raw: bytes) -> int:
    end = raw.find(b"\r\n\r\n")
    return len(raw) if end < 0 else end


def flip(rng: random.Random, raw: bytes) -> bytes:
    i = rng.randrange(len(raw))
    return raw[:i] + bytes([rng.randrange(256)]) + raw[i + 1:]


def insert(rng: random.Random, raw: bytes) -> bytes:
    i = rng.randrange(len(raw) + 1)
    return raw[:i] + rng.choice(ODD) * rng.randint(1, 3) + raw[i:]


def delete(rng: random.Random, raw: bytes) -> bytes:
    i = rng.randrange(len(raw))
    return raw[:i] + raw[i + rng.randint(1, 16):]


def truncate(rng: random.Random, raw: bytes) -> bytes:
    return raw[: rng.randrange(1, len(raw))]


def content_length(rng: random.Random, raw: bytes) -> bytes:
    value = rng.choice([b"0", b"1", b"-1", b"99999999999999999999", b"1e3", b"12, 12", b"0x10", b" 7 ", b"", b"+5",
                        str(rng.randrange(1, 5000)).encode()])
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"content-length")]
    return b"\r\n".join([*lines, b"Content-Length: " + value]) + sep + body


def chunked(rng: random.Random, raw: bytes) -> bytes:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"content-length")]
    size = rng.choice([b"%x" % len(body), b"zz", b"-1", b"%x" % (len(body) + 7), b"ffffffffffffffff", b"%x;ext=1" % len(body)])
    end = rng.choice([b"\r\n0\r\n\r\n", b"\r\n", b"0\r\n", b"\r\n0\r\nX-Trailer: 1\r\n\r\n", b""])
    return b"\r\n".join([*lines, b"Transfer-Encoding: " + rng.choice([b"chunked", b"gzip, chunked", b"chunked, chunked", b"xchunked"])]) \
        + b"\r\n\r\n" + size + b"\r\n" + body + end


def request_line(rng: random.Random, raw: bytes) -> bytes:
    line, sep, rest = raw.partition(b"\r\n")
    method, _, tail = line.partition(b" ")
    target, _, version = tail.rpartition(b" ")
    which = rng.randrange(3)
    if which == 0:
        method = rng.choice([b"get", b"PATCH", b"PUT", b"OPTIONS", b"HEAD", b"TRACE", b"CONNECT", b"G\x00T", b"", b"X" * 300])
    elif which == 1:
        version = rng.choice([b"HTTP/1.0", b"HTTP/2.0", b"HTTP/9.9", b"HTTP/1", b"http/1.1", b"", b"HTTP/1.1 extra"])
    else:
        target = rng.choice([b"*", b"//status", b"/status/../status", b"/%zz", b"/%00", b"/\xff", b"http://x/status",
                             b"/v1/jobs/" + b"a" * 500, b"/status?" + b"&" * 200, b"", b"/v1/domains#frag"])
    return b" ".join(part for part in (method, target, version)) + sep + rest


def header_line(rng: random.Random, raw: bytes) -> bytes:
    end = _head_end(raw)
    at = raw.find(b"\r\n") + 2
    extra = rng.choice([
        b"X-Space : 1", b" Folded: yes", b"No-Colon", b":empty-name", b"X-Ctl: a\x01b", b"X-Nul: \x00",
        b"Host: second.example", b"Content-Type: text/plain", b"Content-Type: multipart/form-data; boundary=",
        b"Expect: 100-continue", b"Upgrade: websocket\r\nConnection: upgrade", b"X-Long: " + b"v" * rng.choice([100, 5000, 9000]),
        b"X-Utf8: \xc3\xa9\xff", b"Transfer-Encoding: identity",
    ])
    if end <= at:
        return raw
    return raw[:at] + extra + b"\r\n" + raw[at:]


def bare_lf(rng: random.Random, raw: bytes) -> bytes:
    end = _head_end(raw)
    return raw[:end].replace(b"\r\n", b"\n") + raw[end:]


MUTATIONS: list[Callable[[random.Random, bytes], bytes]] = [
    flip, insert, delete, truncate, content_length, chunked, request_line, header_line, bare_lf,
]


def mutated(count: int, seed: int = 14) -> list[bytes]:
    """``count`` mutated requests, the same on every run."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        raw = rng.choice(BASES)
        for _ in range(rng.randint(1, 3)):
            raw = rng.choice(MUTATIONS)(rng, raw) or raw
        out.append(raw)
    return out


@dataclass
class Tally:
    """Answers by status class (``2xx`` ... ``5xx``), ``closed`` (hung up without a word), ``hang``."""

    classes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    shaped: int = 0  # 4xx answers in the contract's error shape
    judged: int = 0  # 4xx answers with a body to judge (not to HEAD)
    bad: list[str] = field(default_factory=list)
    unshaped: list[str] = field(default_factory=list)  # 4xx answers without it: what was sent, what came back
    closed: list[bytes] = field(default_factory=list)  # requests the server hung up on without a word

    def summary(self) -> str:
        order = ("2xx", "3xx", "4xx", "5xx", "closed", "hang")
        return ", ".join(f"{self.classes[k]} {k}" for k in order if self.classes[k])


class _Collect(asyncio.Protocol):
    """Keeps every byte the server sent, also when it then resets the connection (it hung up on unread bytes):
    a ``StreamReader`` would raise the reset before handing over what had arrived."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.changed = asyncio.Event()
        self.gone = False

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.changed.set()


def _complete(got: bytearray) -> bool:
    """The whole first final answer is in (interim 1xx answers are dropped from ``got``), or its head if unframed."""
    head_end = got.find(b"\r\n\r\n")
    while head_end >= 0 and got.startswith(b"HTTP/1.1 1"):  # an interim answer (100 Continue)
        del got[: head_end + 4]
        head_end = got.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    length = next((int(line.split(b":", 1)[1]) for line in got[:head_end].split(b"\r\n")[1:]
                   if line.lower().startswith(b"content-length:")), None)
    return length is None or len(got) >= head_end + 4 + length


async def answer_of(port: int, raw: bytes, hang_after: float) -> tuple[str, bytes]:
    """Send ``raw``; ``("answer", bytes)`` once the server answers, ``("closed", b"")`` or ``("hang", b"")``."""
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_connection(_Collect, "127.0.0.1", port)
    try:
        transport.write(raw)
        try:
            async with asyncio.timeout(hang_after):
                while not client.gone and not _complete(client.data):
                    await client.changed.wait()
                    client.changed.clear()
        except TimeoutError:
            pass
        got = bytes(client.data)
        if got:
            return "answer", got
        return ("closed", b"") if client.gone else ("hang", b"")
    finally:
        transport.abort()


async def send_all(port: int, requests: list[bytes], *, concurrency: int, hang_after: float) -> Tally:
    tally = Tally()
    slots = asyncio.Semaphore(concurrency)

    async def one(raw: bytes) -> None:
        async with slots:
            kind, got = await answer_of(port, raw, hang_after)
        if kind != "answer":
            tally.classes[kind] += 1
            if kind == "closed":
                tally.closed.append(raw)
            if kind == "hang":
                tally.bad.append(f"no answer within {hang_after}s to {raw[:120]!r}")
            return
        try:
            status = int(got.split(b" ", 2)[1])
        except (IndexError, ValueError):
            tally.classes["closed"] += 1
            tally.bad.append(f"not an HTTP answer {got[:80]!r} to {raw[:120]!r}")
            return
        tally.statuses[status] += 1
        tally.classes[f"{status // 100}xx"] += 1
        if status >= 500:
            tally.bad.append(f"{status} to {raw[:160]!r}: {got[:200]!r}")
        if 400 <= status < 500 and not raw.startswith(b"HEAD "):  # an answer to HEAD has no body to judge
            head, _, body = got.partition(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                           if line.lower().startswith(b"content-length:")), len(body))
            body = body[:length]  # what follows is the answer to the next (pipelined) request
            try:
                error = json.loads(body)["error"]
                ok = isinstance(error["code"], str) and isinstance(error["message"], str)
            except (ValueError, KeyError, TypeError):
                ok = False
            tally.judged += 1
            tally.shaped += ok
            if not ok:
                tally.unshaped.append(f"{raw[:160]!r} -> {got[:240]!r}")

    await asyncio.gather(*(one(raw) for raw in requests))
    return tally

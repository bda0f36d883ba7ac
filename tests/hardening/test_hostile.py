"""Hand-made hostile input through the front door, against each stack.

tests/api already checks, per stack directly, the basic 413 cases, one PNG
bomb on /v1/faces and a few bad WAVs and content types; here the same families
are pushed further and through the front door: lying and endless bodies with
the server's memory watched, bombs in other formats and endpoints, lying WAV
headers, bytes that are not UTF-8, JSON nested past the recursion limit, and
clients too slow to finish a request.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bridge.testing import asyncio_test
from tests.conftest import WAIT
from tests.hardening.conftest import BODY_LIMIT, HEADER_TIMEOUT, Door, patient
from tests.hardening.rawhttp import Answer, chunked, exchange, peak_rss_growth, pieces
from tests.reliability import record
from tests.synth import bursts, png_header_only, riff, wav

MIB = 1024 * 1024
#: A server that held a refused body would grow by about what it read; one that refuses it early stays flat.
#: A chunked body has no length to refuse it by: it may be read up to the limit, never past it.
FLAT_KIB = 8 * 1024


def client(door: Door) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=door.url, timeout=WAIT)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The contract's error object; fails on any other shape."""
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"} and body["error"]["message"], body
    return body["error"]


# ---------------------------------------------------------------- bodies over the limit


def head(path: str, content_type: str, framing: str) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n{framing}\r\n\r\n".encode()


async def just_over(door: Door) -> Answer:
    return await exchange(door.port, head("/v1/faces", "image/png", f"Content-Length: {BODY_LIMIT + 1}"),
                          pieces(BODY_LIMIT + 1))


async def gib_announced(door: Door) -> Answer:
    return await exchange(door.port, head("/v1/ocr", "image/png", f"Content-Length: {1024 * MIB}"), pieces(MIB))


async def endless_chunked(door: Door) -> Answer:
    return await exchange(door.port, head("/v1/audio/analyze", "audio/wav", "Transfer-Encoding: chunked"),
                          chunked(4 * BODY_LIMIT // 65536))


async def endless_chunked_json(door: Door) -> Answer:
    return await exchange(door.port, head("/v1/domains", "application/json", "Transfer-Encoding: chunked"),
                          chunked(4 * BODY_LIMIT // 65536))


@pytest.mark.parametrize("attack", [just_over, gib_announced, endless_chunked, endless_chunked_json],
                         ids=lambda f: f.__name__)
@asyncio_test
async def test_bodies_over_the_limit_are_refused_before_they_are_read_and_memory_stays_flat(door: Door, attack: Any) -> None:
    with patient(door), peak_rss_growth() as growth:
        answer = await attack(door)
    bound = FLAT_KIB if attack in (just_over, gib_announced) else BODY_LIMIT // 1024 + FLAT_KIB
    ok = answer.status == 413 and answer.error["code"] == "body_too_large" and growth.kib < bound
    record("hostile input", f"body over the limit ({attack.__name__}), {door.stack}", tried=1, survived=int(ok),
           detail=f"status {answer.status}, {answer.sent / MIB:.1f} MiB accepted before the answer, "
                  f"peak RSS +{growth.kib / 1024:.1f} MiB")
    assert answer.status == 413, answer.raw[:300]
    assert answer.error["code"] == "body_too_large"
    assert answer.headers.get("connection") == "close"
    if attack is gib_announced:  # refused from the headers: the server need not read what we sent
        assert answer.sent <= MIB
    # the endless body was cut off well before the cap of 4x the limit (socket buffers take a few MiB)
    assert answer.sent < 2 * BODY_LIMIT
    assert growth.kib < bound, f"the server's peak RSS grew by {growth.kib} KiB"


# ---------------------------------------------------------------- images and WAVs that lie


def bmp_header(width: int, height: int) -> bytes:
    """A 54-byte BMP whose header claims ``width x height`` 24-bit pixels, and has none."""
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)


def gif_header(width: int, height: int) -> bytes:
    """A GIF whose screen and first frame claim ``width x height``, with one pixel of data."""
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b"\x2c"
            + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00\x3b")


def fmt(channels: int, rate: int, bits: int, tag: int = 1) -> bytes:
    """A WAV fmt chunk body, any field allowed to lie (derived fields wrap instead of failing to pack)."""
    align = channels * ((bits + 7) // 8)
    return struct.pack("<HHIIHH", tag, channels, rate, (rate * align) & 0xFFFFFFFF, align & 0xFFFF, bits)


GOOD_WAV = wav(bursts(20.0, seconds=1.0))
LIES: list[tuple[str, str, bytes, str]] = [
    # (name, path, body, expected code); every answer is a 422
    ("png 100000x100000 to ocr", "/v1/ocr", png_header_only(100_000, 100_000), "image_too_large"),
    ("bmp 100000x100000", "/v1/faces", bmp_header(100_000, 100_000), "image_too_large"),
    ("bmp negative width", "/v1/faces", bmp_header(-5, 3), "image_too_large"),
    ("gif 65535x65535", "/v1/ocr", gif_header(65535, 65535), "image_too_large"),
    ("wav data size 1 GB in 108 bytes", "/v1/audio/analyze", riff(fmt(1, 16000, 16), b"\0" * 64, data_size=10**9), "corrupt_wav"),
    ("wav cut in half", "/v1/audio/analyze", GOOD_WAV[: len(GOOD_WAV) // 2], "corrupt_wav"),
    ("wav header only", "/v1/audio/analyze", GOOD_WAV[:44], "corrupt_wav"),
    ("wav zero channels", "/v1/audio/analyze", riff(fmt(0, 16000, 16), b"\0" * 64), "corrupt_wav"),
    ("wav 65535 channels", "/v1/audio/analyze", riff(fmt(65535, 16000, 16), b"\0" * 64), "empty_input"),
    ("wav sample rate 0", "/v1/audio/analyze", riff(fmt(1, 0, 16), b"\0" * 64), "corrupt_wav"),
    ("wav sample rate 4 GHz", "/v1/audio/analyze", riff(fmt(1, 4_000_000_000, 16), b"\0" * 64), "corrupt_wav"),
    ("wav 1 Hz, 32000 s long", "/v1/audio/analyze", riff(fmt(1, 1, 16), b"\0" * 64000), "audio_too_long"),
    ("wav 0-bit samples", "/v1/audio/analyze", riff(fmt(1, 16000, 0), b"\0" * 64), "corrupt_wav"),
    ("wav fmt chunk claims 2 GB", "/v1/audio/analyze", b"RIFF\0\0\0\0WAVEfmt \xff\xff\xff\x7f" + b"\0" * 16, "corrupt_wav"),
]


@asyncio_test
async def test_bombs_and_lying_headers_get_422_with_the_kernel_code(door: Door) -> None:
    seen: list[str] = []
    async with client(door) as http:
        for name, path, body, code in LIES:
            content_type = "audio/wav" if path.startswith("/v1/audio") else "image/png"
            response = await http.post(path, content=body, headers={"content-type": content_type})
            got = error_of(response)["code"] if response.status_code >= 400 else "none"
            seen.append(f"{name}: {response.status_code} {got}" if (response.status_code, got) != (422, code) else "")
        # the same bytes as a job fail the job with the same code, and the job API stays up
        job = await http.post("/v1/jobs", json={"kind": "faces", "data_base64": base64.b64encode(bmp_header(100_000, 100_000)).decode()})
        assert job.status_code == 202, job.text
        job_id = job.json()["job_id"]
        for _ in range(int(WAIT / 0.02)):
            state = (await http.get(f"/v1/jobs/{job_id}")).json()
            if state["status"] not in ("queued", "running"):
                break
            await asyncio.sleep(0.02)
    wrong = [line for line in seen if line]
    job_ok = state["status"] == "failed" and state["error"]["code"] == "image_too_large"
    record("hostile input", f"decompression bombs and lying WAV headers, {door.stack}", tried=len(LIES) + 1,
           survived=len(LIES) - len(wrong) + int(job_ok), detail="all 422 with the kernel's code" if not wrong else "; ".join(wrong))
    assert not wrong, wrong
    assert job_ok, state


# ---------------------------------------------------------------- text, JSON and content types

DEEP = 100_000
CASES: list[tuple[str, str, dict[str, str], bytes, int, str]] = [
    # (name, path, headers, body, status, code)
    ("json not utf-8", "/v1/domains", {"content-type": "application/json"}, b'{"text": "caf\xe9 \xff\xfe a.example.com"}', 400, "malformed_json"),
    ("json lone surrogate escape", "/v1/domains", {"content-type": "application/json"}, b'{"text": "\\ud800 a.example.com"}', 200, ""),
    ("json nul and controls", "/v1/domains", {"content-type": "application/json"}, b'{"text": "\\u0000\\u001b[31m a.example.com"}', 200, ""),
    ("text/plain latin-1", "/v1/domains", {"content-type": "text/plain; charset=latin-1"}, b"caf\xe9.example.com", 415, "unsupported_media_type"),
    (f"[ x {DEEP}", "/v1/domains", {"content-type": "application/json"}, b"[" * DEEP, 400, "malformed_json"),
    (f'{{"a": x {DEEP}', "/v1/domains", {"content-type": "application/json"}, b'{"a":' * DEEP, 400, "malformed_json"),
    ("[ x 5000, closed: valid, past the parser's depth", "/v1/domains", {"content-type": "application/json"},
     b"[" * 5000 + b"]" * 5000, 400, "malformed_json"),
    ("nested 500, valid", "/v1/domains", {"content-type": "application/json"},
     b'{"text": "a.example.com", "x": ' + b"[" * 500 + b"]" * 500 + b"}", 200, ""),
    (f"job [ x {DEEP}", "/v1/jobs", {"content-type": "application/json"}, b"[" * DEEP, 400, "malformed_json"),
    ("job lone surrogate text", "/v1/jobs", {"content-type": "application/json"}, b'{"kind": "domains", "text": "\\udfff x.org"}', 202, ""),
    ("no content type", "/v1/domains", {}, b'{"text": "a.example.com"}', 415, "unsupported_media_type"),
    ("json declared as image", "/v1/faces", {"content-type": "application/json"}, b'{"text": "a"}', 415, "unsupported_media_type"),
    ("multipart without boundary", "/v1/faces", {"content-type": "multipart/form-data"}, b"--x\r\n\r\n", 400, "malformed_multipart"),
    ("multipart, no parts", "/v1/ocr", {"content-type": "multipart/form-data; boundary=b"}, b"--b--\r\n", 400, "malformed_multipart"),
    ("content type junk", "/v1/audio/analyze", {"content-type": "\x7f;;;=="}, GOOD_WAV, 415, "unsupported_media_type"),
    ("job upload as text", "/v1/jobs?kind=audio", {"content-type": "text/csv"}, GOOD_WAV, 415, "unsupported_media_type"),
    ("kind not utf-8", "/v1/jobs?kind=%FF%FE", {"content-type": "image/png"}, b"x", 422, "invalid_parameter"),
    ("query not utf-8", "/v1/audio/analyze?hop_ms=%FF", {"content-type": "audio/wav"}, GOOD_WAV, 422, "invalid_parameter"),
]


@asyncio_test
async def test_undecodable_deep_and_mistyped_bodies_get_the_contract_answer(door: Door) -> None:
    wrong: list[str] = []
    async with client(door) as http:
        for name, path, headers, body, status, code in CASES:
            response = await http.post(path, content=body, headers=headers)
            got = error_of(response)["code"] if response.status_code >= 400 else ""
            if (response.status_code, got) != (status, code):
                wrong.append(f"{name}: {response.status_code} {response.text[:160]}")
    record("hostile input", f"non-UTF-8, nested JSON, wrong content types, {door.stack}", tried=len(CASES),
           survived=len(CASES) - len(wrong), detail=f"JSON nested {DEEP} deep: 400" if not wrong else "; ".join(wrong))
    assert not wrong, "\n".join(wrong)


# ---------------------------------------------------------------- slow clients


async def trickle(framing: str, every: float = 0.05) -> AsyncIterator[bytes]:
    """One byte at a time, forever (the server has to stop it): a slow-loris body."""
    while True:
        yield b"1\r\nx\r\n" if framing == "chunked" else b"x"
        await asyncio.sleep(every)  # the attack itself: bytes arrive slowly, never stop


async def fast_enough_forever() -> AsyncIterator[bytes]:
    """100 kB/s, far above the rate that earns more time, and never done: only the cap stops it."""
    while True:
        yield b"x" * 2000
        await asyncio.sleep(0.02)  # the attack itself: a steady stream that outlasts any fair upload


async def nothing_more() -> AsyncIterator[bytes]:
    """A body that starts and then stalls: ten bytes, then silence (until the server gives up)."""
    yield b"0123456789"
    await asyncio.Event().wait()  # never set: bounded by the server's timeout, or WAIT in exchange()


SLOW = {
    "head never ends": (b"POST /v1/domains HTTP/1.1\r\nHost: x\r\nContent-Type: appl", None),
    "body stalls": (head("/v1/domains", "application/json", "Content-Length: 1000"), nothing_more),
    "body trickles, length": (head("/v1/faces", "image/png", "Content-Length: 100000"), lambda: trickle("length")),
    "body trickles, chunked": (head("/v1/faces", "image/png", "Transfer-Encoding: chunked"), lambda: trickle("chunked")),
    "body fast enough but endless": (head("/v1/faces", "image/png", "Content-Length: 20000000"), fast_enough_forever),
}


@pytest.mark.parametrize("name", list(SLOW))
@asyncio_test
async def test_slow_clients_are_timed_out_with_408_and_closed(door: Door, name: str) -> None:
    request_head, body = SLOW[name]
    answer = await exchange(door.port, request_head, body() if body is not None else None)
    ok = answer.status == 408 and answer.error["code"] == "request_timeout"
    record("hostile input", f"slow-loris: {name}, {door.stack}", tried=1, survived=int(ok),
           detail=f"status {answer.status} after {answer.sent} body bytes; timeouts lowered to {HEADER_TIMEOUT:g} s")
    assert answer.status == 408, answer.raw[:300]
    assert answer.error["code"] == "request_timeout"
    assert answer.headers.get("connection") == "close"
    # and the service is still fine
    async with client(door) as http:
        response = await http.post("/v1/domains", json={"text": "after.example.com"})
    assert response.json()["domains"] == ["after.example.com"]


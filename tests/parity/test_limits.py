"""The parity suite once more at the stacks' real default limits: every limit and its error reached over HTTP.

The rest of the suite runs its servers under a 1 MiB body limit, so a limit
and its error never meet a real-size request there. Here both stacks run with
their defaults (20 MiB of body, 16 MP of pixels, 100,000 audio frames, 1 MiB
of answer, domain texts split in 1,000,000-character chunks), and each limit
is crossed, and just not crossed, with the two answers compared.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import pytest_twisted
from PIL import Image

from bridge import SharedPool, as_deferred
from bridge.parity import DiffRules, Exchange, diff
from bridge.parity.plugin import AssertSame
from bridge.testing import asyncio_test
from legacy.settings import LegacySettings
from modern.settings import ModernSettings
from tests.conftest import WAIT
from tests.synth import bursts, encode, wav

MIB = 1024 * 1024
WAV = wav(bursts(20.0, seconds=1.0))
AUDIO = {"content-type": "audio/wav"}
CHUNK = ModernSettings().domain_chunk_chars


@pytest.fixture(scope="module")
def parity_urls(warm_pool: SharedPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Both stacks with every limit at its default (the suite's conftest lowers the body limit)."""
    from tests.api.conftest import ModernServer, start_legacy

    assert LegacySettings().max_body_bytes == ModernSettings().max_body_bytes == 20 * MIB
    legacy, legacy_url = start_legacy(warm_pool, Path(tmp_path_factory.mktemp("limits-legacy")),
                                      max_body_bytes=LegacySettings().max_body_bytes)
    modern = ModernServer(warm_pool, Path(tmp_path_factory.mktemp("limits-modern")),
                          max_body_bytes=ModernSettings().max_body_bytes)
    try:
        modern_url = pytest_twisted.blockon(as_deferred(modern.start()))
        yield {"legacy": legacy_url, "modern": modern_url}
    finally:
        pytest_twisted.blockon(as_deferred(modern.stop()))
        pytest_twisted.blockon(legacy.stop())


async def same_error(assert_same: AssertSame, path: str, code: str, **kwargs: Any) -> None:
    legacy, _ = await assert_same("POST", path, rules=DiffRules(), **kwargs)  # the message too
    assert legacy.status_code in (413, 422) and legacy.json()["error"]["code"] == code, legacy.text


async def announced(url: str, length: int) -> Exchange:
    """The answer to a POST that announces ``length`` bytes and sends none: refused from its headers."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(f"POST /v1/faces HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {length}\r\n"
                     "Connection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return Exchange(int(lines[0].split(" ")[1]), headers, body)


@asyncio_test
async def test_the_body_limit_at_20_mib(assert_same: AssertSame, parity_urls: dict[str, str]) -> None:
    legacy, modern = [await announced(parity_urls[stack], 20 * MIB + 1) for stack in ("legacy", "modern")]
    assert legacy.status == 413 and json.loads(legacy.body)["error"]["code"] == "body_too_large"
    assert diff(legacy, modern, DiffRules()).equal, diff(legacy, modern, DiffRules()).to_text()
    # just under it, the body is read and judged as an image
    await same_error(assert_same, "/v1/faces", "undecodable_image", content=b"\0" * (20 * MIB),
                     headers={"content-type": "image/png"})


@asyncio_test
async def test_the_pixel_limit_at_16_mp(assert_same: AssertSame) -> None:
    await same_error(assert_same, "/v1/faces", "image_too_large", content=encode(Image.new("RGB", (4001, 4000), "white")),
                     headers={"content-type": "image/png"})
    legacy, _ = await assert_same("POST", "/v1/faces", content=encode(Image.new("RGB", (4000, 4000), "white")),
                                  headers={"content-type": "image/png"})
    assert legacy.status_code == 200


@asyncio_test
async def test_the_frame_limit(assert_same: AssertSame) -> None:
    # a frame per sample at the smallest hop: 7 s at 16 kHz is 112,000 frames, over the 100,000 allowed
    long_wav = wav(bursts(20.0, seconds=7.0))
    await same_error(assert_same, "/v1/audio/analyze?hop_ms=0.0001", "too_many_frames", content=long_wav, headers=AUDIO)
    legacy, _ = await assert_same("POST", "/v1/audio/analyze?hop_ms=1", content=long_wav, headers=AUDIO)
    assert legacy.status_code == 200, legacy.text


@asyncio_test
async def test_the_answer_limit_and_domain_chunks(assert_same: AssertSame) -> None:
    await same_error(assert_same, "/v1/domains", "output_too_large",
                     json={"text": " ".join(f"d{i}.example.com" for i in range(70_000))})
    # a text over several chunks: each chunk names its own domains, and their order must survive the merge
    filler = "x " * (CHUNK // 2)
    text = " ".join(f"{filler} chunk{i}.example.com" for i in range(3))
    legacy, _ = await assert_same("POST", "/v1/domains", json={"text": text})
    assert legacy.json()["domains"] == ["chunk0.example.com", "chunk1.example.com", "chunk2.example.com"]


@asyncio_test
async def test_an_empty_wav_and_silence(assert_same: AssertSame) -> None:
    await assert_same("POST", "/v1/audio/analyze", content=wav(np.zeros(1)), headers=AUDIO)
    await assert_same("POST", "/v1/audio/analyze", content=wav(np.zeros(16_000), width=1), headers=AUDIO)

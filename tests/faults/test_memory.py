"""A worker at its memory ceiling on a request (not a job): both stacks answer 500 ``out_of_memory``.

The pool's workers here have their address space capped 96 MB above their
size after start-up (what a container limit, or the pool's own ceiling, does).
A WAV within every limit still needs more than that to analyse, so the kernel
raises MemoryError in the worker; the worker lives on, and the next request
is served.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from bridge import SharedPool, as_future
from bridge.testing import asyncio_fixture, asyncio_test
from tests.api.conftest import ModernServer, start_legacy
from tests.conftest import WAIT
from tests.faults import jobfns
from tests.reliability import record
from tests.synth import bursts, wav

BIG_WAV = wav(np.random.default_rng(5).uniform(-0.5, 0.5, 8 * 1024 * 1024), rate=16_000)  # 16 MiB, 524 s
SMALL_WAV = wav(bursts(20.0, seconds=1.0))


@pytest.fixture
@asyncio_fixture
async def capped() -> AsyncIterator[SharedPool]:
    async with SharedPool(processes=1, cpus=1, initializer=jobfns.cap_address_space, initargs=(96,)) as pool:
        yield pool


@asyncio_test
async def test_a_worker_out_of_memory_on_a_request_answers_out_of_memory_on_both_stacks(
    capped: SharedPool, tmp_path: Path
) -> None:
    answers = {}
    legacy, legacy_url = start_legacy(capped, tmp_path / "legacy", max_body_bytes=20 * 1024 * 1024)
    modern = ModernServer(capped, tmp_path / "modern", max_body_bytes=20 * 1024 * 1024)
    try:
        for stack, url in (("legacy", legacy_url), ("modern", await modern.start())):
            async with httpx.AsyncClient(base_url=url, timeout=WAIT) as http:
                headers = {"content-type": "audio/wav"}
                big = await http.post("/v1/audio/analyze", content=BIG_WAV, headers=headers)
                after = await http.post("/v1/audio/analyze", content=SMALL_WAV, headers=headers)
            answers[stack] = (big.status_code, big.json())
            ok = big.status_code == 500 and big.json()["error"]["code"] == "out_of_memory" and after.status_code == 200
            record("faults", f"a worker at its memory ceiling on a request (not a job), {stack}", 1, int(ok),
                   f"{big.status_code} `{big.json()['error']['code']}`; the next request {after.status_code}")
            assert big.status_code == 500, big.text
            assert big.json()["error"]["code"] == "out_of_memory"
            assert big.json()["error"]["message"].startswith("the worker ran out of memory on this request")
            assert after.status_code == 200, after.text
    finally:
        if modern.url:
            await modern.stop()
        await as_future(legacy.stop())
    assert answers["legacy"] == answers["modern"]
    assert capped.stats().crashed == 0  # Python saw the ceiling first: the worker raised, and lived on

"""The kernels through the shared pool, as both services call them: real workers, real pickling."""

from __future__ import annotations

import asyncio

import pytest
from skimage import data as samples

import workloads
from bridge import SharedPool, as_future
from bridge.testing import asyncio_test
from tests import workfns
from tests.synth import bursts, encode, render, wav
from workloads import InvalidInput

from .test_text import REFERENCE_TEXT


@asyncio_test
async def test_results_match_in_process_calls(warm_pool: SharedPool) -> None:
    photo, speech = encode(samples.astronaut()), wav(bursts(20))
    faces, audio = await asyncio.gather(
        warm_pool.run(workloads.detect_faces, photo), warm_pool.run(workloads.analyze_audio, speech, hop_ms=20)
    )
    assert faces == workloads.detect_faces(photo)
    assert audio == workloads.analyze_audio(speech, hop_ms=20)


@asyncio_test
async def test_chunks_mapped_over_workers_and_merged_in_order_equal_one_call(warm_pool: SharedPool) -> None:
    text = REFERENCE_TEXT * 50
    chunks = workloads.split_chunks(text, 1_000)
    found = await asyncio.gather(*(warm_pool.run(workloads.extract_domains_chunk, chunk) for chunk in chunks))
    assert workloads.merge_domains(found) == workloads.extract_domains(text)


@asyncio_test
async def test_each_worker_builds_the_ocr_engine_exactly_once(warm_pool: SharedPool) -> None:
    image = render((400, 120), (20, 30, "ONCE"))
    results = await asyncio.gather(*(warm_pool.run(workloads.read_text, image) for _ in range(6)))
    assert all(r["lines"] for r in results)
    seen: dict[int, int] = {}
    for _ in range(50):  # both workers answer within a few rounds of concurrent calls
        for pid, loads in await asyncio.gather(*(warm_pool.run(workfns.ocr_engine_loads) for _ in range(8))):
            seen[pid] = loads
        if len(seen) == warm_pool.processes:
            break
    assert len(seen) == warm_pool.processes
    assert set(seen.values()) == {1}


@asyncio_test
async def test_invalid_input_reaches_both_stacks_with_its_code(warm_pool: SharedPool) -> None:
    with pytest.raises(InvalidInput, match="over the limit") as caught:
        await warm_pool.run(workloads.extract_domains, "a.com " * 10, max_chars=5)
    assert caught.value.code == "text_too_large"
    with pytest.raises(InvalidInput) as caught:
        await as_future(warm_pool.defer(workloads.detect_faces, b""))
    assert caught.value.code == "empty_input"
    assert await warm_pool.run(workloads.native_threads) == 1  # budget 2 over 2 workers

"""The costly requests the independent trials sent, through both front doors: refused alike by their cost.

An 8 MB WAV at 768 kHz with ``?hop_ms=0.000001`` took a worker to 1.44 GB and
answered 12.5 MB; a 53 KB all-white 6000x6600 PNG took one to 1.56 GB. Now
each is a 422 with its documented code, the same on both stacks, as a request
and as a job. The memory row measures a pool worker's peak RSS under the
costliest requests still accepted.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bridge import SharedPool
from bridge.testing import asyncio_test
from tests.conftest import WAIT, until
from tests.hardening import memfns
from tests.hardening.conftest import Door
from tests.reliability import record
from tests.synth import encode, render, wav
from workloads.images import DEFAULT_MAX_PIXELS

MIB = 1024 * 1024
FAST_WAV = wav(np.zeros(4 * MIB), rate=768_000)  # 8 MiB of 16-bit samples, 5.5 s at 768 kHz
WHITE_PNG = encode(Image.new("RGB", (6000, 6600), "white"))
MANY_DOMAINS = " ".join(f"d{i}.example.com" for i in range(70_000))  # 1.3 MB of distinct domains back

CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("8 MiB WAV at 768 kHz, hop_ms=0.000001", "/v1/audio/analyze?hop_ms=0.000001",
     {"content": FAST_WAV, "headers": {"content-type": "audio/wav"}}, "too_many_frames"),
    ("all-white 6000x6600 PNG to faces", "/v1/faces", {"content": WHITE_PNG, "headers": {"content-type": "image/png"}},
     "image_too_large"),
    ("all-white 6000x6600 PNG to ocr", "/v1/ocr", {"content": WHITE_PNG, "headers": {"content-type": "image/png"}},
     "image_too_large"),
    ("70,000 distinct domains", "/v1/domains", {"json": {"text": MANY_DOMAINS}}, "output_too_large"),
]
JOBS: list[tuple[str, dict[str, Any], str]] = [
    ("audio job, hop_ms=0.000001", {"kind": "audio", "data_base64": base64.b64encode(FAST_WAV).decode(), "hop_ms": 0.000001},
     "too_many_frames"),
    ("faces job, 6000x6600", {"kind": "faces", "data_base64": base64.b64encode(WHITE_PNG).decode()}, "image_too_large"),
    ("domains job, 70,000 distinct", {"kind": "domains", "text": MANY_DOMAINS}, "output_too_large"),
]


async def job_error(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any] | None:
    submitted = await http.post("/v1/jobs", json=body)
    assert submitted.status_code == 202, submitted.text
    location = submitted.headers["location"]
    job: dict[str, Any] = {}

    async def finished() -> bool:
        nonlocal job
        job = (await http.get(location)).json()
        return job["status"] in ("succeeded", "failed", "cancelled")

    deadline = asyncio.get_running_loop().time() + WAIT
    while not await finished():
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.05)
    assert job["status"] == "failed" and "result" not in job, job
    return job.get("error")


@asyncio_test
async def test_costly_requests_get_the_same_422_from_both_stacks_as_requests_and_as_jobs(doors: dict[str, Door]) -> None:
    answers: dict[str, list[tuple[int, str, str]]] = {}
    for stack, door in doors.items():
        got: list[tuple[int, str, str]] = []
        async with httpx.AsyncClient(base_url=door.url, timeout=WAIT) as http:
            for _, path, kwargs, _ in CASES:
                response = await http.post(path, **kwargs)
                error = response.json().get("error", {}) if response.headers.get("content-type") == "application/json" else {}
                got.append((response.status_code, error.get("code", ""), error.get("message", "")))
            for _, body, _ in JOBS:
                error = await job_error(http, body) or {}
                got.append((422, error.get("code", ""), error.get("message", "")))
        answers[stack] = got
        expected = [code for *_, code in CASES] + [code for *_, code in JOBS]
        survived = sum(status == 422 and code == want for (status, code, _), want in zip(got, expected, strict=True))
        record("hostile input", f"costly requests: tiny hop on 768 kHz, 40 MP white PNG, 70k domains (request and job), "
               f"{stack}", tried=len(expected), survived=survived,
               detail="422 `too_many_frames` / `image_too_large` / `output_too_large`, before the costly part")
        assert [(status, code) for status, code, _ in got] == [(422, code) for code in expected], got
    assert answers["legacy"] == answers["modern"]  # status, code and message alike


@asyncio_test
async def test_the_costliest_accepted_requests_keep_a_worker_under_its_measured_peak(warm_pool: SharedPool) -> None:
    side = int(DEFAULT_MAX_PIXELS**0.5)  # 4000 x 4000, at the pixel limit
    photo = encode(Image.new("RGB", (side, side), "white"))
    text = render((side, side), (100, 100, "cutover reliability"))
    long_8bit = wav(np.random.default_rng(3).uniform(-0.1, 0.1, 20 * MIB - 64), width=1, rate=36_000)  # 583 s, 20 MiB
    cases = [("faces at 16 MP", "faces", photo, {}), ("ocr at 16 MP", "ocr", text, {}),
             ("audio: 20 MiB of 8-bit samples (583 s)", "audio", long_8bit, {}),
             ("audio at the frame limit", "audio", FAST_WAV, {"hop_ms": 0.0547})]
    peaks = []
    for name, kernel, data, params in cases:
        measured = await warm_pool.run(memfns.peak_rss, kernel, data, timeout=WAIT, **params)
        assert measured["outcome"] == "accepted", (name, measured)
        peaks.append((name, measured))
    await until(lambda: warm_pool.stats().alive == warm_pool.processes, "the workers to be all alive")
    worst = max(peaks, key=lambda p: p[1]["peak_mib"])
    record("memory", "peak worker RSS under the costliest accepted requests", tried=len(peaks), survived=len(peaks),
           detail="; ".join(f"{name}: {m['peak_mib']:.0f} MiB (+{m['peak_mib'] - m['before_mib']:.0f})" for name, m in peaks)
           + f"; worst {worst[1]['peak_mib']:.0f} MiB")
    faces = dict(peaks)["faces at 16 MP"]
    assert faces["peak_mib"] - faces["before_mib"] < 1024, faces  # 40 MP took 1.3 GB more; 16 MP about 0.6

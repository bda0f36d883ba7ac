"""Legacy and modern, asked the same thing, must answer the same: every endpoint and error of the contract.

The requests are the contract's own (tests/api/test_contract.py); here the two
answers are compared with each other by the diff engine instead of with
expectations, which also catches differences the contract does not spell out
(an extra key, a rounded number, another error message).
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.parity import DiffRules
from bridge.parity.plugin import AssertSame, Service
from bridge.parity.strategies import Upload, domain_texts, images, tiled, wavs
from bridge.testing import asyncio_test
from tests.api import test_contract as contract
from tests.conftest import WAIT
from tests.synth import bursts, render, wav

STATUS_RULES = DiffRules(ignore=("service", "version", "uptime_s", "pool", "tasks"), skip=("jobs",))  # jobs: modern's runner
JOB_RULES = DiffRules(ignore=("status", "attempts", "created_at", "started_at", "finished_at"))
DONE_RULES = DiffRules(ignore=("attempts", "created_at", "started_at", "finished_at"))  # both finished: status counts
PNG = {"content-type": "image/png"}
WAV_20DB = wav(bursts(20.0))
WAV_6DB = wav(bursts(6.0))
OCR_IMAGE = render((640, 240), (30, 40, "HELLO WORLD"), (30, 140, "CUTOVER 2026"))


def contract_cases(test: Any) -> list[Any]:
    """The argument rows of a contract test's ``@pytest.mark.parametrize``: the same requests, not a copy."""
    (mark,) = [m for m in getattr(test, "pytestmark", []) if m.name == "parametrize"]
    return list(mark.args[1])


BAD_INPUTS = contract_cases(contract.test_bad_input_gets_the_contract_error)
BAD_JOBS = contract_cases(contract.test_bad_job_submissions_get_the_contract_error)


# --------------------------------------------------------------------------- the plugin's per-stack fixture


@asyncio_test
async def test_each_stack_names_itself_in_status(service: Service) -> None:
    response = await service.request("GET", "/status")
    assert response.status_code == 200
    assert response.json()["service"] == service.stack


# --------------------------------------------------------------------------- endpoints


@asyncio_test
async def test_status(assert_same: AssertSame) -> None:
    await assert_same("GET", "/status", rules=STATUS_RULES)


@asyncio_test
async def test_faces_raw_and_multipart(assert_same: AssertSame) -> None:
    raw, _ = await assert_same("POST", "/v1/faces", content=contract.ASTRONAUT_PNG, headers=PNG)
    assert raw.status_code == 200 and raw.json()["faces"]
    await assert_same("POST", "/v1/faces", files={"file": ("a.png", contract.ASTRONAUT_PNG, "image/png")})


@asyncio_test
async def test_ocr(assert_same: AssertSame) -> None:
    legacy, _ = await assert_same("POST", "/v1/ocr", content=OCR_IMAGE, headers=PNG)
    assert legacy.status_code == 200 and legacy.json()["lines"]


@asyncio_test
async def test_audio(assert_same: AssertSame) -> None:
    legacy, _ = await assert_same(
        "POST", "/v1/audio/analyze?hop_ms=20&threshold=6", content=WAV_20DB, headers={"content-type": "audio/wav"}
    )
    assert legacy.status_code == 200


@asyncio_test
async def test_domains(assert_same: AssertSame) -> None:
    legacy, _ = await assert_same("POST", "/v1/domains", json={"text": contract.DOMAINS_TEXT})
    assert legacy.json()["domains"] == contract.DOMAINS


# --------------------------------------------------------------------------- errors

ERROR_RULES = DiffRules(ignore=("error.message",))  # every default header: content-type, location, allow, retry-after
WORDING_RULES = DiffRules()
#: The contract's error requests, as (method, path, httpx kwargs), by test id.
ERRORS: dict[str, tuple[str, str, dict[str, Any]]] = {
    **{f"{code}-{i}-{path}": ("POST", path, kwargs) for i, (path, kwargs, _, code) in enumerate(BAD_INPUTS)},
    **{f"jobs-{code}-{i}": ("POST", "/v1/jobs", kwargs) for i, (kwargs, _, code) in enumerate(BAD_JOBS)},
    **{f"404-{path}": ("GET", path, {}) for path in ("/nope", "/", "/v1", "/v1/faces/extra", "/v1/audio", "/status/")},
    **{
        f"{method}-{path}": (method, path, {})
        for method, path in [
            ("GET", "/v1/faces"),
            ("POST", "/status"),
            ("PUT", "/v1/jobs/abc"),
            ("GET", "/v1/jobs/no-such-job"),
            ("DELETE", "/v1/jobs/no-such-job"),
        ]
    },
    "audio-hop-not-a-number": ("POST", "/v1/audio/analyze?hop_ms=abc",
                               {"content": WAV_20DB, "headers": {"content-type": "audio/wav"}}),
}
#: Known gaps: the reason each test below is expected to fail. Found by these tests and fixed in
#: modern (a 405's Allow header, the wording of query-parameter errors); kept as a place to list the next.
ERROR_GAPS: dict[str, str] = {}
WORDING_GAPS: dict[str, str] = {}


def error_cases(gaps: dict[str, str]) -> list[Any]:
    assert set(gaps) <= set(ERRORS), f"stale known gaps: {sorted(set(gaps) - set(ERRORS))}"
    return [
        pytest.param(*request, id=name, marks=[pytest.mark.xfail(strict=True, reason=gaps[name])] if name in gaps else [])
        for name, request in ERRORS.items()
    ]


@pytest.mark.parametrize(("method", "path", "kwargs"), error_cases(ERROR_GAPS))
@asyncio_test
async def test_error(assert_same: AssertSame, method: str, path: str, kwargs: dict[str, Any]) -> None:
    """Same status, error code, body shape and Allow header; the message's wording is the next test's."""
    legacy, _ = await assert_same(method, path, rules=ERROR_RULES, **kwargs)
    assert 400 <= legacy.status_code < 500 and set(legacy.json()) == {"error"}


@pytest.mark.parametrize(("method", "path", "kwargs"), error_cases(WORDING_GAPS))
@asyncio_test
async def test_error_wording(assert_same: AssertSame, method: str, path: str, kwargs: dict[str, Any]) -> None:
    await assert_same(method, path, rules=WORDING_RULES, **kwargs)


@pytest.mark.xfail(strict=True, reason="GET /v1/jobs lists jobs in modern only; legacy answers 405 (as cutover.toml says)")
@asyncio_test
async def test_job_list(assert_same: AssertSame) -> None:
    await assert_same("GET", "/v1/jobs", rules=DiffRules(skip=("jobs", "next_cursor")))


# --------------------------------------------------------------------------- jobs


async def finished(urls: dict[str, str], ids: dict[str, str]) -> None:
    """Poll each side's job until it leaves queued/running, bounded by WAIT."""
    deadline = time.monotonic() + WAIT
    for stack, job_id in ids.items():
        async with httpx.AsyncClient(base_url=urls[stack], timeout=WAIT) as http:
            while (await http.get(f"/v1/jobs/{job_id}")).json()["status"] in ("queued", "running"):
                assert time.monotonic() < deadline, f"{stack} job {job_id} did not finish in {WAIT}s"
                await asyncio.sleep(0.02)


async def run_job(assert_same: AssertSame, urls: dict[str, str], **submission: Any) -> dict[str, httpx.Response]:
    """Submit on both, compare the 202s, wait, then compare the finished jobs and a second cancel."""
    legacy, modern = await assert_same("POST", "/v1/jobs", rules=JOB_RULES, id_from="job_id", **submission)
    assert legacy.status_code == 202, legacy.text
    ids = {"legacy": legacy.json()["job_id"], "modern": modern.json()["job_id"]}
    for response, job_id in ((legacy, ids["legacy"]), (modern, ids["modern"])):
        assert response.headers["location"] == f"/v1/jobs/{job_id}"
    await finished(urls, ids)
    paths = {stack: f"/v1/jobs/{job_id}" for stack, job_id in ids.items()}
    same = {ids["modern"]: ids["legacy"]}  # the ids, the Location and the messages that name them
    done = await assert_same("GET", paths, route="GET /v1/jobs/{job_id}", rules=DONE_RULES, aliases=same)
    # 409 job_finished, whose message names each side's own job id
    cancel, cancel_modern = await assert_same("DELETE", paths, route="DELETE /v1/jobs/{job_id}", rules=DONE_RULES,
                                              aliases=same)
    assert cancel.status_code == 409, cancel.text
    for response, job_id in zip((cancel, cancel_modern), ids.values(), strict=True):
        assert job_id in response.json()["error"]["message"]
    return dict(zip(("legacy", "modern"), done, strict=True))


@asyncio_test
async def test_jobs_of_every_kind(assert_same: AssertSame, parity_urls: dict[str, str]) -> None:
    done = await run_job(assert_same, parity_urls, json={"kind": "domains", "text": contract.DOMAINS_TEXT})
    assert done["legacy"].json()["status"] == "succeeded"
    await run_job(assert_same, parity_urls, params={"kind": "faces"}, content=contract.ASTRONAUT_PNG, headers=PNG)
    await run_job(
        assert_same, parity_urls, json={"kind": "faces", "data_base64": base64.b64encode(contract.ASTRONAUT_PNG).decode()}
    )
    await run_job(
        assert_same, parity_urls, params={"kind": "audio", "hop_ms": "20"}, content=WAV_20DB, headers={"content-type": "audio/wav"}
    )
    # the same as an upload (the query's hop and default threshold), then as JSON, at an SNR where the threshold decides
    await run_job(assert_same, parity_urls, params={"kind": "audio", "hop_ms": "12.5"}, content=WAV_6DB,
                  headers={"content-type": "audio/wav"})
    await run_job(assert_same, parity_urls,
                  json={"kind": "audio", "data_base64": base64.b64encode(WAV_6DB).decode(), "hop_ms": 12.5})
    failed = await run_job(assert_same, parity_urls, params={"kind": "ocr"}, content=b"junk", headers=PNG)
    assert failed["legacy"].json()["status"] == "failed"


# --------------------------------------------------------------------------- generated inputs

WORDS = st.sampled_from(["docs", "mail", "Example", "corp", "x", "a-b", "xn--bcher-kva", "123", "ÄÖ", "_u"])
TLDS = st.sampled_from(["com", "org", "net", "io", "c", "co.uk", "123", ""])
HOSTS = st.builds(lambda parts, tld: ".".join([*parts, tld]), st.lists(WORDS, min_size=1, max_size=3), TLDS)
PIECES = st.one_of(
    WORDS,
    HOSTS,
    st.builds("{}@{}".format, WORDS, HOSTS),
    st.builds("{}://{}{}".format, st.sampled_from(["http", "https", "ftp"]), HOSTS, st.sampled_from(["", "/", "/x?y=1", ":8080/p"])),
    st.sampled_from([".", "..", "@", "@@", ",", ";", "(", ")", "<", ">", "/", "\n", "\t"]),
)
TEXTS = st.one_of(st.lists(PIECES, max_size=12).map(" ".join), st.lists(PIECES, max_size=8).map("".join), st.text(max_size=40))
GENERATED = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@GENERATED
@given(text=TEXTS)
@asyncio_test
async def test_domains_generated(assert_same: AssertSame, text: str) -> None:
    await assert_same("POST", "/v1/domains", json={"text": text})


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=-5, max_value=200).map(lambda x: f"{x:g}"),
    st.integers(min_value=-10, max_value=5000).map(str),
    st.sampled_from(["", " 20", "1e3", "0x10", "20ms", "+5", "-0"]),
)


@GENERATED
@given(hop_ms=st.none() | NUMBERS, threshold=st.none() | NUMBERS)
@asyncio_test
async def test_audio_parameters_generated(assert_same: AssertSame, hop_ms: str | None, threshold: str | None) -> None:
    params = {k: v for k, v in (("hop_ms", hop_ms), ("threshold", threshold)) if v is not None}
    # status, error code and every number; error wording is test_error_wording's
    await assert_same(
        "POST", "/v1/audio/analyze", params=params, content=WAV_20DB, headers={"content-type": "audio/wav"}, rules=ERROR_RULES
    )


# --------------------------------------------------------------------------- inputs at the edges (bridge.parity.strategies)

EDGES = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


@EDGES
@given(image=images())
@asyncio_test
async def test_faces_on_generated_images(assert_same: AssertSame, image: Upload) -> None:
    """Sizes down to 1 px, palette, greyscale, alpha, 1- and 16-bit, every format, EXIF orientations."""
    await assert_same("POST", "/v1/faces", content=image.data, headers={"content-type": image.content_type})


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(image=tiled(contract.ASTRONAUT_PNG, formats=("JPEG",)))  # under the suite's 1 MiB body limit
@asyncio_test
async def test_faces_finds_several(assert_same: AssertSame, image: Upload) -> None:
    legacy, _ = await assert_same("POST", "/v1/faces", content=image.data, headers={"content-type": image.content_type})
    assert legacy.status_code == 200


@EDGES
@given(audio=wavs(max_seconds=1.5))
@asyncio_test
async def test_audio_on_generated_wavs(assert_same: AssertSame, audio: Upload) -> None:
    """8-, 16-, 24- and 32-bit, mono and stereo, 8 to 48 kHz, one frame to 1.5 s, silence and full scale."""
    await assert_same("POST", "/v1/audio/analyze", content=audio.data, headers={"content-type": audio.content_type})


@GENERATED
@given(text=domain_texts())
@asyncio_test
async def test_domains_across_scripts_and_case_rules(assert_same: AssertSame, text: str) -> None:
    """Turkish dotted I, German sharp s, IDN hosts in Unicode and punycode, trailing dots, uppercase."""
    await assert_same("POST", "/v1/domains", json={"text": text})

"""The HTTP contract, run against both stacks (legacy and modern) over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from typing import Any

import httpx
import pytest
from skimage import data as skdata

from bridge.testing import asyncio_test
from tests.api.conftest import BODY_LIMIT
from tests.conftest import WAIT, in_daemon_thread
from tests.synth import bursts, encode, fmt_chunk, png_header_only, render, riff, wav

ASTRONAUT_PNG = encode(skdata.astronaut())
DOMAINS_TEXT = "Docs at https://Docs.Example.com/x, mail ops@corp.example.org; mirror files.cdn.net. Again docs.example.com"
DOMAINS = ["docs.example.com", "corp.example.org", "files.cdn.net"]


def client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=WAIT)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


@asyncio_test
async def test_status_names_the_service_and_shows_the_pool(service_url: str, stack: str) -> None:
    async with client(service_url) as http:
        response = await http.get("/status")
    assert response.status_code == 200
    body = response.json()
    assert body["service"] == stack and body["version"]
    assert body["uptime_s"] >= 0
    assert body["pool"]["workers"] == 2 and body["pool"]["start_method"] == "forkserver"
    assert body["tasks"]["data_sync"]["owner"] == stack


@asyncio_test
async def test_faces_are_found_in_raw_and_multipart_uploads(service_url: str) -> None:
    async with client(service_url) as http:
        raw = await http.post("/v1/faces", content=ASTRONAUT_PNG, headers={"content-type": "image/png"})
        multipart = await http.post("/v1/faces", files={"file": ("a.png", ASTRONAUT_PNG, "image/png")})
    assert raw.status_code == 200, raw.text
    body = raw.json()
    assert (body["width"], body["height"]) == (512, 512)
    assert body["faces"], "no face found in the astronaut image"
    x, y, w, h = body["faces"][0]
    assert 150 <= x + w / 2 <= 350 and 50 <= y + h / 2 <= 250
    assert multipart.json() == body


@asyncio_test
async def test_ocr_reads_the_rendered_words_back(service_url: str) -> None:
    image = render((640, 240), (30, 40, "HELLO WORLD"), (30, 140, "CUTOVER 2026"))
    async with client(service_url) as http:
        response = await http.post("/v1/ocr", content=image, headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    lines = [" ".join(line["text"].upper().split()) for line in response.json()["lines"]]
    assert lines == ["HELLO WORLD", "CUTOVER 2026"]


@asyncio_test
async def test_audio_measures_the_synthesised_snr(service_url: str) -> None:
    async with client(service_url) as http:
        response = await http.post(
            "/v1/audio/analyze?hop_ms=20&threshold=6", content=wav(bursts(20.0)), headers={"content-type": "audio/wav"}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert abs(body["snr_db"] - 20.0) <= 1.0
    assert abs(body["speech_ratio"] - 0.5) <= 0.1
    assert body["duration_s"] == pytest.approx(4.0)


@asyncio_test
async def test_domains_are_extracted_in_order(service_url: str) -> None:
    async with client(service_url) as http:
        response = await http.post("/v1/domains", json={"text": DOMAINS_TEXT})
    assert response.status_code == 200, response.text
    assert response.json() == {"domains": DOMAINS, "count": 4}


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "code"),
    [
        ("/v1/domains", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "malformed_json"),
        ("/v1/domains", {"content": b"", "headers": {"content-type": "application/json"}}, 400, "empty_body"),
        ("/v1/domains", {"json": {"txt": "a.com"}}, 422, "missing_field"),
        ("/v1/domains", {"json": {"text": 42}}, 422, "invalid_parameter"),
        ("/v1/domains", {"json": ["a.com"]}, 422, "invalid_parameter"),
        ("/v1/domains", {"json": {"text": "   "}}, 422, "empty_input"),
        ("/v1/domains", {"content": b"a.com", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
        ("/v1/faces", {"content": b"not an image", "headers": {"content-type": "image/png"}}, 422, "undecodable_image"),
        ("/v1/faces", {"content": png_header_only(100_000, 100_000), "headers": {"content-type": "image/png"}}, 422, "image_too_large"),
        ("/v1/faces", {"content": b"", "headers": {"content-type": "image/png"}}, 400, "empty_body"),
        ("/v1/faces", {"content": b"x", "headers": {"content-type": "application/json"}}, 415, "unsupported_media_type"),
        ("/v1/faces", {"files": {"other": ("a.png", b"x", "image/png")}}, 422, "missing_field"),
        ("/v1/faces", {"content": b"--b\r\nnope", "headers": {"content-type": "multipart/form-data; boundary=zz"}}, 400, "malformed_multipart"),
        ("/v1/ocr", {"content": b"GIF89a", "headers": {"content-type": "image/gif"}}, 422, "undecodable_image"),
        ("/v1/audio/analyze", {"content": b"RIFF....WAVEjunk", "headers": {"content-type": "audio/wav"}}, 422, "corrupt_wav"),
        ("/v1/audio/analyze", {"content": riff(fmt_chunk(3, 1, 16000, 32), b"\0" * 64), "headers": {"content-type": "audio/wav"}}, 422, "not_pcm_wav"),
        ("/v1/audio/analyze?hop_ms=-5", {"content": wav(bursts(20.0)), "headers": {"content-type": "audio/wav"}}, 422, "invalid_parameter"),
        ("/v1/audio/analyze?threshold=abc", {"content": wav(bursts(20.0)), "headers": {"content-type": "audio/wav"}}, 422, "invalid_parameter"),
        ("/v1/audio/analyze?hop_ms=nan", {"content": wav(bursts(20.0)), "headers": {"content-type": "audio/wav"}}, 422, "invalid_parameter"),
        ("/v1/audio/analyze", {"content": wav(bursts(20.0)), "headers": {"content-type": "audio/mpeg"}}, 415, "unsupported_media_type"),
    ],
)
@asyncio_test
async def test_bad_input_gets_the_contract_error(service_url: str, path: str, kwargs: dict[str, Any], status: int, code: str) -> None:
    async with client(service_url) as http:
        response = await http.post(path, **kwargs)
    assert_error(response, status, code)


@asyncio_test
async def test_unknown_paths_are_404_and_wrong_methods_405(service_url: str) -> None:
    async with client(service_url) as http:
        for path in ("/nope", "/", "/v1", "/v1/faces/extra", "/v1/audio", "/status/"):
            assert_error(await http.get(path), 404, "not_found")
        wrong = await http.get("/v1/faces")
        assert_error(wrong, 405, "method_not_allowed")
        assert wrong.headers["allow"] == "POST"
        assert_error(await http.post("/status"), 405, "method_not_allowed")
        assert_error(await http.put("/v1/jobs/abc"), 405, "method_not_allowed")


def raw_exchange(port: int, head: bytes, body_chunks: list[bytes]) -> bytes:
    """Send a request by hand and read whatever the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
        return answer


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@asyncio_test
async def test_an_announced_oversized_body_is_refused_before_it_is_sent(service_url: str) -> None:
    head = (
        b"POST /v1/faces HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: 10000000000\r\n\r\n"
    )
    answer = await in_daemon_thread(raw_exchange, port_of(service_url), head, [])
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "body_too_large"


@asyncio_test
async def test_bodies_over_the_limit_get_413_announced_or_chunked(service_url: str) -> None:
    async with client(service_url) as http:
        just_over = await http.post("/v1/faces", content=b"\0" * (BODY_LIMIT + 1), headers={"content-type": "image/png"})
    assert_error(just_over, 413, "body_too_large")

    head = b"POST /v1/faces HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece = b"\0" * 65536
    chunks = [b"%x\r\n" % len(piece) + piece + b"\r\n"] * (BODY_LIMIT // len(piece) + 2) + [b"0\r\n\r\n"]
    answer = await in_daemon_thread(raw_exchange, port_of(service_url), head, chunks)
    assert answer.startswith(b"HTTP/1.1 413 ")


async def wait_for_job(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    """Poll as a client would, until the job leaves queued/running (bounded by WAIT)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        body = (await http.get(f"/v1/jobs/{job_id}")).json()
        if body["status"] not in ("queued", "running"):
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} still {body['status']} after {WAIT}s")


@asyncio_test
async def test_jobs_run_to_the_same_result_as_the_direct_endpoints(service_url: str) -> None:
    async with client(service_url) as http:
        submitted = await http.post("/v1/jobs", json={"kind": "domains", "text": DOMAINS_TEXT})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        assert submitted.headers["location"] == f"/v1/jobs/{job_id}"
        done = await wait_for_job(http, job_id)
        assert done["status"] == "succeeded" and done["kind"] == "domains"
        assert done["result"] == {"domains": DOMAINS, "count": 4}

        upload = await http.post("/v1/jobs?kind=faces", content=ASTRONAUT_PNG, headers={"content-type": "image/png"})
        as_json = await http.post("/v1/jobs", json={"kind": "faces", "data_base64": base64.b64encode(ASTRONAUT_PNG).decode()})
        direct = await http.post("/v1/faces", content=ASTRONAUT_PNG, headers={"content-type": "image/png"})
        for response in (upload, as_json):
            assert response.status_code == 202, response.text
            assert (await wait_for_job(http, response.json()["job_id"]))["result"] == direct.json()

        audio = await http.post("/v1/jobs?kind=audio&hop_ms=20", content=wav(bursts(30.0)), headers={"content-type": "audio/wav"})
        result = (await wait_for_job(http, audio.json()["job_id"]))["result"]
        assert abs(result["snr_db"] - 30.0) <= 1.0


@asyncio_test
async def test_a_job_with_bad_content_fails_with_the_kernel_code(service_url: str) -> None:
    async with client(service_url) as http:
        submitted = await http.post("/v1/jobs?kind=ocr", content=b"junk", headers={"content-type": "image/png"})
        done = await wait_for_job(http, submitted.json()["job_id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "undecodable_image"
    assert "result" not in done


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"json": {"text": "a.com"}}, 422, "missing_field"),
        ({"json": {"kind": "video"}}, 422, "invalid_parameter"),
        ({"json": {"kind": "faces"}}, 422, "missing_field"),
        ({"json": {"kind": "faces", "data_base64": "***"}}, 422, "invalid_parameter"),
        ({"json": {"kind": "audio", "data_base64": "AAAA", "hop_ms": "x"}}, 422, "invalid_parameter"),
        ({"content": b"x", "headers": {"content-type": "image/png"}}, 422, "missing_field"),
        ({"content": b"x", "headers": {"content-type": "text/plain"}, "params": {"kind": "domains"}}, 415, "unsupported_media_type"),
    ],
)
@asyncio_test
async def test_bad_job_submissions_get_the_contract_error(service_url: str, kwargs: dict[str, Any], status: int, code: str) -> None:
    async with client(service_url) as http:
        assert_error(await http.post("/v1/jobs", **kwargs), status, code)


@asyncio_test
async def test_a_running_job_can_be_cancelled_once(service_url: str) -> None:
    big = render((1600, 1600), *[(40, 40 + 60 * i, f"LINE NUMBER {i} OF MANY") for i in range(25)])
    async with client(service_url) as http:
        submitted = await http.post("/v1/jobs?kind=ocr", content=big, headers={"content-type": "image/png"})
        job_id = submitted.json()["job_id"]
        cancelled = await http.delete(f"/v1/jobs/{job_id}")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert (await http.get(f"/v1/jobs/{job_id}")).json()["status"] == "cancelled"
        assert_error(await http.delete(f"/v1/jobs/{job_id}"), 409, "job_finished")
        assert_error(await http.get("/v1/jobs/no-such-job"), 404, "not_found")
        assert_error(await http.delete("/v1/jobs/no-such-job"), 404, "not_found")
        # the pool is unharmed: the next call is served
        assert (await http.post("/v1/domains", json={"text": "x.org"})).json()["domains"] == ["x.org"]


"""`cutover serve` as `make run` starts it: the shipped plan, a real process, a clean SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bridge.testing import asyncio_test
from tests.conftest import WAIT, in_daemon_thread

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.subprocess
@asyncio_test
async def test_cutover_serve_routes_by_the_shipped_plan_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "CUTOVER_VAR": str(tmp_path), "CUTOVER_CPUS": "2", "CUTOVER_ADMIN_TOKEN": "t",
           "CUTOVER_HEADER_TIMEOUT": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "serve", "--plan", str(REPO / "cutover.toml"), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env,
    )
    lines: list[str] = []
    try:
        assert child.stdout is not None
        while not (found := re.search(r"running on (http://127\.0\.0\.1:\d+)", lines[-1] if lines else "")):
            line = await in_daemon_thread(child.stdout.readline)
            assert line, "cutover serve exited before listening:\n" + "".join(lines)
            lines.append(line)
        async with httpx.AsyncClient(base_url=found.group(1), timeout=WAIT) as http:
            status = await http.get("/status")
            assert status.status_code == 200 and status.headers["x-served-by"] == "legacy"
            assert len(status.headers.get_list("date")) == 1 and status.headers.get_list("server") == ["uvicorn"]
            domains = await http.post("/v1/domains", json={"text": "see a.example.com"})
            assert domains.json() == {"domains": ["a.example.com"], "count": 1}
            assert domains.headers["x-served-by"] == "legacy"  # shadow: legacy answers
            plan = (await http.get("/_cutover/api", headers={"Authorization": "Bearer t"})).json()
            assert {r["template"]: r["mode"] for r in plan["routes"]}["/v1/domains"] == "shadow"
        # A client that never finishes its request head is answered 408 and closed (uvicorn alone waits forever).
        host, port = found.group(1).removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /status HTTP/1.1\r\nHost: slow\r\n")  # no blank line: the head never ends
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), WAIT)  # read() returns at EOF: the server closed it
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 ") and b"request_timeout" in answer
        child.send_signal(signal.SIGTERM)
        rest = await in_daemon_thread(child.stdout.read)
        # uvicorn re-raises the signal once shut down, so supervisors see how the process ended
        assert child.wait(timeout=WAIT) in (0, -signal.SIGTERM), rest
        assert "cutover stopped" in rest and "Traceback" not in rest
        # One access line per request (cutover's, not uvicorn's as well), saying who answered it.
        output = "".join(lines) + rest
        status_lines = [line for line in output.splitlines() if '"GET /status HTTP/1.1"' in line]
        assert len(status_lines) == 1 and status_lines[0].endswith(" 200 legacy"), status_lines
        domain_lines = [line for line in output.splitlines() if '"POST /v1/domains HTTP/1.1"' in line]
        assert len(domain_lines) == 1 and domain_lines[0].endswith(" 200 legacy"), domain_lines
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=WAIT)

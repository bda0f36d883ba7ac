"""`cutover parity` and `cutover status`, run for real as child processes on files made here."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bridge.host.shadow import SCHEMA

REPO = Path(__file__).resolve().parents[2]
PLAN = """
[routes]
"GET /status" = "modern"
"POST /v1/ocr" = { mode = "canary", percent = 10 }
"POST /v1/domains" = { mode = "shadow", shadow_safe = true }
"GET /v1/jobs/{job_id}" = "legacy"

[tasks]
data_sync = "modern"
"""


def cutover(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUTOVER_PARITY_")}
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def rows(stdout: str) -> dict[str, list[str]]:
    """The table's rows by first cell."""
    table = [[cell.strip() for cell in line.split("|")] for line in stdout.splitlines() if " | " in line]
    return {row[0]: row[1:] for row in table}


def outcomes(passed: int = 0, failed: int = 0, xfailed: int = 0) -> dict[str, int]:
    return {"passed": passed, "failed": failed, "xfailed": xfailed, "skipped": 0}


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    plan = tmp_path / "cutover.toml"
    plan.write_text(PLAN)
    report = tmp_path / "parity.json"
    report.write_text(
        json.dumps(
            {
                "version": 1,
                "generated_at": "2026-01-02T03:04:05+00:00",
                "routes": {
                    "GET /status": {"legacy": outcomes(2), "modern": outcomes(2), "same": {"equal": 1, "different": 0}},
                    "POST /v1/ocr": {"legacy": outcomes(1), "modern": outcomes(0, 1), "same": {"equal": 0, "different": 1}},
                    # a concrete path and the template both count for the plan's template route
                    "GET /v1/jobs/no-such-job": {"legacy": outcomes(1), "modern": outcomes(1), "same": {"equal": 2, "different": 0}},
                    "GET /v1/jobs/{job_id}": {"legacy": outcomes(1), "modern": outcomes(1), "same": {"equal": 3, "different": 0}},
                    "PUT /v1/jobs/abc": {"legacy": outcomes(xfailed=1), "modern": outcomes(xfailed=1), "same": {"equal": 0, "different": 1}},
                },
            }
        )
    )
    db = tmp_path / "cutover.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(SCHEMA)
        for route in ["POST /v1/domains"] * 3 + ["GET /status"]:
            conn.execute(
                "INSERT INTO shadow_mismatches (at, route, method, path, request, legacy, modern, diff, diff_text)"
                " VALUES ('now', ?, 'X', '/', '{}', '{}', '{}', '{}', 'd')",
                (route,),
            )
    conn.close()
    return plan, report, db


def test_status_joins_plan_report_and_shadow_store(files: tuple[Path, Path, Path]) -> None:
    plan, report, db = files
    result = cutover("status", "--plan", str(plan), "--report", str(report), "--db", str(db))
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert table["route or task"] == ["in legacy", "in modern", "plan mode", "last parity result", "shadow"]
    assert table["GET /status"] == ["yes", "yes", "modern", "same 1/1", "1 mismatch"]
    assert table["POST /v1/ocr"] == ["yes", "failing (1)", "canary 10%", "DIFFERENT 1/1", "0 mismatches"]
    assert table["POST /v1/domains"] == ["?", "?", "shadow", "?", "3 mismatches"]
    assert table["GET /v1/jobs/{job_id}"] == ["yes", "yes", "legacy", "same 5/5", "0 mismatches"]
    assert table["task data_sync"] == ["-", "-", "runs on modern", "-", "-"]
    assert "PUT /v1/jobs/abc" not in table  # not in the plan
    assert "2026-01-02T03:04:05" in result.stdout


def test_status_says_what_it_does_not_know(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    plan, _, _ = files
    result = cutover("status", "--plan", str(plan), "--report", str(tmp_path / "none.json"), "--db", str(tmp_path / "none.db"))
    assert result.returncode == 0, result.stderr
    assert rows(result.stdout)["GET /status"] == ["?", "?", "modern", "?", "?"]
    assert "no report at" in result.stdout and "no mismatch store at" in result.stdout


def test_status_reports_a_bad_plan_with_its_line(tmp_path: Path) -> None:
    plan = tmp_path / "cutover.toml"
    plan.write_text('[routes]\n"GET /status" = "canery"\n')
    result = cutover("status", "--plan", str(plan))
    assert result.returncode == 2
    assert f"{plan}:2:" in result.stderr and "canery" in result.stderr


def test_the_cli_imports_neither_app() -> None:
    code = (
        "import sys, bridge.cli, bridge.parity.plugin; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('legacy', 'modern')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


class Fake(BaseHTTPRequestHandler):
    """A stand-in service answering /status as the contract does."""

    name = ""

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"service": self.name, "version": "1", "uptime_s": 1.0, "ok": True}).encode()
        self.send_response(200 if self.path == "/status" else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fakes() -> Iterator[dict[str, str]]:
    servers = {}
    for stack in ("legacy", "modern"):
        handler = type(f"Fake{stack}", (Fake,), {"name": stack})
        servers[stack] = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=servers[stack].serve_forever, daemon=True).start()
    yield {stack: f"http://127.0.0.1:{server.server_address[1]}" for stack, server in servers.items()}
    for server in servers.values():
        server.shutdown()
        server.server_close()


def test_parity_runs_the_tests_and_prints_the_table(fakes: dict[str, str], tmp_path: Path) -> None:
    report = tmp_path / "parity.json"
    result = cutover(
        "parity", "--report", str(report), "--",
        "-q", "-p", "no:cacheprovider",
        "tests/parity/test_parity.py::test_status", "tests/parity/test_parity.py::test_each_stack_names_itself_in_status",
        f"--parity-legacy-url={fakes['legacy']}", f"--parity-modern-url={fakes['modern']}",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    assert rows(result.stdout)["GET /status"] == ["2/2", "2/2", "1/1"]
    data = json.loads(report.read_text())
    assert data["routes"]["GET /status"]["same"] == {"equal": 1, "different": 0}


def test_parity_without_a_report_is_an_error(fakes: dict[str, str], tmp_path: Path) -> None:
    report = tmp_path / "parity.json"
    result = cutover(
        "parity", "--report", str(report), "--", "-q", "-p", "no:cacheprovider", "-k", "no_such_test",
        f"--parity-legacy-url={fakes['legacy']}", f"--parity-modern-url={fakes['modern']}",
    )  # fmt: skip
    assert result.returncode == 5  # pytest's "no tests ran"
    assert "wrote no parity report" in result.stderr
    assert not report.exists()

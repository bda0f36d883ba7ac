"""data_sync: every inbox file is processed exactly once, across restarts too."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bridge import SharedPool, as_future
from bridge.testing import asyncio_test
from tests.conftest import in_daemon_thread, until
from tests.legacy.conftest import start_legacy
from tests.synth import bursts, wav

REPO = Path(__file__).resolve().parents[2]


def drop(var: Path, kind: str, name: str, data: bytes) -> Path:
    """Write as a well-behaved producer does: a dotfile first, then one rename into the inbox."""
    folder = var / "inbox" / kind
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, folder / name)
    return folder / name


def inbox_empty(var: Path) -> bool:
    return not any(p for p in (var / "inbox").rglob("*") if p.is_file() and not p.name.startswith("."))


@asyncio_test
async def test_each_inbox_file_is_processed_once_and_lands_in_done_or_failed(
    warm_pool: SharedPool, tmp_path: Path
) -> None:
    drop(tmp_path, "domains", "a.txt", b"see a.example.com")
    drop(tmp_path, "domains", "b.txt", b"mail x@b.example.org")
    drop(tmp_path, "audio", "speech.wav", wav(bursts(20.0)))
    drop(tmp_path, "faces", "broken.png", b"not a png")
    # A crash between writing c's output and moving c: on restart c must not run again.
    drop(tmp_path, "domains", "c.txt", b"c.example.net")
    (tmp_path / "outbox" / "domains").mkdir(parents=True)
    (tmp_path / "outbox" / "domains" / "c.txt.json").write_text('{"sentinel": true}')
    (tmp_path / "inbox" / "domains" / ".partial.txt.tmp").write_text("still being written")

    service, _ = start_legacy(warm_pool, tmp_path, sync_enabled=True, sync_interval=0.05)
    try:
        await until(lambda: inbox_empty(tmp_path), "the inbox to drain")
        outbox = tmp_path / "outbox"
        a = json.loads((outbox / "domains" / "a.txt.json").read_text())
        assert a == {"source": "a.txt", "kind": "domains", "result": {"domains": ["a.example.com"], "count": 1}}
        assert json.loads((outbox / "domains" / "b.txt.json").read_text())["result"]["domains"] == ["b.example.org"]
        assert abs(json.loads((outbox / "audio" / "speech.wav.json").read_text())["result"]["snr_db"] - 20) <= 1
        assert json.loads((outbox / "domains" / "c.txt.json").read_text()) == {"sentinel": True}
        assert sorted(p.name for p in (tmp_path / "done").rglob("*") if p.is_file()) == [
            "a.txt", "b.txt", "c.txt", "speech.wav"
        ]
        error = json.loads((tmp_path / "failed" / "faces" / "broken.png.error.json").read_text())
        assert error["code"] == "undecodable_image"
        assert (tmp_path / "failed" / "faces" / "broken.png").exists()
        assert (tmp_path / "inbox" / "domains" / ".partial.txt.tmp").exists()
        assert service.data_sync.state()["processed"] == 3

        drop(tmp_path, "domains", "later.txt", b"late.example.com")
        await until(lambda: (outbox / "domains" / "later.txt.json").exists(), "a file dropped while running")
    finally:
        await as_future(service.stop())


def start_process(var: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "legacy", "--port", "0", "--var", str(var)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        env={**os.environ, "CUTOVER_CPUS": "2"},
    )


@pytest.mark.subprocess
@asyncio_test
async def test_files_are_processed_exactly_once_across_a_kill_and_restart(tmp_path: Path) -> None:
    names = [f"doc{i:02}.txt" for i in range(40)]
    for name in names:
        drop(tmp_path, "domains", name, f"{name.removesuffix('.txt')}.example.com".encode())
    logs: list[str] = []
    for run in ("killed", "restarted"):
        child = start_process(tmp_path)
        assert child.stdout is not None
        try:
            if run == "killed":
                # Kill it once it has written some outputs but (very likely) not all.
                while "data_sync processed" not in (line := await in_daemon_thread(child.stdout.readline)):
                    logs.append(line)
                    assert line, "legacy exited before processing anything"
                logs.append(line)
                os.kill(child.pid, signal.SIGKILL)
                left_after_kill = len(list((tmp_path / "inbox" / "domains").glob("*.txt")))
            else:
                await until(lambda: inbox_empty(tmp_path), "the restarted service to drain the inbox")
                child.send_signal(signal.SIGTERM)
        finally:
            rest = await in_daemon_thread(child.stdout.read)
            logs.extend(rest.splitlines())
            child.wait(timeout=60)
    processed = Counter(re.findall(r"data_sync processed domains/(doc\d+\.txt)", "\n".join(logs)))
    assert max(processed.values()) == 1, processed
    done = sorted(p.name for p in (tmp_path / "done" / "domains").iterdir())
    assert done == names
    for name in names:
        output = json.loads((tmp_path / "outbox" / "domains" / f"{name}.json").read_text())
        assert output["result"]["domains"] == [f"{name.removesuffix('.txt')}.example.com"]
    assert not list((tmp_path / "failed").rglob("*.txt"))
    assert left_after_kill > 0, "the first run finished everything: the restart was not exercised"

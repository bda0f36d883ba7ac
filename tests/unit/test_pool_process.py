"""Process-wide behaviour of the pool, checked in child processes: the __main__ guard and orphaned workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge.testing import asyncio_test
from tests.conftest import process_gone

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.subprocess

BODY = """
import asyncio
from bridge import SharedPool

async def main():
    async with SharedPool(processes=1, cpus=2) as pool:
        print(await pool.run(abs, -41) + 1)
"""


def run_main(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "service.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_an_unguarded_main_module_fails_at_start_with_a_clear_error(tmp_path: Path) -> None:
    done = run_main(tmp_path, BODY + "\nasyncio.run(main())\n")
    assert done.returncode != 0
    assert "MainModuleGuardError" in done.stderr
    assert 'if __name__ == "__main__":' in done.stderr
    assert "BrokenProcessPool" not in done.stderr


def test_a_guarded_main_module_runs(tmp_path: Path) -> None:
    done = run_main(tmp_path, BODY + '\nif __name__ == "__main__":\n    asyncio.run(main())\n')
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"


ORPHAN = """
import asyncio, os, sys
from bridge import SharedPool

async def main():
    async with SharedPool(processes=2, cpus=2) as pool:
        pids = set()
        while len(pids) < 2:
            pids.update(await asyncio.gather(*(pool.run(os.getpid) for _ in range(8))))
        print(" ".join(map(str, sorted(pids))), flush=True)
        await asyncio.Event().wait()

if __name__ == "__main__":
    asyncio.run(main())
"""


@asyncio_test
async def test_workers_die_with_a_parent_that_was_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(ORPHAN))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert parent.stdout is not None
        line = await _readline(parent.stdout)
        workers = [int(pid) for pid in line.split()]
        assert len(workers) == 2 and parent.pid not in workers
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=60)
    for pid in workers:
        await process_gone(pid)


async def _readline(stream: object) -> str:
    from tests.conftest import in_daemon_thread

    return await in_daemon_thread(stream.readline)  # type: ignore[attr-defined]

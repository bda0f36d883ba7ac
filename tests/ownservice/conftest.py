"""Another team's service (``shop/itemshop``: Klein + a partial FastAPI rewrite) hosted by a real ``cutover serve``.

Everything here goes through what that team would use: its own plan, the ``cutover``
command, HTTP, the admin API and the parity plugin. The service is copied to a temporary
folder first, so the tests may edit its plan, and ``cutover`` runs from another folder, so
only the plan's own folder puts ``itemshop`` on the path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import WAIT

SHOP = Path(__file__).resolve().parent / "shop"
TOKEN = "shop-admin-token"
LISTENING = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")


@dataclass
class Served:
    process: subprocess.Popen[str]
    url: str
    plan: Path
    log: Path

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=WAIT, headers={"Authorization": f"Bearer {TOKEN}"})

    def stop(self) -> str:
        """SIGTERM, wait, and return everything it printed."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=WAIT)
        return self.log.read_text()


def env(var: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CUTOVER_POOL")}
    return {**clean, "CUTOVER_VAR": str(var), "CUTOVER_ADMIN_TOKEN": TOKEN, "CUTOVER_CPUS": "2",
            "CUTOVER_LAG_INTERVAL": "1"}


def cutover_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("cutover")), *args]


def serve(plan: Path, workdir: Path, *extra: str) -> Served:
    """Start ``cutover serve`` on a free port and wait (bounded) until it listens."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"serve-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            cutover_command("serve", "--plan", str(plan), "--port", "0", *extra),
            stdout=out, stderr=subprocess.STDOUT, text=True, cwd=workdir, env=env(workdir / "var"),
        )
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = LISTENING.search(log.read_text())
        if found:
            return Served(process, found.group(1), plan, log)
        if process.poll() is not None:
            raise AssertionError(f"cutover serve exited with {process.returncode}:\n{log.read_text()}")
        time.sleep(0.05)  # polling a log file for a line: the condition itself, checked every 50 ms
    process.kill()
    raise AssertionError(f"cutover serve did not listen within {WAIT} s:\n{log.read_text()}")


@pytest.fixture
def shop_copy(tmp_path: Path) -> Path:
    """A private copy of the shop (its plan is edited by some tests)."""
    target = tmp_path / "shop"
    shutil.copytree(SHOP, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.fixture
def shop(shop_copy: Path, tmp_path: Path) -> Iterator[Served]:
    served = serve(shop_copy / "cutover.toml", tmp_path / "elsewhere")
    try:
        yield served
    finally:
        output = served.stop()
        assert "Traceback" not in output, output

"""Every kind of start-up mistake: one line on stderr naming the cause (file and line where there is one),
a non-zero exit within seconds, and nothing left running."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import WAIT
from tests.ownservice.conftest import cutover_command, env

GOOD = """
[apps]
legacy = "itemshop.legacy:Shop"
modern = "itemshop.modern:app"

[routes]
"GET /items/{name}" = "legacy"
"""

BROKEN = '''
from contextlib import asynccontextmanager
from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app):
    raise RuntimeError("the database is not there")
    yield


app = FastAPI(lifespan=lifespan)


def factory_that_raises(pool):
    raise ValueError("no settings file")


def init_that_raises():
    raise OSError("model weights missing")


NOT_AN_APP = {"a": "dict"}
'''

CASES = [
    ("no [apps] at all", '[routes]\n"GET /items/{name}" = "legacy"\n',
     "no [apps] legacy: add an [apps] table with legacy = "),
    ("a module that is not there", GOOD.replace("itemshop.legacy:Shop", "itemshop.legacyy:Shop"),
     "cutover.toml:3: [apps] legacy 'itemshop.legacyy:Shop': no module named 'itemshop.legacyy'"),
    ("an attribute that is not there", GOOD.replace("itemshop.modern:app", "itemshop.modern:api"),
     "cutover.toml:4: [apps] modern 'itemshop.modern:api': module itemshop.modern has no attribute 'api'"),
    ("not a twisted.web app", GOOD.replace("itemshop.legacy:Shop", "broken:NOT_AN_APP"),
     "cutover.toml:3: [apps] legacy = 'broken:NOT_AN_APP': dict is not a twisted.web Site, an IResource, a Klein app"),
    ("a factory that raises", GOOD.replace("itemshop.modern:app", "broken:factory_that_raises"),
     "cutover.toml:4: [apps] modern = 'broken:factory_that_raises': the factory factory_that_raises raised "
     "ValueError: no settings file"),
    ("a lifespan that fails", GOOD.replace("itemshop.modern:app", "broken:app"),
     "cutover.toml:4: modern's lifespan startup failed: "),
    ("a route modern does not serve, in modern mode", GOOD + '"GET /" = "modern"\n',
     'cutover.toml:8: route "GET /" cannot be in modern mode: modern does not serve it'),
    ("a task nobody declares", GOOD + '\n[tasks]\nreindex = "modern"\n',
     'cutover.toml:10: unknown task "reindex" (known: audit, restock)'),
    ("a task given to a stack that does not declare it", GOOD + '\n[tasks]\naudit = "modern"\n',
     'cutover.toml:10: task "audit": modern does not declare it (only legacy does), so it would run nowhere'),
    ("a pool initializer that raises", GOOD.replace("[routes]", 'pool_initializer = "broken:init_that_raises"\n\n[routes]'),
     "cutover could not start: WorkerStartupError: the pool initializer failed in a worker: "
     "OSError: model weights missing"),
    ("invalid TOML", GOOD + '"GET /x" = \n', "cutover.toml:8: invalid TOML: "),
]


@pytest.mark.parametrize(("case", "plan", "message"), CASES, ids=[c[0] for c in CASES])
def test_a_start_up_mistake_is_one_line_and_a_quick_non_zero_exit(
    case: str, plan: str, message: str, shop_copy: Path, tmp_path: Path
) -> None:
    (shop_copy / "broken.py").write_text(BROKEN)
    plan_path = shop_copy / "cutover.toml"
    plan_path.write_text(textwrap.dedent(plan))
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    result = subprocess.run(
        cutover_command("serve", "--plan", str(plan_path), "--port", "0"),
        capture_output=True, text=True, cwd=workdir, env=env(workdir / "var"), timeout=WAIT,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("cutover: error: ")]
    assert len(errors) == 1, result.stderr
    assert message in errors[0], errors[0]
    assert str(plan_path) in errors[0] or "could not start" in errors[0]
    if "initializer" not in case:  # the pool logs the traceback of the team's own initializer, on purpose
        assert "Traceback" not in result.stderr + result.stdout
    assert "Uvicorn running" not in result.stderr  # nothing listened


def test_binding_beyond_loopback_with_the_admin_api_on_warns_loudly(shop_copy: Path, tmp_path: Path) -> None:
    plan_path = shop_copy / "cutover.toml"
    plan_path.write_text('[routes]\n"GET /" = "legacy"\n')  # refused before anything binds: no socket is opened
    result = subprocess.run(
        cutover_command("serve", "--plan", str(plan_path), "--host", "0.0.0.0", "--port", "0"),
        capture_output=True, text=True, cwd=tmp_path, env=env(tmp_path / "var"), timeout=WAIT,
    )
    assert result.returncode == 2
    assert "cutover: warning: the admin API (/_cutover) is on and --host 0.0.0.0 exposes it" in result.stderr
    assert "TLS" in result.stderr

"""The wheel a team installs: bridge only, the toolkit's own dependencies, and it hosts an app of theirs."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
import zipfile
from email.parser import Parser
from pathlib import Path

import httpx
import pytest

from tests.conftest import WAIT

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_ONLY = {"fastapi", "numpy", "pillow", "opencv-python", "opencv-python-headless", "rapidocr-onnxruntime",
                "onnxruntime", "python-multipart", "scikit-image", "klein"}

LEGACY = '''
from twisted.web.resource import Resource


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return b'{"hello": "from twisted"}'


site_root = Hello()
'''

MODERN = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"hello": "from asgi"}'})
'''

PLAN = '''
[apps]
legacy = "teamapp.legacy:site_root"
modern = "teamapp.modern:app"

[routes]
"GET /hello" = "legacy"
"GET /new" = "modern"
'''


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(REPO)],
        check=True, timeout=300, capture_output=True,
    )
    [built] = out.glob("*.whl")
    return built


def test_the_wheel_holds_bridge_only_with_the_toolkits_dependencies(wheel: Path) -> None:
    assert wheel.name.startswith("twisted_cutover-")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        top = {name.split("/", 1)[0] for name in names}
        [metadata_name] = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(zf.read(metadata_name).decode())
        entry_points = zf.read(metadata_name.replace("METADATA", "entry_points.txt")).decode()
    assert {t for t in top if not t.endswith(".dist-info")} == {"bridge"}
    assert "bridge/host/dashboard.html" in names
    assert metadata["Name"] == "twisted-cutover"
    required = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    names_required = {re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower() for r in required}
    assert names_required >= {"twisted", "uvicorn", "starlette", "httpx", "aiosqlite"}
    assert not names_required & EXAMPLE_ONLY, names_required & EXAMPLE_ONLY
    # Hypothesis (the parity strategies) comes only with the `parity` extra
    assert "hypothesis" not in names_required
    assert any(r.startswith("hypothesis") and 'extra == "parity"' in r for r in metadata.get_all("Requires-Dist") or [])
    assert "cutover = bridge.cli:main" in entry_points
    assert "bridge.parity.plugin = bridge.parity.plugin" in entry_points


def test_a_fresh_venv_with_only_the_wheel_hosts_a_teams_app(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    probe = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print([m for m in ('legacy', 'modern', 'workloads', 'numpy', "
         "'cv2', 'fastapi', 'hypothesis') if u.find_spec(m)])"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr

    app_dir = tmp_path / "service"
    (app_dir / "teamapp").mkdir(parents=True)
    (app_dir / "teamapp" / "__init__.py").write_text("")
    (app_dir / "teamapp" / "legacy.py").write_text(LEGACY)
    (app_dir / "teamapp" / "modern.py").write_text(MODERN)
    (app_dir / "cutover.toml").write_text(textwrap.dedent(PLAN))
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        child = subprocess.Popen(
            [str(venv / "bin" / "cutover"), "serve", "--plan", str(app_dir / "cutover.toml"), "--port", "0"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "CUTOVER_CPUS": "2",
                                                                     "CUTOVER_VAR": str(tmp_path / "var")},
        )
    try:
        deadline = time.monotonic() + WAIT
        while not (found := re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", log.read_text())):
            assert child.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        with httpx.Client(base_url=found.group(1), timeout=WAIT) as http:
            hello = http.get("/hello")
            assert hello.json() == {"hello": "from twisted"} and hello.headers["x-served-by"] == "legacy"
            new = http.get("/new")
            assert new.json() == {"hello": "from asgi"} and new.headers["x-served-by"] == "modern"
    finally:
        child.terminate()
        child.wait(timeout=WAIT)
    assert "Traceback" not in log.read_text(), log.read_text()

"""A service run by ``twistd`` today: its ``Application`` (what a ``.tac`` file builds) is named in ``[apps]``
as it is. The host serves the tree's twisted.web listener on its front door, never binds the listener's own
port, runs every other service of the tree (a ``TimerService``, one of the team's own) and stops them at exit."""

from __future__ import annotations

import subprocess
import textwrap
import time
from pathlib import Path

import httpx

from tests.conftest import WAIT
from tests.ownservice.conftest import cutover_command, env, serve

APPLICATION = '''
import json
from pathlib import Path

from twisted.application import internet, service, strports
from twisted.web.resource import Resource
from twisted.web.server import Site

TICKS = [0]


def tick():
    TICKS[0] += 1


class Flusher(service.Service):
    """The team's own service: it writes its state out when twistd (or cutover) stops it."""

    def stopService(self):
        Path("flushed.txt").write_text(str(TICKS[0]))
        return super().stopService()


class Ticks(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"ticks": TICKS[0], "listener_running": bool(listener.running)}).encode()


root = Resource()
root.putChild(b"ticks", Ticks())
application = service.Application("ticker")
listener = strports.service("tcp:0:interface=127.0.0.1", Site(root))
listener.setName("web")
listener.setServiceParent(application)
internet.TimerService(0.05, tick).setServiceParent(application)
Flusher().setServiceParent(application)

two_sites = service.Application("two")
strports.service("tcp:0:interface=127.0.0.1", Site(root)).setServiceParent(two_sites)
internet.TCPServer(0, Site(root), interface="127.0.0.1").setServiceParent(two_sites)
'''

MODERN = '''
from fastapi import FastAPI

app = FastAPI()


@app.get("/ticks")
async def ticks():
    return {"ticks": 0, "listener_running": False}
'''

PLAN = '''
[apps]
legacy = "ticker:{legacy}"
modern = "ticker_modern:app"

[routes]
"GET /ticks" = "legacy"
'''


def write_service(folder: Path, legacy: str) -> Path:
    folder.mkdir()
    (folder / "ticker.py").write_text(APPLICATION)
    (folder / "ticker_modern.py").write_text(MODERN)
    plan = folder / "cutover.toml"
    plan.write_text(textwrap.dedent(PLAN.format(legacy=legacy)))
    return plan


def test_a_twistd_application_is_served_as_twistd_would_run_it(tmp_path: Path) -> None:
    plan = write_service(tmp_path / "ticker", "application")
    served = serve(plan, tmp_path / "run")
    try:
        with httpx.Client(base_url=served.url, timeout=WAIT) as http:
            first = http.get("/ticks")
            assert first.status_code == 200 and first.headers["x-served-by"] == "legacy", first.text
            assert first.json()["listener_running"] is False  # the front door serves its Site; its port is never bound
            deadline = time.monotonic() + WAIT
            while http.get("/ticks").json()["ticks"] <= first.json()["ticks"] + 2:  # the TimerService runs
                assert time.monotonic() < deadline, "the application's TimerService never ticked"
                time.sleep(0.05)  # polling the app's own counter: the condition itself
    finally:
        output = served.stop()
    assert served.process.returncode == 0 and "Traceback" not in output, output
    assert "serving the Site of web on the front door" in output
    assert int((tmp_path / "run" / "flushed.txt").read_text()) > 0  # stopService reached the team's service


def test_an_application_with_two_web_listeners_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    plan = write_service(tmp_path / "ticker", "two_sites")
    result = subprocess.run(cutover_command("serve", "--plan", str(plan), "--port", "0"), capture_output=True,
                            text=True, timeout=WAIT, cwd=tmp_path, env=env(tmp_path / "var"))
    assert result.returncode == 2, result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.startswith("cutover: error: ")]
    assert line.startswith(f"cutover: error: {plan}:3: [apps] legacy = 'ticker:two_sites': the service tree has "
                           "2 twisted.web listeners (StreamServerEndpointService, TCPServer)"), result.stderr
    assert line.endswith("name the Site the front door serves instead")
    assert "Traceback" not in result.stderr and "Uvicorn running" not in result.stderr

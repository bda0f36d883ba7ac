"""Front-door cost in instructions per request: each stack alone vs through ``cutover serve``, under callgrind.

``bench frontdoor`` reads throughput and latency with wrk, which on a shared
2-core machine swing by more than the goals they are read against (a pool
route read 1.35x in one run and 0.72x in the next). This bench counts what
a machine to itself would show: the user-space instructions the server
process executes per request (``valgrind --tool=callgrind``), which are the
same however busy the machine is.

The same three servers as ``bench frontdoor`` run one after another (the front
door twice: with the routes on legacy, then on modern), each a fresh process
under callgrind with instrumentation off until it is warm. For each route,
``callgrind_control`` zeroes the counters, one keep-alive client sends
``REQUESTS`` requests one at a time, and the counters are dumped. The pool
worker runs outside callgrind (``--trace-children=no``): its work is the same
behind every server, and twisted.web alone and the front door send it the
same calls. Access logs are as each server ships: uvicorn's on, twisted.web's
to its log, cutover's own line on.

The ratio front / alone, inverted, is the throughput ratio a CPU-bound server
would have; the goals read against it are the issue's (legacy at 0.8x the
throughput, modern at 0.9x: at most 1.25x and 1.11x the instructions).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .frontdoor import DOMAINS_TEXT, ROUTES, SERVERS, free_port, running, server_commands, set_plan

NAME = "frontdoor_instructions"
REQUESTS = 1000
WARM_REQUESTS = 300
#: (comparison, base server, front mode): the front's route is set to the mode by a plan reload.
COMPARISONS = [
    ("legacy: front / twisted.web alone", "legacy", "legacy", 1 / 0.8),
    ("modern: front / uvicorn alone", "modern", "modern", 1 / 0.9),
]


def _tools() -> tuple[str, str]:
    valgrind, control = shutil.which("valgrind"), shutil.which("callgrind_control")
    if not valgrind or not control:
        raise SystemExit("bench frontdoor_instructions needs valgrind (Debian's package; `make bench` installs it)")
    return valgrind, control


def _send(port: int, method: str, path: str, count: int) -> None:
    """``count`` requests, one at a time, on one keep-alive connection; every answer must be a 200."""
    body = json.dumps({"text": DOMAINS_TEXT}).encode() if method == "POST" else None
    headers = {"Content-Type": "application/json"} if body is not None else {}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for _ in range(count):
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{method} {path}: {response.status}")
    finally:
        connection.close()


def _count(control: str, pid: int, out_dir: Path, port: int, method: str, path: str) -> float:
    """Instructions the server process ran per request over ``REQUESTS`` requests."""
    _send(port, method, path, WARM_REQUESTS)
    for dump in out_dir.glob("callgrind.*"):
        dump.unlink()
    subprocess.run([control, "--instr=on", str(pid)], check=True, capture_output=True)
    subprocess.run([control, "--zero", str(pid)], check=True, capture_output=True)
    _send(port, method, path, REQUESTS)
    subprocess.run([control, "--dump", str(pid)], check=True, capture_output=True)
    subprocess.run([control, "--instr=off", str(pid)], check=True, capture_output=True)
    dumps = sorted(out_dir.glob("callgrind.*"), key=lambda p: p.stat().st_mtime)
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump in {out_dir}")
    match = re.search(r"^(?:summary|totals):\s+(\d+)", dumps[-1].read_text(errors="replace"), re.M)
    if match is None:
        raise RuntimeError(f"no instruction total in {dumps[-1]}")
    return int(match.group(1)) / REQUESTS


def _run() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    valgrind, control = _tools()
    counts: dict[str, dict[str, float]] = {}  # "<server or front mode>" -> route -> instructions per request
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        folder = Path(tmp)
        plan = folder / "cutover.toml"
        urls = {name: f"http://127.0.0.1:{free_port()}" for name in SERVERS}
        # (server, front mode): a fresh process each, so every count follows the same requests before it.
        for run, (name, mode) in enumerate([("legacy", None), ("modern", None), ("cutover", "legacy"),
                                            ("cutover", "modern")]):
            out_dir = folder / f"{name}-{run}-callgrind"
            out_dir.mkdir()
            wrap = [valgrind, "--tool=callgrind", "--trace-children=no", "--instr-atstart=no",
                    f"--callgrind-out-file={out_dir}/callgrind.%p"]
            command, env = server_commands(folder, plan, urls, wrap)[name]
            port = int(urls[name].rsplit(":", 1)[1])
            key = f"front, {mode}" if mode else name
            with running(command, urls[name], env, folder / f"{name}-{run}.log", deadline_s=600) as proc:
                for route, (method, path) in ROUTES.items():
                    if mode:
                        set_plan(plan, urls[name], route, mode, None)
                    counts.setdefault(key, {})[route] = _count(control, proc.pid, out_dir, port, method, path)
                    print(f"    {key} {route}: {counts[key][route]:,.0f} instructions per request", flush=True)
    rows = []
    for route in ROUTES:
        for what, base, mode, goal in COMPARISONS:
            alone, front = counts[base][route], counts[f"front, {mode}"][route]
            ratio = front / alone
            rows.append({"route": route, "comparison": what, "alone instr/req": alone, "front instr/req": front,
                         "ratio": ratio, "throughput it implies": 1 / ratio,
                         "goal": f"<= {goal:.2f}x: {'met' if ratio <= goal else 'not met'}"})
    return rows, counts


def main() -> list[dict[str, Any]]:
    from .report import report

    rows, counts = _run()
    report(NAME, rows, notes=[
        f"valgrind --tool=callgrind: user-space instructions of the server process over {REQUESTS} requests, one at a "
        f"time on one keep-alive connection, after {WARM_REQUESTS} to warm up; the pool worker runs outside callgrind",
        "servers as in `bench frontdoor`: `python -m legacy`, `python -m modern`, `cutover serve` with the route's "
        "mode set by a plan reload; each server's own access log on",
        "ratio = front / alone; 'throughput it implies' is its inverse, what a CPU-bound machine would show; the "
        "counts do not move with the machine's load, unlike bench frontdoor's req/s",
        "GET /status is pure overhead (its body differs between the stacks); POST /v1/domains is a pool round trip",
    ], raw={"instructions per request": counts},
        title="frontdoor_instructions: instructions per request through `cutover serve` vs each stack alone (callgrind)")
    return rows


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()

"""Front-door overhead: each stack served directly vs through the co-hosted front door.

Everything runs in one process on one asyncio loop (Twisted's asyncio reactor
installed first), sharing one ``SharedPool(processes=1, cpus=2)``:

* modern alone under its own uvicorn, legacy alone on its own twisted.web port,
* the co-hosted front door (``Host`` under uvicorn), whose plan is flipped at
  run time between "modern", "legacy" and "shadow" for the route under test.

The load comes from a separate process (``python -m bench.frontdoor --client``,
a sync httpx client with keep-alive; a thread per connection for the
concurrent variant), so the client does not compete with the servers for the
loop. The parent awaits it with ``asyncio.create_subprocess_exec``, so its loop
keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

NAME = "frontdoor"
N_SEQ = 400
N_CONC = 800
CONCURRENCY = 8
WARMUP = 50
REPEATS = 3

DOMAINS_TEXT = "Docs at https://Docs.Example.com/x, mail ops@corp.example.org; mirror files.cdn.net. Again docs.example.com"
ROOT = Path(__file__).resolve().parent.parent

PLAN = """
[apps]
legacy = "legacy.service:cohost"
modern = "modern.app:cohost"

[routes]
"GET /status" = "modern"
"POST /v1/faces" = "legacy"
"POST /v1/ocr" = "legacy"
"POST /v1/audio/analyze" = "legacy"
"POST /v1/domains" = { mode = "legacy", shadow_safe = true }
"POST /v1/jobs" = "legacy"
"GET /v1/jobs" = "legacy"
"GET /v1/jobs/{job_id}" = "legacy"
"DELETE /v1/jobs/{job_id}" = "legacy"

[tasks]
data_sync = "legacy"
"""

ROUTES = {
    "POST /v1/domains": ("POST", "/v1/domains"),
    "GET /status": ("GET", "/status"),
}


# ---------------------------------------------------------------- the load client (subprocess)


def _client(url: str, method: str, path: str, n: int, concurrency: int, warmup: int) -> dict[str, Any]:
    import httpx

    body = json.dumps({"text": DOMAINS_TEXT}).encode() if method == "POST" else None
    headers = {"content-type": "application/json"} if body is not None else {}
    errors: list[int] = []

    def one(client: httpx.Client) -> float:
        t0 = time.perf_counter()
        response = client.request(method, path, content=body, headers=headers)
        response.read()
        elapsed = time.perf_counter() - t0
        if response.status_code >= 400:
            errors.append(response.status_code)
        return elapsed

    clients = [httpx.Client(base_url=url, timeout=60.0) for _ in range(concurrency)]
    try:
        for i in range(warmup):
            one(clients[i % concurrency])
        latencies: list[float] = []
        if concurrency == 1:
            t0 = time.perf_counter()
            latencies = [one(clients[0]) for _ in range(n)]
            wall = time.perf_counter() - t0
        else:
            lock = threading.Lock()
            remaining = [n]

            def worker(client: httpx.Client) -> None:
                while True:
                    with lock:
                        if remaining[0] <= 0:
                            return
                        remaining[0] -= 1
                    dt = one(client)
                    with lock:
                        latencies.append(dt)

            threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
    finally:
        for c in clients:
            c.close()
    return {"latencies_s": latencies, "wall_s": wall, "errors": errors}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def _load(url: str, method: str, path: str, n: int, concurrency: int) -> dict[str, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.frontdoor", "--client", url, method, path, str(n), str(concurrency),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"load client failed (exit {proc.returncode}) for {method} {url}{path}")
    result = json.loads(out)
    if result["errors"]:
        raise RuntimeError(f"{method} {url}{path}: {len(result['errors'])} error responses, e.g. {result['errors'][:5]}")
    lat = result["latencies_s"]
    return {"p50_ms": _percentile(lat, 0.5) * 1e3, "p99_ms": _percentile(lat, 0.99) * 1e3,
            "rps": len(lat) / result["wall_s"]}


# ---------------------------------------------------------------- servers (parent)


async def _until(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _serve(app: Any) -> tuple[Any, asyncio.Future[None], str]:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning"))
    serving = asyncio.ensure_future(server.serve())
    await _until(lambda: server.started or serving.done(), "uvicorn to start")
    if serving.done():
        serving.result()
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, serving, f"http://127.0.0.1:{port}"


async def _main() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import bridge

    bridge.install_reactor()  # before anything imports twisted.internet.reactor

    from bridge import SharedPool, as_future
    from bridge.cutover.host import Host, HostSettings
    from legacy import LegacyService, LegacySettings
    from modern import ModernSettings, create_app

    raw: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-frontdoor-") as tmp:
        tmp_path = Path(tmp)
        os.environ["CUTOVER_VAR"] = str(tmp_path / "host-var")  # the co-hosted stacks' var dir
        async with SharedPool(processes=1, cpus=2) as pool:
            legacy = LegacyService(pool, LegacySettings(host="127.0.0.1", port=0, var_dir=tmp_path / "legacy-var",
                                                        sync_enabled=False))
            legacy_url = f"http://127.0.0.1:{legacy.listen()}"
            legacy.startService()
            modern_app = create_app(ModernSettings(host="127.0.0.1", port=0, var_dir=tmp_path / "modern-var",
                                                   sync_enabled=False), pool=pool)
            modern_server, modern_serving, modern_url = await _serve(modern_app)
            plan_path = tmp_path / "cutover.toml"
            plan_path.write_text(textwrap.dedent(PLAN))
            host = Host(HostSettings(plan_path=plan_path, port=0, var_dir=tmp_path / "host-var",
                                     admin_token="bench-token"), pool=pool)
            host_server, host_serving, front_url = await _serve(host.asgi())
            try:
                for concurrency, n in ((1, N_SEQ), (CONCURRENCY, N_CONC)):
                    for route_key, (method, path) in ROUTES.items():
                        variants: list[tuple[str, str, str | None]] = [
                            ("modern direct", modern_url, None),
                            ("front modern", front_url, "modern"),
                            ("legacy direct", legacy_url, None),
                            ("front legacy", front_url, "legacy"),
                        ]
                        if route_key == "POST /v1/domains":
                            variants.append(("front shadow", front_url, "shadow"))
                        samples: dict[str, list[dict[str, float]]] = {v[0]: [] for v in variants}
                        for rep in range(REPEATS):
                            order = variants if rep % 2 == 0 else list(reversed(variants))
                            for label, url, mode in order:
                                if mode is not None:
                                    host.plan = host.plan.with_mode(method, path, mode, None)
                                samples[label].append(await _load(url, method, path, n, concurrency))
                        med = {label: {k: _median([s[k] for s in ss]) for k in ("p50_ms", "p99_ms", "rps")}
                               for label, ss in samples.items()}
                        raw[f"{route_key} c={concurrency}"] = samples
                        comparisons = [("modern: front/direct", "modern direct", "front modern"),
                                       ("legacy: front/direct", "legacy direct", "front legacy")]
                        if route_key == "POST /v1/domains":
                            comparisons.append(("shadow/legacy (front)", "front legacy", "front shadow"))
                        for name, base, new in comparisons:
                            b, f = med[base], med[new]
                            rows.append({
                                "route": route_key,
                                "in flight": concurrency,
                                "requests": n,
                                "comparison": name,
                                "base p50 ms": b["p50_ms"],
                                "new p50 ms": f["p50_ms"],
                                "p50 ratio": f["p50_ms"] / b["p50_ms"],
                                "base p99 ms": b["p99_ms"],
                                "new p99 ms": f["p99_ms"],
                                "base req/s": b["rps"],
                                "new req/s": f["rps"],
                            })
                        print(f"  done: {route_key} in flight={concurrency}", flush=True)
            finally:
                host_server.should_exit = True
                await host_serving
                modern_server.should_exit = True
                await modern_serving
                await as_future(legacy.stop())
        await bridge.stop_reactor()
    return rows, raw


def _median(values: list[float]) -> float:
    from .report import median

    return median(values)


def main() -> list[dict[str, Any]]:
    from .report import report

    rows, raw = asyncio.run(_main())
    report(NAME, rows, notes=[
        f"client in a separate process (httpx, keep-alive); {N_SEQ} sequential requests, and {N_CONC} with "
        f"{CONCURRENCY} in flight (one connection per thread); {WARMUP} warm-up requests per run; "
        f"median of {REPEATS} repeats, alternating order",
        "all servers on one asyncio loop in one process (Twisted asyncio reactor), one SharedPool(processes=1, cpus=2)",
        "direct = the stack on its own port (modern: its own uvicorn; legacy: twisted.web listenTCP); "
        "front = the co-hosted front door (Host under uvicorn), plan mode flipped at run time",
        "ratio = new/base for p50: > 1 means the new path is slower; shadow compares mode shadow "
        "(shadow_safe) with mode legacy, both through the front door",
        f"POST /v1/domains body: {len(DOMAINS_TEXT)}-char text (pool round trip); GET /status is pure overhead",
    ], raw={"samples": raw}, title="frontdoor: latency through the co-hosted front door vs each stack directly")
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        _url, _method, _path, _n, _c = sys.argv[2:7]
        print(json.dumps(_client(_url, _method, _path, int(_n), int(_c), WARMUP)))
    else:
        main()

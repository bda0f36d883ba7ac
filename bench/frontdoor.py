"""Front-door cost, measured with a real load generator: each stack alone vs through ``cutover serve``.

Three servers of this checkout run side by side, each in its own process with
its own pool (one worker on two cores, models loaded):

* ``twisted.web alone``: ``python -m legacy`` (the legacy Site on its own port);
* ``uvicorn alone``: ``python -m modern`` (FastAPI under its own uvicorn);
* ``cutover serve``: both apps behind the front door. Its plan is rewritten
  and reloaded (``POST /_cutover/api/reload``) between runs, to put the route
  under test in mode ``legacy``, ``modern`` or ``shadow`` (at two sample rates).

The load comes from ``wrk`` (C, one thread, keep-alive; ``make bench`` installs
it from Debian's packages), not a Python client sharing the server's GIL or
cores more than it must. Each variant runs for ``SECONDS`` at 1 and at 8
connections, on a pure-overhead route (``GET /status``) and a pool route
(``POST /v1/domains``), ``REPEATS`` times in alternating order, each compared
pair next to each other; the table has medians, and the ratios (medians of the
per-repeat ratios) are the front door's over the stack alone (or, for shadow,
over legacy mode through the same front door).

Those runs go as fast as the servers answer, so their p99 is a queueing figure
on a saturated machine. The shadow goal (shadow adds at most 5% to the client's
p99, at a sample rate that leaves the machine unsaturated) is read from a second
block: wrk at a fixed, low rate (each connection pauses ``RATE_DELAY_MS``
between an answer and its next request, wrk's ``delay()``), legacy mode and
shadow mode (at each of ``RATE_SAMPLES``) in ``RATE_PAIRS`` short runs each, alternating,
their latency histograms (wrk's raw distribution, from its ``done()`` hook)
pooled per mode, and the p99 read from each pool. The servers' CPU use during
those runs shows how far from saturation they were.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NAME = "frontdoor"
SECONDS = float(os.environ.get("BENCH_FRONTDOOR_SECONDS", "4"))
REPEATS = int(os.environ.get("BENCH_FRONTDOOR_REPEATS", "5"))
CONNECTIONS = (1, 8)
WARMUP_SECONDS = 1.0
TOKEN = "bench-token"
#: The sample rate of the sampled shadow variant: low enough that the mirrored copies leave the CPUs headroom.
SHADOW_SAMPLE = 0.1

#: The fixed-rate shadow runs: connections, each one's pause between an answer and its next request, the pairs
#: of runs (legacy mode, then shadow mode, alternating) and each run's length.
RATE_CONNECTIONS = 4
RATE_DELAY_MS = 20
RATE_PAIRS = int(os.environ.get("BENCH_FRONTDOOR_RATE_PAIRS", "12"))
RATE_SECONDS = float(os.environ.get("BENCH_FRONTDOOR_RATE_SECONDS", "4"))
#: The shadow sample rates of the fixed-rate runs: the bench's SHADOW_SAMPLE, and a tenth of it.
RATE_SAMPLES = (0.1, 0.01)

DOMAINS_TEXT = "Docs at https://Docs.Example.com/x, mail ops@corp.example.org; mirror files.cdn.net. Again docs.example.com"
ROOT = Path(__file__).resolve().parent.parent
ROUTES = {"GET /status": ("GET", "/status"), "POST /v1/domains": ("POST", "/v1/domains")}

PLAN = """
[apps]
legacy = "legacy.service:cohost"
modern = "modern.app:cohost"
pool_initializer = "workloads:warm_up"

[routes]
"GET /status" = {{ {status} }}
"POST /v1/domains" = {{ {domains} }}

[tasks]
data_sync = "legacy"
"""

# (label, server, mode, sample): mode None means the stack alone. Each pair that is compared runs next to each
# other (the order alternates between repeats), so a ratio is taken between two runs seconds apart.
VARIANTS: list[tuple[str, str, str | None, float | None]] = [
    ("twisted.web alone", "legacy", None, None),
    ("front, legacy", "cutover", "legacy", None),
    (f"front, shadow {SHADOW_SAMPLE:.0%}", "cutover", "shadow", SHADOW_SAMPLE),
    ("front, shadow 100%", "cutover", "shadow", 1.0),
    ("uvicorn alone", "modern", None, None),
    ("front, modern", "cutover", "modern", None),
]
COMPARISONS = [
    # (what, base, new, goal on req/s ratio, goal on p50 ratio, goal on p99 ratio)
    ("legacy: front / twisted.web alone", "twisted.web alone", "front, legacy", 0.8, 1.2, None),
    ("modern: front / uvicorn alone", "uvicorn alone", "front, modern", 0.9, None, None),
    ("shadow 100% / legacy, both through the front", "front, legacy", "front, shadow 100%", None, None, None),
    # its p99 goal is read from the fixed-rate rows (_fixed_rate): here the machine is saturated
    (f"shadow {SHADOW_SAMPLE:.0%} / legacy, both through the front", "front, legacy",
     f"front, shadow {SHADOW_SAMPLE:.0%}", None, None, None),
]


# ---------------------------------------------------------------- wrk


def _wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("bench frontdoor needs wrk: `make bench` installs it (apt-get install wrk)")
    return found


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text.strip()).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(out: str) -> dict[str, float]:
    """Requests per second, p50 and p99 in ms, and the error count, from ``wrk --latency`` output."""
    percentiles = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)\s*$", out, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None or set(percentiles) != {"50", "99"}:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    errors = 0
    for match in re.finditer(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        errors += int(match.group(1))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return {"rps": float(rps.group(1)), "p50_ms": _ms(percentiles["50"]), "p99_ms": _ms(percentiles["99"]),
            "errors": float(errors)}


def _script(folder: Path, method: str) -> Path | None:
    if method != "POST":
        return None
    script = folder / "post.lua"
    body = json.dumps({"text": DOMAINS_TEXT}).replace("\\", "\\\\").replace('"', '\\"')
    script.write_text(f'wrk.method = "POST"\nwrk.body = "{body}"\nwrk.headers["Content-Type"] = "application/json"\n')
    return script


def _rate_script(folder: Path, method: str) -> Path:
    """A wrk script for the fixed-rate runs: the request (POST body if any), a pause per connection, and the raw
    latency distribution printed at the end (one ``HIST`` line of ``microseconds:count`` pairs)."""
    script = folder / f"rate-{method.lower()}.lua"
    post = _script(folder, method)
    lines = [post.read_text()] if post is not None else []
    lines += [
        f"function delay() return {RATE_DELAY_MS} end",
        "function done(summary, latency, requests)",
        '  io.write("HIST")',
        "  for i = 1, #latency do",
        "    local v, c = latency(i)",
        '    io.write(string.format(" %d:%d", v, c))',
        "  end",
        '  io.write("\\n")',
        "end",
    ]
    script.write_text("\n".join(lines) + "\n")
    return script


def parse_hist(out: str) -> dict[int, int]:
    """wrk's latency distribution (microseconds -> requests) from the ``HIST`` line of :func:`_rate_script`."""
    match = re.search(r"^HIST((?: \d+:\d+)*)\s*$", out, re.M)
    if match is None:
        raise RuntimeError(f"no latency distribution in wrk's output:\n{out}")
    hist: dict[int, int] = {}
    for pair in match.group(1).split():
        value, count = pair.split(":")
        hist[int(value)] = hist.get(int(value), 0) + int(count)
    return hist


def pooled_ms(hist: dict[int, int], q: float) -> float:
    """The ``q`` quantile (0..1) of a pooled latency distribution, in ms."""
    total = sum(hist.values())
    if not total:
        return 0.0
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= q * total:
            return value / 1000
    return max(hist) / 1000


def _cpu_seconds(pid: int) -> float:
    """CPU time used so far by the server process and its children (pool workers, the forkserver)."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in (root, *root.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
    except psutil.Error:
        pass
    return total


def run_wrk(url: str, connections: int, seconds: float, script: Path | None, pid: int | None = None,
            hist: dict[int, int] | None = None) -> dict[str, float]:
    """One wrk run; with ``pid``, also the server's CPU time per request (steadier than req/s on a busy machine)
    and its share of one core over the run; with ``hist``, the run's latency distribution is added to it."""
    cpu_before = _cpu_seconds(pid) if pid is not None else 0.0
    command = [_wrk(), "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    if script is not None:
        command += ["-s", str(script)]
    done = subprocess.run([*command, url], capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    result = parse_wrk(done.stdout)
    if pid is not None:
        used = _cpu_seconds(pid) - cpu_before
        result["cpu_us"] = used / (result["rps"] * seconds) * 1e6 if result["rps"] else 0.0
        result["cpu_share"] = used / seconds
    if hist is not None:
        for value, count in parse_hist(done.stdout).items():
            hist[value] = hist.get(value, 0) + count
    return result


# ---------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except OSError:
        return 0


def _post(url: str, body: bytes = b"") -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextlib.contextmanager
def running(command: list[str], url: str, env: dict[str, str], log: Path,
            deadline_s: float = 180) -> Iterator[subprocess.Popen[bytes]]:
    """A server started from ``command``, once it answers ``/status``; SIGTERM (then SIGKILL) at the end."""
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + deadline_s  # the pool worker loads every model first
        while _get(url + "/status") != 200:
            if proc.poll() is not None:
                raise RuntimeError(f"{command} exited ({proc.returncode}): {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{command} did not answer /status within {deadline_s:g} s")
            time.sleep(0.2)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


#: Per route, the diff rules of the shipped cutover.toml: what differs by nature between the two stacks.
RULES = {
    "GET /status": 'ignore = ["service", "version", "uptime_s", "pool", "tasks"], skip = ["jobs"]',
    "POST /v1/domains": "",
}


def _route_entry(route: str, mode: str | None, sample: float | None) -> str:
    parts = [f'mode = "{mode or "legacy"}"', "shadow_safe = true", *filter(None, [RULES[route]])]
    if sample is not None:
        parts.append(f"sample = {sample}")
    return ", ".join(parts)


def set_plan(plan: Path, front: str, route: str, mode: str | None, sample: float | None) -> None:
    entries = {key: _route_entry(key, "legacy", None) for key in ROUTES}
    entries[route] = _route_entry(route, mode, sample)
    plan.write_text(PLAN.format(status=entries["GET /status"], domains=entries["POST /v1/domains"]))
    status, body = _post(front + "/_cutover/api/reload")
    if status != 200:
        raise RuntimeError(f"plan reload failed: {status} {body[:300]!r}")


# ---------------------------------------------------------------- the run

SERVERS = ("legacy", "modern", "cutover")


def server_commands(folder: Path, plan: Path, urls: dict[str, str],
                    wrap: list[str] | None = None) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each server's command line and environment: twisted.web alone, uvicorn alone, and ``cutover serve`` on
    ``plan`` (written here with every route on legacy). ``wrap`` goes before each command (a valgrind line)."""
    plan.write_text(PLAN.format(status=_route_entry("GET /status", "legacy", None),
                                domains=_route_entry("POST /v1/domains", "legacy", None)))
    env = dict(os.environ, CUTOVER_ADMIN_TOKEN=TOKEN, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    bin_dir = Path(sys.executable).parent
    cutover = [sys.executable, str(bin_dir / "cutover")] if (bin_dir / "cutover").exists() else ["cutover"]
    commands = {
        "legacy": [sys.executable, "-m", "legacy", "--port", urls["legacy"].rsplit(":", 1)[1], "--var",
                   str(folder / "legacy-var")],
        "modern": [sys.executable, "-m", "modern", "--port", urls["modern"].rsplit(":", 1)[1], "--var",
                   str(folder / "modern-var")],
        "cutover": [*cutover, "serve", "--plan", str(plan), "--port", urls["cutover"].rsplit(":", 1)[1]],
    }
    return {name: ([*(wrap or []), *command], dict(env, CUTOVER_VAR=str(folder / f"{name}-var")))
            for name, command in commands.items()}


def _run() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    _wrk()
    raw: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-frontdoor-") as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        plan = folder / "cutover.toml"
        urls = {name: f"http://127.0.0.1:{free_port()}" for name in SERVERS}
        pids: dict[str, int] = {}
        for name, (command, env) in server_commands(folder, plan, urls).items():
            pids[name] = stack.enter_context(running(command, urls[name], env, folder / f"{name}.log")).pid
        print(f"  servers up: {urls}", flush=True)
        for route, (method, path) in ROUTES.items():
            script = _script(folder, method)
            for connections in CONNECTIONS:
                samples: dict[str, list[dict[str, float]]] = {label: [] for label, *_ in VARIANTS}
                for rep in range(REPEATS):
                    order = VARIANTS if rep % 2 == 0 else VARIANTS[::-1]
                    for label, server, mode, sample in order:
                        if server == "cutover":
                            set_plan(plan, urls["cutover"], route, mode, sample)
                        url = urls[server] + path
                        run_wrk(url, connections, WARMUP_SECONDS, script)
                        result = run_wrk(url, connections, SECONDS, script, pids[server])
                        if result["errors"]:
                            raise RuntimeError(f"{label} {route}: {result['errors']:.0f} error responses")
                        samples[label].append(result)
                        print(f"    {route} c={connections} {label}: {result['rps']:.0f} req/s, "
                              f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
                              f"CPU {result.get('cpu_us', 0):.0f} us/req", flush=True)
                raw[f"{route} c={connections}"] = samples
                med = {label: {key: _median([s[key] for s in runs]) for key in ("rps", "p50_ms", "p99_ms", "cpu_us")}
                       for label, runs in samples.items()}
                for what, base, new, rps_goal, p50_goal, p99_goal in COMPARISONS:
                    pairs = list(zip(samples[base], samples[new], strict=True))
                    paired = {key: _median([n[key] / b[key] if b.get(key) else 0.0 for b, n in pairs])
                              for key in ("rps", "p50_ms", "p99_ms", "cpu_us")}
                    rows.append(_row(route, connections, what, med[base], med[new], paired, rps_goal, p50_goal,
                                     p99_goal))
                print(f"  done: {route} at {connections} connection(s)", flush=True)
            rows += _fixed_rate(route, path, folder, plan, urls["cutover"], pids["cutover"], raw)
    return rows, raw


def _fixed_rate(route: str, path: str, folder: Path, plan: Path, front: str, pid: int,
                raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Shadow's cost to the client's p99 when the machine is not saturated: legacy mode and shadow mode at each of
    ``RATE_SAMPLES``, at one fixed, low rate, in alternating short runs, each mode's latencies pooled (see the
    module's docstring). One row per sample rate, against legacy mode."""
    script = _rate_script(folder, ROUTES[route][0])
    modes = [("front, legacy", "legacy", None)]
    modes += [(f"front, shadow {sample:.0%}", "shadow", sample) for sample in RATE_SAMPLES]
    hists: dict[str, dict[int, int]] = {label: {} for label, *_ in modes}
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, *_ in modes}
    for pair in range(RATE_PAIRS):
        for label, mode, sample in modes if pair % 2 == 0 else modes[::-1]:
            set_plan(plan, front, route, mode, sample)
            run_wrk(front + path, RATE_CONNECTIONS, WARMUP_SECONDS, script)
            result = run_wrk(front + path, RATE_CONNECTIONS, RATE_SECONDS, script, pid, hist=hists[label])
            if result["errors"]:
                raise RuntimeError(f"{label} {route} at a fixed rate: {result['errors']:.0f} error responses")
            runs[label].append(result)
            print(f"    {route} fixed rate {label}: {result['rps']:.0f} req/s, p99 {result['p99_ms']:.2f} ms, "
                  f"server CPU {result.get('cpu_share', 0):.0%} of a core", flush=True)
    raw[f"{route} fixed rate"] = {"runs": runs, "histograms": hists}
    base_label = modes[0][0]
    return [_fixed_rate_row(route, base_label, label, hists, runs) for label, *_ in modes[1:]]


def _fixed_rate_row(route: str, base_label: str, new_label: str, hists: dict[str, dict[int, int]],
                    runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    base, new = hists[base_label], hists[new_label]
    rps = {label: _median([r["rps"] for r in runs[label]]) for label in (base_label, new_label)}
    cpu = {label: _median([r.get("cpu_us", 0.0) for r in runs[label]]) for label in (base_label, new_label)}
    share = max(r.get("cpu_share", 0.0) for label in (base_label, new_label) for r in runs[label])
    p50 = (pooled_ms(base, 0.5), pooled_ms(new, 0.5))
    p99 = (pooled_ms(base, 0.99), pooled_ms(new, 0.99))
    paired = _median([n["p99_ms"] / b["p99_ms"] for b, n in zip(runs[base_label], runs[new_label], strict=True)
                      if b["p99_ms"]])
    ratio = p99[1] / p99[0] if p99[0] else 0.0
    return {
        "route": route, "connections": f"{RATE_CONNECTIONS}, fixed rate",
        "comparison": f"{new_label.removeprefix('front, ')} / legacy at a fixed rate ({RATE_DELAY_MS} ms pause per "
                      f"connection; server at most {share:.0%} of a core; {sum(base.values()):,} and "
                      f"{sum(new.values()):,} requests pooled over {len(runs[base_label])} runs each; median of the "
                      f"per-run p99 ratios {paired:.2f})",
        "base req/s": rps[base_label], "new req/s": rps[new_label],
        "req/s ratio": rps[new_label] / rps[base_label] if rps[base_label] else 0.0,
        "base p50 ms": p50[0], "new p50 ms": p50[1], "p50 ratio": p50[1] / p50[0] if p50[0] else 0.0,
        "base p99 ms": p99[0], "new p99 ms": p99[1], "p99 ratio": ratio,
        "base CPU us/req": cpu[base_label], "new CPU us/req": cpu[new_label],
        "CPU ratio": cpu[new_label] / cpu[base_label] if cpu[base_label] else 0.0,
        "goal": f"p99 <= 1.05x: {'met' if ratio <= 1.05 else 'not met'}",
    }


def _row(route: str, connections: int, what: str, base: dict[str, float], new: dict[str, float],
         paired: dict[str, float], rps_goal: float | None, p50_goal: float | None,
         p99_goal: float | None) -> dict[str, Any]:
    """One comparison. The ratios are medians of the per-repeat ratios (each repeat's two runs side by side),
    which a load swing between repeats moves less than a ratio of medians; the goals are read from them."""
    rps, p50, p99 = paired["rps"], paired["p50_ms"], paired["p99_ms"]
    goals = []
    if rps_goal is not None:
        goals.append(f"req/s >= {rps_goal}x: {'met' if rps >= rps_goal else 'not met'}")
    if p50_goal is not None:
        goals.append(f"p50 <= {p50_goal}x: {'met' if p50 <= p50_goal else 'not met'}")
    if p99_goal is not None:
        goals.append(f"p99 <= {p99_goal}x: {'met' if p99 <= p99_goal else 'not met'}")
    return {
        "route": route, "connections": connections, "comparison": what,
        "base req/s": base["rps"], "new req/s": new["rps"], "req/s ratio": rps,
        "base p50 ms": base["p50_ms"], "new p50 ms": new["p50_ms"], "p50 ratio": p50,
        "base p99 ms": base["p99_ms"], "new p99 ms": new["p99_ms"], "p99 ratio": p99,
        "base CPU us/req": base["cpu_us"], "new CPU us/req": new["cpu_us"], "CPU ratio": paired["cpu_us"],
        "goal": "; ".join(goals),
    }


def _median(values: list[float]) -> float:
    from .report import median

    return median(values)


def main() -> list[dict[str, Any]]:
    from .report import report

    rows, raw = _run()
    report(NAME, rows, notes=[
        f"wrk -t1 (C, keep-alive) at 1 and 8 connections; {SECONDS:g} s per run after a {WARMUP_SECONDS:g} s warm-up; "
        f"median of {REPEATS} repeats, alternating order",
        "each server in its own process with its own SharedPool (1 worker, models loaded): twisted.web alone is "
        "`python -m legacy`, uvicorn alone `python -m modern`, front is `cutover serve` with the route's mode "
        "set by a plan reload between runs",
        "ratio = front / alone (req/s: below 1 is slower; p50 and p99: above 1 is slower); shadow rows compare "
        "shadow mode with legacy mode, both through the front door",
        "the req/s, p50, p99 and CPU columns of each side are medians over the repeats; each ratio is the median of "
        "the per-repeat ratios (the two variants of a comparison run next to each other in every repeat)",
        "CPU us/req: CPU time of the server process and its children (pool worker) per request, over the run; "
        "its ratio is what a machine to itself would show as the throughput ratio (inverted)",
        f"GET /status is pure overhead; POST /v1/domains sends a {len(DOMAINS_TEXT)}-char text (a pool round trip)",
        "2 cores shared with wrk and the pool worker, and with other work on the machine: read ratios from one "
        "run, side by side",
        f"fixed-rate rows: wrk -t1 -c{RATE_CONNECTIONS} with a {RATE_DELAY_MS} ms pause per connection after each "
        f"answer (wrk's delay()), {RATE_PAIRS} runs of {RATE_SECONDS:g} s per mode, alternating; p50/p99 from each "
        "mode's latencies pooled over its runs (wrk's raw distribution); the shadow p99 goal is read here, where "
        "p99 is a latency figure, not a queue's",
    ], raw={"samples": raw}, title="frontdoor: throughput and latency through `cutover serve` vs each stack alone (wrk)")
    return rows


if __name__ == "__main__":
    main()

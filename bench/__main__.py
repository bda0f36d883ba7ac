"""Run the benchmarks: ``python -m bench [name ...]`` (``make bench`` runs them all).

Each benchmark runs in a fresh interpreter (``python -m bench.<name>``), in the
order below, so none inherits another's state: the bridge benchmark installs
Twisted's reactor for the rest of its process, and pools, forkservers and
threads left by one run must not skew the next. Each prints its own table and
writes ``bench/results/<name>.json`` and ``.md``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = ("dispatch", "peers", "cpu_scaling", "loop_lag", "bridge", "frontdoor", "frontdoor_instructions",
              "reliability", "dask", "rewrite", "jobs_fleet", "mutants")


def main(argv: list[str]) -> int:
    unknown = [name for name in argv if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    selected = [name for name in BENCHMARKS if not argv or name in argv]

    from bridge.cpu import cpu_budget

    budget = cpu_budget()
    print(f"cutover benchmarks: {', '.join(selected)}")
    print(f"CPU budget {budget.cpus} ({budget.reason}); Python {sys.version.split()[0]}")
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    failed = []
    start = time.perf_counter()
    for name in selected:
        t0 = time.perf_counter()
        sys.stdout.flush()
        proc = subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=root, env=env)
        status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        print(f"  [{name}: {status}, {time.perf_counter() - t0:.1f}s]")
        if proc.returncode != 0:
            failed.append(name)
    print(f"\nall done in {time.perf_counter() - start:.1f}s; results in {root / 'bench' / 'results'}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

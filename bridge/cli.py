"""The ``cutover`` console script.

Each subcommand is one ``_add_*`` function that registers its parser and one
``_run_*`` function that does the work and returns the exit status. To add a
subcommand, write both and list the ``_add_*`` function in ``SUBCOMMANDS``.

Results go to stdout and diagnostics to stderr, so ``--json`` output can be
piped straight into ``jq`` even when a cgroup file is malformed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from .cpu import CpuBudgetWarning, cpu_budget
from .database import DatabaseURL
from .errors import CpuBudgetError, StoreUnavailable

PROG = "cutover"

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _add_cpus(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "cpus",
        help="how many CPUs this process may use, and why",
        description="Print the tightest of the cgroup quota, cpuset and affinity limits "
        "(CUTOVER_CPUS overrides them all).",
    )
    parser.add_argument("--root", default="/", metavar="DIR", help="read /proc and /sys below DIR (default: /)")
    parser.add_argument("--json", action="store_true", help='print one JSON object: {"cpus": N, "reason": "..."}')
    parser.set_defaults(run=_run_cpus)


def _run_cpus(args: argparse.Namespace) -> int:
    if not Path(args.root).is_dir():
        return _error(f"--root {args.root!r} is not a directory")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CpuBudgetWarning)
        try:
            budget = cpu_budget(args.root)
        except CpuBudgetError as exc:
            budget, error = None, str(exc)
    _report(caught)
    if budget is None:
        return _error(error)
    if args.json:
        print(json.dumps({"cpus": budget.cpus, "reason": budget.reason}))
    else:
        print(f"{budget.cpus} CPU{'' if budget.cpus == 1 else 's'}: {budget.reason}")
    return 0


STACKS = ("legacy", "modern")


def _add_serve(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run both stacks behind the front door (or one alone with --only)",
        description="Host the legacy and modern apps named in the plan's [apps] in one process on one loop, "
        "routed by the plan.",
    )
    parser.add_argument("--plan", type=Path, default=Path("cutover.toml"), help="the cutover plan (default: cutover.toml)")
    parser.add_argument("--only", choices=STACKS, help="serve this stack of [apps] alone, without the front door")
    parser.add_argument("--app-dir", type=Path, default=None, metavar="DIR",
                        help="where the [apps] import strings resolve from (default: [apps] app_dir, else the plan's folder)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000; 0 picks a free one)")
    parser.add_argument("--no-access-log", dest="access_log", action="store_false",
                        help="write no access line per request (default: one on stdout, with who answered it)")
    parser.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    import logging

    from .errors import HostStartError, PlanError
    from .host.runtime import HostSettings
    from .host.runtime import serve as serve_host

    if not args.plan.is_file():
        return _error(f"no plan at {args.plan}: pass --plan FILE (a TOML file with an [apps] table; see README)")
    if not 0 <= args.port <= 65535:
        return _error(f"--port must be between 0 and 65535, got {args.port}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    if args.host not in ("127.0.0.1", "localhost", "::1") and os.environ.get("CUTOVER_ADMIN_TOKEN") and args.only is None:
        print(f"{PROG}: warning: the admin API (/_cutover) is on and --host {args.host} exposes it beyond this "
              "machine, in clear text: put a TLS-terminating proxy in front, or keep the admin API on loopback "
              "(README: Admin API exposure)", file=sys.stderr)
    try:
        settings = HostSettings(plan_path=args.plan, host=args.host, port=args.port, app_dir=args.app_dir, only=args.only,
                                access_log=args.access_log)
        asyncio.run(serve_host(settings))
    except (PlanError, HostStartError, ValueError) as exc:
        return _error(str(exc))
    except KeyboardInterrupt:
        return 130
    return 0


DEFAULT_REPORT = Path("var/parity.json")  # where bridge.parity.plugin writes by default, under the rootdir


def _add_parity(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "parity",
        help="run the parity tests against both stacks and print what they found per route",
        description="Run your pytest suite (as `pytest PYTEST_ARGS` would, from this folder) with the "
        "bridge.parity.plugin, then print per route how many tests passed on each stack and how many "
        "comparisons gave the same output. Arguments after the options go to pytest (use -- before ones "
        "that start with a dash), e.g. cutover parity -- tests/parity --parity-legacy-url URL --parity-modern-url URL.",
    )
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help=f"the report to write and read (default: {DEFAULT_REPORT})")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, metavar="PYTEST_ARGS", help="passed to pytest")
    parser.set_defaults(run=_run_parity)


def _run_parity(args: argparse.Namespace) -> int:
    import subprocess
    import time

    report = args.report.resolve()
    extra = list(args.pytest_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    # The plugin is a pytest11 entry point, so pytest loads it; -p makes sure of it where entry points are off.
    command = [sys.executable, "-m", "pytest", "-p", "bridge.parity.plugin", f"--parity-report={report}", *extra]
    started = time.time()
    status = subprocess.run(command).returncode
    data = _read_report(report)
    if data is None or not report.stat().st_mtime >= started - 1:
        print(f"{PROG}: error: pytest wrote no parity report to {report} (exit status {status})", file=sys.stderr)
        return status or 1
    print()
    rows = []
    for route, entry in data.get("routes", {}).items():
        rows.append([route, _passes(entry.get("legacy")), _passes(entry.get("modern")), _same(entry)])
    _table(["route", "legacy passes", "modern passes", "same output"], rows)
    return status


def _add_status(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "status",
        help="where the migration stands: per route and task, plan mode, parity and shadow results",
        description="Print one row per route and task of the plan, with what the last parity report and the "
        "shadow mismatch store say about it (? where they say nothing).",
    )
    parser.add_argument("--plan", type=Path, default=Path("cutover.toml"), help="the cutover plan (default: cutover.toml)")
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help=f"the parity report (default: {DEFAULT_REPORT})")
    parser.add_argument("--db", type=_state_source, default=None,
                        help="the host's store: a SQLite file or a postgresql:// URL "
                        "(default: $CUTOVER_DATABASE, else $CUTOVER_VAR/cutover.db, else var/cutover.db)")
    parser.set_defaults(run=_run_status)


def _run_status(args: argparse.Namespace) -> int:
    from .errors import PlanError
    from .host.plan import Plan

    if not args.plan.is_file():
        return _error(f"no plan at {args.plan}: pass --plan FILE")
    try:
        plan = Plan.load(args.plan)
    except PlanError as exc:
        return _error(str(exc))
    try:
        db = args.db if args.db is not None else _default_source()
    except ValueError as exc:
        return _error(f"CUTOVER_DATABASE: {exc}")
    plan = _effective(plan, db)  # the modes the host runs: the file and the changes made at run time
    report = _read_report(args.report) if args.report.is_file() else None
    mismatches = _shadow_mismatches(db)
    # summed per route: a fleet's replicas each keep their own row on PostgreSQL
    summary = {row[0]: row[1:] for row in _store_rows(
        db, "SELECT route, SUM(compared), SUM(different), SUM(aa_samples), SUM(aa_differing), MAX(noise_fields)"
            " FROM shadow_routes GROUP BY route") or []}
    inventory = _store_rows(db, "SELECT route, in_plan, mode, in_legacy, in_modern FROM route_inventory ORDER BY at")
    declared = {row[0]: (row[3], row[4]) for row in inventory or []}  # the newest row of each route wins

    # Each report key ("POST /orders", or a concrete "GET /orders/abc") counts for the plan route that takes it.
    per_route: dict[str, list[dict[str, Any]]] = {}
    for key, entry in (report or {}).get("routes", {}).items():
        method, _, path = key.partition(" ")
        route = plan.find(method, path) if "{" in path else plan.route_for(method, path)
        if route is not None:
            per_route.setdefault(route.key, []).append(entry)

    rows = []
    # The plan's routes, then those only the apps declare (the host's inventory from its last start).
    keys = [route.key for route in plan.routes] + [k for k in declared if plan.find(*k.split(" ", 1)) is None]
    for key in keys:
        route = plan.find(*key.split(" ", 1))
        entries = per_route.get(key, [])
        if route is None:
            mode = "legacy (not in the plan)"
        else:
            mode = f"canary {route.percent:g}%" if route.mode == "canary" else route.mode
        if mismatches is None:
            shadow = "?"
        else:
            count = mismatches.get(key, 0)
            shadow = f"{count} mismatch{'' if count == 1 else 'es'}"
            if key in summary:
                shadow += _rates(*summary[key])
        in_legacy, in_modern = declared.get(key, (None, None))
        rows.append([key, _implemented(entries, "legacy", in_legacy), _implemented(entries, "modern", in_modern),
                     mode, _parity(entries), shadow])
    for task, owner in plan.tasks.items():
        rows.append([f"task {task}", "-", "-", f"runs on {owner}", "-", "-"])
    _table(["route or task", "in legacy", "in modern", "plan mode", "last parity result", "shadow"], rows)
    unrouted = _store_rows(db, "SELECT method, path, SUM(requests), MAX(last_status) FROM unrouted_requests"
                               " GROUP BY method, path ORDER BY 3 DESC, path LIMIT 50")
    if unrouted:
        print("\nrequests that matched no plan route (most first):")
        _table(["method", "path", "requests", "last status"], [[m, p, str(n), str(st)] for m, p, n, st in unrouted])
    notes = [f"plan: {args.plan}"]
    if report is None:
        notes.append(f"parity: no report at {args.report} (run `cutover parity`)")
    else:
        notes.append(f"parity: {args.report}, written {report.get('generated_at', '?')}")
    if mismatches is None:
        notes.append(f"shadow: no mismatch store at {db}")
    else:
        notes.append(f"shadow: mismatches, rates and A/A noise floors as the host last stored them in {db}")
    print("\n".join(notes))
    return 0


def _rates(compared: int, different: int, samples: int, differing: int, fields: str) -> str:
    """``; rate 0.0% of 54; noise floor 2/6 A/A (body.uptime_s)``: the mismatch rate next to the noise floor."""
    rate = f"; rate {100 * different / compared:.1f}% of {compared}" if compared else "; none compared"
    if not samples:
        return rate + "; noise floor: no A/A samples"
    noisy = json.loads(fields)
    return rate + f"; noise floor {differing}/{samples} A/A" + (f" ({', '.join(noisy)})" if noisy else "")


def _read_report(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        print(f"{PROG}: warning: cannot read parity report {path}: {exc}", file=sys.stderr)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("routes"), dict):
        print(f"{PROG}: warning: {path} is not a parity report", file=sys.stderr)
        return None
    return data


def _state_source(raw: str) -> Path | DatabaseURL:
    """``--db``: a database URL (``postgresql://``, ``sqlite:///``) or a SQLite file's path."""
    from .database import parse_database_url

    if "://" not in raw:
        return Path(raw)
    try:
        url = parse_database_url(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return url if url.engine == "postgresql" else Path(url.path or "")


def _default_source() -> Path | DatabaseURL:
    """Where a host started from this shell keeps its state: CUTOVER_DATABASE, else the var folder's file."""
    from .database import database_url

    url = database_url(Path(os.environ.get("CUTOVER_VAR", "var")) / "cutover.db")
    return url if url.engine == "postgresql" else Path(url.path or "")


def _shadow_mismatches(db: Path | DatabaseURL) -> dict[str, int] | None:
    """Stored mismatches per route, or None when there is no store to ask."""
    rows = _store_rows(db, "SELECT route, COUNT(*) FROM shadow_mismatches GROUP BY route")
    return None if rows is None else {str(route): int(count) for route, count in rows}


def _store_rows(db: Path | DatabaseURL, query: str) -> list[tuple[Any, ...]] | None:
    """Rows from the host's store, read-only; [] for a table the host has not made yet, None with no store."""
    if not isinstance(db, Path):
        return _postgres_rows(db, query)
    import sqlite3

    if not db.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            return conn.execute(query).fetchall()
    except sqlite3.Error as exc:
        if "no such table" in str(exc):
            return []
        print(f"{PROG}: warning: cannot read {db}: {exc}", file=sys.stderr)
        return None


def _postgres_rows(url: DatabaseURL, query: str) -> list[tuple[Any, ...]] | None:
    try:
        import psycopg
    except ImportError:
        print(f"{PROG}: warning: reading {url} needs psycopg: pip install 'twisted-cutover[postgres]'", file=sys.stderr)
        return None
    try:
        with psycopg.connect(url.dsn or "", connect_timeout=5, autocommit=True) as conn:
            conn.read_only = True
            return list(conn.execute(query).fetchall())  # type: ignore[arg-type]  (our own constant queries)
    except psycopg.errors.UndefinedTable:
        return []
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"{PROG}: warning: cannot read {url}: {first}", file=sys.stderr)
        return None


def _counts(entries: list[dict[str, Any]], stack: str) -> dict[str, int]:
    total = {"passed": 0, "failed": 0, "xfailed": 0}
    for entry in entries:
        for outcome in total:
            total[outcome] += int((entry.get(stack) or {}).get(outcome, 0))
    return total


def _passes(outcomes: dict[str, int] | None) -> str:
    counts = _counts([{"s": outcomes or {}}], "s")
    ran = sum(counts.values())
    if not ran:
        return "-"
    text = f"{counts['passed']}/{ran}"
    return text + (f" ({counts['xfailed']} xfail)" if counts["xfailed"] else "")


def _same(entry: dict[str, Any]) -> str:
    same = entry.get("same") or {}
    equal, different = int(same.get("equal", 0)), int(same.get("different", 0))
    return f"{equal}/{equal + different}" if equal + different else "-"


def _implemented(entries: list[dict[str, Any]], stack: str, declared: bool | None = None) -> str:
    """What the parity report says of a stack's route, else what the app declared (the host's inventory)."""
    counts = _counts(entries, stack)
    if counts["failed"]:
        return f"failing ({counts['failed']})"
    if counts["passed"]:
        return "yes"
    if counts["xfailed"]:
        return "xfail"
    if declared is None:
        return "?"
    return "yes" if declared else "no"


def _parity(entries: list[dict[str, Any]]) -> str:
    equal = sum(int((e.get("same") or {}).get("equal", 0)) for e in entries)
    different = sum(int((e.get("same") or {}).get("different", 0)) for e in entries)
    known = max(_counts(entries, "legacy")["xfailed"], _counts(entries, "modern")["xfailed"])
    if not equal + different:
        return "?"
    text = f"same {equal}/{equal + different}" if not different else f"DIFFERENT {different}/{equal + different}"
    return text + (f", {known} known gap{'' if known == 1 else 's'}" if known else "")


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print(" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _add_rewrite(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "rewrite",
        help="rewrite @inlineCallbacks code to async def (libcst: comments and formatting survive)",
        description="Convert inlineCallbacks generators to async def. Prints a diff by default; "
        "what cannot be converted safely is left alone and reported as file:line: reason. "
        "With --target asyncio, functions converted in any of the given files count as async in all of them.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders of .py files")
    parser.add_argument("--target", choices=["twisted", "asyncio"], default="twisted",
                        help="twisted: async def behind @deferred_api, still called from Twisted (step one); "
                        "asyncio: plain async def for asyncio callers, Twisted calls converted (moving to modern)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--diff", action="store_true", help="print a unified diff (the default)")
    mode.add_argument("--write", action="store_true", help="rewrite the files in place")
    mode.add_argument("--check", action="store_true", help="exit 1 if anything would change (for CI)")
    parser.add_argument("--unknown-yields", choices=["helper", "report"], default="helper",
                        help="a yield of what may not be awaitable: await maybe_awaitable(x), listed (helper, the "
                        "default), or a plain await reported for review (report)")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="worker processes for big trees (default: the CPU budget)")
    parser.set_defaults(run=_run_rewrite)


def _run_rewrite(args: argparse.Namespace) -> int:
    from .rewrite.runner import main

    if args.jobs is not None and args.jobs < 1:
        return _error(f"--jobs must be at least 1, got {args.jobs}")
    mode = "write" if args.write else "check" if args.check else "diff"
    return main(args.paths, args.target, mode, args.unknown_yields, args.jobs)


DEFAULT_URL = "http://127.0.0.1:8000"


def _add_promote(subparsers: Subparsers) -> None:
    for name, what in (("promote", "move a route to its next step, if the gates pass (or --force)"),
                       ("rollback", "move a route back to its last safe mode (legacy answering every request)")):
        parser = subparsers.add_parser(
            name, help=what, description=f"{what[0].upper()}{what[1:]}, through the running host's admin API "
            "(the token from CUTOVER_ADMIN_TOKEN). Prints the move, or the gates that refused it and their figures.",
        )
        parser.add_argument("route", metavar="ROUTE", help='the route as the plan writes it, e.g. "GET /items/{name}"')
        parser.add_argument("--url", default=os.environ.get("CUTOVER_URL", DEFAULT_URL),
                            help=f"the running cutover serve (default: $CUTOVER_URL, else {DEFAULT_URL})")
        parser.add_argument("--why", default="", help="the reason, kept in the history")
        if name == "promote":
            parser.add_argument("--force", action="store_true", help="move even if the gates refuse (recorded as forced)")
        parser.set_defaults(run=_run_step, step=name)


def _run_step(args: argparse.Namespace) -> int:
    import httpx

    token = os.environ.get("CUTOVER_ADMIN_TOKEN")
    if not token:
        return _error("set CUTOVER_ADMIN_TOKEN to the admin token of the running cutover serve")
    body: dict[str, Any] = {"route": args.route, "why": args.why}
    if args.step == "promote":
        body["force"] = bool(args.force)
    try:
        response = httpx.post(f"{args.url.rstrip('/')}/_cutover/api/{args.step}", json=body, timeout=30,
                              headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        return _error(f"cannot reach cutover at {args.url}: {exc}")
    try:
        data = response.json()
    except ValueError:
        return _error(f"{args.url} answered {response.status_code} without JSON")
    if response.status_code == 409:
        refused = data["error"].get("refused", {})
        print(f"refused: {data['error']['message']}", file=sys.stderr)
        rows = [[g["gate"], "pass" if g["passed"] else "FAIL", "-" if g["figure"] is None else f"{g['figure']:g}",
                 f"{g['threshold']:g}"] for g in refused.get("gates", [])]
        _table(["gate", "result", "figure", "threshold"], rows)
        return 1
    if response.status_code >= 400:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        return _error(f"{response.status_code} {error.get('code', '')}: {error.get('message', response.text[:200])}")
    change = data.get("change")
    if change is None:
        print(f"{args.route}: already there, nothing moved")
        return 0
    def shown(value: dict[str, Any]) -> str:
        return f"canary {value['percent']:g}%" if value["mode"] == "canary" else str(value["mode"])
    print(f"{change['key']}: {shown(change['from'])} -> {shown(change['to'])} by {change['who']}"
          f"{' (forced)' if change['forced'] else ''} (change {change['id']})")
    return 0


def _add_plan(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("plan", help="the effective plan: the file with the changes made at run time",
                                   description="Work with the effective plan.")
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    export = actions.add_parser(
        "export", help="write the effective plan as TOML, the file's comments kept",
        description="Read the plan file and the run-time changes the host stored, and write the plan they make "
        "together as TOML (the file's comments and layout kept). Needs no running host.",
    )
    export.add_argument("--plan", type=Path, default=Path("cutover.toml"), help="the plan file (default: cutover.toml)")
    export.add_argument("--db", type=_state_source, default=None,
                        help="the host's store: a SQLite file or a postgresql:// URL "
                        "(default: $CUTOVER_DATABASE, else $CUTOVER_VAR/cutover.db, else var/cutover.db)")
    export.add_argument("-o", "--output", type=Path, default=None, help="write here instead of stdout")
    export.set_defaults(run=_run_plan_export)


def _run_plan_export(args: argparse.Namespace) -> int:
    from .errors import PlanError
    from .host.export import export_toml
    from .host.plan import Plan

    if not args.plan.is_file():
        return _error(f"no plan at {args.plan}: pass --plan FILE")
    try:
        db = args.db if args.db is not None else _default_source()
    except ValueError as exc:
        return _error(f"CUTOVER_DATABASE: {exc}")
    try:
        text = args.plan.read_text(encoding="utf-8")
        base = Plan.parse(text, args.plan)
    except (OSError, UnicodeDecodeError, PlanError) as exc:
        return _error(str(exc))

    exported = export_toml(text, _effective(base, db))
    if args.output is None:
        sys.stdout.write(exported)
    else:
        args.output.write_text(exported, encoding="utf-8")
    return 0


def _effective(base: Any, db: Path | DatabaseURL) -> Any:
    """The plan file ``base`` with the run-time changes stored in ``db`` laid on top (as the host does)."""
    from .host.history import apply_overrides

    if isinstance(db, Path):
        from .host.history import PlanStore

        store: Any = PlanStore(db) if db.is_file() else None
    else:
        from .host.history_pg import PostgresPlanStore

        store = PostgresPlanStore(db.dsn or "", replica=f"{PROG} plan")

    async def overrides() -> list[dict[str, Any]]:
        await store.open()
        try:
            return list(await store.overrides())
        finally:
            await store.close()

    try:
        stored = asyncio.run(overrides()) if store is not None else []
    except StoreUnavailable as exc:
        print(f"{PROG}: warning: the run-time changes are not read: {exc}", file=sys.stderr)
        stored = []
    effective, dropped = apply_overrides(base, stored)
    for override, reason in dropped:
        print(f"{PROG}: warning: the change to {override['key']} no longer applies: {reason}", file=sys.stderr)
    return effective


SUBCOMMANDS: list[Callable[[Subparsers], None]] = [_add_cpus, _add_serve, _add_parity, _add_status, _add_rewrite,
                                                    _add_promote, _add_plan]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Move a Twisted service to asyncio, task by task.")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cutover`` command line and return its exit status."""
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


def _error(message: str) -> int:
    # Same shape and status as argparse's own usage errors.
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def _report(caught: list[warnings.WarningMessage]) -> None:
    for warning in caught:
        if issubclass(warning.category, CpuBudgetWarning):
            print(f"{PROG}: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)


if __name__ == "__main__":
    raise SystemExit(main())

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
import importlib
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeAlias

from .cpu import CpuBudgetError, CpuBudgetWarning, cpu_budget

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


#: Where ``cutover serve --only STACK`` finds each stack's entry point: an
#: ``async def serve(*, host, port)``. Import strings, not imports: bridge/
#: never depends on the services, and a team can point these at its own apps.
APPS = {"legacy": "legacy.service:serve", "modern": "modern.app:serve"}


def _add_serve(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run both stacks behind the front door (or one alone with --only)",
        description="Host the legacy and modern stacks in one process on one loop, routed by the plan.",
    )
    parser.add_argument("--plan", type=Path, default=Path("cutover.toml"), help="the cutover plan (default: cutover.toml)")
    parser.add_argument("--only", choices=sorted(APPS), help="run this stack alone, without the front door")
    parser.add_argument("--app", metavar="MODULE:ATTR", help="with --only: the stack's serve entry point")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000; 0 picks a free one)")
    parser.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    if args.only is None:
        from .cutover.host import HostSettings
        from .cutover.host import serve as serve_both
        from .cutover.plan import PlanError

        if not args.plan.is_file():
            return _error(f"no plan at {args.plan}: pass --plan FILE (the repository ships cutover.toml)")
        try:
            asyncio.run(serve_both(HostSettings(plan_path=args.plan, host=args.host, port=args.port)))
        except PlanError as exc:
            return _error(str(exc))
        return 0
    target = args.app or APPS[args.only]
    module_name, _, attr = target.partition(":")
    try:
        serve = getattr(importlib.import_module(module_name), attr or "serve")
    except (ImportError, AttributeError) as exc:
        return _error(f"cannot load {target!r}: {exc}")
    asyncio.run(serve(host=args.host, port=args.port))
    return 0


SUBCOMMANDS: list[Callable[[Subparsers], None]] = [_add_cpus, _add_serve]


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

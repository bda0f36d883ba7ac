"""The ``cutover`` console script.

Each subcommand is one ``_add_*`` function that registers its parser and one
``_run_*`` function that does the work and returns the exit status. To add a
subcommand, write both and list the ``_add_*`` function in ``SUBCOMMANDS``.

Results go to stdout and diagnostics to stderr, so ``--json`` output can be
piped straight into ``jq`` even when a cgroup file is malformed.
"""

from __future__ import annotations

import argparse
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


SUBCOMMANDS: list[Callable[[Subparsers], None]] = [_add_cpus]


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

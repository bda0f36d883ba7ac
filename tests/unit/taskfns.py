"""Functions cpu_bound tasks send to pool workers: they must live in an importable module."""

from __future__ import annotations

import os


def append_pid(path: str) -> None:
    """One line per run, naming the process that ran it."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()}\n")


def fail_with(message: str) -> None:
    raise LookupError(message)

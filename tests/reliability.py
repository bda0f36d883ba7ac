"""Reliability figures gathered while the hardening and fault tests run.

Tests call :func:`record` with what they tried and how much of it the system
survived; at the end of the session the rows are printed as one table and
written to ``var/reliability.json`` and ``var/reliability.md``, the table that
README.md quotes under "Reliability". A row records what a test observed, so
a test that fails still leaves its honest figures behind.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

REPORT_DIR = Path("var")
_lock = threading.Lock()
_rows: list[Row] = []


@dataclass(frozen=True)
class Row:
    area: str  # "hostile input", "faults", "load"
    check: str  # what was tried, in a few words
    tried: int  # inputs sent, faults injected, jobs submitted, samples taken
    survived: int  # rejected cleanly, recovered, completed exactly once, under the bound
    detail: str = ""  # the figure that matters most: peak memory, lag p99, status codes seen


def record(area: str, check: str, tried: int, survived: int, detail: str = "") -> None:
    """Add one row to the session's reliability table."""
    with _lock:
        _rows.append(Row(area, check, tried, survived, detail))


def rows() -> list[Row]:
    with _lock:
        return list(_rows)


def markdown(table: list[Row]) -> str:
    lines = ["| area | check | tried | survived | detail |", "| --- | --- | ---: | ---: | --- |"]
    lines += [f"| {r.area} | {r.check} | {r.tried} | {r.survived} | {r.detail} |" for r in table]
    return "\n".join(lines) + "\n"


def pytest_sessionfinish(session: pytest.Session) -> None:
    table = rows()
    if not table:
        return
    REPORT_DIR.mkdir(exist_ok=True)
    (REPORT_DIR / "reliability.json").write_text(json.dumps([asdict(r) for r in table], indent=2) + "\n")
    (REPORT_DIR / "reliability.md").write_text(markdown(table))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    table = rows()
    if table:
        terminalreporter.section("reliability")
        terminalreporter.write(markdown(table))

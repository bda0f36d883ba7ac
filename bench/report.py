"""Print a benchmark's table and save it as ``bench/results/<name>.json`` and ``.md``.

Every row is a flat dict; the columns are the union of the rows' keys, in
first-seen order. Floats are printed with a precision that suits their size.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def machine_info() -> dict[str, Any]:
    from bridge.cpu import cpu_budget

    budget = cpu_budget()
    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover - not on Linux
        load = None
    return {
        "cpu_budget": budget.cpus,
        "cpu_budget_reason": budget.reason,
        "os_cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "loadavg_at_end": load,
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        size = abs(value)
        if size == 0:
            return "0"
        if size >= 1000:
            return f"{value:,.0f}"
        if size >= 100:
            return f"{value:.1f}"
        if size >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    return str(value)


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def text_table(rows: Sequence[dict[str, Any]]) -> str:
    columns = _columns(rows)
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [all(_is_number(row.get(c)) or row.get(c) is None for row in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        out = []
        for i, v in enumerate(values):
            out.append(v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i]))
        return "  ".join(out).rstrip()

    header = line(columns)
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([header, rule, *(line(r) for r in cells)])


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    columns = _columns(rows)
    numeric = [all(_is_number(row.get(c)) or row.get(c) is None for row in rows) for c in columns]
    head = "| " + " | ".join(columns) + " |"
    align = "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"
    body = ["| " + " | ".join(_fmt(row.get(c)).replace("|", "\\|") for c in columns) + " |" for row in rows]
    return "\n".join([head, align, *body])


def report(name: str, rows: Sequence[dict[str, Any]], notes: Sequence[str] = (),
           raw: dict[str, Any] | None = None, title: str | None = None) -> None:
    """Print the table and notes, then write ``results/<name>.json`` and ``results/<name>.md``.

    ``raw`` holds anything worth keeping that is not in the table (per-repeat samples, settings).
    """
    info = machine_info()
    heading = title or name
    print(f"\n== {heading} ==")
    print(text_table(rows))
    for note in notes:
        print(f"  * {note}")
    sys.stdout.flush()

    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"name": name, "title": heading, "machine": info, "rows": list(rows),
               "notes": list(notes), "raw": raw or {}}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")

    md = [f"# {heading}", "", markdown_table(rows), ""]
    if notes:
        md += [f"* {note}" for note in notes] + [""]
    md.append(
        f"_Machine: CPU budget {info['cpu_budget']} ({info['cpu_budget_reason']}), "
        f"os.cpu_count {info['os_cpu_count']}, Python {info['python']}, {info['platform']}; "
        f"{info['timestamp']}._"
    )
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n", encoding="utf-8")

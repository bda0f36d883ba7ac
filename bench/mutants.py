"""The mutation check, in full: every mutant of tests/mutation/mutants.py against the parity suite and shadow.

``python -m bench mutants`` (part of ``make bench``). For each mutant, a tree
with a mutated copy of ``modern/`` runs the offline judge (the parity suite)
and the shadow judge (the mixed A/A traffic run over every route in shadow);
the unmutated tree must pass both first. Results are written after every
mutant, so a run cut short still leaves its figures, to
``bench/results/mutants.json`` and ``mutants.md``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from tests.mutation.mutants import JUDGES, MUTANTS, check

RESULTS = Path(__file__).resolve().parent / "results"


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in rows if r["name"] != "(unmutated)"]
    caught = {judge: sum(r[judge] != "pass" for r in done) for judge in JUDGES}
    either = sum(any(r[judge] != "pass" for judge in JUDGES) for r in done)
    n = len(done)
    return {"mutants": n, **{f"caught_{judge}": caught[judge] for judge in JUDGES}, "caught_either": either,
            **{f"share_{judge}": round(caught[judge] / n, 3) if n else 0.0 for judge in JUDGES},
            "share_either": round(either / n, 3) if n else 0.0}


def write(rows: list[dict[str, Any]], started: float, name: str = "mutants") -> None:
    RESULTS.mkdir(exist_ok=True)
    totals = summary(rows)
    (RESULTS / f"{name}.json").write_text(json.dumps(
        {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": round(time.time() - started),
         "summary": totals, "rows": rows}, indent=2) + "\n")
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["name"] != "(unmutated)":
            by_kind.setdefault(row["kind"], []).append(row)
    lines = ["# What parity catches: our mutation check", "",
             f"{totals['mutants']} mutants of modern/ (tests/mutation/mutants.py), each judged by the offline parity "
             "suite (`tests/parity`) and by shadow (the mixed A/A traffic run over every route in shadow).", "",
             "| kind | mutants | offline suite | shadow | either |", "| --- | ---: | ---: | ---: | ---: |"]
    for kind, group in by_kind.items():
        counts = [sum(r[j] != "pass" for r in group) for j in JUDGES]
        either = sum(any(r[j] != "pass" for j in JUDGES) for r in group)
        lines.append(f"| {kind} | {len(group)} | {counts[0]} | {counts[1]} | {either} |")
    lines.append(f"| **all** | {totals['mutants']} | {totals['caught_offline']} ({100 * totals['share_offline']:.0f}%) | "
                 f"{totals['caught_shadow']} ({100 * totals['share_shadow']:.0f}%) | "
                 f"{totals['caught_either']} ({100 * totals['share_either']:.0f}%) |")
    lines += ["", "| mutant | kind | offline | shadow | seconds (offline, shadow) |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['name']} | {row['kind']} | {row['offline']} | {row['shadow']} | "
                     f"{row['offline_s']:.0f}, {row['shadow_s']:.0f} |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


def merge(parts: list[str]) -> None:
    """Join the rows of runs split over several processes (``--part``) into one report."""
    rows: list[dict[str, Any]] = []
    seconds = 0
    for part in parts:
        data = json.loads((RESULTS / f"{part}.json").read_text())
        rows += [r for r in data["rows"] if r["name"] not in {x["name"] for x in rows}]
        seconds = max(seconds, data["seconds"])
    order = ["(unmutated)", *(m.name for m in MUTANTS)]
    rows.sort(key=lambda r: order.index(r["name"]))
    write(rows, time.time() - seconds)


def main(argv: list[str]) -> int:
    """``[--part N/K] [--merge PART ...] [MUTANT ...]``: a part runs every K-th mutant (the first part also
    the unmutated code) into ``mutants-part-N``; ``--merge`` joins the parts into ``mutants``."""
    if argv[:1] == ["--merge"]:
        merge(argv[1:])
        return 0
    out, part, count = "mutants", 1, 1
    if argv[:1] == ["--part"]:
        part, count = (int(x) for x in argv[1].split("/"))
        out, argv = f"mutants-part-{part}", argv[2:]
    started = time.time()
    chosen = [m for i, m in enumerate(MUTANTS) if (not argv or m.name in argv) and i % count == part - 1]
    rows: list[dict[str, Any]] = []
    for mutant in [None, *chosen] if part == 1 else chosen:
        verdicts = check(mutant)
        row = {"name": "(unmutated)" if mutant is None else mutant.name, "kind": "-" if mutant is None else mutant.kind,
               **{judge: verdict for judge, (verdict, _) in verdicts.items()},
               **{f"{judge}_s": round(seconds, 1) for judge, (_, seconds) in verdicts.items()}}
        if mutant is not None:
            row["edit"] = f"modern/{mutant.file}: {mutant.old!r} -> {mutant.new!r}"
        rows.append(row)
        print(f"{row['name']:26} offline {row['offline']:5} shadow {row['shadow']:5}", flush=True)
        if mutant is None and any(v != "pass" for v, _ in verdicts.values()):
            print("the unmutated code does not pass both judges: no figures", file=sys.stderr)
            return 1
        write(rows, started, out)
    print(json.dumps(summary(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""What the host must remember across restarts: the plan's run-time changes, their history, and the evidence.

Every move made at run time (a route's mode, a task's owner) is a row of
``plan_changes``: who (the admin token's label, or ``cutover`` for the host's
own moves), when, from, to, why, whether it was forced or automatic, and the
evidence and gate figures at the time. The latest change of each route or
task is also an override in ``plan_overrides``, with the value the file had
then (``base``). On start-up and on reload the file is read first and the
overrides are applied on top (:func:`apply_overrides`); an override whose
file value has since been edited is dropped, so an edit to the file still
wins, and the drop is itself a change in the history.

All of it sits behind :class:`PlanStore`, whose methods are async and speak
plain dicts, so another backend (PostgreSQL) can stand in for SQLite.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from ..errors import PlanError
from ..schema import Step, open_sqlite
from ..sqlitewriter import SqliteWriter
from .plan import Plan

__all__ = ["Change", "PlanStore", "apply_overrides", "file_value"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS plan_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    who TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    from_value TEXT NOT NULL,
    to_value TEXT NOT NULL,
    why TEXT NOT NULL,
    forced INTEGER NOT NULL,
    automatic INTEGER NOT NULL,
    action TEXT NOT NULL,
    evidence TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS plan_changes_by_key ON plan_changes (key, id);
CREATE TABLE IF NOT EXISTS plan_overrides (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    base TEXT NOT NULL,
    change_id INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS route_evidence (
    route TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence_samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    route TEXT NOT NULL,
    at REAL NOT NULL,
    figures TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS evidence_samples_by_route ON evidence_samples (route, id);
"""
#: The SQLite plan schema's steps (:mod:`bridge.schema`): append, never edit.
STEPS: tuple[Step, ...] = (SCHEMA,)
KEEP_SAMPLES = 2000  # samples kept per route (at a 30 s interval, about 16 hours)


@dataclass
class Change:
    """One run-time move. ``kind`` is "route" (value: {mode, percent}) or "task" (value: the owner).

    ``action``: "promote" (towards modern), "rollback" (towards legacy), "owner" (a task moved),
    "dropped" (an override the edited file replaced).
    """

    kind: str
    key: str
    from_value: Any
    to_value: Any
    who: str
    why: str = ""
    forced: bool = False
    automatic: bool = False
    action: str = "promote"
    evidence: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)
    id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "who": self.who, "kind": self.kind, "key": self.key,
                "from": self.from_value, "to": self.to_value, "why": self.why, "forced": self.forced,
                "automatic": self.automatic, "action": self.action, "evidence": self.evidence}


def file_value(plan: Plan, kind: str, key: str) -> Any:
    """What the plan says of a route ({mode, percent}, or None when it does not name it) or a task (its owner)."""
    if kind == "task":
        return plan.tasks.get(key)
    method, _, template = key.partition(" ")
    route = plan.find(method, template)
    return None if route is None else {"mode": route.mode, "percent": route.percent}


def apply_overrides(base: Plan, overrides: list[dict[str, Any]]) -> tuple[Plan, list[tuple[dict[str, Any], str]]]:
    """The effective plan: ``base`` (the file) with each override that still applies; and those that do not, with why."""
    plan, dropped = base, []
    for override in overrides:
        kind, key = override["kind"], override["key"]
        if file_value(base, kind, key) != override["base"]:
            dropped.append((override, "the plan file changed it since"))
            continue
        try:
            if kind == "task":
                plan = plan.with_owner(key, override["value"])
            else:
                method, _, template = key.partition(" ")
                value = override["value"]
                plan = plan.with_mode(method, template, value["mode"], value["percent"])
        except PlanError as exc:
            dropped.append((override, exc.reason))
    return plan, dropped


class PlanStore:
    """The history, the overrides and the evidence, in SQLite (``open()`` before use, ``close()`` after)."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._writer: SqliteWriter | None = None

    async def open(self) -> None:
        self._writer = SqliteWriter(await open_sqlite(self.db_path, "plan", STEPS), where=str(self.db_path))

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()

    @property
    def writer(self) -> SqliteWriter:
        if self._writer is None:
            raise RuntimeError("the plan store is not open")
        return self._writer

    @property
    def db(self) -> aiosqlite.Connection:
        return self.writer.db

    async def record(self, change: Change, *, base: Any = None, override: bool = True) -> Change:
        """Store a change (and, with ``override``, make it the key's override); returns it with its id."""
        async def record(db: aiosqlite.Connection) -> None:
            cursor = await db.execute(
                "INSERT INTO plan_changes (at, who, kind, key, from_value, to_value, why, forced, automatic, action,"
                " evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (change.at, change.who, change.kind, change.key, json.dumps(change.from_value),
                 json.dumps(change.to_value), change.why, int(change.forced), int(change.automatic), change.action,
                 json.dumps(change.evidence, default=str)),
            )
            change.id = cursor.lastrowid
            if override:
                await db.execute(
                    "INSERT INTO plan_overrides (kind, key, value, base, change_id) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, base = excluded.base,"
                    " change_id = excluded.change_id",
                    (change.kind, change.key, json.dumps(change.to_value), json.dumps(base), change.id),
                )

        await self.writer.transact(record)
        return change

    async def drop_override(self, kind: str, key: str) -> None:
        async def drop(db: aiosqlite.Connection) -> None:
            await db.execute("DELETE FROM plan_overrides WHERE kind = ? AND key = ?", (kind, key))

        await self.writer.transact(drop)

    async def overrides(self) -> list[dict[str, Any]]:
        """The overrides, oldest change first (the order they were made in)."""
        rows = await self.db.execute_fetchall("SELECT kind, key, value, base, change_id FROM plan_overrides ORDER BY change_id")
        return [{"kind": r["kind"], "key": r["key"], "value": json.loads(r["value"]), "base": json.loads(r["base"]),
                 "change_id": r["change_id"]} for r in rows]

    async def changes(self, key: str | None = None, limit: int = 50, before: int | None = None) -> list[dict[str, Any]]:
        """Changes, newest first; ``before`` pages on (ids below it)."""
        where, args = [], []
        if key is not None:
            where.append("key = ?")
            args.append(key)
        if before is not None:
            where.append("id < ?")
            args.append(before)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self.db.execute_fetchall(f"SELECT * FROM plan_changes {clause} ORDER BY id DESC LIMIT ?", (*args, limit))
        return [Change(r["kind"], r["key"], json.loads(r["from_value"]), json.loads(r["to_value"]), r["who"], r["why"],
                       bool(r["forced"]), bool(r["automatic"]), r["action"], json.loads(r["evidence"]), r["at"],
                       r["id"]).as_dict()
                for r in rows]

    async def save_evidence(self, states: dict[str, dict[str, Any]]) -> None:
        now = time.time()

        async def save(db: aiosqlite.Connection) -> None:
            await db.executemany(
                "INSERT INTO route_evidence (route, state, at) VALUES (?, ?, ?)"
                " ON CONFLICT (route) DO UPDATE SET state = excluded.state, at = excluded.at",
                [(route, json.dumps(state), now) for route, state in states.items()],
            )

        await self.writer.transact(save)

    async def load_evidence(self) -> dict[str, dict[str, Any]]:
        rows = await self.db.execute_fetchall("SELECT route, state FROM route_evidence")
        return {r["route"]: json.loads(r["state"]) for r in rows}

    async def add_samples(self, samples: dict[str, dict[str, Any]]) -> None:
        """One point of each route's time series (the dashboard's plots)."""
        now = time.time()

        async def add(db: aiosqlite.Connection) -> None:
            await db.executemany("INSERT INTO evidence_samples (route, at, figures) VALUES (?, ?, ?)",
                                 [(route, now, json.dumps(figures)) for route, figures in samples.items()])
            for route in samples:
                await db.execute(
                    "DELETE FROM evidence_samples WHERE route = ? AND id <= (SELECT id FROM evidence_samples"
                    " WHERE route = ? ORDER BY id DESC LIMIT 1 OFFSET ?)", (route, route, KEEP_SAMPLES))

        await self.writer.transact(add)

    async def samples(self, route: str, limit: int = 500) -> list[dict[str, Any]]:
        """The newest ``limit`` points of a route's series, oldest first."""
        rows = await self.db.execute_fetchall(
            "SELECT at, figures FROM evidence_samples WHERE route = ? ORDER BY id DESC LIMIT ?", (route, limit))
        return [{"at": r["at"], **json.loads(r["figures"])} for r in reversed(rows)]

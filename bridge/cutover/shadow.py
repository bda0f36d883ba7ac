"""Shadow traffic: compare modern's answer with legacy's without the client ever waiting for it.

The front door hands each mirrored exchange to :class:`ShadowRecorder`, which
diffs the two responses (``bridge.parity.diff``, the same engine the parity
tests use), counts the outcome per route, and stores mismatches in SQLite with
the request, both responses (truncated) and the readable diff. Work is
bounded: at most ``max_inflight`` modern calls run at once, and a request
arriving past that is skipped and counted, never queued.

The noise floor: on a sample of requests legacy answers twice
(:mod:`bridge.cutover.mirror`), and :meth:`ShadowRecorder.learn_noise` keeps,
per route, how many such A/A pairs there were, how many differed, and which
fields did (list indexes generalised: ``body.lines[].score``). Those fields
are left out of the route's legacy-vs-modern diffs, as Diffy does with its
secondary: what differs between two answers of legacy itself says nothing
about modern. :meth:`ShadowRecorder.noise_floor` gives it for one route; the
per-route counts and noise are saved in the store (``shadow_routes``) for
``cutover status``.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from ..parity.diff import Diff, DiffRules, Exchange, diff, generalise

log = logging.getLogger("cutover.shadow")
TRUNCATE = 4096

SCHEMA = """
CREATE TABLE IF NOT EXISTS shadow_mismatches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    route TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    request TEXT NOT NULL,
    legacy TEXT NOT NULL,
    modern TEXT NOT NULL,
    diff TEXT NOT NULL,
    diff_text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS shadow_by_route ON shadow_mismatches (route, id);
CREATE TABLE IF NOT EXISTS shadow_routes (
    route TEXT PRIMARY KEY,
    compared INTEGER NOT NULL,
    different INTEGER NOT NULL,
    aa_samples INTEGER NOT NULL,
    aa_differing INTEGER NOT NULL,
    noise_fields TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS route_inventory (
    route TEXT PRIMARY KEY,
    in_plan INTEGER NOT NULL,
    mode TEXT NOT NULL,
    in_legacy INTEGER,
    in_modern INTEGER,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS unrouted_requests (
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    requests INTEGER NOT NULL,
    last_status INTEGER NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (method, path)
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _body_text(body: bytes) -> dict[str, Any]:
    """A body for storage: text when it is UTF-8, else base64; cut at TRUNCATE bytes either way."""
    cut = body[:TRUNCATE]
    try:
        return {"text": cut.decode("utf-8"), "bytes": len(body), "truncated": len(body) > TRUNCATE}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(cut).decode(), "bytes": len(body), "truncated": len(body) > TRUNCATE}


def _exchange_json(exchange: Exchange) -> str:
    return json.dumps({"status": exchange.status, "headers": dict(exchange.headers), "body": _body_text(exchange.body)})


@dataclass
class RouteCounts:
    compared: int = 0
    equal: int = 0
    different: int = 0
    skipped: int = 0
    not_mirrored: int = 0
    errors: int = 0
    unmapped: int = 0  # a follower naming a resource modern has no twin of
    suppressed: int = 0  # comparisons equal once the route's noise fields were left out

    @property
    def mismatch_rate(self) -> float:
        return self.different / self.compared if self.compared else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "mismatch_rate": round(self.mismatch_rate, 4)}


@dataclass
class Noise:
    """What the A/A pairs of one route said: how many, how many differed, and where."""

    samples: int = 0
    differing: int = 0
    fields: set[str] = field(default_factory=set)

    def covers(self, path: str) -> bool:
        """Whether a difference at ``path`` is noise: a noisy field, or inside one."""
        general = generalise(path)
        return any(general == f or general.startswith(f + ".") or general.startswith(f + "[") for f in self.fields)

    def as_dict(self) -> dict[str, Any]:
        rate = self.differing / self.samples if self.samples else 0.0
        return {"samples": self.samples, "differing": self.differing, "rate": round(rate, 4),
                "fields": sorted(self.fields)}

SUMMARY_EVERY = 1.0  # seconds between writes of the per-route summary to the store


@dataclass
class ShadowRecorder:
    """Diffs, counts and stores shadowed exchanges; ``open()`` before use, ``close()`` after."""

    db_path: Path
    max_inflight: int = 8
    #: The diff rules of a route label (the host reads them from the plan, which can change at run time).
    rules: Callable[[str], DiffRules] = field(default=lambda route: DiffRules())
    counts: dict[str, RouteCounts] = field(default_factory=lambda: defaultdict(RouteCounts))
    noise: dict[str, Noise] = field(default_factory=lambda: defaultdict(Noise))
    inflight: int = 0
    #: Called with (route, equal, legacy status, modern status, (legacy s, modern s) or None) for each comparison.
    listeners: list[Callable[[str, bool, int, int, tuple[float, float] | None], None]] = field(default_factory=list)
    _db: aiosqlite.Connection | None = None
    _saved_at: float = 0.0

    async def open(self) -> None:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.db_path)
        self._db.row_factory = aiosqlite.Row
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.executescript(SCHEMA)
        await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            try:
                await self.save_summary()
            except Exception:
                log.exception("could not save the shadow summary")
            await self._db.close()
            self._db = None

    def admit(self, route: str) -> bool:
        """Take a shadow slot, or count the request as skipped when all are busy."""
        counts = self.counts[route]  # the route shows in stats() from its first copy on, before any comparison
        if self.inflight >= self.max_inflight:
            counts.skipped += 1
            return False
        self.inflight += 1
        return True

    def release(self) -> None:
        self.inflight -= 1

    def not_mirrored(self, route: str) -> None:
        self.counts[route].not_mirrored += 1

    def unmapped(self, route: str) -> None:
        """A follower named a resource modern has no twin of (made before shadowing, or only validated)."""
        self.counts[route].unmapped += 1

    def learn_noise(self, route: str, aa: Diff) -> None:
        """One A/A pair of ``route`` (legacy against legacy): what differed is noise from now on."""
        noise = self.noise[route]
        noise.samples += 1
        if not aa.equal:
            noise.differing += 1
            noise.fields.update(generalise(d.path) for d in aa.differences)

    def noise_floor(self, route: str) -> dict[str, Any]:
        """``{samples, differing, rate, fields}``: the A/A pairs of ``route``, how many differed, the noisy paths."""
        return self.noise[route].as_dict() if route in self.noise else Noise().as_dict()

    async def record(
        self, route: str, method: str, path: str, request: dict[str, Any], legacy: Exchange, modern: Exchange | BaseException,
        latencies: tuple[float, float] | None = None,
        *, rules: DiffRules | None = None, aliases: dict[str, str] | None = None,
    ) -> bool:
        """Compare one exchange, leaving the route's noise out; store it if different. Returns whether they were equal.

        ``latencies``: seconds legacy and modern took on this request, for the listeners (paired evidence).
        ``rules`` default to the recorder's rules for the route; ``aliases`` (``{modern: legacy}``) are the ids
        each side gave one resource."""
        counts = self.counts[route]
        counts.compared += 1
        if isinstance(modern, BaseException):
            counts.errors += 1
            body = json.dumps({"error": {"code": "shadow_exception", "message": f"{type(modern).__name__}: {modern}"}})
            modern = Exchange(status=599, headers={"content-type": "application/json"}, body=body.encode())
        result = diff(legacy, modern, rules if rules is not None else self.rules(route), aliases)
        noise = self.noise.get(route)
        if not result.equal and noise is not None and noise.fields:
            kept = [d for d in result.differences if not noise.covers(d.path)]
            if not kept:
                counts.suppressed += 1
            result = Diff(kept, result.truncated and bool(kept))
        for listener in self.listeners:
            listener(route, result.equal, legacy.status, modern.status, latencies)
        if result.equal:
            counts.equal += 1
            await self._maybe_save_summary()
            return True
        counts.different += 1
        if self._db is not None:
            try:
                await self._db.execute(
                    "INSERT INTO shadow_mismatches (at, route, method, path, request, legacy, modern, diff, diff_text)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (_now(), route, method, path, json.dumps(request), _exchange_json(legacy), _exchange_json(modern),
                     json.dumps(result.to_dict()), result.to_text()),
                )
                await self._db.commit()
            except Exception:  # storage trouble must never reach a client
                log.exception("could not store a shadow mismatch for %s", route)
        await self._maybe_save_summary()
        return False

    async def _maybe_save_summary(self) -> None:
        if self._db is None or time.monotonic() - self._saved_at < SUMMARY_EVERY:
            return
        try:
            await self.save_summary()
        except Exception:  # storage trouble must never reach a client
            log.exception("could not save the shadow summary")

    async def save_summary(self) -> None:
        """Write each route's counts and noise floor where ``cutover status`` reads them."""
        if self._db is None:
            return
        self._saved_at = time.monotonic()
        at = _now()
        rows = []
        for route in sorted(set(self.counts) | set(self.noise)):
            counts, noise = self.counts.get(route, RouteCounts()), self.noise.get(route, Noise())
            rows.append((route, counts.compared, counts.different, noise.samples, noise.differing,
                         json.dumps(sorted(noise.fields)), at))
        await self._db.executemany(
            "INSERT INTO shadow_routes (route, compared, different, aa_samples, aa_differing, noise_fields, at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (route) DO UPDATE SET compared = excluded.compared,"
            " different = excluded.different, aa_samples = excluded.aa_samples, aa_differing = excluded.aa_differing,"
            " noise_fields = excluded.noise_fields, at = excluded.at",
            rows,
        )
        await self._db.commit()

    async def save_inventory(self, rows: list[dict[str, Any]]) -> None:
        """Keep the host's route inventory where ``cutover status`` can read it without a running host."""
        if self._db is None:
            return
        at = _now()
        await self._db.execute("DELETE FROM route_inventory")
        await self._db.executemany(
            "INSERT INTO route_inventory (route, in_plan, mode, in_legacy, in_modern, at) VALUES (?, ?, ?, ?, ?, ?)",
            [(r["route"], r["in_plan"], r["mode"], r["in_legacy"], r["in_modern"], at) for r in rows],
        )
        await self._db.commit()

    async def save_unrouted(self, rows: list[dict[str, Any]]) -> None:
        """Store this run's unrouted request counts (they replace what the same paths had)."""
        if self._db is None or not rows:
            return
        at = _now()
        await self._db.executemany(
            "INSERT INTO unrouted_requests (method, path, requests, last_status, at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (method, path) DO UPDATE SET requests = excluded.requests,"
            " last_status = excluded.last_status, at = excluded.at",
            [(r["method"], r["path"], r["requests"], r["last_status"], at) for r in rows],
        )
        await self._db.commit()

    async def mismatches(self, route: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        assert self._db is not None
        where, args = ("WHERE route = ?", [route]) if route else ("", [])
        rows = await self._db.execute_fetchall(
            f"SELECT id, at, route, method, path, diff_text FROM shadow_mismatches {where} ORDER BY id DESC LIMIT ?",
            (*args, limit),
        )
        return [dict(r) for r in rows]

    async def mismatch(self, mismatch_id: int) -> dict[str, Any] | None:
        assert self._db is not None
        rows = await self._db.execute_fetchall("SELECT * FROM shadow_mismatches WHERE id = ?", (mismatch_id,))
        if not rows:
            return None
        row = dict(rows[0])
        for key in ("request", "legacy", "modern", "diff"):
            row[key] = json.loads(row[key])
        return row

    def stats(self) -> dict[str, Any]:
        """Per route: the outcome counts (numbers only: the metrics read every key) and the mismatch rate."""
        return {route: counts.as_dict() for route, counts in sorted(self.counts.items())}



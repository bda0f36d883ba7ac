"""The plan's run-time changes, history and evidence on PostgreSQL, shared by every replica.

The same methods as :class:`~bridge.host.history.PlanStore` (SQLite), plus
what a fleet needs:

* **Changes reach every replica.** Each recorded change sends ``NOTIFY
  cutover_plan`` in its transaction; every replica's host listens, and also
  polls :meth:`latest_change` every ``poll_interval`` seconds in case a
  notification was lost with a connection. Either way it lays the stored
  overrides over its file again (:meth:`Host.refresh <bridge.host.runtime.Host.refresh>`).
* **Evidence is gathered per replica and judged per fleet.** Each host
  checkpoints and restores its own figures (``replica`` column);
  :meth:`fleet_evidence` gives them all and :meth:`route_steps` when each
  route's step began, so a host sums its peers' figures of the same step
  (:func:`bridge.host.evidence.combine`) before a gate judges them.
* **Replicas are seen.** Each host beats its row in ``cutover_replicas``;
  :meth:`replicas` lists who beat within ``alive_after`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..database import parse_database_url
from ..errors import StoreUnavailable
from ..pgschema import fetch_rows, open_migrated, transact
from .history import KEEP_SAMPLES, Change

__all__ = ["PostgresPlanStore"]

log = logging.getLogger(__name__)
CHANNEL = "cutover_plan"
_STEPS = (
    """
    CREATE TABLE plan_changes (
        id BIGSERIAL PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        who TEXT NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        from_value TEXT NOT NULL,
        to_value TEXT NOT NULL,
        why TEXT NOT NULL,
        forced BOOLEAN NOT NULL,
        automatic BOOLEAN NOT NULL,
        action TEXT NOT NULL,
        evidence TEXT NOT NULL,
        replica TEXT NOT NULL
    );
    CREATE INDEX plan_changes_by_key ON plan_changes (key, id);
    CREATE TABLE plan_overrides (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        base TEXT NOT NULL,
        change_id BIGINT NOT NULL,
        PRIMARY KEY (kind, key)
    );
    CREATE TABLE route_evidence (
        replica TEXT NOT NULL,
        route TEXT NOT NULL,
        state TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (replica, route)
    );
    CREATE TABLE evidence_samples (
        id BIGSERIAL PRIMARY KEY,
        replica TEXT NOT NULL,
        route TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        figures TEXT NOT NULL
    );
    CREATE INDEX evidence_samples_by_route ON evidence_samples (replica, route, id);
    CREATE TABLE cutover_replicas (
        replica TEXT PRIMARY KEY,
        started_at DOUBLE PRECISION NOT NULL,
        beat_at DOUBLE PRECISION NOT NULL,
        info TEXT NOT NULL
    );
    """,
)
_DB_NOW = "extract(epoch from clock_timestamp())"


class PostgresPlanStore:
    """Plan changes shared by a fleet; ``replica`` names this host among them."""

    def __init__(self, dsn: str, *, replica: str, info: dict[str, Any] | None = None,
                 connect_timeout: float = 5.0) -> None:
        self.dsn, self.replica, self.info = dsn, replica, info or {}
        self.connect_timeout = connect_timeout
        self._pool: Any = None
        self._where = str(parse_database_url(dsn))

    async def open(self) -> None:
        pool = await open_migrated(self.dsn, "plan", _STEPS, where=self._where, max_size=4,
                                   timeout=self.connect_timeout)
        self._pool = pool
        try:
            await self.beat()
        except BaseException:
            self._pool = None
            await pool.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # ------------------------------------------------------------------ PlanStore's methods

    async def record(self, change: Change, *, base: Any = None, override: bool = True) -> Change:
        async def record(conn: Any) -> int:
            row = await (await conn.execute(
                "INSERT INTO plan_changes (at, who, kind, key, from_value, to_value, why, forced, automatic, action,"
                " evidence, replica) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (change.at, change.who, change.kind, change.key, json.dumps(change.from_value),
                 json.dumps(change.to_value), change.why, change.forced, change.automatic, change.action,
                 json.dumps(change.evidence, default=str), self.replica))).fetchone()
            if override:
                await conn.execute(
                    "INSERT INTO plan_overrides (kind, key, value, base, change_id) VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT (kind, key) DO UPDATE SET value = EXCLUDED.value, base = EXCLUDED.base,"
                    " change_id = EXCLUDED.change_id",
                    (change.kind, change.key, json.dumps(change.to_value), json.dumps(base), row["id"]))
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{self.replica} {row['id']}"))
            return int(row["id"])

        change.id = await self._run(record)
        return change

    async def drop_override(self, kind: str, key: str) -> None:
        await self._run(lambda conn: conn.execute("DELETE FROM plan_overrides WHERE kind = %s AND key = %s", (kind, key)))

    async def overrides(self) -> list[dict[str, Any]]:
        rows = await self._fetch("SELECT kind, key, value, base, change_id FROM plan_overrides ORDER BY change_id", ())
        return [{"kind": r["kind"], "key": r["key"], "value": json.loads(r["value"]), "base": json.loads(r["base"]),
                 "change_id": r["change_id"]} for r in rows]

    async def changes(self, key: str | None = None, limit: int = 50, before: int | None = None) -> list[dict[str, Any]]:
        where, args = [], []
        if key is not None:
            where.append("key = %s")
            args.append(key)
        if before is not None:
            where.append("id < %s")
            args.append(before)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._fetch(f"SELECT * FROM plan_changes {clause} ORDER BY id DESC LIMIT %s", (*args, limit))
        return [{**Change(r["kind"], r["key"], json.loads(r["from_value"]), json.loads(r["to_value"]), r["who"],
                          r["why"], r["forced"], r["automatic"], r["action"], json.loads(r["evidence"]), r["at"],
                          r["id"]).as_dict(), "replica": r["replica"]}
                for r in rows]

    async def save_evidence(self, states: dict[str, dict[str, Any]]) -> None:
        now = time.time()

        async def save(conn: Any) -> None:
            for route, state in states.items():
                await conn.execute(
                    "INSERT INTO route_evidence (replica, route, state, at) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (replica, route) DO UPDATE SET state = EXCLUDED.state, at = EXCLUDED.at",
                    (self.replica, route, json.dumps(state), now))

        await self._run(save)

    async def load_evidence(self) -> dict[str, dict[str, Any]]:
        rows = await self._fetch("SELECT route, state FROM route_evidence WHERE replica = %s", (self.replica,))
        return {r["route"]: json.loads(r["state"]) for r in rows}

    async def add_samples(self, samples: dict[str, dict[str, Any]]) -> None:
        now = time.time()

        async def add(conn: Any) -> None:
            for route, figures in samples.items():
                await conn.execute("INSERT INTO evidence_samples (replica, route, at, figures) VALUES (%s, %s, %s, %s)",
                                   (self.replica, route, now, json.dumps(figures)))
                await conn.execute(
                    "DELETE FROM evidence_samples WHERE replica = %s AND route = %s AND id <= (SELECT id FROM"
                    " evidence_samples WHERE replica = %s AND route = %s ORDER BY id DESC LIMIT 1 OFFSET %s)",
                    (self.replica, route, self.replica, route, KEEP_SAMPLES))

        await self._run(add)

    async def samples(self, route: str, limit: int = 500) -> list[dict[str, Any]]:
        rows = await self._fetch("SELECT at, figures FROM evidence_samples WHERE replica = %s AND route = %s"
                                 " ORDER BY id DESC LIMIT %s", (self.replica, route, limit))
        return [{"at": r["at"], **json.loads(r["figures"])} for r in reversed(rows)]

    # ------------------------------------------------------------------ the fleet

    async def latest_change(self) -> int:
        """The id of the newest change (0 for none): a replica that has seen it is up to date."""
        rows = await self._fetch("SELECT COALESCE(MAX(id), 0) AS id FROM plan_changes", ())
        return int(rows[0]["id"])

    async def beat(self) -> None:
        """This replica is alive (the database's clock)."""
        await self._run(lambda conn: conn.execute(
            f"INSERT INTO cutover_replicas (replica, started_at, beat_at, info) VALUES (%s, {_DB_NOW}, {_DB_NOW}, %s)"
            f" ON CONFLICT (replica) DO UPDATE SET beat_at = EXCLUDED.beat_at, info = EXCLUDED.info",
            (self.replica, json.dumps(self.info))))

    async def replicas(self, alive_after: float) -> list[dict[str, Any]]:
        """Every replica seen, newest beat first, each with ``alive`` (beat within ``alive_after`` s)."""
        rows = await self._fetch(
            f"SELECT replica, started_at, beat_at, info, beat_at >= {_DB_NOW} - %s AS alive,"
            f" {_DB_NOW} - beat_at AS silent_s FROM cutover_replicas ORDER BY beat_at DESC", (alive_after,))
        return [{"replica": r["replica"], "alive": r["alive"], "silent_s": round(float(r["silent_s"]), 3),
                 "this": r["replica"] == self.replica, **json.loads(r["info"])} for r in rows]

    async def fleet_evidence(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{route: {replica: state}}``: every replica's last checkpoint."""
        found: dict[str, dict[str, dict[str, Any]]] = {}
        for r in await self._fetch("SELECT replica, route, state FROM route_evidence", ()):
            found.setdefault(r["route"], {})[r["replica"]] = json.loads(r["state"])
        return found

    async def route_steps(self) -> dict[str, tuple[float | None, float | None]]:
        """``{route: (latest move, latest move into shadow)}`` as unix times: where each step began, fleet-wide."""
        rows = await self._fetch(
            "SELECT key, MAX(at) AS moved_at, MAX(at) FILTER (WHERE to_value::jsonb ->> 'mode' = 'shadow') AS shadow_at"
            " FROM plan_changes WHERE kind = 'route' GROUP BY key", ())
        return {r["key"]: (r["moved_at"], r["shadow_at"]) for r in rows}

    async def watch(self, on_change: Callable[[], Awaitable[None]], *, poll_interval: float = 1.0) -> None:
        """Call ``on_change()`` whenever another replica records a change; runs until cancelled.

        ``LISTEN`` wakes it at once; a poll of :meth:`latest_change` every
        ``poll_interval`` seconds catches what a lost connection missed.
        """
        import psycopg

        seen = await self.latest_change()
        woken = asyncio.Event()

        async def listen() -> None:
            delay = 0.5
            while True:
                try:
                    conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=5)
                    async with conn:
                        await conn.execute(f"LISTEN {CHANNEL}")
                        delay = 0.5
                        async for note in conn.notifies():
                            if not note.payload.startswith(f"{self.replica} "):
                                woken.set()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001  (the poll covers the gap)
                    log.debug("plan store: LISTEN lost (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 5.0)

        listener = asyncio.ensure_future(listen())
        try:
            while True:
                try:
                    await asyncio.wait_for(woken.wait(), poll_interval)
                except TimeoutError:
                    pass
                woken.clear()
                try:
                    latest = await self.latest_change()
                    if latest != seen:
                        seen = latest
                        await on_change()
                    await self.beat()
                except StoreUnavailable as exc:
                    log.warning("plan store: %s", exc)
                except Exception:
                    log.exception("plan store: applying the fleet's plan changes failed")
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    # ------------------------------------------------------------------ plumbing

    async def _fetch(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        return await self._run(lambda conn: fetch_rows(conn, sql, args))

    async def _run(self, body: Callable[[Any], Awaitable[Any]]) -> Any:
        if self._pool is None:
            raise RuntimeError("the plan store is not open")
        return await transact(self._pool, body, where=self._where)

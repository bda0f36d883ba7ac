"""Shadow traffic: compare modern's answer with legacy's without the client ever waiting for it.

The front door hands each mirrored exchange to :class:`ShadowRecorder`, which
diffs the two responses (``bridge.parity.diff``, the same engine the parity
tests use), counts the outcome per route, and stores mismatches with the
request, both responses (truncated) and the readable diff, in its
:mod:`store <bridge.host.shadowstore>`: the host's SQLite file, or the
fleet's PostgreSQL. Work is bounded: at most ``max_inflight`` modern calls run
at once, and a request arriving past that is skipped and counted, never
queued. A store that is away costs nothing but the record: the comparison
still counts, and the write it could not make is counted as ``unrecorded``.

The noise floor: on a sample of requests legacy answers twice
(:mod:`bridge.host.mirror`), and :meth:`ShadowRecorder.learn_noise` keeps,
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
from pathlib import Path
from typing import Any

from ..errors import StoreUnavailable
from ..parity.diff import Diff, DiffRules, Exchange, diff, generalise
from .shadowstore import SQLITE_SCHEMA as SCHEMA  # noqa: F401  (the tables, for tools reading the file)
from .shadowstore import ShadowStore, SqliteShadowStore

log = logging.getLogger(__name__)
TRUNCATE = 4096

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
    unrecorded: int = 0  # mismatches the store was away for: compared and counted, not kept
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

    #: Where findings are kept: a store, or the path of the host's SQLite file.
    store: ShadowStore | Path
    max_inflight: int = 8
    #: The diff rules of a route label (the host reads them from the plan, which can change at run time).
    rules: Callable[[str], DiffRules] = field(default=lambda route: DiffRules())
    counts: dict[str, RouteCounts] = field(default_factory=lambda: defaultdict(RouteCounts))
    noise: dict[str, Noise] = field(default_factory=lambda: defaultdict(Noise))
    inflight: int = 0
    #: Called with (route, equal, legacy status, modern status, (legacy s, modern s) or None) for each comparison.
    listeners: list[Callable[[str, bool, int, int, tuple[float, float] | None], None]] = field(default_factory=list)
    _open: bool = False
    _saved_at: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.store, Path):
            self.store = SqliteShadowStore(self.store)

    @property
    def backend(self) -> ShadowStore:
        assert not isinstance(self.store, Path)
        return self.store

    async def open(self) -> None:
        await self.backend.open()
        self._open = True

    async def close(self) -> None:
        if self._open:
            try:
                await self.save_summary()
            except Exception as exc:
                log.warning("could not save the shadow summary: %s", exc)
            self._open = False
            await self.backend.close()

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
        errored = isinstance(modern, BaseException)
        if isinstance(modern, BaseException):
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
            counts.compared += 1
            counts.errors += errored
            counts.equal += 1
            await self._maybe_save_summary()
            return True
        try:
            if self._open:
                try:
                    await self.backend.add_mismatch((
                        route, method, path, json.dumps(request), _exchange_json(legacy), _exchange_json(modern),
                        json.dumps(result.to_dict()), result.to_text()))
                except StoreUnavailable as exc:  # counted: /status and the metrics say how many were not kept
                    counts.unrecorded += 1
                    log.debug("shadow mismatch for %s not stored: %s", route, exc)
                except Exception:  # storage trouble must never reach a client
                    counts.unrecorded += 1
                    log.exception("could not store a shadow mismatch for %s", route)
        finally:
            # Counted once stored: whoever sees a mismatch in the counts finds it in the store too.
            counts.compared += 1
            counts.errors += errored
            counts.different += 1
        await self._maybe_save_summary()
        return False

    async def _maybe_save_summary(self) -> None:
        if not self._open or time.monotonic() - self._saved_at < SUMMARY_EVERY:
            return
        try:
            await self.save_summary()
        except StoreUnavailable as exc:
            log.debug("shadow summary not saved: %s", exc)
        except Exception:  # storage trouble must never reach a client
            log.exception("could not save the shadow summary")

    async def save_summary(self) -> None:
        """Write each route's counts and noise floor where ``cutover status`` reads them."""
        if not self._open:
            return
        self._saved_at = time.monotonic()
        rows = []
        for route in sorted(set(self.counts) | set(self.noise)):
            counts, noise = self.counts.get(route, RouteCounts()), self.noise.get(route, Noise())
            rows.append((route, counts.compared, counts.different, noise.samples, noise.differing,
                         json.dumps(sorted(noise.fields))))
        await self.backend.save_summary(rows)

    async def save_inventory(self, rows: list[dict[str, Any]]) -> None:
        """Keep the host's route inventory where ``cutover status`` can read it without a running host."""
        if self._open:
            await self.backend.save_inventory(rows)

    async def save_unrouted(self, rows: list[dict[str, Any]]) -> None:
        """Store this run's unrouted request counts (they replace what the same paths had)."""
        if self._open and rows:
            await self.backend.save_unrouted(rows)

    async def mismatches(self, route: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The newest stored mismatches (of the whole fleet, on PostgreSQL), without their bodies."""
        return await self.backend.mismatches(route, limit)

    async def mismatch(self, mismatch_id: int) -> dict[str, Any] | None:
        """One stored mismatch in full: the request, both answers, the diff."""
        return await self.backend.mismatch(mismatch_id)

    def stats(self) -> dict[str, Any]:
        """Per route: the outcome counts (numbers only: the metrics read every key) and the mismatch rate."""
        return {route: counts.as_dict() for route, counts in sorted(self.counts.items())}



"""Running durable jobs: one :class:`JobRunner` per database, on the shared pool.

The jobs themselves, their states and their audit trail live in
:mod:`bridge.jobstore` (an embedded SQLite file through aiosqlite, which runs
each connection in a thread of its own, so no database call blocks the loop);
everything is re-exported here.

One runner per database: :meth:`JobRunner.start` takes an exclusive
``fcntl.flock`` on ``<db>.runner.lock``. The kernel drops a flock when its
holder dies, however it dies, so whoever takes the lease knows that every job
still ``running`` belongs to a dead process and puts it back at once, with no
heartbeat and no sweeper delay (the jobs left "running" forever of procrastinate
#307 and saq #127). A runner that finds the lease taken waits in standby and
takes over when it is freed, so every process of a service may start one.
The lease needs the processes on one host, like the database's WAL.

Execution is at least once, completion exactly once: a job whose runner died
after the pool returned but before the commit runs again, so ``execute``
should tolerate a re-run; its "succeeded" is recorded once whatever happens.

Which attempts a dead runner costs: ``execute`` gets an ``on_start`` callback
to hand to the pool (``pool.run(..., on_start=on_start)``), and the runner
records the attempt as started when it fires. The lease's next holder charges
the dead attempt only to jobs recorded as started; a job that was claimed but
still waited in the pool's queue is queued again with its attempt refunded.
So a crash loop caused by one job fails that job after its ``max_attempts``,
and never the bystanders queued behind it. The record is written when the
worker takes the call; a runner that dies within those few milliseconds
refunds that attempt too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PoolBusy, PoolUnavailable, StoreUnavailable, WorkerCrashed, answer_for
from .jobrecord import JobRecord, attempts_text, dumps_json
from .jobstore import JobStore
from .shadowing import ShadowMarker
from .tasks import TaskLease

__all__ = ["JobRunner", "KindPolicy", "ShadowJobs", "shadow_path"]

log = logging.getLogger(__name__)
_STOP_GRACE = 5.0  # how long stop() waits for workers after cancelling their jobs


@dataclass(frozen=True)
class KindPolicy:
    """How one kind of job runs.

    ``timeout`` has no default on purpose: a queue-wide default silently kills
    the one kind that legitimately runs long (arq's and saq's pitfall). A
    worker crash is retried, since the next worker may well succeed; a timeout
    only with ``retry_on_timeout``, since a job that overran once usually
    overruns again. Retry ``n`` waits ``min(backoff_initial * 2**(n-1), backoff_max)``.
    """

    timeout: float
    max_attempts: int = 3
    retry_on_timeout: bool = False
    backoff_initial: float = 1.0
    backoff_max: float = 60.0

    def __post_init__(self) -> None:
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, got {self.timeout!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.backoff_initial < 0 or self.backoff_max < 0:
            raise ValueError("backoff_initial and backoff_max must not be negative")

    def backoff(self, attempts: int) -> float:
        """The wait before the attempt after attempt number ``attempts``."""
        return min(self.backoff_initial * 2 ** (attempts - 1), self.backoff_max)


class JobRunner:
    """Runs queued jobs, ``concurrency`` at a time, while it holds the database's runner lease.

    ``execute(record, payload, on_start)`` does the work, typically
    ``pool.run(fn, payload, on_start=on_start, **record.params)``: passing
    ``on_start`` on is what lets a runner death spare the jobs that never
    reached a worker (an execute that never calls it is never charged for
    one). It runs under
    ``asyncio.wait_for(..., policies[record.kind].timeout)``, so a timeout
    cancels the pool call and the pool kills its worker. It returns an asyncio
    awaitable (wrap a Deferred with :func:`bridge.as_future`), whose value
    must be JSON. How an attempt ends decides what happens to the job:

    * a return value: ``succeeded``, with it as the result;
    * an exception with string ``code`` and ``message`` attributes (the
      input error of the app's own): ``failed`` with that error, never retried,
      since the same input fails the same way;
    * :class:`~bridge.errors.WorkerCrashed`: retried, or ``failed`` with code
      ``worker_crashed`` once ``max_attempts`` attempts are spent;
    * :class:`TimeoutError`: retried if the policy says so, else (or once the
      attempts are spent) ``failed`` with code ``timeout``;
    * :class:`MemoryError` (the worker hit its memory limit and Python noticed
      before the kernel's OOM killer did): treated as a crash, so the job's fate
      does not depend on which of the two came first: retried, or ``failed``
      with code ``out_of_memory`` once the attempts are spent;
    * :class:`~bridge.errors.PoolUnavailable` (a Dask scheduler gone) and
      :class:`~bridge.errors.PoolBusy` (the pool's backlog full): retried, or
      ``failed`` with code ``pool_unavailable`` / ``busy`` once the attempts
      are spent;
    * :class:`~bridge.errors.StoreUnavailable` (the database went away
      during the attempt): retried the same way (code ``store_unavailable``);
    * anything else: ``failed`` with code ``internal_error``, and the traceback
      (the worker's too) in the log, not in the response.

    The runner's own states::

        new --start()--> running                         lease taken: reclaim, then claim jobs
        new --start()--> standby --lease freed--> running
        standby, running --stop()--> stopping --> stopped

    Wake-ups come from :meth:`notify` (the store calls it for jobs submitted
    through it), from a timer set to the earliest retry, and from a poll every
    ``poll_interval`` seconds that finds jobs submitted by other processes and
    cancellations made there. A runner in standby tries the lease every
    ``lease_retry`` seconds.
    """

    def __init__(
        self,
        store: JobStore,
        execute: Callable[[JobRecord, bytes, Callable[[], None]], Awaitable[Any]],
        *,
        policies: Mapping[str, KindPolicy],
        concurrency: int,
        lease_path: str | Path | None = None,
        poll_interval: float = 1.0,
        lease_retry: float = 1.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if poll_interval <= 0 or lease_retry <= 0:
            raise ValueError("poll_interval and lease_retry must be positive")
        self.store = store
        self.policies = dict(policies)
        self.concurrency = concurrency
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._execute = execute
        # A store shared by machines (PostgreSQL) lets every runner work, each on a heartbeat lease;
        # a SQLite file has one runner at a time, on a flock beside it.
        self._shared = bool(getattr(store, "shared_runners", False))
        self._lease = None if self._shared else TaskLease(
            Path(lease_path) if lease_path is not None else Path(f"{store.path}.runner.lock"), label=self.id
        )
        self._poll_interval = poll_interval
        self._lease_retry = lease_retry
        self._state = "new"
        self._holder: str | None = None
        self._wake = asyncio.Event()
        self._interrupting = False
        self._jobs: dict[str, asyncio.Task[Any]] = {}  # job id -> its running attempt
        self._claims: dict[str, JobRecord] = {}  # job id -> the record as claimed
        self._workers: list[asyncio.Task[None]] = []
        self._helpers: list[asyncio.Task[None]] = []  # the standby loop, the poll
        self._unsubscribe: Callable[[], None] | None = None
        self._queued: int | None = None
        self._idle = 0  # workers waiting for work
        self._counts = dict.fromkeys(
            ("claimed", "completed", "retried", "failed", "cancelled", "interrupted", "reclaimed"), 0
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Take the lease and start working, or go to standby if another runner holds it.

        Returns once that is decided; when the lease is taken, the jobs a dead
        runner left running are already queued again.
        """
        if self._state != "new":
            raise RuntimeError(f"a runner starts once; this one is {self._state}")
        self._unsubscribe = unsubscribe = self.store.subscribe(lambda _record: self.notify())
        if self._lease is None:
            try:
                await self.store.heartbeat(self.id)
                await self._activate()
            except BaseException:
                unsubscribe()
                self._state = "stopped"
                raise
            self._helpers.append(asyncio.ensure_future(self._beat()))
        elif self._lease.acquire():
            try:
                await self._activate()
            except BaseException:
                self._lease.release()
                unsubscribe()
                self._state = "stopped"
                raise
        else:
            self._state = "standby"
            self._holder = self._lease.holder_label()
            log.info("job runner %s in standby: %s holds %s", self.id, self._holder, self._lease.path)
            self._helpers.append(asyncio.ensure_future(self._standby()))

    async def _activate(self) -> None:
        limits = {kind: policy.max_attempts for kind, policy in self.policies.items()}
        requeued, failed = await self.store.reclaim(self.id, limits)
        self._counts["reclaimed"] += len(requeued)
        self._counts["failed"] += len(failed)
        if requeued or failed:
            log.warning(
                "job runner %s took the lease: %d job(s) a dead runner left running were queued again, %d failed",
                self.id, len(requeued), len(failed),
            )
        self._state, self._holder = "running", None
        self._workers = [asyncio.ensure_future(self._work()) for _ in range(self.concurrency)]
        self._helpers.append(asyncio.ensure_future(self._poll()))

    async def _beat(self) -> None:
        """Shared stores: renew this runner's lease, and take back the jobs of runners that went silent."""
        ttl = float(getattr(self.store, "lease_ttl", 30.0))
        limits = {kind: policy.max_attempts for kind, policy in self.policies.items()}
        while self._state == "running":
            await asyncio.sleep(ttl / 3)
            try:
                await self.store.heartbeat(self.id)
                requeued, failed = await self.store.reclaim(self.id, limits)
            except Exception as exc:  # noqa: BLE001  (the database is away: claims fail too, and resume with it)
                log.warning("job runner %s could not renew its lease: %s", self.id, exc)
                continue
            self._counts["reclaimed"] += len(requeued)
            self._counts["failed"] += len(failed)
            if requeued or failed:
                log.warning("job runner %s: %d job(s) of a silent runner queued again, %d failed",
                            self.id, len(requeued), len(failed))
                self._wake.set()

    async def _standby(self) -> None:
        while self._state == "standby":
            await asyncio.sleep(self._lease_retry)
            if self._state != "standby":
                return
            if not self._lease.acquire():
                self._holder = self._lease.holder_label()
                continue
            log.info("job runner %s took over the lease %s", self.id, self._lease.path)
            try:
                await self._activate()
            except Exception:
                log.exception("job runner %s could not take over; back to standby", self.id)
                self._lease.release()

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming, give running jobs ``timeout`` seconds, then interrupt the rest; release the lease.

        An interrupted job is queued again (event ``interrupted``, its attempt
        refunded) and its pool call cancelled, which kills its worker: a
        shutdown finishes or persists every job, never loses one, and the next
        runner resumes it. Safe to call twice.
        """
        if self._state in ("new", "stopped"):
            self._state = "stopped"
            return
        if self._state == "stopping":
            raise RuntimeError("stop() is already in progress")
        self._state = "stopping"
        self._wake.set()
        for helper in self._helpers:
            helper.cancel()
        await asyncio.gather(*self._helpers, return_exceptions=True)
        try:
            if self._workers:
                _, pending = await asyncio.wait(self._workers, timeout=max(0.0, timeout))
                if pending:
                    self._interrupting = True
                    for task in self._jobs.values():
                        task.cancel()
                    interrupted = await self.store.interrupt(self.id)
                    self._counts["interrupted"] += len(interrupted)
                    if interrupted:
                        log.warning("job runner %s stopping: %d job(s) put back to queued: %s",
                                    self.id, len(interrupted), ", ".join(interrupted))
                    _, stuck = await asyncio.wait(pending, timeout=_STOP_GRACE)
                    for task in stuck:  # an execute that ignores cancellation: its outcome is discarded
                        log.warning("job runner %s: a job did not stop when cancelled; abandoning it", self.id)
                        task.cancel()
        finally:
            if self._unsubscribe is not None:
                self._unsubscribe()
            if self._lease is not None:
                self._lease.release()
            else:
                await self._retire()
            self._state = "stopped"

    async def _retire(self) -> None:
        try:
            await self.store.interrupt(self.id)  # none left, unless an attempt ended between wait and here
            await self.store.retire(self.id)
        except Exception as exc:  # noqa: BLE001  (its lease then expires, and another runner reclaims)
            log.warning("job runner %s could not retire its lease: %s", self.id, exc)

    def notify(self) -> None:
        """There may be new work: idle workers look now. Call it on the loop's thread."""
        self._wake.set()

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel the job in the store and, if it runs here, its attempt (the pool kills the worker).

        Raises :class:`JobNotFound` or :class:`JobFinished`, like :meth:`JobStore.cancel`.
        """
        record = await self.store.cancel(job_id)
        task = self._jobs.get(job_id)
        if task is not None:
            task.cancel()
        return record

    def state(self) -> dict[str, Any]:
        """A JSON-ready snapshot for ``/status``: the lease, jobs running here, idle workers, the last queued count seen, counters."""
        if self._lease is None:
            lease: dict[str, Any] = {"lease": "heartbeat" if self._state == "running" else "released",
                                     "lease_path": None, "lease_holder": self.id}
        else:
            lease = {"lease": "held" if self._lease.held else "standby" if self._state == "standby" else "released",
                     "lease_path": str(self._lease.path),
                     "lease_holder": self.id if self._lease.held else self._holder}
        return {
            "runner": self.id,
            "state": self._state,
            **lease,
            "store": {"engine": getattr(self.store, "engine", "sqlite"),
                      "state": "ok" if getattr(self.store, "reachable", True) else "unreachable"},
            "concurrency": self.concurrency,
            "running": len(self._jobs),
            "idle": self._idle,
            "queued": self._queued,
            **self._counts,
        }

    # ------------------------------------------------------------------ working

    async def _work(self) -> None:
        while self._state == "running":
            # Clear before claiming: a submit committed after this point sets
            # the event again, so no wake-up falls between the claim and the wait.
            self._wake.clear()
            try:
                record, self._queued, next_at = await self.store.claim(self.id)
            except StoreUnavailable as exc:
                log.warning("job runner %s cannot claim: %s", self.id, exc)
                record, next_at = None, time.time() + 1.0  # look again soon: the database may be back
            except Exception:
                log.exception("job runner %s could not claim a job; retrying in %ss", self.id, self._poll_interval)
                record, next_at = None, None
            if record is None:
                delay = self._poll_interval
                if next_at is not None:
                    delay = min(delay, max(0.0, next_at - time.time()))
                self._idle += 1
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
                finally:
                    self._idle -= 1
                continue
            if self._interrupting:
                return  # stop() has put it back already, or is about to
            self._counts["claimed"] += 1
            attempt = asyncio.ensure_future(self._attempt(record))
            self._jobs[record.id], self._claims[record.id] = attempt, record
            try:
                await asyncio.wait({attempt})
            finally:
                del self._jobs[record.id], self._claims[record.id]
            await self._record(record, attempt)

    async def _record(self, record: JobRecord, attempt: asyncio.Future[Any]) -> None:
        """Record the outcome, waiting out a database outage: the work is done, and worth its commit."""
        delay = 0.2
        while True:
            try:
                await self._record_outcome(record, attempt)
                return
            except StoreUnavailable as exc:
                if self._state != "running":
                    log.warning("job runner %s stopping while the database is away: job %s stays running "
                                "until a runner reclaims it (%s)", self.id, record.id, exc)
                    return
                log.warning("job runner %s: cannot record job %s yet (%s); retrying in %.1fs",
                            self.id, record.id, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                log.exception("job runner %s could not record the outcome of job %s; it stays running "
                              "until the next runner reclaims it", self.id, record.id)
                return

    async def _attempt(self, record: JobRecord) -> Any:
        policy = self.policies.get(record.kind)
        if policy is None:
            raise LookupError(f"no policy for job kind {record.kind!r}; known kinds: {sorted(self.policies)}")
        payload = await self.store.payload(record.id)
        marked: list[asyncio.Task[bool]] = []

        def on_start() -> None:
            if not marked:  # once per attempt, however many pool calls it makes
                marked.append(asyncio.ensure_future(self.store.mark_started(record, self.id)))

        try:
            return await asyncio.wait_for(self._execute(record, payload, on_start), policy.timeout)
        finally:
            if marked:  # the outcome's commit must come after the mark's (the store serialises them)
                await asyncio.gather(asyncio.shield(marked[0]), return_exceptions=True)

    async def _record_outcome(self, record: JobRecord, attempt: asyncio.Future[Any]) -> None:
        if attempt.cancelled():
            # Cancelled by cancel() or by the poll (the store already says
            # cancelled) or by stop() (the store says queued again).
            if not self._interrupting:
                self._counts["cancelled"] += 1
            return
        exc = attempt.exception()
        n = record.attempts
        if exc is None:
            try:
                result = dumps_json(attempt.result())
            except (TypeError, ValueError) as bad:
                exc = TypeError(f"the result of job kind {record.kind!r} is not JSON: {bad}")
            else:
                if await self.store.settle(record, self.id, "succeeded", "succeeded", {"attempt": n}, result=result):
                    self._counts["completed"] += 1
                return
        policy = self.policies.get(record.kind)
        code, message = getattr(exc, "code", None), getattr(exc, "message", None)
        if isinstance(code, str) and isinstance(message, str):
            await self._fail(record, {"code": code, "message": message})
        elif policy is not None and isinstance(
                exc, WorkerCrashed | TimeoutError | MemoryError | PoolUnavailable | PoolBusy | StoreUnavailable):
            await self._retry_or_fail(record, policy, exc)
        else:
            log.error("job %s (%s) attempt %d failed", record.id, record.kind, n, exc_info=exc)
            await self._fail(record, {"code": "internal_error", "message": "the job failed; see the service log"})

    async def _retry_or_fail(self, record: JobRecord, policy: KindPolicy, exc: BaseException) -> None:
        n = record.attempts
        found = answer_for(exc)  # the toolkit's error table gives the reason's code
        reason = found.code if found is not None else "timeout"
        if isinstance(exc, TimeoutError):
            what, retryable = f"the job did not finish within {policy.timeout}s", policy.retry_on_timeout
        elif isinstance(exc, MemoryError):
            what, retryable = "the worker ran out of memory" + (f": {exc}" if str(exc) else ""), True
        else:  # the worker, the pool or the store failed, not the job: the same attempt may work later
            what, retryable = str(exc), True
        if retryable and n < policy.max_attempts:
            delay = policy.backoff(n)
            detail = {"attempt": n, "reason": reason, "message": what, "delay": delay}
            if await self.store.settle(record, self.id, "queued", "retry", detail, run_after=time.time() + delay):
                self._counts["retried"] += 1
                log.info("job %s (%s) attempt %d: %s; retrying in %ss", record.id, record.kind, n, what, delay)
                self._wake.set()  # idle workers re-arm their timers for this job's run_after
            return
        if retryable:
            what = f"{what}; gave up after {attempts_text(n)}"
        log.warning("job %s (%s) failed: %s", record.id, record.kind, what)
        await self._fail(record, {"code": reason, "message": what})

    async def _fail(self, record: JobRecord, error: dict[str, str]) -> None:
        detail = {"attempt": record.attempts, "code": error["code"]}
        if await self.store.settle(record, self.id, "failed", "failed", detail, error=error):
            self._counts["failed"] += 1

    async def _poll(self) -> None:
        """Stop attempts whose job another process cancelled (idle workers poll on their own timers)."""
        while self._state == "running":
            await asyncio.sleep(self._poll_interval)
            if not self._jobs:
                continue
            try:
                claims = await self.store.claims(list(self._jobs))
            except Exception:
                log.exception("job runner %s could not poll its running jobs", self.id)
                continue
            for job_id, (status, runner, attempts) in claims.items():
                claimed, task = self._claims.get(job_id), self._jobs.get(job_id)
                if claimed is None or task is None:
                    continue
                if (status, runner, attempts) != ("running", self.id, claimed.attempts):
                    log.info("job %s is %s elsewhere; cancelling its attempt here", job_id, status)
                    task.cancel()


def shadow_path(path: str | Path) -> Path:
    """The shadow namespace's database next to a real one: ``var/cutover.db`` -> ``var/cutover.shadow.db``."""
    real = Path(path)
    return real.with_name(f"{real.stem}.shadow{real.suffix or '.db'}")


class ShadowJobs:
    """The jobs of mirrored requests, kept apart from the real ones.

    Shadow mode sends an app copies of requests (marked, see
    :mod:`bridge.shadowing`). A copied job submission must not reach the real
    job table: the work would be listed and recovered with the real jobs, and
    its ``Idempotency-Key`` would make the client's own request, once the route
    is modern, come back as a replay of the shadow job. So shadow jobs get a
    database file of their own (:func:`shadow_path`: their own table, their own
    idempotency keys), a runner of their own, and a retention: jobs older than
    ``retention`` seconds are purged every ``purge_every`` seconds. The store
    and runner start on first use, so an app never shadowed never opens the file.

    ``submit(..., marker=m)`` runs the work when the marker says ``run`` and
    only records it (queued, never claimed) when it says ``validate``.
    """

    def __init__(
        self,
        real_path: str | Path,
        execute: Callable[[JobRecord, bytes, Callable[[], None]], Awaitable[Any]],
        *,
        policies: Mapping[str, KindPolicy],
        concurrency: int = 1,
        retention: float = 3600.0,
        purge_every: float = 60.0,
    ) -> None:
        if not (retention > 0 and purge_every > 0):
            raise ValueError("retention and purge_every must be positive numbers of seconds")
        self.path = shadow_path(real_path)
        self.retention = retention
        self.purge_every = purge_every
        self.purged = 0
        self.store = JobStore(self.path)
        self._runner_args = (execute, dict(policies), concurrency)
        self.runner: JobRunner | None = None
        self._lock = asyncio.Lock()
        self._started = False
        self._purger: asyncio.Task[None] | None = None

    async def ready(self) -> ShadowJobs:
        """Open the store and start the runner if this is the first shadow job; returns self."""
        if self._started:
            return self
        async with self._lock:
            if not self._started:
                await self.store.open()
                execute, policies, concurrency = self._runner_args
                self.runner = JobRunner(self.store, execute, policies=policies, concurrency=concurrency)
                try:
                    await self.runner.start()
                except BaseException:
                    await self.store.close()
                    raise
                self._purger = asyncio.ensure_future(self._purge_loop())
                self._started = True
        return self

    async def submit(
        self, kind: str, payload: bytes, params: dict[str, Any], *, idempotency_key: str | None,
        marker: ShadowMarker,
    ) -> tuple[JobRecord, bool]:
        await self.ready()
        record, created = await self.store.submit(
            kind, payload, params, idempotency_key=idempotency_key, hold=not marker.run
        )
        if created and marker.run and self.runner is not None:
            self.runner.notify()
        return record, created

    async def purge(self) -> int:
        """Delete shadow jobs past the retention now; returns how many went."""
        if not self._started:
            return 0
        gone = await self.store.purge(time.time() - self.retention)
        self.purged += gone
        return gone

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.purge_every)
            try:
                await self.purge()
            except Exception:
                log.exception("could not purge the shadow jobs in %s", self.path)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the runner and close the store (if they ever started). Safe to call twice."""
        async with self._lock:
            if not self._started:
                return
            self._started = False
            if self._purger is not None:
                self._purger.cancel()
                await asyncio.gather(self._purger, return_exceptions=True)
            if self.runner is not None:
                await self.runner.stop(timeout=timeout)
            await self.store.close()

"""``create_app``: the FastAPI service, its lifespan, and running it alone under uvicorn."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

import bridge
import workloads
from bridge import JobRecord, SharedPool
from bridge.asgi import BodyLimitMiddleware, h11_protocol
from bridge.database import database_url, open_job_store
from bridge.jobs import JobRunner, KindPolicy, ShadowJobs
from bridge.tasks import TaskManager, TaskRegistry

from . import sync
from .errors import install_error_handlers
from .routes import __version__, router
from .settings import ModernSettings
from .work import run_kind


def create_app(settings: ModernSettings | None = None, *, pool: SharedPool | None = None) -> FastAPI:
    """The modern service. It uses ``pool`` (default: the process's shared pool) and
    starts it only if nobody else has, so co-hosted with legacy both share one pool."""
    settings = settings or ModernSettings()
    registry = TaskRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        shared = pool or bridge.get_pool()
        started_here = not shared.running
        if started_here:
            await shared.start()
        state = app.state
        state.pool, state.settings, state.started = shared, settings, time.monotonic()
        state.data_sync = sync.register(registry, shared, settings)

        async def execute(record: JobRecord, payload: bytes, on_start: Callable[[], None]) -> Any:
            data: Any = payload.decode("utf-8", "surrogatepass") if record.kind == "domains" else payload
            return await run_kind(shared, record.kind, data, record.params, settings, on_start=on_start)

        # CUTOVER_DATABASE=postgresql://... shares the jobs between replicas; the default is var/cutover.db.
        state.jobs = open_job_store(database_url(settings.db_path))
        await state.jobs.open()
        policies = {
            kind: KindPolicy(timeout=timeout, max_attempts=settings.job_max_attempts)
            for kind, timeout in settings.job_timeouts.items()
        }
        state.runner = JobRunner(state.jobs, execute, policies=policies, concurrency=shared.processes + 1)
        await state.runner.start()
        # Mirrored job submissions (cutover's shadow mode) go here, never to the real table.
        state.shadow_jobs = ShadowJobs(settings.db_path, execute, policies=policies, concurrency=1)
        state.tasks = TaskManager(registry, stack="modern", owners=settings.task_owners, pool=shared)
        await state.tasks.start()
        try:
            yield
        finally:
            await state.tasks.stop()
            await state.runner.stop(timeout=settings.shutdown_timeout)
            await state.shadow_jobs.stop(timeout=settings.shutdown_timeout)
            await state.jobs.close()
            if started_here:
                await shared.close(timeout=settings.shutdown_timeout)

    app = FastAPI(
        title="cutover reference service (modern)",
        version=__version__,
        description="The FastAPI rewrite of the legacy Twisted service: the same contract, durable jobs.",
        lifespan=lifespan,
        redirect_slashes=False,
    )
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    app.include_router(router)
    return app


def cohost(pool: SharedPool) -> FastAPI:
    """The modern stack for ``cutover serve`` (``[apps] modern = "modern.app:cohost"``): built on the
    host's pool; the host enters its lifespan, and the plan's ``[tasks]`` reaches its TaskManager
    through the process's task board."""
    return create_app(pool=pool)


async def serve(settings: ModernSettings | None = None, *, host: str | None = None, port: int | None = None) -> None:
    """Run the modern service alone under uvicorn until SIGINT or SIGTERM."""
    import uvicorn

    settings = settings or ModernSettings()
    if host is not None or port is not None:
        settings = dataclasses.replace(settings, host=host or settings.host, port=settings.port if port is None else port)
    pool = SharedPool(initializer=workloads.warm_up)  # every model loaded once per worker
    bridge.set_pool(pool)
    # h11_protocol: a deadline on request heads, which uvicorn lacks (slow-loris)
    config = uvicorn.Config(
        create_app(settings, pool=pool), host=settings.host, port=settings.port, lifespan="on", http=h11_protocol(),
        ws="none",  # no WebSocket routes; and h11_protocol's head deadline assumes plain HTTP
    )
    await uvicorn.Server(config).serve()

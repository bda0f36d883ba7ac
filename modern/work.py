"""What each kind of work runs, the asyncio way: ``await pool.run(kernel, ...)`` on the shared pool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import workloads
from bridge import SharedPool

from .settings import ModernSettings


async def find_domains(pool: SharedPool, text: str, settings: ModernSettings,
                       on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """Split on whitespace, extract per chunk across the workers, merge in order."""
    workloads.check_text(text, settings.max_body_bytes)
    chunks = workloads.split_chunks(text, settings.domain_chunk_chars)
    timeout = settings.job_timeouts.get("domains")
    calls = [asyncio.ensure_future(pool.run(workloads.extract_domains_chunk, chunk, timeout=timeout, on_start=on_start))
             for chunk in chunks]
    try:
        found = await asyncio.gather(*calls)
    except BaseException:  # one failed or was refused (PoolBusy): the rest must not run on unobserved
        for call in calls:
            call.cancel()
        raise
    return workloads.merge_domains(found)


async def run_kind(pool: SharedPool, kind: str, payload: Any, params: dict[str, Any], settings: ModernSettings,
                   on_start: Callable[[], None] | None = None) -> Any:
    """One unit of work of ``kind``; ``payload`` is bytes, or text for domains.

    ``on_start`` goes to the pool: a job's runner learns from it that the work reached a worker."""
    timeout = settings.job_timeouts.get(kind)
    if kind == "faces":
        return await pool.run(workloads.detect_faces, payload, max_pixels=settings.max_pixels, timeout=timeout,
                              on_start=on_start)
    if kind == "ocr":
        return await pool.run(workloads.read_text, payload, max_pixels=settings.max_pixels, timeout=timeout,
                              on_start=on_start)
    if kind == "audio":
        return await pool.run(workloads.analyze_audio, payload, timeout=timeout, on_start=on_start, **params)
    if kind == "domains":
        return await find_domains(pool, payload, settings, on_start)
    raise ValueError(f"unknown kind {kind!r}")

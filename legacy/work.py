"""What each kind of work runs, the Twisted way: kernels go to the shared pool via ``pool.defer``.

This is the one-line change the bridge asks of a legacy service: where the
code used ``deferToThread(kernel, ...)`` (GIL-bound) or its own process pool,
it now calls ``pool.defer(kernel, ...)`` on the process's shared pool.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

import workloads
from bridge import SharedPool

from .settings import LegacySettings


@defer.inlineCallbacks
def find_domains(pool: SharedPool, text: str, settings: LegacySettings) -> Any:
    """Split on whitespace, extract per chunk across the workers, merge in order."""
    workloads.check_text(text, settings.max_body_bytes)
    chunks = workloads.split_chunks(text, settings.domain_chunk_chars)
    calls: list[defer.Deferred[Any]] = []
    try:
        for chunk in chunks:
            calls.append(pool.defer(workloads.extract_domains_chunk, chunk, timeout=settings.job_timeout))
    except Exception:  # the pool refused one (PoolBusy, PoolUnavailable): the others must not run unobserved
        for call in calls:
            call.addErrback(lambda failure: None)
            call.cancel()
        raise
    found = yield defer.gatherResults(calls, consumeErrors=True).addErrback(_first_error)
    return workloads.merge_domains(found)


def _first_error(failure: Any) -> Any:
    failure.trap(defer.FirstError)
    return failure.value.subFailure


def run_kind(pool: SharedPool, kind: str, payload: Any, params: dict[str, Any], settings: LegacySettings) -> Any:
    """A Deferred for one unit of work of ``kind``; ``payload`` is bytes, or text for domains."""
    timeout = settings.job_timeout
    if kind == "faces":
        return pool.defer(workloads.detect_faces, payload, max_pixels=settings.max_pixels, timeout=timeout)
    if kind == "ocr":
        return pool.defer(workloads.read_text, payload, max_pixels=settings.max_pixels, timeout=timeout)
    if kind == "audio":
        return pool.defer(workloads.analyze_audio, payload, timeout=timeout, **params)
    if kind == "domains":
        return find_domains(pool, payload, settings)
    raise ValueError(f"unknown kind {kind!r}")

"""The small interface between :class:`~bridge.pool.SharedPool` and where its process work runs.

Two implementations: :class:`~bridge.pool.local.LocalBackend` (worker
processes of this host, dispatched on the pool's event loop) and
:class:`~bridge.pool.dask.DaskBackend` (a Dask cluster). The pool owns the
public API, the threads and the lifecycle; a backend owns admission,
dispatch and its workers, and settles each :class:`~bridge.pool.protocol.Call`
through the call's own target.
"""

from __future__ import annotations

from typing import Any, Protocol

from .protocol import Call

#: Where process work runs when no ``backend`` is given: ``local`` or ``dask://host:port``.
BACKEND_ENV = "CUTOVER_POOL"


def parse_backend(url: str) -> str | None:
    """The Dask scheduler address a backend setting names, or None for the local pool.

    ``local`` (or empty) is the local pool; ``dask://host:port`` a scheduler
    over TCP; ``dask+tls://host:port`` over TLS (configure ``distributed.comm``
    security). Anything else is a ValueError naming the accepted forms.
    """
    value = url.strip()
    if value in ("", "local"):
        return None
    for prefix, scheme in (("dask://", "tcp://"), ("dask+tcp://", "tcp://"), ("dask+tls://", "tls://")):
        if value.startswith(prefix) and len(value) > len(prefix):
            return scheme + value[len(prefix):]
    raise ValueError(f"unknown pool backend {url!r}: use 'local', 'dask://host:port' or 'dask+tls://host:port'")


class Backend(Protocol):
    #: Whether ``submit``/``cancel`` must run on the backend's event loop (else: from any thread).
    loop_bound: bool

    def submit(self, call: Call, block: bool) -> None:
        """Accept ``call`` (queue it, or wait for room if ``block``) or raise PoolBusy/PoolClosed."""

    def cancel(self, call: Call) -> None:
        """The caller gave up: a call not started never runs; a running one is stopped where possible."""

    def stats(self) -> dict[str, Any]:
        """The PoolStats fields this backend knows; never waits on a worker or the network."""

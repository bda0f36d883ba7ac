"""Functions the dask tests send to cluster workers (an importable module, as for the local pool)."""

from __future__ import annotations

import time
from pathlib import Path


def hold(started: str, release: str, done: str, limit: float = 60.0) -> str:
    """Mark ``started``, wait (bounded) until the test creates ``release``, then mark ``done``.

    Unlike a FIFO gate it never needs the test to unblock it: a call the test
    has given up on ends by itself.
    """
    Path(started).write_text("started")
    deadline = time.monotonic() + limit
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    Path(done).write_text("done")
    return done

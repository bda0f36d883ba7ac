"""Job functions the job tests run in pool workers: each takes the job's payload, then its params.

Module level so they pickle; state that must survive a worker's death lives in files.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any


def echo(payload: bytes, **params: Any) -> dict[str, Any]:
    return {"payload": payload.decode(), "params": params, "pid": os.getpid()}


def reject(payload: bytes, code: str, message: str) -> None:
    """Fail as the workloads do on bad input (imported here, so only the workers that reject pay for it)."""
    from workloads import InvalidInput

    raise InvalidInput(code, message)


def explode(payload: bytes) -> None:
    raise LookupError(f"bug while handling {payload!r}")


def unjsonable(payload: bytes) -> bytes:
    return payload


def crash_first(payload: bytes, marker: str) -> str:
    """Kill this worker on the first attempt only: the marker file remembers that it crashed once."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


def crash_always(payload: bytes) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def touch(payload: bytes, path: str) -> str:
    Path(path).write_text(str(os.getpid()))
    return path


def wait_at_gate(payload: bytes, started: str, gate: str) -> str:
    """Announce our pid on the ``started`` FIFO, then block until the test opens ``gate``; returns the payload."""
    with open(started, "w") as fifo:
        fifo.write(str(os.getpid()))
    with open(gate) as fifo:
        fifo.read()
    return payload.decode()


def crunch(payload: bytes, rounds: int = 400_000) -> dict[str, Any]:
    """Pure-Python work, about 50 ms: long enough that a kill lands while some jobs are mid-way."""
    total = 0
    data = payload or b"\0"
    for i in range(rounds):
        total = (total * 31 + data[i % len(data)]) % 1_000_003
    return {"payload": payload.decode(), "digest": total}

"""The shop's data, shared by both stacks as a real database would be (one process, one dict)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

ITEMS: dict[str, float] = {"apple": 0.5, "pear": 0.75}
RESTOCKS = {"legacy": 0, "modern": 0}  # which stack ran the periodic job, and how often
AUDITS = [0]  # runs of legacy's unported job


def item(name: str) -> dict[str, Any]:
    """The answer for one item; ``served_at`` differs on every call, as timestamps do."""
    return {"name": name, "price": ITEMS[name], "price_with_tax": ITEMS[name] * 1.2, "served_at": datetime.now(UTC).isoformat()}


def digest(data: bytes) -> str:
    """A blocking call (the legacy side pushes it to a thread)."""
    return hashlib.sha256(data).hexdigest()


def count_primes(n: int) -> int:
    """CPU work for the shared pool: a module-level function, so it pickles by name."""
    sieve = bytearray([1]) * (n + 1)
    sieve[0:2] = b"\x00\x00"
    for i in range(2, int(n**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
    return sum(sieve)


def restock(stack: str) -> None:
    RESTOCKS[stack] += 1


def audit() -> None:
    """A periodic job only legacy has: not ported yet, so it must stay where it runs."""
    AUDITS[0] += 1

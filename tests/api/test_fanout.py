"""A request that fans out over the pool and is refused part-way leaves no orphaned calls behind, on either stack."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from bridge import PoolBusy, SharedPool, as_future
from bridge.testing import asyncio_test
from legacy import LegacySettings
from legacy.work import find_domains as legacy_find_domains
from modern.settings import ModernSettings
from modern.work import find_domains as modern_find_domains
from tests import workfns
from tests.conftest import Gate, until

TEXT = " ".join(f"host{i}.example.com" for i in range(6))  # six chunks of one domain each

def legacy_call(pool: SharedPool) -> Any:
    return as_future(legacy_find_domains(pool, TEXT, LegacySettings(domain_chunk_chars=20)))

def modern_call(pool: SharedPool) -> Any:
    return modern_find_domains(pool, TEXT, ModernSettings(domain_chunk_chars=20))

@pytest.mark.parametrize("call", [legacy_call, modern_call], ids=["legacy", "modern"])
@asyncio_test
async def test_a_fan_out_refused_part_way_cancels_the_calls_it_made(gate: Gate, call: Callable[[SharedPool], Any]) -> None:
    async with SharedPool(processes=1, cpus=2, max_queued=2, max_waiting=0) as pool:
        blocker = asyncio.ensure_future(pool.run(workfns.wait_at_gate, gate.started, gate.gate))
        await gate.wait_started()
        with pytest.raises(PoolBusy):
            await call(pool)  # two chunks fit in the queue, the third is refused
        # the two queued chunks are dropped (a cancelled asyncio task lets go on its next turn)
        await until(lambda: pool.stats().cancelled == 2, "the queued chunks to be cancelled")
        stats = pool.stats()
        assert (stats.queued, stats.waiting) == (0, 0)
        await gate.open()
        await blocker
        assert pool.stats().completed == 1  # only the blocker ran

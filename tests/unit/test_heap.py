"""The startup heap, frozen once: what is made later is still collected, and ``CUTOVER_GC_FREEZE=0`` leaves it alone.

Each case runs in a fresh interpreter: freezing is for the life of a process, and the test runner's heap is not ours.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

from bridge import SharedPool
from bridge.testing import asyncio_test

PROBE = """
import gc, json, weakref
startup = [object() for _ in range(5000)]  # what an app loads and keeps
from bridge.heap import freeze_startup_heap
frozen = freeze_startup_heap()
class Node:
    pass
later = Node()
later.cycle = later  # cyclic garbage made after the freeze
gone = weakref.ref(later)
del later
gc.collect()
print(json.dumps({"frozen": frozen, "count": gc.get_freeze_count(), "later_collected": gone() is None}))
"""


def probe(**env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if k != "CUTOVER_GC_FREEZE"}
    done = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                          check=True, timeout=60)
    return dict(json.loads(done.stdout))


def test_the_startup_heap_is_frozen_and_later_cycles_are_still_collected() -> None:
    found = probe()
    assert found["frozen"] == found["count"]
    assert int(found["frozen"]) > 5000  # the startup list's objects, and the interpreter's own
    assert found["later_collected"] is True


def test_cutover_gc_freeze_0_leaves_the_heap_alone() -> None:
    assert probe(CUTOVER_GC_FREEZE="0") == {"frozen": 0, "count": 0, "later_collected": True}


@asyncio_test
async def test_each_pool_worker_freezes_its_heap_after_its_initializer() -> None:
    async with SharedPool(processes=1, cpus=1) as pool:
        assert await pool.run(gc.get_freeze_count) > 0

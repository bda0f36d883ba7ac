"""The startup heap, frozen, so the collector stops walking what a server loads once and keeps.

A process that hosts both stacks starts with some 100,000 long-lived objects
(Twisted, FastAPI, pydantic, the apps' modules and data), and a pool worker
with its models loaded some 30,000. CPython's full collection walks every one
of them, each time, on the thread that allocated: in ``cutover serve`` under
load that was 65 ms per full collection on the event loop (the front door's
p99 tail), and 15 ms per full collection inside a worker's call.
:func:`gc.freeze` moves them to a permanent generation the collector skips;
objects made later are collected as before, and reference counting still frees
a frozen object that stops being used. Only cyclic garbage among the frozen
objects is never reclaimed, which is why this runs once, after startup, in a
process cutover owns: ``cutover serve`` once the host is up, and each pool
worker after its initializer. ``CUTOVER_GC_FREEZE=0`` turns it off.
"""

from __future__ import annotations

import gc
import os

__all__ = ["freeze_startup_heap"]


def freeze_startup_heap() -> int:
    """Collect the startup's garbage, then freeze what is left.

    :returns: how many objects are frozen now (0 with ``CUTOVER_GC_FREEZE=0``).
    """
    if os.environ.get("CUTOVER_GC_FREEZE", "1") == "0":
        return gc.get_freeze_count()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()

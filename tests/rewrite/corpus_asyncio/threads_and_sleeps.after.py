"""Blocking calls on threads, and three ways of sleeping on the reactor."""

import asyncio

from bridge import get_pool

from tests.workfns import add, fail_with


async def main(a, b):
    total = await get_pool().run_in_thread(add, a, b, scale=2)
    await asyncio.sleep(0.01)
    later = await asyncio.sleep(0.01, total + 1)
    asyncio.get_running_loop().call_later(0, print, "scheduled, not awaited")
    if later < 0:
        await get_pool().run_in_thread(fail_with, "negative total")
    return later

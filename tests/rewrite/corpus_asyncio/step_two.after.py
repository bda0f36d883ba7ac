"""The output of --target twisted (step one) moves on to asyncio (step two)."""

from bridge import get_pool
from tests.workfns import add


async def main(a, b):
    # Converted in step one; still awaits a Deferred.
    total = await get_pool().run_in_thread(add, a, b)
    return total * 2

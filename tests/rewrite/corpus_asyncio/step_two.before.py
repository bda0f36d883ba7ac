"""The output of --target twisted (step one) moves on to asyncio (step two)."""

from twisted.internet import threads

from bridge import deferred_api
from tests.workfns import add


@deferred_api
async def main(a, b):
    # Converted in step one; still awaits a Deferred.
    total = await threads.deferToThread(add, a, b)
    return total * 2

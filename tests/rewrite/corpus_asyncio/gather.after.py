import asyncio

from bridge import get_pool
from tests.workfns import add, square


async def main(a, b):
    squares = await asyncio.gather(*[get_pool().run(square, n) for n in range(a, b)])
    pair = await asyncio.gather(get_pool().run_in_thread(add, a, b), get_pool().run_in_thread(add, b, a))
    return (squares, pair)

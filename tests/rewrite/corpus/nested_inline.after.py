from bridge import deferred_api


@deferred_api
async def outer(d):
    @deferred_api
    async def inner(x):
        y = await x
        return y * 2

    value = await inner(d)
    squares = [v * v for v in range(value)]
    return sum(squares)

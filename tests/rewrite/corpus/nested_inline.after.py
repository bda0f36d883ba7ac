from bridge import deferred_api, maybe_awaitable


@deferred_api
async def outer(d):
    @deferred_api
    async def inner(x):
        y = await maybe_awaitable(x)
        return y * 2

    value = await inner(d)
    squares = [v * v for v in range(value)]
    return sum(squares)

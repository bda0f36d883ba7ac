import twisted.internet.defer

from bridge import deferred_api, maybe_awaitable


@deferred_api
async def already_async(d):
    return await d


@deferred_api
async def add_one(d):
    value = await maybe_awaitable(d)
    return value + 1

import twisted.internet.defer

from bridge import deferred_api


@deferred_api
async def already_async(d):
    return await d


@deferred_api
async def add_one(d):
    value = await d
    return value + 1

import twisted.internet.defer

from bridge import deferred_api


@deferred_api
async def already_async(d):
    return await d


@twisted.internet.defer.inlineCallbacks
def add_one(d):
    value = yield d
    twisted.internet.defer.returnValue(value + 1)

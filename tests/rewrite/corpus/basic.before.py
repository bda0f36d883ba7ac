from twisted.internet.defer import inlineCallbacks, returnValue


@inlineCallbacks
def fetch_total(client, key):
    # Two round trips; the comment stays.
    first = yield client.get(key)  # first value
    yield client.touch(key)
    second = (yield client.get(key + ":extra"))
    returnValue(first + second)

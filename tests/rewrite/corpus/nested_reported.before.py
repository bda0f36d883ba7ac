from twisted.internet.defer import inlineCallbacks, returnValue


@inlineCallbacks
def outer(items):
    def helper():
        returnValue(len(items))  # leaves outer through inlineCallbacks

    yield helper()


@inlineCallbacks
def waits_a_turn():
    yield


def plain(d):
    result = yield d
    return result


wrapped = inlineCallbacks(plain)

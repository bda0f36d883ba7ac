from twisted.internet import defer


@defer.inlineCallbacks
def outer(d):
    @defer.inlineCallbacks
    def inner(x):
        y = yield x
        defer.returnValue(y * 2)

    value = yield inner(d)
    squares = [v * v for v in range(value)]
    defer.returnValue(sum(squares))

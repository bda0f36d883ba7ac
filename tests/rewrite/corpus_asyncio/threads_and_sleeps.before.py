"""Blocking calls on threads, and three ways of sleeping on the reactor."""

from twisted.internet import defer, reactor, task, threads

from tests.workfns import add, fail_with


@defer.inlineCallbacks
def main(a, b):
    total = yield threads.deferToThread(add, a, b, scale=2)
    yield task.deferLater(reactor, 0.01)
    d = defer.Deferred()
    reactor.callLater(0.01, d.callback, total + 1)  # the sleep idiom
    later = yield d
    reactor.callLater(0, print, "scheduled, not awaited")
    if later < 0:
        yield threads.deferToThread(fail_with, "negative total")
    defer.returnValue(later)

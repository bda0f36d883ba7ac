from twisted.internet import defer, reactor, task


class Poller:
    def __init__(self, fetch):
        self.fetch = fetch
        self.loop = task.LoopingCall(self.poll)
        self.loop.start(30)

    @defer.inlineCallbacks
    def poll(self):
        value = yield self.fetch().addCallbacks(int, lambda failure: 0)
        yield task.deferLater(reactor, 1, self.fetch)
        defer.returnValue(value)

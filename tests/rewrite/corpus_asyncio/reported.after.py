from bridge import as_future, deferred_api
from twisted.internet import reactor, task


class Poller:
    def __init__(self, fetch):
        self.fetch = fetch
        self.loop = task.LoopingCall(deferred_api(self.poll))
        self.loop.start(30)

    async def poll(self):
        value = await as_future(self.fetch().addCallbacks(int, lambda failure: 0))
        await as_future(task.deferLater(reactor, 1, self.fetch))
        return value

from twisted.internet import defer, threads

from bridge import get_pool
from tests.workfns import add, square


@defer.inlineCallbacks
def main(a, b):
    squares = yield defer.gatherResults([get_pool().defer(square, n) for n in range(a, b)], consumeErrors=True)
    pair = yield defer.gatherResults([threads.deferToThread(add, a, b), get_pool().defer_to_thread(add, b, a)])
    defer.returnValue((squares, pair))

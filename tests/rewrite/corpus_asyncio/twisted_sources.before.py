"""Deferreds that still come from Twisted, and calls between converted functions."""

from twisted.internet import defer


def legacy_lookup(key):
    # Still Twisted code: returns a Deferred.
    if key == "missing":
        return defer.fail(KeyError(key))
    return defer.succeed(len(key))


@defer.inlineCallbacks
def lookup_twice(key):
    first = yield legacy_lookup(key)
    second = yield legacy_lookup(key + key)
    defer.returnValue(first + second)


@defer.inlineCallbacks
def main(key):
    try:
        value = yield lookup_twice(key)
    except KeyError as exc:
        raise LookupError(f"no {exc.args[0]}") from exc
    defer.returnValue(value * 10)


def legacy_caller(key):
    return lookup_twice(key).addCallback(str)

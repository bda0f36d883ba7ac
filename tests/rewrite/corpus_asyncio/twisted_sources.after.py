"""Deferreds that still come from Twisted, and calls between converted functions."""

from bridge import maybe_awaitable
from twisted.internet import defer


def legacy_lookup(key):
    # Still Twisted code: returns a Deferred.
    if key == "missing":
        return defer.fail(KeyError(key))
    return defer.succeed(len(key))


async def lookup_twice(key):
    first = await maybe_awaitable(legacy_lookup(key))
    second = await maybe_awaitable(legacy_lookup(key + key))
    return first + second


async def main(key):
    try:
        value = await lookup_twice(key)
    except KeyError as exc:
        raise LookupError(f"no {exc.args[0]}") from exc
    return value * 10


def legacy_caller(key):
    return lookup_twice(key).addCallback(str)

"""Stacked decorators and comments around them."""

import functools

from twisted.internet import defer


def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


class Store:
    @classmethod
    # Loads in one pass.
    @defer.inlineCallbacks  # the Twisted way
    @logged
    def load(cls, backend, name):
        row = yield backend.fetch(name)
        if row is None:
            defer.returnValue(None)
        defer.returnValue(cls(row))

"""Stacked decorators and comments around them."""

import functools

from bridge import deferred_api, maybe_awaitable


def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


class Store:
    @classmethod
    # Loads in one pass.
    @deferred_api  # the Twisted way
    @logged
    async def load(cls, backend, name):
        row = await maybe_awaitable(backend.fetch(name))
        if row is None:
            return None
        return cls(row)

from bridge import deferred_api, maybe_awaitable


@deferred_api
async def fetch_total(client, key):
    # Two round trips; the comment stays.
    first = await maybe_awaitable(client.get(key))  # first value
    await maybe_awaitable(client.touch(key))
    second = (await maybe_awaitable(client.get(key + ":extra")))
    return first + second

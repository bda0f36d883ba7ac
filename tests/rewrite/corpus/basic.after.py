from bridge import deferred_api


@deferred_api
async def fetch_total(client, key):
    # Two round trips; the comment stays.
    first = await client.get(key)  # first value
    await client.touch(key)
    second = (await client.get(key + ":extra"))
    return first + second

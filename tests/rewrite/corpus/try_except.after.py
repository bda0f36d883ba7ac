from bridge import deferred_api, maybe_awaitable


@deferred_api
async def safe_fetch(client, key, default=None):
    try:
        value = await maybe_awaitable(client.get(key))
    except KeyError:
        # Missing keys are normal.
        value = default
    except Exception as exc:
        await maybe_awaitable(client.log(exc))
        raise
    finally:
        await maybe_awaitable(client.release(key))
    return value

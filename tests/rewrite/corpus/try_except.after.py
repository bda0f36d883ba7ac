from bridge import deferred_api


@deferred_api
async def safe_fetch(client, key, default=None):
    try:
        value = await client.get(key)
    except KeyError:
        # Missing keys are normal.
        value = default
    except Exception as exc:
        await client.log(exc)
        raise
    finally:
        await client.release(key)
    return value

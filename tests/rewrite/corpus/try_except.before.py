from twisted.internet import defer


@defer.inlineCallbacks
def safe_fetch(client, key, default=None):
    try:
        value = yield client.get(key)
    except KeyError:
        # Missing keys are normal.
        value = default
    except Exception as exc:
        yield client.log(exc)
        raise
    finally:
        yield client.release(key)
    defer.returnValue(value)

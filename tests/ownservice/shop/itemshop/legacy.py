"""The legacy shop on Klein, as its team wrote it: deferToThread for blocking work, the pool for CPU."""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from twisted.application.service import Service
from twisted.internet import task, threads

from bridge import get_pool
from bridge.looping import LoopingTasks

from . import store

app = Klein()


def _json(request: Any, body: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body).encode()


@app.route("/", methods=["GET"])
def home(request: Any) -> bytes:
    return _json(request, {"shop": "itemshop", "items": len(store.ITEMS), "restocks": store.RESTOCKS, "audits": store.AUDITS[0]})  # not ported yet


@app.route("/items/<name>", methods=["GET"])
def get_item(request: Any, name: str) -> bytes:
    if name not in store.ITEMS:
        return _json(request, {"error": {"code": "not_found", "message": f"no item {name}"}}, 404)
    return _json(request, store.item(name))


@app.route("/items/<name>", methods=["PUT"])
def put_item(request: Any, name: str) -> bytes:
    try:
        price = json.loads(request.content.read())["price"]
        if isinstance(price, bool) or not isinstance(price, int | float):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return _json(request, {"error": {"code": "invalid_price", "message": "send {\"price\": number}"}}, 422)
    store.ITEMS[name] = float(price)
    return _json(request, store.item(name))


@app.route("/digest", methods=["POST"])
def digest(request: Any) -> Any:
    d = threads.deferToThread(store.digest, request.content.read())
    d.addCallback(lambda hexdigest: _json(request, {"sha256": hexdigest}))
    return d


@app.route("/primes/<int:n>", methods=["GET"])
def primes(request: Any, n: int) -> Any:
    if n > 2_000_000:
        return _json(request, {"error": {"code": "too_large", "message": "n must be at most 2000000"}}, 422)
    d = get_pool().defer(store.count_primes, n, timeout=30)
    d.addCallback(lambda count: _json(request, {"n": n, "primes": count}))
    return d


class Shop(Service):
    """What [apps] legacy names: the Klein app in .resource, the restock and audit LoopingCalls as tasks."""

    def __init__(self) -> None:
        self.resource = app
        self.tasks = LoopingTasks("legacy")
        self.tasks.add("restock", task.LoopingCall(store.restock, "legacy"), every=0.2)
        self.tasks.add("audit", task.LoopingCall(store.audit), every=0.2)  # only legacy has it

    def startService(self) -> None:
        super().startService()
        self.tasks.start()

    def stopService(self) -> Any:
        super().stopService()
        return self.tasks.stop()

"""The shop's FastAPI rewrite: every route but GET / so far."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bridge import get_pool
from bridge.tasks import TaskManager, TaskRegistry

from . import store

registry = TaskRegistry()


@registry.task(every=0.2, owner="modern")
async def restock() -> None:
    store.restock("modern")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    async with TaskManager(registry, stack="modern", owners={"restock": "legacy"}) as tasks:
        yield {"tasks": tasks}


app = FastAPI(lifespan=lifespan)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


@app.get("/items/{name}")
async def get_item(name: str) -> Any:
    if name not in store.ITEMS:
        return _error(404, "not_found", f"no item {name}")
    return store.item(name)


@app.put("/items/{name}")
async def put_item(name: str, request: Request) -> Any:
    try:
        price = (await request.json())["price"]
        if isinstance(price, bool) or not isinstance(price, int | float):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return _error(422, "invalid_price", 'send {"price": number}')
    store.ITEMS[name] = float(price)
    return store.item(name)


@app.post("/digest")
async def digest(request: Request) -> Any:
    body = await request.body()
    return {"sha256": await get_pool().run_in_thread(lambda: hashlib.sha256(body).hexdigest())}


@app.get("/primes/{n}")
async def primes(n: int) -> Any:
    if n > 2_000_000:
        return _error(422, "too_large", "n must be at most 2000000")
    return {"n": n, "primes": await get_pool().run(store.count_primes, n, timeout=30)}

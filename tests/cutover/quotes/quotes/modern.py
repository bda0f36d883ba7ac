"""The FastAPI rewrite, with a switch the tests flip: ``POST /fault {"fault": "fail" | "slow" | "none"}``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .text import quote

app = FastAPI()
FAULT = {"fault": "none", "slow_s": 0.3}


@app.post("/fault")
async def set_fault(request: Request) -> Any:
    FAULT.update(await request.json())
    return FAULT


async def _answer(n: int) -> Any:
    if FAULT["fault"] == "fail":
        return JSONResponse({"error": {"code": "internal_error", "message": "made to fail"}}, status_code=500)
    if FAULT["fault"] == "slow":
        await asyncio.sleep(float(FAULT["slow_s"]))
    return quote(n)


@app.get("/quotes/{n}")
async def get_quote(n: int) -> Any:
    return await _answer(n)


@app.get("/manual/{n}")
async def get_manual(n: int) -> Any:
    return await _answer(n)

"""The legacy quotes service on Klein."""

from __future__ import annotations

import json
from typing import Any

from klein import Klein

from .text import quote

app = Klein()


def _json(request: Any, body: Any) -> bytes:
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body).encode()


@app.route("/quotes/<int:n>", methods=["GET"])
def get_quote(request: Any, n: int) -> bytes:
    return _json(request, quote(n))


@app.route("/manual/<int:n>", methods=["GET"])
def get_manual(request: Any, n: int) -> bytes:
    return _json(request, quote(n))

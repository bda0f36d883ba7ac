"""The reference service's HTTP contract, as data both stacks share: kinds, errors, job requests.

Each stack keeps its own handlers, since their answers are what parity
compares; what they must agree on is written here once:

* :data:`KINDS`, the work a job or a request may name;
* :class:`ApiError`, an error the client caused, and :func:`answer_for`,
  the table from any exception to the status, code, message and headers the
  contract gives it (the toolkit's own errors come from
  :func:`bridge.errors.answer_for`);
* :func:`job_error`, the ``error`` a failed job records;
* :func:`required_text`, :func:`check_kind` and :func:`job_from_json`, the
  validation of request bodies.

It imports neither Twisted nor asyncio, like the kernels beside it.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from bridge.errors import ErrorAnswer
from bridge.errors import answer_for as toolkit_answer

from .errors import InvalidInput

__all__ = ["INTERNAL", "KINDS", "ApiError", "answer_for", "check_kind", "job_error", "job_from_json", "required_text"]

KINDS = ("faces", "ocr", "audio", "domains")
#: The answer to anything the table does not know: a bug of ours, logged by the stack that met it.
INTERNAL = ErrorAnswer(500, "internal_error", "the request failed; see the service log")


class ApiError(Exception):
    """An error the client caused, with the status and code the contract gives it."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def answer_for(exc: BaseException) -> ErrorAnswer | None:
    """The contract's answer to ``exc``; None for an exception it does not know (answer :data:`INTERNAL`)."""
    if isinstance(exc, ApiError):
        return ErrorAnswer(exc.status, exc.code, exc.message, exc.headers)
    if isinstance(exc, InvalidInput):
        return ErrorAnswer(422, exc.code, exc.message)
    return toolkit_answer(exc)


def job_error(exc: BaseException) -> dict[str, str] | None:
    """The ``{"code", "message"}`` a job that failed with ``exc`` records; None when the table does not know it."""
    found = answer_for(exc)
    return None if found is None else found.body()["error"]


def required_text(body: dict[str, Any]) -> str:
    if "text" not in body:
        raise ApiError(422, "missing_field", "the JSON body needs a `text` field")
    if not isinstance(body["text"], str):
        raise ApiError(422, "invalid_parameter", "`text` must be a string")
    return str(body["text"])


def check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise ApiError(422, "invalid_parameter", f"`kind` must be one of {', '.join(KINDS)}, got {kind!r}")
    return str(kind)


def job_from_json(body: dict[str, Any]) -> tuple[str, str | bytes, dict[str, Any]]:
    """``(kind, input, params)`` of a JSON job request: the text of a ``domains`` job, the decoded file of the others."""
    if "kind" not in body:
        raise ApiError(422, "missing_field", "the JSON body needs a `kind` field")
    kind = check_kind(body["kind"])
    if kind == "domains":
        return kind, required_text(body), {}
    encoded = body.get("data_base64")
    if not isinstance(encoded, str):
        raise ApiError(422, "missing_field", f"a {kind} job needs `data_base64` (the file, base64-encoded)")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "invalid_parameter", "`data_base64` is not valid base64") from None
    params: dict[str, Any] = {}
    if kind == "audio":
        for field, name, default in (("hop_ms", "hop_ms", 10.0), ("threshold", "threshold_db", 6.0)):
            value = body.get(field, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ApiError(422, "invalid_parameter", f"`{field}` must be a number")
            params[name] = float(value)
    return kind, data, params

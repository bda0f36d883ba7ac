"""The shadow marker: how an app knows a request is a mirrored copy, so its writes stay apart.

In shadow mode the front door sends modern a copy of a request whose answer is
only compared. A copy that creates something (a job, an order) must not land
in the app's real data: a shadow job in the real table would run the work
twice, show up in listings, and burn an ``Idempotency-Key`` that the client's
real request later gets back as a replay.

The copy carries an ASGI scope extension, ``scope["extensions"]["cutover.shadow"]``,
read with :func:`shadow_of`. Apps keep shadow work apart by asking it:

    marker = shadow_of(request.scope)
    store = shadow_store if marker is not None else real_store
    if marker is not None and not marker.run:
        ...  # validate the request and answer, but do no work

:class:`bridge.jobs.ShadowJobs` does this for durable jobs (its own database
file, runner and idempotency keys, purged after a retention).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

__all__ = ["EXTENSION", "RUN", "VALIDATE", "WRITE_MODES", "ShadowMarker", "mark", "shadow_of"]

EXTENSION = "cutover.shadow"
RUN = "run"  # a mirrored write does its work, in the shadow namespace
VALIDATE = "validate"  # a mirrored write is checked and answered, and does no work
WRITE_MODES = (RUN, VALIDATE)


@dataclass(frozen=True)
class ShadowMarker:
    """What the front door says about a mirrored copy: its plan route, and whether writes run."""

    route: str
    write: str = RUN

    @property
    def run(self) -> bool:
        """Whether a write this copy makes should do its work (``False``: validate and answer only)."""
        return self.write == RUN

    def as_dict(self) -> dict[str, Any]:
        return {"route": self.route, "write": self.write}


def mark(scope: MutableMapping[str, Any], marker: ShadowMarker) -> MutableMapping[str, Any]:
    """A copy of ``scope`` carrying the marker (the original scope is left as it was)."""
    copy = dict(scope)
    copy["extensions"] = {**(scope.get("extensions") or {}), EXTENSION: marker.as_dict()}
    return copy


def shadow_of(scope: MutableMapping[str, Any] | Any) -> ShadowMarker | None:
    """The marker of a mirrored request (an ASGI scope, or anything with ``.scope``); None for real traffic."""
    scope = getattr(scope, "scope", scope)
    value = (scope.get("extensions") or {}).get(EXTENSION)
    if not isinstance(value, dict):
        return None
    write = value.get("write", RUN)
    return ShadowMarker(str(value.get("route", "")), write if write in WRITE_MODES else RUN)

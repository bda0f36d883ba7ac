"""Small twisted.web resources that more than one test module serves."""

from __future__ import annotations

from typing import Any

from twisted.web import resource, server


class Hang(resource.Resource):
    """Never answers; records how each request's notifyFinish fired."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.rendered = 0
        self.finished: list[Any] = []

    def render(self, request: server.Request) -> Any:
        self.rendered += 1
        request.notifyFinish().addBoth(self.finished.append)
        return server.NOT_DONE_YET

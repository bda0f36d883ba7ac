"""The HTTP API as a twisted.web resource tree, written the way a Twisted team writes it."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.python import log
from twisted.python.failure import Failure
from twisted.web import resource
from twisted.web.error import UnsupportedMethod
from twisted.web.server import NOT_DONE_YET, Request

from bridge import SharedPool
from workloads.contract import INTERNAL, KINDS, answer_for, check_kind, job_from_json, required_text

from .errors import ApiError, write_error, write_json
from .jobs import JobStore
from .settings import LegacySettings
from .uploads import AUDIO_TYPES, IMAGE_TYPES, media_type, query_float, read_json, read_upload
from .work import run_kind

UPLOADS = {"faces": (IMAGE_TYPES, "an image"), "ocr": (IMAGE_TYPES, "an image"), "audio": (AUDIO_TYPES, "a WAV file")}


def _error_for(failure: Failure) -> ApiError | None:
    """The contract's answer to a failure; None when the client is gone."""
    if failure.check(defer.CancelledError):
        return None
    found = answer_for(failure.value)
    if found is None:
        log.err(failure, "request failed")
        found = INTERNAL
    return ApiError(found.status, found.code, found.message, dict(found.headers))


def respond(request: Request, d: defer.Deferred[Any], status: int = 200) -> Any:
    """Write the Deferred's result as JSON, or its failure as the contract's error."""

    def ok(payload: Any) -> None:
        headers = {}
        if isinstance(payload, tuple):
            payload, headers = payload
        write_json(request, status, payload, headers)

    def failed(failure: Failure) -> None:
        error = _error_for(failure)
        if error is not None:
            write_error(request, error)

    d.addCallbacks(ok, failed)
    # A client that hangs up cancels its work: a queued call never runs, a running one stops (past the
    # pool's cancel_grace its worker is killed; a call that answers within it keeps its worker).
    request.notifyFinish().addErrback(lambda _: d.cancel())
    return NOT_DONE_YET


class ApiResource(resource.Resource):
    """Answers unknown children with 404 and unknown methods with 405, in the contract's JSON shape."""

    def getChild(self, path: bytes, request: Request) -> resource.Resource:
        return NotFound()

    def render_HEAD(self, request: Request) -> Any:
        """GET without the body where there is a GET, else 405 as on modern: twisted.web's own
        ``render_HEAD`` calls ``render_GET`` regardless, and on a POST-only resource that is a 500."""
        render_get = getattr(self, "render_GET", None)
        if render_get is None:
            methods = (b"GET", b"POST", b"PUT", b"PATCH", b"DELETE")
            raise UnsupportedMethod([m for m in methods if hasattr(self, "render_" + m.decode())])
        return render_get(request)

    def render(self, request: Request) -> Any:
        try:
            return super().render(request)
        except UnsupportedMethod as exc:
            allowed = ", ".join(sorted(m.decode() for m in exc.allowedMethods if m != b"HEAD"))
            if not allowed:  # an inner node of the tree, such as / or /v1
                return NotFound().render(request)
            method = request.method.decode("latin-1")
            write_error(
                request, ApiError(405, "method_not_allowed", f"{method} is not allowed here; use {allowed}", {"Allow": allowed})
            )
            return NOT_DONE_YET


class NotFound(ApiResource):
    def render(self, request: Request) -> Any:
        write_error(request, ApiError(404, "not_found", f"no such resource: {request.path.decode('latin-1')}"))
        return NOT_DONE_YET


class Status(ApiResource):
    def __init__(self, service: Any) -> None:
        super().__init__()
        self.service = service

    def render_GET(self, request: Request) -> Any:
        write_json(request, 200, self.service.status())
        return NOT_DONE_YET


class Upload(ApiResource):
    """POST a file of one kind; the kernel runs on the shared pool."""

    def __init__(self, kind: str, pool: SharedPool, settings: LegacySettings) -> None:
        super().__init__()
        self.kind, self.pool, self.settings = kind, pool, settings

    def render_POST(self, request: Request) -> Any:
        return respond(request, self.handle(request))

    @defer.inlineCallbacks
    def handle(self, request: Request) -> Any:
        accepted, what = UPLOADS[self.kind]
        params = audio_params(request) if self.kind == "audio" else {}
        data = yield read_upload(request, accepted, what)
        result = yield run_kind(self.pool, self.kind, data, params, self.settings)
        return result


def audio_params(request: Request) -> dict[str, float]:
    return {"hop_ms": query_float(request, "hop_ms", 10.0), "threshold_db": query_float(request, "threshold", 6.0)}


class Domains(ApiResource):
    def __init__(self, pool: SharedPool, settings: LegacySettings) -> None:
        super().__init__()
        self.pool, self.settings = pool, settings

    def render_POST(self, request: Request) -> Any:
        return respond(request, self.handle(request))

    @defer.inlineCallbacks
    def handle(self, request: Request) -> Any:
        text = required_text(read_json(request))
        result = yield run_kind(self.pool, "domains", text, {}, self.settings)
        return result


class Jobs(ApiResource):
    def __init__(self, store: JobStore) -> None:
        super().__init__()
        self.store = store

    def getChild(self, path: bytes, request: Request) -> resource.Resource:
        return Job(self.store, path.decode("utf-8", "replace"))

    def render_POST(self, request: Request) -> Any:
        return respond(request, self.handle(request), status=202)

    @defer.inlineCallbacks
    def handle(self, request: Request) -> Any:
        if media_type(request) == "application/json":
            kind, payload, params = job_from_json(read_json(request))
        else:
            kind = query_kind(request)
            if kind == "domains":
                raise ApiError(415, "unsupported_media_type", "submit domains jobs as application/json {kind, text}")
            params = audio_params(request) if kind == "audio" else {}
            accepted, what = UPLOADS[kind]
            payload = yield read_upload(request, accepted, what)
        job = self.store.submit(kind, payload, params)
        return job.as_json(), {"Location": f"/v1/jobs/{job.id}"}


def query_kind(request: Request) -> str:
    values = request.args.get(b"kind")
    if not values:
        raise ApiError(422, "missing_field", f"say what to run: ?kind= one of {', '.join(KINDS)}")
    return check_kind(values[0].decode("utf-8", "replace"))


class Job(ApiResource):
    def __init__(self, store: JobStore, job_id: str) -> None:
        super().__init__()
        self.store, self.job_id = store, job_id

    def _job(self) -> Any:
        job = self.store.get(self.job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no job {self.job_id!r}")
        return job

    def render_GET(self, request: Request) -> Any:
        return respond(request, defer.maybeDeferred(lambda: self._job().as_json()))

    def render_DELETE(self, request: Request) -> Any:
        def cancel() -> Any:
            job = self._job()
            if not self.store.cancel(job):
                raise ApiError(409, "job_finished", f"job {job.id} already {job.status}")
            return job.as_json()

        return respond(request, defer.maybeDeferred(cancel))


def build_tree(service: Any) -> resource.Resource:
    """/status, /v1/faces, /v1/ocr, /v1/audio/analyze, /v1/domains, /v1/jobs[/<id>]."""
    pool, settings = service.pool, service.settings
    root = ApiResource()
    v1 = ApiResource()
    audio = ApiResource()
    root.putChild(b"status", Status(service))
    root.putChild(b"v1", v1)
    v1.putChild(b"faces", Upload("faces", pool, settings))
    v1.putChild(b"ocr", Upload("ocr", pool, settings))
    v1.putChild(b"audio", audio)
    audio.putChild(b"analyze", Upload("audio", pool, settings))
    v1.putChild(b"domains", Domains(pool, settings))
    v1.putChild(b"jobs", Jobs(service.jobs))
    return root


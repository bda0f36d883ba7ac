"""The two stacks, found by import strings as uvicorn finds an app.

``[apps] legacy = "pkg.mod:attr"`` names any of:

* a ``twisted.web.server.Site``;
* an ``IResource`` (a resource tree), served through a ``Site`` made here;
* a ``klein.Klein`` app (its URL map also tells the host which routes legacy has);
* an object with a ``site`` or ``resource`` attribute holding one of those (a
  service class); if it provides Twisted's ``IService`` the host calls
  ``startService()`` after loading it and ``stopService()`` at shutdown;
* a twistd ``Application`` (what a ``.tac`` file builds) or any ``IService``
  tree holding one twisted.web listener (``strports.service(...)``,
  ``internet.TCPServer``, ``SSLServer``, ``UNIXServer``): the host serves that
  listener's ``Site`` on its front door, leaves the listener itself out (it
  would bind the old port), and starts every other service of the tree (its
  ``TimerService`` services, its other protocols) as ``twistd`` would;
* a callable returning one of those, called with the shared pool when it takes
  an argument, awaited when it returns a Deferred or a coroutine.

``[apps] modern`` names an ASGI app (FastAPI, Starlette, a bare
``async def app(scope, receive, send)``) or a callable returning one (called
with the pool when it takes an argument). Its lifespan is entered as uvicorn
would enter it, and the state it yields is given to each request.

The plan's folder (or ``[apps] app_dir``, or ``--app-dir``) goes first on
``sys.path`` and on ``PYTHONPATH``, so the imports resolve, and pool workers
started afterwards import the same code.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred

from ..asgi import Message, Receive, Scope, Send
from ..deferreds import as_future
from ..errors import AppLoadError

__all__ = ["LegacyApp", "ModernApp", "add_app_dir", "import_from_string", "load_legacy", "load_modern"]

log = logging.getLogger(__name__)
_STARLETTE_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:[^}]*)?\}")
_WERKZEUG_PARAM = re.compile(r"<(?:([A-Za-z_][A-Za-z0-9_]*)(?:\([^)]*\))?:)?([A-Za-z_][A-Za-z0-9_]*)>")
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def add_app_dir(folder: str | os.PathLike[str]) -> Path:
    """Put ``folder`` first on ``sys.path`` and ``PYTHONPATH`` (for worker processes); returns it, resolved."""
    path = Path(folder).resolve()
    if not path.is_dir():
        raise AppLoadError(f"app dir {path} is not a folder")
    entry = str(path)
    if entry in sys.path:
        sys.path.remove(entry)
    sys.path.insert(0, entry)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != entry]
    os.environ["PYTHONPATH"] = os.pathsep.join([entry, *parts])
    importlib.invalidate_caches()
    return path


def import_from_string(target: str, *, what: str = "app") -> Any:
    """``"pkg.mod:attr.sub"`` -> the object; :class:`AppLoadError` with one line otherwise."""
    module_name, sep, attrs = target.partition(":")
    if not sep or not module_name or not attrs:
        raise AppLoadError(f'{what} {target!r}: an import string is "package.module:attribute"')
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):
            raise AppLoadError(
                f"{what} {target!r}: no module named {exc.name!r} (is the app's folder on the path? see --app-dir)"
            ) from exc
        raise AppLoadError(f"{what} {target!r}: importing {module_name} failed: {_one_line(exc)}") from exc
    except Exception as exc:
        raise AppLoadError(f"{what} {target!r}: importing {module_name} failed: {_one_line(exc)}") from exc
    value: Any = module
    for attr in attrs.split("."):
        try:
            value = getattr(value, attr)
        except AttributeError:
            raise AppLoadError(f"{what} {target!r}: module {module_name} has no attribute {attrs!r}") from None
    return value


def _one_line(exc: BaseException) -> str:
    where = ""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        where = f" ({tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}{where}"


def _takes_an_argument(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` accepts one positional argument (the pool); False if it must be called bare."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    positional = [
        p for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return bool(positional)


async def _call_factory(factory: Callable[..., Any], pool: Any, what: str) -> Any:
    try:
        made = factory(pool) if _takes_an_argument(factory) else factory()
        if isinstance(made, Deferred):
            made = await as_future(made)
        elif inspect.isawaitable(made):
            made = await made
    except AppLoadError:
        raise
    except Exception as exc:
        raise AppLoadError(f"{what}: the factory {_name(factory)} raised {_one_line(exc)}") from exc
    return made


def _name(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__name__


# ----------------------------------------------------------------------------- legacy


@dataclass
class LegacyApp:
    """The legacy stack as the host serves it."""

    #: What the import string (or its factory) gave: the team's own object.
    obj: Any
    site: Any
    #: Routes legacy declares (from Klein's URL map); None for a resource tree, which cannot be listed.
    routes: list[tuple[str, str]] | None = None
    service: Any = None

    def start(self) -> None:
        if self.service is not None and not getattr(self.service, "running", False):
            self.service.startService()

    async def stop(self) -> None:
        if self.service is not None and getattr(self.service, "running", True):
            result = self.service.stopService()
            if isinstance(result, Deferred):
                await as_future(result)


def _klein_type() -> type | None:
    try:
        from klein import Klein
    except ImportError:
        return None
    return Klein


def _as_site(obj: Any) -> tuple[Any, list[tuple[str, str]] | None] | None:
    """(Site, Klein routes) if ``obj`` is something legacy can serve, else None."""
    from twisted.web.resource import IResource
    from twisted.web.server import Site

    if isinstance(obj, Site):
        return obj, None
    klein = _klein_type()
    if klein is not None and isinstance(obj, klein):
        return Site(obj.resource()), klein_routes(obj)
    if IResource.providedBy(obj):
        return Site(obj), None
    return None


async def load_legacy(target: str, pool: Any) -> LegacyApp:
    """Load ``[apps] legacy``; see the module docstring for what it may name."""
    what = f"[apps] legacy = {target!r}"
    obj = import_from_string(target, what="[apps] legacy")
    found = _as_site(obj)
    if found is None and _holder(obj) is None and callable(obj):
        obj = await _call_factory(obj, pool, what)
        found = _as_site(obj)
    service = None
    if found is None:
        inner = _holder(obj)
        if inner is not None:
            found = _as_site(inner)
            service = obj if _is_service(obj) else None
    if found is None and (tree := _service_tree(obj)) is not None and (taken := _take_web_listener(tree, what)):
        site, listener = taken
        found, service = (site, None), (None if listener is tree else tree)
    if found is None:
        raise AppLoadError(
            f"{what}: {type(obj).__name__} is not a twisted.web Site, an IResource, a Klein app, "
            "an object with a site or resource attribute, a twistd Application with a twisted.web "
            "listener, or a callable returning one"
        )
    site, routes = found
    return LegacyApp(obj, site, routes, service)


def _holder(obj: Any) -> Any:
    """The Site, resource or Klein app an object holds in ``site`` or ``resource``, if any."""
    for attr in ("site", "resource"):
        inner = getattr(obj, attr, None)
        if inner is not None and _as_site(inner) is not None:
            return inner
    return None


def _service_tree(obj: Any) -> Any:
    """The ``IService`` of ``obj``: itself, or what a twistd ``Application`` adapts to; None if neither."""
    from twisted.application.service import IService

    return IService(obj, None)


def _listener_site(service: Any) -> Any:
    """The ``Site`` a listening service would serve: an endpoint service's factory, a ``TCPServer``'s argument."""
    from twisted.web.server import Site

    factory = getattr(service, "factory", None)  # strports.service, StreamServerEndpointService
    if factory is None and getattr(service, "method", None) in ("TCP", "SSL", "UNIX"):
        args = getattr(service, "args", ())  # internet.TCPServer(port, factory, ...) and its kin
        factory = args[1] if len(args) > 1 else None
    return factory if isinstance(factory, Site) else None


def _take_web_listener(tree: Any, what: str) -> tuple[Any, Any] | None:
    """(Site, listener): the tree's one twisted.web listener, taken out of the tree so it never binds its port."""
    from twisted.application.service import IServiceCollection

    listeners: list[tuple[Any, Any]] = []

    def walk(service: Any) -> None:
        site = _listener_site(service)
        if site is not None:
            listeners.append((service, site))
            return
        children = IServiceCollection(service, None)
        for child in list(children) if children is not None else ():
            walk(child)

    walk(tree)
    if not listeners:
        return None
    if len(listeners) > 1:
        names = ", ".join(getattr(s, "name", None) or type(s).__name__ for s, _ in listeners)
        raise AppLoadError(f"{what}: the service tree has {len(listeners)} twisted.web listeners ({names}); "
                           "name the Site the front door serves instead")
    listener, site = listeners[0]
    if listener.parent is not None:
        listener.disownServiceParent()
    log.info("serving the Site of %s on the front door; its own listener is not started",
             getattr(listener, "name", None) or type(listener).__name__)
    return site, listener


def _is_service(obj: Any) -> bool:
    from twisted.application.service import IService

    return IService.providedBy(obj)


def klein_routes(app: Any) -> list[tuple[str, str]]:
    """``("GET", "/items/{name}")`` for each rule of a Klein app's URL map.

    ``<name>`` and ``<converter:name>`` become ``{name}``; rules that take a
    whole sub-path (``path`` converters, ``branch=True``) are left out, since a
    plan placeholder takes one segment. A rule with no methods answers GET.
    """
    routes: set[tuple[str, str]] = set()
    for rule in app.url_map.iter_rules():
        text = str(rule.rule)
        if any(m.group(1) == "path" for m in _WERKZEUG_PARAM.finditer(text)):
            continue
        template = _WERKZEUG_PARAM.sub(lambda m: "{" + m.group(2) + "}", text)
        methods = {m.upper() for m in (rule.methods or {"GET"})} - {"HEAD"} or {"HEAD"}
        routes.update((method, template) for method in methods if method in _METHODS)
    return sorted(routes)


# ----------------------------------------------------------------------------- modern


@dataclass
class ModernApp:
    """The modern ASGI app, with the lifespan the host runs for it."""

    obj: Any
    app: Callable[[Scope, Receive, Send], Awaitable[None]]
    routes: list[tuple[str, str]] | None = None
    state: dict[str, Any] = field(default_factory=dict)
    _lifespan: _Lifespan | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": dict(self.state)}  # as uvicorn hands the lifespan state to requests
        await self.app(scope, receive, send)

    async def start(self) -> None:
        self._lifespan = _Lifespan(self.app, self.state)
        await self._lifespan.startup()

    async def stop(self) -> None:
        if self._lifespan is not None:
            lifespan, self._lifespan = self._lifespan, None
            await lifespan.shutdown()


def _is_asgi(obj: Any) -> bool:
    from starlette.applications import Starlette

    if isinstance(obj, Starlette):
        return True
    call = obj if inspect.isfunction(obj) or inspect.ismethod(obj) else type(obj).__dict__.get("__call__")
    if call is None:  # an instance: look its __call__ up on the class, as Python calls it
        call = next((c.__dict__["__call__"] for c in type(obj).__mro__ if "__call__" in c.__dict__), None)
    if call is None or not inspect.iscoroutinefunction(call):
        return False
    try:
        parameters = list(inspect.signature(obj).parameters.values())
    except (TypeError, ValueError):
        return False
    return len(parameters) == 3 or any(p.kind is p.VAR_POSITIONAL for p in parameters)


async def load_modern(target: str, pool: Any) -> ModernApp:
    """Load ``[apps] modern``: an ASGI app, or a callable returning one."""
    what = f"[apps] modern = {target!r}"
    obj = import_from_string(target, what="[apps] modern")
    if not _is_asgi(obj):
        if not callable(obj):
            raise AppLoadError(f"{what}: {type(obj).__name__} is not an ASGI app or a callable returning one")
        obj = await _call_factory(obj, pool, what)
        if not _is_asgi(obj):
            raise AppLoadError(f"{what}: the factory returned {type(obj).__name__}, which is not an ASGI app")
    return ModernApp(obj, obj, asgi_routes(obj))


def asgi_routes(app: Any) -> list[tuple[str, str]] | None:
    """Routes a Starlette or FastAPI app declares (mounts included); None for an app that cannot say.

    A FastAPI app is asked for its OpenAPI schema, the public record of its
    routes whatever the router does inside; Starlette routes and mounts are
    walked. Converters are dropped (``{id:int}`` -> ``{id}``); HEAD, added by
    Starlette to every GET, is left out; routes hidden from the schema
    (FastAPI's /docs) are too.
    """
    routes = getattr(app, "routes", None)
    openapi = getattr(app, "openapi", None)
    if routes is None and not callable(openapi):
        return None
    found: set[tuple[str, str]] = set()
    if callable(openapi):
        for path, operations in (openapi().get("paths") or {}).items():
            template = _STARLETTE_PARAM.sub(lambda m: "{" + m.group(1) + "}", path)
            found.update((m.upper(), template) for m in operations if m.upper() in _METHODS and m.upper() != "HEAD")
    _walk_routes(routes or (), "", found)
    return sorted(found)


def _walk_routes(routes: Iterable[Any], prefix: str, found: set[tuple[str, str]]) -> None:
    from starlette.routing import Mount

    for route in routes:
        path = getattr(route, "path", None)
        if path is None:
            continue
        if isinstance(route, Mount):
            _walk_routes(getattr(route, "routes", None) or (), prefix + path, found)
            continue
        if not getattr(route, "include_in_schema", True):
            continue
        methods = getattr(route, "methods", None)
        if not methods:
            continue
        template = _STARLETTE_PARAM.sub(lambda m: "{" + m.group(1) + "}", prefix + path)
        found.update((m, template) for m in methods if m != "HEAD" and m in _METHODS)


class _Lifespan:
    """Runs an ASGI app's lifespan protocol the way uvicorn's ``lifespan="auto"`` does.

    An app that raises before saying anything does not support lifespan: it is
    served without one (as uvicorn does). ``startup.failed``, or an app that
    raises after starting, is an error.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.outbox: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.said_anything = False

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}

        async def send(message: Message) -> None:
            self.said_anything = True
            await self.outbox.put(message)

        await self.app(scope, self.inbox.get, send)

    async def _next(self) -> Message | None:
        """The app's next message, or None if it returned; its exception if it raised."""
        assert self.task is not None
        getter = asyncio.ensure_future(self.outbox.get())
        done, _ = await asyncio.wait({getter, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        self.task.result()  # raises what the app raised
        return None

    async def startup(self) -> None:
        self.task = asyncio.ensure_future(self._run())
        await self.inbox.put({"type": "lifespan.startup"})
        try:
            message = await self._next()
        except Exception as exc:
            if not self.said_anything:
                log.info("the modern app does not support the ASGI lifespan protocol (%s); serving it without", exc)
                self.task = None
                return
            raise AppLoadError(f"modern's lifespan startup raised {_one_line(exc)}") from exc
        if message is None:
            self.task = None
            return
        if message["type"] == "lifespan.startup.failed":
            # Starlette sends the whole traceback; its last line is the exception itself.
            lines = [line for line in str(message.get("message") or "").splitlines() if line.strip()]
            await asyncio.gather(self.task, return_exceptions=True)  # it re-raises; that is the same news
            self.task = None
            raise AppLoadError(f"modern's lifespan startup failed: {lines[-1].strip() if lines else 'no message'}")
        if message["type"] != "lifespan.startup.complete":
            raise AppLoadError(f"modern's lifespan sent {message['type']!r} instead of lifespan.startup.complete")

    async def shutdown(self) -> None:
        if self.task is None:
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        message = await self._next()
        if message is not None and message["type"] == "lifespan.shutdown.failed":
            raise RuntimeError(f"modern's lifespan shutdown failed: {message.get('message') or 'no message'}")
        if not self.task.done():  # it said shutdown.complete; nothing more is wanted from it
            self.task.cancel()

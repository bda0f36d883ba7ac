"""The cutover plan: which stack answers each route, and which stack runs each background task.

A plan is a small TOML file (``cutover.toml`` at the repository root is the
default, and documents the format)::

    [apps]
    legacy = "shop.legacy:app"     # a twisted.web Site, IResource or Klein app (bridge.host.apps)
    modern = "shop.api:app"        # an ASGI app

    [routes]
    "GET /status" = "shadow"
    "POST /search" = { mode = "canary", percent = 10 }
    "POST /orders" = { mode = "shadow", shadow_safe = false, ignore_values = ["order_id"] }
    "GET /orders/{order_id}" = "modern"

    [canary]
    sticky_header = "X-Cutover-Key"

    [tasks]
    data_sync = "legacy"

A route moves through four modes, in this order:

* ``legacy``: legacy answers; modern never sees the request.
* ``shadow``: legacy answers; modern gets a copy whose answer is only compared.
  Mirroring a request with side effects would do the work twice (two jobs for
  one ``POST /orders``), so a route is mirrored only if it is ``shadow_safe``:
  by default GET, HEAD and OPTIONS are, other methods are not.
* ``canary``: ``percent`` of requests (0 to 100) go to modern. The key that
  keeps a client on one side is the ``[canary] sticky_header`` if the request
  carries it, else the client address.
* ``modern``: modern answers.

A path template matches a path segment by segment: ``{name}`` takes exactly one
non-empty segment, anything else must be equal. There is no trailing-slash or
case leniency: the plan routes exactly what it names. When several routes match,
the most specific wins (exact segments beat placeholders, leftmost first), so
``GET /orders/stats`` beats ``GET /orders/{order_id}``.

A plan may name routes that only legacy serves (the port's to-do list); the
host checks every route against what the apps declare (modern's router, a
Klein app's URL map): a route neither declares is a warning, and a route in a
mode that sends requests to modern (shadow, canary, modern) must be one modern
serves, or the plan is refused.

How shadow compares a route's two answers is in the plan too: ``[diff]`` holds
the defaults (``ignore``, ``ignore_values``, ``skip``, ``float_tolerance``,
``headers``, ``header_rules``; see :class:`bridge.parity.DiffRules`) and a
route's table may add its own.
How often it compares is ``sample``: the share of a shadowed route's requests
(0 to 1) whose copy modern gets, so that a hot route's mirrored work stays
bounded (``sample = 0.1``) while a rare one is mirrored every time. Its default
is ``[diff] sample`` (1 when unset); a route's own ``sample`` wins.

Shadow on stateful routes (:mod:`bridge.host.mirror`): a route that creates
a resource says where its id is in the answer (``id_from = "job_id"``, a dotted
JSON path), and a route that names one says which path parameter holds it
(``id_param = "job_id"``); the host maps legacy's id to modern's and rewrites
the mirrored copies. ``shadow_write = "run" | "validate"``: whether a mirrored
write does its work (in modern's shadow namespace, :mod:`bridge.shadowing`) or
is only checked and answered. ``aa_sample`` (0 to 1, default ``[shadow]
aa_sample``) is the share of mirrored requests legacy also answers a second
time, to learn the route's noise; ``settle`` (seconds, default ``[shadow]
settle``) lets a GET whose answers differ be asked again until both sides agree
(a job that finished on one side first). ``"*" = { mode = "shadow" }`` is the
catch-all: requests no route matches (404s, 405s) are shadowed too.

Plans are immutable. Changes (:meth:`Plan.with_mode`, :meth:`Plan.with_owner`)
return a new plan; the host swaps its reference, which is atomic on one loop.
Every plan is validated when it is built; a plan read from a file fails with a
:class:`PlanError` naming the file and line.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property
from os import PathLike
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import PlanError, where_in
from ..parity.diff import HEADER_RULE_NAMES, DiffRules
from ..shadowing import RUN, WRITE_MODES

__all__ = [
    "CATCH_ALL", "GATE_KEYS", "GATE_STEPS", "METHODS", "MODES", "Mode", "NEEDS_MODERN", "OWNERS", "SAFE_METHODS", "Plan",
    "Route", "check_owner_declares",
]

class Mode(StrEnum):
    """Who answers a route, in the order a route moves through them (compare it with plain strings, too)."""

    LEGACY = "legacy"  #: legacy answers; modern never sees the request
    SHADOW = "shadow"  #: legacy answers; modern gets a copy whose answer is only compared
    CANARY = "canary"  #: a sticky ``percent`` of requests go to modern
    MODERN = "modern"  #: modern answers

    def __repr__(self) -> str:
        return repr(self.value)


MODES = tuple(Mode)  # the order a route moves in
OWNERS = ("legacy", "modern")
METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # mirrored in shadow mode unless told otherwise
CANARY_STEPS = (10.0, 50.0)  # where "next mode" takes a canary

_TABLES = ("routes", "canary", "tasks", "apps", "diff", "gates", "shadow")
_APP_KEYS = ("legacy", "modern", "pool_initializer", "app_dir")
_DIFF_KEYS = ("ignore", "ignore_values", "skip", "float_tolerance", "headers", "header_rules")
_SHADOW_KEYS = ("aa_sample", "settle")
_ID_KEYS = ("id_from", "id_param", "shadow_write")
_ROUTE_KEYS = ("mode", "percent", "shadow_safe", *_ID_KEYS, *_SHADOW_KEYS, *_DIFF_KEYS, "auto", "gates")
#: Promotion gates (bridge.host.gates): thresholds a route's evidence must meet before it moves on.
GATE_KEYS = ("min_comparisons", "max_mismatch", "max_p99_ratio", "max_error_increase", "min_time", "rollback_after")
GATE_STEPS = ("shadow", "canary", "modern")  # the modes whose evidence is judged (modern: for rollback only)
_GATES_PLAN_KEYS = ("interval",)  # [gates] keys that are not thresholds
#: The shadow sample rate: a route key, with its default under [diff] (not a diff rule: DiffRules never sees it).
SAMPLE_KEY = "sample"
CATCH_ALL = "*"  # the [routes] key of the catch-all entry: requests no route matches
DEFAULT_AA_SAMPLE = 0.1
MAX_SETTLE = 60.0
_JSON_KEY_PATH = re.compile(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*")
NEEDS_MODERN = frozenset({"shadow", "canary", "modern"})  # modes in which modern sees the request
_CANARY_KEYS = ("sticky_header",)
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_IMPORT_STRING = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

Shape = tuple[str | None, ...]  # a template's segments, None for a placeholder


class _FieldError(PlanError):
    """A route field is invalid; ``field`` lets the parser point at that field's own line."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


# --- routes -----------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One route's place in the cutover.

    ``percent`` is the share of requests modern answers in ``canary`` mode and
    must be 0 in every other mode. ``shadow_safe`` says whether shadow mode may
    send modern a copy; None (the default) means "yes for GET, HEAD and OPTIONS
    only", and is replaced by that bool on construction.
    """

    method: str
    template: str
    mode: Mode | str = Mode.LEGACY  # a string is taken and checked: the route then holds its Mode
    percent: float = 0.0
    shadow_safe: bool | None = None
    #: This route's shadow diff rules, over the plan's ``[diff]`` defaults (keys of :data:`_DIFF_KEYS`).
    diff: Mapping[str, Any] = field(default_factory=dict)
    #: Whether the host moves this route along its steps by itself as the gates pass, and rolls it back.
    auto: bool = False
    #: This route's gate thresholds over ``[gates]`` (keys of :data:`GATE_KEYS`, or a step's table of them).
    gates: Mapping[str, Any] = field(default_factory=dict)
    #: The share of requests (0 to 1) mirrored in shadow mode; None: the plan's default (:meth:`Plan.sample_for`).
    sample: float | None = None

    #: Where the id of the resource this route creates is, in its JSON answer ("job_id"); None if it creates none.
    id_from: str | None = None
    #: The path parameter naming a resource another route created ("job_id"); None if none.
    id_param: str | None = None
    #: Whether a mirrored write does its work in modern's shadow namespace ("run") or is only checked ("validate").
    shadow_write: str = RUN
    #: The share of mirrored requests also sent to legacy a second time (A/A); None: the plan's ``[shadow]``.
    aa_sample: float | None = None
    #: Seconds a differing GET may be asked again until both sides agree; None: the plan's ``[shadow]``.
    settle: float | None = None

    def __post_init__(self) -> None:
        if self.catch_all:
            if self.template != CATCH_ALL:
                raise PlanError(f'the catch-all route is written "{CATCH_ALL}", got {_show(self.key)}')
            if self.mode not in ("legacy", "shadow"):
                raise _FieldError("mode", f"the catch-all route can be legacy or shadow, not {_show(self.mode)}")
        else:
            _check_method(self.method)
        if self.sample is not None:
            object.__setattr__(self, "sample", _check_sample(self.sample))
        object.__setattr__(self, "diff", MappingProxyType(_check_diff(dict(self.diff), f"route {_show(self.key)}")))
        try:
            gates = _check_gates(dict(self.gates), f"route {_show(self.key)}")
        except _FieldError as exc:  # point at the route's gates table
            raise _FieldError("gates", exc.reason) from None
        object.__setattr__(self, "gates", MappingProxyType(gates))
        if not isinstance(self.auto, bool):
            raise _FieldError("auto", f"auto must be true or false, got {_show(self.auto)}")
        self.shape  # noqa: B018 - validates the template
        if self.mode not in MODES:
            raise _FieldError("mode", f"unknown mode {_show(self.mode)} (one of {', '.join(MODES)})")
        object.__setattr__(self, "mode", Mode(self.mode))
        self._check_shadow_keys()
        object.__setattr__(self, "percent", _check_percent(self.percent, self.mode))
        if self.shadow_safe is None:
            object.__setattr__(self, "shadow_safe", self.method in SAFE_METHODS)
        elif not isinstance(self.shadow_safe, bool):
            raise _FieldError("shadow_safe", f"shadow_safe must be true or false, got {_show(self.shadow_safe)}")

    def _check_shadow_keys(self) -> None:
        if self.id_from is not None and (not isinstance(self.id_from, str) or not _JSON_KEY_PATH.fullmatch(self.id_from)):
            raise _FieldError("id_from", f'id_from must be a dotted JSON path such as "job_id", got {_show(self.id_from)}')
        if self.id_param is not None:
            if not isinstance(self.id_param, str) or f"{{{self.id_param}}}" not in self.template.split("/"):
                raise _FieldError("id_param", f"id_param must name a placeholder of {_show(self.template)}, "
                                  f"got {_show(self.id_param)}")
        if self.shadow_write not in WRITE_MODES:
            raise _FieldError("shadow_write", f"shadow_write must be {' or '.join(map(_show, WRITE_MODES))}, "
                              f"got {_show(self.shadow_write)}")
        if self.aa_sample is not None:
            object.__setattr__(self, "aa_sample", _check_share(self.aa_sample, "aa_sample"))
        if self.settle is not None:
            object.__setattr__(self, "settle", _check_settle(self.settle, "settle"))

    @property
    def catch_all(self) -> bool:
        """Whether this is the ``"*"`` entry, which takes the requests no route matches."""
        return self.method == CATCH_ALL

    @property
    def key(self) -> str:
        """``"GET /orders/{order_id}"``, as written in the plan (``"*"`` for the catch-all)."""
        return CATCH_ALL if self.catch_all else f"{self.method} {self.template}"

    @cached_property
    def shape(self) -> Shape:
        """The template's segments, None for each placeholder: two routes with one shape are one route."""
        return () if self.catch_all else _shape(self.template)

    @property
    def param_index(self) -> int | None:
        """The path segment (0-based, after the leading "/") that holds ``id_param``; None without one."""
        if self.id_param is None:
            return None
        return self.template.split("/")[1:].index(f"{{{self.id_param}}}")

    @property
    def mirrored(self) -> bool:
        """Whether modern gets a copy of each request: shadow mode on a shadow-safe route."""
        return self.mode == "shadow" and bool(self.shadow_safe)

    def matches(self, method: str, path: str) -> bool:
        """Whether this route takes ``method`` on ``path`` (the URL path, without the query string)."""
        if method != self.method or not path.startswith("/") or self.catch_all:
            return False
        segments = path.split("/")[1:]
        if len(segments) != len(self.shape):
            return False
        return all(s == want if want is not None else s != "" for s, want in zip(segments, self.shape, strict=True))

    def next_mode(self) -> tuple[str, float]:
        """The dashboard's next step, as ``(mode, percent)`` for :meth:`Plan.with_mode`.

        legacy -> shadow -> canary 10 -> canary 50 -> modern, which stays modern; a
        canary below 10 goes to 10, below 50 to 50, at 50 or more to modern.
        """
        if self.mode == Mode.LEGACY:
            return Mode.SHADOW, 0.0
        if self.mode == Mode.SHADOW:
            return Mode.CANARY, CANARY_STEPS[0]
        if self.mode == Mode.CANARY:
            step = next((p for p in CANARY_STEPS if self.percent < p), None)
            return (Mode.CANARY, step) if step is not None else (Mode.MODERN, 0.0)
        return Mode.MODERN, 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.key,
            "method": self.method,
            "template": self.template,
            "mode": self.mode,
            "percent": self.percent,
            "shadow_safe": self.shadow_safe,
            "diff": dict(self.diff),
            "auto": self.auto,
            "gates": _plain(self.gates),
            **({SAMPLE_KEY: self.sample} if self.sample is not None else {}),
            "id_from": self.id_from,
            "id_param": self.id_param,
            "shadow_write": self.shadow_write,
            "aa_sample": self.aa_sample,
            "settle": self.settle,
        }


def _plain(value: Any) -> Any:
    """Nested mappings as dicts, for JSON."""
    return {k: _plain(v) for k, v in value.items()} if isinstance(value, Mapping) else value


def _check_gates(gates: dict[str, Any], where: str, *, plan_level: bool = False) -> dict[str, Any]:
    """Validate gate thresholds: ``GATE_KEYS`` at the top, and a table of them per step of ``GATE_STEPS``."""
    allowed = (*GATE_KEYS, *GATE_STEPS, *(_GATES_PLAN_KEYS if plan_level else ()))
    for name, value in gates.items():
        if name in GATE_STEPS:
            if not isinstance(value, Mapping):
                raise _FieldError(name, f"gates.{name} in {where} must be a table of thresholds, got {_show(value)}")
            for key, threshold in value.items():
                if key not in GATE_KEYS:
                    raise _FieldError(name, f"unknown gate {_show(key)} in {where} {name} (one of {', '.join(GATE_KEYS)})")
                _check_threshold(key, threshold, name)
            gates[name] = MappingProxyType({k: float(v) for k, v in value.items()})
        elif name in allowed:
            _check_threshold(name, value, name)
            gates[name] = float(value)
        else:
            raise _FieldError(name, f"unknown gate {_show(name)} in {where} (one of {', '.join(allowed)})")
    return gates


def _check_threshold(name: str, value: object, field_name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0 or value == float("inf"):
        raise _FieldError(field_name, f"gate {name} must be a number >= 0, got {_show(value)}")
    if name == "max_mismatch" and value > 1:
        raise _FieldError(field_name, f"gate max_mismatch is a rate from 0 to 1, got {_show(value)}")
    if name == "interval" and not value > 0:
        raise _FieldError(field_name, f"[gates] interval must be more than 0 seconds, got {_show(value)}")


def _check_sample(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:  # also refuses nan
        raise _FieldError(SAMPLE_KEY, f"sample must be a number from 0 to 1 (the share of requests mirrored), "
                                      f"got {_show(value)}")
    return float(value)


def _check_share(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise _FieldError(name, f"{name} must be a number from 0 to 1 (a share of requests), got {_show(value)}")
    return float(value)


def _check_settle(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_SETTLE:
        raise _FieldError(name, f"{name} must be a number of seconds from 0 to {MAX_SETTLE:g}, got {_show(value)}")
    return float(value)


def _check_shadow_table(values: dict[str, Any]) -> dict[str, float]:
    """``[shadow]``: defaults for every mirrored route."""
    checked: dict[str, float] = {}
    for name, value in values.items():
        if name not in _SHADOW_KEYS:
            raise _FieldError(name, f"unknown key {_show(name)} in [shadow] (one of {', '.join(_SHADOW_KEYS)})")
        checked[name] = _check_share(value, name) if name == "aa_sample" else _check_settle(value, name)
    return checked


def _check_diff(rules: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate diff rule keys and values; ``where`` names the table in messages."""
    for name, value in rules.items():
        if name not in _DIFF_KEYS:
            raise _FieldError(name, f"unknown diff rule {_show(name)} in {where} (one of {', '.join(_DIFF_KEYS)})")
        if name == "float_tolerance":
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise _FieldError(name, f"float_tolerance must be a number >= 0, got {_show(value)}")
            rules[name] = float(value)
            continue
        if name == "header_rules":
            if not isinstance(value, Mapping):
                raise _FieldError(name, f'header_rules must be a table such as {{ allow = "set" }}, got {_show(value)}')
            for header, rule in value.items():
                _check_header_name(header, name)
                if rule not in HEADER_RULE_NAMES:
                    raise _FieldError(name, f"header rule {_show(rule)} for {_show(header)} in {where}: "
                                      f"one of {', '.join(HEADER_RULE_NAMES)}")
            rules[name] = MappingProxyType(dict(value))
            continue
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
            raise _FieldError(name, f"{name} must be an array of strings, got {_show(value)}")
        try:
            if name == "headers":
                for header in value:
                    _check_header_name(header, name)
            else:
                DiffRules(ignore=tuple(value))  # parses every path
        except (TypeError, ValueError) as exc:
            raise _FieldError(name, f"{name} in {where}: {exc}") from None
        rules[name] = tuple(value)
    return rules


def _check_header_name(value: str, name: str) -> None:
    if not _HEADER_NAME.fullmatch(value):
        raise _FieldError(name, f"{_show(value)} is not a header name")


def _check_method(method: object) -> None:
    if method not in METHODS:
        raise PlanError(f"unknown method {_show(method)} (one of {', '.join(METHODS)})")


def _check_percent(percent: object, mode: str) -> float:
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        raise _FieldError("percent", f"canary percent must be a number, got {_show(percent)}")
    if mode != "canary":
        if percent != 0:
            raise _FieldError("percent", f"percent applies to canary mode only, not to {mode} (got {percent})")
        return 0.0
    if not 0 <= percent <= 100:  # also refuses nan
        raise _FieldError("percent", f"canary percent must be between 0 and 100, got {percent}")
    return float(percent)


def _shape(template: object) -> Shape:
    if not isinstance(template, str) or not template.startswith("/"):
        raise PlanError(f'path template must start with "/", got {_show(template)}')
    segments = template.split("/")[1:]
    shape: list[str | None] = []
    for i, segment in enumerate(segments):
        if segment == "" and i < len(segments) - 1:  # only a trailing slash may leave a segment empty
            raise PlanError(f'path template has an empty segment ("//"): {_show(template)}')
        if _PLACEHOLDER.fullmatch(segment):
            shape.append(None)
        elif "{" in segment or "}" in segment:
            raise PlanError(f"a placeholder must be a whole segment such as {{job_id}}, got {_show(segment)}")
        else:
            shape.append(segment)
    return tuple(shape)


def _split_key(key: str) -> tuple[str, str]:
    """``"GET /status"`` -> ``("GET", "/status")``."""
    parts = key.split(" ")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise PlanError(f'a route is written "METHOD /path" with one space, got {_show(key)}')
    _check_method(parts[0])
    _shape(parts[1])
    return parts[0], parts[1]


def _specificity(route: Route) -> tuple[bool, ...]:
    # Only routes of one length match one path, so comparing these flags left to
    # right prefers the exact segment at the first place two routes differ.
    return tuple(segment is not None for segment in route.shape)


# --- the plan ---------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Routes and task owners, validated and immutable.

    Routes not in the plan, and tasks not in ``tasks``, stay on legacy: the plan
    names what moved, or is about to. ``known_routes`` and ``known_tasks``
    (given by the host, from the apps) make every route and task outside them
    an error, now and in every plan derived from this one.
    """

    routes: tuple[Route, ...] = ()
    tasks: Mapping[str, str] = field(default_factory=dict)
    sticky_header: str | None = None
    source: Path | None = None
    known_routes: frozenset[tuple[str, str]] | None = None
    known_tasks: frozenset[str] | None = None
    #: ``[apps]``: import strings ("module:attr") of the two stacks and the pool initializer.
    apps: Mapping[str, str] = field(default_factory=dict)
    #: Routes modern serves; None when they cannot be listed. A route in a mode that sends
    #: requests to modern must be one of them.
    modern_routes: frozenset[tuple[str, str]] | None = None
    #: ``[diff]``: the shadow diff rules every route starts from.
    diff: Mapping[str, Any] = field(default_factory=dict)
    #: Things worth saying that do not stop the plan ("file:line: route ... is declared by neither app").
    warnings: tuple[str, ...] = ()
    #: The line of each ``[apps]`` key in the file, for errors found when the apps load.
    app_lines: Mapping[str, int] = field(default_factory=dict)
    #: ``[gates]``: default gate thresholds, per-step tables, and the evaluation ``interval``.
    gates: Mapping[str, Any] = field(default_factory=dict)
    #: ``[diff] sample``: the share of requests a shadowed route mirrors when the route does not say.
    shadow_sample: float = 1.0

    #: ``[shadow]``: ``aa_sample`` and ``settle`` for every mirrored route that does not set its own.
    shadow: Mapping[str, float] = field(default_factory=dict)
    #: The ``"*"`` entry of ``[routes]``: how requests no route matches are treated (None: legacy, not shadowed).
    catch_all: Route | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shadow_sample", _check_sample(self.shadow_sample))
        object.__setattr__(self, "shadow", MappingProxyType(_check_shadow_table(dict(self.shadow))))
        if self.catch_all is not None and not self.catch_all.catch_all:
            raise PlanError(f'the catch-all entry must be the "{CATCH_ALL}" route, got {_show(self.catch_all.key)}')
        object.__setattr__(self, "routes", tuple(self.routes))
        object.__setattr__(self, "tasks", MappingProxyType(dict(self.tasks)))
        object.__setattr__(self, "apps", MappingProxyType(dict(self.apps)))
        object.__setattr__(self, "diff", MappingProxyType(_check_diff(dict(self.diff), "[diff]")))
        object.__setattr__(self, "warnings", tuple(self.warnings))
        object.__setattr__(self, "app_lines", MappingProxyType(dict(self.app_lines)))
        object.__setattr__(self, "gates", MappingProxyType(_check_gates(dict(self.gates), "[gates]", plan_level=True)))
        if self.known_routes is not None:
            object.__setattr__(self, "known_routes", _known_routes(self.known_routes))
        if self.modern_routes is not None:
            object.__setattr__(self, "modern_routes", _known_routes(self.modern_routes))
        if self.known_tasks is not None:
            object.__setattr__(self, "known_tasks", frozenset(self.known_tasks))
        seen: dict[tuple[str, Shape], Route] = {}
        for route in self.routes:
            _check_new_route(route, seen, self.modern_routes)
            seen[route.method, route.shape] = route
        for task, owner in self.tasks.items():
            _check_task(task, owner, self.known_tasks)
        if self.sticky_header is not None:
            _check_sticky_header(self.sticky_header)

    # --- reading ------------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: str | PathLike[str],
        *,
        known_routes: Iterable[tuple[str, str]] | None = None,
        known_tasks: Iterable[str] | None = None,
        modern_routes: Iterable[tuple[str, str]] | None = None,
    ) -> Plan:
        """Read and validate the plan at ``path``; see :meth:`parse`."""
        source = Path(path)
        data = source.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise PlanError(f"not UTF-8 text: {exc.reason} at byte {exc.start}", line=line, source=source) from None
        return cls.parse(text, source, known_routes=known_routes, known_tasks=known_tasks, modern_routes=modern_routes)

    @classmethod
    def parse(
        cls,
        text: str,
        source: str | PathLike[str] | None = None,
        *,
        known_routes: Iterable[tuple[str, str]] | None = None,
        known_tasks: Iterable[str] | None = None,
        modern_routes: Iterable[tuple[str, str]] | None = None,
        task_stacks: Mapping[str, Iterable[str]] | None = None,
    ) -> Plan:
        """Build a plan from TOML text; ``source`` only names the file in errors and in :meth:`to_dict`.

        ``known_routes`` are the routes either app declares: a plan route outside
        them is a warning (a twisted.web resource tree cannot be listed, so the
        plan may know routes the host does not). ``modern_routes`` are the routes
        modern serves: a route in shadow, canary or modern mode outside them is
        an error. ``task_stacks`` (task: the stacks declaring it, both stacks
        loaded) make an owner that does not declare its task an error: the task
        would stop where it runs and start nowhere. Raises :class:`PlanError` at
        the first problem, with its line.
        """
        src = Path(source) if source is not None else None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise _syntax_error(exc, text, src) from exc
        at = _Locator(text, src)
        known_r = None if known_routes is None else _known_routes(known_routes)
        modern_r = None if modern_routes is None else _known_routes(modern_routes)
        known_t = None if known_tasks is None else frozenset(known_tasks)
        warnings: list[str] = []

        for name in data:
            if name not in _TABLES:
                with at(name):
                    raise PlanError(f"unknown table [{name}] (one of {', '.join(f'[{t}]' for t in _TABLES)})")

        routes: list[Route] = []
        seen: dict[tuple[str, Shape], Route] = {}
        catch_all: Route | None = None
        for key, value in _table(data, "routes", at).items():
            if key == CATCH_ALL:
                with at("routes", key):
                    catch_all = _route_from_toml(key, value)
                continue
            with at("routes", key):
                route = _route_from_toml(key, value)
                _check_new_route(route, seen, modern_r, lambda other: at.line("routes", other.key))
            seen[route.method, route.shape] = route
            routes.append(route)
            declared = (known_r or frozenset()) | (modern_r or frozenset())
            if known_r is not None and not _declares(declared, route):
                warnings.append(where_in(src, at.line("routes", key)) + f"route {_show(route.key)} is declared by "
                                "neither app (fine for a twisted.web resource tree, which cannot be listed)")

        sticky_header = None
        for key, value in _table(data, "canary", at).items():
            with at("canary", key):
                if key not in _CANARY_KEYS:
                    raise PlanError(f"unknown key {_show(key)} in [canary] (one of {', '.join(_CANARY_KEYS)})")
                sticky_header = _check_sticky_header(value)

        tasks: dict[str, str] = {}
        for task, owner in _table(data, "tasks", at).items():
            with at("tasks", task):
                _check_task(task, owner, known_t)
                if task_stacks is not None and task in task_stacks:
                    check_owner_declares(task, owner, task_stacks[task])
            tasks[task] = owner

        apps: dict[str, str] = {}
        app_lines: dict[str, int] = {}
        for key, value in _table(data, "apps", at).items():
            with at("apps", key):
                if key not in _APP_KEYS:
                    raise PlanError(f"unknown key {_show(key)} in [apps] (one of {', '.join(_APP_KEYS)})")
                if key == "app_dir":
                    if not isinstance(value, str) or not value:
                        raise PlanError(f"[apps] app_dir must be a folder, relative to the plan, got {_show(value)}")
                elif not isinstance(value, str) or not _IMPORT_STRING.fullmatch(value):
                    raise PlanError(f'[apps] {key} must be an import string "package.module:attribute", got {_show(value)}')
            apps[key] = value
            if (line := at.line("apps", key)) is not None:
                app_lines[key] = line

        diff_rules = dict(_table(data, "diff", at))
        shadow_sample = 1.0
        if SAMPLE_KEY in diff_rules:
            with at("diff", SAMPLE_KEY):
                shadow_sample = _check_sample(diff_rules.pop(SAMPLE_KEY))
        with at("diff"):
            diff_rules = _check_diff(diff_rules, "[diff]")
        shadow_defaults = dict(_table(data, "shadow", at))
        with at("shadow"):
            shadow_defaults = _check_shadow_table(shadow_defaults)

        gates = dict(_table(data, "gates", at))
        with at("gates"):
            gates = _check_gates(gates, "[gates]", plan_level=True)

        return cls(tuple(routes), tasks, sticky_header, src, known_r, known_t, apps, modern_r, diff_rules, tuple(warnings),
                   app_lines, gates, shadow_sample, shadow_defaults, catch_all)

    # --- questions ----------------------------------------------------------

    def route_for(self, method: str, path: str) -> Route | None:
        """The route that takes this request, the most specific if several match; None if none does."""
        if not path.startswith("/"):
            return None
        segments = path.split("/")[1:]
        for route in self._candidates.get((method, len(segments)), ()):
            if all(s == want if want is not None else s != "" for s, want in zip(segments, route.shape, strict=True)):
                return route
        return None

    @cached_property
    def _candidates(self) -> dict[tuple[str, int], tuple[Route, ...]]:
        """The routes that can take a method and a number of path segments, the most specific first (asked per
        request: one lookup instead of every route's :meth:`Route.matches`)."""
        grouped: dict[tuple[str, int], list[Route]] = {}
        for route in self.routes:
            if not route.catch_all:
                grouped.setdefault((route.method, len(route.shape)), []).append(route)
        # sorted() is stable with reverse=True: among equally specific routes the first written wins, as max() did
        return {key: tuple(sorted(group, key=_specificity, reverse=True)) for key, group in grouped.items()}

    def find(self, method: str, template: str) -> Route | None:
        """The route written for ``method`` and ``template`` (placeholder names aside), if the plan has one."""
        shape = _shape(template)
        return next((r for r in self.routes if r.method == method and r.shape == shape), None)

    def place(self, apps_key: str) -> str:
        """``"cutover.toml:12: "`` for an ``[apps]`` key, as errors begin."""
        return where_in(self.source, self.app_lines.get(apps_key))

    def owner_of(self, task: str) -> str:
        """The stack that runs ``task``: legacy unless the plan moved it."""
        return self.tasks.get(task, "legacy")

    def rules_for(self, route: Route | None) -> DiffRules:
        """The diff rules shadow mode uses for ``route``: ``[diff]``, then the route's own.

        Paths to ignore or skip add up, and so do header rules; ``float_tolerance``
        and ``headers`` of the route replace the defaults.
        """
        merged: dict[str, Any] = dict(self.diff)
        for name, value in (route.diff if route is not None else {}).items():
            if name in ("ignore", "ignore_values", "skip"):
                merged[name] = (*merged.get(name, ()), *value)
            elif name == "header_rules":
                merged[name] = {**merged.get(name, {}), **value}
            else:
                merged[name] = value
        return DiffRules(**merged)

    def sample_for(self, route: Route) -> float:
        """The share of ``route``'s requests that shadow mode mirrors: the route's ``sample``, else ``[diff] sample``."""
        return route.sample if route.sample is not None else self.shadow_sample

    def aa_sample(self, route: Route) -> float:
        """The share of ``route``'s mirrored requests that legacy answers twice (the A/A noise sample)."""
        if route.aa_sample is not None:
            return route.aa_sample
        return self.shadow.get("aa_sample", DEFAULT_AA_SAMPLE)

    def settle(self, route: Route) -> float:
        """How long a differing mirrored GET of ``route`` may be asked again until both sides agree."""
        return route.settle if route.settle is not None else self.shadow.get("settle", 0.0)

    def in_modern(self, route: Route) -> bool | None:
        """Whether modern serves ``route``; None when modern's routes cannot be listed."""
        if self.modern_routes is None:
            return None
        return _declares(self.modern_routes, route)

    # --- changes ------------------------------------------------------------

    def with_mode(self, method: str, template: str, mode: str, percent: float | None = None) -> Plan:
        """A plan with one route moved to ``mode``; the route is added if the plan did not name it.

        ``percent`` is required to enter canary mode and kept when already
        there; it must be left out for the other modes. ``shadow_safe`` is kept.
        """
        existing = self.find(method, template)
        if percent is None:
            if mode == "canary" and (existing is None or existing.mode != "canary"):
                raise PlanError(f'canary mode needs a percent, such as {{ mode = "canary", percent = {CANARY_STEPS[0]:g} }}')
            percent = existing.percent if existing is not None and mode == "canary" else 0.0
        if existing is None:
            route = Route(method, template, mode, percent)
            return replace(self, routes=(*self.routes, route))
        route = replace(existing, mode=mode, percent=percent)
        return replace(self, routes=tuple(route if r is existing else r for r in self.routes))

    def with_owner(self, task: str, owner: str) -> Plan:
        """A plan with ``task`` run by ``owner``."""
        return replace(self, tasks={**self.tasks, task: owner})

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data, for the admin API."""
        return {
            "source": str(self.source) if self.source is not None else None,
            "sticky_header": self.sticky_header,
            "routes": [route.to_dict() for route in self.routes],
            "tasks": dict(self.tasks),
            "known_routes": None if self.known_routes is None else [f"{m} {t}" for m, t in _sorted(self.known_routes)],
            "known_tasks": None if self.known_tasks is None else sorted(self.known_tasks),
            "modern_routes": None if self.modern_routes is None else [f"{m} {t}" for m, t in _sorted(self.modern_routes)],
            "diff": dict(self.diff),
            "gates": _plain(self.gates),
            "shadow_sample": self.shadow_sample,
            "warnings": list(self.warnings),
            "shadow": dict(self.shadow),
            "catch_all": None if self.catch_all is None else self.catch_all.to_dict(),
        }


def _sorted(routes: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted(routes, key=lambda r: (r[1], r[0]))


def _route_from_toml(key: str, value: object) -> Route:
    method, template = (CATCH_ALL, CATCH_ALL) if key == CATCH_ALL else _split_key(key)
    if isinstance(value, str):
        if value == "canary":
            raise _FieldError("mode", f'canary mode needs a percent: {_show(key)} = {{ mode = "canary", percent = 10 }}')
        return Route(method, template, value)
    if not isinstance(value, dict):
        raise PlanError(
            f'a route takes a mode ("legacy") or a table ({{ mode = "canary", percent = 10 }}), got {_show(value)}'
        )
    for name in value:
        if name not in _ROUTE_KEYS and name != SAMPLE_KEY:
            raise _FieldError(name, f"unknown key {_show(name)} in route {_show(key)} (one of {', '.join(_ROUTE_KEYS)})")
    if "mode" not in value:
        raise PlanError(f"route {_show(key)} needs a mode (one of {', '.join(MODES)})")
    mode = value["mode"]
    if mode == "canary" and "percent" not in value:
        raise _FieldError("mode", 'canary mode needs a percent: { mode = "canary", percent = 10 }')
    rules = {name: value[name] for name in _DIFF_KEYS if name in value}
    gates = value.get("gates", {})
    if not isinstance(gates, dict):
        raise _FieldError("gates", f"gates of route {_show(key)} must be a table of thresholds, got {_show(gates)}")
    extra = {name: value[name] for name in (*_ID_KEYS, *_SHADOW_KEYS) if name in value}
    return Route(method, template, mode, value.get("percent", 0), value.get("shadow_safe"), rules,
                 auto=value.get("auto", False), gates=gates, sample=value.get(SAMPLE_KEY), **extra)


def _known_routes(routes: Iterable[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    known = frozenset((method, template) for method, template in routes)
    for method, template in known:
        try:
            _check_method(method)
            _shape(template)
        except PlanError as exc:  # the host's mistake, not the plan's: no line
            raise PlanError(f"known route {_show(f'{method} {template}')}: {exc.reason}") from None
    return known


def _declares(routes: frozenset[tuple[str, str]], route: Route) -> bool:
    return (route.method, route.shape) in {(m, _shape(t)) for m, t in routes}


def _check_new_route(
    route: Route,
    seen: Mapping[tuple[str, Shape], Route],
    modern: frozenset[tuple[str, str]] | None,
    line_of: Callable[[Route], int | None] | None = None,
) -> None:
    other = seen.get((route.method, route.shape))
    if other is not None:
        where = ""
        if line_of is not None and (line := line_of(other)) is not None:
            where = f" on line {line}"
        same = "" if other.template == route.template else f": same as {_show(other.key)}"
        raise PlanError(f"duplicate route {_show(route.key)}{same}{where}")
    if modern is not None and route.mode in NEEDS_MODERN and not _declares(modern, route):
        raise _FieldError(
            "mode", f"route {_show(route.key)} cannot be in {route.mode} mode: modern does not serve it "
            "(port it first, or keep it on legacy)"
        )


def _check_task(task: str, owner: object, known: frozenset[str] | None) -> None:
    if known is not None and task not in known:
        raise PlanError(f"unknown task {_show(task)} (known: {', '.join(sorted(known)) or 'none'})")
    if owner not in OWNERS:
        raise PlanError(f"task {_show(task)}: owner must be {' or '.join(OWNERS)}, got {_show(owner)}")


def check_owner_declares(task: str, owner: str, stacks: Iterable[str]) -> None:
    """Refuse to give ``task`` to a stack that does not declare it: it would stop where it runs and start nowhere."""
    declared = sorted(set(stacks))
    if owner not in declared:
        held = f"only {' and '.join(declared)} does" if declared else "no stack does"
        raise PlanError(f"task {_show(task)}: {owner} does not declare it ({held}), so it would run nowhere")


def _check_sticky_header(value: object) -> str:
    if not isinstance(value, str) or not _HEADER_NAME.fullmatch(value):
        raise PlanError(f'sticky_header must be a header name such as "X-Cutover-Key", got {_show(value)}')
    return value


def _table(data: dict[str, Any], name: str, at: _Locator) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        with at(name):
            raise PlanError(f"{name} must be a table ([{name}]), got {_show(value)}")
    return value


def _show(value: object) -> str:
    """A value as it would be written in TOML, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


# --- finding lines ------------------------------------------------------------
#
# tomllib reports where the syntax is wrong but not where a value was written,
# so the line of a key is found again by reading the text: each line that
# defines a key ("[a.b]" headers and "key = value" lines, keys bare or quoted,
# dotted or not) is turned into its full key path, and the line whose path is
# the longest prefix of the wanted one wins. An inline table's fields share its
# line; a [routes."POST /x"] table gives each field its own.


def _syntax_error(exc: tomllib.TOMLDecodeError, text: str, source: Path | None) -> PlanError:
    message = str(exc)
    found = re.search(r" \(at line (\d+), column (\d+)\)$", message)
    if found is not None:
        return PlanError(f"invalid TOML: {message[: found.start()]} (column {found[2]})", line=int(found[1]), source=source)
    if message.endswith(" (at end of document)"):
        reason = message.removesuffix(" (at end of document)")
        return PlanError(f"invalid TOML: {reason} (at end of file)", line=max(1, len(text.splitlines())), source=source)
    return PlanError(f"invalid TOML: {message}", source=source)


class _Locator:
    """Places errors raised inside ``with at(*keys):`` on the line that defines ``keys``."""

    def __init__(self, text: str, source: Path | None) -> None:
        self.source = source
        self.paths = list(_key_lines(text))

    def line(self, *keys: str) -> int | None:
        best, depth = None, 0
        for number, path in self.paths:
            if len(path) > depth and keys[: len(path)] == path:
                best, depth = number, len(path)
        return best

    @contextmanager
    def __call__(self, *keys: str) -> Iterator[None]:
        try:
            yield
        except PlanError as exc:
            if exc.line is not None or exc.source is not None:
                raise
            wanted = (*keys, exc.field) if isinstance(exc, _FieldError) else keys
            raise exc.at(self.line(*wanted), self.source) from None


_KEY_PART = re.compile(r"""\s*(?:([A-Za-z0-9_-]+)|"((?:[^"\\]|\\.)*)"|'([^']*)')\s*""")


def _key_lines(text: str) -> Iterator[tuple[int, tuple[str, ...]]]:
    """(line number, full key path) for each line that defines a key or a table."""
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        if stripped.startswith("["):
            start = 2 if stripped.startswith("[[") else 1
            parsed = _parse_key(stripped, start)
            if parsed is not None and stripped[parsed[1] :].startswith("]"):
                table = parsed[0]
                yield number, table
        elif stripped and not stripped.startswith("#"):
            parsed = _parse_key(stripped, 0)
            if parsed is not None and stripped[parsed[1] :].startswith("="):
                yield number, (*table, *parsed[0])


def _parse_key(text: str, pos: int) -> tuple[tuple[str, ...], int] | None:
    """A dotted TOML key at ``pos``: its parts and the position after it."""
    parts: list[str] = []
    while True:
        found = _KEY_PART.match(text, pos)
        if found is None:
            return None
        bare, basic, literal = found.groups()
        parts.append(bare if bare is not None else _unescape(basic) if basic is not None else literal)
        pos = found.end()
        if not text.startswith(".", pos):
            return tuple(parts), pos
        pos += 1


def _unescape(raw: str) -> str:
    if "\\" not in raw:
        return raw
    try:
        return str(tomllib.loads(f'k = "{raw}"')["k"])
    except tomllib.TOMLDecodeError:
        return raw

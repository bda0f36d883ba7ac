"""Compare one response from each stack: the engine behind shadow mode and the parity tests.

Shadow mode and the parity tests ask one question, "would a client notice the
difference?", so they share one answer:

* the status must be equal;
* only the headers named in :attr:`DiffRules.headers` are compared (most
  headers, such as ``date`` or ``server``, differ between any two servers),
  each by its rule (below): ``; charset=utf-8`` is not a difference;
* JSON bodies are compared as data: key order and whitespace do not count,
  numbers are equal within :attr:`DiffRules.float_tolerance` (two stacks that
  round differently are not wrong), and ``true`` is never ``1``. Paths that
  legitimately differ (a job id, a timestamp) are left out with
  :attr:`DiffRules.ignore`;
* any other body (an image, a text page, one side's JSON against the other's
  HTML error) is compared byte for byte, and reported by length and sha256.

An ignore path is dotted, relative to the JSON body: ``error.message``. A part
``*`` matches any one object key, ``[]`` any list index, ``[3]`` index 3, and
``**`` any number of keys and indexes (none included): ``*.created_at`` is a
``created_at`` one level down, ``**.created_at`` one at any depth,
``lines[].score`` every line's score. A path matched by ``ignore`` (or its
older name ``ignore_values``) must be there on both sides, but its value may
differ: a port that drops an id, a time or a counter is caught, while the
values themselves are not compared. A path matched by ``skip`` is left out
with everything below it, and is never reported missing (a field only one
side has by design).

Headers are compared by a rule each (:data:`HEADER_RULES`, overridable per
name with ``header_rules``): ``content-type`` by media type, ``location`` as a
path (``http://host/v1/jobs/1`` and ``/v1/jobs/1`` are one place), ``allow`` as
a set of methods, ``present`` only that both or neither have it, anything else
exactly (``retry-after``). ``aliases`` (``{modern_value: legacy_value}``) say
which strings name the same thing on both sides, such as the ids each side
gave one resource: modern's answer is read with them replaced before comparing.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

__all__ = ["DEFAULT_HEADERS", "DEFAULT_RULES", "HEADER_RULES", "HEADER_RULE_NAMES", "KINDS", "Diff", "DiffRules",
           "Difference", "Exchange", "diff", "generalise"]

KINDS = ("status", "header", "missing", "extra", "value", "type", "length", "digest")
DEFAULT_HEADERS = ("content-type", "location", "allow", "retry-after")
HEADER_RULE_NAMES = ("exact", "media_type", "path", "set", "present")
#: How a header is compared unless ``header_rules`` says otherwise; any other header: ``exact``.
HEADER_RULES: Mapping[str, str] = MappingProxyType({"content-type": "media_type", "location": "path", "allow": "set"})


@dataclass(frozen=True)
class Exchange:
    """One side's response. Header names are lower-cased on construction."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def __post_init__(self) -> None:
        if isinstance(self.body, str):
            raise TypeError("Exchange.body must be bytes, not str: encode it as the server would")
        object.__setattr__(self, "body", bytes(self.body))
        object.__setattr__(self, "headers", MappingProxyType({k.lower(): v for k, v in self.headers.items()}))


class _Wild(enum.Enum):
    KEY = "*"
    INDEX = "[]"
    ANY = "**"


_Step = str | int  # one step of a JSON path: an object key or a list index
_Token = str | int | _Wild
_PART = re.compile(r"(?P<name>[^.\[\]]*)(?P<indexes>(?:\[[0-9]*\])*)")


@dataclass(frozen=True)
class DiffRules:
    """What counts as a difference.

    ``headers``: the header names compared (any case), each by its rule
    (``header_rules`` over :data:`HEADER_RULES`). ``ignore`` and
    ``ignore_values``: JSON paths that must exist on both sides, with any value
    (see the module docstring). ``skip``: JSON paths left out altogether.
    ``float_tolerance``: numbers ``a`` and
    ``b`` are equal if ``abs(a - b) <= tol * max(1, abs(a), abs(b))``, absolute
    near zero and relative beyond; two ints are compared exactly, since they are
    ids and counts. ``max_differences``: the report stops after this many.
    ``max_value_chars``: each value in the report is cut to this length.
    """

    headers: tuple[str, ...] = DEFAULT_HEADERS
    ignore: tuple[str, ...] = ()
    float_tolerance: float = 1e-6
    max_differences: int = 20
    max_value_chars: int = 200
    ignore_values: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    header_rules: Mapping[str, str] = field(default_factory=dict)
    _patterns: tuple[tuple[_Token, ...], ...] = field(init=False, repr=False, compare=False)
    _value_patterns: tuple[tuple[_Token, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("headers", "ignore", "ignore_values", "skip"):
            value = getattr(self, name)
            if isinstance(value, str):  # ("content-type") without the comma
                raise TypeError(f"DiffRules.{name} must be a sequence of strings, not one string: ({value!r},)")
            object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "headers", tuple(h.lower() for h in self.headers))
        header_rules = {str(k).lower(): v for k, v in dict(self.header_rules).items()}
        for name, rule in header_rules.items():
            if rule not in HEADER_RULE_NAMES:
                raise ValueError(f"header rule {rule!r} for {name!r}: use one of {', '.join(HEADER_RULE_NAMES)}")
        object.__setattr__(self, "header_rules", MappingProxyType(header_rules))
        if not (self.float_tolerance >= 0):
            raise ValueError(f"float_tolerance must be >= 0, got {self.float_tolerance}")
        if self.max_differences < 1:
            raise ValueError(f"max_differences must be at least 1, got {self.max_differences}")
        if self.max_value_chars < 10:
            raise ValueError(f"max_value_chars must be at least 10, got {self.max_value_chars}")
        object.__setattr__(self, "_patterns", tuple(_compile(p) for p in self.skip))
        object.__setattr__(self, "_value_patterns", tuple(_compile(p) for p in (*self.ignore, *self.ignore_values)))

    def rule_for(self, header: str) -> str:
        """How ``header`` is compared: ``header_rules``, then :data:`HEADER_RULES`, else ``exact``."""
        name = header.lower()
        return self.header_rules.get(name) or HEADER_RULES.get(name, "exact")

    def ignores(self, path: Iterable[_Step]) -> bool:
        """Whether the body path (keys and indexes from the root) is skipped (``skip``): left out, never missing."""
        steps = tuple(path)
        return any(_match(pattern, steps) for pattern in self._patterns)

    def ignores_value(self, path: Iterable[_Step]) -> bool:
        """Whether the value at this body path may differ (the key must still be on both sides)."""
        steps = tuple(path)
        return any(_match(pattern, steps) for pattern in self._value_patterns)


def _compile(pattern: str) -> tuple[_Token, ...]:
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"an ignore path must be a non-empty string, got {pattern!r}")
    tokens: list[_Token] = []
    for i, part in enumerate(pattern.split(".")):
        found = _PART.fullmatch(part)
        if found is None or (not found["name"] and (i > 0 or not found["indexes"])):
            raise ValueError(f"ignore path {pattern!r}: cannot read part {part!r} (write a.b, *.b, a[].b or a[2].b)")
        name = found["name"]
        if "*" in name and name not in ("*", "**"):
            raise ValueError(f"ignore path {pattern!r}: * stands for a whole key, not part of one ({part!r})")
        if name:
            tokens.append(_Wild.KEY if name == "*" else _Wild.ANY if name == "**" else name)
        for index in re.findall(r"\[([0-9]*)\]", found["indexes"]):
            tokens.append(int(index) if index else _Wild.INDEX)
    return tuple(tokens)


def _match(pattern: tuple[_Token, ...], path: tuple[_Step, ...]) -> bool:
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head is _Wild.ANY:
        return any(_match(rest, path[i:]) for i in range(len(path) + 1))
    if not path:
        return False
    step = path[0]
    if head is _Wild.KEY:
        fits = isinstance(step, str)
    elif head is _Wild.INDEX:
        fits = isinstance(step, int)
    else:
        fits = type(head) is type(step) and head == step
    return fits and _match(rest, path[1:])


@dataclass(frozen=True)
class Difference:
    """One difference. ``legacy`` and ``modern`` are the values as text (JSON for JSON values),
    already cut to length; None where that side has nothing (a missing key or header)."""

    path: str
    legacy: str | None
    modern: str | None
    kind: str

    def to_text(self) -> str:
        if self.kind == "missing":
            return f"{self.path}: missing in modern"
        if self.kind == "extra":
            return f"{self.path}: missing in legacy"
        legacy = "absent" if self.legacy is None else self.legacy
        modern = "absent" if self.modern is None else self.modern
        label = "length " if self.kind == "length" else ""
        return f"{self.path}: {label}legacy {legacy}, modern {modern}"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "legacy": self.legacy, "modern": self.modern}


@dataclass
class Diff:
    """The differences between two exchanges, in the order found; ``equal`` when there are none.

    ``truncated`` means the comparison stopped at ``max_differences``: there may be more.
    """

    differences: list[Difference] = field(default_factory=list)
    truncated: bool = False

    @property
    def equal(self) -> bool:
        return not self.differences

    def to_text(self) -> str:
        """One line per difference, such as ``body.faces[0][2]: legacy 93, modern 94``."""
        if self.equal:
            return "no differences"
        lines = [d.to_text() for d in self.differences]
        if self.truncated:
            lines.append(f"... stopped after {len(self.differences)} differences")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "equal": self.equal,
            "truncated": self.truncated,
            "differences": [d.to_dict() for d in self.differences],
        }


DEFAULT_RULES = DiffRules()


def diff(
    legacy: Exchange, modern: Exchange, rules: DiffRules = DEFAULT_RULES, aliases: Mapping[str, str] | None = None
) -> Diff:
    """What a client would notice between legacy's and modern's answers to one request.

    ``aliases`` (``{modern_string: legacy_string}``, such as the two ids of one
    resource) are replaced in modern's headers and body strings first."""
    found = _Collector(rules)
    aliases = {k: v for k, v in (aliases or {}).items() if k and k != v}
    try:
        if legacy.status != modern.status:
            found.add("status", "status", str(legacy.status), str(modern.status))
        for name in rules.headers:
            a, b = legacy.headers.get(name), _alias_text(modern.headers.get(name), aliases)
            if _header(a, rules.rule_for(name)) != _header(b, rules.rule_for(name)):
                found.add(f"headers.{name}", "header", a, b)
        a_json, b_json = _json(legacy.body), _json(modern.body)
        if aliases and b_json is not _NOT_JSON:
            b_json = _alias_json(b_json, aliases)
        elif aliases:
            modern = Exchange(modern.status, modern.headers, _alias_bytes(modern.body, aliases))
        if a_json is not _NOT_JSON and b_json is not _NOT_JSON:
            found.walk(a_json, b_json, ())
        elif legacy.body != modern.body:
            found.add("body", "digest", _digest(legacy.body), _digest(modern.body))
    except _Full:
        pass
    return Diff(found.differences, found.truncated)


class _Full(Exception):
    """Raised to stop comparing once ``max_differences`` are found."""


class _Collector:
    def __init__(self, rules: DiffRules) -> None:
        self.rules = rules
        self.differences: list[Difference] = []
        self.truncated = False

    def add(self, path: str, kind: str, legacy: str | None, modern: str | None) -> None:
        """Record a difference; values are cut to ``max_value_chars``."""
        if len(self.differences) == self.rules.max_differences:
            self.truncated = True
            raise _Full
        self.differences.append(Difference(path, self._cut(legacy), self._cut(modern), kind))

    def _cut(self, text: str | None, reserve: int = 0) -> str | None:
        limit = self.rules.max_value_chars - reserve
        if text is None or len(text) <= limit:
            return text
        return text[: limit - 3] + "..."

    def _typed(self, value: Any, kind: str) -> str | None:
        """``true (boolean)``: the value cut short enough that its type still shows."""
        suffix = f" ({kind})"
        return f"{self._cut(_show(value), len(suffix))}{suffix}"

    def walk(self, a: Any, b: Any, path: tuple[_Step, ...]) -> None:
        if self.rules.ignores(path) or (path and self.rules.ignores_value(path)):
            return
        kind_a, kind_b = _kind(a), _kind(b)
        if kind_a != kind_b:
            self.add(_path(path), "type", self._typed(a, kind_a), self._typed(b, kind_b))
        elif kind_a == "object":
            for key, value in a.items():
                if key in b:
                    self.walk(value, b[key], (*path, key))
                elif not self.rules.ignores((*path, key)):
                    self.add(_path((*path, key)), "missing", _show(value), None)
            for key, value in b.items():
                if key not in a and not self.rules.ignores((*path, key)):
                    self.add(_path((*path, key)), "extra", None, _show(value))
        elif kind_a == "array":
            if len(a) != len(b):
                self.add(_path(path), "length", str(len(a)), str(len(b)))
            for index, (x, y) in enumerate(zip(a, b, strict=False)):  # then the items both have, in order
                self.walk(x, y, (*path, index))
        elif kind_a == "number":
            if not _close(a, b, self.rules.float_tolerance):
                self.add(_path(path), "value", _show(a), _show(b))
        elif a != b:
            self.add(_path(path), "value", _show(a), _show(b))


def _kind(value: Any) -> str:
    """The JSON type of a decoded value; bool is checked before int, which it subclasses."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "object"
    return "array"


def _close(a: int | float, b: int | float, tolerance: float) -> bool:
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    try:
        x, y = float(a), float(b)
    except OverflowError:  # an int too large for a float: only equality can be told
        return a == b
    if not (math.isfinite(x) and math.isfinite(y)):
        return x == y or (math.isnan(x) and math.isnan(y))  # NaN is NaN here: both sides wrote the same thing
    return abs(x - y) <= tolerance * max(1.0, abs(x), abs(y))


_NOT_JSON = object()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return _NOT_JSON


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _path(steps: tuple[_Step, ...]) -> str:
    """``("faces", 0, 2)`` -> ``body.faces[0][2]``; odd keys are quoted: ``body["a.b"]``."""
    text = "body"
    for step in steps:
        if isinstance(step, int):
            text += f"[{step}]"
        elif _IDENTIFIER.fullmatch(step):
            text += f".{step}"
        else:
            text += f"[{json.dumps(step, ensure_ascii=False)}]"
    return text


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _digest(body: bytes) -> str:
    return f"{len(body)} bytes, sha256 {hashlib.sha256(body).hexdigest()}"


def _header(value: str | None, rule: str) -> Any:
    """A header's value as its rule compares it; None when absent."""
    if value is None:
        return None
    value = value.strip()
    if rule == "media_type":
        return value.split(";", 1)[0].strip().lower()
    if rule == "path":
        parts = urlsplit(value)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if rule == "set":
        return frozenset(part.strip().upper() for part in value.split(",") if part.strip())
    if rule == "present":
        return True
    return value


def _alias_text(value: str | None, aliases: Mapping[str, str]) -> str | None:
    if value is None:
        return None
    for modern_value, legacy_value in aliases.items():
        value = value.replace(modern_value, legacy_value)
    return value


def _alias_bytes(body: bytes, aliases: Mapping[str, str]) -> bytes:
    for modern_value, legacy_value in aliases.items():
        body = body.replace(modern_value.encode(), legacy_value.encode())
    return body


def _alias_json(value: Any, aliases: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _alias_text(value, aliases)
    if isinstance(value, list):
        return [_alias_json(v, aliases) for v in value]
    if isinstance(value, dict):
        return {k: _alias_json(v, aliases) for k, v in value.items()}
    return value


_INDEX = re.compile(r"\[[0-9]+\]")


def generalise(path: str) -> str:
    """A difference's path with list indexes as ``[]``: ``body.lines[3].score`` -> ``body.lines[].score``."""
    return _INDEX.sub("[]", path)

"""Property-based fuzzing of every operation in modern's OpenAPI schema, through both front doors.

Schemathesis generates requests from the schema, valid ones (positive) and
ones that break it (negative), a bounded number per operation, reproducibly
(``derandomize``). Each request is built once, to exact bytes, and sent to
the front door that routes everything to modern and to the one that routes
everything to legacy, one request at a time (so the fuzzer never floods the
pool). Every answer must come within a bound, never be a 5xx, and every 4xx
must carry the contract's error shape. The two stacks must give the same
status code, except for the differences listed in :data:`ALLOWED`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from bridge.testing import asyncio_test
from tests.conftest import in_daemon_thread
from tests.hardening.conftest import Door
from tests.reliability import record

EXAMPLES = 12  # per operation and generation mode: bounded for CI, derandomized so every run sends the same
ANSWER_WITHIN = 30.0  # seconds; a request without an answer by then is a hang
JOB_EXAMPLES = 6  # POST /v1/jobs queues real work on the shared pool: fewer of those

@dataclass(frozen=True)
class Allowed:
    """A difference between the stacks that the contract allows, and why."""

    operation: str
    modern: int | None  # modern's status (None: any)
    legacy: int | None  # legacy's status (None: any)
    when: Callable[[Prepared], bool]
    reason: str

    def covers(self, case: Prepared, modern: int, legacy: int) -> bool:
        return (case.operation == self.operation and self.modern in (None, modern) and self.legacy in (None, legacy)
                and self.when(case))


def long_idempotency_key(case: Prepared) -> bool:
    return any(k.lower() == "idempotency-key" and len(v) > 200 for k, v in case.headers.items())


ALLOWED = (
    Allowed("GET /v1/jobs", None, 405, lambda case: True,
            "only modern lists jobs (README: 'Modern adds GET /v1/jobs'); legacy answers 405"),
    Allowed("POST /v1/jobs", 422, None, long_idempotency_key,
            "only modern takes Idempotency-Key, and refuses one over 200 characters first; legacy ignores it"),
)


@dataclass(frozen=True)
class Prepared:
    """One generated request, as exact bytes, sent identically to both stacks."""

    operation: str
    mode: str
    method: str
    path_and_query: str
    headers: dict[str, str]
    body: bytes | None


@dataclass
class Outcome:
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


def examples(strategy: Any, count: int) -> list[Any]:
    """``count`` examples of a strategy, the same ones on every run."""
    found: list[Any] = []

    @given(strategy)
    @settings(max_examples=count, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    def collect(case: Any) -> None:
        found.append(case)

    collect()
    return found


def generate(schema_dict: dict[str, Any]) -> tuple[list[Prepared], int]:
    """Every operation's generated requests (blocking: run in a thread), and how many could not be sent at all."""
    schema = schemathesis.openapi.from_dict(schema_dict)
    prepared: list[Prepared] = []
    unsendable = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        count = JOB_EXAMPLES if operation.label == "POST /v1/jobs" else EXAMPLES
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                cases = examples(operation.as_strategy(generation_mode=mode), count)
            except Unsatisfiable:  # e.g. GET /status has nothing to break: no negative case exists
                continue
            for case in cases:
                kwargs = case.as_transport_kwargs(base_url="http://fuzz.invalid")
                try:
                    request = requests.Request(**kwargs).prepare()
                except (ValueError, requests.RequestException):  # a header value no HTTP client can send
                    unsendable += 1
                    continue
                body = request.body.encode() if isinstance(request.body, str) else request.body
                target = request.path_url
                prepared.append(Prepared(operation.label, mode.value, request.method or "GET", target,
                                         dict(request.headers), body))
    return prepared, unsendable


def check(response: httpx.Response) -> str | None:
    """What is wrong with an answer to a hostile request, or None."""
    if response.status_code >= 500:
        return f"{response.status_code}: {response.text[:200]}"
    if response.status_code >= 400:
        if response.headers.get("content-type") != "application/json":
            return f"{response.status_code} without the error shape: content-type {response.headers.get('content-type')}"
        try:
            body = response.json()
        except json.JSONDecodeError:
            return f"{response.status_code} with a body that is not JSON: {response.text[:200]}"
        error = body.get("error") if isinstance(body, dict) else None
        if set(body) != {"error"} or not isinstance(error, dict) or not isinstance(error.get("code"), str) \
                or not isinstance(error.get("message"), str) or not error["message"]:
            return f"{response.status_code} without the error shape: {body!r}"
    return None


async def send_all(door: Door, cases: list[Prepared]) -> tuple[list[int | None], Outcome]:
    outcome = Outcome()
    statuses: list[int | None] = []
    async with httpx.AsyncClient(base_url=door.url, timeout=ANSWER_WITHIN) as http:
        for case in cases:
            try:
                response = await http.request(case.method, case.path_and_query, headers=case.headers, content=case.body)
            except httpx.TimeoutException:
                outcome.failures.append(f"{case.operation} ({case.mode}): no answer within {ANSWER_WITHIN}s")
                statuses.append(None)
                continue
            except httpx.TransportError as exc:
                outcome.failures.append(f"{case.operation} ({case.mode}): connection failed: {exc!r}")
                statuses.append(None)
                continue
            statuses.append(response.status_code)
            outcome.statuses[response.status_code] += 1
            problem = check(response)
            if problem is not None:
                outcome.failures.append(f"{case.operation} ({case.mode}) {case.method} {case.path_and_query[:80]}: {problem}")
    return statuses, outcome


def summary(statuses: Counter[int]) -> str:
    return ", ".join(f"{status}x{n}" for status, n in sorted(statuses.items()))


@asyncio_test
async def test_generated_requests_are_answered_cleanly_and_alike_by_both_stacks(doors: dict[str, Door]) -> None:
    assert doors["modern"].host.modern is not None
    cases, unsendable = await in_daemon_thread(generate, doors["modern"].host.modern.openapi())
    operations = {case.operation for case in cases}
    assert len(operations) == 9, operations  # every operation in the schema was fuzzed

    results: dict[str, tuple[list[int | None], Outcome]] = {}
    for stack in ("modern", "legacy"):
        results[stack] = await send_all(doors[stack], cases)
        statuses, outcome = results[stack]
        survived = sum(1 for status in statuses if status is not None and status < 500) - len(
            [f for f in outcome.failures if "without the error shape" in f or "not JSON" in f])
        fives = sum(n for status, n in outcome.statuses.items() if status >= 500)
        record("hostile input", f"schemathesis cases, {stack} front door", tried=len(cases), survived=survived,
               detail=f"{fives} 5xx, {unsendable} unsendable skipped; {summary(outcome.statuses)}")

    allowed: Counter[tuple[str, int, int]] = Counter()
    unexplained: list[str] = []
    for case, modern, legacy in zip(cases, results["modern"][0], results["legacy"][0], strict=True):
        if modern is None or legacy is None or modern == legacy:
            continue
        if any(rule.covers(case, modern, legacy) for rule in ALLOWED):
            allowed[(case.operation, modern, legacy)] += 1
        else:
            unexplained.append(f"{case.operation} ({case.mode}) {case.method} {case.path_and_query[:80]} "
                               f"headers={ {k: v for k, v in case.headers.items() if k.lower() in ('content-type', 'idempotency-key')} } "
                               f"body={case.body[:120] if case.body else case.body!r}: modern {modern}, legacy {legacy}")
    same = sum(1 for m, legacy in zip(results["modern"][0], results["legacy"][0], strict=True) if m is not None and m == legacy)
    record("hostile input", "schemathesis cases, both stacks alike", tried=len(cases), survived=same + sum(allowed.values()),
           detail="; ".join(f"{op}: modern {m} / legacy {lg} x{n} (allowed)" for (op, m, lg), n in sorted(allowed.items()))
           or "no differences")

    assert not results["modern"][1].failures, "\n".join(results["modern"][1].failures)
    assert not results["legacy"][1].failures, "\n".join(results["legacy"][1].failures)
    assert not unexplained, "the stacks answer these differently:\n" + "\n".join(unexplained)

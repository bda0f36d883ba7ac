"""2,000 mutated raw requests per stack through the front door: every one answered or closed, never a 5xx or a hang.

What the independent trials did with their own driver, kept as a test. The
door's head and body timeouts are lowered to 1 s (tests/hardening/conftest.py),
so a request cut short is answered 408 within about a second; ``HANG_AFTER``
is far above that.
"""

from __future__ import annotations

from bridge.testing import asyncio_test
from tests.hardening.conftest import Door
from tests.hardening.mutate import mutated, send_all
from tests.reliability import record

COUNT = 2000
CONCURRENCY = 32  # under the door's admission limit and the pool's queue: no 503 busy by design
HANG_AFTER = 20.0  # seconds without an answer or a close: a hang


@asyncio_test
async def test_mutated_requests_get_no_5xx_and_no_hang_from_either_stack(doors: dict[str, Door]) -> None:
    requests = mutated(COUNT)
    assert len(set(requests)) > COUNT * 0.9  # the mutations really vary
    failures = []
    for stack, door in doors.items():
        tally = await send_all(door.port, requests, concurrency=CONCURRENCY, hang_after=HANG_AFTER)
        record("hostile input", f"{COUNT} mutated raw requests, {stack} front door", tried=COUNT,
               survived=COUNT - tally.classes["5xx"] - tally.classes["hang"],
               detail=f"{tally.summary()}; {tally.shaped}/{tally.judged} 4xx with a body in the error shape")
        assert sum(tally.classes.values()) == COUNT
        failures += [f"{stack}: {line}" for line in tally.bad]
        if tally.shaped != tally.judged:
            failures.append(f"{stack}: {tally.judged - tally.shaped} 4xx answers not in the error shape, such as:")
            failures += [f"    {line}" for line in tally.unshaped[:10]]
    assert not failures, "\n".join(failures[:40])

"""A mutation check of our own: plant one porting mistake at a time in modern/, see who notices.

Each :class:`Mutant` is one small textual edit to a file of ``modern/`` (a
status code, a field name, rounding, ordering, a default, a header), the kind
of mistake a port makes. :func:`check` builds a tree where ``modern/`` is a
mutated copy and everything else links to the repository, then runs two
judges in a fresh interpreter each:

* ``offline``: the parity suite (``tests/parity``), stopped at its first failure;
* ``shadow``: the mixed traffic run over every route in shadow, A/A on
  (``tests/cutover/test_shadow_noise.py``), which fails on any mismatch.

A mutant is caught by a judge when that run fails. The unmutated tree must
pass both first, or the figures mean nothing. ``python -m bench mutants`` runs
every mutant and writes the report; ``tests/mutation/test_mutation_check.py``
runs a small sample in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
JUDGES: dict[str, list[str]] = {
    "offline": ["tests/parity", "-x"],
    "shadow": ["tests/cutover/test_shadow_noise.py::test_a_mixed_traffic_run_with_aa_has_no_mismatches_on_any_route"],
}
LEFT_OUT = {".git", ".venv", "var", "modern", "__pycache__", ".pytest_cache", ".ruff_cache"}


@dataclass(frozen=True)
class Mutant:
    """``old`` becomes ``new`` in ``modern/<file>`` (exactly one occurrence)."""

    name: str
    kind: str  # status, field, rounding, ordering, default, header, validation, wording
    file: str
    old: str
    new: str

    def apply(self, modern: Path) -> None:
        path = modern / self.file
        text = path.read_text()
        if text.count(self.old) != 1:
            raise ValueError(f"mutant {self.name}: {self.old!r} is in modern/{self.file} {text.count(self.old)} times, not once")
        path.write_text(text.replace(self.old, self.new))


MUTANTS: tuple[Mutant, ...] = (
    Mutant("submit-200", "status", "routes.py", "status_code=202, headers=headers", "status_code=200, headers=headers"),
    Mutant("job-404-410", "status", "routes.py",
           'record = await store.get(job_id)\n    if record is None:\n        raise ApiError(404,',
           'record = await store.get(job_id)\n    if record is None:\n        raise ApiError(410,'),
    Mutant("finished-409-400", "status", "routes.py", 'raise ApiError(409, "job_finished"', 'raise ApiError(400, "job_finished"'),
    Mutant("empty-400-422", "status", "uploads.py", 'raise ApiError(400, "empty_body", f"the request has no {what}")',
           'raise ApiError(422, "empty_body", f"the request has no {what}")'),
    Mutant("error-message-key", "field", "errors.py", '{"error": {"code": code, "message": message}}',
           '{"error": {"code": code, "detail": message}}'),
    Mutant("missing-field-code", "field", "routes.py", '"missing_field", f"say what to run',
           '"missing_parameter", f"say what to run'),
    Mutant("finished-code", "field", "routes.py", '"job_finished", f"job {job_id} already', '"already_finished", f"job {job_id} already'),
    Mutant("hop-rounded", "rounding", "routes.py", 'params = {"hop_ms": hop_ms, "threshold_db": threshold}\n',
           'params = {"hop_ms": float(round(hop_ms)), "threshold_db": threshold}\n'),
    Mutant("job-hop-int", "rounding", "routes.py", 'params = {"hop_ms": hop_ms, "threshold_db": threshold} if job_kind',
           'params = {"hop_ms": float(int(hop_ms)), "threshold_db": threshold} if job_kind'),
    Mutant("allow-reversed", "ordering", "errors.py", 'return sorted(methods - {"HEAD"})',
           'return sorted(methods - {"HEAD"}, reverse=True)'),
    Mutant("domain-chunks-reversed", "ordering", "work.py", "return workloads.merge_domains(found)",
           "return workloads.merge_domains(found[::-1])"),
    Mutant("hop-default", "default", "routes.py", "analyze_audio(request: Request, hop_ms: HopMs = 10.0,",
           "analyze_audio(request: Request, hop_ms: HopMs = 20.0,"),
    Mutant("job-threshold-default", "default", "routes.py", "    hop_ms: HopMs = 10.0,\n    threshold: Threshold = 6.0,",
           "    hop_ms: HopMs = 10.0,\n    threshold: Threshold = 5.0,"),
    Mutant("location-slash", "header", "routes.py", 'headers = {"Location": f"/v1/jobs/{record.id}"}',
           'headers = {"Location": f"/v1/jobs/{record.id}/"}'),
    Mutant("allow-dropped", "header", "errors.py", 'f"{method} is not allowed here; use {allow}", {"Allow": allow})',
           'f"{method} is not allowed here; use {allow}", {})'),
    Mutant("gif-refused", "validation", "uploads.py", '"image/tiff", "image/gif"})', '"image/tiff"})'),
    Mutant("ocr-upload-refused", "validation", "routes.py", 'if job_kind == "domains":\n            raise ApiError(415',
           'if job_kind in ("domains", "ocr"):\n            raise ApiError(415'),
    Mutant("number-wording", "wording", "errors.py", 'what = "a number" if', 'what = "numeric" if'),
)
SAMPLE = ("submit-200", "error-message-key")  # what CI runs: a status code and a field name


@contextmanager
def mutated_tree(mutant: Mutant | None) -> Iterator[Path]:
    """A folder that is the repository with ``modern/`` copied (and mutated); everything else is linked."""
    with tempfile.TemporaryDirectory(prefix="cutover-mutant-") as tmp:
        root = Path(tmp)
        for entry in REPO.iterdir():
            if entry.name not in LEFT_OUT:
                (root / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
        shutil.copytree(REPO / "modern", root / "modern", ignore=shutil.ignore_patterns("__pycache__"))
        if mutant is not None:
            mutant.apply(root / "modern")
        yield root


def judge(root: Path, judge_name: str, timeout: float = 900.0) -> tuple[str, float]:
    """Run one judge in ``root``: ``("pass" | "fail" | "error", seconds)``."""
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONASYNCIODEBUG": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(root), *JUDGES[judge_name]],
            cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=False,
        )
    except subprocess.TimeoutExpired:
        return "error", time.monotonic() - started
    outcome = {0: "pass", 1: "fail"}.get(done.returncode, "error")
    return outcome, time.monotonic() - started


def check(mutant: Mutant | None, judges: tuple[str, ...] = tuple(JUDGES)) -> dict[str, tuple[str, float]]:
    """Each judge's verdict on one mutant (None: the unmutated code)."""
    with mutated_tree(mutant) as root:
        return {name: judge(root, name) for name in judges}

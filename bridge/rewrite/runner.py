"""``cutover rewrite`` over a tree: parse each file once, index the run, rewrite, report.

Two passes over the files, with one parse each: :func:`~bridge.rewrite.transform.prepare`
plans a file and gives its part of the :class:`ProjectIndex`; once every file
is indexed, each prepared module is rewritten against the whole index. For a
big tree the files are split between worker processes (as many as the CPU
budget allows); each worker keeps the modules it parsed for the second pass, so
nothing is parsed twice and only the small index and the results cross
processes. A progress line is drawn on a terminal only.
"""

from __future__ import annotations

import difflib
import multiprocessing
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TextIO

from .base import Report
from .index import FileIndex, ProjectIndex
from .project import first_party
from .transform import Prepared, Target, UnknownYields, prepare, quick_index

__all__ = ["Outcome", "Progress", "collect_files", "main", "rewrite_files"]

PROCESS_THRESHOLD = 200  # files; below this a worker's start-up (imports, a parse of its share) costs more than it saves


@dataclass
class Outcome:
    """One file's result: its new code, what is left for a person, the helper lines."""

    path: Path
    source: str
    code: str = ""
    reports: list[Report] = field(default_factory=list)
    helpers: list[Report] = field(default_factory=list)
    converted: int = 0
    error: str | None = None

    @property
    def changed(self) -> bool:
        return self.error is None and self.code != self.source


def collect_files(paths: Iterable[Path]) -> list[Path]:
    """The ``.py`` files of the given files and folders (no ``.venv``), in a stable order; ValueError if missing."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.py") if ".venv" not in p.parts)
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"no such file or folder: {path}")
    return files


def _prepare(path: Path, target: Target) -> tuple[Prepared | FileIndex | None, Outcome]:
    """A file's plan, or only its index when there is nothing to rewrite in it, or None if it cannot parse."""
    source = path.read_text(encoding="utf-8")
    outcome = Outcome(path, source, code=source)
    quick = quick_index(source, target)
    if quick is not None:
        return quick[0], outcome
    try:
        return prepare(source, target), outcome
    except Exception as exc:  # libcst's ParserSyntaxError, a bad encoding declaration...
        outcome.error = " ".join(str(exc).split())[:300]
        return None, outcome


def _index_of(prepared: Prepared | FileIndex | None) -> FileIndex:
    if isinstance(prepared, Prepared):
        return prepared.index
    return prepared if prepared is not None else FileIndex()


def _finish(prepared: Prepared | FileIndex | None, outcome: Outcome, index: ProjectIndex,
            unknown: UnknownYields) -> Outcome:
    if not isinstance(prepared, Prepared):
        return outcome
    result = prepared.rewrite(index, unknown, first_party=first_party(outcome.path.resolve().parent))
    outcome.code, outcome.reports, outcome.helpers = result.code, result.reports, result.helpers
    outcome.converted = result.converted
    return outcome


def _in_process(files: list[Path], target: Target, unknown: UnknownYields) -> Iterator[Outcome]:
    prepared = [_prepare(path, target) for path in files]
    index = ProjectIndex.of(_index_of(p) for p, _ in prepared)
    for one, outcome in prepared:
        yield _finish(one, outcome, index, unknown)


def _worker(conn: Connection, files: list[Path], target: Target, unknown: UnknownYields) -> None:
    """A worker process: index its share, wait for the whole index, rewrite its share."""
    prepared = [_prepare(path, target) for path in files]
    conn.send([_index_of(p) for p, _ in prepared])
    index: ProjectIndex = conn.recv()
    for one, outcome in prepared:
        outcome = _finish(one, outcome, index, unknown)
        conn.send(outcome)
    conn.close()


def _shards(files: list[Path], jobs: int) -> list[list[Path]]:
    """Files dealt out by size, largest first, so the workers finish together."""
    shards: list[list[Path]] = [[] for _ in range(jobs)]
    loads = [0] * jobs
    for path in sorted(files, key=lambda p: p.stat().st_size, reverse=True):
        i = loads.index(min(loads))
        shards[i].append(path)
        loads[i] += path.stat().st_size
    return [shard for shard in shards if shard]


def _in_processes(files: list[Path], target: Target, unknown: UnknownYields, jobs: int) -> Iterator[Outcome]:
    context = multiprocessing.get_context("spawn")  # no fork of whatever threads the caller has
    workers: list[tuple[Any, Connection]] = []
    try:
        for shard in _shards(files, jobs):
            ours, theirs = context.Pipe()
            proc = context.Process(target=_worker, args=(theirs, shard, target, unknown), daemon=True)
            proc.start()
            theirs.close()
            workers.append((proc, ours))
        index = ProjectIndex()
        for _, conn in workers:
            for part in conn.recv():
                index.add(part)
        for _, conn in workers:
            conn.send(index)
        done: dict[Path, Outcome] = {}
        for _, conn in workers:  # each worker streams its outcomes
            while True:
                try:
                    outcome = conn.recv()
                except EOFError:
                    break
                done[outcome.path] = outcome
                yield outcome
        missing = [path for path in files if path not in done]
        if missing:
            raise RuntimeError(f"a rewrite worker died before finishing {missing[0]} and {len(missing) - 1} more")
    finally:
        for proc, conn in workers:
            conn.close()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()


def rewrite_files(files: list[Path], target: Target = "twisted", unknown_yields: UnknownYields = "helper",
                  jobs: int = 1, on_outcome: Callable[[Outcome], None] | None = None,
                  processes_from: int = PROCESS_THRESHOLD) -> list[Outcome]:
    """Rewrite ``files`` as one run (calls across them are known); outcomes in the order of ``files``.

    With ``jobs`` > 1 and at least ``processes_from`` files, the work is split between worker processes.
    """
    jobs = max(1, min(jobs, len(files)))
    if jobs > 1 and len(files) >= processes_from:
        stream = _in_processes(files, target, unknown_yields, jobs)
    else:
        stream = _in_process(files, target, unknown_yields)
    by_path: dict[Path, Outcome] = {}
    for outcome in stream:
        by_path[outcome.path] = outcome
        if on_outcome is not None:
            on_outcome(outcome)
    return [by_path[path] for path in files]


class Progress:
    """``rewrite: 120/460 files, 35 converted, 2 reported, 10 helpers`` on one redrawn line, on a TTY only."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream = total, stream
        self.enabled = stream.isatty()
        self.files = self.converted = self.reported = self.helpers = 0

    def __call__(self, outcome: Outcome) -> None:
        self.files += 1
        self.converted += outcome.converted
        self.reported += len(outcome.reports) + (outcome.error is not None)
        self.helpers += len(outcome.helpers)
        if self.enabled:
            self.stream.write(f"\r\x1b[Krewrite: {self.files}/{self.total} files, {self.converted} converted, "
                              f"{self.reported} reported, {self.helpers} helpers")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.files:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def default_jobs() -> int:
    from ..cpu import cpu_budget

    return cpu_budget().cpus


def main(paths: list[Path], target: Target, mode: str, unknown_yields: UnknownYields = "helper",
         jobs: int | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """The ``cutover rewrite`` command: ``mode`` is "diff", "write" or "check". Returns the exit status."""
    try:
        files = collect_files(paths)
    except ValueError as exc:
        print(f"cutover: error: {exc}", file=err)
        return 2
    progress = Progress(len(files), err)
    try:
        outcomes = rewrite_files(files, target, unknown_yields, jobs or default_jobs(), progress)
    finally:
        progress.close()
    changed = failed = 0
    for outcome in outcomes:
        path = outcome.path
        if outcome.error is not None:
            failed += 1
            print(f"{path}:1: cannot parse, left unchanged: {outcome.error}", file=err)
            continue
        for report in sorted(outcome.reports + outcome.helpers, key=lambda r: r.line):
            print(f"{path}:{report.line}: {report.reason}", file=err)
        if not outcome.changed:
            continue
        changed += 1
        if mode == "write":
            path.write_text(outcome.code, encoding="utf-8")
            print(f"rewrote {path}", file=out)
        elif mode == "diff":
            out.writelines(difflib.unified_diff(outcome.source.splitlines(True), outcome.code.splitlines(True),
                                                str(path), str(path)))
    if progress.files > 1 or progress.helpers or progress.reported:
        print(f"{len(files)} file(s): {progress.converted} function(s) converted, {progress.helpers} helper "
              f"await(s), {progress.reported} line(s) reported", file=err)
    if mode == "check" and changed:
        print(f"{changed} file(s) would be rewritten", file=err)
        return 1
    return 1 if failed else 0

"""``cutover rewrite`` on real code: third-party Twisted projects, their own suites before and after, and speed.

For each project of the corpus (source distributions from PyPI, cached under
``var/rewrite-corpus``, never committed) this runs the project's trial suite
as published, under Twisted's default reactor and its asyncio reactor; rewrites
a copy of its source and tests with ``--target twisted``; and runs the suite
again under both reactors. The suites run in a virtualenv of their own
(``var/rewrite-corpus/venv``: the projects' dependencies and the same Twisted
as ours), with this checkout first on ``PYTHONPATH`` for ``bridge``.

Speed is timed on the largest project's tree with ``--check`` semantics
(nothing written), one process and the CPU budget's processes, side by side
with the codemod as it was before issue 13 (``BASELINE`` commit, loaded from
git into a package of its own). Needs network only for the first download.
"""

from __future__ import annotations

import importlib.util
import os
import re
import resource
import shutil
import subprocess
import sys
import tarfile
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge import cpu_budget
from bridge.rewrite.runner import collect_files, rewrite_files

from .report import median, report
from .trial_failures import classify, failures

NAME = "rewrite"
ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "var" / "rewrite-corpus"
BASELINE = "5767830"  # the codemod before issue 13
REPEATS = 3
REACTORS = ("default", "asyncio")


@dataclass(frozen=True)
class Project:
    name: str
    version: str
    src: str  # folder of the sdist holding the importable package (and its tests)
    rewrite: tuple[str, ...]  # folders under src that are rewritten (source and tests)
    suite: str  # what trial is given


PROJECTS = (
    Project("txtorcon", "26.6.0", ".", ("txtorcon", "test"), "test"),
    Project("treq", "26.7.0", "src", ("treq",), "treq"),
)
SUITE_DEPS = ("aiosqlite", "multipart", "automat", "attrs", "hyperlink", "incremental", "typing_extensions",
              "httpbin==0.10.2", "werkzeug==3.1.8")


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def _sdist(project: Project) -> Path:
    folder = CACHE / "sdists"
    archive = folder / f"{project.name}-{project.version}.tar.gz"
    if not archive.exists():
        folder.mkdir(parents=True, exist_ok=True)
        done = _run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-d",
                     str(folder), f"{project.name}=={project.version}"], timeout=600)
        if done.returncode != 0 or not archive.exists():
            raise SystemExit(f"bench.rewrite: cannot download {project.name}=={project.version}: "
                             f"{done.stderr.strip().splitlines()[-1:] or done.stdout}")
    return archive


def _unpack(archive: Path, into: Path) -> Path:
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    (top,) = into.iterdir()
    return top


def _venv() -> Path:
    python = CACHE / "venv" / "bin" / "python"
    marker = CACHE / "venv" / ".cutover-ready"
    if marker.exists():
        return python
    import twisted

    if not python.exists():
        done = _run([sys.executable, "-m", "venv", str(CACHE / "venv")], timeout=300)
        if done.returncode != 0:
            raise SystemExit(f"bench.rewrite: cannot create the suites' venv: {done.stderr.strip()}")
    done = _run([str(python), "-m", "pip", "install", "-q", f"twisted[tls]=={twisted.__version__}", *SUITE_DEPS],
                timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"bench.rewrite: cannot install the suites' dependencies: {done.stderr.strip()[-500:]}")
    marker.write_text("ok\n")
    return python


_TOTALS = re.compile(r"(successes|failures|errors|skips|expectedFailures|unexpectedSuccesses)=(\d+)")


def _trial(python: Path, src: Path, reactor: str, what: str, timeout: float) -> tuple[dict[str, int], str, bool]:
    """Run trial on ``what`` (a package or module); its counts, its output and whether it timed out."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(src)]))
    env.pop("PYTHONASYNCIODEBUG", None)  # as published: no debug mode of ours
    choice = [] if reactor == "default" else [f"--reactor={reactor}"]  # default: what Twisted installs by itself
    for _ in range(2):
        try:
            done = _run([str(python), "-m", "twisted.trial", *choice, what], cwd=src, env=env, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
            return {}, out, True
        # trial rebuilds a stale plugin cache (the sdist ships twisted/plugins/) by importing the plugins, which
        # may import the reactor before --reactor installs one; the next run finds the cache fresh.
        if "reactor already installed" not in done.stdout + done.stderr:
            break
    tail = done.stdout.strip().splitlines()[-1:] or [""]
    counts = {key: int(value) for key, value in _TOTALS.findall(tail[0])}
    return counts, done.stdout + done.stderr, False


def _suite(python: Path, project: Project, src: Path, reactor: str, outputs: dict[str, str] | None = None
           ) -> dict[str, int]:
    """Run the project's trial suite; its counts (``successes`` etc.). ``outputs`` keeps trial's output."""
    counts, out, _ = _trial(python, src, reactor, project.suite, 1800)
    if outputs is not None:
        outputs[reactor] = out
    if not counts:
        raise SystemExit(f"bench.rewrite: {project.name}'s suite under {reactor} gave no totals:\n{out[-3000:]}")
    return counts


def _passed(counts: dict[str, int]) -> int:
    return counts.get("successes", 0)


def _not_passed(counts: dict[str, int]) -> int:
    return counts.get("failures", 0) + counts.get("errors", 0) + counts.get("unexpectedSuccesses", 0)


def corpus_rows(python: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows, raw = [], {}
    for project in PROJECTS:
        archive = _sdist(project)
        before = _unpack(archive, CACHE / "work" / project.name / "published") / project.src
        after = _unpack(archive, CACHE / "work" / project.name / "twisted") / project.src
        files = collect_files([after / folder for folder in project.rewrite])
        lines = sum(len(f.read_text(encoding="utf-8").splitlines()) for f in files)
        uses = sum(f.read_text(encoding="utf-8").count("inlineCallbacks") for f in files)
        t0 = time.perf_counter()
        outcomes = rewrite_files(files, "twisted", jobs=1)
        seconds = time.perf_counter() - t0
        for outcome in outcomes:
            if outcome.changed:
                outcome.path.write_text(outcome.code, encoding="utf-8")
        converted = sum(o.converted for o in outcomes)
        outputs: dict[str, str] = {}
        suites = {(when, reactor): _suite(python, project, src, reactor, outputs if when == "before" else None)
                  for when, src in (("before", before), ("after", after)) for reactor in REACTORS}
        BEFORE_FAILING[project.name] = set(failures(outputs["asyncio"]))
        row: dict[str, Any] = {
            "project": f"{project.name} {project.version}", "files": len(files), "lines": lines,
            "inlineCallbacks": uses, "converted": converted,
            "helper awaits": sum(len(o.helpers) for o in outcomes),
            "reported": sum(len(o.reports) + (o.error is not None) for o in outcomes),
            "reported /1k fns": round(1000 * sum(len(o.reports) for o in outcomes) / max(converted, 1), 1),
        }
        for reactor in REACTORS:
            row[f"pass before ({reactor})"] = _passed(suites[("before", reactor)])
            row[f"pass after ({reactor})"] = _passed(suites[("after", reactor)])
        row["not passing before/after"] = "/".join(
            ",".join(str(_not_passed(suites[(when, r)])) for r in REACTORS) for when in ("before", "after"))
        rows.append(row)
        raw[project.name] = {"suites": {f"{w}-{r}": c for (w, r), c in suites.items()}, "rewrite_seconds": seconds,
                             "reports": [f"{o.path.relative_to(after)}:{r.line}: {r.reason}"
                                         for o in outcomes for r in o.reports]}
    return rows, raw


BEFORE_FAILING: dict[str, set[str]] = {}  # project -> tests failing as published under the asyncio reactor
MODULE_TIMEOUT = 150.0  # seconds for one test module after --target asyncio (a converted test may hang)
_RUNNING = re.compile(r"^\s+(\w+) \.\.\. *$")


def _by_module(python: Path, project: Project, src: Path) -> tuple[dict[str, int], str, list[str]]:
    """The suite under the asyncio reactor one test module at a time, so a hanging test stops its module only.

    Its summed counts, the outputs, and the modules that timed out (with the test that was running).
    """
    root = src / project.suite
    modules = sorted(".".join(path.relative_to(src).with_suffix("").parts) for path in root.rglob("test_*.py"))
    totals: dict[str, int] = {}
    outputs, hung = [], []
    for module in modules:
        counts, out, timed_out = _trial(python, src, "asyncio", module, MODULE_TIMEOUT)
        outputs.append(out)
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
        if timed_out:
            running = [m.group(1) for line in out.splitlines() if (m := _RUNNING.match(line))]
            hung.append(f"{module}: {running[-1] if running else '?'}")
    return totals, "\n".join(outputs), hung


def asyncio_rows(python: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each project after ``--target asyncio``, its suite under the asyncio reactor, and which failures the
    report explains (a frame or the failing test on a reported line; see :mod:`bench.trial_failures`)."""
    rows, raw = [], {}
    for project in PROJECTS:
        archive = _sdist(project)
        if project.name not in BEFORE_FAILING:
            before = _unpack(archive, CACHE / "work" / project.name / "published") / project.src
            outputs: dict[str, str] = {}
            _suite(python, project, before, "asyncio", outputs)
            BEFORE_FAILING[project.name] = set(failures(outputs["asyncio"]))
        after = _unpack(archive, CACHE / "work" / project.name / "asyncio") / project.src
        files = collect_files([after / folder for folder in project.rewrite])
        outcomes = rewrite_files(files, "asyncio", jobs=1)
        for outcome in outcomes:
            if outcome.changed:
                outcome.path.write_text(outcome.code, encoding="utf-8")
        reported = {(o.path.resolve(), r.line) for o in outcomes for r in o.reports + o.helpers}
        counts, out, hung = _by_module(python, project, after)
        (CACHE / "work" / project.name / "asyncio-trial.txt").write_text(out, encoding="utf-8")  # to read later
        found = failures(out)
        split = classify(found, reported, after, BEFORE_FAILING[project.name])
        rows.append({
            "project": f"{project.name} {project.version}", "converted": sum(o.converted for o in outcomes),
            "helper awaits": sum(len(o.helpers) for o in outcomes),
            "reported": sum(len(o.reports) + (o.error is not None) for o in outcomes),
            "tests passing after": _passed(counts), "failing (new)": len(split["explained"]) + len(split["unexplained"]),
            "explained by the report": len(split["explained"]), "unexplained": len(split["unexplained"]),
            "modules that hung": len(hung),
        })
        raw[project.name] = {"counts": counts, "hung": hung, "unexplained": {
            test: found[test].blocks[0][1] for test in split["unexplained"]}, "explained": split["explained"]}
    return rows, raw


def _baseline() -> types.ModuleType | None:
    """The codemod as it was at ``BASELINE``, as the package ``rewrite_baseline`` (None outside a git checkout)."""
    target = CACHE / "baseline" / "rewrite_baseline"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("__init__", "transform", "imports", "names", "to_asyncio"):
        shown = _run(["git", "show", f"{BASELINE}:bridge/rewrite/{name}.py"], cwd=ROOT)
        if shown.returncode != 0:
            return None
        (target / f"{name}.py").write_text(shown.stdout, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("rewrite_baseline", target / "__init__.py",
                                                  submodule_search_locations=[str(target)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["rewrite_baseline"] = module
    spec.loader.exec_module(module)
    return module


def _cpu() -> float:
    """CPU seconds of this process and its finished children (worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _time(fn: Any, repeats: int = REPEATS) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds of ``fn()``."""
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = _cpu(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu() - c0)
    return median(walls), median(cpus)


def speed_rows() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    project = PROJECTS[0]
    tree = _unpack(_sdist(project), CACHE / "work" / project.name / "speed") / project.src
    files = collect_files([tree / folder for folder in project.rewrite])
    lines = sum(len(f.read_text(encoding="utf-8").splitlines()) for f in files)
    cpus = cpu_budget().cpus
    rows: list[dict[str, Any]] = []

    def row(what: str, timed: tuple[float, float], processes: int, baseline: float | None) -> dict[str, Any]:
        seconds, cpu = timed
        return {"codemod": what, "tree": f"{project.name}: {len(files)} files, {lines:,} lines",
                "processes": processes, "seconds": seconds, "files/s": len(files) / seconds,
                "files/s per core": len(files) / seconds / processes, "CPU s": cpu,
                "files per CPU s": len(files) / cpu,
                "x baseline (CPU)": None if baseline is None else baseline / cpu}

    old = _baseline()
    baseline_seconds = None
    if old is not None:
        def run_old() -> None:  # as its CLI ran --target twisted: one file at a time, no cross-file pass
            for path in files:
                old.rewrite_source(path.read_text(encoding="utf-8"), "twisted")

        timed = _time(run_old, 1)  # several times slower: one run says enough
        baseline_seconds = timed[1]
        rows.append(row(f"before issue 13 ({BASELINE})", timed, 1, baseline_seconds))
    rows.append(row("now, one process", _time(lambda: rewrite_files(files, "twisted", jobs=1)), 1,
                    baseline_seconds))
    if cpus > 1:  # forced: the CLI uses processes from PROCESS_THRESHOLD files on
        rows.append(row(f"now, {cpus} processes", _time(lambda: rewrite_files(files, "twisted", jobs=cpus,
                                                                             processes_from=1)),
                        cpus, baseline_seconds))
    return rows, {"repeats": REPEATS, "cpus": cpus}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """``python -m bench.rewrite [corpus|asyncio|speed]``: all parts by default."""
    parts = set(argv if argv is not None else sys.argv[1:]) or {"corpus", "asyncio", "speed"}
    rows: list[dict[str, Any]] = []
    if "corpus" in parts:
        rows += _corpus()
    if "asyncio" in parts:
        rows += _asyncio()
    if "speed" in parts:
        rows += _speed()
    return rows


def _corpus() -> list[dict[str, Any]]:
    python = _venv()
    rows, raw = corpus_rows(python)
    report(NAME, rows, notes=[
        "suites: each project's trial suite as published, before and after `cutover rewrite --target twisted` "
        "of its source and tests, under Twisted's default reactor and its asyncio reactor",
        "pass: successes as trial counts them; not passing: failures + errors, before (default,asyncio) / "
        "after (default,asyncio)",
        "helper awaits: `await maybe_awaitable(x)` where x is not known to be awaitable (listed by the codemod); "
        "reported: lines for a person (decorators that change meaning, what is left unconverted)",
        f"sources: PyPI sdists cached under {CACHE.relative_to(ROOT)} (never committed); the suites run in a "
        "venv of their own with the projects' dependencies",
    ], raw=raw, title="rewrite: third-party Twisted projects and their own suites, before and after")
    return rows


def _asyncio() -> list[dict[str, Any]]:
    rows, raw = asyncio_rows(_venv())
    report(f"{NAME}_asyncio", rows, notes=[
        "each project's source and tests after `cutover rewrite --target asyncio`, its trial suite under the "
        f"asyncio reactor one test module at a time ({MODULE_TIMEOUT:.0f} s each: a converted test may hang)",
        "failing (new): tests failing after the rewrite that passed as published; explained: a traceback frame, or "
        "the failing test or its class's setUp/tearDown, is on a line the codemod reported (reports and helper "
        "awaits); unexplained: neither (their errors are in the JSON)",
        "trial runs a converted test method or fixture of a TestCase behind @asyncio_test (an asyncio Task), "
        "so it may await asyncio futures",
    ], raw=raw, title="rewrite_asyncio: --target asyncio on real code, and what its report explains")
    return rows


def _speed() -> list[dict[str, Any]]:
    speed, speed_raw = speed_rows()
    report(f"{NAME}_speed", speed, notes=[
        f"`--check` semantics (nothing written), --target twisted, median of {REPEATS} runs (the baseline: one), "
        "in process (no interpreter start-up); the machine is shared: see loadavg in the JSON",
        f"baseline: the codemod at commit {BASELINE} (before issue 13), loaded from git, same files",
        "files/s per core: files/s divided by the processes used; files per CPU s: the same per CPU second "
        "actually used (user + system, workers included), which a busy shared machine does not inflate",
    ], raw=speed_raw, title="rewrite_speed: the codemod's speed on a 25k-line tree")
    return speed


if __name__ == "__main__":
    main()

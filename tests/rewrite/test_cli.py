"""`cutover rewrite` on real files, and over our own legacy service."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.rewrite import rewrite_source

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).parent / "corpus"


def cutover(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", "rewrite", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_check_diff_and_write(tmp_path: Path) -> None:
    target = tmp_path / "service.py"
    shutil.copy(CORPUS / "basic.before.py", target)
    check = cutover("--check", str(tmp_path))
    assert check.returncode == 1 and "1 file(s) would be rewritten" in check.stderr
    diff = cutover(str(target))
    assert diff.returncode == 0 and "+async def" in diff.stdout.replace("+    async def", "+async def")
    assert target.read_text() == (CORPUS / "basic.before.py").read_text()  # a diff changes nothing
    written = cutover("--write", str(target))
    assert written.returncode == 0
    assert target.read_text() == (CORPUS / "basic.after.py").read_text()
    assert cutover("--check", str(target)).returncode == 0  # idempotent: nothing left to do


def test_what_cannot_be_converted_is_reported_with_file_and_line(tmp_path: Path) -> None:
    target = tmp_path / "odd.py"
    shutil.copy(CORPUS / "nested_reported.before.py", target)
    done = cutover("--check", str(target))
    assert done.returncode == 0  # unchanged...
    assert f"{target}:7:" in done.stderr  # ...but reported


def test_every_inlinecallbacks_in_our_legacy_service_converts_or_is_reported() -> None:
    seen = 0
    for path in sorted((REPO / "legacy").glob("*.py")):
        source = path.read_text()
        uses = source.count("@defer.inlineCallbacks")
        seen += uses
        result = rewrite_source(source)
        ast.parse(result.code)
        left = result.code.count("@defer.inlineCallbacks")
        assert left <= len(result.reports), (path, result.reports)
    assert seen >= 5


CORPUS_ASYNCIO = Path(__file__).parent / "corpus_asyncio"


def test_asyncio_target_writes_what_the_corpus_expects(tmp_path: Path) -> None:
    for name in ("gather", "twisted_sources"):
        shutil.copy(CORPUS_ASYNCIO / f"{name}.before.py", tmp_path / f"{name}.py")
    done = cutover("--target", "asyncio", "--write", str(tmp_path))
    assert done.returncode == 0, done.stderr
    for name in ("gather", "twisted_sources"):
        assert (tmp_path / f"{name}.py").read_text() == (CORPUS_ASYNCIO / f"{name}.after.py").read_text()
    assert f"{tmp_path / 'twisted_sources.py'}:30: " in done.stderr  # the unported caller, with file and line
    assert cutover("--target", "asyncio", "--check", str(tmp_path)).returncode == 0


def test_asyncio_target_knows_what_other_files_converted(tmp_path: Path) -> None:
    (tmp_path / "store.py").write_text(
        "from twisted.internet import defer\n\n\n@defer.inlineCallbacks\ndef load(key):\n"
        "    value = yield defer.succeed(key)\n    defer.returnValue(value)\n"
    )
    (tmp_path / "handler.py").write_text(
        "from twisted.internet import defer\n\nfrom store import load\n\n\n@defer.inlineCallbacks\n"
        "def handle(key):\n    value = yield load(key)\n    defer.returnValue(value)\n"
    )
    done = cutover("--target", "asyncio", "--write", str(tmp_path))
    assert done.returncode == 0, done.stderr
    handler = (tmp_path / "handler.py").read_text()
    assert "value = await load(key)" in handler and "as_future" not in handler
    assert "value = await as_future(defer.succeed(key))" in (tmp_path / "store.py").read_text()


MARKER_TEST = '''
"""Written by tests/rewrite/test_cli.py: proves these tests ran on the converted copy."""
import inspect
from pathlib import Path

import legacy
from legacy import resources, work


def test_the_converted_copy_is_the_legacy_under_test():
    assert Path(legacy.__file__).resolve().is_relative_to(Path(__file__).resolve().parents[2])
    assert inspect.iscoroutinefunction(inspect.unwrap(work.find_domains))
    assert inspect.iscoroutinefunction(inspect.unwrap(resources.Domains.handle))
'''


@pytest.mark.subprocess
def test_legacy_tests_pass_on_a_converted_copy_of_legacy(tmp_path: Path) -> None:
    """Issue 6's bar: convert our own legacy service, then run legacy's tests against the converted copy."""
    work = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("legacy", "modern", "workloads", "tests"):  # the example service is not installed: it is the checkout
        shutil.copytree(REPO / folder, work / folder, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", work / "pyproject.toml")
    before = {p.name: p.read_text().count("inlineCallbacks\n") for p in (work / "legacy").glob("*.py")}

    done = cutover("--target", "twisted", "--write", str(work / "legacy"))
    assert done.returncode == 0, done.stderr
    left = {p.name: p.read_text().count("inlineCallbacks\n") for p in (work / "legacy").glob("*.py")}
    reported = len(re.findall(r"^\S+\.py:\d+: ", done.stderr, flags=re.MULTILINE))
    assert sum(before.values()) >= 5
    assert sum(left.values()) <= reported  # each one left is reported
    assert sum(left.values()) < sum(before.values())  # and most convert

    (work / "tests" / "legacy" / "test_converted_copy.py").write_text(MARKER_TEST)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/legacy", "tests/api", "-k", "not modern", "-q", "-rA",
         "-p", "no:cacheprovider"],
        cwd=work, capture_output=True, text=True, timeout=600,
    )
    tail = run.stdout[-3000:]
    assert run.returncode == 0, tail + run.stderr[-2000:]
    assert "PASSED tests/legacy/test_converted_copy.py::test_the_converted_copy_is_the_legacy_under_test" in run.stdout
    assert " passed" in tail and " failed" not in tail

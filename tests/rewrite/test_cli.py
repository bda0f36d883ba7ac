"""`cutover rewrite` on real files, and over our own legacy service."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

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

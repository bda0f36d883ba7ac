"""README's parity example, verbatim, against both sides of the shop (``cutover serve --only``),
in a project of its own: no pytest-twisted options, no bridge.testing decorators, no conftest of ours."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import WAIT
from tests.ownservice.conftest import Served, cutover_command, env, serve

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE = re.compile(r"<!-- parity-example: (\S+) -->\n```python\n(.*?)```", re.S)


def readme_example() -> dict[str, str]:
    files = dict(EXAMPLE.findall(README.read_text()))
    assert set(files) == {"conftest.py", "test_items.py"}, "README's parity example moved"
    return files


@pytest.fixture
def both_sides(shop_copy: Path, tmp_path: Path) -> Iterator[dict[str, Served]]:
    sides = {stack: serve(shop_copy / "cutover.toml", tmp_path / stack, "--only", stack) for stack in ("legacy", "modern")}
    try:
        yield sides
    finally:
        for side in sides.values():
            side.stop()


def project(tmp_path: Path, extra: dict[str, str] | None = None) -> Path:
    folder = tmp_path / "team-tests"
    folder.mkdir()
    for name, text in {**readme_example(), **(extra or {})}.items():
        (folder / name).write_text(text)
    (folder / "pytest.ini").write_text("[pytest]\n")  # the team's own rootdir: none of this repo's options
    return folder


def urls(sides: dict[str, Served]) -> list[str]:
    return [f"--parity-legacy-url={sides['legacy'].url}", f"--parity-modern-url={sides['modern'].url}"]


def test_the_readme_example_runs_through_cutover_parity(both_sides: dict[str, Served], tmp_path: Path) -> None:
    folder = project(tmp_path)
    result = subprocess.run(
        cutover_command("parity", "--report", str(tmp_path / "parity.json"), "--", "-q", "-p", "no:cacheprovider",
                        *urls(both_sides)),
        capture_output=True, text=True, cwd=folder, env=env(tmp_path / "var"), timeout=WAIT * 2,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    table = {line.split("|")[0].strip(): [c.strip() for c in line.split("|")[1:]]
             for line in result.stdout.splitlines() if line.startswith("GET /items/")}
    assert table["GET /items/apple"] == ["1/1", "1/1", "1/1"]
    assert table["GET /items/pear"] == ["1/1", "1/1", "-"]
    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["routes"]["GET /items/apple"]["same"] == {"equal": 1, "different": 0}


def test_without_the_rule_plain_pytest_fails_with_the_readable_diff(both_sides: dict[str, Served], tmp_path: Path) -> None:
    strict = (
        "async def test_strict(assert_same):\n"
        '    await assert_same("GET", "/items/apple")\n'
    )
    folder = project(tmp_path, {"test_strict.py": strict})
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_strict.py", *urls(both_sides)],
        capture_output=True, text=True, cwd=folder, env=env(tmp_path / "var"), timeout=WAIT * 2,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed" in result.stdout
    assert "GET /items/apple: legacy and modern differ" in result.stdout
    assert "served_at" in result.stdout and "price" not in result.stdout.split("differ", 1)[1].split("\n\n")[0]

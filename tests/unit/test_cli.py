"""The ``cutover`` console script, run for real in a child process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.cli import main

REPO = Path(__file__).resolve().parents[2]


def installed_script() -> str:
    script = Path(sys.executable).parent / "cutover"
    found = str(script) if script.exists() else shutil.which("cutover")
    assert found, "the cutover console script is not installed: run `make install`"
    return found


COMMANDS = {
    "module": lambda: [sys.executable, "-m", "bridge.cli"],
    "script": lambda: [installed_script()],
}


@pytest.fixture(params=sorted(COMMANDS))
def cutover(request: pytest.FixtureRequest) -> list[str]:
    return COMMANDS[request.param]()


def run(command: list[str], *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if k != "CUTOVER_CPUS"}
    child_env.update(env or {})
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, env=child_env, cwd=REPO, timeout=60, check=False
    )


def tree(tmp_path: Path, cpu_max: str) -> str:
    """A cgroup v2 fixture tree whose only limit is ``cpu_max`` at /sys/fs/cgroup/app."""
    files = {
        "proc/self/cgroup": "0::/app\n",
        "proc/self/mountinfo": "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n",
        "sys/fs/cgroup/app/cpu.max": cpu_max,
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return str(tmp_path)


@pytest.mark.subprocess
def test_json(tmp_path: Path, cutover: list[str]) -> None:
    # Half a CPU is tighter than any host, so the answer is exact everywhere.
    result = run(cutover, "cpus", "--root", tree(tmp_path, "50000 100000\n"), "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    payload = json.loads(result.stdout)
    assert set(payload) == {"cpus", "reason"}
    assert payload["cpus"] == 1
    assert payload["reason"].startswith("cgroup v2 cpu.max 50000/100000 = 0.5 at /sys/fs/cgroup/app -> 1")


@pytest.mark.subprocess
def test_text(tmp_path: Path, cutover: list[str]) -> None:
    result = run(cutover, "cpus", "--root", tree(tmp_path, "50000 100000\n"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("1 CPU: cgroup v2 cpu.max 50000/100000 = 0.5 at /sys/fs/cgroup/app -> 1")
    assert result.stdout.count("\n") == 1


@pytest.mark.subprocess
def test_override_from_environment(tmp_path: Path, cutover: list[str]) -> None:
    result = run(cutover, "cpus", "--root", tree(tmp_path, "50000 100000\n"), "--json", env={"CUTOVER_CPUS": "3"})
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["cpus"] == 3
    assert payload["reason"].startswith("CUTOVER_CPUS=3")


@pytest.mark.subprocess
def test_invalid_override_exits_2(tmp_path: Path, cutover: list[str]) -> None:
    result = run(cutover, "cpus", "--root", str(tmp_path), "--json", env={"CUTOVER_CPUS": "abc"})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == "cutover: error: CUTOVER_CPUS must be a positive integer, got 'abc'\n"


@pytest.mark.subprocess
def test_warnings_go_to_stderr(tmp_path: Path, cutover: list[str]) -> None:
    result = run(cutover, "cpus", "--root", tree(tmp_path, "garbage\n"), "--json", env={"PYTHONWARNINGS": "error"})
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)  # still exactly one JSON document
    assert result.stderr.startswith("cutover: warning: ")
    assert "cpu.max" in result.stderr
    assert result.stderr.count("\n") == 1  # once, not again through logging


@pytest.mark.subprocess
def test_real_machine(cutover: list[str]) -> None:
    result = run(cutover, "cpus", "--json")
    assert result.returncode == 0, result.stderr
    cpus = json.loads(result.stdout)["cpus"]
    if hasattr(os, "sched_getaffinity"):
        assert 1 <= cpus <= len(os.sched_getaffinity(0))


# In-process: quick checks of argument handling.


def test_main_returns_0(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUTOVER_CPUS", raising=False)
    assert main(["cpus", "--root", tree(tmp_path, "150000 100000\n"), "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["reason"].startswith("cgroup v2 cpu.max 150000/100000 = 1.5")


def test_root_must_be_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cpus", "--root", str(tmp_path / "nope")]) == 2
    assert "cutover: error: --root" in capsys.readouterr().err


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "cutover: error:" in capsys.readouterr().err

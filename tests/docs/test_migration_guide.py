"""MIGRATION.md is run, not just read: every ``$ command`` in its console blocks, in order.

The commands run in a copy of the repository (the guide edits ``cutover.toml``), with
the installed ``cutover`` on PATH. ``make run`` starts the co-hosted service exactly as
the Makefile does, on a free port instead of 8000. The lines shown under a command are
checked against what it printed: each must appear in a line of the output, and ``...``
stands for lines the guide leaves out. Fenced blocks of other kinds (``python``,
``toml``, ``sh``) are examples, not commands, and are not run.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "MIGRATION.md"
DOC_URL = "http://127.0.0.1:8000"
WAIT = 120


@dataclass
class Command:
    line: int
    text: str
    expected: list[str] = field(default_factory=list)


def console_commands(markdown: str) -> list[Command]:
    commands: list[Command] = []
    in_console = False
    for number, line in enumerate(markdown.splitlines(), start=1):
        if line.startswith("```"):
            in_console = line.strip() == "```console" and not in_console
            continue
        if not in_console:
            continue
        if line.startswith("$ "):
            commands.append(Command(number, line[2:].strip()))
        elif commands and line.strip() and line.strip() != "...":
            commands[-1].expected.append(line.rstrip())
    return commands


def _without_comment(command: str) -> str:
    """Drop a trailing ``  # comment`` (the guide's asides), leaving quoted text alone."""
    return re.sub(r"\s+#\s[^'\"]*$", "", command)


def _make_run_recipe() -> str:
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^run:.*\n\t(.+)$", makefile, flags=re.MULTILINE)
    assert recipe, "the Makefile has no run target"
    return recipe.group(1).replace("$(BIN)/", "")


class Server:
    """``make run``'s server, started once in the background."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []
        self.settings: dict[str, str] = {}
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader: threading.Thread | None = None

    def start(self, command: str, cwd: Path, env: dict[str, str]) -> None:
        settings = {k: v for k, v in env.items() if k.startswith("CUTOVER_")}
        if self.child is not None:  # started again further on: the same server, if set up the same way
            assert settings == self.settings, f"make run again with other settings: {settings} != {self.settings}"
            return
        self.settings = settings
        self.child = subprocess.Popen(
            [*command.split(), "--port", "0"], cwd=cwd, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        assert self.child.stdout is not None
        lines = self.lines
        # read all along: the server's log must never fill the pipe and stall it
        self.reader = threading.Thread(target=lambda: [lines.put(line) for line in self.child.stdout], daemon=True)  # type: ignore[union-attr]
        self.reader.start()
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.output.append(line)
            if found := re.search(r"running on (http://127\.0\.0\.1:\d+)", line):
                self.url = found.group(1)
                return
            if self.child.poll() is not None and lines.empty():
                break
        raise AssertionError("make run did not start listening:\n" + "".join(self.output))

    def stop(self) -> str:
        if self.child is None:
            return ""
        self.child.send_signal(signal.SIGTERM)
        try:
            self.child.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait(timeout=WAIT)
        if self.reader is not None:
            self.reader.join(timeout=WAIT)  # EOF follows the exit
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get_nowait())
        return "".join(rest)


def test_the_guide_has_a_worked_example_to_run() -> None:
    commands = [_without_comment(c.text) for c in console_commands(GUIDE.read_text())]
    assert "make run" in commands and "cutover status" in commands
    assert any(c.startswith("cutover rewrite --target asyncio") for c in commands)
    assert any(c.startswith("cutover parity") for c in commands)
    assert any('"mode": "modern"' in c for c in commands)


def test_console_blocks_are_parsed_with_their_output() -> None:
    text = "```console\n$ echo hi  # greet\nhi\n...\n```\n```sh\n$ not run\n```\n"
    (only,) = console_commands(text)
    assert (only.line, _without_comment(only.text), only.expected) == (2, "echo hi", ["hi"])


@pytest.mark.subprocess
def test_every_command_in_migration_md_runs_and_prints_what_the_guide_shows(tmp_path: Path) -> None:
    work = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "var")
    for folder in ("legacy", "modern", "workloads", "tests"):
        shutil.copytree(REPO / folder, work / folder, ignore=ignore)
    for name in ("cutover.toml", "pyproject.toml", "Makefile"):
        shutil.copy(REPO / name, work / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "CUTOVER_CPUS": "2"}
    env.pop("CUTOVER_ADMIN_TOKEN", None)
    server = Server()
    ran: list[str] = []
    try:
        for command in console_commands(GUIDE.read_text()):
            text = _without_comment(command.text)
            where = f"MIGRATION.md:{command.line}: {text}"
            if exported := re.fullmatch(r"export (\w+)=(\S+)", text):
                env[exported.group(1)] = exported.group(2)
                ran.append(text)
                continue
            if text == "make run":
                server.start(_make_run_recipe(), work, env)
                ran.append(text)
                continue
            if DOC_URL in text:
                assert server.url, f"{where}: needs the server, but no `make run` came before it"
                text = text.replace(DOC_URL, server.url)
            done = subprocess.run(["bash", "-c", text], cwd=work, env=env, capture_output=True, text=True,
                                  timeout=600)
            output = done.stdout + done.stderr
            assert done.returncode == 0, f"{where}\nexited {done.returncode}:\n{output[-3000:]}"
            lines = output.splitlines()
            for expected in command.expected:
                assert any(expected.strip() in line for line in lines), (
                    f"{where}\nthe guide shows {expected.strip()!r}, the command printed:\n{output[-3000:]}"
                )
            ran.append(text)
    finally:
        rest = server.stop()
    assert "make run" in ran and len(ran) >= 10
    assert "Traceback" not in "".join(server.output) + rest

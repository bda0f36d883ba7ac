"""``bench.trial_failures``: failing tests of a real trial run, and which of them a report explains."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.trial_failures import classify, failures

CASE = '''
from twisted.trial import unittest


class Base(unittest.TestCase):
    def setUp(self):
        self.value = 1


class Cases(Base):
    def test_passes(self):
        self.assertEqual(self.value, 1)

    def test_fails_on_a_line(self):
        self.assertEqual(self.value, 2)  # line 15

    def test_errors(self):
        raise RuntimeError("boom")  # line 18
'''


@pytest.mark.subprocess
def test_failures_of_a_trial_run_and_what_explains_them(tmp_path: Path) -> None:
    (tmp_path / "case_mod.py").write_text(CASE)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    run = subprocess.run([sys.executable, "-m", "twisted.trial", "case_mod"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    found = failures(run.stdout)
    assert sorted(found) == ["case_mod.Cases.test_errors", "case_mod.Cases.test_fails_on_a_line"], run.stdout
    assert "RuntimeError" in found["case_mod.Cases.test_errors"].blocks[0][1]
    module = (tmp_path / "case_mod.py").resolve()
    # a frame on a reported line explains test_fails_on_a_line; a report in the inherited setUp explains both
    split = classify(found, {(module, 15)}, tmp_path)
    assert split == {"explained": ["case_mod.Cases.test_fails_on_a_line"], "unexplained": ["case_mod.Cases.test_errors"]}
    split = classify(found, {(module, 7)}, tmp_path)
    assert split["explained"] == sorted(found) and not split["unexplained"]
    assert classify(found, set(), tmp_path, ignore={"case_mod.Cases.test_errors"})["unexplained"] == [
        "case_mod.Cases.test_fails_on_a_line"]

"""The parity package stays lean: importing it, its diff engine or its plugin never imports Hypothesis."""

from __future__ import annotations

import subprocess
import sys


def test_hypothesis_is_imported_only_with_the_strategies() -> None:
    probe = ("import sys; import bridge.parity, bridge.parity.diff, bridge.parity.plugin, bridge.host.mirror; "
             "print('hypothesis' in sys.modules); import bridge.parity.strategies; print('hypothesis' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["False", "True"], done.stdout + done.stderr

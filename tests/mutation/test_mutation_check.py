"""The mutation check on a small sample, in CI: each sampled mutant of modern/ must be caught.

The full check (every mutant, both judges, the report) is ``python -m bench mutants``;
here two mutants (a status code and a field name) face the offline judge, the
parity suite, which must fail on each. The unmutated tree passing is what the
parity suite itself shows in the same run (tests/parity).
"""

from __future__ import annotations

import pytest

from tests.mutation.mutants import MUTANTS, SAMPLE, Mutant, check, mutated_tree

BY_NAME = {mutant.name: mutant for mutant in MUTANTS}


def test_every_mutant_applies_once_and_changes_the_code() -> None:
    assert len(BY_NAME) == len(MUTANTS)
    kinds = {mutant.kind for mutant in MUTANTS}
    assert {"status", "field", "rounding", "ordering", "default", "header"} <= kinds
    for mutant in MUTANTS:
        with mutated_tree(mutant) as root:
            assert mutant.new in (root / "modern" / mutant.file).read_text()
    with mutated_tree(None) as root, pytest.raises(ValueError, match="not once"):
        Mutant("bogus", "status", "routes.py", "no such text", "x").apply(root / "modern")


@pytest.mark.parametrize("name", SAMPLE)
def test_the_parity_suite_catches_a_sampled_mutant(name: str) -> None:
    verdict, seconds = check(BY_NAME[name], ("offline",))["offline"]
    assert verdict == "fail", f"{name}: the parity suite said {verdict} after {seconds:.0f}s"

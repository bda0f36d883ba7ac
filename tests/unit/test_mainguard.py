"""Recognising the `if __name__ == "__main__":` guard in a main script."""

from __future__ import annotations

import pytest

from bridge.mainguard import has_main_guard


@pytest.mark.parametrize(
    "source",
    [
        'if __name__ == "__main__":\n    main()\n',
        "if '__main__' == __name__:\n    main()\n",
        'import sys\nif __name__ == "__main__" and len(sys.argv) > 1:\n    main()\n',
    ],
)
def test_guards_are_recognised(source: str) -> None:
    assert has_main_guard(source)


@pytest.mark.parametrize(
    "source",
    [
        "main()\n",
        'def f():\n    if __name__ == "__main__":\n        main()\n',  # not at top level
        'if __name__ != "__main__":\n    main()\n',
        'if __name__ == "__main__" or True:\n    main()\n',
    ],
)
def test_missing_guards_are_caught(source: str) -> None:
    assert not has_main_guard(source)

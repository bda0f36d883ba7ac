"""What both stacks answer: the n-th quote."""

from __future__ import annotations

QUOTES = ("Simple is better than complex.", "Flat is better than nested.", "Readability counts.")


def quote(n: int) -> dict[str, object]:
    return {"n": n, "text": QUOTES[n % len(QUOTES)]}

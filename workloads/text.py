"""Domain names mentioned in a large text, in chunks the pool can spread over workers.

A domain never contains whitespace, and the pattern's edges accept whitespace
and the ends of the string alike, so cutting the text only at whitespace gives
every chunk exactly the matches the whole text has: mapping
``extract_domains_chunk`` over ``split_chunks`` and merging in order equals
``extract_domains`` on the whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ._checks import bounded_output, integer
from .errors import InvalidInput

DEFAULT_CHUNK_CHARS = 1_000_000
DEFAULT_MAX_CHARS = 50_000_000

#: Dot-separated DNS labels ending in an alphabetic TLD. Not preceded by a word
#: character, dot or hyphen (so a match starts at the start of its token), not
#: followed by one or by ``@`` (so ``first.last@x.org`` yields only ``x.org``).
#: Trailing sentence dots are never part of a match. Without a TLD list,
#: file names such as ``notes.txt`` match too. Labels are capped at 63
#: characters by the pattern, whole names at 253 by the code.
DOMAIN = re.compile(
    r"(?<![\w.-])"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,63}"
    r"(?![\w@-])"
)  # explicit ASCII classes: IGNORECASE would let [a-z] match the Kelvin sign
_WHITESPACE = re.compile(r"\s")
MAX_DOMAIN_CHARS = 253  # the DNS limit; a longer dotted run is not a hostname


def split_chunks(text: str, chunk_chars: int = DEFAULT_CHUNK_CHARS) -> list[str]:
    """Cut ``text`` into pieces of at least ``chunk_chars`` characters, only just after whitespace.

    ``"".join(chunks) == text``; a run with no whitespace is never cut, so a
    chunk grows past ``chunk_chars`` up to the next whitespace (or the end).
    """
    size = integer("chunk_chars", chunk_chars, 1, 2**62)
    chunks: list[str] = []
    start = 0
    while start < len(text):
        space = _WHITESPACE.search(text, start + size - 1)
        end = len(text) if space is None else space.end()
        chunks.append(text[start:end])
        start = end
    return chunks


def extract_domains_chunk(chunk: str) -> list[str]:
    """Every domain occurrence in ``chunk``, lowercased, in order of appearance."""
    found = (match.group() for match in DOMAIN.finditer(chunk))
    return [domain.lower() for domain in found if len(domain) <= MAX_DOMAIN_CHARS]


def merge_domains(chunks_results: Iterable[list[str]]) -> dict[str, Any]:
    """Combine per-chunk occurrences, given in chunk order.

    Returns ``{"domains": [each distinct domain, in order of first appearance], "count": occurrences}``;
    ``output_too_large`` if that is over :data:`~workloads._checks.MAX_OUTPUT_BYTES` of JSON (domains
    are ASCII, so the size is counted without serialising: the services merge on their event loop).
    """
    seen: dict[str, None] = {}
    count = 0
    for found in chunks_results:
        count += len(found)
        seen.update(dict.fromkeys(found))
    domains = list(seen)
    size = sum(map(len, domains)) + 3 * len(domains) + len(f'{{"domains":[],"count":{count}}}')
    return bounded_output({"domains": domains, "count": count}, f"{len(domains)} distinct domains", size)


def check_text(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> None:
    """Refuse non-text, empty (or whitespace-only) text and text over ``max_chars``.

    The checks of :func:`extract_domains`, for services that map the chunks over a pool themselves.
    """
    if not isinstance(text, str):
        raise InvalidInput("invalid_parameter", f"expected text (str), got {type(text).__name__}")
    limit = integer("max_chars", max_chars, 1, 2**62)
    if not text or text.isspace():
        raise InvalidInput("empty_input", "the text is empty")
    if len(text) > limit:
        raise InvalidInput("text_too_large", f"the text is {len(text)} characters, over the limit of {limit}")


def extract_domains(text: str, *, max_chars: int = DEFAULT_MAX_CHARS) -> dict[str, Any]:
    """The one-call form: ``merge_domains([extract_domains_chunk(text)])`` after checking the input."""
    check_text(text, max_chars)
    return merge_domains([extract_domains_chunk(text)])

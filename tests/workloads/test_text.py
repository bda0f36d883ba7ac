"""Domain extraction: the reference cases, and chunked extraction equal to the one-call form."""

from __future__ import annotations

import random

import pytest

from tests.synth import assert_plain
from workloads import InvalidInput, extract_domains, extract_domains_chunk, merge_domains, split_chunks

REFERENCE_TEXT = """\
Visit https://www.Example.com/path?q=1 or http://sub.example.co.uk:8080/x, then
mail First.Last@Mail.Example.ORG (and ops@example.com). Bare: example.com. again,
"cdn.example.net", <api.test-site.io>; trailing dots: host.example.com... done.
HTTP://WWW.EXAMPLE.COM/ shouting, xn--bcher-kva.example.\tnext\u3000tokyo.example.jp
Not domains: 1.2.3.4, v2.0, e.g. localhost, a-.com? müller.de, foo_bar.baz, .com alone.
"""
REFERENCE_OCCURRENCES = [
    "www.example.com",
    "sub.example.co.uk",
    "mail.example.org",
    "example.com",
    "example.com",
    "cdn.example.net",
    "api.test-site.io",
    "host.example.com",
    "www.example.com",
    "xn--bcher-kva.example",
    "tokyo.example.jp",
]


def test_the_reference_text_gives_the_reference_domains() -> None:
    assert extract_domains_chunk(REFERENCE_TEXT) == REFERENCE_OCCURRENCES
    result = extract_domains(REFERENCE_TEXT)
    assert_plain(result)
    assert result == {"domains": list(dict.fromkeys(REFERENCE_OCCURRENCES)), "count": len(REFERENCE_OCCURRENCES)}


def test_names_longer_than_dns_allows_are_not_domains() -> None:
    longest = "a." * 125 + "com"  # 253 characters
    assert extract_domains_chunk(f"{longest} a{longest} {'b' * 63}.com {'b' * 64}.com") == [longest, "b" * 63 + ".com"]


@pytest.mark.parametrize("chunk_chars", [1, 7, 50, 333, 10_000])
def test_chunked_extraction_equals_the_one_call_form(chunk_chars: int) -> None:
    chunks = split_chunks(REFERENCE_TEXT, chunk_chars)
    assert merge_domains([extract_domains_chunk(chunk) for chunk in chunks]) == extract_domains(REFERENCE_TEXT)


WHITESPACE = [" ", " ", " ", "\n", "\t", "\r\n", "\u3000", "\x0b", "  "]
PIECES = [
    "example.com", "Sub.Example.co.uk", "a.b.c.museum", "x-y.org", "http://host.example.net/p?a=b.c",
    "user@mail.example.io", "first.last@corp.example", "(paren.example.com)", "end.example.com.",
    "word", "1.2.3.4", "trail-", "-lead.com", ".", "@", "a", "e.g.", "ünï.code.de", "foo.x",
    "noseparator" * 30, "glued.example.com,next.example.org",
]


def random_text(rng: random.Random) -> str:
    parts = [rng.choice(WHITESPACE) if rng.random() < 0.2 else "" for _ in range(2)]
    for _ in range(rng.randrange(0, 60)):
        parts.append(rng.choice(PIECES) if rng.random() < 0.7 else rng.choice(",.;:!?\"'<>"))
        parts.append(rng.choice(WHITESPACE) if rng.random() < 0.7 else "")
    return "".join(parts)


def test_split_chunks_cuts_only_at_whitespace_and_chunked_results_match() -> None:
    rng = random.Random(20260)
    for _ in range(400):
        text = random_text(rng)
        size = rng.choice([1, 2, 5, 17, 64, 200, 5000])
        chunks = split_chunks(text, size)
        assert "".join(chunks) == text
        assert all(chunks)
        for chunk in chunks[:-1]:
            assert len(chunk) >= size and chunk[-1].isspace()
            assert not any(c.isspace() for c in chunk[size - 1 : -1])  # cut at the first chance
        assert [token for chunk in chunks for token in chunk.split()] == text.split()
        if text.strip():
            assert merge_domains([extract_domains_chunk(chunk) for chunk in chunks]) == extract_domains(text)


def test_a_run_without_whitespace_grows_its_chunk_to_the_next_whitespace() -> None:
    long = "a" * 100 + ".example.com"
    assert split_chunks(f"{long} b.org c", 10) == [f"{long} ", "b.org c"]
    assert split_chunks(long, 10) == [long]
    assert split_chunks("", 10) == []


def test_merge_keeps_first_appearance_order_across_chunks() -> None:
    merged = merge_domains([["b.com", "a.com"], [], ["a.com", "c.com", "b.com"]])
    assert merged == {"domains": ["b.com", "a.com", "c.com"], "count": 5}
    assert merge_domains([]) == {"domains": [], "count": 0}


def test_a_large_text_in_pool_sized_chunks_agrees() -> None:
    text = (REFERENCE_TEXT + " filler words without dots " * 40) * 400  # about 560 kB
    whole = extract_domains(text)
    assert whole["count"] == 400 * len(REFERENCE_OCCURRENCES)
    chunks = split_chunks(text, 65_536)
    assert len(chunks) > 5
    assert merge_domains(extract_domains_chunk(chunk) for chunk in chunks) == whole


@pytest.mark.parametrize(
    ("text", "kwargs", "code"),
    [
        ("", {}, "empty_input"),
        (" \n\t ", {}, "empty_input"),
        ("a.com " * 10, {"max_chars": 59}, "text_too_large"),
        (b"example.com", {}, "invalid_parameter"),
        ("example.com", {"max_chars": 0}, "invalid_parameter"),
    ],
    ids=["empty", "whitespace", "too-large", "bytes", "bad-limit"],
)
def test_bad_text_is_refused(text: str, kwargs: dict[str, int], code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        extract_domains(text, **kwargs)
    assert caught.value.code == code


def test_the_limit_is_inclusive() -> None:
    assert extract_domains("a.com " * 10, max_chars=60)["count"] == 10


@pytest.mark.parametrize("chunk_chars", [0, -1, 2.5])
def test_a_bad_chunk_size_is_refused(chunk_chars: int) -> None:
    with pytest.raises(InvalidInput, match="chunk_chars") as caught:
        split_chunks("a b", chunk_chars)
    assert caught.value.code == "invalid_parameter"

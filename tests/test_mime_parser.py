"""Extraction's MIME parser (gateway/inbound/extraction/mime.py) builds the tree the standard
library's BytesParser builds, on the corpus, its malformed messages, boundaries made of
every character a pattern could mistake, and fuzzed messages."""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from email.message import Message
from email.parser import BytesParser
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.inbound.extraction import mime
from gateway.inbound.extraction.headers import PARSING_POLICY
from gateway.inbound.extraction.mime import parse_message
from tests.corpus import make_corpus as corpus
from tests.test_fuzz import _MESSAGE


def tree(message: Message) -> list[Any]:
    """All a parse decides, part by part: headers as read, structure, payload, defects.
    Walked without recursion, and what raises (a header nested past the recursion limit)
    recorded as raising, so that a deeply nested message compares too."""
    found: list[Any] = []
    parts = [message]
    while parts:
        part = parts.pop()
        multipart = part.is_multipart()
        found.append(
            (
                list(part.raw_items()),
                _outcome(part.get_content_type),
                multipart,
                None if multipart else part.get_payload(),
                part.preamble,
                part.epilogue,
                [type(d).__name__ for d in part.defects],
                part.get_unixfrom(),
            )
        )
        if multipart:
            parts.extend(reversed(part.get_payload()))
    return found


def _outcome(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception as exc:
        return ("raised", type(exc).__name__)


def assert_same_tree(raw: bytes) -> None:
    """Both parsers build the same tree, or both raise the same (a structure nested past
    the recursion limit)."""
    expected = _outcome(lambda: tree(BytesParser(policy=PARSING_POLICY).parsebytes(raw)))
    assert _outcome(lambda: tree(parse_message(raw, PARSING_POLICY))) == expected


CORPUS = {
    **{name: build() for name, build in corpus.ALL_MESSAGES.items()},
    **{f"malformed {name}": raw for name, raw in corpus.malformed_mime().items()},
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_message_parses_to_the_same_tree(name: str) -> None:
    assert_same_tree(CORPUS[name])


# Characters a boundary may hold (RFC 2046 bchars) and some it may not, each of which means
# something in a regular expression, at the start, middle and end.
_BOUNDARY_CHARS = "'()+_,-./:=? \\[]*^$|{}\t\"a0"


def _multipart(boundary: str, ending: str, trailer: str) -> bytes:
    line = f"--{boundary}"
    body = (
        f"preamble{ending}{line}{trailer}{ending}Content-Type: text/plain{ending}{ending}"
        f"one{ending}{line}{ending}Content-Type: application/pdf{ending}{ending}%PDF-1.4"
        f"{ending}{line}--{trailer}{ending}epilogue{ending}"
    )
    head = f'Content-Type: multipart/mixed; boundary="{boundary}"{ending}{ending}'
    return (head + body).encode("utf-8", "surrogateescape")


def test_boundaries_of_every_awkward_character_and_line_ending_parse_the_same() -> None:
    rng = random.Random(14)
    checked = 0
    for _ in range(600):
        boundary = "".join(rng.choice(_BOUNDARY_CHARS) for _ in range(rng.randint(1, 12)))
        for ending in ("\r\n", "\n", "\r"):
            trailer = rng.choice(["", " ", "\t \t", "--", "x", " -- "])
            assert_same_tree(_multipart(boundary, ending, trailer))
            checked += 1
    assert checked == 1800


def test_the_boundary_pattern_is_answered_without_compiling() -> None:
    """The point of the module: feedparser's per-boundary pattern is not compiled (were the
    standard library to build it differently, this fails and every pattern compiles)."""
    separator = "--=_Part_(1)+[x]"
    pattern = mime._feedparser.re.compile(
        "(?P<sep>"
        + mime.re.escape(separator)
        + r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
    )
    assert isinstance(pattern, mime._BoundaryPattern)
    source = sys.modules["email.feedparser"].__loader__.get_source("email.feedparser")  # type: ignore[union-attr]
    assert r"')(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$')" in source
    assert "re.escape(separator)" in source
    assert sys.modules["email.feedparser"].re is mime.re  # the standard module, untouched


@settings(max_examples=300, deadline=None)
@given(raw=_MESSAGE)
def test_fuzzed_messages_parse_to_the_same_tree(raw: bytes) -> None:
    assert_same_tree(raw)


@settings(max_examples=200, deadline=None)
@given(
    boundary=st.text(alphabet=_BOUNDARY_CHARS + "é\x00", min_size=1, max_size=20),
    ending=st.sampled_from(["\r\n", "\n", "\r"]),
    trailer=st.text(alphabet=" \t-x", max_size=4),
)
def test_fuzzed_boundaries_parse_the_same(boundary: str, ending: str, trailer: str) -> None:
    assert_same_tree(_multipart(boundary, ending, trailer))


def test_a_body_ending_in_any_run_of_line_ends_parses_the_same() -> None:
    """The last-line-end search starts two characters from the end: bodies (and the
    epilogue of a nested multipart) ending in every run of CR, LF and CRLF, and in none."""
    tails = ["", "x", "\r", "\n", "\r\n", "\n\r", "\r\r", "\n\n", "\r\n\r\n", "\r\r\n", "x\r"]
    checked = 0
    for ending in ("\r\n", "\n", "\r"):
        for tail in tails:
            inner = (
                f'Content-Type: multipart/mixed; boundary="in"{ending}{ending}'
                f"--in{ending}{ending}inner{tail}{ending}--in--{ending}epi{tail}"
            )
            raw = (
                f'Content-Type: multipart/mixed; boundary="out"{ending}{ending}'
                f"pre{tail}{ending}--out{ending}{ending}body{tail}{ending}"
                f"--out{ending}{inner}{ending}--out{ending}{ending}{tail}{ending}--out--"
            )
            assert_same_tree(raw.encode())
            checked += 1
    assert checked == 33


def test_the_line_end_search_starts_at_the_end() -> None:
    """feedparser's `(\\r\\n|\\r|\\n)\\Z` is searched from two characters before the end
    (were the standard library to change the pattern, this fails and it is searched as before)."""
    eol = mime._feedparser.NLCRE_eol
    assert isinstance(eol, mime._EndOfLine)
    standard = sys.modules["email.feedparser"].NLCRE_eol
    for text in ["", "\n", "ab\r\n", "\r\n\n", "a\r", "\n\r\n", "x" * 50_000 + "\r\n", "abc"]:
        found, expected = eol.search(text), standard.search(text)
        assert (found and found.group(0)) == (expected and expected.group(0)), repr(text[-4:])

"""Plain headers read without the RFC 5322 parser (gateway/inbound/extraction/simple_headers.py)
are what the email package's header registry builds: the same string, parameters, types,
addresses and defects (none), on generated values near and far from plain, and on every
header of the test corpus."""

from __future__ import annotations

import random
from email import policy
from email.message import Message
from typing import Any

import pytest

from gateway.inbound.extraction.headers import PARSING_POLICY
from gateway.inbound.extraction.mime import parse_message
from gateway.inbound.extraction.simple_headers import simple_header
from tests.corpus import make_corpus as corpus

_REGISTRY = policy.default.header_factory
_ATTRIBUTES = (
    "params",
    "content_type",
    "maintype",
    "subtype",
    "content_disposition",
    "groups",
    "addresses",
)


def read_alike(name: str, value: str) -> bool:
    """True when the plain reading applies; then it must equal the registry's in all it says."""
    fast = simple_header(name, value)
    if fast is None:
        return False
    real = _REGISTRY(name, value)
    assert str(fast) == str(real), (name, value)
    assert fast.name == real.name
    assert fast.defects == real.defects == (), (name, value, real.defects)
    for attribute in _ATTRIBUTES:
        if hasattr(real, attribute):
            assert getattr(fast, attribute) == getattr(real, attribute), (name, value, attribute)
    for fast_address, real_address in zip(
        getattr(fast, "addresses", ()), getattr(real, "addresses", ()), strict=True
    ):
        for part in ("display_name", "username", "domain", "addr_spec"):
            assert getattr(fast_address, part) == getattr(real_address, part), (value, part)
    return True


def _pick(rng: random.Random, *choices: Any) -> Any:
    """Mostly the first choice (the plain one), else any: values near plain and far from it."""
    return choices[0] if rng.random() < 0.6 else rng.choice(choices)


_TOKENS = ("pdf", "a.b", "x-y", "A", "9", "*", "a*", "é", "a/b", "a b", "", "(c)", "a?", "=")
_VALUES = (
    "utf-8",
    '"facture 3.pdf"',
    '"=====b=="',
    '"a\\"b"',
    '""',
    '" "',
    "=?utf-8?q?x?=",
    '"=?utf-8?q?x?="',
    "é",
    "a b",
    "a(c)",
    '"x',
    "x'",
    "a;b",
    '"é"',
    "UTF-8",
)
_SEPARATORS = (";", "; ", " ;", ";  ", ";\t", " ; ", ",", "")


def _parameters(rng: random.Random) -> str:
    text = ""
    for _ in range(rng.randint(0, 3)):
        key = _pick(rng, "name", "charset", "Name", "filename", "filename*", "a-b", "n", "x y")
        equals = _pick(rng, "=", "=", "=", " = ", " =")
        text += _pick(rng, *_SEPARATORS) + key + equals + _pick(rng, *_VALUES)
    return text + _pick(rng, "", "", "", ";", " ", "(c)", "; ")


def _content_type(rng: random.Random) -> str:
    kind = _pick(rng, "text", "application", "multipart", "TEXT", "x-foo", "a.b", *_TOKENS)
    sub = _pick(rng, "plain", "pdf", "Mixed", "vnd.ms-excel", "x+y", *_TOKENS)
    return kind + _pick(rng, "/", "/", "/", " / ", "") + sub + _parameters(rng)


def _disposition(rng: random.Random) -> str:
    kind = _pick(rng, "attachment", "inline", "Attachment", "form-data", *_TOKENS)
    return kind + _parameters(rng)


def _address(rng: random.Random) -> str:
    local = _pick(rng, "a", "jean.dupont", "a..b", ".a", "a+b", "a=?b", "é", "a b", '"a b"', "")
    domain = _pick(rng, "example.org", "x", "a-b.fr", "[1.2.3.4]", "a..b", "-a.fr", "é.fr", "")
    spec = local + _pick(rng, "@", "@", "@", " @ ", "") + domain
    display = _pick(
        rng,
        "",
        "",
        "Jean ",
        "Jean Dupont ",
        '"Jean" ',
        '"Dupont, Jean" ',
        '"" ',
        '" " ',
        "J. Dupont ",
        "=?utf-8?q?J=C3=A9?= ",
        '"a\\"b" ',
        "Jean  ",
        "Jean",
        "Éric ",
        "a@b ",
    )
    if display or rng.random() < 0.3:
        spec = f"{display}<{spec}>"
    return spec + _pick(rng, "", "", "", " ", ",", " (c)", ", b@c.fr")


def _subject(rng: random.Random) -> str:
    words = ("Facture", "3", "=?utf-8?q?x?=", "a=?b", "é", "\t", " ", "", "x\x01", "(c)", "?=")
    return _pick(rng, " ", "  ", "").join(_pick(rng, *words) for _ in range(rng.randint(0, 5)))


@pytest.mark.parametrize(
    ("names", "generate"),
    [
        (("Content-Type", "content-type"), _content_type),
        (("Content-Disposition",), _disposition),
        (("From", "to", "Reply-To", "Sender"), _address),
        (("Subject",), _subject),
    ],
)
def test_generated_values_read_as_the_registry_reads_them(names: Any, generate: Any) -> None:
    rng = random.Random(15)
    plain = 0
    for _ in range(6000):
        plain += read_alike(rng.choice(names), generate(rng))
    # Both readings were exercised (the plain one is not a reading that never applies).
    assert 300 < plain < 5700, plain


def _all_headers(message: Message) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    parts: list[Any] = [message]
    while parts:
        part = parts.pop()
        # Unfolded as the policy does before the registry sees a value.
        found += [(k, "".join(str(v).splitlines())) for k, v in part.raw_items()]
        payload = part.get_payload()
        if isinstance(payload, list):
            parts += [p for p in payload if isinstance(p, Message)]
    return found


def test_every_header_of_the_corpus_reads_as_the_registry_reads_it() -> None:
    plain = checked = 0
    for build in corpus.ALL_MESSAGES.values():
        for name, value in _all_headers(parse_message(build(), PARSING_POLICY)):
            if "\r" in value or "\n" in value:
                continue
            checked += 1
            plain += read_alike(name, value)
    assert checked > 200 and plain > 60, (checked, plain)


def test_extraction_reads_plain_headers_without_the_registry() -> None:
    """The policy extraction parses with answers plain values from simple_headers."""
    message = parse_message(
        b"From: Jean Dupont <jean@example.org>\r\nSubject: Facture 3\r\n"
        b'Content-Type: application/pdf; name="f.pdf"\r\n'
        b"Content-Disposition: attachment; filename=f.pdf\r\n\r\n%PDF-1.4\r\n",
        PARSING_POLICY,
    )
    for name in ("from", "subject", "content-type", "content-disposition"):
        assert type(message[name]).__module__.endswith("simple_headers"), name
    assert message.get_filename() == "f.pdf"
    assert message["from"].addresses[0].addr_spec == "jean@example.org"
    encoded = parse_message(b"Subject: =?utf-8?q?Fa=C3=A7ture?=\r\n\r\n", PARSING_POLICY)
    assert type(encoded["subject"]).__module__ == "email.headerregistry"
    assert str(encoded["subject"]) == "Façture"

"""What a message read from a mailbox says about itself: the addresses it was delivered to
(its routing headers) and its fingerprint, by which it is recognised when read again under
another UID. Only the header block is parsed: the parser would otherwise walk the whole body
line by line."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from typing import Any

from gateway.inbound.extraction.headers import message_id_of, sender_of, subject_of

ROUTING_HEADERS: tuple[tuple[str, ...], ...] = (("Delivered-To",), ("X-Original-To",), ("To", "Cc"))


def header_end(raw: bytes) -> int:
    """Where the header block ends (the blank line), or the end of a header-only message."""
    found = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    return min(found) if found else len(raw)


def parse_header_block(raw: bytes) -> Message:
    """The headers of a raw message, without parsing its body."""
    return BytesHeaderParser(policy=compat32).parsebytes(raw[: header_end(raw)])


def candidate_recipients(headers: Message, is_ours: Callable[[str], bool]) -> list[str]:
    """Our addresses this message was delivered to: Delivered-To, else X-Original-To, else
    To and Cc. The first header family holding an address of ours wins (a forwarded
    message's To names the original recipient, Delivered-To the mailbox it reached)."""
    for names in ROUTING_HEADERS:
        values = [v for name in names for v in headers.get_all(name, [])]
        found: list[str] = []
        for _, address in getaddresses([str(v) for v in values]):
            address = address.strip()
            if address and is_ours(address) and address.lower() not in map(str.lower, found):
                found.append(address)
        if found:
            return found
    return []


def fingerprint(message_id: str | None, recipients: Sequence[str], raw: bytes) -> str:
    """The same message read again has the same fingerprint, whatever its UID.

    The body is hashed without the header block, which servers may rewrite (Status:,
    X-Keywords:); the recipients are part of it because a hosted mailbox keeps one copy,
    with the same Message-ID, per address the message reached.
    """
    end = header_end(raw)
    body = raw[end:].lstrip(b"\r\n")
    parts = [
        (message_id or "").strip(),
        ",".join(sorted(r.lower() for r in recipients)),
        hashlib.sha256(body).hexdigest(),
    ]
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


def addresses_looked_at(headers: Message, limit: int = 20) -> list[str]:
    """Every address in the routing headers, in the order `candidate_recipients` looks at
    them (at most `limit`): what a rejected message records as its recipients."""
    found: list[str] = []
    for names in ROUTING_HEADERS:
        values = [str(v) for name in names for v in headers.get_all(name, [])]
        for _, address in getaddresses(values):
            address = address.strip()
            if address and address.lower() not in map(str.lower, found):
                found.append(address[:320])
    return found[:limit]


def rejected_record(headers: Message, candidates: list[str]) -> dict[str, Any]:
    """What a message refused at intake records about itself (filing, which fills these
    in for the others, never reads it): its subject, Message-ID, From, and the recipients
    looked at (ours that were refused, else every address in the routing headers)."""
    return {
        "subject": subject_of(headers),
        "header_message_id": (message_id_of(headers) or "")[:998] or None,
        "mail_from": (sender_of(headers) or "")[:512],
        "rcpt_tos": candidates or addresses_looked_at(headers),
    }

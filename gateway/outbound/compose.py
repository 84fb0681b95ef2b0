"""Build the one email that carries one document to a partner's inbox (a delivery).

Why the care: the bytes returned here are the bytes DKIM signs (R15) and the bytes sent, so
they must already be final -- CRLF line endings, 7-bit clean (text quoted-printable, file
base64: no relay ever needs to re-encode them and break the signature), short lines -- and
identical for the same inputs, so a retry is the same message.  Addresses and names reach
headers, so anything that could inject a header or an SMTP command is refused, not cleaned.

Why the bytes are written here rather than by the stdlib `email` package: the message always
has the same shape (multipart/mixed: a short text/plain part, one base64 file), and building
it with `EmailMessage` + `as_bytes` (header objects, policy folding, a generator over the
tree) was the largest single cost of the outbound pipeline.  Here it is a few string joins
and C codecs (`binascii` base64 and quoted-printable): 10-15x faster for a 20-50 KB file
(benchmarks/compose.py).  What the email package did for us is done explicitly, by the
pieces in gateway/outbound/mime.py (shared with the bot-mail forward):
  * headers folded at spaces into lines of at most 78 characters (RFC 5322 2.1.1); only a
    single unbreakable token longer than a line (an address or Message-ID near the RFC 5321
    limits) can make a longer line, and that is still far under the 998 of RFC 5322;
  * non-ASCII text in the Subject and the From display name as RFC 2047 encoded words (whole
    characters per word, Q unless B is clearly shorter, Q limited to the characters allowed in
    a phrase so the same words are valid in both headers); ASCII words stay readable;
  * file names: `filename="..."`/`name="..."` when plain ASCII, else RFC 2231
    `filename*=utf-8''%XX...`, cut into numbered sections `filename*0*=` when long (whole
    characters per section: Python's parser, for one, decodes each section on its own);
    the name goes in both Content-Disposition and Content-Type, for older clients;
  * a fixed boundary from the Message-ID's local part, checked against the parts' bytes.
The result is checked in tests/test_compose.py against the stdlib parser (and against the
old EmailMessage implementation, kept there as an oracle) and against dkimpy's verifier.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from gateway.mail.names import sanitize_filename
from gateway.outbound.mime import (
    BREAKS,
    base64_lines,
    clean_text,
    display_name_tokens,
    fold,
    multipart_mixed,
    parameter,
    parameterized,
    plain_text_word,
    text_part,
    tokens,
)
from gateway.routing.addresses import split_address
from gateway.routing.slugs import DOMAIN_RE

_HEX16_RE = re.compile(r"[0-9a-f]{16}")
_MEDIA_TYPE_RE = re.compile(
    r"([a-z0-9][a-z0-9!#$&^_.+-]{0,126})/([a-z0-9][a-z0-9!#$&^_.+-]{0,126})"
)


@dataclass(frozen=True)
class OutboundDocument:
    """What a delivery sends: one stored document and who it is for."""

    delivery_id: int
    document_id: int
    filename: str
    media_type: str
    content: bytes
    sha256: str
    company_name: str
    company_slug: str
    partner_display_name: str


def message_id_for(delivery_id: int, sha256: str, domain: str) -> str:
    """Stable Message-ID "<d{delivery_id}.{sha256[:16]}@{domain}>".

    The same delivery always gets the same id, so a partner that dedups by Message-ID sees
    a retry as the same mail.  Inputs are checked because the result goes into a header.
    """
    if isinstance(delivery_id, bool) or not isinstance(delivery_id, int) or delivery_id < 0:
        raise ValueError(f"delivery id must be a non-negative integer, not {delivery_id!r}")
    digest = sha256.strip().lower() if isinstance(sha256, str) else ""
    if not _HEX16_RE.fullmatch(digest[:16]):
        raise ValueError("sha256 must be a hex digest (at least 16 hex characters)")
    host = domain.strip().lower().rstrip(".") if isinstance(domain, str) else ""
    if not DOMAIN_RE.fullmatch(host):
        raise ValueError(f"not a valid Message-ID domain: {domain!r}")
    return f"<d{delivery_id}.{digest[:16]}@{host}>"


def plain_address(value: str, role: str) -> str:
    """The address as it goes into a header and the SMTP envelope, or ValueError.

    Only a bare ASCII `local@domain` (optionally in angle brackets) is accepted: no display
    name, no comments, no whitespace or control character anywhere, so a user-supplied
    address can neither add a header nor smuggle an SMTP command.  The local part keeps its
    case (it may be case-sensitive at the partner); the domain is lower-cased.
    """
    if not isinstance(value, str):
        raise ValueError(f"{role} address must be a string, not {type(value).__name__}")
    if any(c in BREAKS or unicodedata.category(c) == "Cc" for c in value):
        raise ValueError(f"{role} address contains a line break or control character")
    # The syntax check runs on the lower-cased text, and a few non-ASCII letters lower-case
    # to ASCII (KELVIN SIGN -> "k"): without SMTPUTF8 such an address cannot be sent anyway.
    if not value.isascii():
        raise ValueError(f"{role} address is not ASCII: {value!r}")
    text = value.strip(" ")
    parts = split_address(text)
    if parts is None:
        raise ValueError(f"{role} address is not a plain local@domain address: {value!r}")
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    local = text.rpartition("@")[0]
    return f"{local}@{parts[1]}"


def header_display_name(name: str) -> str:
    """A display name fit for a From header, or ValueError.

    Line breaks, control characters and lone surrogates (text that cannot be UTF-8) are
    refused; runs of spaces collapse.  Quoting and RFC 2047 encoding happen in `compose`.
    """
    if not isinstance(name, str):
        raise ValueError(f"display name must be a string, not {type(name).__name__}")
    if any(c in BREAKS or unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in name):
        raise ValueError("display name contains a line break or control character")
    cleaned = " ".join(name.split())
    if not cleaned:
        raise ValueError("display name is empty")
    if len(cleaned) > 200:
        raise ValueError("display name is longer than 200 characters")
    return cleaned


def _header_text(value: str, fallback: str) -> str:
    """User text (company name) shown in the Subject, cleaned (`mime.clean_text`)."""
    return clean_text(value) or fallback


def _media_type(value: str) -> tuple[str, str]:
    """(maintype, subtype) safe to send as a base64 leaf part.

    multipart/* and message/* may not be base64-encoded (RFC 2046 5.1, 5.2), so those --
    and anything malformed -- go as application/octet-stream; the file name keeps the type.
    """
    match = _MEDIA_TYPE_RE.fullmatch((value or "").strip().lower().split(";")[0].strip())
    if match is None or match.group(1) in ("multipart", "message"):
        return "application", "octet-stream"
    return match.group(1), match.group(2)


def _body(document: OutboundDocument, filename: str, company: str) -> str:
    partner = _header_text(document.partner_display_name, "le logiciel partenaire")
    return (
        "Bonjour,\n"
        "\n"
        f"Veuillez trouver ci-joint un document de la société {company}.\n"
        "\n"
        f"Société : {company}\n"
        f"Document : {filename}\n"
        f"Destinataire : {partner}\n"
        "\n"
        "Ce message a été envoyé automatiquement par la plateforme documentaire.\n"
        "(Sent automatically by the document platform.)\n"
    )


# --- the message -----------------------------------------------------------------------------


def compose(
    document: OutboundDocument,
    sender: str,
    recipient: str,
    message_id_domain: str,
    date: datetime,
    sender_name: str | None = None,
) -> bytes:
    """The final bytes of the message carrying `document` (CRLF, deterministic, DKIM-ready).

    `sender` is the identity the partner expects (R16), optionally shown with `sender_name`.
    `date` should be timezone-aware; a naive datetime is taken as UTC (the gateway's clock).
    Raises ValueError for an unsafe address or name, or an invalid Message-ID input.
    """
    from_address = plain_address(sender, "sender")
    to_address = plain_address(recipient, "recipient")
    message_id = message_id_for(document.delivery_id, document.sha256, message_id_domain)
    if not isinstance(date, datetime):
        raise ValueError("date must be a datetime")
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    display = header_display_name(sender_name) if sender_name is not None else ""
    filename = sanitize_filename(document.filename, f"document-{document.document_id}")
    # The slug is a fallback shown to people too: cleaned the same way as the name.
    company = _header_text(document.company_name, _header_text(document.company_slug, "société"))

    # The text is ours plus cleaned names (no line breaks).
    body = text_part(_body(document, filename, company))
    maintype, subtype = _media_type(document.media_type)
    # Header order as the email package wrote it, so a partner sees no change at all.
    file_part = (
        "Content-Transfer-Encoding: base64\r\n"
        + parameterized("Content-Disposition", "attachment", parameter("filename", filename))
        # older clients read the name from Content-Type only
        + parameterized("Content-Type", f"{maintype}/{subtype}", parameter("name", filename))
        + "\r\n"
    ).encode("ascii") + base64_lines(bytes(document.content))

    sender_tokens = [(False, from_address)]
    if display:
        sender_tokens = [*display_name_tokens(display), (False, f"<{from_address}>")]
    head = (
        fold("From", sender_tokens)
        + fold("To", [(False, to_address)])
        + fold("Subject", tokens(f"{company} — {filename}", plain_text_word))
        + fold("Date", [(False, format_datetime(date))])
        + fold("Message-ID", [(False, message_id)])
    )
    # The Message-ID's local part ("d12.0123456789abcdef") is unique per delivery.
    return multipart_mixed(head, (body, file_part), message_id[1:].partition("@")[0])

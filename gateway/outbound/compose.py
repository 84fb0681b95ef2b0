"""Build the one email that carries one document to a partner's inbox (a delivery).

Why the care: the bytes returned here are the bytes DKIM signs (R15) and the bytes sent, so
they must already be final -- CRLF line endings, 7-bit clean (text quoted-printable, file
base64: no relay ever needs to re-encode them and break the signature), short lines -- and
identical for the same inputs, so a retry is the same message.  Addresses and names reach
headers, so anything that could inject a header or an SMTP command is refused, not cleaned.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from gateway.inbound.extract import sanitize_filename
from gateway.routing.addresses import split_address
from gateway.routing.slugs import DOMAIN_RE

# SMTP policy: CRLF, folding at 78 characters, non-ASCII headers RFC 2047/2231 encoded.
# Its cte_type is 8bit, so every part below names a 7-bit transfer encoding explicitly.
OUTPUT_POLICY = email_policy.SMTP
_HEX16_RE = re.compile(r"[0-9a-f]{16}")
_MEDIA_TYPE_RE = re.compile(
    r"([a-z0-9][a-z0-9!#$&^_.+-]{0,126})/([a-z0-9][a-z0-9!#$&^_.+-]{0,126})"
)
# Line and paragraph separators some mail software treats as line breaks.
_BREAKS = frozenset("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


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

    Only a bare `local@domain` (optionally in angle brackets) is accepted: no display name,
    no comments, no whitespace or control character anywhere, so a user-supplied address can
    neither add a header nor smuggle an SMTP command.  The local part keeps its case (it
    may be case-sensitive at the partner); the domain is lower-cased.
    """
    if not isinstance(value, str):
        raise ValueError(f"{role} address must be a string, not {type(value).__name__}")
    if any(c in _BREAKS or unicodedata.category(c) == "Cc" for c in value):
        raise ValueError(f"{role} address contains a line break or control character")
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

    Line breaks and control characters are refused (they would start a new header); runs
    of spaces collapse.  Quoting and RFC 2047 encoding are left to the email package.
    """
    if not isinstance(name, str):
        raise ValueError(f"display name must be a string, not {type(name).__name__}")
    if any(c in _BREAKS or unicodedata.category(c) in ("Cc", "Cf") for c in name):
        raise ValueError("display name contains a line break or control character")
    cleaned = " ".join(name.split())
    if not cleaned:
        raise ValueError("display name is empty")
    if len(cleaned) > 200:
        raise ValueError("display name is longer than 200 characters")
    return cleaned


def _header_text(value: str, fallback: str) -> str:
    """User text (company name) shown in the Subject: control characters become spaces."""
    text = "".join(
        " " if c in _BREAKS or unicodedata.category(c) in ("Cc", "Cf") else c
        for c in unicodedata.normalize("NFC", value if isinstance(value, str) else "")
    )
    return " ".join(text.split()) or fallback


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
    filename = sanitize_filename(document.filename, f"document-{document.document_id}")
    company = _header_text(document.company_name, document.company_slug or "société")

    message = EmailMessage(policy=OUTPUT_POLICY)
    local, _, domain = from_address.rpartition("@")
    display = header_display_name(sender_name) if sender_name is not None else ""
    message["From"] = Address(display_name=display, username=local, domain=domain)
    message["To"] = to_address
    message["Subject"] = f"{company} — {filename}"
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    message["MIME-Version"] = "1.0"
    message.set_content(_body(document, filename, company), charset="utf-8", cte="quoted-printable")
    maintype, subtype = _media_type(document.media_type)
    message.add_attachment(
        bytes(document.content),
        maintype=maintype,
        subtype=subtype,
        cte="base64",
        disposition="attachment",
        filename=filename,
        params={"name": filename},  # older clients read the name from Content-Type only
    )
    for part in message.iter_parts():
        del part["MIME-Version"]  # the email package adds it to parts; it belongs on top only
    # The Message-ID's local part ("d12.0123456789abcdef") is unique per delivery.
    return _serialise(message, message_id[1:].partition("@")[0])


def _serialise(message: EmailMessage, seed: str) -> bytes:
    """Bytes with a boundary fixed from `seed`, so two calls give identical output.

    "=_" never occurs in base64 or quoted-printable text, so a collision could only come
    from a header of a part; it is still checked, and the boundary changes if it occurs.
    """
    for attempt in range(100):
        boundary = f"=_gw.{seed}.{attempt}"
        message.set_boundary(boundary)
        data = message.as_bytes(policy=OUTPUT_POLICY)
        delimiter = b"\r\n--" + boundary.encode("ascii")
        if data.count(delimiter) == 3:  # the text part, the file, the close delimiter
            return data
    raise RuntimeError("no MIME boundary free of collisions")  # pragma: no cover

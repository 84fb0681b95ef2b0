"""The body of a MIME part: its children, its decoded bytes, a multipart repaired.

Also which Content-IDs the HTML of a message references (those images are not documents).
"""

import binascii
import re
from email.message import Message
from typing import Final

from gateway.inbound.extraction.decoding import b64decode_lenient
from gateway.inbound.extraction.headers import (
    PARSING_POLICY,
    content_type_of,
    header_text,
    normalise_cid,
)
from gateway.inbound.extraction.mime import parse_message
from gateway.inbound.extraction.run import Run, brief, guard

MAX_MIME_DEPTH: Final = 50  # multipart levels opened; deeper parts are ignored
_MAX_BOUNDARY_REPAIRS: Final = 3
_CID_RE: Final = re.compile(r"cid:([^\s\"'<>)]+)", re.IGNORECASE)
_BOUNDARY_LINE_RE: Final = re.compile(r"^--([^\s\"]{1,70})[ \t]*\r?$", re.MULTILINE)


def subparts(part: Message) -> list[object]:
    """The children of a multipart, [] for anything else (never raises)."""
    payload = guard(part.get_payload, None)
    return list(payload) if isinstance(payload, list) else []


def repair_multipart(run: Run, part: Message, ctype: str, label: str) -> Message | None:
    """Re-parse a multipart whose boundary parameter is missing, guessing it from the body."""
    if run.boundary_repairs >= _MAX_BOUNDARY_REPAIRS:
        return None
    payload = guard(part.get_payload, None)
    if not isinstance(payload, str):
        return None
    match = _BOUNDARY_LINE_RE.search(payload)
    if match is None:
        run.note(f"{label}: multipart without boundary and none found in the body; read as text")
        return None
    boundary = match.group(1)
    if boundary.endswith("--") and f"--{boundary[:-2]}" in payload:
        boundary = boundary[:-2]
    run.boundary_repairs += 1
    head = f'Content-Type: {ctype}; boundary="{boundary}"\r\n\r\n'.encode("ascii", "replace")
    try:
        repaired = parse_message(head + payload.encode("utf-8", "surrogateescape"), PARSING_POLICY)
    except Exception as exc:
        run.note(f"{label}: multipart boundary could not be repaired ({brief(exc)})")
        return None
    if not repaired.is_multipart():
        return None
    run.note(f"{label}: multipart boundary missing; recovered '{boundary}' from the body")
    return repaired


def payload_bytes(part: Message, notes: list[str]) -> bytes:
    """Decoded body of a leaf part; a damaged transfer encoding yields what can be decoded."""
    payload = guard(part.get_payload, None)
    if isinstance(payload, bytes):
        raw = payload
    elif isinstance(payload, str):
        raw = payload.encode("utf-8", "surrogateescape")
    else:
        return b""
    encoding = header_text(part, "content-transfer-encoding").strip().lower()
    if encoding == "base64":
        data, problem = b64decode_lenient(raw)
        if problem:
            notes.append(
                f"base64 content damaged ({problem}); kept the {len(data)} bytes "
                "that could be decoded"
            )
        return data
    if encoding == "quoted-printable":
        return binascii.a2b_qp(raw)
    if encoding in ("x-uuencode", "uuencode", "x-uue", "uue"):
        decoded = guard(lambda: part.get_payload(decode=True), None)
        if isinstance(decoded, bytes):
            return decoded
    return raw


def referenced_cids(msg: Message) -> frozenset[str]:
    """Content-IDs used as ``cid:`` in the HTML of this message (not of forwarded ones)."""
    found: set[str] = set()
    stack: list[tuple[Message, int]] = [(msg, 0)]
    while stack:
        part, level = stack.pop()
        ctype, _declared = content_type_of(part)
        if ctype.startswith("message/"):
            continue
        if part.is_multipart():
            if level < MAX_MIME_DEPTH:
                stack.extend((c, level + 1) for c in subparts(part) if isinstance(c, Message))
            continue
        if ctype == "text/html":
            html = payload_bytes(part, []).decode("latin-1")
            found.update(normalise_cid(m.group(1)) for m in _CID_RE.finditer(html))
    return frozenset(found)

"""Read bounces: what the partner's side said about a delivery that came back (R17).

Why: a partner's server may accept a delivery and refuse it later, sending a bounce to the
delivery's VERP address (`gateway.outbound.verp`).  The VERP address says *which* delivery;
this module says *what happened*: permanent or not, the status code and the remote server's
own words, so the delivery can be marked bounced with them.

Standard bounces are RFC 3464 DSNs (``multipart/report; report-type=delivery-status``); the
``message/delivery-status`` part is read field by field.  Non-standard bounces (plain-text
Postfix or qmail notices, exotic servers) are recognised by their sender, subject or
wording, and the line carrying an SMTP status code is taken as the diagnostic.  Anything
else -- an out-of-office reply, a human answer, garbage -- is not a bounce (None).  Input
comes from the network: nothing here raises on malformed bytes.
"""

from __future__ import annotations

import base64
import binascii
import html
import quopri
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email import policy as email_policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser, HeaderParser

from gateway.routing.addresses import split_address


@dataclass(frozen=True)
class BounceReport:
    """What one bounce says about the delivery it refers to."""

    permanent: bool  # the message will not be delivered: mark the delivery bounced
    status: str | None  # RFC 3463 enhanced status, e.g. "5.1.1"
    diagnostic: str | None  # the remote server's words, e.g. "550 5.1.1 <x@y>: User unknown"
    recipient: str | None  # Original-Recipient (what we sent to) else Final-Recipient
    action: str | None  # failed | delayed | delivered | relayed | expanded


_DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_ENCLOSED_TYPES = frozenset({"message/rfc822", "message/global", "text/rfc822-headers"})
_MAX_PARTS = 200  # parts looked at per message
_MAX_TEXT = 200_000  # characters of text read per part
_MAX_DIAGNOSTIC = 1000  # characters kept from the remote server's words
_ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})

_STATUS_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_REPLY_ENHANCED_RE = re.compile(r"(?<![\w.])([45])\d\d[ -]([45]\.\d{1,3}\.\d{1,3})(?![\d.]*\d)")
_ENHANCED_RE = re.compile(r"(?<![\w.])([45])\.\d{1,3}\.\d{1,3}(?![\d.]*\d)")
_REPLY_RE = re.compile(r"(?<![\w.\[:/-])([45])[0-5]\d[ -](?=[A-Za-z<#(\"'])")
# Bounded repeats: the text is hostile, an unbounded one would backtrack quadratically.
_ADDRESS_RE = re.compile(r"[^\s<>()\[\]\"',;:@]{1,64}@[A-Za-z0-9.-]{0,252}[A-Za-z0-9]")

_BOUNCE_FROM_RE = re.compile(
    r"mailer-daemon|postmaster|mail ?delivery (?:subsystem|system)|microsoft outlook",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT_RE = re.compile(
    r"undeliver|undelivered|returned mail|returned to sender|delivery status notification|"
    r"delivery (?:failure|failed|has failed|notification|problem)|failure notice|"
    r"mail delivery failed|could not be delivered|not delivered|message blocked|"
    r"non remis|non distribu|impossible de remettre|échec de (?:la )?(?:remise|distribution)|"
    r"unzustellbar|nicht zustellbar|non recapitabile|onbestelbaar|delayed mail|"
    r"delivery delayed|delivery has been delayed|retard de (?:remise|distribution)",
    re.IGNORECASE,
)
_BOUNCE_TEXT_RE = re.compile(
    r"this is the mail system at host|this is the qmail-send program|"
    r"wasn't able to deliver your message|could not be delivered to one or more|"
    r"delivery has failed to these recipients|your message (?:couldn't|could not|wasn't) be "
    r"delivered|message could not be delivered|the following address(?:es)? (?:had|failed)|"
    r"permanent(?: fatal)? error|delivery to the following recipients? failed|"
    r"a message that you sent could not be delivered|l'adresse .{0,60} est introuvable|"
    r"votre message n'a pas pu être remis",
    re.IGNORECASE,
)
_AUTO_REPLY_SUBJECT_RE = re.compile(
    r"out of (?:the )?office|automatic reply|auto(?:matic)?[- ]?(?:reply|response)|"
    r"autoreply|r[ée]ponse automatique|absence|abwesen|vacation|on leave|cong[ée]s",
    re.IGNORECASE,
)
_REPLY_PREFIX_RE = re.compile(r"\s*(?:re|tr|fw|fwd|aw|wg|rv)\s*:", re.IGNORECASE)
_DELAY_RE = re.compile(
    r"\bdelayed\b|will (?:be )?retr(?:y|ied)|still (?:trying|being retried)|"
    r"has not yet been delivered|not been delivered yet|retard|warning",
    re.IGNORECASE,
)
_FAILURE_WORDS_RE = re.compile(
    r"reject|unknown|does not exist|doesn't exist|not found|no such|refused|denied|"
    r"unavailable|disabled|invalid|full|quota|blocked|n'existe pas|inconnu|introuvable",
    re.IGNORECASE,
)


def parse_bounce(raw: bytes) -> BounceReport | None:
    """The bounce report carried by `raw`, or None when it is not a bounce. Never raises."""
    try:
        data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
        message = BytesParser(policy=email_policy.compat32).parsebytes(data)
    except Exception:
        return None
    try:
        report = _from_delivery_status(message)
    except Exception:
        report = None
    if report is not None:
        return report
    try:
        return _from_text(message)
    except Exception:
        return None


# --------------------------------------------------------------------------- RFC 3464


def _from_delivery_status(message: Message) -> BounceReport | None:
    """Read the first delivery-status part that has a per-recipient block."""
    for part in _parts(message):
        if part.get_content_type() not in _DSN_TYPES and not _looks_like_status(part):
            continue
        blocks = [b for b in _status_blocks(part) if _is_recipient_block(b)]
        if not blocks:
            continue
        block = min(blocks, key=_severity)
        status = _status(block.get("status"))
        action = _action(block.get("action"))
        diagnostic = _strip_type(block.get("diagnostic-code"))
        if diagnostic is None:
            found = _find_code_line(_texts(message))
            diagnostic = found[0] if found else None
        if action == "failed":
            permanent = True
        elif action in _ACTIONS:
            permanent = False
        elif status is not None:
            permanent = status.startswith("5")
        else:
            permanent = bool(diagnostic and re.match(r"5\d\d\b", diagnostic))
        if status is None and diagnostic:
            match = _STATUS_RE.search(diagnostic)
            status = ".".join(match.groups()) if match else None
        recipient = _recipient(block.get("original-recipient")) or _recipient(
            block.get("final-recipient")
        )
        return BounceReport(permanent, status, _clip(diagnostic), recipient, action)
    return None


def _looks_like_status(part: Message) -> bool:
    """A text/plain part holding DSN fields: a report part some servers mislabel."""
    if part.get_content_type() != "text/plain" or part.get_filename():
        return False
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return False
    head = data[:_MAX_TEXT]
    return bool(_FINAL_RECIPIENT_LINE_RE.search(head) and _STATUS_LINE_RE.search(head))


_FINAL_RECIPIENT_LINE_RE = re.compile(rb"(?im)^final-recipient[ \t]*:")
_STATUS_LINE_RE = re.compile(rb"(?im)^status[ \t]*:[ \t]*[245]\.")


def _parts(message: Message) -> Iterator[Message]:
    """Every part, depth first, without opening enclosed messages or status blocks.

    The returned original is skipped: it is our own mail, not the report about it.
    """
    stack = [message]
    seen = 0
    while stack and seen < _MAX_PARTS:
        part = stack.pop()
        seen += 1
        yield part
        content_type = part.get_content_type()
        if content_type in _DSN_TYPES or content_type in _ENCLOSED_TYPES:
            continue
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            stack.extend(reversed([p for p in payload if isinstance(p, Message)]))


def _status_blocks(part: Message) -> list[dict[str, str]]:
    """The field blocks of a delivery-status part, names lower-cased, values unfolded.

    The email package parses ``message/delivery-status`` into a list of header blocks, but
    ``message/global-delivery-status`` into one "message" whose body holds the other
    blocks, and a text part into a string; a base64/quoted-printable part leaves the
    encoded text where the blocks should be.  All of these are read here.
    """
    payload = part.get_payload()
    encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
    if isinstance(payload, list) and encoding not in ("base64", "quoted-printable"):
        blocks = []
        for block in payload:
            if isinstance(block, Message):
                blocks.append(_fields(block.items()))
                blocks.extend(_text_blocks(_str_payload(block)))
        return blocks
    if isinstance(payload, list):  # encoded: the "blocks" hold the encoded text
        text = "\n".join(
            "\n".join(f"{k}: {v}" for k, v in block.items()) + "\n" + _str_payload(block)
            for block in payload
            if isinstance(block, Message)
        )
        data = _decode_transfer(text, encoding)
    else:
        decoded = part.get_payload(decode=True)
        data = decoded if isinstance(decoded, bytes) else b""
    return _text_blocks(_decode_charset(data, part.get_content_charset()))


def _text_blocks(text: str) -> list[dict[str, str]]:
    """Blocks of "Field: value" lines separated by blank lines."""
    blocks = []
    for chunk in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")):
        if chunk.strip():
            parsed = HeaderParser(policy=email_policy.compat32).parsestr(chunk.strip("\n"))
            blocks.append(_fields(parsed.items()))
    return blocks


def _str_payload(block: Message) -> str:
    payload = block.get_payload()
    return payload if isinstance(payload, str) else ""


def _decode_transfer(text: str, encoding: str) -> bytes:
    data = text.encode("ascii", "ignore")
    if encoding == "base64":
        try:
            return base64.b64decode(b"".join(data.split()) + b"==", validate=False)
        except (binascii.Error, ValueError):
            return b""
    return quopri.decodestring(data)


def _fields(items: Sequence[tuple[str, object]]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, value in items:
        key = str(name).strip().lower()
        if key not in fields:
            fields[key] = " ".join(str(value).split())
    return fields


def _is_recipient_block(block: dict[str, str]) -> bool:
    return any(k in block for k in ("action", "status", "final-recipient"))


def _severity(block: dict[str, str]) -> int:
    """Lower is worse: the block to report when one bounce lists several recipients."""
    action = _action(block.get("action"))
    if action == "failed":
        return 0
    status = _status(block.get("status")) or ""
    if action is None and status.startswith("5"):
        return 0
    if action == "delayed" or status.startswith("4"):
        return 1
    return 2


def _status(value: str | None) -> str | None:
    match = _STATUS_RE.search(value or "")
    return ".".join(match.groups()) if match else None


def _action(value: str | None) -> str | None:
    words = (value or "").strip().lower().split()
    return words[0] if words else None


def _strip_type(value: str | None) -> str | None:
    """ "smtp; 550 5.1.1 ..." -> "550 5.1.1 ..." (the type says how to read the rest)."""
    if not value:
        return None
    text = re.sub(r"^[A-Za-z0-9-]+\s*;\s*", "", value.strip())
    return text or None


def _recipient(value: str | None) -> str | None:
    """ "rfc822; <x@y>" -> "x@y"."""
    if not value:
        return None
    text = value.split(";", 1)[1] if ";" in value else value
    words = text.split()  # drops a trailing comment
    return words[0].strip("<>") or None if words else None


def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())
    return text[:_MAX_DIAGNOSTIC] or None


# --------------------------------------------------------------------------- fallback


def _from_text(message: Message) -> BounceReport | None:
    """A non-standard bounce, recognised by who sent it, its subject or its wording.

    Auto-replies are sent to the envelope sender too (RFC 3834), so they reach the bounce
    address: a message that calls itself an automatic reply is a bounce only when its
    sender or subject says so, and a message with no status code only when its sender
    or subject does.
    """
    subject = _header(message, "subject")
    sender = _header(message, "from")
    texts = _texts(message)
    header_marked = bool(_BOUNCE_FROM_RE.search(sender)) or (
        bool(_BOUNCE_SUBJECT_RE.search(subject)) and not _REPLY_PREFIX_RE.match(subject)
    )
    text_marked = any(_BOUNCE_TEXT_RE.search(t) for t in texts)
    auto_reply = (
        bool(_AUTO_REPLY_SUBJECT_RE.search(subject))
        or any(message.get(h) is not None for h in ("x-autoreply", "x-autorespond"))
        or "auto-replied" in _header(message, "auto-submitted").lower()
    )
    if auto_reply and not header_marked:
        return None
    found = _find_code_line(texts)
    if found is None and not header_marked:
        return None
    # Without any mark, only a full permanent SMTP reply ("550 5.1.1 ...") counts.
    if found is not None and not (header_marked or text_marked or (found[2] and found[1] == "5")):
        return None
    delayed = bool(_DELAY_RE.search(subject)) or (
        found is not None and found[1].startswith("4") and bool(_DELAY_RE.search(found[0]))
    )
    if found is not None:
        line, status_class, _ = found
        permanent = status_class == "5" or not delayed
        return BounceReport(
            permanent=permanent,
            status=_status(line),
            diagnostic=_clip(line),
            recipient=_address_near(line, texts),
            action="failed" if permanent else "delayed",
        )
    failure_line = next(
        (ln for t in texts for ln in _logical_lines(t) if _FAILURE_WORDS_RE.search(ln)), None
    )
    return BounceReport(
        permanent=not delayed,
        status=None,
        diagnostic=_clip(failure_line or subject or None),
        recipient=_address_near(failure_line, texts) if failure_line else None,
        action="delayed" if delayed else "failed",
    )


def _find_code_line(texts: list[str]) -> tuple[str, str, bool] | None:
    """(logical line, "5" or "4", is a full "5xx 5.x.x" reply) of the best status line.

    A permanent code wins over a transient one; within a class, a full SMTP reply wins over
    an enhanced status alone, which wins over a bare reply code.
    """
    best: tuple[int, tuple[str, str, bool]] | None = None
    for text in texts:
        for line in _logical_lines(text):
            for rank, pattern in enumerate((_REPLY_ENHANCED_RE, _ENHANCED_RE, _REPLY_RE)):
                match = pattern.search(line)
                if match is None:
                    continue
                klass = match.group(1)
                score = (0 if klass == "5" else 3) + rank
                if best is None or score < best[0]:
                    best = (score, (line, klass, rank == 0))
                break
            if best is not None and best[0] == 0:
                return best[1]
    return best[1] if best else None


def _logical_lines(text: str) -> Iterator[str]:
    """Lines with their indented continuations joined (Postfix wraps long replies)."""
    current: list[str] = []
    for raw_line in text.splitlines():
        if raw_line[:1] in (" ", "\t") and current and raw_line.strip():
            current.append(raw_line.strip())
            continue
        if current:
            yield " ".join(current)
        current = [raw_line.strip()] if raw_line.strip() else []
    if current:
        yield " ".join(current)


def _address_near(line: str | None, texts: list[str]) -> str | None:
    """The recipient named on the diagnostic line, or in the paragraph that holds it."""
    if not line:
        return None
    candidates = [line]
    for text in texts:
        for paragraph in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")):
            if line in " ".join(paragraph.split()):
                candidates.append(paragraph)
    for candidate in candidates:
        for match in _ADDRESS_RE.finditer(candidate):
            if split_address(match.group(0)) is not None:
                return match.group(0)
    return None


def _texts(message: Message) -> list[str]:
    """The human-readable text of the message (plain, or HTML without tags), not the
    returned original."""
    texts: list[str] = []
    for part in _parts(message):
        content_type = part.get_content_type()
        if part.is_multipart() or content_type not in ("text/plain", "text/html"):
            continue
        if part.get_filename():
            continue
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            continue
        text = _decode_charset(data, part.get_content_charset())[:_MAX_TEXT]
        if content_type == "text/html":
            text = _html_text(text)
        texts.append(text)
    return texts


def _html_text(text: str) -> str:
    """Tags dropped, block ends as line breaks. `[^<>]` keeps every pattern linear."""
    text = re.sub(r"(?i)<(style|script)\b[^<>]*>[^<]*", " ", text)
    text = re.sub(r"(?i)<\s*(br|/p|/div|/tr|/li|/h\d)\b[^<>]*>", "\n", text)
    return html.unescape(re.sub(r"<[^<>]*>", " ", text))


def _decode_charset(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8", errors="replace")
    except (LookupError, TypeError):
        return data.decode("utf-8", errors="replace")


def _header(message: Message, name: str) -> str:
    """A header as readable text (RFC 2047 decoded), "" when absent or undecodable."""
    value = message.get(name)
    if value is None:
        return ""
    try:
        return " ".join(str(make_header(decode_header(str(value)))).split())
    except Exception:
        return " ".join(str(value).split())

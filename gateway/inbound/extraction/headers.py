"""Reading the headers of a MIME part or message, whatever the sender wrote.

Types, dispositions, Content-IDs, file names (RFC 2047 and RFC 2231 decoded by hand when
the email package could not), Message-ID, subject and sender, and the defects the email
package found in them. A header is read once (:data:`PARSING_POLICY`) and never raises.
"""

import binascii
import functools
import re
from collections.abc import Iterable, Mapping
from email import policy as email_policy
from email.message import Message
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import unquote_to_bytes

from gateway.inbound.extraction.decoding import b64decode_lenient, decode_with_charset
from gateway.inbound.extraction.run import guard
from gateway.inbound.extraction.simple_headers import simple_header
from gateway.mail.sniff import MIME_TYPE_RE
from gateway.mail.text import WHITESPACE_RE, bytes_to_text, fix_surrogates


class _CachingPolicy(email_policy.EmailPolicy):
    """`policy.default`, but a header value is parsed once, not on every access.

    The email package re-parses a header each time it is read, and extraction reads
    Content-Type and Content-Disposition several times per part: that was most of the CPU
    spent per message. Parsed headers are immutable, so sharing them is safe; only short
    values are remembered, so a hostile message cannot fill memory through the cache.
    A plain value (an address, a subject of printable ASCII, `type/subtype; name="x"`) is
    read without the RFC 5322 parser at all (:mod:`.simple_headers`).
    """

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if len(value) > _CACHED_HEADER_MAX:
            return _read_header(self, name, value)
        return _remembered_header(self, name, value)


_CACHED_HEADER_MAX = 1024
_LINE_BREAK_RE: Final = re.compile(r"\n|\r")  # how EmailPolicy unfolds a value it reads


def _read_header(policy: _CachingPolicy, name: str, value: str) -> Any:
    if hasattr(value, "name"):  # already a header object (as the email package checks)
        return value
    plain = simple_header(name, "".join(_LINE_BREAK_RE.split(value)))
    if plain is not None:
        return plain
    return email_policy.EmailPolicy.header_fetch_parse(policy, name, value)


_remembered_header = functools.lru_cache(maxsize=2048)(_read_header)


PARSING_POLICY = _CachingPolicy()

_ENCODED_WORD_RE: Final = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_PARAM_RE: Final = re.compile(r';\s*([A-Za-z0-9_.*-]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)', re.S)
_EMAIL_RE: Final = re.compile(r"[^\s<>\"'(),;:@\[\]]+@[^\s<>\"'(),;:@\[\]]+")
# The email package's defect classes, in words the firm can read in the log.
_DEFECT_TEXT: Final[Mapping[str, str]] = MappingProxyType(
    {
        "NoBoundaryInMultipartDefect": "multipart part has no boundary parameter",
        "StartBoundaryNotFoundDefect": "multipart start boundary not found",
        "CloseBoundaryNotFoundDefect": "multipart closing boundary missing (message probably "
        "truncated)",
        "FirstHeaderLineIsContinuationDefect": "first header line is a continuation line",
        "MisplacedEnvelopeHeaderDefect": "misplaced 'From ' envelope line among the headers",
        "MissingHeaderBodySeparatorDefect": "missing blank line between headers and body",
        "MultipartInvariantViolationDefect": "declared multipart but has no parts",
        "InvalidMultipartContentTransferEncodingDefect": "invalid Content-Transfer-Encoding on a "
        "multipart part",
        "UndecodableBytesDefect": "undecodable 8-bit bytes in a header",
        "InvalidBase64PaddingDefect": "base64 data has incorrect padding",
        "InvalidBase64CharactersDefect": "base64 data contains invalid characters",
        "InvalidBase64LengthDefect": "base64 data has an impossible length",
        "HeaderMissingRequiredValue": "a header is missing its required value",
        "NonPrintableDefect": "a header contains non-printable characters",
        "ObsoleteHeaderDefect": "a header uses obsolete syntax",
        "NonASCIILocalPartDefect": "an address has a non-ASCII local part",
        "InvalidHeaderDefect": "invalid header",
        "InvalidDateDefect": "invalid date header",
    }
)


def content_type_of(part: Message) -> tuple[str, str | None]:
    """(type used to route the part, declared type or None when there is no header)."""
    effective = guard(part.get_content_type, "text/plain")
    if not isinstance(effective, str):
        effective = "text/plain"
    raw = raw_header(part, "content-type")
    if raw is None:
        return effective.lower(), None
    if effective == "text/plain":
        match = MIME_TYPE_RE.match(raw)
        if match:
            effective = match.group(1).lower()
    return effective.lower(), effective.lower()


def disposition_of(part: Message) -> str | None:
    """``inline``, ``attachment``... lower-cased, read from the raw header if need be."""
    value = guard(part.get_content_disposition, None)
    if isinstance(value, str) and value:
        return value.strip().lower()
    raw = raw_header(part, "content-disposition")
    if raw:
        match = re.match(r"\s*([A-Za-z-]+)", raw)
        if match:
            return match.group(1).lower()
    return None


def content_id_of(part: Message) -> str | None:
    """The part's Content-ID as :func:`normalise_cid` writes it, None when it has none."""
    raw = raw_header(part, "content-id")
    if not raw:
        return None
    return normalise_cid(raw)


def normalise_cid(value: str) -> str:
    """A Content-ID or a ``cid:`` reference in one comparable form (no <>, unquoted)."""
    text = bytes_to_text(unquote_to_bytes(value.strip()))
    return text.strip().strip("<>").strip().lower()


def filename_of(part: Message) -> str | None:
    """File name from Content-Disposition or Content-Type, decoded; None when absent.

    The email package decodes RFC 2047 and RFC 2231 names but turns unknown charsets and
    raw 8-bit bytes into U+FFFD; then the raw header is decoded here instead (UTF-8, else
    windows-1252, the superset of Latin-1 that real "latin-1" mail uses).
    """
    name = guard(part.get_filename, None)
    if not (isinstance(name, str) and name.strip()):
        value = guard(lambda: part.get_param("name", header="content-type"), None)
        name = value if isinstance(value, str) else None
    if name is None or "\ufffd" in name or "=?" in name:
        raw = _raw_filename(part)
        if raw:
            name = raw
        elif name is not None:
            name = decode_rfc2047(name)
    elif " " not in name:
        # ``name=This is a test.txt`` unquoted: the email package keeps the first word.
        raw = _raw_filename(part)
        if raw and " " in raw.strip() and raw.strip().startswith(name):
            name = raw.strip()
    if name is None:
        return None
    name = fix_surrogates(name)
    return name if name.strip() else None


def _raw_filename(part: Message) -> str | None:
    for header, key in (("content-disposition", "filename"), ("content-type", "name")):
        raw = raw_header(part, header)
        if raw:
            value = _param_from_raw(raw, key)
            if value and value.strip():
                return value
    return None


def _param_from_raw(raw: str, key: str) -> str | None:
    """Parse one parameter (plain, RFC 2231 with continuations, RFC 2047) by hand."""
    params: dict[str, str] = {}
    for match in _PARAM_RE.finditer(raw):
        value = match.group(2).strip()
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1] if value.endswith('"') else value[1:])
        params.setdefault(match.group(1).lower(), value)
    if f"{key}*" in params:
        return _decode_rfc2231([(True, params[f"{key}*"])])
    pieces: list[tuple[int, bool, str]] = []
    for param, value in params.items():
        numbered = re.fullmatch(rf"{re.escape(key)}\*(\d{{1,3}})(\*?)", param)
        if numbered:
            pieces.append((int(numbered.group(1)), bool(numbered.group(2)), value))
    if pieces:
        pieces.sort()
        return _decode_rfc2231([(encoded, value) for _i, encoded, value in pieces])
    if key in params:
        return decode_rfc2047(params[key])
    return None


def _decode_rfc2231(pieces: list[tuple[bool, str]]) -> str:
    charset = "utf-8"
    data = bytearray()
    for index, (encoded, value) in enumerate(pieces):
        text = value
        if index == 0 and encoded and text.count("'") >= 2:
            charset, _language, text = text.split("'", 2)
        if encoded:
            data += unquote_to_bytes(text.encode("utf-8", "surrogateescape"))
        else:
            data += text.encode("utf-8", "surrogateescape")
    return decode_with_charset(bytes(data), charset or "utf-8")


def decode_rfc2047(text: str) -> str:
    """Decode encoded words by hand: used when the email package could not."""
    out: list[str] = []
    position = 0
    previous_was_word = False
    for match in _ENCODED_WORD_RE.finditer(text):
        between = text[position : match.start()]
        if not (previous_was_word and not between.strip()):
            out.append(fix_surrogates(between))
        charset = match.group(1).split("*", 1)[0]
        payload = match.group(3).encode("utf-8", "surrogateescape")
        if match.group(2) in "Bb":
            data, _problem = b64decode_lenient(payload)
        else:
            data = binascii.a2b_qp(payload, header=True)
        out.append(decode_with_charset(data, charset))
        position = match.end()
        previous_was_word = True
    out.append(fix_surrogates(text[position:]))
    return "".join(out)


def header_text(part: Message, name: str) -> str:
    """A header's (decoded) value, '' when absent; the raw value when it cannot be parsed."""
    try:
        value = part.get(name)
        return "" if value is None else str(value)
    except Exception:
        return raw_header(part, name) or ""


def raw_header(part: Message, name: str) -> str | None:
    """Header value exactly as received (unfolded), without the email package's parsing."""
    try:
        for key, value in part.raw_items():
            if key.lower() == name:
                return re.sub(r"\r?\n(?=[ \t])", "", fix_surrogates(str(value)))
    except Exception:
        return None
    return None


def header_defects(part: Message, name: str) -> Iterable[object]:
    """The defects the email package found while parsing one header."""
    header = guard(lambda: part.get(name), None)
    defects = getattr(header, "defects", ())
    return defects if isinstance(defects, tuple | list) else ()


def describe_defect(defect: object) -> str:
    """One email-package defect in words, with its detail."""
    kind = type(defect).__name__
    text = _DEFECT_TEXT.get(kind) or re.sub(r"(?<!^)(?=[A-Z])", " ", kind).lower()
    detail = guard(lambda: str(defect).strip(), "")
    if detail and detail.lower() not in text.lower():
        text = f"{text}: {detail[:200]}"
    return text


def message_id_of(msg: Message) -> str | None:
    """The Message-ID without its angle brackets, None when absent or empty."""
    raw = raw_header(msg, "message-id")
    if raw is None:
        return None
    match = re.search(r"<([^<>]*)>", raw)
    value = match.group(1) if match else (raw.split() or [""])[0]
    value = value.strip().strip("<>").strip()
    return value or None


def subject_of(msg: Message) -> str | None:
    """The decoded subject on one line, None when absent or blank."""
    text: str | None
    try:
        value = msg.get("subject")
        text = None if value is None else str(value)
    except Exception:
        text = None
    if text is None or "\ufffd" in text or "=?" in text:
        raw = raw_header(msg, "subject")
        if raw is not None:
            text = decode_rfc2047(raw)
    if text is None:
        return None
    text = WHITESPACE_RE.sub(" ", fix_surrogates(text)).strip()
    return text or None


def sender_of(msg: Message) -> str | None:
    """The first address of From, found by hand when the header cannot be parsed."""
    try:
        header = msg.get("from")
        for address in getattr(header, "addresses", ()):
            if address.username and address.domain:
                return fix_surrogates(address.addr_spec)
    except Exception:
        pass
    raw = raw_header(msg, "from")
    if raw:
        match = _EMAIL_RE.search(decode_rfc2047(raw))
        if match:
            return match.group(0)
    return None

"""Lenient decoding of damaged data: base64 that keeps every complete group, any charset."""

import binascii
import codecs
import re
from typing import Final

from gateway.mail.text import bytes_to_text

_BASE64_CHARS: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_BASE64: Final = bytes(sorted(set(range(256)) - set(_BASE64_CHARS)))
_BASE64_OR_SPACE: Final = _BASE64_CHARS + b" \t\r\n\v\f"


def b64decode_lenient(raw: bytes) -> tuple[bytes, str | None]:
    """Decode base64 keeping every complete group; say what was wrong, never raise."""
    filtered = raw.translate(None, _NOT_BASE64)  # translate: fast on 25 MB, regex is not
    invalid = len(raw.translate(None, _BASE64_OR_SPACE))
    problems: list[str] = []
    if invalid:
        problems.append(f"{invalid} invalid characters ignored")
    out = bytearray()
    body = filtered.rstrip(b"=")
    segments = [s for s in re.split(rb"=+", body) if s] if b"=" in body else [body]
    trailing_padding = len(body) < len(filtered)
    for index, segment in enumerate(segments):
        remainder = len(segment) % 4
        if remainder == 1:
            segment = segment[:-1]
            problems.append("truncated")
        elif remainder and not (trailing_padding or index < len(segments) - 1):
            problems.append("missing padding")
        segment += b"=" * (-len(segment) % 4)
        try:
            out += binascii.a2b_base64(segment)
        except binascii.Error:
            problems.append("undecodable group")
    return bytes(out), ", ".join(dict.fromkeys(problems)) or None


def decode_with_charset(data: bytes, charset: str) -> str:
    """Decode in the charset the sender named, else guess (unknown names are common)."""
    try:
        codecs.lookup(charset)
        return data.decode(charset)
    except Exception:
        return bytes_to_text(data)


# "begin <mode> <name>" as uuencode writes it (Outlook Express, Eudora, old Unix mailers).
_UU_BEGIN_RE: Final = re.compile(rb"^begin[ \t]+[0-7]{3,4}[ \t]+([^\r\n]+?)[ \t]*\r?$", re.M)
_UU_END_RE: Final = re.compile(rb"^end[ \t]*\r?$", re.M)


def has_uuencode(text: bytes) -> bool:
    """Whether a text body may hold a uuencoded file (cheap: a ``begin`` line)."""
    return b"begin" in text and _UU_BEGIN_RE.search(text) is not None


def uudecode_blocks(text: bytes, max_bytes: int) -> list[tuple[str, bytes, list[str]]]:
    """The uuencoded files in a text body: (name, bytes, problems) for each; never raises.

    Decoded line by line with ``binascii.a2b_uu`` (the ``uu`` module is gone in Python
    3.13); a line that does not decode is skipped and counted, a missing ``end`` keeps what
    was decoded, and decoding stops at ``max_bytes`` in all (uuencode only shrinks, so the
    text's own size bounds it too).
    """
    blocks: list[tuple[str, bytes, list[str]]] = []
    budget = max(0, max_bytes)
    position = 0
    while budget > 0 and (begin := _UU_BEGIN_RE.search(text, position)) is not None:
        name = begin.group(1).decode("utf-8", "replace")
        end = _UU_END_RE.search(text, begin.end())
        stop = end.start() if end is not None else len(text)
        content, problems = _uudecode_lines(text[begin.end() : stop], budget)
        if end is None:
            problems.append("no 'end' line (message probably truncated)")
        if len(content) >= budget:
            problems.append(f"decoding stopped at {max_bytes} bytes")
        budget -= len(content)
        blocks.append((name, content, problems))
        position = end.end() if end is not None else len(text)
    return blocks


def _uudecode_lines(body: bytes, budget: int) -> tuple[bytes, list[str]]:
    out = bytearray()
    malformed = 0
    for line in body.splitlines():
        line = line.rstrip(b" \t") or b" "
        if line in (b"`", b" "):  # zero-length line: the block's data ends here
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            # Some encoders pad lines with garbage: keep the length the line announces.
            count = ((line[0] - 32) & 63) * 4 + 5
            try:
                out += binascii.a2b_uu(line[: count // 3])
            except binascii.Error:
                malformed += 1
        if len(out) >= budget:
            del out[budget:]
            break
    problems = [f"{malformed} malformed line(s) skipped"] if malformed else []
    return bytes(out), problems

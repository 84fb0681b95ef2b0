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

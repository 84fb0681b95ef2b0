"""The Authentication-Results header in the stored message: incoming ones that claim our
authserv-id removed (RFC 8601 §5: only we may speak in our name), ours prepended."""

from __future__ import annotations

import re

_AUTHSERV_ID = re.compile(rb'"((?:[^"\\]|\\.)*)"|([^\s;()"]+)')


def _after_cfws(value: bytes) -> int:
    """Where the value starts past folding white space and comments, nested ones included
    (RFC 5322 §3.2.2): a comment in front must not hide our authserv-id from us while a
    reader downstream sees it."""
    position, depth = 0, 0
    while position < len(value):
        char = value[position : position + 1]
        if char == b"\\" and depth:
            position += 2
            continue
        if char == b"(":
            depth += 1
        elif char == b")" and depth:
            depth -= 1
        elif not depth and char not in (b" ", b"\t", b"\r", b"\n"):
            return position
        position += 1
    return position


def _authserv_id(value: bytes) -> bytes:
    """The authserv-id an Authentication-Results value starts with (RFC 8601 §2.2), comments
    and folding skipped; b"" when there is none."""
    match = _AUTHSERV_ID.match(value, _after_cfws(value))
    if match is None:
        return b""
    if match.group(1) is not None:
        return re.sub(rb"\\(.)", rb"\1", match.group(1))
    return match.group(2)


def without_our_results(raw: bytes, authserv_id: str) -> bytes:
    """The message without the Authentication-Results fields that claim our authserv-id
    (compared case-insensitively, RFC 8601 §5): only we may speak in our name. Every other
    byte is kept as it was."""
    ours = authserv_id.lower().encode("ascii", "replace")
    lines = raw.splitlines(keepends=True)
    kept: list[bytes] = []
    dropping = False
    for index, line in enumerate(lines):
        if line in (b"\r\n", b"\n"):  # end of the header: the rest goes as it is
            kept.extend(lines[index:])
            break
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        name, colon, _ = line.partition(b":")
        dropping = False
        if colon and name.strip().lower() == b"authentication-results":
            field = line + b"".join(
                _continuation(lines, index + 1)
            )  # the whole field, folded lines included
            dropping = _authserv_id(field.partition(b":")[2]).lower() == ours
        if not dropping:
            kept.append(line)
    return b"".join(kept)


def _continuation(lines: list[bytes], start: int) -> list[bytes]:
    folded = []
    for line in lines[start:]:
        if line[:1] not in (b" ", b"\t") or line in (b"\r\n", b"\n"):
            break
        folded.append(line)
    return folded


def with_results(raw: bytes, header: str) -> bytes:
    """The message with `header` (from `to_header`) prepended, in the message's own line
    endings."""
    first = raw.split(b"\n", 1)[0]
    eol = b"\n" if raw and b"\n" in raw and not first.endswith(b"\r") else b"\r\n"
    text = header.encode("ascii", "replace").replace(b"\r\n", b"\n").replace(b"\n", eol)
    return text + eol + raw

"""Bounds on a message's header section, checked over the raw bytes before anything parses it.

Python's email header parser is super-linear in a field's length (a 100 KB Content-Type
takes seconds, 0.5 MB tens of seconds and hundreds of MB), so a hostile header must be
stopped where the bytes come in, by a check whose cost is linear: one pass over the header
lines, stopping at the blank line or at the first limit crossed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HeaderLimits:
    """Postfix's `header_size_limit` per field, plus a total and a line count."""

    max_field_bytes: int  # one field with its continuation lines
    max_section_bytes: int  # the whole header section
    max_lines: int  # lines of the header section


def header_overflow(raw: bytes, limits: HeaderLimits) -> str | None:
    """Why this message's header section is over a limit, or None when it is within them."""
    position = 0
    field = 0  # bytes of the field being read, continuation lines included
    lines = 0
    end = len(raw)
    while position < end:
        newline = raw.find(b"\n", position)
        stop = end if newline < 0 else newline + 1
        line_length = stop - position
        if line_length <= 2 and raw[position:stop] in (b"\r\n", b"\n"):
            break  # the blank line that ends the header section
        lines += 1
        field = field + line_length if raw[position] in b" \t" else line_length
        if field > limits.max_field_bytes:
            return f"a header field larger than {limits.max_field_bytes} bytes"
        if stop > limits.max_section_bytes:
            return f"a header section larger than {limits.max_section_bytes} bytes"
        if lines > limits.max_lines:
            return f"a header section of more than {limits.max_lines} lines"
        position = stop
    return None

"""Text out of the raw bytes mail carries.

Senders put raw 8-bit bytes in headers and file names, in UTF-8 or in windows-1252 without
saying which; the email package keeps such bytes as lone surrogates (surrogateescape).
These helpers turn them into readable text, never raising.
"""

import re
from typing import Final

_SURROGATES_RE: Final = re.compile("[\udc80-\udcff]+")
WHITESPACE_RE: Final = re.compile(r"[^\S\x1c-\x1f]+")  # \x1c-\x1f: separators, not spaces


def fix_surrogates(text: str) -> str:
    """Undo surrogateescape: raw 8-bit header bytes become UTF-8, else windows-1252 text."""
    if not _SURROGATES_RE.search(text):
        return text
    return _SURROGATES_RE.sub(
        lambda m: bytes_to_text(m.group(0).encode("utf-8", "surrogateescape")), text
    )


def bytes_to_text(data: bytes) -> str:
    """UTF-8 when the bytes are valid UTF-8, else windows-1252 (what "latin-1" mail is)."""
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")

"""File names that are safe to store and to send, whatever the sender chose.

Used wherever a name from outside becomes a stored or sent file name: extraction of
received mail, documents composed for partners, uploads.
"""

import re
import unicodedata
from typing import Final

from gateway.mail.text import WHITESPACE_RE, fix_surrogates

_WINDOWS_RESERVED: Final = frozenset(
    {
        "CON",
        "PRN",
        "AUX",
        "NUL",
        "CONIN$",
        "CONOUT$",
        *(f"COM{digit}" for digit in "0123456789¹²³"),
        *(f"LPT{digit}" for digit in "0123456789¹²³"),
    }
)
_PATH_SEP_RE: Final = re.compile(r"[/\\]")
_ILLEGAL_CHARS_RE: Final = re.compile(r'[<>:"/\\|?*]')
_LONG_EXTENSION_RE: Final = re.compile(r"^[A-Za-z0-9]{1,10}$")


# File systems (ext4, NTFS in UTF-16 aside) and ZIP/tar members allow 255 bytes per name.
MAX_NAME_BYTES: Final = 255


def sanitize_filename(name: str | None, fallback: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """Make a sender-chosen name safe to store on any OS; never returns an empty string.

    NFC-normalised; only the last path component is kept (``/`` and ``\\``); control and
    format characters (incl. bidi overrides) and ``<>:"/\\|?*`` removed; whitespace
    collapsed; leading/trailing dots and spaces stripped; Windows reserved names (CON, NUL,
    COM1...) prefixed with ``_``; cut to ``max_bytes`` UTF-8 bytes keeping the extension.
    ``fallback`` (sanitised the same way) is used when nothing is left.
    """
    max_bytes = max(1, max_bytes)
    cleaned = clean_filename(name if isinstance(name, str) else "", max_bytes)
    if cleaned:
        return cleaned
    return clean_filename(fallback, max_bytes) or "document"[:max_bytes]


def clean_filename(name: str, max_bytes: int) -> str:
    """The sanitising rules; may return '' (callers supply the fallback)."""
    text = unicodedata.normalize("NFC", fix_surrogates(name))
    text = WHITESPACE_RE.sub(" ", text)
    components = _PATH_SEP_RE.split(text)
    text = next((c for c in reversed(components) if c.strip(" .")), "")
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
    text = _ILLEGAL_CHARS_RE.sub("", text)
    text = WHITESPACE_RE.sub(" ", text).strip(" .")
    if not text:
        return ""
    text = bound_length(text, max_bytes)
    if text.split(".", 1)[0].rstrip(" ").upper() in _WINDOWS_RESERVED:
        text = bound_length(f"_{text}", max_bytes)
    return text


def bound_length(name: str, max_bytes: int) -> str:
    """Cut a name to max_bytes UTF-8 bytes on a character boundary, keeping its extension."""
    if len(name.encode("utf-8", "surrogatepass")) <= max_bytes:
        return name
    stem, dot, extension = name.rpartition(".")
    if dot and stem and _LONG_EXTENSION_RE.match(extension) and len(extension) + 2 <= max_bytes:
        cut = _cut_to_bytes(stem, max_bytes - len(extension) - 1).rstrip(" .")
        if cut:
            return f"{cut}.{extension}"
    whole = _cut_to_bytes(name, max_bytes)
    return whole.rstrip(" .") or whole


def _cut_to_bytes(text: str, max_bytes: int) -> str:
    """The longest prefix of text within max_bytes UTF-8 bytes (no character split)."""
    return text.encode("utf-8", "surrogatepass")[:max_bytes].decode("utf-8", "ignore")


def last_path_component(name: str | None) -> str:
    """What follows the last ``/`` or ``\\`` (senders' names may carry their folders)."""
    if not name:
        return ""
    return _PATH_SEP_RE.split(name)[-1]

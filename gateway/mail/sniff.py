"""The media type of a file, decided from its bytes first and its labels second.

Senders often label files wrongly (``application/octet-stream``, ``image/jpg``, a PDF called
``SCAN0001``): every stage that stores or sends a file asks :func:`sniff_media_type`.
"""

import codecs
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import filetype

from gateway.mail.names import last_path_component

_SNIFF_BYTES: Final = 8192
TNEF_MAGIC: Final = b"\x78\x9f\x3e\x22"  # the first bytes of every winmail.dat
MIME_TYPE_RE: Final = re.compile(r"\s*([A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+)")

# Labels that say nothing about the content: the bytes decide.
GENERIC_TYPES: Final = frozenset(
    {
        "",
        "application/octet-stream",
        "application/x-download",
        "application/force-download",
        "application/download",
        "application/unknown",
        "application/binary",
        "binary/octet-stream",
        "application/x-octet-stream",
        "application/octetstream",
        "application/x-unknown",
    }
)
_TYPE_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "application/x-zip-compressed": "application/zip",
        "application/x-zip": "application/zip",
        "application/zip-compressed": "application/zip",
        "multipart/x-zip": "application/zip",
        "application/vnd.ms-tnef": "application/ms-tnef",
        "application/x-pdf": "application/pdf",
        "application/acrobat": "application/pdf",
        "image/jpg": "image/jpeg",
        "image/pjpeg": "image/jpeg",
        "image/x-png": "image/png",
        "text/comma-separated-values": "text/csv",
        "application/csv": "text/csv",
        "application/x-rar": "application/x-rar-compressed",
        "application/vnd.rar": "application/x-rar-compressed",
    }
)
TYPE_TO_EXT: Final[Mapping[str, str]] = MappingProxyType(
    {
        "application/pdf": "pdf",
        "image/jpeg": "jpg",
        "image/png": "png",
        "image/gif": "gif",
        "image/tiff": "tif",
        "image/bmp": "bmp",
        "image/webp": "webp",
        "image/heic": "heic",
        "image/heif": "heif",
        "image/avif": "avif",
        "image/svg+xml": "svg",
        "text/plain": "txt",
        "text/csv": "csv",
        "text/html": "html",
        "text/xml": "xml",
        "application/xml": "xml",
        "application/json": "json",
        "application/rtf": "rtf",
        "text/rtf": "rtf",
        "application/zip": "zip",
        "application/x-7z-compressed": "7z",
        "application/x-rar-compressed": "rar",
        "application/gzip": "gz",
        "application/x-tar": "tar",
        "message/rfc822": "eml",
        "application/vnd.ms-outlook": "msg",
        "application/ms-tnef": "dat",
        "application/msword": "doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
        "application/vnd.ms-excel": "xls",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
        "application/vnd.ms-powerpoint": "ppt",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
        "application/vnd.oasis.opendocument.text": "odt",
        "application/vnd.oasis.opendocument.spreadsheet": "ods",
        "application/vnd.oasis.opendocument.presentation": "odp",
        "application/epub+zip": "epub",
        "application/pkcs7-mime": "p7m",
        "application/pkcs7-signature": "p7s",
        "text/calendar": "ics",
        "text/vcard": "vcf",
        "application/x-ofx": "ofx",
    }
)
_EXT_TO_TYPE: Final[Mapping[str, str]] = MappingProxyType(
    {
        **{ext: media for media, ext in TYPE_TO_EXT.items()},
        "xml": "application/xml",
        "rtf": "application/rtf",
        "jpeg": "image/jpeg",
        "jpe": "image/jpeg",
        "tiff": "image/tiff",
        "htm": "text/html",
        "text": "text/plain",
        "p7c": "application/pkcs7-mime",
        "qif": "application/qif",
    }
)
# ZIP-based document formats: a generic "zip" signature gives way to these when declared.
ZIP_FAMILY: Final = frozenset(
    {
        "application/zip",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
        "application/vnd.oasis.opendocument.presentation",
        "application/epub+zip",
    }
)
_OLE_FAMILY: Final = frozenset(
    {
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/vnd.ms-outlook",
    }
)


def sniff_media_type(content: bytes, declared: str | None, filename: str | None = None) -> str:
    """Decide the media type from the bytes first: senders often label files wrongly.

    Order: a PDF, TNEF or RTF signature at the start; then, for binary data, the
    ``filetype`` signatures (a declared type or extension of the same container family --
    ZIP-based Office files, OLE files -- wins over a generic ``zip``/guessed OLE answer);
    then ``%PDF-`` after leading garbage (PJL job headers...) within the first 1024 bytes,
    unless the sender declared another specific type (a broken winmail.dat holding a PDF
    stays a winmail.dat); then the declared type when it is specific; then the file-name
    extension; then text heuristics (XML, HTML, CSV, plain text); finally
    ``application/octet-stream``.  Text never goes through ``filetype``: its two-byte
    signatures would call a text starting with "BM" a bitmap.
    """
    head = bytes(content[:_SNIFF_BYTES])
    declared_type = normalise_type(declared)
    ext_type = type_from_extension(filename)
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n\x00")
    if stripped.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(TNEF_MAGIC):
        return "application/ms-tnef"
    if stripped.startswith(b"{\\rtf"):
        return "application/rtf"
    specific = declared_type if declared_type not in GENERIC_TYPES else None
    if head and not _looks_like_text(head):
        guessed = _guess_binary(head)
        if guessed is not None:
            for candidate in (specific, ext_type):
                if candidate and _same_family(guessed, candidate):
                    return candidate
            return guessed
    if b"%PDF-" in head[:1024] and specific in (None, "application/pdf"):
        return "application/pdf"
    if specific:
        return specific
    if ext_type and ext_type not in GENERIC_TYPES:
        return ext_type
    if head and _looks_like_text(head):
        return _text_type(head, truncated=len(content) > _SNIFF_BYTES)
    return "application/octet-stream"


def normalise_type(value: str | None) -> str:
    """The bare, lower-case type of a Content-Type value, its common aliases resolved."""
    if not value:
        return ""
    match = MIME_TYPE_RE.match(value)
    if not match:
        return ""
    media = match.group(1).lower()
    return _TYPE_ALIASES.get(media, media)


def type_from_extension(filename: str | None) -> str | None:
    """The type a file name's extension stands for, None when it says nothing known."""
    base = last_path_component(filename).strip().lower()
    if "." not in base:
        return None
    if base.endswith(".xml.p7m"):
        return "application/pkcs7-mime"
    return _EXT_TO_TYPE.get(base.rpartition(".")[2])


def _guess_binary(head: bytes) -> str | None:
    try:
        kind = filetype.guess(head)
    except Exception:
        return None
    if kind is None:
        return None
    mime: str = kind.mime
    return _TYPE_ALIASES.get(mime, mime)


def _same_family(guessed: str, candidate: str) -> bool:
    """True when the sender's more precise type should win over the signature guess."""
    if guessed == "application/zip":
        return candidate in ZIP_FAMILY
    return guessed in _OLE_FAMILY and candidate in _OLE_FAMILY


def _looks_like_text(head: bytes) -> bool:
    """No NUL byte and (valid UTF-8 or almost no control characters)."""
    if not head or b"\x00" in head:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return True
    except UnicodeDecodeError:
        pass
    controls = sum(1 for byte in head if byte < 0x20 and byte not in b"\t\n\r\f\x1b")
    return controls * 100 <= len(head)


def _text_type(head: bytes, truncated: bool) -> str:
    text = head.decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    lowered = text[:200].lower()
    if lowered.startswith("<?xml"):
        return "application/xml"
    if lowered.startswith(("<!doctype html", "<html")):
        return "text/html"
    lines = [line for line in text.splitlines() if line.strip()]
    if truncated and lines:
        lines.pop()
    lines = lines[:20]
    if len(lines) >= 2:
        for delimiter in (";", ",", "\t", "|"):
            counts = {line.count(delimiter) for line in lines}
            if len(counts) == 1 and counts.pop() >= 1:
                return "text/csv"
    return "text/plain"

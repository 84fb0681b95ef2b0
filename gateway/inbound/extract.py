"""Turn the raw bytes of one received email into the documents to file.

Why: clients of an accounting firm send invoices, receipts and statements from every mail
client there is.  The filing stage must receive *every* document the sender meant to send --
and nothing else (no message bodies, no signature logos) -- and a broken or hostile message
must never take the gateway down.  Everything here is a pure function of the input bytes:
no I/O, no global state; every problem becomes a defect string (for the log) or a
:class:`RefusedPart` whose reason the firm can read.

What is a document (product rule R4)
------------------------------------
The MIME tree is walked iteratively, at most 50 multipart levels deep.

1. ``multipart/*`` containers are opened, never filed.  A multipart whose ``boundary``
   parameter is missing is repaired when a ``--boundary`` line is found in its body.
2. Message body: a ``text/plain`` or ``text/html`` part *without a file name* and not marked
   ``Content-Disposition: attachment`` is the body, not a document.  So are ``text/*`` parts
   without a file name inside ``multipart/alternative``, and ``text/calendar``,
   ``text/enriched``, ``text/richtext``, ``text/watch-html``, ``text/x-amp-html``,
   ``text/rfc822-headers`` parts without a file name anywhere.
3. Images (declared ``image/*`` or sniffed as an image) are NOT documents when
   a. their Content-ID is referenced as ``cid:`` from any ``text/html`` part of the same
      message (signature logos, pictures embedded in the HTML), whatever their file name or
      disposition; or
   b. they have no file name, are not ``Content-Disposition: attachment`` and their decoded
      size is below 10 KiB (10 240 bytes): a typical signature logo.
   Every other image is a document -- e.g. a 2 KB ``stamp.png`` sent as an attachment.
4. The signature part of ``multipart/signed`` (S/MIME ``pkcs7-signature``, PGP signature) and
   the ``application/pgp-encrypted`` version part of ``multipart/encrypted`` are not documents.
5. Any other part with content is a document whatever its Content-Disposition: Apple Mail
   sends PDFs ``inline``, some senders send no disposition, others ``octet-stream`` (the type
   is then sniffed from the bytes).  Origin is ``inline`` when the part says
   ``Content-Disposition: inline``, otherwise ``attachment``.  A part with a file name but no
   content is refused ("empty attachment").
6. Forwarded mail (``message/rfc822`` / ``message/global``) is opened and its documents are
   extracted (origin ``rfc822:<subject>``); if it yields nothing it is filed as one ``.eml``.
7. ``winmail.dat`` (TNEF) is opened with tnefparse; its attachments are documents (origin
   ``tnef``).  A TNEF that only carries the body (RTF) is skipped like a body.  A TNEF that
   cannot be decoded safely is filed as is, with a defect.
8. ZIP archives are expanded (origin ``zip:<archive>``) after checking the central directory
   against :class:`ExtractionLimits`; a failed check refuses the whole archive (a zip bomb is
   refused, never stored).  Encrypted, corrupt or unsupported archives are filed as is.
   Office/OpenDocument files are ZIPs too and are never expanded.
9. Containers (forwarded mail, TNEF, ZIP) open up to ``max_nesting_depth`` levels: a part
   of the received message is at depth 0 and each opened container adds one; a container
   found at depth ``max_nesting_depth`` is filed unopened (mail, TNEF) or refused (ZIP).
10. A message that yields no document and no refusal is filed whole as one ``.eml``
    (origin ``body``).  Beyond ``max_documents`` documents, one RefusedPart says how many
    were not filed.

ZIP limits: member count, declared total size and compression ratios are checked from the
central directory before anything is inflated; members are then inflated in 64 KiB chunks
and a member producing more than its declared size refuses the archive (forged headers).
Ratio limits only apply above 1 MiB of uncompressed data (per member, per archive): a
tiny, very repetitive file is harmless and must not be refused.

File names: see :func:`sanitize_filename`.  A name whose last suffix is not an extension
(1-5 letters/digits with a letter) gets the extension of the sniffed type (``SCAN0001`` ->
``SCAN0001.pdf``); a part without a usable name is called ``document-<n>.<ext>``.
"""

import binascii
import bz2
import codecs
import functools
import io
import lzma
import re
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email import policy as email_policy
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesParser
from types import MappingProxyType
from typing import Any, Final, TypeVar
from urllib.parse import unquote_to_bytes

import filetype
from tnefparse import TNEF

from gateway.errors import GatewayError

# --------------------------------------------------------------------------- public types


class _CachingPolicy(email_policy.EmailPolicy):
    """`policy.default`, but a header value is parsed once, not on every access.

    The email package re-parses a header each time it is read, and extraction reads
    Content-Type and Content-Disposition several times per part: that was most of the CPU
    spent per message. Parsed headers are immutable, so sharing them is safe; only short
    values are remembered, so a hostile message cannot fill memory through the cache.
    """

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if len(value) > _CACHED_HEADER_MAX:
            return super().header_fetch_parse(name, value)
        return _parsed_header(self, name, value)


_CACHED_HEADER_MAX = 1024


@functools.lru_cache(maxsize=2048)
def _parsed_header(policy: _CachingPolicy, name: str, value: str) -> Any:
    return email_policy.EmailPolicy.header_fetch_parse(policy, name, value)


PARSING_POLICY = _CachingPolicy()


@dataclass(frozen=True)
class ExtractionLimits:
    """Bounds that keep one hostile message from exhausting the gateway."""

    max_documents: int = 100  # documents per message, after expansion
    max_zip_members: int = 200  # members per archive
    max_zip_total_bytes: int = 100 * 1024 * 1024  # uncompressed bytes per archive
    max_zip_ratio: int = 100  # uncompressed/compressed for a member or whole archive
    max_nesting_depth: int = 3  # zip-in-zip / rfc822-in-rfc822 / tnef depth
    max_filename_length: int = 150  # characters, extension kept


@dataclass(frozen=True)
class ExtractedDocument:
    """One file to store in the company's folders."""

    filename: str
    media_type: str
    content: bytes
    origin: str


@dataclass(frozen=True)
class RefusedPart:
    """Something the sender sent that is deliberately not filed, with the reason why."""

    filename: str
    reason: str


@dataclass(frozen=True)
class Extraction:
    """Everything the filing stage needs to know about one received message."""

    documents: list[ExtractedDocument]
    refused: list[RefusedPart]
    message_id: str | None
    subject: str | None
    sender: str | None
    defects: list[str]


# --------------------------------------------------------------------------- constants

_MAX_MIME_DEPTH: Final = 50
_MAX_BOUNDARY_REPAIRS: Final = 3
_SMALL_IMAGE_BYTES: Final = 10 * 1024
_RATIO_FLOOR_BYTES: Final = 1024 * 1024
_MAX_DEFECTS: Final = 200
_CHUNK: Final = 64 * 1024
_SNIFF_BYTES: Final = 8192

_MAX_TNEF_OBJECTS: Final = 5000
_MAX_MAPI_PROPERTIES: Final = 4096
_MAX_TNEF_EMBEDDING: Final = 4
_TNEF_COPY_BUDGET: Final = 4 * 1024 * 1024 * 1024
_TNEF_MAGIC: Final = b"\x78\x9f\x3e\x22"
_IMESSAGE_SIG: Final = b"\x07\x03\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46"
_MAPI_ATTACH_DATA_OBJ: Final = 0x3701
_MAPI_ATTACH_LONG_FILENAME: Final = 0x3707
_MAPI_ATTACH_FILENAME: Final = 0x3704
_MAPI_DISPLAY_NAME: Final = 0x3001
_MAPI_ATTACH_MIME_TAG: Final = 0x370E
_MAPI_FIXED_SIZES: Final[Mapping[int, int]] = MappingProxyType(
    {
        0x02: 2,
        0x0B: 2,
        0x03: 4,
        0x04: 4,
        0x0A: 4,
        0x05: 8,
        0x06: 8,
        0x07: 8,
        0x14: 8,
        0x40: 8,
        0x48: 16,
    }
)
_MAPI_VARIABLE_TYPES: Final = frozenset({0x00, 0x0D, 0x1E, 0x1F, 0x102})

_GENERIC_TYPES: Final = frozenset(
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
_TYPE_TO_EXT: Final[Mapping[str, str]] = MappingProxyType(
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
        **{ext: media for media, ext in _TYPE_TO_EXT.items()},
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
# ZIP-based formats: a document, never an archive to expand.
_ZIP_DOCUMENT_EXTS: Final = frozenset(
    {
        "docx",
        "docm",
        "dotx",
        "dotm",
        "xlsx",
        "xlsm",
        "xltx",
        "xltm",
        "xlsb",
        "pptx",
        "pptm",
        "ppsx",
        "potx",
        "odt",
        "ods",
        "odp",
        "odg",
        "odf",
        "ott",
        "ots",
        "epub",
        "jar",
        "apk",
        "ipa",
        "xpi",
        "vsdx",
        "xps",
        "oxps",
        "3mf",
        "kmz",
        "numbers",
        "pages",
        "key",
        "sxw",
        "sxc",
        "sxi",
        "idml",
        "appx",
        "msix",
        "nupkg",
        "whl",
    }
)
_ZIP_FAMILY: Final = frozenset(
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
_ZIP_TYPES_DECLARED: Final = frozenset({"application/zip"})
_ZIP_METHODS: Final = frozenset(
    {
        zipfile.ZIP_STORED,
        zipfile.ZIP_DEFLATED,
        zipfile.ZIP_BZIP2,
        zipfile.ZIP_LZMA,
    }
)
_TNEF_NAMES: Final = frozenset({"winmail.dat", "win.dat"})
_FORWARD_TYPES: Final = frozenset({"message/rfc822", "message/global"})
_BODY_TEXT_TYPES: Final = frozenset({"text/plain", "text/html"})
_BODY_LIKE_TYPES: Final = frozenset(
    {
        "text/calendar",
        "text/enriched",
        "text/richtext",
        "text/watch-html",
        "text/x-watch-html",
        "text/x-amp-html",
        "text/rfc822-headers",
    }
)
_SIGNATURE_TYPES: Final = frozenset(
    {
        "application/pkcs7-signature",
        "application/x-pkcs7-signature",
        "application/pgp-signature",
    }
)
_ZIP_JUNK_NAMES: Final = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini"})
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

_BASE64_CHARS: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_BASE64: Final = bytes(sorted(set(range(256)) - set(_BASE64_CHARS)))
_BASE64_OR_SPACE: Final = _BASE64_CHARS + b" \t\r\n\v\f"
_SURROGATES_RE: Final = re.compile("[\udc80-\udcff]+")
_WHITESPACE_RE: Final = re.compile(r"[^\S\x1c-\x1f]+")  # \x1c-\x1f: separators, not spaces
_PATH_SEP_RE: Final = re.compile(r"[/\\]")
_ILLEGAL_CHARS_RE: Final = re.compile(r'[<>:"/\\|?*]')
_EXTENSION_RE: Final = re.compile(r"^(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{1,5}$")
_LONG_EXTENSION_RE: Final = re.compile(r"^[A-Za-z0-9]{1,10}$")
_ENCODED_WORD_RE: Final = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_PARAM_RE: Final = re.compile(r';\s*([A-Za-z0-9_.*-]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)', re.S)
_MIME_TYPE_RE: Final = re.compile(r"\s*([A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+)")
_CID_RE: Final = re.compile(r"cid:([^\s\"'<>)]+)", re.IGNORECASE)
_EMAIL_RE: Final = re.compile(r"[^\s<>\"'(),;:@\[\]]+@[^\s<>\"'(),;:@\[\]]+")
_BOUNDARY_LINE_RE: Final = re.compile(r"^--([^\s\"]{1,70})[ \t]*\r?$", re.MULTILINE)


_T = TypeVar("_T")

# --------------------------------------------------------------------------- run state


class _Refusal(GatewayError):
    """Raised inside archive handling when a limit is exceeded; the message is the reason."""


@dataclass
class _Run:
    """Mutable state of one extraction, kept per call so the module holds no global state."""

    limits: ExtractionLimits
    documents: list[ExtractedDocument] = field(default_factory=list)
    refused: list[RefusedPart] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    dropped: int = 0
    unnamed: int = 0
    boundary_repairs: int = 0
    suppressed_defects: int = 0
    tnef_budget: int = _TNEF_COPY_BUDGET

    def note(self, text: str) -> None:
        """Record a defect once; hostile input cannot flood the log."""
        if text in self.defects:
            return
        if len(self.defects) >= _MAX_DEFECTS:
            self.suppressed_defects += 1
            return
        self.defects.append(text)

    def refuse(self, filename: str, reason: str) -> None:
        self.refused.append(RefusedPart(filename=filename, reason=reason))

    @property
    def full(self) -> bool:
        return len(self.documents) >= self.limits.max_documents

    def found(self) -> int:
        """Count of everything found so far (filed, dropped or refused)."""
        return len(self.documents) + self.dropped + len(self.refused)


# --------------------------------------------------------------------------- public API


def extract_documents(raw: bytes, limits: ExtractionLimits = ExtractionLimits()) -> Extraction:
    """Return the documents of one received message; never raises on any input bytes."""
    data = bytes(raw) if not isinstance(raw, bytes) else raw
    run = _Run(limits=limits)
    msg: Message | None = None
    try:
        msg = BytesParser(policy=PARSING_POLICY).parsebytes(data)
    except RecursionError:
        run.note("message: MIME structure nested too deeply to be parsed; kept whole")
    except Exception as exc:
        run.note(f"message: could not be parsed as MIME ({_brief(exc)}); kept whole")

    message_id = subject = sender = None
    if msg is not None:
        message_id = _guard(lambda: _message_id(msg), None)
        subject = _guard(lambda: _subject(msg), None)
        sender = _guard(lambda: _sender(msg), None)
        for name in ("from", "subject", "date"):
            _note_defects(run, f"message header {name.title()}", _header_defects(msg, name))
        try:
            _walk_message(run, msg, depth=0, origin=None, where="message")
        except Exception as exc:  # last resort: keep what was found, say why it stopped
            run.note(
                f"message: extraction stopped early ({_brief(exc)}); "
                "documents found so far are kept"
            )

    if run.dropped:
        limit = limits.max_documents
        run.refuse(
            f"({run.dropped} more documents)",
            f"too many documents: {run.dropped} more document(s) were not filed; "
            f"a message may contain at most {limit} documents",
        )
    if not run.documents and not run.refused:
        run.documents.append(
            ExtractedDocument(
                filename=_eml_name(subject, None, limits.max_filename_length),
                media_type="message/rfc822",
                content=data,
                origin="body",
            )
        )
    if run.suppressed_defects:
        run.defects.append(f"... and {run.suppressed_defects} more defects not listed")
    return Extraction(
        documents=run.documents,
        refused=run.refused,
        message_id=message_id,
        subject=subject,
        sender=sender,
        defects=run.defects,
    )


def sanitize_filename(name: str | None, fallback: str, max_length: int = 150) -> str:
    """Make a sender-chosen name safe to store on any OS; never returns an empty string.

    NFC-normalised; only the last path component is kept (``/`` and ``\\``); control and
    format characters (incl. bidi overrides) and ``<>:"/\\|?*`` removed; whitespace
    collapsed; leading/trailing dots and spaces stripped; Windows reserved names (CON, NUL,
    COM1...) prefixed with ``_``; cut to ``max_length`` characters keeping the extension.
    ``fallback`` (sanitised the same way) is used when nothing is left.
    """
    max_length = max(1, max_length)
    cleaned = _clean_filename(name if isinstance(name, str) else "", max_length)
    if cleaned:
        return cleaned
    return _clean_filename(fallback, max_length) or "document"[:max_length]


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
    declared_type = _normalise_type(declared)
    ext_type = _type_from_extension(filename)
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n\x00")
    if stripped.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(_TNEF_MAGIC):
        return "application/ms-tnef"
    if stripped.startswith(b"{\\rtf"):
        return "application/rtf"
    specific = declared_type if declared_type not in _GENERIC_TYPES else None
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
    if ext_type and ext_type not in _GENERIC_TYPES:
        return ext_type
    if head and _looks_like_text(head):
        return _text_type(head, truncated=len(content) > _SNIFF_BYTES)
    return "application/octet-stream"


# --------------------------------------------------------------------------- MIME walk


def _walk_message(run: _Run, msg: Message, depth: int, origin: str | None, where: str) -> None:
    """Visit every part of one message (iteratively: hostile nesting cannot blow the stack)."""
    cids = _referenced_cids(msg)
    stack: list[tuple[Message, str, int, str]] = [(msg, "", 0, "")]
    while stack:
        part, path, level, parent = stack.pop()
        ctype, declared = _content_type(part)
        label = f"{where}, part {path} ({ctype})" if path else where
        _note_defects(run, label, getattr(part, "defects", ()))
        _note_defects(run, label, _header_defects(part, "content-type"))
        _note_defects(run, label, _header_defects(part, "content-disposition"))
        try:
            if ctype in _FORWARD_TYPES:
                _handle_forwarded(run, part, depth, label)
                continue
            if part.is_multipart():
                if level >= _MAX_MIME_DEPTH:
                    run.note(
                        f"{label}: MIME parts nested more than {_MAX_MIME_DEPTH} levels "
                        "deep; deeper parts ignored"
                    )
                    continue
                children = [c for c in _children(part) if isinstance(c, Message)]
                subtype = ctype.partition("/")[2]
                for index in range(len(children) - 1, -1, -1):
                    child_path = f"{path}.{index + 1}" if path else str(index + 1)
                    stack.append((children[index], child_path, level + 1, subtype))
                continue
            if ctype.startswith("multipart/"):
                repaired = _repair_multipart(run, part, ctype, label)
                if repaired is not None and level < _MAX_MIME_DEPTH:
                    stack.append((repaired, path, level + 1, parent))
                continue
            if ctype.startswith("message/"):
                continue  # delivery/disposition reports and the like: not documents
            _handle_leaf(run, part, ctype, declared, parent, cids, depth, origin, label)
        except Exception as exc:  # one broken part must not cost the others
            run.note(f"{label}: could not be processed ({_brief(exc)})")


def _handle_leaf(
    run: _Run,
    part: Message,
    ctype: str,
    declared: str | None,
    parent: str,
    cids: frozenset[str],
    depth: int,
    origin: str | None,
    label: str,
) -> None:
    """Decide whether one non-container MIME part is a document (see module docstring)."""
    filename = _filename(part)
    disposition = _disposition(part)
    if (
        filename is None
        and disposition != "attachment"
        and (
            ctype in _BODY_TEXT_TYPES
            or ctype in _BODY_LIKE_TYPES
            or (parent == "alternative" and ctype.startswith("text/"))
        )
    ):
        return
    if parent == "signed" and ctype in _SIGNATURE_TYPES:
        return
    if parent == "encrypted" and ctype == "application/pgp-encrypted":
        return
    notes: list[str] = []
    content = _payload_bytes(part, notes)
    for text in notes:
        run.note(f"{label}: {text}")
    if not content:
        if filename is not None or disposition == "attachment":
            name = sanitize_filename(filename, "attachment", run.limits.max_filename_length)
            run.refuse(name, "empty attachment (0 bytes): nothing to file")
        return
    media_type = sniff_media_type(content, declared, filename)
    if media_type.startswith("image/"):
        content_id = _content_id(part)
        if content_id and content_id in cids:
            return
        if filename is None and disposition != "attachment" and len(content) < _SMALL_IMAGE_BYTES:
            return
    where = origin or ("inline" if disposition == "inline" else "attachment")
    _consider_file(run, content, filename, media_type, where, depth)


def _consider_file(
    run: _Run, content: bytes, name: str | None, media_type: str, origin: str, depth: int
) -> None:
    """File one piece of content, opening it first when it is a container (TNEF, ZIP)."""
    base = _last_path_component(name).strip().lower()
    if media_type == "application/ms-tnef" or base in _TNEF_NAMES:
        _handle_tnef(run, content, name, origin, depth)
        return
    extension = base.rpartition(".")[2] if "." in base else ""
    if extension not in _ZIP_DOCUMENT_EXTS and (
        media_type in _ZIP_TYPES_DECLARED
        or (extension == "zip" and media_type == "application/octet-stream")
    ):
        _handle_zip(run, content, name, media_type, origin, depth)
        return
    _add_document(run, content, name, media_type, origin)


def _add_document(
    run: _Run, content: bytes, name: str | None, media_type: str, origin: str
) -> None:
    _add_named(run, _document_name(run, name, media_type), content, media_type, origin)


def _add_named(run: _Run, filename: str, content: bytes, media_type: str, origin: str) -> None:
    """Append a document unless max_documents is reached (then it is only counted)."""
    if run.full:
        run.dropped += 1
        return
    run.documents.append(
        ExtractedDocument(filename=filename, media_type=media_type, content=content, origin=origin)
    )


def _document_name(run: _Run, name: str | None, media_type: str) -> str:
    """Sanitised name, with the extension of the sniffed type added when the name has none."""
    max_length = max(1, run.limits.max_filename_length)
    extension = _TYPE_TO_EXT.get(media_type)
    cleaned = _clean_filename(name or "", max_length)
    if not cleaned:
        run.unnamed += 1
        fallback = f"document-{run.unnamed}.{extension or 'bin'}"
        return _clean_filename(fallback, max_length) or "document"[:max_length]
    if extension and not _EXTENSION_RE.match(cleaned.rpartition(".")[2] if "." in cleaned else ""):
        cleaned = _clean_filename(f"{cleaned}.{extension}", max_length) or cleaned
    return cleaned


# --------------------------------------------------------------------------- forwarded mail


def _handle_forwarded(run: _Run, part: Message, depth: int, label: str) -> None:
    """Open a forwarded message; keep it whole as .eml when it holds no document."""
    inner = _inner_message(run, part, label)
    part_name = _filename(part)
    max_length = run.limits.max_filename_length
    if inner is None:
        notes: list[str] = []
        content = _payload_bytes(part, notes)
        if content:
            name = _eml_name(None, part_name, max_length)
            _add_named(run, name, content, "message/rfc822", "rfc822:(unreadable)")
        return
    subject = _guard(lambda: _subject(inner), None)
    origin = f"rfc822:{subject or '(no subject)'}"
    if depth >= run.limits.max_nesting_depth:
        run.note(
            f"{label}: forwarded message '{subject or ''}' is nested more than "
            f"{run.limits.max_nesting_depth} levels deep; filed as .eml without opening it"
        )
        _add_eml(run, inner, subject, part_name, origin, label)
        return
    before = run.found()
    _walk_message(run, inner, depth + 1, origin, f"forwarded message '{subject or ''}'")
    if run.found() == before:
        _add_eml(run, inner, subject, part_name, origin, label)


def _inner_message(run: _Run, part: Message, label: str) -> Message | None:
    """The encapsulated message, re-parsed when a sender illegally base64-encoded it."""
    payload = _children(part)
    inner = payload[0] if payload and isinstance(payload[0], Message) else None
    encoding = _header_text(part, "content-transfer-encoding").strip().lower()
    if inner is not None and (encoding not in ("base64", "quoted-printable") or inner.keys()):
        return inner  # the normal case; a mislabelled but readable message is kept too
    if inner is not None:
        encoded = _serialize(inner) or b""
    else:
        raw_payload = _guard(part.get_payload, None)
        encoded = (
            raw_payload.encode("utf-8", "surrogateescape") if isinstance(raw_payload, str) else b""
        )
    if encoding == "base64":
        decoded, _problem = _b64decode_lenient(encoded)
    elif encoding == "quoted-printable":
        decoded = binascii.a2b_qp(encoded)
    else:
        decoded = encoded
    if not decoded.strip():
        return inner
    run.note(f"{label}: forwarded message was {encoding or 'oddly'} encoded; decoded it")
    try:
        return BytesParser(policy=PARSING_POLICY).parsebytes(decoded)
    except Exception as exc:
        run.note(f"{label}: forwarded message could not be parsed ({_brief(exc)})")
        return inner


def _add_eml(
    run: _Run, inner: Message, subject: str | None, part_name: str | None, origin: str, label: str
) -> None:
    content = _serialize(inner)
    if content is None:
        run.note(f"{label}: forwarded message could not be serialised; not filed")
        return
    name = _eml_name(subject, part_name, run.limits.max_filename_length)
    _add_named(run, name, content, "message/rfc822", origin)


def _eml_name(subject: str | None, part_name: str | None, max_length: int) -> str:
    """``<subject>.eml``, else the part's own name, else ``message.eml``."""
    max_length = max(1, max_length)
    if subject:
        stem = _clean_filename(subject.replace("/", "-").replace("\\", "-"), max_length)
        if stem:
            return _clean_filename(f"{stem}.eml", max_length) or stem
    if part_name:
        cleaned = _clean_filename(part_name, max_length)
        if cleaned:
            if cleaned.lower().endswith(".eml"):
                return cleaned
            return _clean_filename(f"{cleaned}.eml", max_length) or cleaned
    return _bound_length("message.eml", max_length)


def _serialize(msg: Message) -> bytes | None:
    """Bytes of a parsed (sub)message, headers kept as received rather than refolded."""
    for make_policy in (
        lambda: msg.policy.clone(refold_source="none", linesep="\r\n"),
        lambda: email_policy.compat32.clone(linesep="\r\n"),
    ):
        try:
            buffer = io.BytesIO()
            BytesGenerator(buffer, mangle_from_=False, policy=make_policy()).flatten(msg)
            return buffer.getvalue()
        except Exception:  # try the next, more lenient serialisation
            continue
    return None


# --------------------------------------------------------------------------- TNEF


def _handle_tnef(run: _Run, content: bytes, name: str | None, origin: str, depth: int) -> None:
    """Take the attachments out of an Outlook winmail.dat; keep it as is when it can't be."""
    shown = _clean_filename(name or "", 80) or "winmail.dat"
    if depth >= run.limits.max_nesting_depth:
        run.note(
            f"TNEF '{shown}' is nested more than {run.limits.max_nesting_depth} levels "
            "deep; filed as is"
        )
        _add_document(run, content, name or "winmail.dat", "application/ms-tnef", origin)
        return
    problem = _tnef_problem(run, content, 0)
    tnef = None
    if problem is None:
        try:
            tnef = TNEF(content, do_checksum=False)
        except Exception as exc:
            problem = _brief(exc)
    if tnef is None:
        run.note(f"TNEF '{shown}' could not be decoded ({problem}); filed as is")
        _add_document(run, content, name or "winmail.dat", "application/ms-tnef", origin)
        return
    if not _tnef_attachments(run, tnef, depth, shown):
        has_body = bool(_guard(tnef.has_body, False))
        run.note(
            f"TNEF '{shown}' holds {'only the message body' if has_body else 'nothing'}; not filed"
        )


def _tnef_attachments(run: _Run, tnef: TNEF, depth: int, shown: str) -> bool:
    """File the attachments of a decoded TNEF; return whether there were any."""
    found = False
    for attachment in list(getattr(tnef, "attachments", [])):
        embedded = getattr(attachment, "embed", None)
        if isinstance(embedded, TNEF):
            found = True
            if depth + 1 >= run.limits.max_nesting_depth:
                run.note(f"TNEF '{shown}': embedded Outlook item nested too deep; not opened")
            elif not _tnef_attachments(run, embedded, depth + 1, shown):
                run.note(f"TNEF '{shown}': embedded Outlook item has no attachment; not filed")
            continue
        data = getattr(attachment, "data", b"")
        data = data if isinstance(data, bytes) else b""
        name = _tnef_attachment_name(attachment)
        if not data:
            if name:
                found = True
                run.refuse(
                    sanitize_filename(name, "attachment", run.limits.max_filename_length),
                    "empty attachment (0 bytes): nothing to file",
                )
            continue
        found = True
        declared = _mapi_text(attachment, _MAPI_ATTACH_MIME_TAG)
        media_type = sniff_media_type(data, declared, name)
        _consider_file(run, data, name, media_type, "tnef", depth + 1)
    return found


def _tnef_attachment_name(attachment: object) -> str | None:
    """Long file name when present, else the 8.3 title; decoded without trusting tnefparse."""
    for prop_id in (_MAPI_ATTACH_LONG_FILENAME, _MAPI_ATTACH_FILENAME, _MAPI_DISPLAY_NAME):
        text = _mapi_text(attachment, prop_id)
        if text:
            return text
    title = getattr(attachment, "_name", b"")
    text = _bytes_to_text(title) if isinstance(title, bytes) else str(title or "")
    text = text.replace("\x00", "").strip()
    return text or None


def _mapi_text(attachment: object, prop_id: int) -> str | None:
    for prop in getattr(attachment, "mapi_attrs", []):
        if getattr(prop, "name", None) != prop_id:
            continue
        value = _guard(lambda p=prop: p.data, None)
        if isinstance(value, bytes):
            value = _bytes_to_text(value)
        if isinstance(value, str):
            value = value.replace("\x00", "").strip()
            if value:
                return value
    return None


def _tnef_problem(run: _Run, data: bytes, embedding: int) -> str | None:
    """Why tnefparse must not be given this stream, or None when it is safe.

    tnefparse trusts the counts written in the stream: a forged MAPI property count makes it
    loop billions of times without raising, and every attribute costs a copy of the rest of
    the stream.  This walks the stream the way tnefparse will and rejects such input.
    """
    if embedding > _MAX_TNEF_EMBEDDING:
        return "Outlook items embedded too deeply"
    if len(data) < 6 or not data.startswith(_TNEF_MAGIC):
        return "no TNEF signature"
    offset, objects, size = 6, 0, len(data)
    while offset + 12 < size:
        objects += 1
        if objects > _MAX_TNEF_OBJECTS:
            return f"more than {_MAX_TNEF_OBJECTS} attributes"
        run.tnef_budget -= size - offset
        if run.tnef_budget < 0:
            return "too large to decode"
        level = data[offset]
        attr_id = int.from_bytes(data[offset + 1 : offset + 3], "little")
        length = int.from_bytes(data[offset + 5 : offset + 9], "little")
        end = min(size, offset + length + 11)
        body = data[offset + 9 : end - 2]
        try:
            if (level == 2 and attr_id == 0x9005) or (level != 2 and attr_id == 0x9003):
                _check_mapi(run, body, 0, embedding)  # attachment / message MAPI properties
            elif level != 2 and attr_id == 0x9004 and len(body) >= 4:
                rows = int.from_bytes(body[:4], "little")
                position = 4
                for _ in range(min(rows, len(body) // 4 + 1)):
                    if position + 4 > len(body):
                        break
                    position = _check_mapi(run, body, position, embedding)
        except ValueError as exc:
            return str(exc)
        offset = end
    return None


def _check_mapi(run: _Run, data: bytes, offset: int, embedding: int) -> int:
    """Walk one MAPI property block like tnefparse's decode_mapi; raise on forged counts."""
    size = len(data)
    if offset + 4 > size:
        return size
    count = int.from_bytes(data[offset : offset + 4], "little")
    offset += 4
    if count > _MAX_MAPI_PROPERTIES:
        raise ValueError(f"forged MAPI property count {count}")
    for _ in range(count):
        if offset + 4 > size:
            return size
        prop_type = int.from_bytes(data[offset : offset + 2], "little")
        prop_id = int.from_bytes(data[offset + 2 : offset + 4], "little")
        offset += 4
        if prop_id >= 0x8000:
            offset += 16
            if offset + 8 > size:
                return size
            kind = int.from_bytes(data[offset : offset + 4], "little")
            offset += 4
            if kind == 0:
                offset += 4
            else:
                name_length = int.from_bytes(data[offset : offset + 4], "little")
                offset += 4 + name_length + (-name_length % 4)
        multi = bool(prop_type & 0x1000)
        prop_type &= ~0x1000
        values = 1
        if multi:
            if offset + 4 > size:
                return size
            values = int.from_bytes(data[offset : offset + 4], "little")
            offset += 4
        fixed = _MAPI_FIXED_SIZES.get(prop_type)
        if fixed is not None:
            if values * fixed > max(0, size - offset):
                raise ValueError(f"forged MAPI value count {values}")
            offset += values * fixed
            if values % 2 and prop_type in (0x02, 0x0B):
                offset += 2
            continue
        if prop_type not in _MAPI_VARIABLE_TYPES:
            return size  # tnefparse stops at an unknown type
        for _value in range(values):
            items = 1
            if not multi:
                if offset + 4 > size:
                    return size
                items = int.from_bytes(data[offset : offset + 4], "little")
                offset += 4
            chunks: list[bytes] = []
            for _item in range(items):
                if offset + 4 > size:
                    return size
                length = int.from_bytes(data[offset : offset + 4], "little")
                offset += 4
                padded = length + (-length % 4)
                chunks.append(data[offset : offset + padded].rstrip(b"\x00"))
                offset += padded
            joined = b"".join(chunks)
            if prop_id == _MAPI_ATTACH_DATA_OBJ and joined.startswith(_IMESSAGE_SIG):
                problem = _tnef_problem(run, joined[len(_IMESSAGE_SIG) :], embedding + 1)
                if problem:
                    raise ValueError(f"embedded Outlook item: {problem}")
    return offset


# --------------------------------------------------------------------------- ZIP


def _handle_zip(
    run: _Run, content: bytes, name: str | None, media_type: str, origin: str, depth: int
) -> None:
    """Expand a ZIP into its members after checking every limit from the central directory."""
    limits = run.limits
    infos: list[zipfile.ZipInfo] | None = None
    problem = ""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as zf:
            infos = zf.infolist()
    except Exception as exc:
        problem = _brief(exc)
    package_type = _zip_package_type(content, infos) if infos is not None else None
    if package_type is not None:
        name_type = _type_from_extension(name)
        kept = name_type if name_type in _ZIP_FAMILY else package_type
        _add_document(run, content, name, kept, origin)
        return
    archive = _document_name(run, name, "application/zip")
    if depth >= limits.max_nesting_depth:
        run.refuse(
            archive,
            "zip archive refused: archives nested more than "
            f"{limits.max_nesting_depth} levels deep",
        )
        return
    if infos is None:
        run.note(f"zip archive '{archive}' could not be opened ({problem}); filed as is")
        _add_named(run, archive, content, media_type, origin)
        return
    members = [info for info in infos if not _is_zip_junk(info)]
    if not members:
        run.note(f"zip archive '{archive}' contains no file; filed as is")
        _add_named(run, archive, content, media_type, origin)
        return
    refusal = _zip_limit_problem(members, len(content), limits)
    if refusal is not None:
        run.refuse(archive, f"zip archive refused: {refusal}")
        return
    if any(info.flag_bits & 0x1 for info in members):
        run.note(f"zip archive '{archive}' is password-protected; filed as is without opening")
        _add_named(run, archive, content, media_type, origin)
        return
    unsupported = sorted({info.compress_type for info in members} - _ZIP_METHODS)
    if unsupported:
        run.note(
            f"zip archive '{archive}' uses an unsupported compression method "
            f"{unsupported}; filed as is"
        )
        _add_named(run, archive, content, media_type, origin)
        return
    if run.full:
        run.dropped += len(members)
        return
    extracted: list[tuple[str, bytes]] = []
    total = 0
    for info in members:
        member = _zip_member_name(info)
        try:
            data = _read_member(content, info, limits.max_zip_total_bytes - total)
        except _Refusal as exc:
            run.refuse(archive, f"zip archive refused: '{_clean_filename(member, 80)}' {exc}")
            return
        except Exception as exc:
            run.note(
                f"zip archive '{archive}' is damaged ({_brief(exc)} in "
                f"'{_clean_filename(member, 80)}'); filed as is"
            )
            _add_named(run, archive, content, media_type, origin)
            return
        total += len(data)
        extracted.append((member, data))
    for member, data in extracted:
        if not data:
            run.refuse(
                sanitize_filename(member, "file", limits.max_filename_length),
                f"empty file (0 bytes) in zip archive '{archive}': nothing to file",
            )
            continue
        member_type = sniff_media_type(data, None, member)
        _consider_file(run, data, member, member_type, f"zip:{archive}", depth + 1)


def _zip_limit_problem(
    members: list[zipfile.ZipInfo], archive_size: int, limits: ExtractionLimits
) -> str | None:
    """Check the declared sizes before inflating a single byte."""
    if len(members) > limits.max_zip_members:
        return (
            f"it contains {len(members)} files, more than the limit of "
            f"{limits.max_zip_members} files per archive"
        )
    total = sum(info.file_size for info in members)
    if total > limits.max_zip_total_bytes:
        return (
            f"it would expand to {_human_size(total)}, more than the limit of "
            f"{_human_size(limits.max_zip_total_bytes)} per archive"
        )
    for info in members:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _RATIO_FLOOR_BYTES and ratio > limits.max_zip_ratio:
            return (
                f"compression ratio {round(ratio)}:1 exceeds {limits.max_zip_ratio}:1 "
                f"(possible zip bomb) in '{_clean_filename(_zip_member_name(info), 80)}'"
            )
    ratio = total / max(archive_size, 1)
    if total > _RATIO_FLOOR_BYTES and ratio > limits.max_zip_ratio:
        return (
            f"compression ratio {round(ratio)}:1 exceeds {limits.max_zip_ratio}:1 "
            "(possible zip bomb)"
        )
    return None


def _read_member(content: bytes, info: zipfile.ZipInfo, budget: int) -> bytes:
    """Decompress one member in chunks, stopping as soon as it outgrows its declared size.

    Done here rather than with ``ZipFile.open``: zipfile silently truncates a member at its
    declared size, so a forged size would pass for a mere CRC error instead of a bomb.
    """
    compressed = _raw_member(content, info)
    method = info.compress_type
    if method == zipfile.ZIP_STORED:
        data = compressed
    elif method == zipfile.ZIP_DEFLATED:
        data = _inflate(compressed, info.file_size, budget)
    elif method == zipfile.ZIP_BZIP2:
        data = _stream_decompress(bz2.BZ2Decompressor(), compressed, info.file_size, budget)
    else:
        decompressor, stream = _lzma_decompressor(compressed, info.file_size)
        data = _stream_decompress(decompressor, stream, info.file_size, budget)
    if len(data) != info.file_size:
        raise ValueError("size does not match the declared size")
    if zlib.crc32(data) != info.CRC:
        raise ValueError("CRC mismatch")
    return data


def _raw_member(content: bytes, info: zipfile.ZipInfo) -> bytes:
    """Compressed bytes of a member, located through its local header."""
    start = info.header_offset
    header = content[start : start + 30]
    if len(header) < 30 or not header.startswith(b"PK\x03\x04"):
        raise ValueError("bad local header")
    name_length = int.from_bytes(header[26:28], "little")
    extra_length = int.from_bytes(header[28:30], "little")
    begin = start + 30 + name_length + extra_length
    data = content[begin : begin + info.compress_size]
    if len(data) < info.compress_size:
        raise ValueError("truncated member")
    return data


def _inflate(compressed: bytes, declared: int, budget: int) -> bytes:
    decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    position = 0
    for _ in range(len(compressed) // _CHUNK + declared // _CHUNK + 16):
        if decompressor.unconsumed_tail:
            feed = decompressor.unconsumed_tail
        else:
            feed = compressed[position : position + _CHUNK]
            position += len(feed)
        piece = decompressor.decompress(feed, _CHUNK)
        out += piece
        _check_growth(len(out), declared, budget)
        if decompressor.eof or (not piece and not feed):
            break
    if not decompressor.eof:
        raise ValueError("compressed data is truncated")
    return bytes(out)


def _stream_decompress(
    decompressor: bz2.BZ2Decompressor | lzma.LZMADecompressor,
    compressed: bytes,
    declared: int,
    budget: int,
) -> bytes:
    out = bytearray()
    position = 0
    for _ in range(len(compressed) // _CHUNK + declared // _CHUNK + 16):
        if decompressor.eof:
            break
        if decompressor.needs_input:
            if position >= len(compressed):
                break
            feed = compressed[position : position + _CHUNK]
            position += len(feed)
        else:
            feed = b""
        out += decompressor.decompress(feed, max_length=_CHUNK)
        _check_growth(len(out), declared, budget)
    return bytes(out)


def _lzma_decompressor(compressed: bytes, declared: int) -> tuple[lzma.LZMADecompressor, bytes]:
    """Raw LZMA1 decoder for a ZIP member (APPNOTE 5.8.8 header: version, props size, props).

    The dictionary size comes from the file and is capped to the declared output size: a
    forged 4 GB dictionary must not be allocated, and a smaller one decodes the same data.
    """
    if len(compressed) < 9:
        raise ValueError("truncated LZMA header")
    props_size = int.from_bytes(compressed[2:4], "little")
    props = compressed[4 : 4 + props_size]
    if props_size != 5 or len(props) != 5 or props[0] >= 9 * 5 * 5:
        raise ValueError("invalid LZMA properties")
    pb, rest = divmod(props[0], 45)
    lp, lc = divmod(rest, 9)
    dict_size = min(int.from_bytes(props[1:5], "little"), max(declared, 4096))
    filters = [
        {"id": lzma.FILTER_LZMA1, "dict_size": max(dict_size, 4096), "lc": lc, "lp": lp, "pb": pb}
    ]
    return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters), compressed[4 + props_size :]


def _check_growth(produced: int, declared: int, budget: int) -> None:
    if produced > declared:
        raise _Refusal(
            "expands beyond the size declared in the archive (forged headers, possible zip bomb)"
        )
    if produced > budget:
        raise _Refusal("makes the archive expand beyond its size limit")


def _zip_member_name(info: zipfile.ZipInfo) -> str:
    """Member name; UTF-8 names written without the UTF-8 flag (macOS) are repaired."""
    name = info.filename
    if not info.flag_bits & 0x800 and not name.isascii():
        try:
            return name.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return name
    return name


def _is_zip_junk(info: zipfile.ZipInfo) -> bool:
    """Directories and the litter of macOS/Windows archivers are not documents."""
    name = info.filename.replace("\\", "/")
    components = [c for c in name.split("/") if c]
    if not components or name.endswith("/"):  # (ZipInfo.is_dir() fails on an empty name)
        return True
    base = components[-1]
    return "__MACOSX" in components or base.lower() in _ZIP_JUNK_NAMES or base.startswith("._")


def _zip_package_type(content: bytes, infos: list[zipfile.ZipInfo]) -> str | None:
    """Media type when this ZIP is really an Office/OpenDocument/EPUB file, else None."""
    names = {info.filename for info in infos}
    if "[Content_Types].xml" in names:
        for prefix, media in (
            ("word/", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
            ("xl/", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            ("ppt/", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
        ):
            if any(n.startswith(prefix) for n in names):
                return media
        return "application/octet-stream"
    first = infos[0] if infos else None
    if first is not None and first.filename == "mimetype" and first.file_size < 200:
        try:
            declared = _read_member(content, first, 200).decode("ascii").strip()
        except Exception:
            return "application/octet-stream"
        normalised = _normalise_type(declared)
        if normalised and normalised not in _GENERIC_TYPES:
            return normalised
        return "application/octet-stream"
    return None


# --------------------------------------------------------------------------- MIME helpers


def _children(part: Message) -> list[object]:
    payload = _guard(part.get_payload, None)
    return list(payload) if isinstance(payload, list) else []


def _repair_multipart(run: _Run, part: Message, ctype: str, label: str) -> Message | None:
    """Re-parse a multipart whose boundary parameter is missing, guessing it from the body."""
    if run.boundary_repairs >= _MAX_BOUNDARY_REPAIRS:
        return None
    payload = _guard(part.get_payload, None)
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
        repaired = BytesParser(policy=PARSING_POLICY).parsebytes(
            head + payload.encode("utf-8", "surrogateescape")
        )
    except Exception as exc:
        run.note(f"{label}: multipart boundary could not be repaired ({_brief(exc)})")
        return None
    if not repaired.is_multipart():
        return None
    run.note(f"{label}: multipart boundary missing; recovered '{boundary}' from the body")
    return repaired


def _payload_bytes(part: Message, notes: list[str]) -> bytes:
    """Decoded body of a leaf part; a damaged transfer encoding yields what can be decoded."""
    payload = _guard(part.get_payload, None)
    if isinstance(payload, bytes):
        raw = payload
    elif isinstance(payload, str):
        raw = payload.encode("utf-8", "surrogateescape")
    else:
        return b""
    encoding = _header_text(part, "content-transfer-encoding").strip().lower()
    if encoding == "base64":
        data, problem = _b64decode_lenient(raw)
        if problem:
            notes.append(
                f"base64 content damaged ({problem}); kept the {len(data)} bytes "
                "that could be decoded"
            )
        return data
    if encoding == "quoted-printable":
        return binascii.a2b_qp(raw)
    if encoding in ("x-uuencode", "uuencode", "x-uue", "uue"):
        decoded = _guard(lambda: part.get_payload(decode=True), None)
        if isinstance(decoded, bytes):
            return decoded
    return raw


def _b64decode_lenient(raw: bytes) -> tuple[bytes, str | None]:
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


def _content_type(part: Message) -> tuple[str, str | None]:
    """(type used to route the part, declared type or None when there is no header)."""
    effective = _guard(part.get_content_type, "text/plain")
    if not isinstance(effective, str):
        effective = "text/plain"
    raw = _raw_header(part, "content-type")
    if raw is None:
        return effective.lower(), None
    if effective == "text/plain":
        match = _MIME_TYPE_RE.match(raw)
        if match:
            effective = match.group(1).lower()
    return effective.lower(), effective.lower()


def _disposition(part: Message) -> str | None:
    value = _guard(part.get_content_disposition, None)
    if isinstance(value, str) and value:
        return value.strip().lower()
    raw = _raw_header(part, "content-disposition")
    if raw:
        match = re.match(r"\s*([A-Za-z-]+)", raw)
        if match:
            return match.group(1).lower()
    return None


def _content_id(part: Message) -> str | None:
    raw = _raw_header(part, "content-id")
    if not raw:
        return None
    return _normalise_cid(raw)


def _normalise_cid(value: str) -> str:
    text = _bytes_to_text(unquote_to_bytes(value.strip()))
    return text.strip().strip("<>").strip().lower()


def _referenced_cids(msg: Message) -> frozenset[str]:
    """Content-IDs used as ``cid:`` in the HTML of this message (not of forwarded ones)."""
    found: set[str] = set()
    stack: list[tuple[Message, int]] = [(msg, 0)]
    while stack:
        part, level = stack.pop()
        ctype, _declared = _content_type(part)
        if ctype.startswith("message/"):
            continue
        if part.is_multipart():
            if level < _MAX_MIME_DEPTH:
                stack.extend((c, level + 1) for c in _children(part) if isinstance(c, Message))
            continue
        if ctype == "text/html":
            html = _payload_bytes(part, []).decode("latin-1")
            found.update(_normalise_cid(m.group(1)) for m in _CID_RE.finditer(html))
    return frozenset(found)


def _filename(part: Message) -> str | None:
    """File name from Content-Disposition or Content-Type, decoded; None when absent.

    The email package decodes RFC 2047 and RFC 2231 names but turns unknown charsets and
    raw 8-bit bytes into U+FFFD; then the raw header is decoded here instead (UTF-8, else
    windows-1252, the superset of Latin-1 that real "latin-1" mail uses).
    """
    name = _guard(part.get_filename, None)
    if not (isinstance(name, str) and name.strip()):
        value = _guard(lambda: part.get_param("name", header="content-type"), None)
        name = value if isinstance(value, str) else None
    if name is None or "\ufffd" in name or "=?" in name:
        raw = _raw_filename(part)
        if raw:
            name = raw
        elif name is not None:
            name = _decode_rfc2047(name)
    if name is None:
        return None
    name = _fix_surrogates(name)
    return name if name.strip() else None


def _raw_filename(part: Message) -> str | None:
    for header, key in (("content-disposition", "filename"), ("content-type", "name")):
        raw = _raw_header(part, header)
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
        match = re.fullmatch(rf"{re.escape(key)}\*(\d{{1,3}})(\*?)", param)
        if match:
            pieces.append((int(match.group(1)), bool(match.group(2)), value))
    if pieces:
        pieces.sort()
        return _decode_rfc2231([(encoded, value) for _i, encoded, value in pieces])
    if key in params:
        return _decode_rfc2047(params[key])
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
    return _decode_with_charset(bytes(data), charset or "utf-8")


def _decode_rfc2047(text: str) -> str:
    """Decode encoded words by hand: used when the email package could not."""
    out: list[str] = []
    position = 0
    previous_was_word = False
    for match in _ENCODED_WORD_RE.finditer(text):
        between = text[position : match.start()]
        if not (previous_was_word and not between.strip()):
            out.append(_fix_surrogates(between))
        charset = match.group(1).split("*", 1)[0]
        payload = match.group(3).encode("utf-8", "surrogateescape")
        if match.group(2) in "Bb":
            data, _problem = _b64decode_lenient(payload)
        else:
            data = binascii.a2b_qp(payload, header=True)
        out.append(_decode_with_charset(data, charset))
        position = match.end()
        previous_was_word = True
    out.append(_fix_surrogates(text[position:]))
    return "".join(out)


def _header_text(part: Message, name: str) -> str:
    try:
        value = part.get(name)
        return "" if value is None else str(value)
    except Exception:
        return _raw_header(part, name) or ""


def _raw_header(part: Message, name: str) -> str | None:
    """Header value exactly as received (unfolded), without the email package's parsing."""
    try:
        for key, value in part.raw_items():
            if key.lower() == name:
                return re.sub(r"\r?\n(?=[ \t])", "", _fix_surrogates(str(value)))
    except Exception:
        return None
    return None


def _header_defects(part: Message, name: str) -> Iterable[object]:
    header = _guard(lambda: part.get(name), None)
    defects = getattr(header, "defects", ())
    return defects if isinstance(defects, tuple | list) else ()


def _note_defects(run: _Run, label: str, defects: Iterable[object]) -> None:
    for defect in defects:
        run.note(f"{label}: {_describe_defect(defect)}")


def _describe_defect(defect: object) -> str:
    kind = type(defect).__name__
    text = _DEFECT_TEXT.get(kind) or re.sub(r"(?<!^)(?=[A-Z])", " ", kind).lower()
    detail = _guard(lambda: str(defect).strip(), "")
    if detail and detail.lower() not in text.lower():
        text = f"{text}: {detail[:200]}"
    return text


def _message_id(msg: Message) -> str | None:
    raw = _raw_header(msg, "message-id")
    if raw is None:
        return None
    match = re.search(r"<([^<>]*)>", raw)
    value = match.group(1) if match else (raw.split() or [""])[0]
    value = value.strip().strip("<>").strip()
    return value or None


def _subject(msg: Message) -> str | None:
    text: str | None
    try:
        value = msg.get("subject")
        text = None if value is None else str(value)
    except Exception:
        text = None
    if text is None or "\ufffd" in text or "=?" in text:
        raw = _raw_header(msg, "subject")
        if raw is not None:
            text = _decode_rfc2047(raw)
    if text is None:
        return None
    text = _WHITESPACE_RE.sub(" ", _fix_surrogates(text)).strip()
    return text or None


def _sender(msg: Message) -> str | None:
    try:
        header = msg.get("from")
        for address in getattr(header, "addresses", ()):
            if address.username and address.domain:
                return _fix_surrogates(address.addr_spec)
    except Exception:
        pass
    raw = _raw_header(msg, "from")
    if raw:
        match = _EMAIL_RE.search(_decode_rfc2047(raw))
        if match:
            return match.group(0)
    return None


# --------------------------------------------------------------------------- names & types


def _clean_filename(name: str, max_length: int) -> str:
    """The sanitising rules; may return '' (callers supply the fallback)."""
    text = unicodedata.normalize("NFC", _fix_surrogates(name))
    text = _WHITESPACE_RE.sub(" ", text)
    components = _PATH_SEP_RE.split(text)
    text = next((c for c in reversed(components) if c.strip(" .")), "")
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
    text = _ILLEGAL_CHARS_RE.sub("", text)
    text = _WHITESPACE_RE.sub(" ", text).strip(" .")
    if not text:
        return ""
    text = _bound_length(text, max_length)
    if text.split(".", 1)[0].rstrip(" ").upper() in _WINDOWS_RESERVED:
        text = _bound_length(f"_{text}", max_length)
    return text


def _bound_length(name: str, max_length: int) -> str:
    """Cut a name to max_length characters, keeping its extension."""
    if len(name) <= max_length:
        return name
    stem, dot, extension = name.rpartition(".")
    if dot and stem and _LONG_EXTENSION_RE.match(extension) and len(extension) + 2 <= max_length:
        cut = stem[: max_length - len(extension) - 1].rstrip(" .")
        if cut:
            return f"{cut}.{extension}"
    return name[:max_length].rstrip(" .") or name[:max_length]


def _last_path_component(name: str | None) -> str:
    if not name:
        return ""
    return _PATH_SEP_RE.split(name)[-1]


def _normalise_type(value: str | None) -> str:
    if not value:
        return ""
    match = _MIME_TYPE_RE.match(value)
    if not match:
        return ""
    media = match.group(1).lower()
    return _TYPE_ALIASES.get(media, media)


def _type_from_extension(filename: str | None) -> str | None:
    base = _last_path_component(filename).strip().lower()
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
    return _TYPE_ALIASES.get(kind.mime, kind.mime)


def _same_family(guessed: str, candidate: str) -> bool:
    """True when the sender's more precise type should win over the signature guess."""
    if guessed == "application/zip":
        return candidate in _ZIP_FAMILY
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


# --------------------------------------------------------------------------- small helpers


def _fix_surrogates(text: str) -> str:
    """Undo surrogateescape: raw 8-bit header bytes become UTF-8, else windows-1252 text."""
    if not _SURROGATES_RE.search(text):
        return text
    return _SURROGATES_RE.sub(
        lambda m: _bytes_to_text(m.group(0).encode("utf-8", "surrogateescape")), text
    )


def _bytes_to_text(data: bytes) -> str:
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _decode_with_charset(data: bytes, charset: str) -> str:
    try:
        codecs.lookup(charset)
        return data.decode(charset)
    except Exception:
        return _bytes_to_text(data)


def _human_size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    value = float(size)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} TB"


def _brief(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _guard(function: Callable[[], _T], default: _T) -> _T:
    """Call an email-package accessor that may raise on garbage; fall back to a default."""
    try:
        return function()
    except Exception:
        return default

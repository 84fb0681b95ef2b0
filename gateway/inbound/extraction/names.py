"""The names documents are filed under: sniffed extensions, ``document-<n>``, ``.eml``."""

import re
from typing import Final

from gateway.inbound.extraction.run import Run
from gateway.mail.names import bound_length, clean_filename
from gateway.mail.sniff import TYPE_TO_EXT

_EXTENSION_RE: Final = re.compile(r"^(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{1,5}$")
BINHEX_TYPE: Final = "application/mac-binhex40"
_BINHEX_RE: Final = re.compile(rb"^\s{0,64}\(This file must be converted with BinHex")


def is_binhex(content: bytes) -> bool:
    """BinHex 4.0 text (classic Mac OS mail): recognised by the line it starts with."""
    return _BINHEX_RE.match(content[:200]) is not None


def binhex_name(name: str | None) -> str:
    """``facture.pdf`` sent as BinHex is filed ``facture.pdf.hqx``: not a PDF as it is."""
    base = (name or "").strip()
    if base.lower().endswith(".hqx"):
        return base
    return f"{base}.hqx" if base else "document.hqx"


def add_document(run: Run, content: bytes, name: str | None, media_type: str, origin: str) -> None:
    """File content under the name it gets from :func:`document_name`."""
    run.add(document_name(run, name, media_type), content, media_type, origin)


def document_name(run: Run, name: str | None, media_type: str) -> str:
    """Sanitised name, with the extension of the sniffed type added when the name has none."""
    max_bytes = max(1, run.limits.max_filename_bytes)
    extension = TYPE_TO_EXT.get(media_type)
    cleaned = clean_filename(name or "", max_bytes)
    if not cleaned:
        run.unnamed += 1
        fallback = f"document-{run.unnamed}.{extension or 'bin'}"
        return clean_filename(fallback, max_bytes) or "document"[:max_bytes]
    if extension and not _EXTENSION_RE.match(cleaned.rpartition(".")[2] if "." in cleaned else ""):
        cleaned = clean_filename(f"{cleaned}.{extension}", max_bytes) or cleaned
    return cleaned


def eml_name(subject: str | None, part_name: str | None, max_bytes: int) -> str:
    """``<subject>.eml``, else the part's own name, else ``message.eml``."""
    max_bytes = max(1, max_bytes)
    if subject:
        stem = clean_filename(subject.replace("/", "-").replace("\\", "-"), max_bytes)
        if stem:
            return clean_filename(f"{stem}.eml", max_bytes) or stem
    if part_name:
        cleaned = clean_filename(part_name, max_bytes)
        if cleaned:
            if cleaned.lower().endswith(".eml"):
                return cleaned
            return clean_filename(f"{cleaned}.eml", max_bytes) or cleaned
    return bound_length("message.eml", max_bytes)

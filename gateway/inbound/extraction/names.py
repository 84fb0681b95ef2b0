"""The names documents are filed under: sniffed extensions, ``document-<n>``, ``.eml``."""

import re
from typing import Final

from gateway.inbound.extraction.run import Run
from gateway.mail.names import bound_length, clean_filename
from gateway.mail.sniff import TYPE_TO_EXT

_EXTENSION_RE: Final = re.compile(r"^(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{1,5}$")


def add_document(run: Run, content: bytes, name: str | None, media_type: str, origin: str) -> None:
    """File content under the name it gets from :func:`document_name`."""
    run.add(document_name(run, name, media_type), content, media_type, origin)


def document_name(run: Run, name: str | None, media_type: str) -> str:
    """Sanitised name, with the extension of the sniffed type added when the name has none."""
    max_length = max(1, run.limits.max_filename_length)
    extension = TYPE_TO_EXT.get(media_type)
    cleaned = clean_filename(name or "", max_length)
    if not cleaned:
        run.unnamed += 1
        fallback = f"document-{run.unnamed}.{extension or 'bin'}"
        return clean_filename(fallback, max_length) or "document"[:max_length]
    if extension and not _EXTENSION_RE.match(cleaned.rpartition(".")[2] if "." in cleaned else ""):
        cleaned = clean_filename(f"{cleaned}.{extension}", max_length) or cleaned
    return cleaned


def eml_name(subject: str | None, part_name: str | None, max_length: int) -> str:
    """``<subject>.eml``, else the part's own name, else ``message.eml``."""
    max_length = max(1, max_length)
    if subject:
        stem = clean_filename(subject.replace("/", "-").replace("\\", "-"), max_length)
        if stem:
            return clean_filename(f"{stem}.eml", max_length) or stem
    if part_name:
        cleaned = clean_filename(part_name, max_length)
        if cleaned:
            if cleaned.lower().endswith(".eml"):
                return cleaned
            return clean_filename(f"{cleaned}.eml", max_length) or cleaned
    return bound_length("message.eml", max_length)

"""What extraction is given (its limits) and what it gives back (documents, refusals)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import ExtractionConfig
from gateway.einvoice.model import Reading
from gateway.mail.names import MAX_NAME_BYTES

_DECLARED = ExtractionConfig()  # the declared defaults of [extraction]


@dataclass(frozen=True)
class ExtractionLimits:
    """Bounds that keep one hostile message from exhausting the gateway. The defaults are
    the `[extraction]` settings' own, declared once in gateway/config/settings.py."""

    max_documents: int = _DECLARED.max_documents  # per message, after expansion
    max_zip_members: int = _DECLARED.max_zip_members  # per archive
    max_zip_total_bytes: int = _DECLARED.max_zip_total_bytes  # uncompressed, per archive
    max_zip_ratio: int = _DECLARED.max_zip_ratio  # uncompressed/compressed, member or archive
    max_nesting_depth: int = _DECLARED.max_nesting_depth  # zip-in-zip / rfc822 / tnef depth
    # An image the HTML shows (cid:) is a document from this size: a photographed receipt.
    cid_image_document_bytes: int = _DECLARED.cid_image_document_bytes
    # Not a setting: names must fit file systems and archives whatever the configuration.
    max_filename_bytes: int = MAX_NAME_BYTES  # UTF-8 bytes, extension kept

    @classmethod
    def from_config(cls, config: ExtractionConfig) -> ExtractionLimits:
        return cls(
            max_documents=config.max_documents,
            max_zip_members=config.max_zip_members,
            max_zip_total_bytes=config.max_zip_total_bytes,
            max_zip_ratio=config.max_zip_ratio,
            max_nesting_depth=config.max_nesting_depth,
            cid_image_document_bytes=config.cid_image_document_bytes,
        )


@dataclass(frozen=True)
class ExtractedDocument:
    """One file to store in the company's folders."""

    filename: str
    media_type: str
    content: bytes
    origin: str
    # Its e-invoice, read in the extraction child when [einvoice] is on (None: not one).
    einvoice: Reading | None = None


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

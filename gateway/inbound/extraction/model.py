"""What extraction is given (its limits) and what it gives back (documents, refusals)."""

from dataclasses import dataclass


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

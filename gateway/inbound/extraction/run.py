"""The state of one extraction call, and the guards that keep garbage input from raising.

Every problem becomes a defect string (for the log) or a refused part; nothing here is
global, so concurrent extractions never share state.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeVar

from gateway.inbound.extraction.model import ExtractedDocument, ExtractionLimits, RefusedPart

_MAX_DEFECTS: Final = 200
# Bytes tnefparse may copy during one extraction (it copies the rest of the stream for every
# attribute): checked by tnef.py before tnefparse is given a stream.
TNEF_COPY_BUDGET: Final = 4 * 1024 * 1024 * 1024

_T = TypeVar("_T")


@dataclass
class Run:
    """Mutable state of one extraction, kept per call so the package holds no global state."""

    limits: ExtractionLimits
    documents: list[ExtractedDocument] = field(default_factory=list)
    refused: list[RefusedPart] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    dropped: int = 0
    unnamed: int = 0
    boundary_repairs: int = 0
    suppressed_defects: int = 0
    tnef_budget: int = TNEF_COPY_BUDGET

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

    def add(self, filename: str, content: bytes, media_type: str, origin: str) -> None:
        """Append a document unless max_documents is reached (then it is only counted)."""
        if self.full:
            self.dropped += 1
            return
        self.documents.append(
            ExtractedDocument(
                filename=filename, media_type=media_type, content=content, origin=origin
            )
        )


# How a container (TNEF, ZIP) hands each member back to the walk, which decides what it is:
# (run, content, name, media type, origin, depth).
ConsiderFile = Callable[[Run, bytes, str | None, str, str, int], None]


def brief(exc: BaseException) -> str:
    """An exception in one short line, for a defect or a reason."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def guard(function: Callable[[], _T], default: _T) -> _T:
    """Call an email-package accessor that may raise on garbage; fall back to a default."""
    try:
        return function()
    except Exception:
        return default

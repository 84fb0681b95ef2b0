"""What the filing stage prepares for one message before its write transaction (`Prepared`,
its `Placement`s) and what became of its parts (`FilingReport`, which gives its final
status and the `reason` that `gateway messages` shows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from gateway.inbound.extraction import ExtractedDocument, Extraction
from gateway.inbound.invoices import FiledInvoice
from gateway.inbound.recipients import Destination
from gateway.inbound.trust.results import AuthenticationResults
from gateway.mail.dsn import BounceReport
from gateway.storage.directory import CompanyRef
from gateway.storage.models import InboundMessage, MessageStatus


@dataclass
class FilingReport:
    """What became of one message's parts: gives its final status and its reason."""

    filed: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    bot_mailboxes: list[str] = field(default_factory=list)
    bounces: list[str] = field(default_factory=list)
    recipients_refused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said in the reason, status unchanged

    def status(self) -> MessageStatus:
        ged_attempted = self.filed or self.duplicates or self.refused
        if not ged_attempted:
            if self.bot_mailboxes:
                return MessageStatus.BOT_MAIL
            if self.bounces:
                return MessageStatus.BOUNCE
            return MessageStatus.REJECTED
        if self.filed:
            partial = self.duplicates or self.refused or self.recipients_refused
            return MessageStatus.PARTLY_FILED if partial else MessageStatus.FILED
        if self.duplicates and not self.refused:
            return MessageStatus.DUPLICATE
        return MessageStatus.REJECTED

    def reason(self) -> str | None:
        parts: list[str] = []
        if self.filed:
            parts.append(f"filed {len(self.filed)}: " + "; ".join(self.filed))
        if self.duplicates:
            parts.append(f"already filed {len(self.duplicates)}: " + "; ".join(self.duplicates))
        if self.refused:
            parts.append("refused: " + "; ".join(self.refused))
        if self.bot_mailboxes:
            parts.append("bot mailbox: " + ", ".join(self.bot_mailboxes))
        if self.bounces:
            parts.append("delivery reports: " + "; ".join(self.bounces))
        if self.recipients_refused:
            parts.append("recipients no longer valid: " + "; ".join(self.recipients_refused))
        if self.notes:
            parts.append("; ".join(self.notes))
        return " | ".join(parts) or None


@dataclass(frozen=True)
class PlannedDocument:
    """One document to file for one company."""

    doc: ExtractedDocument
    sha256: str
    invoice: FiledInvoice | None = None  # what its e-invoice says and makes of it


@dataclass
class Placement:
    """Where some of one message's documents go for one company (an e-invoice may go to
    another folder than the rest: gateway/inbound/invoices.py)."""

    company: CompanyRef
    path: str
    folder_id: int
    docs: list[PlannedDocument]


@dataclass
class Prepared:
    """A message read, extracted and resolved, ready for the write transaction."""

    message: InboundMessage
    extraction: Extraction
    outcome: FilingReport
    plan: list[Placement]
    known: dict[tuple[int, str], int]  # (company, sha256 or invoice key) -> document filed
    bots: list[Destination]
    received_at: datetime
    bounces: list[Destination]
    bounce_report: BounceReport | None
    seconds: float  # spent preparing it
    authentication: AuthenticationResults | None = None
    quarantine: str | None = None  # why it is quarantined instead of filed
    quarantine_sha256: str | None = None  # its quarantined copy, in the blob store
    owned: bool = False
    # (cabinet, company or None for a bot mailbox) of each address of ours it was sent to:
    # who hears of its quarantine or rejection (gateway.storage.events.message_ended).
    reached: list[tuple[int, int | None]] = field(default_factory=list)


def reached_by(destinations: list[Destination]) -> list[tuple[int, int | None]]:
    """(cabinet, company) of each accepted address of ours, once each."""
    reached: dict[tuple[int, int | None], None] = {}
    for d in destinations:
        if not d.accepted:
            continue
        if d.company is not None:
            reached[(d.company.cabinet_id, d.company.id)] = None
        elif d.cabinet_id is not None:
            reached[(d.cabinet_id, None)] = None
    return list(reached)

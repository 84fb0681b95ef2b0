"""The filing batch's write transaction: the rows of every message of a batch, written with
a few statements per table for the whole batch rather than an ORM unit of work per row.

The documents of the whole batch go in one INSERT … RETURNING (their ids in the order
given), before anything that needs their ids; the events wait in order in a buffer and go
in one INSERT at the end, or earlier when something that writes its own events (a delivery
skipped, a bot mail, a bounce) comes next, so event ids stay in the order of the changes
they report. The switches of the batch's companies are read once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from gateway.inbound.duplicates import document_keys
from gateway.inbound.extraction import ExtractedDocument
from gateway.inbound.filing_report import Placement, PlannedDocument, Prepared
from gateway.mail.dsn import BounceReport
from gateway.routing.partners import PartnerRegistry
from gateway.storage import events
from gateway.storage.models import (
    BotMail,
    Connection,
    Document,
    DuplicateDocument,
    InboundMessage,
    MessageStatus,
)
from gateway.storage.placement import covering, create_deliveries, switches_of
from gateway.storage.queues import deliveries, forwards
from gateway.storage.queues.inbound import Finished


@dataclass(frozen=True)
class _File:
    """One file of one message for one company, as decided before the batch's INSERT."""

    place: Placement
    planned: PlannedDocument
    known: int | None  # the document already filed before this batch, if any
    row: int | None  # its row in the batch's INSERT: its own (new) or its first copy's
    new: bool
    same_invoice: bool = False  # a duplicate by what its e-invoice says, not by its bytes

    @property
    def doc(self) -> ExtractedDocument:
        return self.planned.doc

    @property
    def sha(self) -> str:
        return self.planned.sha256


@dataclass
class _NewRows:
    """The batch's new document rows so far, by (company, sha256) and, for an e-invoice,
    by (company, invoice key) too: a later file with either is a duplicate of that row."""

    rows: dict[tuple[int, str], int] = field(default_factory=dict)
    count: int = 0

    def add(self, keys: list[tuple[int, str]]) -> int:
        row, self.count = self.count, self.count + 1
        for key in keys:
            self.rows[key] = row
        return row


class BatchWriter:
    """Writes the rows of a batch's messages in `s`, the batch's transaction."""

    def __init__(self, s: Session, registry: PartnerRegistry, now: datetime) -> None:
        self.s = s
        self.registry = registry
        self.now = now
        self._events: list[events.NewEvent] = []  # written in this order, see `_emit`
        self._switches: dict[int, list[tuple[Connection, str, datetime | None]]] = {}

    def write(self, batch: list[Prepared]) -> list[Finished]:
        """Every message's rows; returns their ends, which the caller writes for all."""
        planned = _NewRows()
        files = [self._decide(p, planned) for p in batch]
        rows = [
            _document_row(f, p, self.now)
            for p, fs in zip(batch, files, strict=True)
            for f in fs
            if f.new
        ]
        ids: list[int] = []
        if rows:
            ids = list(
                self.s.execute(
                    insert(Document).returning(Document.id, sort_by_parameter_order=True), rows
                ).scalars()
            )
            companies = {r["company_id"] for r in rows}
            self._switches = switches_of(self.s, companies)
        finished = [self._write(p, fs, ids, rows) for p, fs in zip(batch, files, strict=True)]
        self._emit()
        return finished

    def _decide(self, p: Prepared, planned: _NewRows) -> list[_File]:
        """Which of the message's files are new, which are duplicates (filed before, or
        earlier in this batch: `planned`, the batch's new rows by company and sha256)."""
        if p.quarantine is not None:
            return []
        files = []
        for place in p.plan:
            for d in place.docs:
                keys = [(place.company.id, key) for key in document_keys(d)]
                known = next((p.known[k] for k in keys if k in p.known), None)
                row = next((planned.rows[k] for k in keys if k in planned.rows), None)
                if known is None and row is None:
                    files.append(_File(place, d, None, planned.add(keys), True))
                    continue
                same_bytes = keys[0] in p.known or keys[0] in planned.rows
                files.append(_File(place, d, known, row, False, not same_bytes))
        return files

    def _write(
        self, p: Prepared, files: list[_File], ids: list[int], rows: list[dict[str, Any]]
    ) -> Finished:
        """Write one message's rows but its documents (inserted for the batch)."""
        message, outcome = p.message, p.outcome
        authentication = p.authentication.to_json() if p.authentication else None
        if p.quarantine is not None:
            about = _about(message, p.extraction.subject, p.quarantine)
            self._events += events.ended_events(
                events.MESSAGE_QUARANTINED, message.id, p.reached, about
            )
            return Finished(
                message.id,
                MessageStatus.QUARANTINED,
                reason=p.quarantine,
                subject=p.extraction.subject,
                header_message_id=_clip(p.extraction.message_id, 998),
                authentication=authentication,
                quarantine_sha256=p.quarantine_sha256,
            )
        in_message: dict[tuple[int, str], str] = {}  # filed from this message: its name
        recorded: set[tuple[int, str]] = set()  # one duplicate row per file and company
        decided = iter(files)
        for place in p.plan:
            company = place.company
            for _ in place.docs:
                f = next(decided)
                key = (company.id, f.sha)
                if not f.new:
                    existing = f.known if f.known is not None else ids[_row(f)]
                    why = _same_invoice(f) if f.same_invoice else None
                    if key not in recorded:
                        recorded.add(key)
                        self.s.add(
                            DuplicateDocument(
                                inbound_message_id=message.id,
                                company_id=company.id,
                                document_id=existing,
                                filename=f.doc.filename,
                                sha256=f.sha,
                                seen_at=self.now,
                                reason=why,
                            )
                        )
                    first = in_message.get(key)
                    same = f", same as {first} in this message" if first else ""
                    same = f", {why}" if why else same
                    name = f.doc.filename
                    outcome.duplicates.append(f"{name} ({company.slug}, #{existing}{same})")
                    continue
                document_id, row = ids[_row(f)], rows[_row(f)]
                in_message[key] = f.doc.filename
                self._filed(document_id, row, place)
                outcome.filed.append(f"{f.doc.filename} -> {company.slug}:{place.path}")
        if p.plan:  # what was refused was the GED's to file: said once for the message
            outcome.refused.extend(f"{r.filename}: {r.reason}" for r in p.extraction.refused)
        bot_mails: list[BotMail] = []
        for dest in p.bots:
            bot_mail = BotMail(
                inbound_message_id=message.id,
                cabinet_id=dest.cabinet_id,
                company_id=dest.company.id if dest.company else None,
                recipient=dest.address.address,
                partner=dest.address.partner,
                mail_from=message.mail_from,
                subject=p.extraction.subject,
                received_at=p.received_at,
            )
            self.s.add(bot_mail)
            bot_mails.append(bot_mail)
            outcome.bot_mailboxes.append(dest.address.address)
        if bot_mails:
            self._emit()  # before the bot mails' events
            events.bot_mails_received(self.s, bot_mails, message.id, self.now)
            # R6: forwarded to the cabinet's contact if it asked for it; queued in this
            # transaction, so a bot mail and its forward exist together or not at all.
            forwards.enqueue(self.s, bot_mails, self.now, p.extraction.message_id)
        for dest in p.bounces:
            assert dest.delivery_id is not None
            self._emit()  # before the delivery's
            bounced = _apply_bounce(self.s, dest.delivery_id, p.bounce_report, self.now)
            outcome.bounces.append(bounced)
        if outcome.status() is MessageStatus.REJECTED:
            about = _about(message, p.extraction.subject, outcome.reason())
            self._events += events.ended_events(
                events.MESSAGE_REJECTED, message.id, p.reached, about
            )
        return Finished(
            message.id,
            outcome.status(),
            reason=outcome.reason(),
            subject=p.extraction.subject,
            header_message_id=_clip(p.extraction.message_id, 998),
            authentication=authentication,
        )

    def _filed(self, document_id: int, row: dict[str, Any], place: Placement) -> None:
        """A new document's event, and its deliveries if its folder is switched (R11)."""
        company = place.company
        self._events.append(events.filed_event(document_id, row, place.path, company.cabinet_id))
        switched = self._switches.get(company.id)
        connections = covering(switched, place.path, self.now) if switched else []
        if connections:
            self._emit()  # a skipped delivery writes its event: after this one
            create_deliveries(
                self.s,
                document_id,
                row["size"],
                row["media_type"],
                connections,
                place.path,
                self.registry,
                self.now,
            )

    def _emit(self) -> None:
        """Write the events waiting, in their order."""
        if self._events:
            events.emit_many(self.s, self._events, self.now)
            self._events = []


def _row(f: _File) -> int:
    assert f.row is not None
    return f.row


def _same_invoice(f: _File) -> str:
    invoice = f.planned.invoice
    assert invoice is not None
    return f"same {invoice.label} of the same seller, other bytes"


def _document_row(f: _File, p: Prepared, now: datetime) -> dict[str, Any]:
    message = p.message
    invoice = f.planned.invoice
    return {
        "company_id": f.place.company.id,
        "folder_id": f.place.folder_id,
        "filename": f.doc.filename,
        "media_type": f.doc.media_type,
        "size": len(f.doc.content),
        "sha256": f.sha,
        "source": message.source,
        "source_mailbox": message.source_mailbox,
        "origin": f.doc.origin,
        "placed_at": now,
        "inbound_message_id": message.id,
        "invoice": invoice.record if invoice else None,
        "invoice_key": invoice.key if invoice else None,
    }


def _apply_bounce(s: Session, delivery_id: int, report: BounceReport | None, now: datetime) -> str:
    """A partner's bounce, come back to a delivery's VERP address (R17): a permanent one
    marks the sent delivery bounced with the partner's words; a delay is only noted."""
    if report is None:
        return f"delivery #{delivery_id}: not a delivery report (an auto-reply?), kept only"
    words = report.diagnostic or report.status or "bounced"
    if not report.permanent:
        return deliveries.note_delay(s, delivery_id, words, now)
    return deliveries.bounce(s, delivery_id, words, now)


def _about(message: InboundMessage, subject: str | None, reason: str | None) -> dict[str, Any]:
    return {"mail_from": message.mail_from, "subject": subject, "reason": reason}


def _clip(value: str | None, limit: int) -> str | None:
    return value[:limit] if value else value

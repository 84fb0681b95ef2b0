"""Listings of what came in: the inbound message log and one message in detail, bot mail,
IMAP folders' states."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from gateway.storage.db import Database
from gateway.storage.models import (
    BotMail,
    BotMailForward,
    Cabinet,
    Company,
    Document,
    DuplicateDocument,
    Folder,
    ImapCheckpoint,
    ImapMessage,
    InboundMessage,
    MessageStatus,
)
from gateway.storage.queues import inbound as inbound_queue
from gateway.storage.queues.imap_checkpoints import FAILING_AFTER


@dataclass(frozen=True, slots=True)
class MessageRow:
    queue_id: str
    received_at: datetime
    source: str
    source_mailbox: str | None
    peer: str | None
    mail_from: str
    rcpt_tos: list[str]
    size: int
    message_id: str | None
    subject: str | None
    status: str
    reason: str | None
    attempts: int


def list_messages(db: Database, status: str | None = None, limit: int = 100) -> list[MessageRow]:
    """The inbound log, newest first, at most `limit` messages; optionally in one status."""
    query = select(InboundMessage).order_by(InboundMessage.id.desc()).limit(limit)
    if status:
        query = query.where(InboundMessage.status == status)
    with db.read() as s:
        return [_message_row(m) for m in s.execute(query).scalars()]


def _message_row(m: InboundMessage) -> MessageRow:
    return MessageRow(
        queue_id=m.queue_id,
        received_at=m.received_at,
        source=m.source,
        source_mailbox=m.source_mailbox,
        peer=m.peer,
        mail_from=m.mail_from,
        rcpt_tos=m.rcpt_tos,
        size=m.size,
        message_id=m.header_message_id,
        subject=m.subject,
        status=m.status,
        reason=m.reason,
        attempts=m.attempts,
    )


@dataclass(frozen=True, slots=True)
class HistoryRow:
    at: datetime
    from_status: str | None  # None: the row's creation, or a claim
    to_status: str
    detail: str | None


@dataclass(frozen=True, slots=True)
class MadeRow:
    """What a message became: a document filed, a duplicate of one, or a bot mail."""

    kind: str  # document | duplicate | bot_mail
    id: int  # the document's (for a duplicate: the document already filed), the bot mail's
    where: str  # company:folder, or the bot mail's recipient
    filename: str | None  # None for a bot mail
    detail: str | None  # media type and size; for a bot mail, its forward's status


@dataclass(frozen=True, slots=True)
class MessageDetail:
    message: MessageRow  # the envelope, the status and its reason
    helo: str | None
    sha256: str
    claimed_by: str | None
    lease_until: datetime | None
    processed_at: datetime | None
    history: list[HistoryRow]  # oldest first, from its reception
    made: list[MadeRow]
    authentication: dict[str, Any] | None = None  # AuthenticationResults.to_json()
    quarantine_sha256: str | None = None  # its quarantined copy, while it is quarantined


def message_detail(db: Database, queue_id: str) -> MessageDetail | None:
    """One message (by the queue id of its 250, any case): its envelope, its history and
    what was made of it; None when there is no such message."""
    with db.read() as s:
        m = s.execute(
            select(InboundMessage).where(InboundMessage.queue_id == queue_id.upper())
        ).scalar_one_or_none()
        if m is None:
            return None
        events = inbound_queue.history(s, m.id)
        documents = s.execute(
            select(Document, Company.slug, Folder.path)
            .join(Company, Document.company_id == Company.id)
            .join(Folder, Document.folder_id == Folder.id)
            .where(Document.inbound_message_id == m.id)
            .order_by(Document.id)
        ).all()
        duplicates = s.execute(
            select(DuplicateDocument, Company.slug)
            .join(Company, DuplicateDocument.company_id == Company.id)
            .where(DuplicateDocument.inbound_message_id == m.id)
            .order_by(DuplicateDocument.id)
        ).all()
        bot_mail = s.execute(
            select(BotMail, BotMailForward.status)
            .outerjoin(BotMailForward, BotMailForward.bot_mail_id == BotMail.id)
            .where(BotMail.inbound_message_id == m.id)
            .order_by(BotMail.id)
        ).all()
    # The row's creation is its first event (the history table starts after it); a row
    # with no later event that is `rejected` was refused at intake (IMAP).
    rejected_at_intake = m.status == MessageStatus.REJECTED and not events
    first = (MessageStatus.REJECTED if rejected_at_intake else MessageStatus.RECEIVED).value
    history = [HistoryRow(m.received_at, None, first, f"{m.source} from {m.peer or 'unknown'}")]
    history += [HistoryRow(e.at, e.from_status, e.to_status, e.detail) for e in events]
    made = [
        MadeRow("document", d.id, f"{slug}:{path}", d.filename, f"{d.media_type}, {d.size} B")
        for d, slug, path in documents
    ]
    made += [
        MadeRow("duplicate", d.document_id, slug, d.filename, f"already filed as #{d.document_id}")
        for d, slug in duplicates
    ]
    made += [
        MadeRow("bot_mail", b.id, b.recipient, None, f"forward {f}" if f else None)
        for b, f in bot_mail
    ]
    return MessageDetail(
        message=_message_row(m),
        helo=m.helo,
        sha256=m.sha256,
        claimed_by=m.claimed_by,
        lease_until=m.lease_until,
        processed_at=m.processed_at,
        history=history,
        made=made,
        authentication=m.authentication,
        quarantine_sha256=m.quarantine_sha256 if m.status == MessageStatus.QUARANTINED else None,
    )


@dataclass(frozen=True, slots=True)
class BotMailRow:
    id: int
    cabinet: str | None
    recipient: str
    partner: str | None
    mail_from: str
    subject: str | None
    received_at: datetime
    queue_id: str
    # The forward fields are None when it was not forwarded (forwarding off, or the
    # message's other bot mail was).
    forward: str | None
    forward_to: str | None
    forward_attempts: int | None
    forward_reason: str | None
    forwarded_at: datetime | None


def list_bot_mail(db: Database, cabinet_slug: str | None = None) -> list[BotMailRow]:
    """Mail received by bot identities, oldest first, with its forward if any (R6)."""
    query = (
        select(BotMail, Cabinet.slug, InboundMessage.queue_id, BotMailForward)
        .outerjoin(Cabinet, BotMail.cabinet_id == Cabinet.id)
        .join(InboundMessage, BotMail.inbound_message_id == InboundMessage.id)
        .outerjoin(BotMailForward, BotMailForward.bot_mail_id == BotMail.id)
        .order_by(BotMail.id)
    )
    if cabinet_slug:
        query = query.where(Cabinet.slug == cabinet_slug)
    with db.read() as s:
        return [
            BotMailRow(
                id=b.id,
                cabinet=slug,
                recipient=b.recipient,
                partner=b.partner,
                mail_from=b.mail_from,
                subject=b.subject,
                received_at=b.received_at,
                queue_id=queue_id,
                forward=f.status if f else None,
                forward_to=f.to_address if f else None,
                forward_attempts=f.attempts if f else None,
                forward_reason=f.reason if f else None,
                forwarded_at=f.sent_at if f else None,
            )
            for b, slug, queue_id, f in s.execute(query)
        ]


@dataclass(frozen=True, slots=True)
class ImapFolderRow:
    source: str
    folder: str
    uidvalidity: int | None  # None: never read yet
    last_uid: int | None
    taken: int  # messages taken from it, under every UIDVALIDITY
    reader: str | None  # who holds its lease
    lease_until: datetime | None  # until when (past: the reader stopped renewing it)
    last_sync_at: datetime | None
    last_error: str | None
    failures: int = 0  # sessions ended by an error in a row
    failing_since: datetime | None = None
    error_code: str | None = None  # the provider's (AADSTS70008, invalid_grant…)

    @property
    def failing(self) -> bool:
        return self.failures >= FAILING_AFTER


def imap_folder_states(db: Database, folders: Iterable[tuple[str, str]]) -> list[ImapFolderRow]:
    """Where each (source, folder) stands, in the order given (the configuration's)."""
    with db.read() as s:
        checkpoints = {(c.source, c.folder): c for c in s.execute(select(ImapCheckpoint)).scalars()}
        taken: dict[tuple[str, str], int] = {
            (source, folder): count
            for source, folder, count in s.execute(
                select(ImapMessage.source, ImapMessage.folder, func.count(ImapMessage.id)).group_by(
                    ImapMessage.source, ImapMessage.folder
                )
            )
        }
    rows = []
    for source, folder in folders:
        c = checkpoints.get((source, folder))
        rows.append(
            ImapFolderRow(
                source=source,
                folder=folder,
                uidvalidity=c.uidvalidity if c else None,
                last_uid=c.last_uid if c else None,
                taken=taken.get((source, folder), 0),
                reader=c.claimed_by if c else None,
                lease_until=c.lease_until if c else None,
                last_sync_at=c.last_sync_at if c else None,
                last_error=c.last_error if c else None,
                failures=c.failures if c else 0,
                failing_since=c.failing_since if c else None,
                error_code=c.error_code if c else None,
            )
        )
    return rows

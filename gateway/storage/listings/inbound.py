"""Listings of what came in: the inbound message log, bot mail, IMAP folders' states."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from gateway.storage.db import Database
from gateway.storage.models import (
    BotMail,
    BotMailForward,
    Cabinet,
    ImapCheckpoint,
    ImapMessage,
    InboundMessage,
)


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
        return [
            MessageRow(
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
            for m in s.execute(query).scalars()
        ]


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
    last_sync_at: datetime | None
    last_error: str | None


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
                last_sync_at=c.last_sync_at if c else None,
                last_error=c.last_error if c else None,
            )
        )
    return rows

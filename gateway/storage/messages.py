"""What a person does to an inbound message by its queue id: retry a held one, release or
delete a quarantined one, read a bot mail's message. Called by the CLI (`gateway messages`,
`gateway quarantine`, `gateway bot-mail`) and the API alike; the state changes themselves
belong to the inbound queue (gateway/storage/queues/inbound.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.storage.accounts import NotFound
from gateway.storage.db import Database
from gateway.storage.models import BotMail, InboundMessage
from gateway.storage.queues import inbound as inbound_queue
from gateway.storage.rawmail import RawMail
from gateway.storage.tenancy import ALL, Tenant


def message_id_of(s: Session, queue_id: str, hint: str = "gateway messages list") -> int:
    message_id = s.execute(
        select(InboundMessage.id).where(InboundMessage.queue_id == queue_id.upper())
    ).scalar_one_or_none()
    if message_id is None:
        raise NotFound(f"no message {queue_id}: see `{hint}`", field="queue_id")
    return int(message_id)


def retry_message(db: Database, queue_id: str, now: datetime) -> None:
    """A `held` message queued for filing again (TransitionError if it is not held)."""
    with db.write() as s:
        inbound_queue.retry_held(s, message_id_of(s, queue_id), now)


def release_message(db: Database, queue_id: str, now: datetime, by: str) -> None:
    """A quarantined message filed as if it had just arrived, without the checks."""
    with db.write() as s:
        inbound_queue.release_quarantined(
            s, message_id_of(s, queue_id, "gateway quarantine list"), now, by
        )


def bot_mail_message(
    db: Database, raw_mail: RawMail, bot_mail_id: int, tenant: Tenant = ALL
) -> bytes:
    """The message a bot identity received, as it arrived (the cabinet's own only)."""
    with db.read() as s:
        row = s.execute(
            select(BotMail.cabinet_id, InboundMessage)
            .join(InboundMessage, BotMail.inbound_message_id == InboundMessage.id)
            .where(BotMail.id == bot_mail_id)
        ).first()
        if (
            row is None
            or (row[0] is None and not tenant.everything)
            or (row[0] is not None and not tenant.sees_cabinet(row[0]))
        ):
            raise NotFound(f"no bot mail #{bot_mail_id}", field="id")
        message = row[1]
        where = (message.spool_segment, message.spool_offset, message.size)
    return raw_mail.read(*where)

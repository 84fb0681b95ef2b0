"""Events (issue 13): a durable outbox, read by polling (`/api/v1/events?after=…`) and
pushed to the configured webhooks (gateway/outbound/webhooks.py).

An event is written by `emit` in the transaction of the change it reports — the filing
batch that files a document, the sender's batch that records a partner's acceptance — so
it exists iff that change committed: a rolled-back change leaves no event, and no change
commits without its event.

Ordering. Ids come from a sequence, and on PostgreSQL sequence values are taken when a
transaction inserts, not when it commits: transaction A takes id 7, B takes 8 and commits
first, a poller reads `id > 6`, gets 8, and asks `after=8` next — 7 is lost for it. So
every transaction that writes events takes a transaction-scoped advisory lock first
(`pg_advisory_xact_lock(EVENTS_LOCK)`), held until its commit or rollback: event ids are
then handed out in commit order, and a poller that sees id N also sees every id below it.
The price: transactions writing events commit one after the other from their first event
on — the writers (filer, sender, forwarder) write them at the end of their batches, so the
lock is held for a few inserts and the commit. A visibility delay was not chosen: the
filer's transaction may outlast any delay (a slow disk), and it would make every poller
late. SQLite has one writer at a time: ids are in commit order already.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from gateway.clock import as_utc
from gateway.storage.accounts import AccountError, NotFound
from gateway.storage.db import Database
from gateway.storage.models import (
    BotMail,
    Cabinet,
    Company,
    Connection,
    Delivery,
    DeliveryStatus,
    Document,
    OutboxEvent,
)
from gateway.storage.tenancy import ALL, Tenant

DOCUMENT_FILED = "document.filed"
DOCUMENT_VALIDATED = "document.validated"  # R13: accepted by a partner's server
DELIVERY_FAILED = "delivery.failed"
DELIVERY_BOUNCED = "delivery.bounced"
DELIVERY_SKIPPED = "delivery.skipped"
BOT_MAIL_RECEIVED = "bot_mail.received"
MESSAGE_QUARANTINED = "message.quarantined"
MESSAGE_REJECTED = "message.rejected"
TYPES = (
    DOCUMENT_FILED,
    DOCUMENT_VALIDATED,
    DELIVERY_FAILED,
    DELIVERY_BOUNCED,
    DELIVERY_SKIPPED,
    BOT_MAIL_RECEIVED,
    MESSAGE_QUARANTINED,
    MESSAGE_REJECTED,
)

# The advisory lock that orders event ids by commit (PostgreSQL): any constant the rest of
# the gateway does not use ("ev" in ASCII).
EVENTS_LOCK = 0x6576
MAX_LIMIT = 1000


@dataclass(frozen=True)
class NewEvent:
    """An event to write (`emit_many`): see `emit`."""

    type: str
    cabinet_id: int | None
    company_id: int | None
    subject: int
    payload: dict[str, Any]


@dataclass(frozen=True)
class EventRow:
    """An event as a poller or a webhook receives it."""

    id: int
    type: str
    cabinet_id: int | None
    company_id: int | None
    subject: int
    payload: dict[str, Any]
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "cabinet_id": self.cabinet_id,
            "company_id": self.company_id,
            "subject": self.subject,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "data": self.payload,
        }


def emit(
    session: Session,
    type: str,
    *,
    cabinet_id: int | None,
    company_id: int | None,
    subject: int,
    payload: dict[str, Any],
    now: datetime,
) -> None:
    """Write one event in `session`'s transaction (the one making the change). `subject`
    is the id of what `type` names (document, delivery, bot mail, inbound message)."""
    emit_many(session, [NewEvent(type, cabinet_id, company_id, subject, payload)], now)


def emit_many(session: Session, events: Sequence[NewEvent], now: datetime) -> None:
    """`emit` for several events, in one INSERT, ids in the order given."""
    if not events:
        return
    for e in events:
        if e.type not in TYPES:
            raise ValueError(f"unknown event type {e.type!r}")
    if session.get_bind().dialect.name == "postgresql":
        # Held until commit: ids are handed out in commit order (see the module's text).
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENTS_LOCK})
    session.execute(
        insert(OutboxEvent),
        [
            {
                "type": e.type,
                "cabinet_id": e.cabinet_id,
                "company_id": e.company_id,
                "subject_id": e.subject,
                "payload": e.payload,
                "created_at": now,
            }
            for e in events
        ],
    )


def check_types(types: Iterable[str] | None, field: str = "types") -> tuple[str, ...] | None:
    """The event types asked for, each known; `AccountError` naming `field` otherwise."""
    if types is None:
        return None
    wanted = tuple(types)
    unknown = sorted(set(wanted) - set(TYPES))
    if unknown:
        raise AccountError(
            f"unknown event type {', '.join(unknown)}; the types are {', '.join(TYPES)}",
            field=field,
        )
    return wanted


def events_after(
    db: Database,
    after: int,
    limit: int,
    tenant: Tenant = ALL,
    types: Iterable[str] | None = None,
) -> list[EventRow]:
    """The events after id `after` that `tenant` may see (its cabinet's; every event for
    `ALL`), oldest first, at most `limit`; only `types` if given. Poll again with the last
    id returned: none committed later can have a smaller id (see the module's text)."""
    if after < 0:
        raise AccountError("after: an event id, 0 or more", field="after")
    if not 1 <= limit <= MAX_LIMIT:
        raise AccountError(f"limit: from 1 to {MAX_LIMIT}", field="limit")
    wanted = check_types(types)
    with db.read() as s:
        return read_after(s, after, limit, tenant, wanted)


def read_after(
    s: Session, after: int, limit: int, tenant: Tenant, types: Sequence[str] | None
) -> list[EventRow]:
    """`events_after` inside an open session (the webhook dispatcher's)."""
    query = select(OutboxEvent).where(OutboxEvent.id > after)
    if not tenant.everything:
        query = query.where(OutboxEvent.cabinet_id == tenant.cabinet_id)
    if types is not None:
        query = query.where(OutboxEvent.type.in_(types))
    return [_row(e) for e in s.execute(query.order_by(OutboxEvent.id).limit(limit)).scalars()]


def by_id(s: Session, ids: Iterable[int]) -> dict[int, EventRow]:
    """These events, by id (the webhook dispatcher's claimed deliveries')."""
    query = select(OutboxEvent).where(OutboxEvent.id.in_(list(ids)))
    return {e.id: _row(e) for e in s.execute(query).scalars()}


def _row(e: OutboxEvent) -> EventRow:
    return EventRow(
        id=e.id,
        type=e.type,
        cabinet_id=e.cabinet_id,
        company_id=e.company_id,
        subject=e.subject_id,
        payload=e.payload,
        created_at=as_utc(e.created_at),
    )


def cabinet_tenant(db: Database, slug: str) -> Tenant:
    """The tenant of cabinet `slug` (a webhook scoped to it); NotFound naming `cabinet`."""
    with db.read() as s:
        found = s.execute(select(Cabinet.id).where(Cabinet.slug == slug)).scalar_one_or_none()
    if found is None:
        raise NotFound(f"no cabinet {slug!r} (see `gateway cabinet list`)", field="cabinet")
    return Tenant(int(found))


def document_filed(
    session: Session, document: Document, folder: str, cabinet_id: int, now: datetime
) -> None:
    """`document.filed`: a document placed in a company's folder for the first time (by
    the filer or an upload), in the transaction that writes it."""
    values = {name: getattr(document, name) for name in FILED_COLUMNS}
    emit_many(session, [filed_event(document.id, values, folder, cabinet_id)], now)


# The document's columns `filed_event` reads.
FILED_COLUMNS = (
    "company_id",
    "filename",
    "media_type",
    "size",
    "sha256",
    "source",
    "inbound_message_id",
)


def filed_event(
    document_id: int, values: Mapping[str, Any], folder: str, cabinet_id: int
) -> NewEvent:
    """`document_filed`'s event, from the document's id and its row's values (a batch
    inserting its documents in one statement writes their events in another)."""
    return NewEvent(
        DOCUMENT_FILED,
        cabinet_id,
        values["company_id"],
        document_id,
        {
            "document_id": document_id,
            "filename": values["filename"],
            "folder": folder,
            "media_type": values["media_type"],
            "size": values["size"],
            "sha256": values["sha256"],
            "source": values["source"],
            "inbound_message_id": values["inbound_message_id"],
            # An e-invoice's fields and checks (gateway/inbound/invoices.py), or None.
            "invoice": values.get("invoice"),
        },
    )


def bot_mails_received(
    session: Session, bot_mails: Sequence[BotMail], message_id: int, now: datetime
) -> None:
    """`bot_mail.received`, one per bot mail just added (flushed here for their ids)."""
    session.flush()
    emit_many(
        session,
        [
            NewEvent(
                BOT_MAIL_RECEIVED,
                b.cabinet_id,
                b.company_id,
                b.id,
                {
                    "bot_mail_id": b.id,
                    "recipient": b.recipient,
                    "partner": b.partner,
                    "mail_from": b.mail_from,
                    "subject": b.subject,
                    "inbound_message_id": message_id,
                },
            )
            for b in bot_mails
        ],
        now,
    )


# What a delivery's new status tells a platform; other moves (queued, sending, deferred) are
# the gateway's own business.
DELIVERY_TYPES = {
    DeliveryStatus.SENT: DOCUMENT_VALIDATED,
    DeliveryStatus.FAILED: DELIVERY_FAILED,
    DeliveryStatus.BOUNCED: DELIVERY_BOUNCED,
    DeliveryStatus.SKIPPED: DELIVERY_SKIPPED,
}


def deliveries_moved(
    session: Session, moved: Sequence[tuple[int, str, str | None]], now: datetime
) -> None:
    """The events of deliveries that reached a status a platform hears about: (delivery
    id, new status, reason) each; called by the deliveries queue in the transaction of the
    move. `document.validated` (R13) is about the document, the others about the delivery."""
    reported = {i: (status, reason) for i, status, reason in moved if status in DELIVERY_TYPES}
    if not reported:
        return
    rows = session.execute(
        select(Delivery.id, Delivery.document_id, Connection.id, Connection.partner, Company)
        .join(Connection, Delivery.connection_id == Connection.id)
        .join(Company, Connection.company_id == Company.id)
        .where(Delivery.id.in_(list(reported)))
        .order_by(Delivery.id)
    ).all()
    events = []
    for delivery_id, document_id, connection_id, partner, company in rows:
        status, reason = reported[delivery_id]
        kind = DELIVERY_TYPES[DeliveryStatus(status)]
        events.append(
            NewEvent(
                kind,
                company.cabinet_id,
                company.id,
                document_id if kind == DOCUMENT_VALIDATED else delivery_id,
                {
                    "delivery_id": delivery_id,
                    "document_id": document_id,
                    "connection_id": connection_id,
                    "partner": partner,
                    "status": status,
                    "reason": reason,
                },
            )
        )
    emit_many(session, events, now)


def message_ended(
    session: Session,
    kind: str,
    message_id: int,
    reached: Iterable[tuple[int, int | None]],
    payload: dict[str, Any],
    now: datetime,
) -> None:
    """`message.quarantined` or `message.rejected`: one event for each (cabinet, company)
    the message was addressed to (company None: a cabinet's bot mailbox), or one no cabinet
    sees (only the gateway-wide tenant) when no address of ours matched."""
    emit_many(session, ended_events(kind, message_id, reached, payload), now)


def ended_events(
    kind: str, message_id: int, reached: Iterable[tuple[int, int | None]], payload: dict[str, Any]
) -> list[NewEvent]:
    """`message_ended`'s events, to write later in the same transaction."""
    targets: list[tuple[int | None, int | None]] = list(dict.fromkeys(reached)) or [(None, None)]
    return [
        NewEvent(kind, cabinet, company, message_id, {"inbound_message_id": message_id, **payload})
        for cabinet, company in targets
    ]

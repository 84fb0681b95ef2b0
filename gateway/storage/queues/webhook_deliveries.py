"""The webhook deliveries queue: the one module that writes `webhook_deliveries.status` (and
the webhooks' cursors in the events).

    (new) ──> queued ──> sending ──> delivered
                 ↑          │ ╲
                 │          │  ╲──> failed     (given up after the webhook's lifetime)
                 │          └────> deferred ──> sending   (retried after back-off)
                 └──────────────── failed                 (queued again by hand)

One row per (webhook, event), created by the dispatcher as it reads the events past its
webhook's cursor (`enqueue`, the cursor moved in the same transaction). Rows of one
`ordering` (a company; a cabinet or the gateway for events of no company) go out one after
the other: a row is claimed only when no earlier row of its webhook and ordering is still
queued, sending or deferred — one company's failing event holds back that company's later
events, never another's. A row given up (`failed`) no longer holds the others back.
Every move is one guarded UPDATE (`… AND status = <expected> AND claimed_by = <worker>`);
a worker whose lease was taken over changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from gateway.storage.db import upsert_insert
from gateway.storage.models import WebhookCursor, WebhookDelivery, WebhookStatus
from gateway.storage.queues.base import (
    LEASE,
    Leases,
    StateTable,
    TransitionError,
    claim_for_worker,
    move_one,
    rows_changed,
)

__all__ = ["LEASE", "LEASES", "STATES", "TransitionError"]

Q, SENDING, DELIVERED = WebhookStatus.QUEUED, WebhookStatus.SENDING, WebhookStatus.DELIVERED
DEFERRED, FAILED = WebhookStatus.DEFERRED, WebhookStatus.FAILED
PENDING = (Q.value, SENDING.value, DEFERRED.value)  # what holds later rows back

STATES = StateTable(
    "webhook delivery",
    {
        Q: {SENDING},
        SENDING: {DELIVERED, DEFERRED, FAILED},
        DEFERRED: {SENDING},
        DELIVERED: set(),
        FAILED: {Q},
    },
)
LEASES = Leases(WebhookDelivery, WebhookDelivery.status == SENDING)


def ordering_of(cabinet_id: int | None, company_id: int | None) -> str:
    """The line an event waits in: its company's, else its cabinet's, else the gateway's."""
    if company_id is not None:
        return f"company:{company_id}"
    return f"cabinet:{cabinet_id}" if cabinet_id is not None else "gateway"


def cursor(session: Session, webhook: str) -> int:
    """The last event `webhook`'s deliveries were queued for (0: none yet)."""
    after = session.execute(
        select(WebhookCursor.after).where(WebhookCursor.webhook == webhook)
    ).scalar_one_or_none()
    return int(after or 0)


def enqueue(
    session: Session,
    webhook: str,
    events: Sequence[tuple[int, str]],
    read_up_to: int,
    now: datetime,
) -> int:
    """Queue `events` ((event id, ordering) each) for `webhook`, and move its cursor to
    `read_up_to` (the last event read, sent or not), in the caller's transaction; how many
    rows are new (an event queued already, by another dispatcher, is left alone)."""
    created = 0
    if events:
        created = len(
            session.execute(
                upsert_insert(session)(WebhookDelivery)
                .values(
                    [
                        {
                            "webhook": webhook,
                            "event_id": event_id,
                            "ordering": ordering,
                            "status": Q.value,
                            "due_at": now,
                            "attempts": 0,
                            "created_at": now,
                        }
                        for event_id, ordering in events
                    ]
                )
                .on_conflict_do_nothing(index_elements=["webhook", "event_id"])
                .returning(WebhookDelivery.id)
            ).all()
        )
    moved = rows_changed(
        session,
        update(WebhookCursor)
        .where(WebhookCursor.webhook == webhook, WebhookCursor.after < read_up_to)
        .values(after=read_up_to),
    )
    if not moved and cursor(session, webhook) == 0 and read_up_to > 0:
        session.execute(
            upsert_insert(session)(WebhookCursor)
            .values(webhook=webhook, after=read_up_to)
            .on_conflict_do_nothing(index_elements=["webhook"])
        )
    return created


def claim_due(
    session: Session, webhooks: Iterable[str], worker: str, now: datetime, limit: int
) -> list[int]:
    """Take deliveries to send now for `worker`, with a lease, in one statement: queued or
    deferred and due, or `sending` with a lease run out (a dispatcher that died) — each only
    if no earlier delivery of its webhook and ordering is still pending."""
    w = WebhookDelivery
    earlier = aliased(WebhookDelivery)
    waiting = and_(w.status.in_([Q.value, DEFERRED.value]), w.due_at <= now)
    stalled = and_(w.status == SENDING, w.lease_until < now)
    first_in_line = ~exists().where(
        earlier.webhook == w.webhook,
        earlier.ordering == w.ordering,
        earlier.event_id < w.event_id,
        earlier.status.in_(PENDING),
    )
    claimable = and_(or_(waiting, stalled), first_in_line, w.webhook.in_(list(webhooks)))
    candidates = select(w.id).where(claimable).order_by(w.event_id).limit(limit)
    return claim_for_worker(session, w, None, candidates, claimable, SENDING, worker, now)


def hold(session: Session, worker: str, delivery_id: int, now: datetime) -> bool:
    """Renew `worker`'s lease on a `sending` row just before its POST; False when the row is
    no longer `worker`'s (its lease ran out while the batch's earlier POSTs went, or it was
    taken over): then it must not be sent, its new holder may have sent later events of its
    line already. A lease write, not a status write."""
    w = WebhookDelivery
    renewed = (
        update(w)
        .where(
            w.id == delivery_id, w.status == SENDING, w.claimed_by == worker, w.lease_until > now
        )
        .values(lease_until=now + LEASE)
    )
    return rows_changed(session, renewed) == 1


@dataclass(frozen=True)
class Outcome:
    """What became of one send: delivered, or not (then `retry_at`, or None: given up)."""

    delivery_id: int
    delivered: bool
    reason: str
    retry_at: datetime | None = None


def record(session: Session, worker: str, outcome: Outcome, now: datetime) -> None:
    """Write one send's outcome, guarded by `sending` and the claimant; `TransitionError`
    (nothing written) when the row is no longer `worker`'s."""
    values: dict[str, Any] = {"reason": outcome.reason[:2000], "lease_until": None}
    if outcome.delivered:
        target = DELIVERED
        values["delivered_at"] = now
    elif outcome.retry_at is not None:
        target = DEFERRED
        values["due_at"] = outcome.retry_at
    else:
        target = FAILED
    move_one(
        session,
        WebhookDelivery,
        STATES,
        outcome.delivery_id,
        [SENDING],
        target,
        claimant=worker,
        **values,
    )


def retry(session: Session, delivery_id: int, now: datetime) -> None:
    """`gateway webhooks retry ID`: a failed delivery queued again, due now, in its line."""
    move_one(
        session,
        WebhookDelivery,
        STATES,
        delivery_id,
        [FAILED],
        Q,
        due_at=now,
        attempts=0,
        claimed_by=None,
        reason="queued again by hand",
    )


@dataclass(frozen=True)
class WebhookState:
    """Where one webhook stands, for `gateway webhooks status`."""

    webhook: str
    cursor: int
    counts: dict[str, int]
    oldest_pending_event: int | None
    last_failure: str | None


def states(session: Session, webhooks: Iterable[str]) -> list[WebhookState]:
    w = WebhookDelivery
    counts: dict[str, dict[str, int]] = {}
    for name, status, n in session.execute(
        select(w.webhook, w.status, func.count()).group_by(w.webhook, w.status)
    ):
        counts.setdefault(name, {})[status] = n
    out = []
    for name in webhooks:
        oldest = session.execute(
            select(func.min(w.event_id)).where(w.webhook == name, w.status.in_(PENDING))
        ).scalar()
        failure = session.execute(
            select(w.reason)
            .where(w.webhook == name, w.status.in_([DEFERRED.value, FAILED.value]))
            .order_by(w.id.desc())
            .limit(1)
        ).scalar()
        out.append(
            WebhookState(
                name,
                cursor(session, name),
                {s.value: counts.get(name, {}).get(s.value, 0) for s in WebhookStatus},
                oldest,
                failure,
            )
        )
    return out


def rows(session: Session, webhook: str | None = None, limit: int = 100) -> list[WebhookDelivery]:
    """The latest deliveries (of one webhook), newest first."""
    query = select(WebhookDelivery).order_by(WebhookDelivery.id.desc()).limit(limit)
    if webhook is not None:
        query = query.where(WebhookDelivery.webhook == webhook)
    return list(session.execute(query).scalars())

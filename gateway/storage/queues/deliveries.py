"""The deliveries queue (the ledger): the one module that writes `deliveries.status`.

    (new) ──> queued ──> sending ──> sent ──> bounced
       │         │          │ ╲
       │         │          │  ╲──> failed            (5xx from the partner, or given up)
       │         │          └────> deferred ──> sending (retried after back-off)
       └─────────┴──────────┴──────────┴──> skipped   (may not be sent: see below)

`skipped` is every "not sent, and not the partner's doing", with the reason in words: the
document breaks the partner's limits (R14), was moved out of the switched folder before the
run ("moved out of the switched folder before the run"), the switch was turned off, or the
connection deleted. One state rather than a `cancelled` beside it: to the firm it is the
same thing (the document did not go, here is why, retry once it is put right), and the
rules that decide it are asked again wherever a delivery could go out: at a placement or a
move, at `deliveries retry` and by the sender after claiming (gateway/storage/placement.py
`send_problems`). So a waiting or claimed delivery can become `skipped` too.

`sending` goes back to `queued` only when a lease is reclaimed by hand; a worker whose lease
ran out is simply re-claimed from `sending`. `failed`, `bounced` and `skipped` can be queued
again by hand (`deliveries retry`). Every move is one guarded UPDATE (`… WHERE id … AND
status = <expected>`, and `AND claimed_by = <worker>` for a sender's own moves): a row not in
the expected state, or no longer held by that worker, is refused and nothing changes.
Every move appends a `delivery_events` row, so a delivery's history can be read back, and
a move to sent, failed, bounced or skipped writes its event for the platform
(`gateway.storage.events.deliveries_moved`) in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, or_, select, update
from sqlalchemy.orm import Session

from gateway.storage import events
from gateway.storage.db import upsert_insert
from gateway.storage.models import Connection, Delivery, DeliveryEvent, DeliveryStatus
from gateway.storage.queues.base import (
    LEASE,
    History,
    Leases,
    StateTable,
    TransitionError,
    claim_for_worker,
    rows_changed,
)

__all__ = ["LEASE", "LEASES", "STATES", "Move", "TransitionError"]

Q, SENDING, SENT = DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.SENT
DEFERRED, FAILED = DeliveryStatus.DEFERRED, DeliveryStatus.FAILED
SKIPPED, BOUNCED = DeliveryStatus.SKIPPED, DeliveryStatus.BOUNCED

INITIAL = frozenset({Q, SKIPPED})  # what a placement creates
STATES = StateTable(
    "",
    {
        Q: {SENDING, SKIPPED},
        # back to queued: a lease reclaimed; skipped: found unsendable after the claim
        SENDING: {SENT, DEFERRED, FAILED, Q, SKIPPED},
        DEFERRED: {SENDING, FAILED, SKIPPED},
        SENT: {BOUNCED},
        FAILED: {Q},
        BOUNCED: {Q},
        SKIPPED: {Q},
    },
    noun="delivery",
)
ALLOWED = STATES.allowed
HISTORY = History(DeliveryEvent, "delivery_id")
# What a heartbeat renews: the rows its process is working on.
LEASES = Leases(Delivery, Delivery.status == SENDING)


def create(
    session: Session,
    document_id: int,
    connection_id: int,
    status: DeliveryStatus,
    due_at: datetime,
    reason: str | None,
    detail: str,
    now: datetime,
) -> int | None:
    """A new delivery of a document to a connection, `queued` or `skipped`; None when the
    pair already has one (one delivery per document and connection, whatever became of it)."""
    if status not in INITIAL:
        raise TransitionError(f"a delivery starts queued or skipped, not {status}")
    delivery_id: int | None = session.execute(
        upsert_insert(session)(Delivery)
        .values(
            document_id=document_id,
            connection_id=connection_id,
            status=status,
            due_at=due_at,
            attempts=0,
            reason=reason,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["document_id", "connection_id"])
        .returning(Delivery.id)
    ).scalar_one_or_none()
    if delivery_id is not None:
        _event(session, delivery_id, now, None, status, detail)
        events.deliveries_moved(session, [(delivery_id, status, reason)], now)
    return delivery_id


def claim_due(
    session: Session,
    worker: str,
    now: datetime,
    *,
    limit: int,
    flush: bool = False,
    partner: str | None = None,
    after: int = 0,
) -> list[int]:
    """Take deliveries to send now for `worker`, with a lease, in one statement: queued or
    deferred and due (`flush`: whatever their due time, ids above `after` only, so one flush
    tries each delivery once), or `sending` with an expired lease (a worker that died)."""
    waiting: ColumnElement[bool] = Delivery.status.in_([Q.value, DEFERRED.value])
    waiting = and_(waiting, Delivery.id > after) if flush else and_(waiting, Delivery.due_at <= now)
    stalled = and_(Delivery.status == SENDING, Delivery.lease_until < now)
    claimable = or_(waiting, stalled)
    order = Delivery.id if flush else Delivery.due_at
    candidates = select(Delivery.id).where(claimable).order_by(order).limit(limit)
    if partner:
        candidates = candidates.join(Connection, Delivery.connection_id == Connection.id).where(
            Connection.partner == partner.lower()
        )
    return claim_for_worker(session, Delivery, HISTORY, candidates, claimable, SENDING, worker, now)


def transition(
    session: Session,
    delivery_id: int,
    sources: Iterable[DeliveryStatus],
    target: DeliveryStatus,
    now: datetime,
    detail: str | None = None,
    **values: Any,
) -> None:
    """Move one delivery from one of `sources` to `target`, or raise `TransitionError`."""
    sources = frozenset(sources)
    STATES.check(sources, target)
    current = session.execute(
        select(Delivery.status).where(Delivery.id == delivery_id)
    ).scalar_one_or_none()
    # Guarded on the state just read: a concurrent transition makes this match nothing.
    changed = 0
    if current in sources:
        changed = rows_changed(
            session,
            update(Delivery)
            .where(Delivery.id == delivery_id, Delivery.status == current)
            .values(status=target, **values),
        )
    if changed != 1:
        raise TransitionError(
            f"delivery {delivery_id} is {current or 'missing'}, "
            f"not {' or '.join(sorted(sources))}: cannot move it to {target}"
        )
    _event(session, delivery_id, now, current, target, detail)
    events.deliveries_moved(session, [(delivery_id, target, values.get("reason", detail))], now)


@dataclass(frozen=True)
class Move:
    """One transition of `transition_many`: the delivery, where it goes, the event's text and
    the other columns to set."""

    delivery_id: int
    target: DeliveryStatus
    detail: str | None
    values: dict[str, Any] = field(default_factory=dict)


def transition_many(
    session: Session,
    source: DeliveryStatus,
    moves: Sequence[Move],
    now: datetime,
    *,
    claimant: str | None = None,
) -> list[Move]:
    """`transition` for many deliveries leaving the same state, as the sender records a
    batch: one guarded UPDATE per kind of move (no read first) and one INSERT for all the
    events. With `claimant`, only rows that worker still holds move.

    Returns the moves refused because their row was not in `source` or not held by
    `claimant` (they change nothing); the caller must report them. An illegal target raises
    `TransitionError` before anything.
    """
    for target in {m.target for m in moves}:
        STATES.check([source], target)
    guard = [Delivery.status == source]
    if claimant is not None:
        guard.append(Delivery.claimed_by == claimant)
    # One guarded UPDATE per group of moves to the same state setting the same columns;
    # a value that differs between rows (the partner's reply) is set through CASE on id.
    groups: dict[tuple[DeliveryStatus, tuple[str, ...]], list[Move]] = {}
    for m in moves:
        groups.setdefault((m.target, tuple(sorted(m.values))), []).append(m)
    moved: set[int] = set()
    for (target, columns), group in groups.items():
        values: dict[str, Any] = {"status": target}
        for column in columns:
            distinct = {repr(m.values[column]) for m in group}
            values[column] = (
                group[0].values[column]
                if len(distinct) == 1
                else case({m.delivery_id: m.values[column] for m in group}, value=Delivery.id)
            )
        moved.update(
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_([m.delivery_id for m in group]), *guard)
                .values(**values)
                .returning(Delivery.id)
            ).scalars()
        )
    HISTORY.record(
        session,
        [(m.delivery_id, source, m.target, m.detail) for m in moves if m.delivery_id in moved],
        now,
    )
    events.deliveries_moved(
        session,
        [
            (m.delivery_id, m.target, m.values.get("reason", m.detail))
            for m in moves
            if m.delivery_id in moved
        ],
        now,
    )
    return [m for m in moves if m.delivery_id not in moved]


def states_of(session: Session, delivery_ids: Iterable[int]) -> dict[int, str]:
    """The current status of these deliveries (to say why a move was refused)."""
    return dict(
        session.execute(
            select(Delivery.id, Delivery.status).where(Delivery.id.in_(list(delivery_ids)))
        ).tuples()
    )


def retry(session: Session, delivery_id: int, now: datetime) -> None:
    """`deliveries retry ID`: queue a failed, bounced or skipped delivery again, due now."""
    transition(
        session,
        delivery_id,
        (FAILED, BOUNCED, SKIPPED),
        Q,
        now,
        detail="queued again by hand",
        due_at=now,
        reason=None,
    )


def bounce(session: Session, delivery_id: int, words: str, now: datetime) -> str:
    """A partner's permanent bounce, come back to a delivery's VERP address (R17): the sent
    delivery becomes `bounced` with the partner's words. Returns what happened, for the
    inbound message's reason; a delivery not `sent` is left as it is and that is said."""
    try:
        with session.begin_nested():
            transition(session, delivery_id, [SENT], BOUNCED, now, words, reason=words)
    except TransitionError as exc:
        return f"delivery #{delivery_id}: bounce not applied ({exc})"
    return f"delivery #{delivery_id} bounced: {words}"


def note_delay(session: Session, delivery_id: int, words: str, now: datetime) -> str:
    """A partner's delay notice: recorded in the history, the status does not change."""
    _event(session, delivery_id, now, SENT, SENT, f"delay reported: {words}")
    return f"delivery #{delivery_id}: delay reported ({words})"


def history(session: Session, delivery_id: int) -> list[DeliveryEvent]:
    return HISTORY.read(session, delivery_id)


def _event(
    session: Session,
    delivery_id: int,
    now: datetime,
    source: str | None,
    target: DeliveryStatus,
    detail: str | None,
) -> None:
    HISTORY.record(session, [(delivery_id, source, target, detail)], now)

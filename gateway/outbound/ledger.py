"""The delivery ledger: an explicit state machine over `deliveries` rows.

    queued ──> sending ──> sent ──> bounced
       │          │ ╲
       │          │  ╲──> failed            (5xx from the partner, or given up)
       │          └────> deferred ──> sending (retried after back-off)
       └──> skipped                         (the partner's limits, R14)

`failed`, `bounced` and `skipped` can be queued again by hand (`deliveries retry`).
Every transition is one guarded UPDATE (`… WHERE id = ? AND status IN (…)`): if the row is
not in a state the transition starts from, it raises `TransitionError` and changes nothing.
Each transition appends a `delivery_events` row, so a delivery's history can be read back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, insert, select, update
from sqlalchemy.orm import Session

from gateway.errors import GatewayError
from gateway.storage.models import Delivery, DeliveryEvent, DeliveryStatus

Q, SENDING, SENT = DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.SENT
DEFERRED, FAILED = DeliveryStatus.DEFERRED, DeliveryStatus.FAILED
SKIPPED, BOUNCED = DeliveryStatus.SKIPPED, DeliveryStatus.BOUNCED

ALLOWED: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    Q: frozenset({SENDING, SKIPPED}),
    SENDING: frozenset({SENT, DEFERRED, FAILED, Q}),  # back to queued: a lease reclaimed
    DEFERRED: frozenset({SENDING, FAILED}),
    SENT: frozenset({BOUNCED}),
    FAILED: frozenset({Q}),
    BOUNCED: frozenset({Q}),
    SKIPPED: frozenset({Q}),
}


class TransitionError(GatewayError, RuntimeError):
    """A delivery was not in a state the transition may start from."""


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
    illegal = [s for s in sources if target not in ALLOWED[s]]
    if illegal:
        raise TransitionError(f"no transition {', '.join(illegal)} -> {target}")
    current = session.execute(
        select(Delivery.status).where(Delivery.id == delivery_id)
    ).scalar_one_or_none()
    # Guarded on the state just read: a concurrent transition makes this match nothing.
    changed = 0
    if current in sources:
        changed = session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id, Delivery.status == current)
            .values(status=target, **values)
        ).rowcount
    if changed != 1:
        raise TransitionError(
            f"delivery {delivery_id} is {current or 'missing'}, "
            f"not {' or '.join(sorted(sources))}: cannot move it to {target}"
        )
    session.add(
        DeliveryEvent(
            delivery_id=delivery_id, at=now, from_status=current, to_status=target, detail=detail
        )
    )


@dataclass(frozen=True)
class Move:
    """One transition of `transition_many`: the delivery, where it goes, the event's text and
    the other columns to set."""

    delivery_id: int
    target: DeliveryStatus
    detail: str | None
    values: dict[str, Any] = field(default_factory=dict)


def transition_many(
    session: Session, source: DeliveryStatus, moves: Sequence[Move], now: datetime
) -> list[Move]:
    """`transition` for many deliveries leaving the same state, as the sender records a
    batch: one guarded UPDATE per kind of move (no read first) and one INSERT for all the
    events.

    Returns the moves refused because their row was not in `source` (they change nothing);
    the caller must report them. An illegal target raises `TransitionError` before anything.
    """
    illegal = sorted({m.target for m in moves if m.target not in ALLOWED[source]})
    if illegal:
        raise TransitionError(f"no transition {source} -> {', '.join(illegal)}")
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
                .where(Delivery.id.in_([m.delivery_id for m in group]), Delivery.status == source)
                .values(**values)
                .returning(Delivery.id)
            ).scalars()
        )
    events = [
        {
            "delivery_id": m.delivery_id,
            "at": now,
            "from_status": source.value,
            "to_status": m.target.value,
            "detail": m.detail,
        }
        for m in moves
        if m.delivery_id in moved
    ]
    if events:
        session.execute(insert(DeliveryEvent), events)
    return [m for m in moves if m.delivery_id not in moved]


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


def history(session: Session, delivery_id: int) -> list[DeliveryEvent]:
    return list(
        session.execute(
            select(DeliveryEvent)
            .where(DeliveryEvent.delivery_id == delivery_id)
            .order_by(DeliveryEvent.id)
        ).scalars()
    )

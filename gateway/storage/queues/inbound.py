"""The inbound messages queue: the one module that writes `inbound_messages.status`.

    (new) ──> received ──> filing ──> filed | partly_filed | duplicate | rejected
       │         ↑          │  ↺           | bot_mail | bounce
       │         │          ├──> held ──> received   (filing kept failing: moved aside;
       │         │          │                          `gateway messages retry` queues it again)
       │         │          └──> quarantined ──> discarded  (deleted by hand, or purged)
       │         └────────────────────┘  (released by hand: filed without the checks)
       └──> rejected                      (IMAP intake: nothing we can route; kept, visible)

A filing worker claims `received` rows, or `filing` rows whose lease ran out (a worker that
died, or a failed attempt's back-off that has passed), in one statement (`claim`). Before
writing a batch it renews the lease of the rows it still holds (`renew`: the guard), and
each message's final status is written by `finish`, guarded by `filing` and the claimant.
A failed attempt either releases the row for a retry after back-off (`filing` ↺, no
claimant, `lease_until` = the retry time) or, after `max_attempts`, moves it aside (`held`).
Every move is appended to `inbound_message_events` (the row's creation is its first event:
`received_at`, not repeated there).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, or_, select, update
from sqlalchemy.orm import Session

from gateway.storage import events
from gateway.storage.bulk import insert_rows
from gateway.storage.models import (
    FINAL_STATUSES,
    InboundMessage,
    InboundMessageEvent,
    MessageStatus,
)
from gateway.storage.queues.base import (
    LEASE,
    History,
    Leases,
    StateTable,
    TransitionError,
    claim_for_worker,
    move_one,
    rows_changed,
)

__all__ = ["LEASE", "LEASES", "STATES", "TransitionError"]

RECEIVED, FILING, HELD = MessageStatus.RECEIVED, MessageStatus.FILING, MessageStatus.HELD
REJECTED = MessageStatus.REJECTED
QUARANTINED, DISCARDED = MessageStatus.QUARANTINED, MessageStatus.DISCARDED

STATES = StateTable(
    "inbound message",
    {
        RECEIVED: {FILING},
        # FILING ↺: released for a retry (or to wait for DNS or a scanner)
        FILING: {FILING} | FINAL_STATUSES - {DISCARDED},
        **{final: set() for final in FINAL_STATUSES - {HELD, QUARANTINED}},
        HELD: {RECEIVED},  # by hand, once the cause is fixed
        QUARANTINED: {RECEIVED, DISCARDED},  # released, or deleted / purged
    },
)
HISTORY = History(InboundMessageEvent, "inbound_message_id")
# What a heartbeat renews: the rows its process is working on.
LEASES = Leases(InboundMessage, InboundMessage.status == FILING)


def enqueue(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert the rows of messages just made durable (`received`), or taken and refused at
    intake (`rejected`: the row has a `reason`, and a `message.rejected` event no cabinet
    sees: no address of ours matched); their ids, in order."""
    ids = insert_rows(
        session,
        cast(Table, InboundMessage.__table__),
        [
            {
                **row,
                "status": (REJECTED if row.get("reason") else RECEIVED).value,
                "attempts": 0,
            }
            for row in rows
        ],
        key="queue_id",
    )
    for i, row in zip(ids, rows, strict=True):
        if row.get("reason"):
            when = row["received_at"]
            events.message_ended(
                session, events.MESSAGE_REJECTED, i, [], _message_payload(row), when
            )
    return ids


def _message_payload(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "mail_from": row.get("mail_from"),
        "subject": row.get("subject"),
        "reason": row.get("reason"),
        "source": row.get("source"),
    }


def close_rejected(session: Session, message_ids: Sequence[int], now: datetime) -> None:
    """Stamp messages stored `rejected` at intake as processed (nothing more will happen to
    them), in the transaction that stored them."""
    session.execute(
        update(InboundMessage)
        .where(InboundMessage.id.in_(list(message_ids)), InboundMessage.status == REJECTED)
        .values(processed_at=now)
    )


def claim_waiting(session: Session, worker: str, now: datetime, limit: int) -> list[int]:
    """Take up to `limit` messages waiting for filing, with a lease, in one statement."""
    claimable = or_(
        InboundMessage.status == RECEIVED,
        and_(InboundMessage.status == FILING, InboundMessage.lease_until < now),
    )
    candidates = select(InboundMessage.id).where(claimable).order_by(InboundMessage.id)
    return claim_for_worker(
        session, InboundMessage, HISTORY, candidates.limit(limit), claimable, FILING, worker, now
    )


def renew(session: Session, message_ids: Iterable[int], worker: str, now: datetime) -> set[int]:
    """Renew the lease of those of `message_ids` that `worker` still holds; returns them.
    Called first in a batch's write transaction: a message another worker took over
    is left alone."""
    return set(
        session.execute(
            update(InboundMessage)
            .where(
                InboundMessage.id.in_(list(message_ids)),
                InboundMessage.status == FILING,
                InboundMessage.claimed_by == worker,
            )
            .values(lease_until=now + LEASE)
            .returning(InboundMessage.id)
        ).scalars()
    )


@dataclass(frozen=True)
class Finished:
    """The end of one message's filing: its final status and what the log shows of it."""

    message_id: int
    status: MessageStatus
    reason: str | None = None
    subject: str | None = None
    header_message_id: str | None = None
    authentication: dict[str, Any] | None = None  # AuthenticationResults.to_json()
    quarantine_sha256: str | None = None  # the quarantined copy's blob (QUARANTINED only)


def finish(
    session: Session,
    message_id: int,
    worker: str,
    status: MessageStatus,
    now: datetime,
    **values: Any,
) -> None:
    """Write one filed message's final `status` (`reason`, `subject`, `header_message_id`
    in `values`); see `finish_many`."""
    finish_many(session, worker, [Finished(message_id, status, **values)], now)


def finish_many(session: Session, worker: str, finished: Sequence[Finished], now: datetime) -> None:
    """Write the final status of a batch's messages, each guarded by `filing` and the
    claimant, in one executemany, and their history in one INSERT; `TransitionError` (and
    nothing written) if a row is not `worker`'s to finish."""
    for f in finished:
        STATES.check([FILING], f.status)
        if f.status in (FILING, HELD):
            raise TransitionError(f"{f.status} is not the end of filing")
    if not finished:
        return
    table = cast(Table, InboundMessage.__table__)  # Core: an executemany, not ORM bulk
    rows = table.c
    statement = (
        update(table)
        .where(
            rows.id == bindparam("b_id"),
            rows.status == FILING.value,
            rows.claimed_by == worker,
        )
        .values(
            status=bindparam("b_status"),
            reason=bindparam("b_reason"),
            subject=bindparam("b_subject"),
            header_message_id=bindparam("b_header_message_id"),
            authentication=bindparam("b_authentication", type_=rows.authentication.type),
            quarantine_sha256=bindparam("b_quarantine_sha256"),
            processed_at=now,
            lease_until=None,
        )
    )
    changed = session.connection().execute(
        statement,
        [
            {
                "b_id": f.message_id,
                "b_status": f.status.value,
                "b_reason": f.reason,
                "b_subject": f.subject,
                "b_header_message_id": f.header_message_id,
                "b_authentication": f.authentication,
                "b_quarantine_sha256": f.quarantine_sha256,
            }
            for f in finished
        ],
    )
    if changed.rowcount != len(finished):
        states = session.execute(
            select(InboundMessage.id, InboundMessage.status, InboundMessage.claimed_by).where(
                InboundMessage.id.in_([f.message_id for f in finished])
            )
        ).all()
        raise TransitionError(
            "; ".join(
                f"inbound message {i} is {status} (held by {holder}), not filing held by "
                f"{worker}: cannot finish it"
                for i, status, holder in states
                if status != FILING or holder != worker
            )
        )
    HISTORY.record(
        session, [(f.message_id, FILING, f.status, f"filed by {worker}") for f in finished], now
    )


def retry_held(session: Session, message_id: int, now: datetime) -> None:
    """`gateway messages retry`: a `held` message queued for filing again, with a fresh
    count of attempts; `TransitionError` if it is not held."""
    move_one(
        session,
        InboundMessage,
        STATES,
        message_id,
        [HELD],
        RECEIVED,
        claimed_by=None,
        lease_until=None,
        attempts=0,
    )
    HISTORY.record(session, [(message_id, HELD, RECEIVED, "queued again by hand")], now)


def release_quarantined(session: Session, message_id: int, now: datetime, by: str) -> None:
    """`gateway quarantine release`: filed as if it had just arrived, without the checks
    that quarantined it (R11: placements and deliveries as for any new document)."""
    move_one(
        session,
        InboundMessage,
        STATES,
        message_id,
        [QUARANTINED],
        RECEIVED,
        claimed_by=None,
        lease_until=None,
        attempts=0,
        checks_waived=True,
        processed_at=None,
    )
    HISTORY.record(session, [(message_id, QUARANTINED, RECEIVED, f"released by {by}")], now)


def discard_quarantined(session: Session, message_id: int, now: datetime, why: str) -> None:
    """A quarantined message deleted (by hand or after the retention period): its copy is
    the caller's to remove; the row, its reason and its history stay as the record."""
    move_one(
        session,
        InboundMessage,
        STATES,
        message_id,
        [QUARANTINED],
        DISCARDED,
        quarantine_sha256=None,
        processed_at=now,
    )
    HISTORY.record(session, [(message_id, QUARANTINED, DISCARDED, why)], now)


def quarantined_before(session: Session, cutoff: datetime, limit: int) -> list[tuple[int, str]]:
    """(id, copy's sha256) of messages quarantined before `cutoff`: due for the purge."""
    rows = session.execute(
        select(InboundMessage.id, InboundMessage.quarantine_sha256)
        .where(InboundMessage.status == QUARANTINED, InboundMessage.processed_at < cutoff)
        .order_by(InboundMessage.id)
        .limit(limit)
    ).all()
    return [(i, sha or "") for i, sha in rows]


def wait_for_checks(
    session: Session,
    message_id: int,
    worker: str,
    reason: str,
    now: datetime,
    retry_at: datetime,
    authentication: dict[str, Any] | None = None,
) -> bool:
    """Not a failure: the checks could not conclude yet (a DNS temperror to retry once, a
    scanner unreachable), or the object store does not answer. Released until `retry_at`
    without using up an attempt, with the results so far; False if the worker no longer
    holds the row."""
    values: dict[str, Any] = {"attempts": InboundMessage.attempts - 1}
    if authentication is not None:
        values["authentication"] = authentication
    return _release(session, message_id, worker, reason, now, retry_at, **values)


def release_after_failure(
    session: Session,
    message_id: int,
    worker: str,
    reason: str,
    now: datetime,
    *,
    retry_at: datetime | None,
) -> None:
    """A failed filing attempt: released for a retry at `retry_at` (the row stays `filing`
    with no claimant until then), or moved aside (`held`) when `retry_at` is None. A row
    the worker no longer holds is left alone (its new owner decides)."""
    _release(session, message_id, worker, reason, now, retry_at)


def _release(
    session: Session,
    message_id: int,
    worker: str,
    reason: str,
    now: datetime,
    retry_at: datetime | None,
    **values: Any,
) -> bool:
    """`filing` held by `worker` → `filing` free again at `retry_at`, or `held` (None)."""
    target = HELD if retry_at is None else FILING
    if retry_at is None:
        values.update(status=HELD, lease_until=None)
    else:
        values.update(claimed_by=None, lease_until=retry_at)
    released = rows_changed(
        session,
        update(InboundMessage)
        .where(
            InboundMessage.id == message_id,
            InboundMessage.status == FILING,
            InboundMessage.claimed_by == worker,
        )
        .values(reason=reason, **values),
    )
    if released:
        HISTORY.record(session, [(message_id, FILING, target, reason)], now)
    return bool(released)


def history(session: Session, message_id: int) -> list[InboundMessageEvent]:
    return HISTORY.read(session, message_id)

"""The bot-mail forwards queue: the one module that writes `bot_mail_forwards.status`.

    (new) ──> queued ──> sending ──> sent
                           │ ╲
                           │  ╲──> failed     (5xx from the contact's server, or given up)
                           └────> deferred ──> sending (retried after back-off)

The filer queues a forward in the transaction that writes the bot mail (`enqueue`), when
the cabinet has forwarding on and a contact address: one forward per bot mail, and one per
message and address when a message reached several bot identities of the cabinet. A sender
claims due forwards with a lease (`claim_due`, one statement) and records each outcome with
`transition`, guarded by the expected status and by the claimant: a worker whose lease was
taken over is refused (`TransitionError`) and changes nothing. Every move releases the lease
and is appended to `bot_mail_forward_events`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from gateway.storage.models import (
    BotMail,
    BotMailForward,
    BotMailForwardEvent,
    Cabinet,
    ForwardStatus,
)
from gateway.storage.queues.base import (
    LEASE,
    History,
    Leases,
    StateTable,
    TransitionError,
    claim_for_worker,
    move_one,
)

__all__ = ["LEASE", "LEASES", "STATES", "TransitionError"]

QUEUED, SENDING, SENT = ForwardStatus.QUEUED, ForwardStatus.SENDING, ForwardStatus.SENT
DEFERRED, FAILED = ForwardStatus.DEFERRED, ForwardStatus.FAILED

STATES = StateTable(
    "forward",
    {
        QUEUED: {SENDING},
        SENDING: {SENT, DEFERRED, FAILED},
        DEFERRED: {SENDING, FAILED},
        SENT: set(),
        FAILED: set(),
    },
)
ALLOWED = STATES.allowed
HISTORY = History(BotMailForwardEvent, "forward_id")
# What a heartbeat renews: the rows its process is working on.
LEASES = Leases(BotMailForward, BotMailForward.status == SENDING)

# A forward's Message-ID, `<bmf<id>.<sha256[:16]>@<domain>>`: stable per forward (a retry is
# the same mail) and recognisable when it comes back to a bot identity (the loop guard).
_FORWARD_ID_RE = re.compile(r"bmf\d+\.[0-9a-f]{16}@", re.IGNORECASE)


def forward_message_id(forward_id: int, sha256: str, domain: str) -> str:
    """The Message-ID of forward `forward_id` of a message whose bytes hash to `sha256`."""
    digest = sha256.lower()[:16]
    if forward_id < 0 or not re.fullmatch(r"[0-9a-f]{16}", digest):
        raise ValueError("a forward Message-ID needs a forward id and a sha256 hex digest")
    return f"<bmf{forward_id}.{digest}@{domain.lower()}>"


def enqueue(
    s: Session, mails: Sequence[BotMail], now: datetime, message_id: str | None = None
) -> list[BotMailForward]:
    """Queue, in the caller's transaction, the forwards these bot mails (of one inbound
    message, just added to `s`) call for: one per bot mail of a cabinet with forwarding on
    and a contact address, and one per contact address for the whole message (a message
    to two bot identities of one cabinet reaches the contact once). `message_id` is the
    inbound Message-ID: one of our own forwards coming back is not forwarded again."""
    if message_id and _FORWARD_ID_RE.match(message_id):
        return []
    cabinet_ids = {m.cabinet_id for m in mails if m.cabinet_id is not None}
    if not cabinet_ids:
        return []
    contacts: dict[int, str] = {
        cabinet_id: contact
        for cabinet_id, contact in s.execute(
            select(Cabinet.id, Cabinet.contact_email).where(
                Cabinet.id.in_(cabinet_ids),
                Cabinet.forward_bot_mail.is_(True),
                Cabinet.contact_email.is_not(None),
            )
        )
        if contact is not None
    }
    if not contacts:
        return []
    s.flush()  # the bot mails' ids
    queued: list[BotMailForward] = []
    seen: set[str] = set()
    for mail in mails:
        to = contacts.get(mail.cabinet_id) if mail.cabinet_id is not None else None
        if to is None or to.lower() in seen:
            continue
        seen.add(to.lower())
        forward = BotMailForward(
            bot_mail_id=mail.id,
            to_address=to,
            status=QUEUED,
            due_at=now,
            attempts=0,
            created_at=now,
        )
        s.add(forward)
        queued.append(forward)
    if queued:
        s.flush()  # their ids, for the history
        HISTORY.record(s, [(f.id, None, QUEUED, f"to {f.to_address}") for f in queued], now)
    return queued


def claim_due(
    s: Session, worker: str, now: datetime, *, limit: int, flush: bool = False
) -> list[int]:
    """Take forwards to send now (queued or deferred and due, or `sending` with an expired
    lease: a worker that died mid-send), in one statement. `flush` ignores the back-off."""
    waiting: ColumnElement[bool] = BotMailForward.status.in_([QUEUED.value, DEFERRED.value])
    if not flush:
        waiting = and_(waiting, BotMailForward.due_at <= now)
    stalled = and_(BotMailForward.status == SENDING, BotMailForward.lease_until < now)
    claimable = or_(waiting, stalled)
    candidates = (
        select(BotMailForward.id)
        .where(claimable)
        .order_by(BotMailForward.due_at, BotMailForward.id)
        .limit(limit)
    )
    return claim_for_worker(s, BotMailForward, HISTORY, candidates, claimable, SENDING, worker, now)


def transition(
    s: Session,
    forward_id: int,
    sources: Iterable[ForwardStatus],
    target: ForwardStatus,
    now: datetime,
    detail: str | None = None,
    *,
    claimed_by: str | None = None,
    **values: Any,
) -> None:
    """Move one forward from one of `sources` to `target` in one guarded UPDATE (and, with
    `claimed_by`, only if that worker still holds it), or raise `TransitionError` and
    change nothing. The lease is released with every move."""
    sources = frozenset(sources)
    move_one(
        s,
        BotMailForward,
        STATES,
        forward_id,
        sources,
        target,
        claimant=claimed_by,
        lease_until=None,
        **values,
    )
    # The history names the state left when there was one candidate (always, for a sender).
    source = next(iter(sources)) if len(sources) == 1 else None
    HISTORY.record(s, [(forward_id, source, target, detail)], now)


def history(s: Session, forward_id: int) -> list[BotMailForwardEvent]:
    return HISTORY.read(s, forward_id)

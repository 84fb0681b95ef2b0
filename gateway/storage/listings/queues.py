"""Listings of the work queues as a whole: how many rows in each state, how long the oldest
has waited, who holds claims until when, which processes are there to do the work.
`gateway status` prints them; /metrics exposes the queues.

The queues are the tables whose status column a worker moves (gateway/storage/queues/):
inbound messages (filing), deliveries (sending), bot mail forwards (sending). An item is
*waiting* while the gateway still owes it work — not yet filed or sent, claimed or not; its
age is counted from when it entered the queue (received, or created). An item *claimed* is
held by a worker (`claimed_by`) until its lease ends (`lease_until`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select

from gateway.storage import processes
from gateway.storage.db import Database
from gateway.storage.models import (
    BotMailForward,
    Connection,
    Delivery,
    DeliveryStatus,
    ForwardStatus,
    InboundMessage,
    MessageStatus,
)


@dataclass(frozen=True)
class _Queue:
    name: str  # the table's name
    model: Any
    states: type[StrEnum]
    waiting: frozenset[str]
    claimed: str  # the state a worker's claim puts an item in
    entered: str  # the column saying when an item entered the queue


QUEUES = (
    _Queue(
        "inbound_messages",
        InboundMessage,
        MessageStatus,
        frozenset({MessageStatus.RECEIVED, MessageStatus.FILING}),
        MessageStatus.FILING,
        "received_at",
    ),
    _Queue(
        "deliveries",
        Delivery,
        DeliveryStatus,
        frozenset({DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED, DeliveryStatus.SENDING}),
        DeliveryStatus.SENDING,
        "created_at",
    ),
    _Queue(
        "bot_mail_forwards",
        BotMailForward,
        ForwardStatus,
        frozenset({ForwardStatus.QUEUED, ForwardStatus.DEFERRED, ForwardStatus.SENDING}),
        ForwardStatus.SENDING,
        "created_at",
    ),
)


@dataclass(frozen=True, slots=True)
class QueueRow:
    queue: str
    states: dict[str, int]  # every state of the queue, 0 when none is in it
    waiting: int
    oldest_waiting_at: datetime | None  # when the oldest waiting item entered (None: none)


def queue_summaries(db: Database) -> list[QueueRow]:
    """Each queue's counts by state and its oldest waiting item: one query per queue."""
    rows = []
    with db.read() as s:
        for q in QUEUES:
            entered = getattr(q.model, q.entered)
            states = {state.value: 0 for state in q.states}
            oldest: datetime | None = None
            for status, count, first in s.execute(
                select(q.model.status, func.count(), func.min(entered)).group_by(q.model.status)
            ):
                states[status] = count
                if status in q.waiting and first is not None:
                    oldest = first if oldest is None else min(oldest, first)
            waiting = sum(states[state] for state in q.waiting)
            rows.append(QueueRow(q.name, states, waiting, oldest))
    return rows


@dataclass(frozen=True, slots=True)
class ClaimRow:
    queue: str
    claimed_by: str  # node:pid of the worker
    items: int
    lease_until: datetime  # the earliest end of its leases: from then, others may take over


def claims(db: Database) -> list[ClaimRow]:
    """Who holds claimed items, how many, until when; by queue, then worker."""
    rows = []
    with db.read() as s:
        for q in QUEUES:
            query = (
                select(q.model.claimed_by, func.count(), func.min(q.model.lease_until))
                .where(q.model.status == q.claimed, q.model.claimed_by.is_not(None))
                .group_by(q.model.claimed_by)
                .order_by(q.model.claimed_by)
            )
            rows += [ClaimRow(q.name, who, n, until) for who, n, until in s.execute(query)]
    return rows


@dataclass(frozen=True, slots=True)
class PartnerDeliveriesRow:
    partner: str
    status: str
    count: int


def deliveries_by_partner(db: Database) -> list[PartnerDeliveriesRow]:
    """The ledger counted by partner and status (only the pairs that have deliveries)."""
    query = (
        select(Connection.partner, Delivery.status, func.count())
        .join(Connection, Delivery.connection_id == Connection.id)
        .group_by(Connection.partner, Delivery.status)
        .order_by(Connection.partner, Delivery.status)
    )
    with db.read() as s:
        return [PartnerDeliveriesRow(p, status, n) for p, status, n in s.execute(query)]


def registered_processes(db: Database, now: datetime) -> list[processes.ProcessState]:
    """Every process registered and not stopped, by node and role; `alive` when its
    heartbeat is recent (gateway/storage/processes.py)."""
    with db.read() as s:
        return processes.listing(s, now)

"""The delivery ledger as the firm acts on it: one delivery with its events, and retrying one.

A retry asks the rules again (gateway/storage/placement.py `send_problems`): a delivery that
still breaks the partner's limits (R14), or whose document is no longer in a switched folder,
is refused with the reason, and nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from gateway.routing.partners import PartnerRegistry
from gateway.storage.accounts import Conflict, NotFound
from gateway.storage.db import Database
from gateway.storage.listings.outbound import DeliveryRow, list_deliveries
from gateway.storage.models import Company, Connection, Delivery
from gateway.storage.placement import send_problems
from gateway.storage.queues import deliveries
from gateway.storage.tenancy import ALL, Tenant


@dataclass(frozen=True, slots=True)
class DeliveryEventRow:
    at: datetime
    from_status: str | None  # None: the delivery's creation
    to_status: str
    detail: str | None


@dataclass(frozen=True, slots=True)
class DeliveryLedger:
    delivery: DeliveryRow
    events: list[DeliveryEventRow]


def _not_found(delivery_id: int) -> NotFound:
    return NotFound(
        f"no delivery #{delivery_id} (see `gateway deliveries list`)", field="delivery_id"
    )


def get_delivery(db: Database, delivery_id: int, tenant: Tenant = ALL) -> DeliveryRow:
    rows = list_deliveries(db, tenant=tenant, delivery_id=delivery_id)
    if not rows:
        raise _not_found(delivery_id)
    return rows[0]


def delivery_events(db: Database, delivery_id: int, tenant: Tenant = ALL) -> DeliveryLedger:
    """One delivery and its history, oldest event first."""
    row = get_delivery(db, delivery_id, tenant)
    with db.read() as s:
        events = [
            DeliveryEventRow(
                at=e.at, from_status=e.from_status, to_status=e.to_status, detail=e.detail
            )
            for e in deliveries.history(s, delivery_id)
        ]
    return DeliveryLedger(row, events)


def retry_delivery(
    db: Database,
    registry: PartnerRegistry,
    delivery_id: int,
    now: datetime,
    tenant: Tenant = ALL,
) -> DeliveryRow:
    """`deliveries retry ID`: a failed, bounced or skipped delivery queued again, due now,
    if it may be sent (else Conflict with the reason: the limit it breaks, or where its
    document is now)."""
    with db.write() as s:
        visible = s.execute(
            tenant.companies(
                select(Delivery.id)
                .join(Connection, Delivery.connection_id == Connection.id)
                .join(Company, Connection.company_id == Company.id)
                .where(Delivery.id == delivery_id)
            )
        ).scalar_one_or_none()
        if visible is None:
            raise _not_found(delivery_id)
        problem = send_problems(s, [delivery_id], registry).get(delivery_id)
        if problem:
            raise Conflict(
                f"delivery #{delivery_id} cannot be sent: {problem}", field="delivery_id"
            )
        try:
            deliveries.retry(s, delivery_id, now)
        except deliveries.TransitionError as exc:
            raise Conflict(str(exc), field="delivery_id") from exc
    return get_delivery(db, delivery_id, tenant)

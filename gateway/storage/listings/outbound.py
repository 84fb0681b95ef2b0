"""Listings of what goes out: connections, switches, the delivery ledger."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from gateway.storage.db import Database
from gateway.storage.models import Company, Connection, Delivery, Document, Folder, Switch
from gateway.storage.tenancy import ALL, Tenant


@dataclass(frozen=True, slots=True)
class ConnectionRow:
    id: int
    company: str
    partner: str
    entered: str  # the address as the cabinet typed it
    destination: str
    sender: str | None  # None: the gateway's sender
    created_at: datetime


def list_connections(db: Database, tenant: Tenant = ALL) -> list[ConnectionRow]:
    """Every connection (not deleted), oldest first."""
    query = tenant.companies(
        select(Connection, Company.slug)
        .join(Company, Connection.company_id == Company.id)
        .where(Connection.deleted_at.is_(None))
        .order_by(Connection.id)
    )
    with db.read() as s:
        return [
            ConnectionRow(
                id=c.id,
                company=slug,
                partner=c.partner,
                entered=c.entered_address,
                destination=c.destination,
                sender=c.sender,
                created_at=c.created_at,
            )
            for c, slug in s.execute(query)
        ]


@dataclass(frozen=True, slots=True)
class SwitchRow:
    company: str
    partner: str
    folder: str
    on: bool
    turned_on_at: datetime | None
    turned_off_at: datetime | None


def list_switches(db: Database, tenant: Tenant = ALL) -> list[SwitchRow]:
    """Every switch, on or off, oldest first."""
    query = tenant.companies(
        select(Switch, Connection.partner, Company.slug, Folder.path)
        .join(Connection, Switch.connection_id == Connection.id)
        .join(Company, Connection.company_id == Company.id)
        .join(Folder, Switch.folder_id == Folder.id)
        .order_by(Switch.id)
    )
    with db.read() as s:
        return [
            SwitchRow(
                company=slug,
                partner=partner,
                folder=path,
                on=sw.is_on,
                turned_on_at=sw.turned_on_at,
                turned_off_at=sw.turned_off_at,
            )
            for sw, partner, slug, path in s.execute(query)
        ]


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: int
    company: str
    partner: str
    document_id: int
    filename: str
    destination: str
    status: str
    due_at: datetime
    attempts: int
    reason: str | None
    sent_at: datetime | None
    invoice_number: str | None = None  # when the document is an e-invoice (BT-1)


def list_deliveries(
    db: Database,
    company_slug: str | None = None,
    status: str | None = None,
    tenant: Tenant = ALL,
    delivery_id: int | None = None,
) -> list[DeliveryRow]:
    """The delivery ledger, oldest first; optionally one company's, in one status, or one."""
    query = tenant.companies(
        select(
            Delivery,
            Connection,
            Company.slug,
            Document.filename,
            Document.invoice["number"].as_string(),  # not the whole e-invoice: its BT-1
        )
        .join(Connection, Delivery.connection_id == Connection.id)
        .join(Company, Connection.company_id == Company.id)
        .join(Document, Delivery.document_id == Document.id)
        .order_by(Delivery.id)
    )
    if delivery_id is not None:
        query = query.where(Delivery.id == delivery_id)
    if company_slug:
        query = query.where(Company.slug == company_slug)
    if status:
        query = query.where(Delivery.status == status)
    with db.read() as s:
        return [
            DeliveryRow(
                id=d.id,
                company=slug,
                partner=c.partner,
                document_id=d.document_id,
                filename=filename,
                destination=c.destination,
                status=d.status,
                due_at=d.due_at,
                attempts=d.attempts,
                reason=d.reason,
                sent_at=d.sent_at,
                invoice_number=invoice_number,
            )
            for d, c, slug, filename, invoice_number in s.execute(query)
        ]

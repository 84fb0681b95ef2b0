"""Listings of cabinets and companies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from gateway.storage.db import Database
from gateway.storage.models import Cabinet, Company
from gateway.storage.tenancy import ALL, Tenant


@dataclass(frozen=True, slots=True)
class CabinetRow:
    slug: str
    name: str
    contact: str | None
    forwarding: str  # "on" or "off": whether bot mail goes to the contact (R6)
    created_at: datetime


def list_cabinets(db: Database, tenant: Tenant = ALL) -> list[CabinetRow]:
    """Every cabinet `tenant` sees, by slug."""
    query = select(Cabinet).order_by(Cabinet.slug)
    if not tenant.everything:
        query = query.where(Cabinet.id == tenant.cabinet_id)
    with db.read() as s:
        return [
            CabinetRow(
                slug=c.slug,
                name=c.name,
                contact=c.contact_email,
                forwarding="on" if c.forward_bot_mail else "off",
                created_at=c.created_at,
            )
            for c in s.execute(query).scalars()
        ]


@dataclass(frozen=True, slots=True)
class CompanyRow:
    slug: str
    name: str
    cabinet: str
    fiscal_year_end: str
    created_at: datetime
    siren: str | None = None
    siret: str | None = None
    vat_number: str | None = None


def list_companies(db: Database, tenant: Tenant = ALL, slug: str | None = None) -> list[CompanyRow]:
    """Every company `tenant` sees (or the one named `slug`) with its cabinet's slug."""
    query = tenant.companies(
        select(Company, Cabinet.slug)
        .join(Cabinet, Company.cabinet_id == Cabinet.id)
        .order_by(Company.slug)
    )
    if slug is not None:
        query = query.where(Company.slug == slug)
    with db.read() as s:
        return [
            CompanyRow(
                slug=co.slug,
                name=co.name,
                cabinet=cabinet,
                fiscal_year_end=co.fiscal_year_end,
                created_at=co.created_at,
                siren=co.siren,
                siret=co.siret,
                vat_number=co.vat_number,
            )
            for co, cabinet in s.execute(query)
        ]

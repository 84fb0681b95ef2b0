"""Listings of cabinets and companies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from gateway.storage.db import Database
from gateway.storage.models import Cabinet, Company


@dataclass(frozen=True, slots=True)
class CabinetRow:
    slug: str
    name: str
    contact: str | None
    forwarding: str  # "on" or "off": whether bot mail goes to the contact (R6)
    created_at: datetime


def list_cabinets(db: Database) -> list[CabinetRow]:
    """Every cabinet, by slug."""
    with db.read() as s:
        return [
            CabinetRow(
                slug=c.slug,
                name=c.name,
                contact=c.contact_email,
                forwarding="on" if c.forward_bot_mail else "off",
                created_at=c.created_at,
            )
            for c in s.execute(select(Cabinet).order_by(Cabinet.slug)).scalars()
        ]


@dataclass(frozen=True, slots=True)
class CompanyRow:
    slug: str
    name: str
    cabinet: str
    fiscal_year_end: str
    created_at: datetime


def list_companies(db: Database) -> list[CompanyRow]:
    """Every company with its cabinet's slug, by slug."""
    query = (
        select(Company, Cabinet.slug)
        .join(Cabinet, Company.cabinet_id == Cabinet.id)
        .order_by(Company.slug)
    )
    with db.read() as s:
        return [
            CompanyRow(
                slug=co.slug,
                name=co.name,
                cabinet=cabinet,
                fiscal_year_end=co.fiscal_year_end,
                created_at=co.created_at,
            )
            for co, cabinet in s.execute(query)
        ]

"""Who exists: cabinets and companies, looked up for RCPT checks and filing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select

from gateway.storage.db import Database
from gateway.storage.models import Cabinet, Company, Connection


@dataclass(frozen=True)
class CabinetRef:
    id: int
    slug: str
    contact_email: str | None


@dataclass(frozen=True)
class CompanyRef:
    id: int
    slug: str
    cabinet_id: int
    fiscal_year_end: str  # "MM-DD"
    # What its e-invoices name it by (gateway/inbound/invoices.py): not kept by the
    # directory's cache, read fresh for each filing batch (`company_identities`).
    siren: str | None = None
    vat_number: str | None = None


class Directory:
    """Lookups from the database, remembered for a short while.

    Positive answers are kept `positive_ttl` seconds, negative ones `negative_ttl`: a
    company created by the CLI (possibly on another node) becomes reachable within
    `negative_ttl` seconds.
    """

    def __init__(
        self,
        db: Database,
        positive_ttl: float = 60.0,
        negative_ttl: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.positive_ttl = positive_ttl
        self.negative_ttl = negative_ttl
        self.monotonic = monotonic
        self._cache: dict[tuple[str, str], tuple[float, CompanyRef | CabinetRef | None]] = {}

    def company(self, slug: str) -> CompanyRef | None:
        hit, value = self.remembered("company", slug)
        if not hit:
            value = self._remember("company", slug, self._fetch_company(slug))
        assert value is None or isinstance(value, CompanyRef)
        return value

    def cabinet(self, slug: str) -> CabinetRef | None:
        hit, value = self.remembered("cabinet", slug)
        if not hit:
            value = self._remember("cabinet", slug, self._fetch_cabinet(slug))
        assert value is None or isinstance(value, CabinetRef)
        return value

    def alias_owner(self, local_part: str) -> CompanyRef | None:
        """The company whose connection uses the partner alias `local_part`@(any of our
        domains: R1), e.g. meg+macon-dupont: its mail goes to that cabinet's bot mailbox."""
        hit, value = self.remembered("alias", local_part)
        if not hit:
            value = self._remember("alias", local_part, self._fetch_alias_owner(local_part))
        assert value is None or isinstance(value, CompanyRef)
        return value

    def remembered(self, kind: str, slug: str) -> tuple[bool, CompanyRef | CabinetRef | None]:
        """(True, answer) when a fresh answer is in memory; (False, None) otherwise."""
        entry = self._cache.get((kind, slug))
        if entry is not None and entry[0] > self.monotonic():
            return True, entry[1]
        return False, None

    def _remember(
        self, kind: str, slug: str, value: CompanyRef | CabinetRef | None
    ) -> CompanyRef | CabinetRef | None:
        ttl = self.positive_ttl if value is not None else self.negative_ttl
        if len(self._cache) > 100_000:  # bounded: a scan of random addresses must not grow it
            self._cache.clear()
        self._cache[(kind, slug)] = (self.monotonic() + ttl, value)
        return value

    def _fetch_company(self, slug: str) -> CompanyRef | None:
        with self.db.read() as s:
            row = s.execute(select(Company).where(Company.slug == slug)).scalar_one_or_none()
            if row is None:
                return None
            return _company_ref(row)

    def _fetch_alias_owner(self, local_part: str) -> CompanyRef | None:
        pattern = local_part.lower().replace("\\", "").replace("%", "").replace("_", "\\_")
        with self.db.read() as s:
            row = s.execute(
                select(Company)
                .join(Connection, Connection.company_id == Company.id)
                .where(func.lower(Connection.entered_address).like(pattern + "@%", escape="\\"))
                .order_by(Connection.id)
                .limit(1)
            ).scalar_one_or_none()
            if row is None:
                return None
            return _company_ref(row)

    def _fetch_cabinet(self, slug: str) -> CabinetRef | None:
        with self.db.read() as s:
            row = s.execute(select(Cabinet).where(Cabinet.slug == slug)).scalar_one_or_none()
            return None if row is None else CabinetRef(row.id, row.slug, row.contact_email)


def _company_ref(row: Company) -> CompanyRef:
    return CompanyRef(row.id, row.slug, row.cabinet_id, row.fiscal_year_end)


# A company's id -> its SIREN and VAT number.
Identities = dict[int, tuple[str | None, str | None]]


def company_identities(db: Database, company_ids: set[int]) -> Identities:
    """The SIREN and VAT number of these companies, as they are now."""
    if not company_ids:
        return {}
    with db.read() as s:
        rows = s.execute(
            select(Company.id, Company.siren, Company.vat_number).where(Company.id.in_(company_ids))
        )
        return {i: (siren, vat) for i, siren, vat in rows}


class CachedDirectory:
    """The async face of `Directory` for the SMTP server: a remembered answer is returned
    on the event loop; only a miss goes to the database, in a thread."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    async def company(self, slug: str) -> CompanyRef | None:
        hit, value = self.directory.remembered("company", slug)
        if hit:
            assert value is None or isinstance(value, CompanyRef)
            return value
        return await asyncio.to_thread(self.directory.company, slug)

    async def alias_owner(self, local_part: str) -> CompanyRef | None:
        hit, value = self.directory.remembered("alias", local_part)
        if hit:
            assert value is None or isinstance(value, CompanyRef)
            return value
        return await asyncio.to_thread(self.directory.alias_owner, local_part)

    async def cabinet(self, slug: str) -> CabinetRef | None:
        hit, value = self.directory.remembered("cabinet", slug)
        if hit:
            assert value is None or isinstance(value, CabinetRef)
            return value
        return await asyncio.to_thread(self.directory.cabinet, slug)

"""Who exists: cabinets and companies, looked up for RCPT checks and filing.

RCPT checks run on the event loop for every recipient, so answers are cached in memory for a
short time; a miss goes to the database in a thread. A company created by the CLI (possibly
on another node) becomes reachable within `negative_ttl` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from gateway.storage.db import Database
from gateway.storage.models import Cabinet, Company


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


class Directory:
    """Synchronous lookups, straight from the database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def company(self, slug: str) -> CompanyRef | None:
        with self.db.read() as s:
            row = s.execute(select(Company).where(Company.slug == slug)).scalar_one_or_none()
            if row is None:
                return None
            return CompanyRef(row.id, row.slug, row.cabinet_id, row.fiscal_year_end)

    def cabinet(self, slug: str) -> CabinetRef | None:
        with self.db.read() as s:
            row = s.execute(select(Cabinet).where(Cabinet.slug == slug)).scalar_one_or_none()
            return None if row is None else CabinetRef(row.id, row.slug, row.contact_email)


class CachedDirectory:
    """Async, cached front of `Directory` for the SMTP server."""

    def __init__(
        self,
        directory: Directory,
        positive_ttl: float = 60.0,
        negative_ttl: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.positive_ttl = positive_ttl
        self.negative_ttl = negative_ttl
        self.monotonic = monotonic
        self._cache: dict[tuple[str, str], tuple[float, object]] = {}

    async def company(self, slug: str) -> CompanyRef | None:
        return await self._lookup("company", slug, self.directory.company)  # type: ignore[return-value]

    async def cabinet(self, slug: str) -> CabinetRef | None:
        return await self._lookup("cabinet", slug, self.directory.cabinet)  # type: ignore[return-value]

    async def _lookup(self, kind: str, slug: str, fetch: Callable[[str], object]) -> object:
        now = self.monotonic()
        hit = self._cache.get((kind, slug))
        if hit is not None and hit[0] > now:
            return hit[1]
        value = await asyncio.to_thread(fetch, slug)
        ttl = self.positive_ttl if value is not None else self.negative_ttl
        if len(self._cache) > 100_000:  # bounded: a scan of random addresses must not grow it
            self._cache.clear()
        self._cache[(kind, slug)] = (now + ttl, value)
        return value

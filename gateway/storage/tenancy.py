"""Who may see what: a `Tenant` is the whole gateway (`ALL`: the CLI on its host, an admin
token) or one cabinet (a cabinet-scoped API token). Every service and listing function that
reads or changes a cabinet's data takes one and narrows its queries with it, so that another
cabinet's company, document, delivery or bot mail reads as absent (`NotFound`, the API's
404), never as forbidden: ids of other tenants reveal nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select

from gateway.storage.models import Company

S = TypeVar("S", bound=Select[*tuple[Any, ...]])


@dataclass(frozen=True)
class Tenant:
    """All cabinets (`cabinet_id` None) or one."""

    cabinet_id: int | None = None

    @property
    def everything(self) -> bool:
        return self.cabinet_id is None

    def companies(self, query: S) -> S:
        """`query` (which selects from or joins `companies`) narrowed to this tenant's."""
        if self.cabinet_id is None:
            return query
        return query.where(Company.cabinet_id == self.cabinet_id)

    def sees_cabinet(self, cabinet_id: int) -> bool:
        return self.cabinet_id is None or self.cabinet_id == cabinet_id


ALL = Tenant()

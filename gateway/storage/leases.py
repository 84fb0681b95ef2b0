"""Claiming work rows with a lease: the one mechanism behind every queue a worker takes from
(inbound messages to file, deliveries and bot-mail forwards to send)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, update
from sqlalchemy.orm import Session


def claim_rows(
    s: Session, model: Any, candidates: Select[Any], claimable: ColumnElement[bool], **values: Any
) -> list[int]:
    """Take the rows `candidates` selects (their ids, in its order and limit): one guarded
    UPDATE … WHERE id IN (…) AND `claimable` … RETURNING id, setting `values` (status,
    claimed_by, lease_until…). Safe when workers race: a row another worker took between the
    select and the update no longer matches `claimable` and is not returned. Sorted ids."""
    ids = list(s.execute(candidates).scalars())
    if not ids:
        return []
    claimed = s.execute(
        update(model).where(model.id.in_(ids), claimable).values(**values).returning(model.id)
    ).scalars()
    return sorted(claimed)

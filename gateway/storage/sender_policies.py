"""Sender policies as stored: each cabinet's and each company's own setting (table
`sender_policies`), and the policy in force for a message (`effective_policy`).

A level's own setting is a kind (None: inherit it from the level above) and allow-list
entries, which add to those of the levels above; the rules are in
gateway/routing/sender_policy.py. A level with neither a kind nor an entry has no row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.orm import Session

from gateway.routing.partners import PartnerRegistry
from gateway.routing.sender_policy import (
    GLOBAL_DEFAULT,
    PolicyKind,
    PolicyLevel,
    SenderPolicy,
    SenderPolicyError,
    combine_levels,
    parse_allow_entries,
)
from gateway.storage.accounts import AccountError
from gateway.storage.models import Cabinet, Company, Connection, SenderPolicySetting


@dataclass(frozen=True)
class PolicyScope:
    """Whose policy a command is about: a company (and its cabinet) or a cabinet."""

    cabinet_id: int  # the cabinet itself, or the company's
    company_id: int | None
    name: str  # "company dupont-maconnerie", "cabinet aecconseil"


def scope_of(session: Session, *, company: str | None, cabinet: str | None) -> PolicyScope:
    """The scope a person named by slug (exactly one of `company`, `cabinet`)."""
    if (company is None) == (cabinet is None):
        raise AccountError("name a company (--company SLUG) or a cabinet (--cabinet SLUG)")
    if company is not None:
        found = session.execute(
            select(Company.id, Company.cabinet_id).where(Company.slug == company)
        ).one_or_none()
        if found is None:
            raise AccountError(f"no company {company!r} (see `gateway company list`)")
        return PolicyScope(found.cabinet_id, found.id, f"company {company}")
    cabinet_id = session.execute(
        select(Cabinet.id).where(Cabinet.slug == cabinet)
    ).scalar_one_or_none()
    if cabinet_id is None:
        raise AccountError(f"no cabinet {cabinet!r} (see `gateway cabinet list`)")
    return PolicyScope(cabinet_id, None, f"cabinet {cabinet}")


def _level(cabinet_id: int | None, company_id: int | None) -> ColumnElement[bool]:
    if (cabinet_id is None) == (company_id is None):
        raise ValueError("a sender policy level is a cabinet or a company: give one id")
    if company_id is not None:
        return SenderPolicySetting.company_id == company_id
    return and_(
        SenderPolicySetting.cabinet_id == cabinet_id, SenderPolicySetting.company_id.is_(None)
    )


def _row(
    session: Session, cabinet_id: int | None, company_id: int | None, now: datetime
) -> SenderPolicySetting:
    """The level's row, made (not yet added) when it has none."""
    row = session.execute(
        select(SenderPolicySetting).where(_level(cabinet_id, company_id))
    ).scalar_one_or_none()
    if row is None:
        row = SenderPolicySetting(cabinet_id=cabinet_id, company_id=company_id, allowed=[])
    row.updated_at = now
    return row


def _keep(session: Session, row: SenderPolicySetting) -> None:
    """Store the row, or delete it when it says nothing any more (no kind, no entries)."""
    if row.kind is not None or row.allowed:
        session.add(row)
    elif row.id is not None:
        session.delete(row)


def own_setting(
    session: Session, *, cabinet_id: int | None, company_id: int | None
) -> tuple[PolicyKind | None, tuple[str, ...]]:
    """A level's own kind (None: inherited) and its own entries."""
    row = session.execute(
        select(SenderPolicySetting.kind, SenderPolicySetting.allowed).where(
            _level(cabinet_id, company_id)
        )
    ).one_or_none()
    if row is None:
        return None, ()
    return (PolicyKind(row.kind) if row.kind else None), tuple(row.allowed)


def set_policy(
    session: Session,
    *,
    cabinet_id: int | None,
    company_id: int | None,
    kind: PolicyKind | None,
    now: datetime,
) -> None:
    """Set the kind of one level (give exactly one of the ids); None removes the level's
    own kind, which is then inherited. Its allow-list entries stay."""
    row = _row(session, cabinet_id, company_id, now)
    row.kind = None if kind is None else PolicyKind(kind).value
    _keep(session, row)


def allow(
    session: Session,
    *,
    cabinet_id: int | None,
    company_id: int | None,
    entries: Iterable[str],
    now: datetime,
) -> tuple[str, ...]:
    """Add `entries` (parsed: SenderPolicyError names a wrong one, and nothing is changed)
    to one level's allow list; returns that level's list."""
    added = parse_allow_entries(entries)
    row = _row(session, cabinet_id, company_id, now)
    row.allowed = list(dict.fromkeys((*row.allowed, *added)))
    _keep(session, row)
    return tuple(row.allowed)


def disallow(
    session: Session,
    *,
    cabinet_id: int | None,
    company_id: int | None,
    entries: Iterable[str],
    now: datetime,
) -> tuple[str, ...]:
    """Remove `entries` from one level's allow list; an entry that is not on it is an
    error (a typo must not pass for a removal), and nothing is changed. Returns the list."""
    removed = parse_allow_entries(entries)
    row = _row(session, cabinet_id, company_id, now)
    current = tuple(row.allowed)
    missing = [e for e in removed if e not in current]
    if missing:
        listed = ", ".join(current) or "none"
        raise SenderPolicyError(
            f"{', '.join(missing)}: not on this list (its entries: {listed}); entries "
            "inherited from a cabinet, a partner or the configuration are removed there"
        )
    row.allowed = [e for e in current if e not in removed]
    _keep(session, row)
    return tuple(row.allowed)


def _named_levels(session: Session, where: ColumnElement[bool] | None = None) -> list[PolicyLevel]:
    """The rows (those `where` picks) as levels named after their cabinet or company."""
    query = (
        select(SenderPolicySetting.kind, SenderPolicySetting.allowed, Cabinet.slug, Company.slug)
        .outerjoin(Cabinet, Cabinet.id == SenderPolicySetting.cabinet_id)
        .outerjoin(Company, Company.id == SenderPolicySetting.company_id)
    )
    if where is not None:
        query = query.where(where)
    return [
        PolicyLevel(
            f"company {company}" if company else f"cabinet {cabinet}",
            PolicyKind(kind) if kind else None,
            tuple(allowed),
        )
        for kind, allowed, cabinet, company in session.execute(query)
    ]


def policy_levels(
    session: Session,
    company_id: int | None,
    cabinet_id: int,
    default: SenderPolicy,
    registry: PartnerRegistry,
) -> list[PolicyLevel]:
    """Every level that says something about this company (or, `company_id` None, this
    cabinet), least specific first: the global default, the cabinet, the company, then the
    partners it is connected to that name sending domains. Two queries at most."""
    mine = and_(
        SenderPolicySetting.cabinet_id == cabinet_id, SenderPolicySetting.company_id.is_(None)
    )
    if company_id is not None:
        mine = mine | (SenderPolicySetting.company_id == company_id)
    levels = [PolicyLevel(GLOBAL_DEFAULT, default.kind, default.allowed)]
    # The cabinet's row before the company's: the more specific level comes later.
    levels += sorted(_named_levels(session, mine), key=lambda lv: lv.source.startswith("company"))
    senders = {p.name: p.sending_domains for p in registry.partners if p.sending_domains}
    if company_id is not None and senders:
        connected = session.execute(
            select(Connection.partner)
            .where(Connection.company_id == company_id, Connection.partner.in_(senders))
            .order_by(Connection.partner)
        ).scalars()
        levels += [PolicyLevel(f"partner {p}", None, senders[p]) for p in connected]
    return levels


def effective_policy(
    session: Session,
    company_id: int | None,
    cabinet_id: int,
    default: SenderPolicy,
    registry: PartnerRegistry,
) -> tuple[SenderPolicy, str]:
    """The policy in force for mail to this company (or, `company_id` None, to this
    cabinet's bots), and where its kind comes from: "company dupont-maconnerie", "cabinet
    aecconseil" or "global default". The allow list is every level's entries together,
    with the sending domains of the partners the company is connected to."""
    return combine_levels(policy_levels(session, company_id, cabinet_id, default, registry))


def own_settings(session: Session) -> list[PolicyLevel]:
    """Every cabinet's and company's own setting, cabinets first, by slug."""
    levels = _named_levels(session)
    return sorted(levels, key=lambda lv: (lv.source.startswith("company"), lv.source))

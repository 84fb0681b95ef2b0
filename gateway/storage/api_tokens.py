"""API tokens and the audit log of API writes: every read and write of `api_tokens` and
`api_audit_log`.

A token reads `gw_<key>_<secret>`: the key (public, unique) finds the row, and only the
SHA-256 of the whole token is kept. The secret is 32 random bytes, so a fast hash is enough
(a slow password hash protects guessable secrets; nothing guesses 256 random bits), and
checking a token costs one indexed read. The token is shown once, by `gateway token
create`; lost, it is revoked and another made.

Scopes: `read` (GET), `write` (also changes a cabinet's data: connections, switches,
documents, retries), `admin` (also cabinets, quarantine, status; never tied to a cabinet).
A token tied to a cabinet sees only that cabinet (gateway/storage/tenancy.py).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from gateway.clock import as_utc
from gateway.storage.accounts import AccountError, NotFound
from gateway.storage.db import Database
from gateway.storage.models import ApiScope, ApiToken, AuditEntry, Cabinet
from gateway.storage.tenancy import ALL, Tenant

_TOKEN = re.compile(r"gw_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})")
# A token's last use is written at most this often (not on every request).
LAST_USED_EVERY = timedelta(minutes=1)
SCOPE_RANK = {ApiScope.READ: 0, ApiScope.WRITE: 1, ApiScope.ADMIN: 2}


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: its token, what it may do, and what it may see."""

    token_id: int
    scope: ApiScope
    tenant: Tenant

    def may(self, needed: ApiScope) -> bool:
        return SCOPE_RANK[self.scope] >= SCOPE_RANK[needed]


@dataclass(frozen=True)
class TokenRow:
    id: int
    name: str
    scope: str
    cabinet: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def create_token(
    db: Database,
    scope: str,
    cabinet: str | None,
    name: str,
    now: datetime,
    expires_in: timedelta | None = None,
) -> tuple[TokenRow, str]:
    """Make a token; returns its row and the token itself (never stored, shown once)."""
    try:
        kind = ApiScope(scope)
    except ValueError:
        raise AccountError(f"scope {scope!r}: read, write or admin", field="scope") from None
    if kind is ApiScope.ADMIN and cabinet is not None:
        raise AccountError(
            "an admin token sees every cabinet: give --cabinet only with read or write",
            field="cabinet",
        )
    key = secrets.token_hex(6)
    token = f"gw_{key}_{secrets.token_urlsafe(32)}"
    with db.write() as s:
        cabinet_id = None
        if cabinet is not None:
            cabinet_id = s.execute(select(Cabinet.id).where(Cabinet.slug == cabinet)).scalar()
            if cabinet_id is None:
                raise NotFound(
                    f"no cabinet {cabinet!r} (see `gateway cabinet list`)", field="cabinet"
                )
        row = ApiToken(
            key=key,
            sha256=_hash(token),
            scope=kind.value,
            cabinet_id=cabinet_id,
            name=name,
            created_at=now,
            expires_at=now + expires_in if expires_in else None,
        )
        s.add(row)
        s.flush()
        shown = _row(row, cabinet)
    return shown, token


def authenticate(db: Database, token: str, now: datetime) -> Caller | None:
    """The caller `token` stands for, or None (unknown, wrong, revoked or expired: the
    answer does not say which)."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    with db.read() as s:
        row = s.execute(select(ApiToken).where(ApiToken.key == match.group(1))).scalar()
        if row is None or not hmac.compare_digest(row.sha256, _hash(token)):
            return None
        if row.revoked_at is not None:
            return None
        if row.expires_at is not None and as_utc(row.expires_at) <= now:
            return None
        caller = Caller(row.id, ApiScope(row.scope), Tenant(row.cabinet_id))
        stale = row.last_used_at is None or now - as_utc(row.last_used_at) > LAST_USED_EVERY
    if stale:
        with db.write() as s:
            s.execute(
                update(ApiToken).where(ApiToken.id == caller.token_id).values(last_used_at=now)
            )
    return caller


def revoke_token(db: Database, token_id: int, now: datetime) -> TokenRow:
    with db.write() as s:
        row = s.get(ApiToken, token_id)
        if row is None:
            raise NotFound(f"no API token #{token_id} (see `gateway token list`)")
        if row.revoked_at is None:
            row.revoked_at = now
        cabinet = s.execute(select(Cabinet.slug).where(Cabinet.id == row.cabinet_id)).scalar()
        return _row(row, cabinet)


def list_tokens(db: Database) -> list[TokenRow]:
    with db.read() as s:
        rows = s.execute(
            select(ApiToken, Cabinet.slug)
            .outerjoin(Cabinet, Cabinet.id == ApiToken.cabinet_id)
            .order_by(ApiToken.id)
        ).all()
        return [_row(token, slug) for token, slug in rows]


def _row(row: ApiToken, cabinet: str | None) -> TokenRow:
    return TokenRow(
        id=row.id,
        name=row.name,
        scope=row.scope,
        cabinet=cabinet,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def record_write(
    db: Database, caller: Caller | None, action: str, subject: str, status: int, now: datetime
) -> None:
    """One line of the audit log: a write the API was asked for, and how it was answered."""
    with db.write() as s:
        s.add(
            AuditEntry(
                token_id=caller.token_id if caller else None,
                action=action[:200],
                object=subject[:500],
                status=status,
                at=now,
            )
        )


@dataclass(frozen=True)
class AuditRow:
    id: int
    token_id: int | None
    action: str
    object: str
    status: int
    at: datetime


def audit_log(db: Database, limit: int = 100, tenant: Tenant = ALL) -> list[AuditRow]:
    """The latest writes, newest first (tokens of `tenant`'s cabinet only, when narrowed)."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if not tenant.everything:
        query = query.join(ApiToken, ApiToken.id == AuditEntry.token_id).where(
            ApiToken.cabinet_id == tenant.cabinet_id
        )
    with db.read() as s:
        return [
            AuditRow(e.id, e.token_id, e.action, e.object, e.status, e.at)
            for e in s.execute(query).scalars()
        ]

"""The rotated refresh tokens of IMAP sources: every read and write of
`oauth_refresh_tokens`.

A provider that rotates refresh tokens answers each refresh with a new one and may refuse the
old one from then on, so the new one is saved (sealed with the gateway's secrets key, in its
own committed transaction) before the gateway uses it or forgets the old one: a restart, or
another node reading the same source, starts from the newest. The row remembers which
configured token it descends from (`seed_sha256`): when the admin configures a new first
token (consent given again after a revocation), the configured one is used again.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import select

from gateway.clock import Clock
from gateway.storage.db import Database, upsert_insert
from gateway.storage.models import OAuthRefreshToken
from gateway.storage.sealed import SecretBox


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class StoredRefreshTokens:
    """One source's refresh token: the configured one, or the newest rotated from it."""

    def __init__(self, db: Database, box: SecretBox, clock: Clock, source: str) -> None:
        self.db = db
        self.box = box
        self.clock = clock
        self.source = source
        self._context = f"imap source {source}"

    def current(self, seed: str) -> str:
        """The refresh token to use now, `seed` being the configured first one."""
        with self.db.read() as s:
            row = s.execute(
                select(OAuthRefreshToken).where(OAuthRefreshToken.source == self.source)
            ).scalar_one_or_none()
            if row is None or row.seed_sha256 != _hash(seed):
                return seed
            return self.box.open(row.sealed, self._context)

    def save(self, seed: str, token: str) -> None:
        """Keep `token` (rotated from `seed`'s line) as the one to use from now on."""
        values = {
            "sealed": self.box.seal(token, self._context),
            "seed_sha256": _hash(seed),
            "saved_at": self.clock.now(),
        }
        with self.db.write() as s:
            s.execute(
                upsert_insert(s)(OAuthRefreshToken)
                .values(source=self.source, **values)
                .on_conflict_do_update(index_elements=["source"], set_=values)
            )

    def saved_at(self) -> datetime | None:
        with self.db.read() as s:
            return s.execute(
                select(OAuthRefreshToken.saved_at).where(OAuthRefreshToken.source == self.source)
            ).scalar_one_or_none()

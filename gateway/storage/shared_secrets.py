"""The secrets every node of the gateway shares: the VERP secret behind the bounce addresses'
tags, and the DKIM private keys (kept here under `dkim/…` names by
gateway/outbound/dkim_keys.py).

Where they live (issue 14's decision):
- `[gateway] secrets_key_env` or `secrets_key_file` configured: in the database, table
  `gateway_secrets`, each sealed with that key (gateway/storage/sealed.py) and bound to its
  name. This is what several nodes need once they share no folder (PostgreSQL for state, S3
  for bytes): every node reads the same rows and opens them with the same key. A row that
  does not open with this node's key stops the command in one line naming the setting
  (`SealBroken`).
- no key (the embedded single-node SQLite default that `gateway init` writes): in the
  storage folder as before, `bounce.key` and `dkim/<domain>/<selector>.<kind>.pem`, so a
  first run needs no key to be made.

Upgrading a gateway whose secrets were in the folder: once a key is configured, what the
folder holds and the database lacks is imported (insert-if-absent, logged), so the bounce
addresses already out there still verify and the published DKIM selectors keep signing.
The files stay where they are. A file that differs from what the database already holds is
not imported: the database's value wins, and a warning says so.

A secret is created once, even by two nodes starting together: each inserts its candidate
with INSERT … ON CONFLICT DO NOTHING, then reads back what the database kept (the same
statement on SQLite and PostgreSQL), so both end with the first one's.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from pathlib import Path

import structlog
from sqlalchemy import select

from gateway.clock import Clock
from gateway.storage.db import Database, upsert_insert
from gateway.storage.models import GatewaySecret
from gateway.storage.sealed import SecretBox

log = structlog.get_logger("gateway.secrets")

VERP_SECRET = "verp"
BOUNCE_KEY_FILE = "bounce.key"  # the VERP secret in the storage folder (no secrets key)
_VERP_BYTES = 32


class SharedSecrets:
    """The `gateway_secrets` rows, sealed with this node's secrets key."""

    def __init__(self, db: Database, box: SecretBox, clock: Clock) -> None:
        self.db = db
        self.box = box
        self.clock = clock

    @staticmethod
    def _context(name: str) -> str:
        return f"gateway secret {name}"

    def get(self, name: str) -> str | None:
        """The secret called `name`, opened; None when there is none."""
        with self.db.read() as s:
            sealed = s.execute(
                select(GatewaySecret.sealed).where(GatewaySecret.name == name)
            ).scalar_one_or_none()
        return None if sealed is None else self.box.open(sealed, self._context(name))

    def add(self, name: str, value: str) -> bool:
        """Keep `value` as `name` unless the database has one already: True when this call
        stored it (never replaces; the check and the insert are one statement)."""
        with self.db.write() as s:
            result = s.execute(
                upsert_insert(s)(GatewaySecret)
                .values(
                    name=name,
                    sealed=self.box.seal(value, self._context(name)),
                    created_at=self.clock.now(),
                )
                .on_conflict_do_nothing(index_elements=["name"])
                .returning(GatewaySecret.name)
            )
            return result.first() is not None

    def replace(self, name: str, value: str) -> None:
        """Keep `value` as `name`, replacing what was there."""
        values = {
            "sealed": self.box.seal(value, self._context(name)),
            "created_at": self.clock.now(),
        }
        with self.db.write() as s:
            s.execute(
                upsert_insert(s)(GatewaySecret)
                .values(name=name, **values)
                .on_conflict_do_update(index_elements=["name"], set_=values)
            )

    def first(self, name: str, candidate: str) -> tuple[str, bool]:
        """The secret `name`, `candidate` becoming it if there was none: (the value every node
        uses, whether it is `candidate` stored by this call)."""
        stored = self.get(name)
        if stored is not None:
            return stored, False
        added = self.add(name, candidate)
        stored = self.get(name)  # read back: another node may have been first
        if stored is None:
            raise RuntimeError(f"gateway secret {name} vanished after being stored")
        return stored, added

    def starting_with(self, prefix: str) -> dict[str, str]:
        """Every secret whose name starts with `prefix`, opened, in name order."""
        with self.db.read() as s:
            rows = s.execute(
                select(GatewaySecret.name, GatewaySecret.sealed)
                .where(GatewaySecret.name.startswith(prefix, autoescape=True))
                .order_by(GatewaySecret.name)
            ).all()
        return {name: self.box.open(sealed, self._context(name)) for name, sealed in rows}


def verp_secret_in_folder(storage: Path) -> bytes:
    """The VERP secret without a secrets key: `<storage>/bounce.key`, created once (written
    aside then linked, so a process reading it never sees it half-written)."""
    path = storage / BOUNCE_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(_VERP_BYTES))
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # another process was first: use its
                os.link(tmp, path)  # link: create-if-absent, the file whole
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_bytes()


def verp_secret_in_database(shared: SharedSecrets, storage: Path) -> bytes:
    """The VERP secret with a secrets key: the database's, created once. The first time, a
    `bounce.key` left in the storage folder by an earlier version becomes it (imported), so
    the bounce addresses already sent still verify; otherwise 32 random bytes."""
    path = storage / BOUNCE_KEY_FILE
    in_folder = path.read_bytes() if path.is_file() else None
    candidate = in_folder or secrets.token_bytes(_VERP_BYTES)
    stored, added = shared.first(VERP_SECRET, base64.b64encode(candidate).decode("ascii"))
    secret = base64.b64decode(stored)
    if added and in_folder:
        log.info("verp_secret_imported", file=str(path))
    elif in_folder and secret != in_folder:
        log.warning(
            "verp_secret_file_ignored",
            file=str(path),
            reason="the database holds another VERP secret; the database's is used",
        )
    return secret

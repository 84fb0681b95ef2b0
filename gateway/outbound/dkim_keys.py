"""Where the DKIM private keys live: what the signers, `gateway dkim keygen` and `gateway dns`
need of a key store (`DkimKeys`), and its two kinds.

- `KeyStore` (gateway/outbound/dkim.py): files in the storage folder, when no secrets key
  is configured (the single-node default).
- `DatabaseKeyStore`: the gateway's shared secrets in the database (`gateway_secrets`), each
  key sealed with `[gateway] secrets_key_*` under the name `dkim/<domain>/<selector>.<kind>.pem`
  (the folder's path, so one selector+domain+algorithm is one row), so every node signs with
  the keys any node generated. The decision and the upgrade from the folder are described in
  gateway/storage/shared_secrets.py; `import_folder_keys` is that upgrade for DKIM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import structlog

from gateway.outbound.dkim import (
    DkimError,
    DkimKey,
    KeyStore,
    key_file_name,
    normalize_domain,
    parse_key_file_name,
    sort_keys,
)
from gateway.storage.shared_secrets import SharedSecrets

log = structlog.get_logger("gateway.secrets")

PREFIX = "dkim/"


class DkimKeys(Protocol):
    def save(self, key: DkimKey, *, overwrite: bool = False) -> Path | str:
        """Keep `key` (never replacing one unless `overwrite`); returns where, to show."""
        ...

    def keys_for(self, domain: str) -> list[DkimKey]:
        """All keys of `domain`, RSA first (then by selector); [] when it has none."""
        ...

    def all(self) -> list[DkimKey]:
        """Every key of every domain, domains in name order."""
        ...


def _name(key: DkimKey) -> str:
    return f"{PREFIX}{key.domain}/{key_file_name(key)}"


class DatabaseKeyStore:
    """DKIM keys sealed in the database's shared secrets."""

    def __init__(self, secrets: SharedSecrets) -> None:
        self.secrets = secrets

    def save(self, key: DkimKey, *, overwrite: bool = False) -> str:
        """A published selector whose private key is lost stops verifying, so replacing one
        takes `overwrite=True`; two nodes generating the same selector at once: one wins,
        the other is refused."""
        name = _name(key)
        if overwrite:
            self.secrets.replace(name, key.private_key_pem.decode("ascii"))
        elif not self.add_if_absent(key):
            raise DkimError(
                f"DKIM key {key.selector} of {key.domain} ({key.algorithm}) is already in the "
                "database: a published key is never overwritten; choose another selector"
            )
        return f"the database, sealed ({name})"

    def add_if_absent(self, key: DkimKey) -> bool:
        """Keep `key` unless its selector is taken: True when this call stored it."""
        return self.secrets.add(_name(key), key.private_key_pem.decode("ascii"))

    def keys_for(self, domain: str) -> list[DkimKey]:
        return self._keys(f"{PREFIX}{normalize_domain(domain)}/")

    def all(self) -> list[DkimKey]:
        return self._keys(PREFIX)

    def _keys(self, prefix: str) -> list[DkimKey]:
        by_domain: dict[str, list[DkimKey]] = {}
        for name, pem in self.secrets.starting_with(prefix).items():
            domain, _, file_name = name.removeprefix(PREFIX).partition("/")
            named = parse_key_file_name(file_name)
            if named is None:
                raise DkimError(f"gateway secret {name!r} is not a DKIM key name")
            by_domain.setdefault(domain, []).append(DkimKey(domain, *named, pem.encode("ascii")))
        return [key for domain in sorted(by_domain) for key in sort_keys(by_domain[domain])]


def import_folder_keys(folder: KeyStore, database: DatabaseKeyStore) -> int:
    """Copy into the database the folder's keys it lacks (an upgrade to a secrets key), so
    that published selectors keep signing; idempotent. A folder key whose selector the
    database holds with another key is left out, with a warning. Returns how many were
    imported."""
    stored = {_name(k): k.private_key_pem for k in database.all()}
    imported = 0
    for key in folder.all():
        name = _name(key)
        if name not in stored:
            if database.add_if_absent(key):
                log.info("dkim_key_imported", file=str(folder.path_for(key)), secret=name)
                imported += 1
                continue
            stored = {_name(k): k.private_key_pem for k in database.all()}  # another node's
        if stored[name] != key.private_key_pem:
            log.warning(
                "dkim_key_file_ignored",
                file=str(folder.path_for(key)),
                secret=name,
                reason="the database holds another key for this selector; the database's is used",
            )
    return imported

"""Secrets the gateway keeps in its database, encrypted with a key each node is given (from
its environment or a file, `[gateway] secrets_key_*`): today the rotated refresh tokens of
IMAP sources.

AES-256-GCM (the `cryptography` package) under a key derived from the configured one with
HKDF-SHA256, so any long random text (`openssl rand -base64 32`) is a key. Each value is
bound to what it is for (`context`, e.g. the source's name): a sealed value copied to another
row does not open there. A value sealed under another key fails loudly, naming the setting.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.errors import GatewayError

VERSION = "v1"
_NONCE_BYTES = 12


class SealBroken(GatewayError):
    """A sealed value that does not open: another key, another context, or damaged."""


class SecretBox:
    """Seals and opens short secrets under the gateway's secrets key."""

    def __init__(self, key: str) -> None:
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"gateway secrets", info=VERSION.encode()
        ).derive(key.encode("utf-8"))
        self._aead = AESGCM(derived)

    def seal(self, secret: str, context: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode("utf-8"), context.encode("utf-8"))
        return f"{VERSION}.{base64.b64encode(nonce + sealed).decode('ascii')}"

    def open(self, sealed: str, context: str) -> str:
        version, _, body = sealed.partition(".")
        if version != VERSION:
            raise SealBroken(f"a secret for {context} is in an unknown format ({version!r})")
        try:
            raw = base64.b64decode(body, validate=True)
            plain = self._aead.decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode("utf-8")
            )
        except (InvalidTag, ValueError) as exc:
            raise SealBroken(
                f"the secret kept for {context} does not open with this node's key "
                "(gateway.secrets_key_env / secrets_key_file): every node needs the same key"
            ) from exc
        return plain.decode("utf-8")

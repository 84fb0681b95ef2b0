"""Mail and keys for the authentication tests and benchmark: messages signed with dkimpy by
keys generated here, and the zone that publishes them (for tests/dns_server.py)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa


@dataclass(frozen=True)
class Key:
    algorithm: bytes  # dkimpy's signature_algorithm
    private: bytes  # as dkimpy's sign() takes it
    record: str  # the TXT at <selector>._domainkey.<domain>


def rsa_key(bits: int = 2048) -> Key:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Key(b"rsa-sha256", pem, f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode()}")


def ed25519_key() -> Key:
    private = ed25519.Ed25519PrivateKey.generate()
    seed = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return Key(
        b"ed25519-sha256",
        base64.b64encode(seed),
        f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}",
    )


def message(
    sender: str = "Alice Martin <alice@example.com>",
    body: str = "Bonjour,\r\n\r\nla facture 2026-117 est jointe.\r\n",
    extra: str = "",
) -> bytes:
    return (
        f"{extra}From: {sender}\r\n"
        "To: factures@cabinet.example\r\n"
        "Subject: Facture 2026-117\r\n"
        "Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
        "Message-ID: <117@example.com>\r\n"
        "\r\n"
        f"{body}"
    ).encode()


def sign(raw: bytes, key: Key, domain: str, selector: str) -> bytes:
    """The message with one more DKIM-Signature on top."""
    header = dkim.sign(
        raw,
        selector.encode(),
        domain.encode(),
        key.private,
        signature_algorithm=key.algorithm,
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return bytes(header) + raw

"""DKIM signing benchmark: `DkimSigner` against plain dkimpy, same key and message, one run.

Signs a ~48 KB message (text + a PDF attachment, CRLF) with relaxed/relaxed and the same
signed-header list both ways, for RSA-2048 and for Ed25519, alternating the arms over
several short rounds; prints signatures/s (median of the rounds) and the ratio
DkimSigner/dkimpy. Each arm's output is checked with dkimpy's verifier first, so the
figures are for signatures that verify. Runs in about `rounds x 4 x seconds` (~15 s).

    .venv/bin/python benchmarks/dkim_sign.py [--seconds 1.2] [--rounds 3]

dkimpy's Ed25519 needs PyNaCl (`dkimpy[ed25519]`); without it that arm prints n/a.
"""

from __future__ import annotations

import argparse
import base64
import random
import re
import statistics
from collections.abc import Callable
from email.message import EmailMessage

import dkim
from common import rate
from cryptography.hazmat.primitives import serialization

from gateway.outbound.dkim import (
    DkimKey,
    DkimSigner,
    dns_record_name,
    dns_txt_value,
    generate_key,
)

DOMAIN = "cabinet-dupont.example"


def sample_message(size: int = 48_000) -> bytes:
    """A realistic outbound message of about `size` bytes on the wire."""
    msg = EmailMessage()
    msg["From"] = "Cabinet Dupont <documents@cabinet-dupont.example>"
    msg["To"] = "factures+dupont-maconnerie@partner.example"
    msg["Subject"] = "Facture 2026-117 — Dupont Maçonnerie"
    msg["Date"] = "Sun, 22 Nov 2026 10:30:00 +0000"
    msg["Message-ID"] = "<bench.20261122103000@cabinet-dupont.example>"
    msg.set_content("Bonjour,\n\nveuillez trouver la facture ci-jointe.\n\nCordialement,\n")
    # base64 grows 4/3 plus line breaks: aim the whole message at `size`
    payload = random.Random(117).randbytes(int((size - 1_000) * 0.74))
    pdf = b"%PDF-1.4\n" + payload + b"\n%%EOF\n"
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="facture.pdf")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def h_list(signed: bytes) -> list[bytes]:
    """The h= of our signature, so that dkimpy signs exactly the same header fields."""
    header = re.sub(rb"\s+", b"", signed.split(b"\r\nFrom:", 1)[0])
    found = re.search(rb";h=([^;]+);", header)
    assert found is not None
    return found.group(1).split(b":")


def dkimpy_private(key: DkimKey) -> bytes:
    """dkimpy takes RSA as PEM, Ed25519 as the base64 of the raw 32-byte seed."""
    if key.algorithm == "rsa-sha256":
        return key.private_key_pem
    private = serialization.load_pem_private_key(key.private_key_pem, password=None)
    raw = private.private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return base64.b64encode(raw)


def verifies(signed: bytes, key: DkimKey) -> bool:
    records = {dns_record_name(key): dns_txt_value(key).encode()}
    return bool(dkim.verify(signed, dnsfunc=lambda q, timeout=5: records.get(q.decode()[:-1])))


def arms(key: DkimKey, message: bytes) -> dict[str, Callable[[], bytes]]:
    """The ways of signing with `key`, each checked to verify (no dkimpy one without NaCl)."""
    signer = DkimSigner([key])
    ours = signer.sign(message, DOMAIN)
    assert ours.endswith(message) and verifies(ours, key), "DkimSigner output does not verify"
    include = h_list(ours)
    privkey = dkimpy_private(key)

    def theirs() -> bytes:
        header = dkim.sign(
            message,
            key.selector.encode(),
            DOMAIN.encode(),
            privkey,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=include,
            signature_algorithm=key.algorithm.encode(),
        )
        return header + message

    ways: dict[str, Callable[[], bytes]] = {"DkimSigner": lambda: signer.sign(message, DOMAIN)}
    try:
        reference = theirs()
    except dkim.NaClNotFoundError:
        return ways
    assert verifies(reference, key), "dkimpy output does not verify"
    ways["dkimpy"] = theirs
    return ways


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.2, help="per arm and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    message = sample_message()
    print(f"message: {len(message):,} bytes, relaxed/relaxed, {args.rounds} rounds")
    keys = [generate_key(DOMAIN, "bench"), generate_key(DOMAIN, "benche", "ed25519-sha256")]
    labels = {"rsa-sha256": "RSA-2048", "ed25519-sha256": "Ed25519"}
    prepared = {key.algorithm: arms(key, message) for key in keys}
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for algorithm, ways in prepared.items():
            for name, sign in ways.items():
                results.setdefault((algorithm, name), []).append(rate(sign, args.seconds))
    for algorithm, ways in prepared.items():
        label = labels[algorithm]
        ours = statistics.median(results[(algorithm, "DkimSigner")])
        if "dkimpy" not in ways:
            print(f"{label:9} DkimSigner {ours:8.1f} sig/s   dkimpy n/a (PyNaCl not installed)")
            continue
        theirs = statistics.median(results[(algorithm, "dkimpy")])
        print(
            f"{label:9} DkimSigner {ours:8.1f} sig/s   dkimpy {theirs:7.1f} sig/s"
            f"   ratio {ours / theirs:5.1f}x"
        )


if __name__ == "__main__":
    main()

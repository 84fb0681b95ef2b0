"""Inbound authentication benchmark: `authenticate()` (SPF, DKIM, DMARC, ARC) per message,
against the tests' DNS server on the loopback interface, beside a baseline of dkimpy's
`dkim.verify` alone on the same message in the same run.

The message carries one RSA-2048 DKIM signature aligned with its From domain, whose SPF and
DMARC records are published. The lookup remembers nothing (a cache of no entries), so every
message asks DNS again (SPF TXT, the key, _dmarc): what a filing worker does for a sender not
seen within its records' TTL (gateway/dns.py's cache spares the rest, benchmarks/filing.py).
The baseline's dkimpy fetches its key through the same DNS server. Prints messages/s
(median of rounds).

    .venv/bin/python benchmarks/authentication.py [--seconds 1.5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import dkim
from common import rate

from gateway.dns import AnswerCache, DnspythonLookup
from gateway.inbound.trust.authentication import AuthEnvelope, authenticate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: tests.* is reached from the repo root

from tests.authmail import message, rsa_key, sign  # noqa: E402
from tests.dns_server import DnsServer  # noqa: E402

AUTHSERV_ID = "mx.cabinet.example"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    key = rsa_key()
    zone = {
        ("example.com", "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all"],
        ("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject"],
        ("s1._domainkey.example.com", "TXT"): [key.record],
    }
    body = "Bonjour,\r\n\r\n" + "la facture 2026-117 est jointe.\r\n" * 600  # ~20 KB
    raw = sign(message(body=body), key, "example.com", "s1")
    envelope = AuthEnvelope("192.0.2.5", "mx.example.com", "factures@example.com")

    with DnsServer(zone) as server:
        lookup = DnspythonLookup(
            timeout=2, nameservers=["127.0.0.1"], port=server.port, cache=AnswerCache(entries=0)
        )

        def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
            return lookup.txt(name.decode().rstrip("."))[0].encode()

        def ours() -> None:
            results = authenticate(raw, envelope, lookup)
            assert results.authenticated, results

        def baseline() -> None:
            assert dkim.verify(raw, dnsfunc=dnsfunc)

        print(f"message: {len(raw):,} bytes, 1 RSA-2048 signature, {args.rounds} rounds")
        ours_rates, base_rates = [], []
        for _ in range(args.rounds):
            ours_rates.append(rate(ours, args.seconds))
            base_rates.append(rate(baseline, args.seconds))
        mine, base = statistics.median(ours_rates), statistics.median(base_rates)
        print(f"authenticate() {mine:8.1f} msg/s  ({1000 / mine:.2f} ms per message)")
        print(f"dkim.verify    {base:8.1f} msg/s  ({1000 / base:.2f} ms per message)")
        print(f"ratio authenticate/dkim.verify: {mine / base:.2f}")
        print(f"DNS questions asked: {len(server.queries):,}")
        print(results_header(raw, envelope, lookup))


def results_header(raw: bytes, envelope: AuthEnvelope, lookup: DnspythonLookup) -> str:
    return authenticate(raw, envelope, lookup).to_header(AUTHSERV_ID)


if __name__ == "__main__":
    main()

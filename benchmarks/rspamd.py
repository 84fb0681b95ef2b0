"""rspamd benchmark: scans per second of a ~20 KB invoice (a PDF attached) through a real rspamd.

Starts rspamd as the tests do (tests/rspamd.py: stock rules, no network modules, loopback
ports), first with an empty Hyperscan cache (the cold start of a new machine), then again
on the cache it just filled (every later start); prints both start times. Then, for 1 and
2 normal workers (the machine has two cores), scans distinct messages for `--seconds`
from 1 client and from `--clients` client threads (the filing worker calls the client from
its threads), with `Rspamd.score` as the gateway will, and prints scans/s and the median
and 95th percentile latency of one scan. The envelope names the client's host, so rspamd
does no reverse lookup: the figures are rspamd's own work, DNS answers excluded.

    .venv/bin/python benchmarks/rspamd.py [--seconds 5] [--clients 4] [--skip-cold]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path

from gateway.inbound.trust.rspamd import Rspamd, SpamEnvelope

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: tests.rspamd is reached from the repo root

from tests.rspamd import RspamdServer, find_rspamd, shared_hs_cache  # noqa: E402

RCPT = "compta+dupont-maconnerie@welyb.fr"
ENVELOPE = SpamEnvelope(
    client_address="192.0.2.7",
    helo="mail.fournisseur.example",
    mail_from="fournisseur@example.org",
    recipients=(RCPT,),
    client_hostname="mail.fournisseur.example",
)


def sample_message(i: int) -> bytes:
    """A ~20 KB invoice; distinct bytes for every `i`."""
    msg = EmailMessage()
    msg["From"] = "Fournisseur <fournisseur@example.org>"
    msg["To"] = RCPT
    msg["Subject"] = f"Facture {i}"
    msg["Date"] = "Mon, 30 Nov 2026 09:00:00 +0100"
    msg["Message-ID"] = f"<bench-{i}-{os.getpid()}@example.org>"
    msg.set_content("Bonjour,\nveuillez trouver la facture ci-jointe.\n\nCordialement,\n")
    pdf = b"%PDF-1.4\n%bench " + str(i).encode() + b"\n" + os.urandom(14_000) + b"\n%%EOF\n"
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=f"facture-{i}.pdf")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def start(base: Path, workers: int, cache: Path) -> RspamdServer:
    server = RspamdServer(base, workers=workers, hs_cache_dir=cache)
    server.start()
    return server


def measure(
    url: str, messages: list[bytes], clients: int, seconds: float
) -> tuple[float, list[float]]:
    """(scans/s, latencies in s) of `clients` threads scanning back to back for `seconds`."""
    scorer = Rspamd(url, timeout=30)
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(k: int) -> None:
        i = k
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            verdict = scorer.score(messages[i % len(messages)], ENVELOPE)
            took = time.perf_counter() - began
            assert verdict.action == "no action", verdict.summary()
            with lock:
                latencies.append(took)
            i += clients

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client, k) for k in range(clients)]:
            future.result()
    return len(latencies) / (time.perf_counter() - began), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--clients", type=int, default=4, help="client threads of the 2nd arm")
    parser.add_argument("--skip-cold", action="store_true", help="no start on an empty cache")
    args = parser.parse_args()
    if find_rspamd() is None:
        sys.exit("rspamd not found: run scripts/setup-test-packages")

    messages = [sample_message(i) for i in range(200)]
    sizes = [len(m) for m in messages]
    print(f"message: ~{statistics.mean(sizes) / 1000:.1f} KB (a PDF attached), 200 distinct")
    with tempfile.TemporaryDirectory(prefix="bench-rspamd-") as folder:
        base = Path(folder)
        cache = shared_hs_cache()
        if not args.skip_cold:
            cache = base / "hs-cache"
            cold = start(base / "cold", 1, cache)
            cold.close()
            print(f"start, empty Hyperscan cache: {cold.startup_seconds:6.2f} s")
        for workers in (1, 2):
            server = start(base / f"w{workers}", workers, cache)
            try:
                if workers == 1:
                    print(f"start, cache filled:          {server.startup_seconds:6.2f} s")
                # rspamd compiles its regular expressions in the background after start:
                # a first pass, not counted, scans once they are in use.
                measure(server.url, messages, 1, 1.0)
                for clients in (1, args.clients):
                    rate, latencies = measure(server.url, messages, clients, args.seconds)
                    p95 = statistics.quantiles(latencies, n=20)[-1]
                    print(
                        f"workers {workers}, clients {clients}: {rate:7.1f} scans/s"
                        f"   median {statistics.median(latencies) * 1000:5.1f} ms"
                        f"   p95 {p95 * 1000:5.1f} ms   ({len(latencies)} scans)"
                    )
            finally:
                server.close()


if __name__ == "__main__":
    main()

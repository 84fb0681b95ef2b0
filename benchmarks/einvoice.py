"""E-invoice benchmark (issue 15): filing with e-invoice reading on against off, in the same
run, and the time to read one e-invoice.

1. Filing (filing.py's set-up: the embedded default, messages stored through the real spool,
   one Filer in this process, its extraction child), alternating `[einvoice] enabled` off and
   on over the rounds, for two kinds of mail:
   - ordinary: inbound.py's ~20 KB message with a PDF that is not an e-invoice (what reading
     costs the mail that is not: a byte scan of each document);
   - Factur-X: a message carrying an EN 16931 Factur-X PDF, each a different invoice.
   Prints filed msgs/s and CPU per message (filing process + extraction child), and the ratio
   on/off of the medians.
2. `read_einvoice` alone, in this process, on a Factur-X PDF (EN 16931), a standalone CII
   and UBL XML, and a plain PDF: median µs per call.

    .venv/bin/python benchmarks/einvoice.py [--messages 600] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import free_port
from filing import file_all, spool, timed_filing
from inbound import sample_message
from pipeline import ADDRESSES, counts, senders_dns
from sqlalchemy import func, select

from gateway.app import Gateway
from gateway.clock import SystemClock
from gateway.einvoice.reader import read_einvoice
from gateway.logs import configure_logging
from gateway.storage.accounts import set_company
from gateway.storage.models import Document
from tests.conftest import seeded_gateway, write_config
from tests.einvoice_samples import BUYER_SIREN, cii_xml, facturx_pdf, ubl_xml
from tests.support import message, pdf

WARMUP = 50
MAX_XML_BYTES = 8 * 1024 * 1024


def facturx_message(i: int) -> bytes:
    """A message with a Factur-X PDF, invoice number i (each a different invoice)."""
    invoice = facturx_pdf(number=f"F-BENCH-{i:06d}")
    return message(
        to=ADDRESSES[0],
        subject=f"Facture {i}",
        body=f"Bonjour,\nfacture {i} ci-jointe.\n",
        attachments=[(f"facture-{i}.pdf", "application/pdf", invoice)],
    )


def fill(gw: Gateway, contents: list[bytes]) -> None:
    spool(gw, [(ADDRESSES[0], content) for content in contents])


def one_round(
    home: Path, dns_port: int, messages: list[bytes], enabled: bool, invoices_expected: bool
) -> tuple[float, float, float]:
    """(filed msgs/s, filing process CPU ms per message, extraction child's)."""
    config = write_config(
        home,
        f"sqlite:///{home / 'gateway.db'}",
        smtp={"host": "127.0.0.1", "port": free_port(), "hostname": "mx.welyb.test"},
        trust={"nameservers": ["127.0.0.1"], "dns_port": dns_port},
        einvoice={"enabled": enabled},
    )
    gw = seeded_gateway(config, SystemClock())  # type: ignore[arg-type]
    set_company(gw.db, "dupont-maconnerie", siren=BUYER_SIREN)
    filer = gw.filer("bench-filer")
    try:
        fill(gw, messages[:WARMUP])
        file_all(filer)
        fill(gw, messages[WARMUP:])
        elapsed, cpu, children = timed_filing(filer)
        _, waiting, filed = counts(gw.db.engine)
        with gw.db.read() as s:
            documents = s.scalar(select(func.count()).select_from(Document))
            invoices = s.scalar(select(func.count(Document.invoice_key)))
        if filed != len(messages) or documents != len(messages):
            raise SystemExit(f"{filed} filed ({waiting} waiting), {documents} documents")
        if (invoices == documents) != (enabled and invoices_expected):
            raise SystemExit(f"{invoices} of {documents} documents filed as e-invoices")
    finally:
        gw.db.dispose()
    n = len(messages) - WARMUP
    return n / elapsed, cpu * 1000 / n, children * 1000 / n


def filing(dns_port: int, kind: str, make: Callable[[int], bytes], n: int, rounds: int) -> None:
    invoices_expected = make is facturx_message
    messages = [make(i) for i in range(WARMUP + n)]
    size = statistics.mean(len(m) for m in messages[:20]) / 1024
    print(f"\n{kind}: {n} messages of {size:.1f} KB")
    print(f"{'round':<6} {'einvoice':<9} {'filed/s':>8} {'cpu ms/msg':>11} {'child ms/msg':>13}")
    results: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
    for r in range(1, rounds + 1):
        for enabled in (False, True):
            with tempfile.TemporaryDirectory(prefix="bench-einvoice-") as home:
                rate, cpu, child = one_round(
                    Path(home), dns_port, messages, enabled, invoices_expected
                )
            results[enabled].append((rate, cpu, child))
            on = "on" if enabled else "off"
            print(f"{r:<6} {on:<9} {rate:>8.0f} {cpu:>11.2f} {child:>13.2f}", flush=True)
    medians = {
        enabled: [statistics.median(c) for c in zip(*rows, strict=True)]
        for enabled, rows in results.items()
    }
    off, on = medians[False], medians[True]
    print(
        f"median filed/s: off {off[0]:.0f}, on {on[0]:.0f} (ratio {on[0] / off[0]:.2f}); "
        f"CPU ms/msg off {off[1] + off[2]:.2f}, on {on[1] + on[2]:.2f}"
    )


def reading() -> None:
    samples = {
        "Factur-X PDF (EN 16931)": ("facture.pdf", "application/pdf", facturx_pdf()),
        "CII XML": ("facture.xml", "application/xml", cii_xml()),
        "UBL XML": ("facture.xml", "application/xml", ubl_xml()),
        "plain PDF, not an e-invoice": ("scan.pdf", "application/pdf", pdf("scan") * 40),
    }
    print("\nread_einvoice, in-process, median of 200 calls")
    for name, (filename, media_type, content) in samples.items():
        read_einvoice(filename, media_type, content, max_xml_bytes=MAX_XML_BYTES)  # warm
        times = []
        for _ in range(200):
            began = time.perf_counter()
            read_einvoice(filename, media_type, content, max_xml_bytes=MAX_XML_BYTES)
            times.append(time.perf_counter() - began)
        median = statistics.median(times) * 1e6
        print(f"  {name:<30} {len(content) / 1024:>6.1f} KB {median:>9.0f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging("warning", node="bench", role="filing")
    print(
        f"one Filer in-process, SQLite + local folder, {args.rounds} rounds alternating "
        f"e-invoice reading off/on, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
    )
    reading()
    with contextlib.ExitStack() as stack:
        dns_port = stack.enter_context(senders_dns())
        ordinary = "ordinary mail (PDF, not an e-invoice)"
        filing(dns_port, ordinary, sample_message, args.messages, args.rounds)
        filing(dns_port, "Factur-X mail", facturx_message, args.messages, args.rounds)


if __name__ == "__main__":
    main()

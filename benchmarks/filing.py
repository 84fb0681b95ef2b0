"""Filing benchmark (issue 14): the filing stage alone, on the embedded default (SQLite + local
folder), so that its cost per message can be followed apart from the SMTP side.

N messages of ~20 KB with a PDF (inbound.py's) from fournisseur@example.org, to pipeline.py's
collection addresses, are stored through the real spool (SpoolWriter, batches of 50, as the
SMTP server's group commit does); then one Filer, in this process, files them all. The DNS
server on loopback publishes the senders' domain (pipeline.py's SENDERS_ZONE: SPF, DMARC,
SOA). A warm-up of 100 messages is filed first (folders created, extraction child started).

Prints msgs/s and CPU per message: this process (time.process_time: parsing, checks, SQLite)
and the extraction child (from /proc: it is forked by a fork server, so RUSAGE_CHILDREN
never sees it), started before the clock does: a child's start-up (~1.5 s of CPU: it imports
the main module again) is paid once per worker, not per message.
Each round checks that every message ended `filed` with one document.

    .venv/bin/python benchmarks/filing.py [--messages 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import free_port
from inbound import sample_message
from pipeline import ADDRESSES, counts, gateway_config, senders_dns
from sqlalchemy import func, select

from gateway.app import Gateway
from gateway.clock import SystemClock
from gateway.inbound.filing import Filer
from gateway.inbound.spool import Arrival, SpoolWriter, new_queue_id
from gateway.logs import configure_logging
from gateway.storage.models import Document
from tests.conftest import seeded_gateway

WARMUP = 100
SPOOL_BATCH = 50


def fill(gw: Gateway, first: int, n: int) -> None:
    """Store messages first..first+n through the spool, as the SMTP server does."""
    spool(gw, [(ADDRESSES[i % len(ADDRESSES)], sample_message(i)) for i in range(first, first + n)])


def spool(gw: Gateway, messages: list[tuple[str, bytes]]) -> None:
    """Store (recipient, content) messages through the spool, in batches of SPOOL_BATCH."""
    writer = SpoolWriter(gw.db, gw.segments("bench"))
    try:
        for start in range(0, len(messages), SPOOL_BATCH):
            writer.store_batch(
                [
                    Arrival(
                        queue_id=new_queue_id(),
                        source="smtp",
                        received_at=gw.clock.now(),
                        mail_from="fournisseur@example.org",
                        rcpt_tos=[rcpt],
                        content=content,
                        peer="127.0.0.1",
                        helo="client.example.org",
                    )
                    for rcpt, content in messages[start : start + SPOOL_BATCH]
                ]
            )
    finally:
        writer.close()


def file_all(filer: Filer) -> None:
    while filer.run_once():
        pass


def children_cpu() -> float:
    """CPU seconds of this process's live multiprocessing children (the extraction child,
    forked by a fork server, so never counted in RUSAGE_CHILDREN): from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for child in multiprocessing.active_children():
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def timed_filing(filer: Filer) -> tuple[float, float, float]:
    """File everything waiting: (seconds, this process's CPU seconds, the extraction
    child's), the child started before the clock (its start-up is not per message)."""
    filer.sandbox.close()  # a fresh child: its CPU is all this round's
    filer.sandbox.extract(sample_message(0))
    started_children = children_cpu()
    cpu = time.process_time()
    began = time.perf_counter()
    file_all(filer)
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu
    children = children_cpu() - started_children
    filer.sandbox.close()
    return elapsed, cpu, children


def one_round(home: Path, dns_port: int, n: int) -> tuple[float, float, float]:
    """(msgs/s, this process's CPU ms per message, the extraction child's)."""
    config = gateway_config(home, free_port(), None, None, dns_port)
    gw = seeded_gateway(config, SystemClock())  # type: ignore[arg-type]
    filer = gw.filer("bench-filer")
    try:
        fill(gw, 0, WARMUP)
        file_all(filer)
        fill(gw, WARMUP, n)
        elapsed, cpu, children = timed_filing(filer)
        total, waiting, filed = counts(gw.db.engine)
        with gw.db.read() as s:
            documents = s.scalar(select(func.count()).select_from(Document))
        if filed != WARMUP + n or documents != WARMUP + n:
            raise SystemExit(f"{filed} of {total} filed ({waiting} waiting), {documents} docs")
    finally:
        gw.db.dispose()
    return n / elapsed, cpu * 1000 / n, children * 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging("warning", node="bench", role="filing")
    print(
        f"{args.messages} messages, one Filer in-process, SQLite + local folder, "
        f"{args.rounds} rounds, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"{'round':<6} {'filed/s':>8} {'cpu ms/msg':>11} {'child ms/msg':>13} {'total':>7}")
    rows: list[tuple[float, float, float]] = []
    with contextlib.ExitStack() as stack:
        dns_port = stack.enter_context(senders_dns())
        for r in range(1, args.rounds + 1):
            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-filing-")))
            rate, cpu, child = one_round(home, dns_port, args.messages)
            rows.append((rate, cpu, child))
            print(
                f"{r:<6} {rate:>8.0f} {cpu:>11.2f} {child:>13.2f} {cpu + child:>7.2f}", flush=True
            )
    rate, cpu, child = (statistics.median(column) for column in zip(*rows, strict=True))
    print(
        f"median: {rate:.0f} msgs/s filed; CPU {cpu + child:.2f} ms per message "
        f"({cpu:.2f} filing process + {child:.2f} extraction child)"
    )


if __name__ == "__main__":
    main()

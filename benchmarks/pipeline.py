"""Pipeline benchmark (issue 14): end to end, from the first send to the last message filed,
against a bare aiosmtpd server's rate measured in the same run.

Each round sends N messages of ~20 KB (a PDF attached, benchmarks/inbound.py's) from C
concurrent connections, to the collection addresses of a few companies (journals and the
bare company address, in turn):
  1. to a bare aiosmtpd server that answers 250 and keeps nothing: its msgs/s;
  2. to a real `gateway serve` process (SQLite + local folder, the embedded default; or
     PostgreSQL with `--database-url`) with its filing workers as configured: the msgs/s of
     acceptance (first send to last 250) and end to end (first send until the database says
     every message has left `received`/`filing`), both as ratios to the bare rate, and
     the CPU the gateway's processes (serve, its workers, their extraction children) spent
     a message over that time: the figure to compare changes by on a noisy machine.
A warm-up (200 messages, filed) comes first in each round. Authentication asks a DNS server
on loopback (never this machine's resolver) that publishes the senders' domain as real
senders do: an SPF record naming the client's address, a DMARC record and an SOA, with TTLs.
Every round checks that each message ended `filed` and that N documents were filed.

    .venv/bin/python benchmarks/pipeline.py [--messages 1200] [--connections 20] [--rounds 2]
        [--workers N] [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
        [--s3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import free_port, install_loop, object_store, tree_cpu_seconds
from inbound import measure_bare, run_load, sample_message, serving
from sqlalchemy import Engine, create_engine, text

from gateway.clock import SystemClock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: tests.* is reached from the repo root

from tests.conftest import seeded_gateway, write_config  # noqa: E402
from tests.dns_server import DnsServer  # noqa: E402

# The companies tests/conftest.py's seeded_gateway adds, through several of their addresses.
ADDRESSES = [
    "compta+dupont-maconnerie@welyb.fr",
    "achats+boulangerie-martin@welyb.fr",
    "ventes+dupont-maconnerie@welyb.com",
    "boulangerie-martin@welyb.fr",
    "banque+dupont-maconnerie@welyb.fr",
]
WARMUP = 200
TARGET = 0.5
# The senders' domain (inbound.py's messages come from fournisseur@example.org over
# loopback) as real senders publish it; an hour's TTL, as is common for these records.
SENDERS_ZONE = {
    ("example.org", "SOA"): ["ns.example.org. hostmaster.example.org. 1 7200 900 1209600 3600"],
    ("example.org", "TXT"): ["v=spf1 ip4:127.0.0.0/8 -all"],
    ("_dmarc.example.org", "TXT"): ["v=DMARC1; p=none; rua=mailto:dmarc@example.org"],
}
SENDERS_TTL = 3600


@contextlib.contextmanager
def senders_dns() -> Iterator[int]:
    """A DNS server on loopback publishing SENDERS_ZONE; yields its port."""
    with DnsServer(SENDERS_ZONE, ttl=SENDERS_TTL) as server:
        yield server.port


def gateway_config(
    home: Path,
    port: int,
    database_url: str | None,
    workers: int | None,
    dns_port: int,
    storage: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """The gateway.toml of the run: the embedded default (SQLite, local folder) unless a
    database URL is given, or `storage` sections (common.object_store: S3); authentication
    asks the DNS server on `dns_port`."""
    home.mkdir(parents=True, exist_ok=True)
    url = database_url or f"sqlite:///{home / 'gateway.db'}"
    filing = {} if workers is None else {"workers": workers}
    return write_config(
        home,
        url,
        smtp={"host": "127.0.0.1", "port": port, "hostname": "mx.welyb.test"},
        filing=filing,
        trust={"nameservers": ["127.0.0.1"], "dns_port": dns_port},
        **(storage or {}),
    )


def counts(engine: Engine) -> tuple[int, int, int]:
    """(messages, messages still waiting for or in filing, messages filed)."""
    with engine.connect() as c:
        row = c.execute(
            text(
                "SELECT count(*), "
                "sum(CASE WHEN status IN ('received', 'filing') THEN 1 ELSE 0 END), "
                "sum(CASE WHEN status = 'filed' THEN 1 ELSE 0 END) FROM inbound_messages"
            )
        ).one()
    return int(row[0]), int(row[1] or 0), int(row[2] or 0)


def wait_filed(engine: Engine, total: int, timeout: float = 600) -> float:
    """Until all `total` messages have left filing; the moment (perf_counter) it was seen."""
    deadline = time.monotonic() + timeout
    while True:
        seen, waiting, _ = counts(engine)
        now = time.perf_counter()
        if seen >= total and waiting == 0:
            return now
        if time.monotonic() > deadline:
            raise SystemExit(f"not filed within {timeout} s: {seen} stored, {waiting} waiting")
        time.sleep(0.01)


def one_round(
    config: Path,
    port: int,
    engine: Engine,
    sent: int,
    messages: list[bytes],
    args: argparse.Namespace,
) -> tuple[float, float, tuple[float, ...]]:
    """(acceptance msgs/s, end-to-end msgs/s, gateway CPU ms a message: all, serve, its
    workers, their extraction children) of one round."""
    n = len(messages)
    rcpts = [ADDRESSES[i % len(ADDRESSES)] for i in range(n)]
    warm = [sample_message(10_000_000 + sent + i) for i in range(WARMUP)]
    with serving(config, port) as server:
        run_load(port, warm, args.connections, rcpts=rcpts)
        wait_filed(engine, sent + WARMUP)
        cpu_before = tree_cpu_seconds(server.pid)
        began = time.perf_counter()
        accepted, _ = run_load(port, messages, args.connections, rcpts=rcpts)
        done = wait_filed(engine, sent + WARMUP + n)
        cpu_after = tree_cpu_seconds(server.pid)
    total, _, filed = counts(engine)
    if filed != total:
        raise SystemExit(f"{total - filed} of {total} messages not filed: no figures")
    per_message = [(a - b) / n * 1000 for a, b in zip(cpu_after, cpu_before, strict=True)]
    return n / accepted, n / (done - began), (sum(per_message), *per_message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1200)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, help="filing.workers (default: the default)")
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server (its own database is created there and dropped at the end)",
    )
    parser.add_argument(
        "--s3",
        action="store_true",
        help="documents and raw mail in a real S3 server (rclone serve s3 on loopback)",
    )
    args = parser.parse_args()
    loop = install_loop()
    size = statistics.mean(len(sample_message(i)) for i in range(10))
    print(
        f"{args.messages} messages of {size / 1024:.1f} KB, {args.connections} connections, "
        f"{len(ADDRESSES)} addresses, {args.rounds} rounds, event loop {loop}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'round':<6} {'bare/s':>8} {'accepted/s':>11} {'ratio':>6} {'filed/s':>8} {'ratio':>6}"
        f" {'CPU ms/msg':>11} {'(serve':>6} {'workers':>7} {'extraction)':>11}"
    )
    bare_rates: list[float] = []
    accepted_rates: list[float] = []
    filed_rates: list[float] = []
    cpu_costs: list[tuple[float, ...]] = []
    with contextlib.ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-pipeline-")))
        url = None
        if args.database_url:
            from api_pagination import own_database

            url = stack.enter_context(own_database(args.database_url))
        storage = stack.enter_context(object_store(home)) if args.s3 else None
        port = free_port()
        dns_port = stack.enter_context(senders_dns())
        config = gateway_config(home, port, url, args.workers, dns_port, storage)
        seeded_gateway(config, SystemClock())  # type: ignore[arg-type].db.dispose()
        engine = create_engine(url or f"sqlite:///{home / 'gateway.db'}")
        stack.callback(engine.dispose)
        sent = 0
        for r in range(1, args.rounds + 1):
            messages = [sample_message(sent + i) for i in range(args.messages)]
            rcpts = [ADDRESSES[i % len(ADDRESSES)] for i in range(len(messages))]
            elapsed, _ = measure_bare(messages, args.connections, rcpts=rcpts)
            bare = len(messages) / elapsed
            accepted, filed, cpu = one_round(config, port, engine, sent, messages, args)
            sent += WARMUP + len(messages)
            bare_rates.append(bare)
            accepted_rates.append(accepted)
            filed_rates.append(filed)
            cpu_costs.append(cpu)
            print(
                f"{r:<6} {bare:>8.0f} {accepted:>11.0f} {accepted / bare:>6.2f} {filed:>8.0f} "
                f"{filed / bare:>6.2f} {cpu[0]:>11.2f} {cpu[1]:>6.2f} {cpu[2]:>7.2f} "
                f"{cpu[3]:>11.2f}",
                flush=True,
            )
    bare = statistics.median(bare_rates)
    ratio = statistics.median(f / b for f, b in zip(filed_rates, bare_rates, strict=True))
    accepted_ratio = statistics.median(
        a / b for a, b in zip(accepted_rates, bare_rates, strict=True)
    )
    verdict = "meets" if ratio >= TARGET else "BELOW"
    print(
        f"median: bare aiosmtpd {bare:.0f} msgs/s; gateway accepted "
        f"{statistics.median(accepted_rates):.0f} msgs/s (ratio {accepted_ratio:.2f}), filed end "
        f"to end {statistics.median(filed_rates):.0f} msgs/s (ratio {ratio:.2f}, {verdict} the "
        f"{TARGET:.2f} target) on {'PostgreSQL' if url else 'SQLite'}"
        f"{' + S3' if args.s3 else ' + local folder'}; the gateway's processes spent "
        f"{statistics.median(c[0] for c in cpu_costs):.2f} ms of CPU a message (serve "
        f"{statistics.median(c[1] for c in cpu_costs):.2f}, workers "
        f"{statistics.median(c[2] for c in cpu_costs):.2f}, extraction children "
        f"{statistics.median(c[3] for c in cpu_costs):.2f})"
    )


if __name__ == "__main__":
    main()

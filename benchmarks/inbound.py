"""Inbound benchmark: the durable gateway against a bare aiosmtpd server, in one run.

Sends N messages of ~20 KB (a PDF attachment) from C concurrent connections to
  1. a bare aiosmtpd server whose handler only answers 250 (keeps nothing), and
  2. `gateway serve` on its embedded default (SQLite + local spool) with its filing worker
     running alongside, as deployed, and
  3. the same with filing deferred (`filing.workers = 0`: acceptance alone),
each in its own process, on the same event loop implementation (uvloop when installed),
alternating over several rounds, and prints msgs/s, p50/p99 acknowledgement latency and
the ratio of the medians gateway/bare. Target: ratio >= 0.8.

    .venv/bin/python benchmarks/inbound.py [--messages 3000] [--connections 20] [--rounds 3]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--s3]

With --database-url and --s3 the gateways store raw mail as stateless nodes do (issue 14: one
S3 object per group commit, rows in PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
from common import ROOT, free_port, install_loop, object_store, wait_port
from sqlalchemy import create_engine, text

RCPT = "compta+dupont-maconnerie@welyb.fr"


def sample_message(i: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "fournisseur@example.org"
    msg["To"] = RCPT
    msg["Subject"] = f"Facture {i}"
    msg["Message-ID"] = f"<bench-{i}-{os.getpid()}@example.org>"
    msg.set_content("Bonjour,\nveuillez trouver la facture ci-jointe.\n")
    pdf = b"%PDF-1.4\n%bench " + str(i).encode() + b"\n" + os.urandom(14_000) + b"\n%%EOF\n"
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=f"facture-{i}.pdf")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


async def load(
    port: int,
    messages: list[bytes],
    connections: int,
    mail_from: str = "fournisseur@example.org",
    from_data: bool = False,
    rcpts: list[str] | None = None,
) -> tuple[float, list[float]]:
    """Send every message (the i-th to `rcpts[i]`, else to RCPT); returns (elapsed seconds,
    acknowledgement latencies in s): from MAIL to the 250 after the data, or with
    `from_data` from the DATA command to that 250."""
    queue: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue()
    for i, m in enumerate(messages):
        queue.put_nowait((m, rcpts[i] if rcpts else RCPT))
    latencies: list[float] = []

    async def client() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
        await smtp.connect()
        try:
            while True:
                try:
                    data, rcpt = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                if from_data:  # each step raises on a refusal
                    await smtp.mail(mail_from)
                    await smtp.rcpt(rcpt)
                    started = time.perf_counter()
                    await smtp.data(data)
                else:
                    # aiosmtplib raises on any refusal; a refused recipient shows in `errors`.
                    errors, _ = await smtp.sendmail(mail_from, [rcpt], data)
                    if errors:
                        raise RuntimeError(f"not accepted: {errors}")
                latencies.append(time.perf_counter() - started)
        finally:
            with contextlib.suppress(Exception):
                await smtp.quit()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    return time.perf_counter() - started, latencies


def run_load(
    port: int, messages: list[bytes], connections: int, **options: Any
) -> tuple[float, list[float]]:
    """`load` on a fresh event loop; `options`: its mail_from, from_data and rcpts."""
    install_loop()
    return asyncio.run(load(port, messages, connections, **options))


def bare_server(port: int) -> None:
    """A bare aiosmtpd server: answers 250 to everything, keeps nothing."""
    loop_name = install_loop()
    import logging

    from aiosmtpd.smtp import SMTP

    logging.getLogger("mail.log").setLevel(logging.WARNING)

    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 OK"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(Handler(), hostname="bare", data_size_limit=25 * 1024 * 1024),
            "127.0.0.1",
            port,
        )
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        print(f"bare aiosmtpd on {port} ({loop_name})", file=sys.stderr, flush=True)
        await stop.wait()
        server.close()

    asyncio.run(main())


def report(round_: int, name: str, n: int, elapsed: float, latencies: list[float]) -> float:
    rate = n / elapsed
    q = statistics.quantiles(latencies, n=100)
    print(
        f"{round_:<6} {name:<32} {n:>6} {elapsed:>7.2f} {rate:>8.0f} {q[49] * 1000:>8.1f} "
        f"{q[98] * 1000:>8.1f}",
        flush=True,
    )
    return rate


def gateway(*args: str, config: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "gateway", *args, "-c", str(config)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def measure_bare(
    messages: list[bytes], connections: int, **options: Any
) -> tuple[float, list[float]]:
    port = free_port()
    bare = subprocess.Popen(
        [sys.executable, __file__, "--bare-server", str(port)], stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port)
        run_load(port, messages[:200], connections, **options)  # warm-up
        return run_load(port, messages, connections, **options)
    finally:
        bare.terminate()
        bare.wait(10)


# Every intake limit on (the rate limits are off by default), high enough not to refuse the
# load: their bookkeeping is measured, not their refusals. No operations listener: its fixed
# port may be taken.
LIMITS_ON = {
    "GATEWAY_SMTP_CLIENT_CONNECTION_RATE_LIMIT": "1000000",
    "GATEWAY_SMTP_CLIENT_MESSAGE_RATE_LIMIT": "1000000",
    "GATEWAY_HTTP_ENABLED": "false",
}


@contextlib.contextmanager
def serving(config: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`gateway serve` on `config`, from when it listens on `port` until SIGTERM."""
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "-c", str(config)],
        stderr=subprocess.DEVNULL,
        env={**os.environ, **LIMITS_ON},
    )
    try:
        wait_port(port)
        yield server
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)


def measure_gateway(
    config: Path, port: int, messages: list[bytes], connections: int, warmup: list[bytes]
) -> tuple[float, list[float]]:
    with serving(config, port):
        run_load(port, warmup, connections)
        return run_load(port, messages, connections)


def prepare_gateway(
    home: Path,
    filing_workers: int,
    database_url: str | None = None,
    storage: dict[str, dict[str, Any]] | None = None,
) -> tuple[Path, int]:
    """`gateway init` on the embedded default, one company; returns (config, port). With a
    database URL or `storage` sections (S3), a configuration with those instead."""
    if database_url is not None or storage is not None:
        return _prepare_configured(home, filing_workers, database_url, storage or {})
    subprocess.run(
        [sys.executable, "-m", "gateway", "init", str(home)], check=True, stdout=subprocess.DEVNULL
    )
    config = home / "gateway.toml"
    port = free_port()
    text = config.read_text().replace("port = 2525", f"port = {port}")
    text = text.replace('level = "info"', 'level = "warning"')
    # Every stage's workers (filing, sending) alike, as before filing's default became 2.
    config.write_text(re.sub(r"^workers = \d+$", f"workers = {filing_workers}", text, flags=re.M))
    gateway("cabinet", "add", "aecconseil", config=config)
    gateway("company", "add", "dupont-maconnerie", "--cabinet", "aecconseil", config=config)
    return config, port


def _prepare_configured(
    home: Path, workers: int, database_url: str | None, storage: dict[str, dict[str, Any]]
) -> tuple[Path, int]:
    sys.path.insert(0, str(ROOT))
    from tests.conftest import write_config

    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = write_config(
        home,
        database_url or f"sqlite:///{home / 'gateway.db'}",
        smtp={"host": "127.0.0.1", "port": port, "hostname": "mx.welyb.test"},
        filing={"workers": workers},
        outbound={"workers": workers},
        **storage,
    )
    gateway("migrate", config=config)
    gateway("cabinet", "add", "aecconseil", config=config)
    gateway("company", "add", "dupont-maconnerie", "--cabinet", "aecconseil", config=config)
    return config, port


def count_stored(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as c:
            return int(c.execute(text("select count(*) from inbound_messages")).scalar_one())
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternate the servers this many times; medians are compared",
    )
    parser.add_argument(
        "--database-url",
        help="PostgreSQL (each gateway gets its own database there, dropped at the end)",
    )
    parser.add_argument(
        "--s3",
        action="store_true",
        help="raw mail and documents in a real S3 server (rclone serve s3 on loopback)",
    )
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        bare_server(args.bare_server)
        return

    size = statistics.mean(len(sample_message(i)) for i in range(10))
    print(
        f"{args.messages} messages of {size / 1024:.1f} KB, {args.connections} connections, "
        f"{args.rounds} rounds, event loop {install_loop()}, {os.cpu_count()} CPUs"
    )
    print(
        f"{'round':<6} {'server':<32} {'msgs':>6} {'secs':>7} {'msgs/s':>8} {'p50 ms':>8} "
        f"{'p99 ms':>8}"
    )
    arms: dict[str, list[float]] = {
        "bare aiosmtpd (250)": [],
        "gateway, filing alongside": [],
        "gateway, filing deferred": [],
    }
    sent = 0
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-bench-"))
        # As deployed: one filing worker beside the server, competing for the same CPUs as
        # this load generator. Deferred: filing.workers = 0 (filing elsewhere, or later).
        homes = {
            "gateway, filing alongside": Path(tmp, "alongside"),
            "gateway, filing deferred": Path(tmp, "deferred"),
        }
        urls = {name: f"sqlite:///{home / 'gateway.db'}" for name, home in homes.items()}
        storage = {}
        if args.database_url:
            from api_pagination import own_database

            urls = {n: stack.enter_context(own_database(args.database_url)) for n in homes}
        if args.s3:
            storage = {n: stack.enter_context(object_store(home)) for n, home in homes.items()}
        configured = bool(args.database_url or args.s3)
        gateways = {
            name: prepare_gateway(
                home,
                1 if "alongside" in name else 0,
                urls[name] if configured else None,
                storage.get(name),
            )
            for name, home in homes.items()
        }
        for r in range(1, args.rounds + 1):
            # Fresh bytes each round: the gateway files identical attachments once only.
            messages = [sample_message(sent + i) for i in range(args.messages)]
            warmup = [sample_message(sent + args.messages + i) for i in range(200)]
            sent += args.messages + len(warmup)
            for name, rates in arms.items():
                if name in gateways:
                    config, port = gateways[name]
                    result = measure_gateway(config, port, messages, args.connections, warmup)
                else:
                    result = measure_bare(messages, args.connections)
                rates.append(report(r, name, args.messages, *result))
        stored = {name: count_stored(urls[name]) for name in homes}

    bare = statistics.median(arms["bare aiosmtpd (250)"])
    where = f"{'PostgreSQL' if args.database_url else 'SQLite'} + {'S3' if args.s3 else 'folder'}"
    print(f"median msgs/s: bare aiosmtpd {bare:.0f}; gateway on {where}")
    for name in homes:
        rate = statistics.median(arms[name])
        ratio = rate / bare
        verdict = "meets" if ratio >= 0.8 else "BELOW"
        print(
            f"  {name:<28} {rate:>6.0f}  ratio {ratio:.2f} ({verdict} the 0.80 target); "
            f"stored {stored[name]} of {sent}"
        )


if __name__ == "__main__":
    main()

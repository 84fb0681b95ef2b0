"""Outbound benchmark: the gateway's DKIM-signed sending against raw aiosmtplib, in one run.

Places N documents (~20 KB PDFs, distinct bytes) in a folder switched on for MEG on the
embedded default (SQLite + local storage, `[outbound.smarthost]` pointed at a local sink),
then measures, against the same sink (a bare aiosmtpd server in its own process that
answers 250 to everything and keeps nothing):
  1. gateway: `Dispatcher.run_once(flush=True)` until nothing is left -- claim, compose,
     DKIM-sign (RSA-2048), send over one reused connection, record `sent` -- in
     documents/s, checking afterwards that every delivery of the round is `sent`;
  2. raw: the same N messages, composed unsigned before the clock starts, sent
     sequentially with aiosmtplib over one reused connection -- messages/s.
The arms alternate over several rounds (fresh documents each round) on the same event
loop (uvloop when installed); prints a table, the median ratio gateway/raw (target:
>= 0.8) and the signatures/s of `DkimSigner` against plain dkimpy (same key, message).

    .venv/bin/python benchmarks/outbound.py [--documents 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
import dkim
from common import free_port, install_loop, rate, wait_port
from sqlalchemy import func, select

from gateway.app import Gateway
from gateway.config import default_toml, load_config
from gateway.logs import configure_logging
from gateway.outbound.dispatch import Dispatcher
from gateway.outbound.dkim import (
    DkimKey,
    DkimSigner,
    KeyStore,
    dns_record_name,
    dns_txt_value,
    generate_key,
)
from gateway.storage.accounts import add_cabinet, add_company
from gateway.storage.connections import add_connection, add_document, set_switch
from gateway.storage.models import Delivery, DeliveryStatus

ROOT = Path(__file__).resolve().parent.parent
COMPANY = "dupont-maconnerie"
ACHATS = "Dossier comptable annuel/2026/Achats"
TARGET = 0.8
WARMUP = 50


@contextlib.contextmanager
def sink(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """benchmarks/inbound.py's bare aiosmtpd server (250 to everything) in its own process."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "inbound.py"), "--bare-server", str(port)],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield process
    finally:
        process.terminate()
        process.wait(10)


def sample_pdf(i: int, size: int = 20_000) -> bytes:
    """A ~20 KB PDF-looking file whose bytes differ for every `i`."""
    head = b"%PDF-1.4\n%bench " + str(i).encode() + b"\n"
    return head + os.urandom(size - len(head) - 7) + b"\n%%EOF\n"


@dataclass
class Setup:
    gateway: Gateway  # durable commits, as `gateway sender` runs
    placer: Gateway  # same database, non-durable commits: only speeds up placing documents
    files: Path
    placed: int = 0

    def place(self, n: int) -> list[int]:
        """Place `n` new documents in a switched folder; returns their delivery ids."""
        ids: list[int] = []
        p = self.placer
        for i in range(self.placed, self.placed + n):
            path = self.files / f"facture-{i}.pdf"
            path.write_bytes(sample_pdf(i))
            _, deliveries = add_document(
                p.db, p.grammar, p.blobs, COMPANY, ACHATS + "/11", path, p.clock.now()
            )
            path.unlink()
            ids += deliveries.ids
        self.placed += n
        if len(ids) != n:
            raise RuntimeError(f"{n} documents placed but {len(ids)} deliveries queued")
        return ids


def prepare(home: Path, sink_port: int) -> Setup:
    """`gateway init` equivalent (SQLite), a relay to the sink, MEG switched on, a DKIM key."""
    home.mkdir(parents=True)
    relay = f'[outbound.smarthost]\nhost = "127.0.0.1"\nport = {sink_port}\nstarttls = false\n'
    text = default_toml(home).replace('level = "info"', 'level = "warning"')
    text = text.replace("\n[extraction]", relay + "\n[extraction]")
    (home / "gateway.toml").write_text(text, encoding="utf-8")
    config = load_config(home / "gateway.toml", os.environ)
    if config.outbound.smarthost is None or config.outbound.smarthost.port != sink_port:
        raise RuntimeError("the smarthost section did not take")
    configure_logging(config.logging.level, "json", node=config.node_name, role="benchmark")
    gateway = Gateway.from_config(config)
    gateway.prepare_storage()
    placer = Gateway.from_config(config, durable_commits=False)
    now = gateway.clock.now
    add_cabinet(gateway.db, "aecconseil", "AEC Conseil", "contact@aecconseil.fr", now())
    add_company(
        gateway.db, gateway.grammar, COMPANY, "aecconseil", "Dupont Maçonnerie", "12-31", now()
    )
    add_connection(gateway.db, gateway.grammar, COMPANY, "meg", "meg+macon-dupont@welyb.fr", now())
    KeyStore(config.dkim_path).save(generate_key("welyb.fr", "bench"))
    set_switch(gateway.db, COMPANY, ACHATS, "meg", True, now(), create_folder=True)
    time.sleep(0.01)  # documents are placed strictly after the switch (R10)
    files = home / "files"
    files.mkdir()
    return Setup(gateway, placer, files)


@dataclass(frozen=True)
class Raw:
    envelope_from: str
    recipient: str
    data: bytes


def composed(dispatcher: Dispatcher, delivery_ids: list[int]) -> list[Raw]:
    """The unsigned bytes the dispatcher would compose for these (still queued) deliveries."""
    out: list[Raw] = []
    for delivery_id in delivery_ids:
        job = dispatcher.job(delivery_id)
        _, data = dispatcher.compose(job)
        out.append(Raw(dispatcher.bounces.for_delivery(delivery_id), job.recipient, data))
    return out


async def gateway_arm(dispatcher: Dispatcher) -> tuple[float, int]:
    """One flush (tries everything waiting); returns (elapsed seconds, deliveries tried)."""
    started = time.perf_counter()
    tried = await dispatcher.run_once(flush=True)
    return time.perf_counter() - started, tried


async def raw_arm(port: int, messages: list[Raw]) -> float:
    """Send each message in turn over one aiosmtplib connection; returns elapsed seconds."""
    started = time.perf_counter()
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60, start_tls=False)
    await smtp.connect()
    try:
        for m in messages:
            errors, _ = await smtp.sendmail(m.envelope_from, [m.recipient], m.data)
            if errors:
                raise RuntimeError(f"not accepted: {errors}")
        return time.perf_counter() - started
    finally:
        await smtp.quit()


def count_sent(gateway: Gateway, delivery_ids: list[int]) -> int:
    with gateway.db.read() as s:
        return int(
            s.execute(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.id.in_(delivery_ids), Delivery.status == DeliveryStatus.SENT)
            ).scalar_one()
        )


def row(round_: int, arm: str, n: int, elapsed: float, check: str) -> float:
    rate = n / elapsed
    print(f"{round_:<6} {arm:<34} {n:>6} {elapsed:>7.2f} {rate:>8.0f}  {check}", flush=True)
    return rate


# --- signer throughput ---------------------------------------------------------------------


def signer_comparison(key: DkimKey, message: bytes, seconds: float) -> tuple[float, float]:
    """(DkimSigner sig/s, dkimpy sig/s) on `message`, same key and h=; both verified."""
    records = {dns_record_name(key): dns_txt_value(key).encode()}

    def verifies(signed: bytes) -> bool:
        return bool(dkim.verify(signed, dnsfunc=lambda q, timeout=5: records.get(q.decode()[:-1])))

    signer = DkimSigner([key])
    ours = signer.sign(message, key.domain)
    header = re.sub(rb"\s+", b"", ours.split(b"\r\nFrom:", 1)[0])
    found = re.search(rb";h=([^;]+);", header)
    assert found is not None
    include = found.group(1).split(b":")

    def theirs() -> bytes:
        header = dkim.sign(
            message,
            key.selector.encode(),
            key.domain.encode(),
            key.private_key_pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=include,
        )
        return header + message

    if not (verifies(ours) and verifies(theirs())):
        raise RuntimeError("a signature does not verify")
    return (
        rate(lambda: signer.sign(message, key.domain), seconds),
        rate(theirs, seconds),
    )


# --- main ----------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, setup: Setup, port: int) -> bytes:
    """Run the rounds, print the table and the verdict; returns one composed message."""
    gw = setup.gateway
    # One dispatcher for every round, as one `gateway sender` runs for days. Warm-up,
    # untimed: first connection, signing process start, statement caches, imports.
    sender = gw.dispatcher(worker_name="bench")
    try:
        return await _rounds(args, setup, port, sender)
    finally:
        await sender.close()


async def _rounds(args: argparse.Namespace, setup: Setup, port: int, sender: Dispatcher) -> bytes:
    gw = setup.gateway
    ids = setup.place(WARMUP)
    warm = composed(sender, ids)
    await gateway_arm(sender)
    await raw_arm(port, warm)

    print(f"{'round':<6} {'arm':<34} {'docs':>6} {'secs':>7} {'docs/s':>8}  check")
    rates: dict[str, list[float]] = {"gateway": [], "raw": []}
    ratios: list[float] = []
    sample = warm[0].data
    for r in range(1, args.rounds + 1):
        ids = setup.place(args.documents)
        messages = composed(sender, ids)
        sample = messages[0].data
        # Alternate which arm goes first, so that drift favours neither.
        order = ["gateway", "raw"] if r % 2 else ["raw", "gateway"]
        got: dict[str, float] = {}
        for arm in order:
            if arm == "gateway":
                elapsed, tried = await gateway_arm(sender)
                sent = count_sent(gw, ids)
                check = f"sent {sent} of {len(ids)}" + ("" if sent == len(ids) else "  MISSING")
                if tried != len(ids):
                    check += f" (tried {tried})"
                label = "gateway (compose+DKIM+send+record)"
            else:
                elapsed = await raw_arm(port, messages)
                check = f"{len(messages)} accepted"
                label = "raw aiosmtplib, unsigned"
            got[arm] = row(r, label, args.documents, elapsed, check)
            rates[arm].append(got[arm])
        ratios.append(got["gateway"] / got["raw"])

    gateway_rate, raw_rate = statistics.median(rates["gateway"]), statistics.median(rates["raw"])
    ratio = statistics.median(ratios)
    verdict = "meets" if ratio >= TARGET else "BELOW"
    print(
        f"median: gateway {gateway_rate:.0f} docs/s, raw {raw_rate:.0f} msgs/s; "
        f"ratio gateway/raw {ratio:.2f} ({verdict} the {TARGET:.2f} target; "
        f"per round {', '.join(f'{x:.2f}' for x in ratios)})"
    )
    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=2000, help="per round")
    parser.add_argument("--rounds", type=int, default=3, help="medians over the rounds")
    parser.add_argument(
        "--sign-seconds", type=float, default=2.0, help="per signer in the signing comparison"
    )
    args = parser.parse_args()

    loop = install_loop()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="gateway-outbound-") as tmp, sink(port):
        setup = prepare(Path(tmp, "gw"), port)
        try:
            size = len(composed(setup.gateway.dispatcher(), setup.place(1))[0].data)
            # that one stays queued: the warm-up flush sends it
            print(
                f"{args.documents} documents per round ({size / 1024:.1f} KB messages), "
                f"{args.rounds} rounds, RSA-2048 DKIM, SQLite, sink: bare aiosmtpd, "
                f"event loop {loop}, {os.cpu_count()} CPUs"
            )
            sample = asyncio.run(measure(args, setup, port))
        finally:
            setup.gateway.db.dispose()
            setup.placer.db.dispose()
        key = KeyStore(setup.gateway.config.dkim_path).keys_for("welyb.fr")[0]

    ours, theirs = signer_comparison(key, sample, args.sign_seconds)
    print(
        f"signing one {len(sample) / 1024:.1f} KB message, RSA-2048: DkimSigner {ours:.0f} sig/s"
        f", dkimpy {theirs:.0f} sig/s, ratio {ours / theirs:.1f}x"
    )


if __name__ == "__main__":
    main()

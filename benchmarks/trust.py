"""Trust benchmark (issue 11): filing throughput with the checks on against off, in one run,
and the acknowledgement latency of both (the checks run after the 250, in the filing stage).

One run starts a local DNS server (tests/dns_server.py) publishing SPF (127.0.0.1), a DKIM
key and DMARC p=reject for `supplier.example`, a real clamd (tests/clamd.py) and a real
rspamd (tests/rspamd.py, on the shared Hyperscan cache), and two gateways on SQLite in
temporary folders, identical but for the checks:
  - checks ON: [clamav] and [rspamd] enabled (clamd scans the raw message and each document,
    rspamd scores the message);
  - checks OFF: both disabled.
Authentication (SPF, DKIM, DMARC, ARC against the local DNS server) runs in both: it is
always on. Each gateway runs its real SMTP server (in this process, on its own event loop
thread, as the tests do) and the real filing stage (`Gateway.filer(...).run_once()` in a
loop: one worker, as `filing.workers = 1`).

Each round, for each gateway (the order alternates between rounds):
  (a) N fresh messages of ~20 KB (a PDF attached), DKIM-signed by the domain's key, sent
      from C connections with filing idle: latency from the DATA command to its 250;
  (b) the filing stage alone (a filer opened as `gateway worker` opens it: commits not
      fsync'd) until all are filed: messages per second from the first claim to the last
      commit, the two gateways' rates compared;
  (c) N more sent while a real `gateway worker` process (idle priority) files beside the
      SMTP server, as deployed: DATA→250 latency, and messages per second from the first
      DATA to the last filed.
The same bytes go to both gateways within a round. A warm-up before the rounds also sends
EICAR (as a PDF) and GTUBE: quarantined with the checks on, filed with them off, or the run
stops; every round checks that each message was filed and DMARC passed.

Besides the rates, prints where (b)'s time went per message: recipients, authentication
(its DNS lookups, and the test DNS server's own work in them: it runs in this process),
extraction, clamd (the whole message, then the PDF), rspamd, the sender policy, blobs, the
commit. The load generator, the SMTP servers and the DNS server share this process: compare
the two gateways with each other, not with `gateway serve` alone (benchmarks/inbound.py).

    .venv/bin/python benchmarks/trust.py [--messages 300] [--rounds 2] [--connections 4]
"""

from __future__ import annotations

import argparse
import email.message
import email.utils
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import install_loop
from inbound import RCPT, run_load
from sqlalchemy import func, select

from gateway.app import Gateway
from gateway.clock import SystemClock
from gateway.inbound.filing import Filer
from gateway.logs import configure_logging
from gateway.storage.models import InboundMessage, MessageStatus

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: tests.* is reached from the repo root

from tests.authmail import Key, rsa_key, sign  # noqa: E402
from tests.clamd import EICAR, find_clamd, running_clamd  # noqa: E402
from tests.conftest import load as load_config  # noqa: E402
from tests.conftest import seeded_gateway, write_config  # noqa: E402
from tests.dns_server import DnsServer  # noqa: E402
from tests.rspamd import find_rspamd, running_rspamd, shared_hs_cache  # noqa: E402
from tests.support import RunningServer  # noqa: E402
from tests.test_trust import GTUBE  # noqa: E402

DOMAIN = "supplier.example"
SENDER = f"factures@{DOMAIN}"
AUTHSERV = "mx.welyb.test"
ON, OFF = "checks ON", "checks OFF"
WARMUP = 20
# The breakdown's rows, in the filing stage's order; indented: part of the row above.
AUTHENTICATION, DNS_LOOKUPS, DNS_ANSWERS = (
    "authentication",
    "  DNS lookups in it",
    "    test DNS server's answer",
)
RECIPIENTS, EXTRACTION, CLAMD_MESSAGE, CLAMD_PDF, RSPAMD, POLICY, BLOBS, COMMIT = (
    "recipients (SQL)",
    "extraction (sandbox)",
    "clamd, whole message",
    "clamd, the PDF",
    "rspamd scans",
    "sender policy (SQL)",
    "blobs (write, fsync)",
    "database commit",
)
LABELS = [RECIPIENTS, AUTHENTICATION, DNS_LOOKUPS, DNS_ANSWERS, EXTRACTION, CLAMD_MESSAGE]
LABELS += [CLAMD_PDF, RSPAMD, POLICY, BLOBS, COMMIT]


def invoice(serial: str, key: Key, body: str = "", attachment: bytes | None = None) -> bytes:
    """A ~20 KB invoice (a PDF attached) from the supplier, DKIM-signed by its key."""
    msg = email.message.EmailMessage()
    msg["From"] = f"Fournisseur <{SENDER}>"
    msg["To"] = RCPT
    msg["Subject"] = f"Facture {serial}"
    msg["Date"] = email.utils.formatdate(localtime=True)  # not in the future: spam points
    msg["Message-ID"] = f"<bench-{serial}-{os.getpid()}@{DOMAIN}>"
    msg.set_content(body or "Bonjour,\nveuillez trouver la facture ci-jointe.\n")
    if attachment is None:
        attachment = b"%PDF-1.4\n%" + serial.encode() + b"\n" + os.urandom(14_000) + b"\n%%EOF\n"
    msg.add_attachment(
        attachment, maintype="application", subtype="pdf", filename=f"facture-{serial}.pdf"
    )
    return sign(msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")), key, DOMAIN, "s1")


@dataclass
class Stopwatch:
    """Time spent in chosen methods of the filing stage's parts, summed per label."""

    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: Counter[str] = field(default_factory=Counter)

    def wrap(self, owner: object, method: str, label: str | Callable[[Any], str]) -> None:
        """Replace `owner.method` on this instance by a timed call of it; `label` may be
        chosen from the call's first argument."""
        inner: Callable[..., Any] = getattr(owner, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                name = label if isinstance(label, str) else label(args[0])
                self.seconds[name] += time.perf_counter() - began
                self.calls[name] += 1

        setattr(owner, method, timed)

    def clear(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def add(self, other: Stopwatch) -> None:
        for name, seconds in other.seconds.items():
            self.seconds[name] += seconds
            self.calls[name] += other.calls[name]


def timed_filer(gw: Gateway, watch: Stopwatch) -> Filer:
    filer = gw.filer("bench-filer")
    screen = filer.checkpoint.screen
    watch.wrap(screen, "authenticate", AUTHENTICATION)
    for method in ("txt", "a", "aaaa", "mx", "ptr"):
        watch.wrap(screen.lookup, method, DNS_LOOKUPS)
    watch.wrap(filer.sandbox, "extract", EXTRACTION)
    if screen.malware is not None:
        watch.wrap(screen.malware, "scan", clamd_label)
    if screen.spam is not None:
        watch.wrap(screen.spam, "score", RSPAMD)
    watch.wrap(filer, "_commit", COMMIT)
    watch.wrap(filer.recipients, "resolve", RECIPIENTS)
    watch.wrap(filer.blobs, "put", BLOBS)
    for method in ("requires_authentication", "refusal"):
        watch.wrap(filer.checkpoint.policies, method, POLICY)
    return filer


def clamd_label(content: bytes) -> str:
    """scan_all sends the raw message, then each document (here: the PDF)."""
    return CLAMD_PDF if content.startswith(b"%PDF") else CLAMD_MESSAGE


def file_everything(filer: Filer) -> tuple[int, float]:
    """Run the filing stage until nothing waits: (messages taken, seconds)."""
    began = time.perf_counter()
    total = 0
    while (n := filer.run_once()) > 0:
        total += n
    return total, time.perf_counter() - began


def statuses(gw: Gateway) -> Counter[str]:
    with gw.db.read() as s:
        rows = s.execute(
            select(InboundMessage.status, func.count()).group_by(InboundMessage.status)
        ).all()
    return Counter({str(status): int(n) for status, n in rows})


def dmarc_results(gw: Gateway) -> Counter[str]:
    with gw.db.read() as s:
        rows = s.execute(select(InboundMessage.authentication)).scalars().all()
    return Counter(str((r or {}).get("dmarc", {}).get("result")) for r in rows)


@dataclass
class Variant:
    name: str
    home: Path
    config: Path
    gw: Gateway  # the SMTP server's
    server: RunningServer
    watch: Stopwatch
    filer: Filer  # one for the run, as a worker keeps its own (and its sandbox's child)
    rates: list[float] = field(default_factory=list)  # filed/s, filing alone
    acks: list[float] = field(default_factory=list)  # DATA→250 (s), filing idle
    acks_alongside: list[float] = field(default_factory=list)  # a filing worker running
    through: list[float] = field(default_factory=list)  # msgs/s, first DATA to last filed
    filed: int = 0  # messages filed so far (EICAR and GTUBE are quarantined with checks on)

    def check(self, what: str) -> None:
        seen = statuses(self.gw)
        filed = self.filed - (2 if self.name == ON else 0)
        if seen[MessageStatus.FILED] != filed or sum(seen.values()) != self.filed:
            raise SystemExit(f"{self.name}, {what}: statuses {dict(seen)}: no figures")


@contextmanager
def variant(name: str, home: Path, zone: DnsServer, **sections: Any) -> Iterator[Variant]:
    trust = {"nameservers": ["127.0.0.1"], "dns_port": zone.port, "authserv_id": AUTHSERV}
    home.mkdir()
    config = write_config(home, f"sqlite:///{home / 'gateway.db'}", trust=trust, **sections)
    gw = seeded_gateway(config, SystemClock())  # type: ignore[arg-type]  # any Clock will do
    # As `gateway worker` opens it: filing need not fsync its commits (a lost one is redone).
    filing = Gateway.from_config(load_config(config), durable_commits=False)
    server = RunningServer(gw).start()
    watch = Stopwatch()
    try:
        yield Variant(name, home, config, gw, server, watch, timed_filer(filing, watch))
    finally:
        server.stop()
        filing.db.dispose()
        gw.db.dispose()


def warm_up(v: Variant, key: Key, connections: int) -> None:
    """Rule loading, regular expressions, the sandbox's child: paid before the rounds. And
    the proof that the checks are on (or off): EICAR and GTUBE."""
    slug = v.name.split()[-1].lower()
    mail = [invoice(f"warm-{slug}-{i}", key) for i in range(WARMUP)]
    mail.append(invoice(f"eicar-{slug}", key, attachment=EICAR))
    mail.append(invoice(f"gtube-{slug}", key, body=GTUBE + "\n"))
    run_load(v.server.port, mail, connections, mail_from=SENDER, from_data=True)
    file_everything(v.filer)
    v.watch.clear()
    v.filed = len(mail)
    v.check("warm-up")


def wait_filed(v: Variant, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while sum(statuses(v.gw).values()) != v.filed or not_done(v.gw):
        if time.monotonic() > deadline:
            raise SystemExit(f"{v.name}: not filed within {timeout} s: {dict(statuses(v.gw))}")
        time.sleep(0.02)


def not_done(gw: Gateway) -> int:
    seen = statuses(gw)
    return seen[MessageStatus.RECEIVED] + seen[MessageStatus.FILING]


@contextmanager
def filing_worker(v: Variant) -> Iterator[None]:
    """`gateway worker` on the variant's configuration, as `serve` runs it beside the SMTP
    server: its own process, at idle priority."""
    with open(v.home / "worker.log", "ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "gateway", "worker", "-c", str(v.config)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            yield
        finally:
            worker.terminate()
            worker.wait(60)


def one_round(
    v: Variant, round_: int, mail: list[bytes], more: list[bytes], args: argparse.Namespace
) -> None:
    # (a) acknowledgements, filing idle; (b) the filing stage alone.
    _, acks = run_load(v.server.port, mail, args.connections, mail_from=SENDER, from_data=True)
    args.dns_watch.clear()
    taken, seconds = file_everything(v.filer)
    v.watch.add(args.dns_watch)  # the DNS server's own work (in this process) meanwhile
    v.filed += len(mail)
    v.check("filing alone")
    if taken != len(mail):
        raise SystemExit(f"{v.name}: filed {taken} of {len(mail)}: no figures")
    # (c) acknowledgements with a filing worker running alongside, as deployed; the first
    # message waits until the worker files it (it has started), the rest are measured.
    with filing_worker(v):
        run_load(v.server.port, more[:1], 1, mail_from=SENDER)
        v.filed += 1
        wait_filed(v)
        began = time.perf_counter()
        _, alongside = run_load(
            v.server.port, more[1:], args.connections, mail_from=SENDER, from_data=True
        )
        v.filed += len(more) - 1
        wait_filed(v)
        through = (len(more) - 1) / (time.perf_counter() - began)
    v.check("filing alongside")
    v.rates.append(len(mail) / seconds)
    v.acks.extend(acks)
    v.acks_alongside.extend(alongside)
    v.through.append(through)
    print(
        f"{round_:<6} {v.name:<11} {len(mail):>5} {ms(acks, 50):>8.1f} {ms(acks, 95):>8.1f} "
        f"{seconds:>7.2f} {v.rates[-1]:>8.1f}   {ms(alongside, 50):>8.1f} "
        f"{ms(alongside, 95):>8.1f} {through:>8.1f}",
        flush=True,
    )


def ms(latencies: list[float], percentile: int) -> float:
    return statistics.quantiles(latencies, n=100)[percentile - 1] * 1000


def breakdown(variants: list[Variant], per: dict[str, int]) -> None:
    seen = {label for v in variants for label in v.watch.seconds}
    labels = [label for label in LABELS if label in seen] + sorted(seen - set(LABELS))
    print("filing stage, ms per message (all rounds; calls per message in brackets):")
    print(f"  {'':<24}" + "".join(f"{v.name:>18}" for v in variants))
    for label in labels:
        cells = []
        for v in variants:
            n = per[v.name]
            if label in v.watch.seconds:
                ms = v.watch.seconds[label] * 1000 / n
                cells.append(f"{ms:>10.2f} ({v.watch.calls[label] / n:>4.1f})")
            else:
                cells.append(f"{'-':>17}")
        print(f"  {label:<24}" + "".join(f"{c:>18}" for c in cells))
    totals = [1000 / statistics.harmonic_mean(v.rates) for v in variants]
    rest = [
        t
        - sum(s for label, s in v.watch.seconds.items() if not label.startswith(" "))
        * 1000
        / per[v.name]
        for t, v in zip(totals, variants, strict=True)
    ]
    print(f"  {'rest (spool, SQL)':<24}" + "".join(f"{t:>10.2f}{'':8}" for t in rest))
    print(f"  {'whole filing stage':<24}" + "".join(f"{t:>10.2f}{'':8}" for t in totals))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=300, help="per gateway, round, phase")
    parser.add_argument("--rounds", type=int, default=2, help="the order alternates")
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    if find_clamd() is None or find_rspamd() is None:
        raise SystemExit("clamd or rspamd not found: run scripts/setup-test-packages")
    loop = install_loop()
    configure_logging("warning", "json", node="bench", role="trust")
    key = rsa_key()
    zone = {
        (DOMAIN, "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
        (f"s1._domainkey.{DOMAIN}", "TXT"): [key.record],
        (f"_dmarc.{DOMAIN}", "TXT"): ["v=DMARC1; p=reject"],
    }
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-trust-")))
        dns = stack.enter_context(DnsServer(zone))
        args.dns_watch = Stopwatch()
        args.dns_watch.wrap(dns, "answer", DNS_ANSWERS)
        clamd = stack.enter_context(running_clamd(tmp / "clamd"))
        rspamd = stack.enter_context(running_rspamd(tmp / "rspamd", hs_cache_dir=shared_hs_cache()))
        on = stack.enter_context(
            variant(
                ON,
                tmp / "on",
                dns,
                clamav={"enabled": True, "address": clamd.address},
                rspamd={"enabled": True, "url": rspamd.url},
            )
        )
        off = stack.enter_context(variant(OFF, tmp / "off", dns))
        variants = [off, on]
        size = statistics.mean(len(invoice(str(i), key)) for i in range(10))
        print(
            f"{args.messages} messages of {size / 1024:.1f} KB (DKIM-signed, a PDF attached) per "
            f"gateway, round and phase; {args.connections} connections, {args.rounds} rounds, "
            f"event loop {loop}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
            f"clamd {clamd.address}, rspamd {rspamd.url} (1 worker), DNS 127.0.0.1:{dns.port}"
        )
        for v in variants:
            warm_up(v, key, args.connections)
        print("warm-up: EICAR and GTUBE quarantined with the checks on, filed with them off")
        print(
            f"{'':18} {'':5} {'filing idle':^17} {'filing alone':^16}   "
            f"{'a filing worker alongside':^26}"
        )
        print(
            f"{'round':<6} {'gateway':<11} {'msgs':>5} {'ack p50':>8} {'ack p95':>8} "
            f"{'file s':>7} {'filed/s':>8}   {'ack p50':>8} {'ack p95':>8} {'msgs/s':>8}"
        )
        for r in range(1, args.rounds + 1):
            # Fresh bytes each round (identical documents are filed once, clamd caches clean
            # verdicts); the same bytes to both gateways within a round.
            mail = [invoice(f"r{r}-{i}", key) for i in range(args.messages)]
            more = [invoice(f"r{r}-w{i}", key) for i in range(args.messages + 1)]
            for v in variants if r % 2 else reversed(variants):
                one_round(v, r, mail, more, args)
        dmarc = {v.name: dmarc_results(v.gw) for v in variants}
        print(f"load average at the end {os.getloadavg()[0]:.2f}")

    print(
        "ack: DATA command to its 250 (ms); filed/s: first claim to last commit, the filing "
        "stage alone;\nmsgs/s alongside: first DATA to last filed, `gateway worker` running"
    )
    for v in variants:
        print(
            f"  {v.name:<11} filed/s {statistics.median(v.rates):6.1f}  ack p50/p95 "
            f"{ms(v.acks, 50):5.1f}/{ms(v.acks, 95):5.1f} ms; alongside "
            f"{ms(v.acks_alongside, 50):5.1f}/{ms(v.acks_alongside, 95):5.1f} ms, "
            f"{statistics.median(v.through):6.1f} msgs/s;"
            f"  DMARC {dict(dmarc[v.name])}"
        )

    def ratio(f: Callable[[Variant], float]) -> str:
        return f"{f(on) / f(off):.2f}"

    print(
        f"ratios ON/OFF: filing throughput {ratio(lambda v: statistics.median(v.rates))}; "
        f"ack p50 {ratio(lambda v: ms(v.acks, 50))}, p95 {ratio(lambda v: ms(v.acks, 95))}; "
        f"alongside: ack p50 {ratio(lambda v: ms(v.acks_alongside, 50))}, "
        f"p95 {ratio(lambda v: ms(v.acks_alongside, 95))}, "
        f"msgs/s {ratio(lambda v: statistics.median(v.through))}"
    )
    breakdown(variants, {v.name: args.messages * args.rounds for v in variants})


if __name__ == "__main__":
    main()

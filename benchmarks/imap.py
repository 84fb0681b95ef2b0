"""IMAP intake benchmark: the gateway's mailbox poller against a plain imapclient FETCH, in one run.

Starts a real Dovecot (tests/dovecot.py: plain IMAP on 127.0.0.1, maildir) and, for every
arm of every round, fills its INBOX with the same N invoices (~20 KB, a PDF attachment,
`Delivered-To: compta+dupont-maconnerie@welyb.fr`, distinct bytes) by MULTIAPPEND -- not
timed -- with `Processed` emptied, then measures reading them:
  1. plain imapclient: log in, SELECT INBOX, SEARCH ALL, `FETCH BODY.PEEK[]` in batches of
     `--batch-size` UIDs keeping nothing (the byte lengths are summed), then MOVE every UID
     to `Processed` in batches too (the gateway moves them, so the fair baseline moves);
     the fetch-only rate is printed as well;
  2. gateway intake: `MailboxPoller.run(once=True)` on a fresh SQLite gateway with durable
     commits, as `gateway imap sync --once` runs -- fetch, route, store through the spool
     (one fsync + one commit per batch), record, move to `Processed` -- checking afterwards
     that every message was stored and the INBOX is empty;
  3. gateway intake + filing: the time of arm 2 plus filing every message afterwards
     (`Filer.run_once()` until nothing is left, non-durable commits as `gateway worker`),
     checking that N documents are in the company's folders: messages/s end to end.
The arms alternate over several rounds; prints a table, the medians, the median ratio
gateway intake / plain FETCH+MOVE (target: >= 0.8) and where the time went (IMAP calls
timed by a thin wrapper, the poller's routing and storing steps likewise).
`--profile` adds one cProfile'd round of arm 2 and prints its top costs.

    .venv/bin/python benchmarks/imap.py [--messages 3000] [--rounds 3] [--batch-size 50]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from imapclient import IMAPClient
from sqlalchemy import func, select

from gateway.app import Gateway
from gateway.config import ImapSourceConfig, default_toml, load_config
from gateway.inbound.imap import MailboxPoller, SyncResult, connect
from gateway.logs import configure_logging
from gateway.storage.accounts import add_cabinet, add_company
from gateway.storage.models import Document

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: tests.dovecot is reached from the repo root

from tests.dovecot import Dovecot, running_dovecot  # noqa: E402

USER = "factures@cabinet.test"
PASSWORD = "bench-Mot de passe"
RCPT = "compta+dupont-maconnerie@welyb.fr"
COMPANY = "dupont-maconnerie"
PROCESSED = "Processed"
TARGET = 0.8
APPEND_CHUNK = 200  # messages per MULTIAPPEND command when filling
WARMUP = 50

PLAIN = "plain imapclient FETCH+MOVE"
GATEWAY = "gateway intake"
FILING = "gateway intake + filing"
STORE = "gateway: store batch (spool+insert+commit)"
SETTLE = "gateway: settle (MOVE + mark settled)"
INSIDE = {"spool write+fsync": STORE, "imap MOVE": SETTLE}  # timed part -> the part holding it


def sample_message(i: int, salt: str) -> bytes:
    """A ~20 KB invoice as a mail server delivers it: Delivered-To first, a PDF attached."""
    msg = EmailMessage()
    msg["From"] = "fournisseur@example.org"
    msg["To"] = RCPT
    msg["Subject"] = f"Facture {i}"
    msg["Message-ID"] = f"<bench-{salt}-{i}@example.org>"
    msg.set_content("Bonjour,\nveuillez trouver la facture ci-jointe.\n")
    pdf = b"%PDF-1.4\n%bench " + f"{salt}-{i}".encode() + b"\n" + os.urandom(14_000) + b"\n%%EOF\n"
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=f"facture-{i}.pdf")
    raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    return b"Delivered-To: " + RCPT.encode() + b"\r\n" + raw


# -- timing the parts ---------------------------------------------------------------------------


@dataclass
class Timings:
    """Seconds spent per labelled call, summed; filled by wrapping bound methods."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def wrap(self, obj: object, name: str, label: str | Callable[..., str]) -> None:
        original: Callable[..., Any] = getattr(obj, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                key = label if isinstance(label, str) else label(*args, **kwargs)
                self.seconds[key] += time.perf_counter() - started

        setattr(obj, name, timed)

    def wrap_client(self, client: IMAPClient) -> IMAPClient:
        def fetch_label(messages: Sequence[int], data: Sequence[str], *_: Any, **__: Any) -> str:
            return "imap FETCH " + " ".join(data)

        self.wrap(client, "fetch", fetch_label)
        self.wrap(client, "move", "imap MOVE")
        for name in ("login", "select_folder", "search", "folder_exists", "create_folder"):
            self.wrap(client, name, "imap login/select/search/folders")
        return client

    def add(self, other: Timings) -> None:
        for key, value in other.seconds.items():
            self.seconds[key] += value


# -- the mailbox --------------------------------------------------------------------------------


def fill(dovecot: Dovecot, messages: list[bytes]) -> float:
    """Empty INBOX and Processed, then MULTIAPPEND `messages` to INBOX; returns seconds."""
    started = time.perf_counter()
    with dovecot.session(USER) as client:
        if client.folder_exists(PROCESSED):
            client.delete_folder(PROCESSED)
        client.select_folder("INBOX")
        left = client.search(["ALL"])
        if left:  # a failed earlier arm: start from an empty INBOX all the same
            client.delete_messages(left)
            client.expunge()
        client.unselect_folder()
        for start in range(0, len(messages), APPEND_CHUNK):
            client.multiappend("INBOX", messages[start : start + APPEND_CHUNK])
        client.select_folder("INBOX", readonly=True)
        count = len(client.search(["ALL"]))
    if count != len(messages):
        raise RuntimeError(f"INBOX holds {count} messages after filling {len(messages)}")
    return time.perf_counter() - started


def counts(dovecot: Dovecot) -> tuple[int, int]:
    """(messages in INBOX, messages in Processed)."""
    with dovecot.session(USER) as client:
        inbox = int(client.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"])
        processed = (
            int(client.folder_status(PROCESSED, [b"MESSAGES"])[b"MESSAGES"])
            if client.folder_exists(PROCESSED)
            else 0
        )
    return inbox, processed


# -- arm 1: plain imapclient ---------------------------------------------------------------------


@dataclass
class PlainResult:
    elapsed: float
    fetch_seconds: float
    messages: int
    octets: int


def plain_arm(dovecot: Dovecot, batch_size: int, timings: Timings) -> PlainResult:
    """Log in, fetch every message in batches keeping nothing, move them all to Processed."""
    started = time.perf_counter()
    client = IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=60)
    timings.wrap_client(client)
    try:
        client.login(USER, PASSWORD)
        client.select_folder("INBOX")
        uids = sorted(client.search(["ALL"]))
        octets = 0
        fetch_started = time.perf_counter()
        for start in range(0, len(uids), batch_size):
            fetched = client.fetch(uids[start : start + batch_size], ["BODY.PEEK[]"])
            octets += sum(len(data[b"BODY[]"]) for data in fetched.values())
        fetch_seconds = time.perf_counter() - fetch_started
        if not client.folder_exists(PROCESSED):
            client.create_folder(PROCESSED)
        for start in range(0, len(uids), batch_size):
            client.move(uids[start : start + batch_size], PROCESSED)
    finally:
        with contextlib.suppress(Exception):
            client.logout()
    return PlainResult(time.perf_counter() - started, fetch_seconds, len(uids), octets)


# -- arms 2 and 3: the gateway -------------------------------------------------------------------


@dataclass
class GatewayHome:
    home: Path
    gateway: Gateway  # durable commits, as `gateway imap sync` runs
    filer_gateway: Gateway  # non-durable commits, as `gateway worker` runs

    def close(self) -> None:
        self.gateway.db.dispose()
        self.filer_gateway.db.dispose()
        shutil.rmtree(self.home, ignore_errors=True)


def prepare_gateway(home: Path, dovecot: Dovecot, batch_size: int) -> GatewayHome:
    """`gateway init` equivalent (SQLite + local storage), one IMAP source, one company."""
    home.mkdir(parents=True)
    (home / "imap-password").write_text(PASSWORD, encoding="utf-8")
    source = (
        "[imap.sources.box]\n"
        f'host = "{dovecot.host}"\nport = {dovecot.port}\ntls = "none"\n'
        f'user = "{USER}"\npassword_file = "imap-password"\n'
        f'folders = ["INBOX"]\nafter = "move"\nprocessed_folder = "{PROCESSED}"\n'
        f"batch_size = {batch_size}\n"
    )
    text = default_toml(home).replace('level = "info"', 'level = "warning"')
    text = text.replace("\n[extraction]", "\n" + source + "\n[extraction]")
    (home / "gateway.toml").write_text(text, encoding="utf-8")
    config = load_config(home / "gateway.toml", os.environ)
    box = config.imap_sources.get("box")
    if box is None or box.port != dovecot.port or box.batch_size != batch_size:
        raise RuntimeError("the [imap.sources.box] section did not take")
    configure_logging(config.logging.level, "json", node=config.node_name, role="benchmark")
    gateway = Gateway.from_config(config)
    gateway.prepare_storage()
    now = gateway.clock.now
    add_cabinet(gateway.db, "aecconseil", "AEC Conseil", "contact@aecconseil.fr", now())
    add_company(
        gateway.db, gateway.grammar, COMPANY, "aecconseil", "Dupont Maçonnerie", "12-31", now()
    )
    return GatewayHome(home, gateway, Gateway.from_config(config, durable_commits=False))


def poller(gw: Gateway, timings: Timings) -> MailboxPoller:
    def connector(source: ImapSourceConfig) -> IMAPClient:
        started = time.perf_counter()
        client = connect(source)
        timings.seconds["imap login/select/search/folders"] += time.perf_counter() - started
        return timings.wrap_client(client)

    [p] = gw.imap_pollers(gw.config.imap_sources["box"], threading.Event(), connector)
    timings.wrap(p, "_route", "gateway: parse headers, route, hash")
    timings.wrap(p, "_store", STORE)
    timings.wrap(p.spool, "_append", "spool write+fsync")
    timings.wrap(p, "_settle", SETTLE)
    return p


@dataclass
class GatewayResult:
    intake: float
    filing: float
    result: SyncResult


def gateway_arm(
    home: GatewayHome, dovecot: Dovecot, n: int, timings: Timings, profile: Path | None = None
) -> GatewayResult:
    p = poller(home.gateway, timings)
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    result = p.run(once=True)
    if profiler is not None:
        profiler.disable()
    intake = time.perf_counter() - started
    if profiler is not None and profile is not None:
        profiler.dump_stats(profile)
    # A broken run must not print a good figure.
    assert result.stored == n and result.taken == n and not result.errors, result
    inbox, processed = counts(dovecot)
    assert (inbox, processed) == (0, n), f"INBOX {inbox}, {PROCESSED} {processed}, of {n}"

    filer = home.filer_gateway.filer("bench-filer")
    started = time.perf_counter()
    filed = 0
    while (k := filer.run_once()) > 0:
        filed += k
    filing = time.perf_counter() - started
    with home.gateway.db.read() as s:
        documents = int(s.execute(select(func.count()).select_from(Document)).scalar_one())
    assert filed == n and documents == n, f"filed {filed} messages, {documents} documents of {n}"
    return GatewayResult(intake, filing, result)


# -- reporting ----------------------------------------------------------------------------------


def row(round_: int, arm: str, n: int, elapsed: float, check: str) -> float:
    rate = n / elapsed
    print(f"{round_:<6} {arm:<30} {n:>6} {elapsed:>7.2f} {rate:>8.0f}  {check}", flush=True)
    return rate


def breakdown(name: str, timings: Timings, total: float, n: int) -> None:
    """Seconds per timed part; a part inside another is shown under it, counted once."""
    print(f"  {name}: {total:.2f} s over all rounds, {total / n * 1e6:.0f} µs/msg")

    def line(label: str, seconds: float) -> None:
        print(
            f"    {label:<46} {seconds:>7.2f} s {seconds / total:>6.1%} "
            f"{seconds / n * 1e6:>6.0f} µs"
        )

    spent = timings.seconds
    inner = {
        child: parent for child, parent in INSIDE.items() if child in spent and parent in spent
    }
    for key in sorted((k for k in spent if k not in inner), key=lambda k: -spent[k]):
        line(key, spent[key])
        for child in (c for c, parent in inner.items() if parent == key):
            line(f"  of which {child}", spent[child])
    other = total - sum(seconds for key, seconds in spent.items() if key not in inner)
    line("other (outside the timed calls)", other)


def print_profile(path: Path, top: int) -> None:
    for order in ("tottime", "cumulative"):
        print(f"--- cProfile of one gateway intake round, top {top} by {order} ---")
        pstats.Stats(str(path)).strip_dirs().sort_stats(order).print_stats(top)


# -- main ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace, dovecot: Dovecot, tmp: Path) -> None:
    homes = 0

    def fresh_home() -> GatewayHome:
        nonlocal homes
        homes += 1
        return prepare_gateway(tmp / f"gw-{homes}", dovecot, args.batch_size)

    # Warm-up, untimed: imports, first connections, Dovecot's indexes.
    warm = [sample_message(i, "warm") for i in range(WARMUP)]
    fill(dovecot, warm)
    plain_arm(dovecot, args.batch_size, Timings())
    fill(dovecot, warm)
    home = fresh_home()
    gateway_arm(home, dovecot, WARMUP, Timings())
    home.close()

    print(f"{'round':<6} {'arm':<30} {'msgs':>6} {'secs':>7} {'msgs/s':>8}  check")
    rates: dict[str, list[float]] = {PLAIN: [], GATEWAY: [], FILING: [], "fetch only": []}
    ratios: list[float] = []
    timings = {PLAIN: Timings(), GATEWAY: Timings()}
    totals = {PLAIN: 0.0, GATEWAY: 0.0}
    fills: list[float] = []
    n = args.messages
    for r in range(1, args.rounds + 1):
        messages = [sample_message(i, f"r{r}") for i in range(n)]
        got: dict[str, float] = {}
        # Alternate which arm goes first, so that drift favours neither.
        for arm in [PLAIN, GATEWAY] if r % 2 else [GATEWAY, PLAIN]:
            fills.append(fill(dovecot, messages))
            t = Timings()
            if arm == PLAIN:
                plain = plain_arm(dovecot, args.batch_size, t)
                inbox, processed = counts(dovecot)
                assert plain.messages == n and (inbox, processed) == (0, n), (plain, inbox)
                got[PLAIN] = row(r, PLAIN, n, plain.elapsed, f"{plain.octets / n:.0f} B/msg")
                rates["fetch only"].append(n / plain.fetch_seconds)
                row(r, "  plain FETCH only", n, plain.fetch_seconds, "")
                totals[PLAIN] += plain.elapsed
            else:
                home = fresh_home()
                try:
                    g = gateway_arm(home, dovecot, n, t)
                finally:
                    home.close()
                check = f"stored {g.result.stored}, moved {g.result.settled}, filed {n}"
                got[GATEWAY] = row(r, GATEWAY, n, g.intake, check)
                rates[FILING].append(
                    row(r, FILING, n, g.intake + g.filing, f"filing alone {n / g.filing:.0f}/s")
                )
                totals[GATEWAY] += g.intake
            rates[arm].append(got[arm])
            timings[arm].add(t)
        ratios.append(got[GATEWAY] / got[PLAIN])

    median = {arm: statistics.median(values) for arm, values in rates.items()}
    ratio = statistics.median(ratios)
    verdict = "meets" if ratio >= TARGET else "below"
    print(
        f"median msgs/s: {PLAIN} {median[PLAIN]:.0f} (FETCH only {median['fetch only']:.0f}), "
        f"{GATEWAY} {median[GATEWAY]:.0f}, {FILING} {median[FILING]:.0f}"
    )
    print(
        f"ratio {GATEWAY} / {PLAIN}: {ratio:.2f} ({verdict} the {TARGET:.2f} target; per round "
        f"{', '.join(f'{x:.2f}' for x in ratios)}); end to end with filing: "
        f"{median[FILING] / median[PLAIN]:.2f}"
    )
    fill_median = statistics.median(fills)
    print(f"(filling the INBOX by MULTIAPPEND, not timed above: median {fill_median:.2f} s)")
    print("where the time goes:")
    for arm in (PLAIN, GATEWAY):
        breakdown(arm, timings[arm], totals[arm], n * args.rounds)

    if args.profile:
        fill(dovecot, [sample_message(i, "profile") for i in range(n)])
        home = fresh_home()
        path = tmp / "intake.prof"
        try:
            g = gateway_arm(home, dovecot, n, Timings(), profile=path)
        finally:
            home.close()
        print(f"profiled round: {n / g.intake:.0f} msgs/s under cProfile")
        print_profile(path, args.profile_top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000, help="per round")
    parser.add_argument("--rounds", type=int, default=3, help="medians over the rounds")
    parser.add_argument(
        "--batch-size", type=int, default=50, help="UIDs per FETCH/MOVE, both arms (gateway: 50)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="then cProfile one more gateway intake round"
    )
    parser.add_argument("--profile-top", type=int, default=25, help=argparse.SUPPRESS)
    args = parser.parse_args()

    size = statistics.mean(len(sample_message(i, "size")) for i in range(10))
    with (
        tempfile.TemporaryDirectory(prefix="gateway-imap-") as tmp,
        running_dovecot(Path(tmp), {USER: PASSWORD}) as dovecot,
    ):
        version = ".".join(map(str, dovecot.version))
        print(
            f"{args.messages} messages of {size / 1024:.1f} KB per round, {args.rounds} "
            f"rounds, batches of {args.batch_size}, Dovecot {version} (maildir, "
            f"127.0.0.1, no TLS), SQLite, {os.cpu_count()} CPUs"
        )
        run(args, dovecot, Path(tmp))


if __name__ == "__main__":
    main()

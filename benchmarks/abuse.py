"""Abuse benchmark (issue 10's closing figures): `gateway serve` as deployed (SQLite, every
intake limit at its default, no operations listener, no filing worker: only intake is
measured), each figure against its baseline measured in the same run:

  a. a normal message's acknowledgement latency (connect to the 250 after DATA, one message
     at a time, from 127.0.0.2) while one other client (127.0.0.1) floods, against the same
     with no flood. Two floods, as real ones come:
       - harvest: 60 connection loops at once (over the per-client limit of 50), each
         EHLO, MAIL, then 50 pipelined RCPTs to made-up companies; reconnects at once
         when refused, closed, or slowed down past 2 s by the error delay;
       - bulk: 20 connections sending 1 MB messages back to back, accepted.
  b. how long 2,000 connect-and-close probes (TCP connect then close, no SMTP, from one
     address, back to back) take to leave no trace: from the first probe until the server
     holds no socket for them (/proc/net/tcp: none but the listener and TIME-WAIT, which
     holds no descriptor) and its descriptor count is back to idle; baseline: the same
     against a bare aiosmtpd server (benchmarks/inbound.py's).
  c. the serve process's resident memory (serve alone: it has no child with no filing
     worker) while 32 clients send a 25 MB message each at once: its peak (VmHWM, the
     process started for this figure alone) and after they leave (5 s), against idle.

    .venv/bin/python benchmarks/abuse.py [--messages 50]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import inbound
from common import free_port, install_loop, wait_port
from inbound import RCPT, prepare_gateway, sample_message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: tests.* is reached from the repo root

from tests.processes import connections_to  # noqa: E402

NORMAL_SENDER = "127.0.0.2"  # Linux routes all of 127/8 to lo: a second client address
FLOODER = "127.0.0.1"
TIME_WAIT = "06"  # /proc/net/tcp state: kernel-only, no descriptor, no session
# Defaults as shipped (rate limits off, as in Postfix); only the operations listener is off:
# its fixed port may be taken.
AS_DEPLOYED = {"GATEWAY_HTTP_ENABLED": "false"}


# --- the server and what /proc says about it ---------------------------------------------


@contextlib.contextmanager
def gateway_serving(config: Path, port: int, log: Path) -> Iterator[int]:
    """A fresh `gateway serve` listening on `port`; yields its pid. Its log goes to `log`."""
    with open(log, "ab") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "-c", str(config)],
            stderr=out,
            env={**os.environ, **AS_DEPLOYED},
        )
    try:
        wait_port(port)
        time.sleep(0.5)  # settled: wait_port's own probe is gone
        yield server.pid
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(120)


@contextlib.contextmanager
def bare_serving(port: int) -> Iterator[int]:
    bare = subprocess.Popen(
        [sys.executable, inbound.__file__, "--bare-server", str(port)], stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port)
        time.sleep(0.5)
        yield bare.pid
    finally:
        bare.terminate()
        bare.wait(10)


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def held_sockets(port: int) -> int:
    """Server-side sockets on `port` that a process still holds (TIME-WAIT left out)."""
    return sum(1 for state in connections_to(port) if state != TIME_WAIT)


# --- messages and raw SMTP ---------------------------------------------------------------


def text_body(size: int) -> bytes:
    """`size` bytes of base64 lines (76 characters, CRLF): no line starts with a dot."""
    raw = base64.encodebytes(os.urandom(size * 3 // 4 + 1)).replace(b"\n", b"\r\n")
    return raw[: raw.rfind(b"\r\n", 0, size) + 2]


def headers(tag: str) -> bytes:
    return (
        f"From: bulk@example.net\r\nTo: {RCPT}\r\nSubject: {tag}\r\n"
        f"Message-ID: <{tag}-{os.getpid()}-{time.time_ns()}@example.net>\r\n\r\n"
    ).encode()


async def reply(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """One whole reply's last line; b"" when the server closed."""
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if line[3:4] != b"-":
            return line


async def open_session(
    port: int, stats: Counter[str]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """Connected, greeted, EHLO answered; None (counted) when refused."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(FLOODER, port), timeout=10)
    except (OSError, TimeoutError):
        stats["connect failed"] += 1
        await asyncio.sleep(0.01)
        return None
    stats["connections"] += 1
    greeting = await reply(reader, 30)
    if not greeting.startswith(b"220"):
        stats[f"refused at connect ({greeting[:3].decode() or 'closed'})"] += 1
        writer.close()
        return None
    writer.write(b"EHLO flood.example.net\r\n")
    await reply(reader, 30)
    return reader, writer


async def send_data(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes, tag: str
) -> bytes:
    """MAIL, RCPT, DATA and the message; the reply to its end (or the refusal before)."""
    writer.write(f"MAIL FROM:<bulk@example.net> SIZE={len(body) + 200}\r\n".encode())
    if not (answer := await reply(reader, 60)).startswith(b"250"):
        return answer
    writer.write(f"RCPT TO:<{RCPT}>\r\n".encode())
    if not (answer := await reply(reader, 60)).startswith(b"250"):
        return answer
    writer.write(b"DATA\r\n")
    if not (answer := await reply(reader, 60)).startswith(b"354"):
        return answer
    writer.write(headers(tag))
    writer.write(body)
    writer.write(b".\r\n")
    await writer.drain()
    return await reply(reader, 600)


# --- floods (each in its own process: `abuse.py --flood KIND PORT`) ----------------------


Flooding = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def keep_flooding(
    port: int, stats: Counter[str], stop: asyncio.Event, session: Flooding
) -> None:
    """Sessions one after the other until stopped, reconnecting at once when refused."""
    while not stop.is_set():
        opened = await open_session(port, stats)
        if opened is None:
            continue
        reader, writer = opened
        try:
            await session(reader, writer)
        except TimeoutError:
            stats["gave up (slowed down)"] += 1
        except OSError:
            stats["reset"] += 1
        finally:
            writer.close()


def harvest(stats: Counter[str], n: int) -> Flooding:
    """EHLO, MAIL, 50 pipelined RCPTs to made-up companies; gives up past 2 s a reply."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"MAIL FROM:<h@example.net>\r\n")
        await reply(reader, 2)
        rcpts = (f"RCPT TO:<compta+societe-{n}-{i}@welyb.fr>\r\n" for i in range(50))
        writer.write("".join(rcpts).encode())
        for _ in range(50):
            answer = await reply(reader, 2)
            stats[f"RCPT {answer[:3].decode() or 'closed'}"] += 1
            if not answer:
                break

    return session


def bulk(stats: Counter[str], stop: asyncio.Event, body: bytes) -> Flooding:
    """Messages back to back on one session (under the 1000 it may send)."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(100):
            if stop.is_set():
                break
            answer = await send_data(reader, writer, body, "bulk")
            stats[f"message {answer[:3].decode() or 'closed'}"] += 1
            if not answer.startswith(b"250"):
                break

    return session


def flood(kind: str, port: int) -> None:
    """Until SIGTERM; then prints what the flood did (JSON) on stdout."""
    install_loop()

    async def main() -> Counter[str]:
        stats: Counter[str] = Counter()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        body = text_body(1_000_000)
        tasks = []
        if kind in ("harvest", "both"):
            tasks += [keep_flooding(port, stats, stop, harvest(stats, n)) for n in range(60)]
        if kind in ("bulk", "both"):
            tasks += [keep_flooding(port, stats, stop, bulk(stats, stop, body)) for _ in range(20)]
        started = time.monotonic()
        await asyncio.gather(*tasks, return_exceptions=True)
        stats["seconds"] = round(time.monotonic() - started)
        return stats

    print(json.dumps(asyncio.run(main())), flush=True)


@contextlib.contextmanager
def flooding(kind: str, port: int, ramp: float = 2.0) -> Iterator[dict[str, int]]:
    """A flood running in its own process; the dict gets its counts once it stopped."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--flood", kind, str(port)], stdout=subprocess.PIPE, text=True
    )
    done: dict[str, int] = {}
    try:
        time.sleep(ramp)
        yield done
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        done.update(json.loads(out) if out.strip() else {"flood crashed": 1})


# --- a. acknowledgement latency --------------------------------------------------------


def normal_latencies(
    port: int, messages: list[bytes]
) -> tuple[list[float], list[float], Counter[str]]:
    """Each message on its own connection from NORMAL_SENDER: (connect → 220 greeting,
    connect → 250 after DATA, failures)."""
    greeted: list[float] = []
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    for data in messages:
        started = time.perf_counter()
        try:
            with smtplib.SMTP(
                "127.0.0.1", port, timeout=120, source_address=(NORMAL_SENDER, 0)
            ) as smtp:
                greeted.append(time.perf_counter() - started)
                smtp.sendmail("fournisseur@example.org", [RCPT], data)
                latencies.append(time.perf_counter() - started)
        except (smtplib.SMTPException, OSError) as error:
            failures[type(error).__name__ + " " + str(error)[:60]] += 1
    return greeted, latencies, failures


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(values: list[float]) -> tuple[float, float]:
    """(median, p95) in ms."""
    if len(values) < 2:
        return (values[0] * 1000, values[0] * 1000) if values else (0.0, 0.0)
    return statistics.median(values) * 1000, statistics.quantiles(values, n=20)[18] * 1000


def latency_figures(config: Path, port: int, log: Path, count: int) -> list[str]:
    """Each arm on a fresh serve: the anvil's per-client windows of one arm (the harvester
    is refused at connect for a minute once it made 100 errors) do not reach the next."""
    rows = []
    arms: list[tuple[str, str | None]] = [
        ("no flood", None),
        ("harvest flood", "harvest"),
        ("bulk flood (1 MB)", "bulk"),
        ("no flood, again", None),
    ]
    baseline = 0.0
    sent = 0
    for name, kind in arms:
        messages = [sample_message(sent + i) for i in range(count + 5)]
        sent += len(messages)
        with gateway_serving(config, port, log) as pid:
            normal_latencies(port, messages[:5])  # warm-up
            load = flooding(kind, port) if kind else contextlib.nullcontext({})
            with load as flood_stats:
                cpu, started = cpu_seconds(pid), time.perf_counter()
                greeted, latencies, failures = normal_latencies(port, messages[5:])
                busy = (cpu_seconds(pid) - cpu) / (time.perf_counter() - started)
        p50, p95 = percentiles(latencies)
        g50, g95 = percentiles(greeted)
        baseline = baseline or p50
        rows.append(
            f"a. ack latency, {name:<18} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms"
            f"  ×{p50 / baseline:5.1f} (p50 vs no flood)  ok {len(latencies)}/{count};"
            f" of which greeting p50 {g50:.1f} ms p95 {g95:.1f} ms; serve's CPU {busy:.0%}"
            + (f"  failed {dict(failures)}" if failures else "")
        )
        if flood_stats:
            rows.append(f"     the flood: {dict(flood_stats)}")
        print(rows[-2 if flood_stats else -1], flush=True)
        if flood_stats:
            print(rows[-1], flush=True)
    return rows


# --- b. connect-and-close probes -------------------------------------------------------


def probe_trace_seconds(pid: int, port: int, probes: int) -> tuple[float, float, int]:
    """(seconds to send, seconds until no trace, most sockets held at once)."""
    import socket

    idle = descriptors(pid)
    started = time.perf_counter()
    for _ in range(probes):
        with contextlib.suppress(OSError):
            socket.create_connection((FLOODER, port), timeout=10).close()
    sent = time.perf_counter() - started
    most = 0
    deadline = started + 900
    while time.perf_counter() < deadline:
        held = held_sockets(port)
        most = max(most, held)
        if held == 0 and descriptors(pid) <= idle:
            break
        time.sleep(0.01)
    return sent, time.perf_counter() - started, most


def probe_figures(config: Path, port: int, log: Path, probes: int) -> list[str]:
    rows = []
    bare_port = free_port()
    for name, serving, on in (
        ("bare aiosmtpd", bare_serving(bare_port), bare_port),
        ("gateway", gateway_serving(config, port, log), port),
    ):
        with serving as pid:
            sent, gone, most = probe_trace_seconds(pid, on, probes)
        rows.append(
            f"b. {probes} connect-and-close probes, {name:<13} sent in {sent:5.2f} s, no trace "
            f"after {gone:6.2f} s (at most {most} sockets held)"
        )
    return rows


# --- c. memory under 32 × 25 MB ---------------------------------------------------------


async def big_senders(port: int, clients: int, size: int) -> Counter[str]:
    body = text_body(size - 300)
    stats: Counter[str] = Counter()

    async def one(n: int) -> None:
        session = await open_session(port, stats)
        if session is None:
            return
        reader, writer = session
        try:
            answer = await send_data(reader, writer, body, f"big-{n}")
            stats[answer[:9].decode() or "closed"] += 1
            writer.write(b"QUIT\r\n")
            await reply(reader, 30)
        except (OSError, TimeoutError) as error:
            stats[type(error).__name__] += 1
        finally:
            writer.close()

    await asyncio.gather(*(one(n) for n in range(clients)))
    return stats


def memory_figures(config: Path, port: int, log: Path, clients: int, size: int) -> list[str]:
    with gateway_serving(config, port, log) as pid:
        idle, idle_peak = status_kb(pid, "VmRSS"), status_kb(pid, "VmHWM")
        sampled = [idle]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                sampled.append(status_kb(pid, "VmRSS"))

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        try:
            answers = asyncio.run(big_senders(port, clients, size))
        finally:
            stop.set()
            sampler.join()
        took = time.perf_counter() - started
        peak = status_kb(pid, "VmHWM")
        time.sleep(5)
        after = status_kb(pid, "VmRSS")
    mb = 1024
    return [
        f"c. serve's RSS, {clients} clients × {size / 1e6:.0f} MB at once: idle {idle / mb:6.0f} MB"
        f" (startup peak {idle_peak / mb:.0f}), peak {peak / mb:6.0f} MB (sampled max "
        f"{max(sampled) / mb:.0f}), 5 s after they left {after / mb:6.0f} MB;"
        f" ×{peak / idle:.1f} / ×{after / idle:.2f} of idle; {took:.1f} s; replies {dict(answers)}"
    ]


def server_complaints(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines()
    bad = [line for line in lines if '"error"' in line or "Traceback" in line]
    return f"serve's log: {len(lines)} lines (warning and above), {len(bad)} errors" + (
        f"; first: {bad[0][:300]}" if bad else ""
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50, help="normal messages per arm (a)")
    parser.add_argument("--probes", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--size", type=int, default=25_000_000, help="bytes per message (c)")
    parser.add_argument("--only", choices=["a", "b", "c"], action="append")
    parser.add_argument("--flood", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        flood(args.flood[0], int(args.flood[1]))
        return
    only = set(args.only or "abc")
    print(
        f"event loop {install_loop()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
        f"gateway serve: SQLite, default limits, no filing worker",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="gateway-abuse-") as tmp:
        config, port = prepare_gateway(Path(tmp, "home"), 0)
        log = Path(tmp, "serve.log")
        rows: list[str] = []
        if "a" in only:
            rows += latency_figures(config, port, log, args.messages)
        if "b" in only:
            rows += probe_figures(config, port, log, args.probes)
            print(rows[-2] + "\n" + rows[-1], flush=True)
        if "c" in only:
            rows += memory_figures(config, port, log, args.clients, args.size)
            print(rows[-1], flush=True)
        print(server_complaints(log))


if __name__ == "__main__":
    main()

"""ClamAV benchmark: scans per second through a real clamd against a socket sink, in one run.

Starts a real clamd (tests/clamd.py: its own config and signature database, unix socket and
loopback TCP) and measures, with the gateway's `Clamd` client (INSTREAM, 64 KB chunks):
  - clamd's start-up, to the first PONG, over `--starts` starts (our tiny database: the
    official one takes tens of seconds and ~1 GB, which this does not measure);
  - scans/s of a ~100 KB PDF-like blob: distinct blobs each time (clamd caches clean
    verdicts by hash, so a repeated blob measures its cache) over the unix socket and TCP,
    and the same blob again (the cache);
  - the same client against a sink: another process on a unix socket that reads the whole
    INSTREAM and answers "stream: OK" without scanning: what the socket and the protocol
    alone cost;
  - one 25 MB message (the intake's limit).
Arms alternate over several rounds; prints each and the medians. A run whose clamd misses
EICAR prints no figures.

    .venv/bin/python benchmarks/clamav.py [--seconds 1.5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import socket
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import rate

from gateway.inbound.trust.clamav import Clamd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: tests.clamd is reached from the repo root

from tests.clamd import EICAR, EICAR_SIGNATURE, ClamdDaemon, find_clamd  # noqa: E402

BLOB_SIZE = 100_000


def pdf_like(size: int, serial: int) -> bytes:
    """A PDF-shaped blob whose bytes differ with `serial` (no two hash alike)."""
    body = (bytes(range(256)) * (size // 256 + 1))[:size]
    return b"%PDF-1.4\n%" + str(serial).encode() + b"\n" + body + b"\n%%EOF\n"


def sink(path: str) -> None:
    """Reads INSTREAM sessions to their end and answers clean: clamd minus the scan."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    while True:
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as stream:
            command = b"".join(iter(lambda: stream.read(1), b"\0"))
            if command == b"zPING":
                conn.sendall(b"PONG\0")
                continue
            while size := struct.unpack("!L", stream.read(4))[0]:
                stream.read(size)
            conn.sendall(b"stream: OK\0")


def wait_for(scanner: Clamd, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            scanner.ping()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def run(args: argparse.Namespace, daemon: ClamdDaemon, tmp: Path) -> None:
    unix = Clamd(daemon.address)
    tcp = Clamd(daemon.tcp_address)
    # A broken run must not print a good figure.
    if unix.scan(EICAR).signature != EICAR_SIGNATURE or tcp.scan(pdf_like(1000, 0)).infected:
        raise SystemExit("clamd gives wrong verdicts: no figures")

    startups = []
    for _ in range(args.starts):
        daemon.stop()
        daemon.start()
        assert daemon.startup_seconds is not None
        startups.append(daemon.startup_seconds)
    print(
        f"clamd start-up to first PONG: median {statistics.median(startups) * 1000:.0f} ms "
        f"(min {min(startups) * 1000:.0f}, max {max(startups) * 1000:.0f}, {args.starts} starts)"
    )

    sink_path = str(tmp / "sink.sock")
    process = multiprocessing.get_context("fork").Process(target=sink, args=(sink_path,))
    process.daemon = True
    process.start()
    try:
        to_sink = Clamd(f"unix:{sink_path}")
        wait_for(to_sink)
        serials = itertools.count(1)
        same = pdf_like(BLOB_SIZE, 0)

        def distinct(scanner: Clamd) -> Callable[[], object]:
            return lambda: scanner.scan(pdf_like(BLOB_SIZE, next(serials)))

        arms: dict[str, Callable[[], object]] = {
            "clamd unix, distinct blobs": distinct(unix),
            "clamd tcp, distinct blobs": distinct(tcp),
            "clamd unix, same blob (cache)": lambda: unix.scan(same),
            "sink unix (no scan)": distinct(to_sink),
        }
        results: dict[str, list[float]] = {name: [] for name in arms}
        print(f"{'round':<6} {'arm':<32} {'scans/s':>9} {'MB/s':>8}")
        for round_ in range(1, args.rounds + 1):
            for name, operation in arms.items():
                per_second = rate(operation, args.seconds)
                results[name].append(per_second)
                mb = per_second * BLOB_SIZE / 1e6
                print(f"{round_:<6} {name:<32} {per_second:>9.0f} {mb:>8.1f}", flush=True)
        print(f"medians ({BLOB_SIZE // 1000} KB blob):")
        for name, rates in results.items():
            print(f"  {name:<32} {statistics.median(rates):>9.0f} scans/s")
        clamd_rate = statistics.median(results["clamd unix, distinct blobs"])
        sink_rate = statistics.median(results["sink unix (no scan)"])
        print(f"  clamd / sink: {clamd_rate / sink_rate:.2f}")
    finally:
        process.kill()
        process.join()

    big = pdf_like(25 * 1024 * 1024, 1)
    began = time.perf_counter()
    verdict = unix.scan(big)
    elapsed = time.perf_counter() - began
    print(f"one 25 MB message through clamd: {elapsed:.2f} s ({verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="per arm and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--starts", type=int, default=5, help="clamd starts to time")
    args = parser.parse_args()
    if find_clamd() is None:
        raise SystemExit("clamd not found: run scripts/setup-test-packages")
    with tempfile.TemporaryDirectory(prefix="bench-clamav-") as folder:
        tmp = Path(folder)
        with ClamdDaemon(tmp) as daemon:
            run(args, daemon, tmp)


if __name__ == "__main__":
    main()

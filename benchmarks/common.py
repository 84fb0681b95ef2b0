"""Pieces the benchmarks share: the event loop, free ports, rates, CPU used by a process
tree, a real S3 server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def install_loop() -> str:
    """uvloop when installed (as `gateway serve` uses), else asyncio's loop; returns which."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def rate(operation: Callable[[], object], seconds: float) -> float:
    """Operations per second over about `seconds` of back-to-back calls."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        operation()
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def tree_cpu_seconds(root: int) -> tuple[float, float, float]:
    """CPU seconds (user and system) used so far by process `root`, its children, and their
    descendants (three figures: for `gateway serve`, the server, its workers, and the
    workers' extraction children): the live ones and those they have reaped (read from
    /proc). A difference of two readings is what the tree spent between them, whatever else
    the machine was doing: a figure that the noise of a shared machine moves far less than
    a rate."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        # After the command name in parentheses: state, ppid, ... utime (14th field),
        # stime, cutime, cstime.
        fields = stat.rpartition(")")[2].split()
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        used[pid] = sum(int(f) for f in fields[11:15]) / tick
    totals = [0.0, 0.0, 0.0]
    todo = [(root, 0)]
    while todo:
        pid, depth = todo.pop()
        totals[min(depth, 2)] += used.get(pid, 0.0)
        todo.extend((child, depth + 1) for child in children.get(pid, []))
    return totals[0], totals[1], totals[2]


@contextlib.contextmanager
def object_store(home: Path) -> Iterator[dict[str, dict[str, Any]]]:
    """A real S3 server on loopback (`rclone serve s3`, tests/s3_server.py) with a bucket:
    yields the `write_config` sections of a node whose documents and raw mail go there."""
    sys.path.insert(0, str(ROOT))
    from tests.s3_server import S3Server, s3_storage

    server = S3Server(home / "s3").start()
    try:
        server.make_bucket("gateway")
        yield s3_storage(server, "gateway", home / "node")
    finally:
        server.close()

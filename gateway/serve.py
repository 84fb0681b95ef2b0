"""`gateway serve`: the SMTP server in this process; filing, sending and IMAP beside it.

Filing (MIME parsing, archive expansion) is CPU work; in the same process it would hold the
GIL and slow acknowledgements down. So it runs in child processes (`gateway worker`), at a
lower priority, that talk to the server only through the database rows. `filing.workers = 0`
runs none (filing then happens on other nodes).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

import structlog

from gateway.app import Gateway
from gateway.lifetime import supervised_environment
from gateway.storage.db import safe_url

log = structlog.get_logger("gateway.serve")


def install_fast_event_loop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(
    gw: Gateway, host: str | None, port: int | None, announce: Callable[[str], None]
) -> None:
    stop = asyncio.Event()
    stopping = threading.Event()  # the same, for the thread that waits for the database
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        stop.set()
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    if not await asyncio.to_thread(gw.open_storage_when_available, stopping.wait):
        return  # stopped before the database answered
    with gw.running_as("smtp", take_back=True):
        await _serve(gw, host, port, announce, stop)
    gw.db.dispose()


async def _serve(
    gw: Gateway,
    host: str | None,
    port: int | None,
    announce: Callable[[str], None],
    stop: asyncio.Event,
) -> None:
    server, spool = gw.inbound_server()
    bound_host, bound_port = await server.start(host, port)
    config = gw.config
    announce(
        f"gateway: listening on smtp://{bound_host}:{bound_port} for "
        f"{', '.join(config.domains)} (database {safe_url(config.database_url)}, "
        f"storage {config.storage_path}); stop with Ctrl-C or SIGTERM"
    )
    log.info("listening", host=bound_host, port=bound_port, domains=list(config.domains))
    workers = _Workers(
        gw,
        {
            "worker": config.filing.workers,
            "sender": config.outbound.workers,
            "imap run": 1 if config.imap_sources else 0,
        },
    )
    supervisor = asyncio.create_task(workers.supervise(stop))
    await stop.wait()
    log.info("stopping", sessions=len(server.sessions))
    await server.drain()
    await spool.close()
    await supervisor
    workers.stop()
    log.info("stopped")


class _Workers:
    """Worker processes (`gateway worker` files, `gateway sender` sends, `gateway imap run`
    reads the IMAP sources), restarted if one dies."""

    def __init__(self, gw: Gateway, counts: dict[str, int]) -> None:
        self.gw = gw
        self.verbs = [verb for verb, count in counts.items() for _ in range(count)]
        self.procs: list[subprocess.Popen[bytes]] = []

    def _spawn(self, verb: str) -> subprocess.Popen[bytes]:
        assert self.gw.config.path is not None
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", *verb.split(), "-c", str(self.gw.config.path)],
            env=supervised_environment(),  # the worker dies with us, even by SIGKILL
        )

    async def supervise(self, stop: asyncio.Event) -> None:
        self.procs = [self._spawn(verb) for verb in self.verbs]
        while not stop.is_set():
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None:
                    log.warning(
                        "worker_died", verb=self.verbs[i], pid=proc.pid, code=proc.returncode
                    )
                    self.procs[i] = self._spawn(self.verbs[i])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

"""`gateway serve`: the SMTP server in this process; filing, sending and IMAP beside it.

Filing (MIME parsing, archive expansion) is CPU work; in the same process it would hold the
GIL and slow acknowledgements down. So it runs in child processes (`gateway worker`), at a
lower priority, that talk to the server only through the database rows. `filing.workers = 0`
runs none (filing then happens on other nodes).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from gateway import metrics
from gateway.app import Gateway
from gateway.http import Child, OperationsListener, start_listener
from gateway.lifetime import RestartBackoff, supervised_environment
from gateway.storage.db import safe_url

# Its lines are the supervisor's (role "serve"); the SMTP server's in this process are "smtp".
log = structlog.get_logger("gateway.serve", role="serve")


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
    # Before any worker starts: they write their metrics there (see gateway/metrics.py).
    metrics_directory = metrics.fresh_directory(gw.config.run_path / "metrics")
    metrics.use_directory(metrics_directory)
    config = gw.config
    workers = _Workers(
        gw,
        {
            "worker": config.filing.workers,
            "sender": config.outbound.workers,
            "imap run": 1 if config.imap_sources else 0,
            "webhooks run": 1 if config.webhooks else 0,
        },
    )
    # Up first, so that /readyz says what is missing while the database is awaited.
    operations = await start_listener(gw, workers, metrics_directory)
    closing = None
    if operations is not None:
        listener, url = operations
        api = ", /api/v1" if gw.config.api.enabled else ""
        announce(f"gateway: health and metrics on {url} (/healthz, /readyz, /metrics{api})")
        closing = asyncio.create_task(_close_when(stop, listener))
    try:
        if not await asyncio.to_thread(gw.open_storage_when_available, stopping.wait):
            return  # stopped before the database answered
        with gw.running_as("smtp", take_back=True):
            await _serve(gw, host, port, announce, stop, workers)
        gw.db.dispose()
    finally:
        stop.set()
        if closing is not None:
            await closing


async def _close_when(stop: asyncio.Event, listener: OperationsListener) -> None:
    """The listener goes as soon as serve is told to stop (a load balancer's next check
    fails at once), while the SMTP sessions drain."""
    await stop.wait()
    await listener.stop()


async def _serve(
    gw: Gateway,
    host: str | None,
    port: int | None,
    announce: Callable[[str], None],
    stop: asyncio.Event,
    workers: _Workers,
) -> None:
    raise_open_files_limit(open_files_needed(gw.config.smtp.session_limit))
    server, spool = gw.inbound_server()
    bound_host, bound_port = await server.start(host, port)
    config = gw.config
    announce(
        f"gateway: listening on smtp://{bound_host}:{bound_port} for "
        f"{', '.join(config.domains)} (database {safe_url(config.database_url)}, "
        f"storage {config.storage_path}); stop with Ctrl-C or SIGTERM"
    )
    log.info("listening", host=bound_host, port=bound_port, domains=list(config.domains))
    supervisor = asyncio.create_task(workers.supervise(stop))
    await stop.wait()
    log.info("stopping", sessions=len(server.sessions))
    # The workers stop (between two passes) while the SMTP transactions finish: the stop
    # takes the longer of the two, not their sum.
    await supervisor
    workers.terminate()
    grace = config.smtp.drain_seconds
    await server.drain(grace)
    await spool.close()
    await workers.wait(grace)
    log.info("stopped")


# Descriptors besides the sessions': listener, database pool, spool files, workers' pipes,
# the operations listener, logs.
OPEN_FILES_MARGIN = 256


def open_files_needed(session_limit: int) -> int:
    """Two descriptors a session (its socket, and the spool file or TLS it may use)."""
    return 2 * session_limit + OPEN_FILES_MARGIN


def raise_open_files_limit(
    needed: int,
    get: Callable[[int], tuple[int, int]] = resource.getrlimit,
    set_: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
) -> int:
    """Raise the soft RLIMIT_NOFILE to `needed` (systemd starts services at 1,024), up to the
    hard limit, which only root can raise; logged. Returns the soft limit now in force."""
    soft, hard = get(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or (soft >= needed):
        return soft
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        set_(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warning(
            "open_files_limit_low",
            soft=target,
            hard=hard,
            needed=needed,
            hint="raise the hard limit (systemd: LimitNOFILE=) or lower smtp.session_limit",
        )
    else:
        log.info("open_files_limit_raised", soft_was=soft, soft=target, needed=needed)
    return target


class _Workers:
    """Worker processes (`gateway worker` files, `gateway sender` sends, `gateway imap run`
    reads the IMAP sources, `gateway webhooks run` pushes events), each restarted when it
    dies, after a pause that grows while it keeps dying (`RestartBackoff`); every death and
    restart is logged."""

    TICK = 0.2  # seconds between two looks at the workers

    def __init__(
        self, gw: Gateway, counts: dict[str, int], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.gw = gw
        self.clock = clock
        self.slots = [_Slot(verb) for verb, count in counts.items() for _ in range(count)]

    def children(self) -> list[Child]:
        """For /readyz: each worker expected, and whether it runs (no pid: not started
        yet, or waiting for its restart)."""
        return [
            Child(
                s.verb, s.proc.pid if s.proc else None, s.proc is not None and s.proc.poll() is None
            )
            for s in self.slots
        ]

    def _start(self, slot: _Slot) -> None:
        assert self.gw.config.path is not None
        slot.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", *slot.verb.split(), "-c", str(self.gw.config.path)],
            env=supervised_environment(),  # the worker dies with us, even by SIGKILL
        )
        slot.started_at = self.clock()
        log.info("worker_started", verb=slot.verb, worker_pid=slot.proc.pid)

    async def supervise(self, stop: asyncio.Event) -> None:
        for slot in self.slots:
            self._start(slot)
        while not stop.is_set():
            now = self.clock()
            for slot in self.slots:
                if slot.proc is None:
                    if now >= slot.restart_at:
                        self._start(slot)
                elif (code := slot.proc.poll()) is not None:
                    delay = slot.backoff.delay_after(ran_for=now - slot.started_at)
                    log.warning(
                        "worker_died",
                        verb=slot.verb,
                        worker_pid=slot.proc.pid,
                        code=code,
                        restart_in=delay,
                    )
                    slot.proc, slot.restart_at = None, now + delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.TICK)

    def terminate(self) -> None:
        """SIGTERM to every worker: each stops between two passes."""
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.terminate()

    async def wait(self, seconds: float) -> None:
        """Until every worker has exited; one still running after `seconds` is killed
        (what it had claimed is taken over by another worker)."""
        deadline = self.clock() + seconds
        running = [s.proc for s in self.slots if s.proc is not None]
        while any(p.poll() is None for p in running) and self.clock() < deadline:
            await asyncio.sleep(0.02)
        for proc in running:
            if proc.poll() is None:
                log.warning("worker_killed", worker_pid=proc.pid, after=seconds)
                proc.kill()
                proc.wait()


@dataclass
class _Slot:
    """One worker `serve` keeps running: its process (None while a restart waits)."""

    verb: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float = 0.0
    backoff: RestartBackoff = field(default_factory=RestartBackoff)

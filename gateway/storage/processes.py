"""Every node's processes, their heartbeats, and the leases those heartbeats keep alive
(procrastinate's stalled-job idea).

Each long-running process (`serve`, and the `worker`, `sender` and `imap run` it starts, or
run on their own) registers a row in `gateway_processes` under a name unique to it —
`<node>:<pid>:<random>`, the name it writes in the queues' `claimed_by` — and beats every
`HEARTBEAT`: one transaction that stamps its row and renews the lease of everything it holds
(filing, deliveries, forwards, IMAP mailboxes) by `LEASE`. However long a batch takes, its
claims stay alive while the process does; when it dies or hangs, they run out within
`LEASE` and any other worker takes them over, saying from whom (`queues.base`).

A restarted `serve` does not wait for that: before starting its workers it takes back, at
once, what the earlier processes of its node still held (`take_back`) — they are dead, for
they died with the serve that started them (`gateway.lifetime`). So a node name belongs to
one host, and a second process group on the same host runs under a node name of its own.

A process that stops cleanly releases what it holds (`stop`). After a failed pass (the
database away), a worker releases its claims as soon as the database answers again
(`release`), instead of keeping them until its next pass.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway.clock import Clock
from gateway.storage.db import Database, one_line
from gateway.storage.models import GatewayProcess
from gateway.storage.queues import deliveries, forwards, imap_checkpoints, webhook_deliveries
from gateway.storage.queues import inbound as inbound_queue
from gateway.storage.queues.base import LEASE, Leases

log = structlog.get_logger("gateway.processes")

HEARTBEAT = timedelta(seconds=10)
# A process whose heartbeat is older than this is shown dead (its leases have run out).
SILENT = LEASE

QUEUES: tuple[Leases, ...] = (
    inbound_queue.LEASES,
    deliveries.LEASES,
    forwards.LEASES,
    imap_checkpoints.LEASES,
    webhook_deliveries.LEASES,
)


def process_name(node: str) -> str:
    """This process's name in the registry and in `claimed_by`."""
    return f"{node}:{os.getpid()}:{secrets.token_hex(3)}"


def register(s: Session, name: str, node: str, role: str, now: datetime) -> None:
    s.add(
        GatewayProcess(
            name=name,
            node=node,
            role=role,
            pid=os.getpid(),
            started_at=now,
            heartbeat_at=now,
        )
    )


def beat(s: Session, name: str, now: datetime) -> int:
    """Stamp the process's heartbeat and renew every lease it holds; how many it renewed."""
    s.execute(update(GatewayProcess).where(GatewayProcess.name == name).values(heartbeat_at=now))
    return sum(queue.renew(s, name, now) for queue in QUEUES)


def release(s: Session, name: str, now: datetime) -> int:
    """End every lease `name` holds now: any worker may take its rows at once."""
    return sum(queue.release(s, name, now) for queue in QUEUES)


def stop(s: Session, name: str, now: datetime) -> int:
    """The end of `name` (clean, or found dead): what it held is released, the row says
    when it stopped; how many leases it still had."""
    released = release(s, name, now)
    s.execute(update(GatewayProcess).where(GatewayProcess.name == name).values(stopped_at=now))
    return released


def take_back(s: Session, node: str, current: str, now: datetime) -> list[str]:
    """At `serve`'s start on `node`: every earlier process of the node, other than
    `current`, is dead — its leases end now and its row is marked stopped. Returns their
    names (those that still held something are logged)."""
    earlier = list(
        s.execute(
            select(GatewayProcess.name).where(
                GatewayProcess.node == node,
                GatewayProcess.name != current,
                GatewayProcess.stopped_at.is_(None),
            )
        ).scalars()
    )
    for name in earlier:
        if released := stop(s, name, now):
            log.warning("take_back", previous_holder=name, by=current, claims=released)
    return earlier


@dataclass(frozen=True)
class ProcessState:
    """A registered process as `gateway status` and `/readyz` show it."""

    name: str
    node: str
    role: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    alive: bool


def listing(s: Session, now: datetime, *, include_stopped: bool = False) -> list[ProcessState]:
    """Registered processes, by node and role; `alive` when not stopped and heard from
    within `SILENT`."""
    query = select(GatewayProcess).order_by(GatewayProcess.node, GatewayProcess.role)
    if not include_stopped:
        query = query.where(GatewayProcess.stopped_at.is_(None))
    return [
        ProcessState(
            name=p.name,
            node=p.node,
            role=p.role,
            pid=p.pid,
            started_at=p.started_at,
            heartbeat_at=p.heartbeat_at,
            stopped_at=p.stopped_at,
            alive=p.stopped_at is None and now - _aware(p.heartbeat_at, now) < SILENT,
        )
        for p in s.execute(query).scalars()
    ]


def alive(s: Session, now: datetime) -> list[ProcessState]:
    return [p for p in listing(s, now) if p.alive]


def _aware(moment: datetime, now: datetime) -> datetime:
    """SQLite gives naive datetimes back (stored UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=now.tzinfo)


class Heartbeat:
    """The beat of one process, in a thread of its own, so that a long batch, a slow send
    or a blocked event loop never lets its leases run out. Beats that fail (the database
    away) are logged once per outage, and tried again on the next beat."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        name: str,
        node: str,
        role: str,
        interval: timedelta = HEARTBEAT,
    ) -> None:
        self.db = db
        self.clock = clock
        self.name = name
        self.node = node
        self.role = role
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self, before_first_beat: Callable[[Session], object] | None = None) -> None:
        """Register the process (and run `before_first_beat` in the same transaction: the
        serve's `take_back`), then beat until `stop`."""
        with self.db.write() as s:
            register(s, self.name, self.node, self.role, self.clock.now())
            if before_first_beat is not None:
                before_first_beat(s)
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval.total_seconds()):
            self.beat_once()

    def beat_once(self) -> None:
        try:
            with self.db.write() as s:
                beat(s, self.name, self.clock.now())
        except Exception as e:  # the database away: the next beat tries again
            if not self._failing:
                log.error("heartbeat_failed", process=self.name, error=one_line(e))
            self._failing = True
            return
        if self._failing:
            log.info("heartbeat_restored", process=self.name)
        self._failing = False

    @property
    def failing(self) -> bool:
        """The last beat failed (the database away); its leases may be running out."""
        return self._failing

    def release_claims(self) -> None:
        """After a failed pass: end this process's leases (raises while the database is
        still away; the runner tries again before its next pass)."""
        with self.db.write() as s:
            released = release(s, self.name, self.clock.now())
        if released:
            log.info("claims_released", process=self.name, claims=released)

    def stop(self) -> None:
        """Stop beating; release what is held and mark the row stopped (if the database
        answers: otherwise the leases simply run out)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            with self.db.write() as s:
                stop(s, self.name, self.clock.now())
        except Exception as e:
            error = one_line(e)
            log.error("process_stop_unrecorded", process=self.name, error=error)

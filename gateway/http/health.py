"""What /readyz asks: can this node take mail and do its work now?

- database: a fresh connection answers a query within the timeout (`DatabaseProbe`);
- storage: a file can be created in the storage, spool and documents folders; with
  `[storage] backend = "s3"`, the bucket answers with our credentials;
- workers: every worker process `serve` supervises is running (`Children`, passed in by
  serve, which knows them);
- clamd, rspamd, when switched on: the scanner answers its ping (a scanner that does not
  makes every message wait: nothing is filed unscanned);
- imap SOURCE/FOLDER, for each configured folder: a poller holds its checkpoint with a lease
  not yet ended (it is connected and reading, here or on another node); the last success
  (the last batch taken) and the last error are shown either way.

Every check that touches a disk or the database runs in a thread, with a timeout, so the
event loop (SMTP) is never blocked; at most one thread per check is in flight, so a hung
database does not pile threads up: a check still running when the next request comes is
waited for again, not started twice.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar

from gateway.clock import Clock, as_utc
from gateway.config import GatewayConfig
from gateway.storage.db import Database, one_line
from gateway.storage.listings.inbound import ImapFolderRow, imap_folder_states
from gateway.storage.objects import ObjectStore
from gateway.storage.probe import DatabaseProbe

T = TypeVar("T")


@dataclass(frozen=True)
class Child:
    """A worker process as its supervisor sees it."""

    verb: str  # worker, sender, imap run
    pid: int | None  # None: not started (yet, or again)
    running: bool


class Children(Protocol):
    """The worker processes a supervisor (serve) keeps running."""

    def children(self) -> list[Child]: ...


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


class Readiness:
    def __init__(
        self,
        config: GatewayConfig,
        db: Database,
        probe: DatabaseProbe,
        children: Children,
        clock: Clock,
        scanners: Sequence[tuple[str, Callable[[], None]]] = (),
        objects: ObjectStore | None = None,
    ) -> None:
        self.config = config
        self.objects = objects
        self.scanners = scanners  # (name, ping): the ping raises when it gets no answer
        self.db = db
        self.probe = probe
        self.children = children
        self.clock = clock
        self.timeout = probe.timeout_seconds + 1.0
        self._running: dict[str, asyncio.Future[object]] = {}

    async def checks(self) -> list[Check]:
        database = await self._database()
        checks = [database, await self._storage(), self._workers()]
        for name, ping in self.scanners:
            checks.append(await self._scanner(name, ping))
        if self.config.imap_sources:
            checks += await self._imap(database.ok)
        return checks

    async def _database(self) -> Check:
        problem = await self._in_thread("database", self.probe.problem)
        if problem is None:
            return Check("database", True, "answers")
        return Check("database", False, problem or self._no_answer())

    async def _storage(self) -> Check:
        objects = self.objects
        if objects is not None:
            problem = await self._in_thread("storage", lambda: _ping_problem(objects.check))
            if problem is None:
                return Check("storage", True, f"{objects.describe('')} answers")
            return Check("storage", False, problem or self._no_answer())
        folders = [self.config.storage_path, self.config.spool_path, self.config.blobs_path]
        problem = await self._in_thread("storage", lambda: _unwritable(folders))
        if problem is None:
            return Check("storage", True, f"{self.config.storage_path} writable")
        return Check("storage", False, problem or self._no_answer())

    async def _scanner(self, name: str, ping: Callable[[], None]) -> Check:
        problem = await self._in_thread(name, lambda: _ping_problem(ping))
        if problem is None:
            return Check(name, True, "answers")
        return Check(name, False, problem or self._no_answer())

    def _workers(self) -> Check:
        children = self.children.children()
        down = [c for c in children if not c.running]
        if down:
            return Check("workers", False, "not running: " + ", ".join(c.verb for c in down))
        running = ", ".join(f"{c.verb} (pid {c.pid})" for c in children)
        return Check("workers", True, running or "none configured")

    async def _imap(self, database_answers: bool) -> list[Check]:
        folders = self.config.imap_folders
        if not database_answers:
            why = "unknown: the database does not answer"
            return [Check(f"imap {source}/{folder}", False, why) for source, folder in folders]
        rows = await self._in_thread("imap", lambda: _imap_states(self.db, folders))
        if not isinstance(rows, list):
            why = rows or self._no_answer()
            return [Check(f"imap {source}/{folder}", False, why) for source, folder in folders]
        return [_imap_check(row, self.clock.now()) for row in rows]

    async def _in_thread(self, name: str, work: Callable[[], T]) -> T | str:
        """`work`'s result, or "" when it has not finished within the timeout (it goes on;
        the next call waits for the same one)."""
        future = self._running.get(name)
        if future is None or future.done():
            future = self._running[name] = asyncio.ensure_future(asyncio.to_thread(work))
        done, _ = await asyncio.wait({future}, timeout=self.timeout)
        if not done:
            return ""
        result: T = future.result()  # type: ignore[assignment]  # what `work` returned
        return result

    def _no_answer(self) -> str:
        return f"no answer within {self.timeout:g} s"


def _ping_problem(ping: Callable[[], None]) -> str | None:
    try:
        ping()
    except Exception as exc:
        return one_line(exc)
    return None


def _unwritable(folders: list[Path]) -> str | None:
    for folder in folders:
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".readyz-") as f:
                f.write(b"ready?")
                f.flush()
        except OSError as exc:
            return f"{folder}: {one_line(exc)}"
    return None


def _imap_states(db: Database, folders: list[tuple[str, str]]) -> list[ImapFolderRow] | str:
    try:
        return imap_folder_states(db, folders)
    except Exception as exc:
        return one_line(exc)


def _imap_check(row: ImapFolderRow, now: datetime) -> Check:
    success = _when(row.last_sync_at) if row.last_sync_at else "never"
    error = f", last error: {row.last_error}" if row.last_error else ""
    history = f"last success {success}{error}"
    held = row.reader is not None and row.lease_until is not None and as_utc(row.lease_until) > now
    name = f"imap {row.source}/{row.folder}"
    if row.failing:
        since = _when(row.failing_since) if row.failing_since else "?"
        code = f" ({row.error_code})" if row.error_code else ""
        return Check(
            name,
            False,
            f"failing: {row.failures} attempts in a row since {since}{code}: {row.last_error}",
        )
    if held:
        return Check(name, True, f"read by {row.reader}; {history}")
    return Check(name, False, f"no poller is reading it; {history}")


def _when(moment: datetime) -> str:
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")

"""The only way into the gateway: durable intake with group commit (R8).

A message is acknowledged only once its bytes are fsync'd in a spool segment and its row in
`inbound_messages` is committed. Doing that once per message caps a Python server at about
half of what aiosmtpd can accept, so the writer commits in groups: while one batch is being
written and fsync'd (in a dedicated thread, off the event loop), new arrivals queue up, and
the next batch covers all of them with one fsync and one database commit. Within a batch,
the bytes are made durable (fsync, or the PUT of an object) while its rows are inserted,
and the rows commit once both are done. Measured on PostgreSQL + S3 under load, a batch took
12.6 ms with the PUT (5.7 ms) and the insert (5.5 ms) one after the other, 11.5 ms side by
side (the insert slows while the PUT's thread holds the GIL); the insert's own cost is what
gateway/storage/bulk.py then cut.

One group at a time, even where each group is an object of its own (S3), measured on
PostgreSQL + S3 (issue 14): three groups at once made groups smaller and PUTs three times
as many, and acceptance fell (684-825 msgs/s against 864-983 in alternating runs); the
group commit in a process of its own, off the SMTP server's GIL, took the same 0.6 of a core
between the two processes and no more messages (653-674 against 685-743). Under that load
the server is at ~0.6 of a core and waits on a group's PUT and commit (~7 ms), which
durability before the 250 requires.

A batch holds at most BATCH_BYTES (but always at least the oldest waiting message): the
oldest first, then the smallest of the others. One client sending large messages back to
back would otherwise make every other sender's 250 wait behind group commits carrying tens
of MB of its mail (measured: a 20 KB message's acknowledgement 15-36x slower while one client
sent 1 MB messages over 20 connections; benchmarks/abuse.py). Taking the oldest first keeps
every message moving, however many small ones keep arriving.

Where a group's bytes go is the segment store's business (gateway/storage/rawmail.py: files
in the node's folder, or one object per group in S3-compatible storage). A row is committed
only after the bytes it points at are durable, so a row never points at missing data; bytes
written without a row (a crash between the write and the commit) were never acknowledged and
the sender retries. Segments are kept: the raw message is always kept (R4).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from gateway.storage.db import Database
from gateway.storage.objects import ObjectStoreError
from gateway.storage.queues import inbound as inbound_queue
from gateway.storage.rawmail import Segments

HELO_COLUMN_LENGTH = 255  # inbound_messages.helo


def new_queue_id() -> str:
    """A short unique id, like Postfix's queue ids, shown to the sender in the 250 reply."""
    return secrets.token_hex(8).upper()


@dataclass(frozen=True)
class Arrival:
    """A message as it came in, before it is stored."""

    queue_id: str
    source: str  # smtp | imap
    received_at: datetime
    mail_from: str
    rcpt_tos: Sequence[str]
    content: bytes
    peer: str | None = None
    helo: str | None = None
    source_mailbox: str | None = None
    # A message taken only to be recorded (IMAP mail no address of ours was found in) is
    # stored already rejected, with the reason the firm will read.
    rejected_reason: str | None = None
    sha256: str | None = None  # of `content`, when the caller has it already
    # Set for a message stored rejected (filing never reads it, so never fills them in).
    subject: str | None = None
    header_message_id: str | None = None


# Called inside the batch's transaction with the new row ids, so that what the caller
# records about the batch (an IMAP checkpoint) commits or rolls back with it.
BatchHook = Callable[[Session, list[int]], None]


class SpoolWriter:
    """Synchronous part: lays a batch's bytes out in its segment store and inserts the rows
    while the bytes are made durable (an fsync, a PUT: in a thread of their own, since
    both wait on something else), then commits once both are done."""

    def __init__(self, db: Database, segments: Segments) -> None:
        self.db = db
        self.segments = segments
        self._lock = threading.Lock()
        self._durability = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-sync")

    def store_batch(self, arrivals: Sequence[Arrival], also: BatchHook | None = None) -> list[int]:
        """Durably store every arrival; returns their row ids in order."""
        with self._lock:
            try:
                placed, make_durable = self.segments.lay_out(
                    arrivals[0].received_at, [a.content for a in arrivals]
                )
            except (OSError, ObjectStoreError):
                self.segments.abandon()
                raise
            durable = self._durability.submit(make_durable)
            try:
                with self.db.write() as session:
                    ids = inbound_queue.enqueue(session, _rows(arrivals, placed))
                    if also is not None:
                        also(session, ids)
                    durable.result()  # the bytes are durable before the rows commit
                return ids
            except BaseException:
                # Disk full, I/O error, object store down: what was half-written is never
                # referenced; the next batch starts somewhere fresh (once this one's sync,
                # which may still run after a failed insert, has ended).
                futures.wait([durable])
                if isinstance(durable.exception(), OSError | ObjectStoreError):
                    self.segments.abandon()
                raise

    def close(self) -> None:
        with self._lock:
            self._durability.shutdown(wait=True)
            self.segments.close()


def _rows(arrivals: Sequence[Arrival], placed: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
    return [
        {
            "queue_id": a.queue_id,
            "source": a.source,
            "source_mailbox": a.source_mailbox,
            "received_at": a.received_at,
            "peer": a.peer,
            # A HELO name past its column (no hostname is that long) is kept cut: refusing
            # the row would answer 451 to a message we can store.
            "helo": a.helo[:HELO_COLUMN_LENGTH] if a.helo else a.helo,
            "mail_from": a.mail_from,
            "rcpt_tos": list(a.rcpt_tos),
            "size": len(a.content),
            "sha256": a.sha256 or hashlib.sha256(a.content).hexdigest(),
            "spool_segment": segment,
            "spool_offset": offset,
            "reason": a.rejected_reason,  # refused at intake: stored `rejected`
            "subject": a.subject,
            "header_message_id": a.header_message_id,
        }
        for a, (segment, offset) in zip(arrivals, placed, strict=True)
    ]


# The bytes one group commit carries at most (see the module's docstring).
BATCH_BYTES = 4 * 1024 * 1024
Waiting = tuple[Arrival, "asyncio.Future[int]"]  # a message and its sender's 250, to come


class Spool:
    """Asynchronous front: `await spool.store(arrival)` returns once the message is durable."""

    def __init__(self, writer: SpoolWriter) -> None:
        self.writer = writer
        self._pending: list[Waiting] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        # One thread: batches are written one after another, which is what groups them.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")

    async def store(self, arrival: Arrival) -> int:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._pending.append((arrival, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="spool-writer")
        self._wake.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = next_batch(self._pending)
                self._busy = True
                try:
                    await self._store_group(loop, batch)
                finally:
                    self._busy = False
                # The batch's bytes (up to many large messages) must not wait here, held,
                # for the next arrival: the memory goes back once the senders have left.
                del batch

    async def _store_group(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[Arrival, asyncio.Future[int]]]
    ) -> None:
        """Store a group with one commit; if that fails, store each of its messages alone, so
        that a message whose bytes or row cannot be stored (a value its column cannot hold)
        fails alone (451 for it) and the others of the group are still acknowledged."""
        try:
            ids = await loop.run_in_executor(
                self._executor, self.writer.store_batch, [a for a, _ in batch]
            )
        except Exception as exc:  # nothing of the group was acknowledged
            if len(batch) == 1 or _not_about_one_message(exc):
                for _, future in batch:
                    _settle(future, exc)
                return
            for arrival, future in batch:
                try:
                    [row_id] = await loop.run_in_executor(
                        self._executor, self.writer.store_batch, [arrival]
                    )
                except Exception as alone:  # this one's own failure: it answers 451
                    _settle(future, alone)
                else:
                    _settle(future, row_id)
            return
        for (_, future), row_id in zip(batch, ids, strict=True):
            _settle(future, row_id)

    async def close(self) -> None:
        if self._task is not None:
            # Let the last batch finish: its senders are waiting for their 250.
            while self._pending or self._busy:
                await asyncio.sleep(0.01)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)
        self.writer.close()


def next_batch(pending: list[Waiting]) -> tuple[list[Waiting], list[Waiting]]:
    """(this batch, what waits for the next), both in arrival order, from `pending`
    (oldest first); see the module's docstring."""
    head, others = pending[0], pending[1:]
    size = len(head[0].content)
    taken = {0}
    for index, item in sorted(enumerate(others, 1), key=lambda p: len(p[1][0].content)):
        size += len(item[0].content)
        if size > BATCH_BYTES:
            break
        taken.add(index)
    batch = [p for i, p in enumerate(pending) if i in taken]
    return batch, [p for i, p in enumerate(pending) if i not in taken]


def _not_about_one_message(exc: Exception) -> bool:
    """The object store failing (down, refusing our credentials): storing each message alone
    would only repeat it, one timeout each, so the whole group answers 451 now. (A full disk
    is not this: a large message may not fit where the small ones of its group do.)"""
    return isinstance(exc, ObjectStoreError)


def _settle(future: asyncio.Future[int], outcome: int | BaseException) -> None:
    if future.done():  # its session has gone; nobody waits for the answer
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)

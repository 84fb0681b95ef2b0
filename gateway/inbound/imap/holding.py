"""A poller's hold on its folder's checkpoint: the lease it claims, renews and releases, the
position it advances and the failures it records, every write through the checkpoint queue
(gateway/storage/queues/imap_checkpoints.py)."""

from __future__ import annotations

import contextlib
import time
from datetime import datetime

from sqlalchemy.orm import Session

from gateway.clock import Clock
from gateway.storage.db import Database
from gateway.storage.queues import imap_checkpoints
from gateway.storage.queues.imap_checkpoints import LEASE, Claimant, Resumed

# The process's heartbeat renews the lease too; this keeps `imap sync --once` (no heartbeat)
# holding its mailbox: three renewals a lease.
LEASE_RENEW_SECONDS = LEASE.total_seconds() / 3


class FolderHold:
    """One poller's claim on one (source, folder)."""

    def __init__(self, db: Database, clock: Clock, claimant: Claimant) -> None:
        self.db = db
        self.clock = clock
        self.claimant = claimant
        self._renewed_at = 0.0
        # The checkpoint may count failures of an earlier run: cleared at the first pass.
        self._failures_recorded = True

    def claim(self) -> bool:
        with self.db.write() as s:
            claimed = imap_checkpoints.claim(s, self.claimant, self.clock.now())
        self._renewed_at = time.monotonic()
        return claimed

    def resume(self, uidvalidity: int) -> Resumed:
        with self.db.write() as s:
            return imap_checkpoints.resume(s, self.claimant, uidvalidity)

    def renew(self) -> None:
        if time.monotonic() - self._renewed_at < LEASE_RENEW_SECONDS:
            return
        with self.db.write() as s:
            imap_checkpoints.renew(s, self.claimant, self.clock.now())
        self._renewed_at = time.monotonic()

    def advance(self, s: Session, last_uid: int, now: datetime) -> None:
        """In the transaction that stored the batch up to `last_uid`."""
        imap_checkpoints.advance(s, self.claimant, last_uid, now)
        self._renewed_at = time.monotonic()

    def release(self) -> None:
        with contextlib.suppress(Exception), self.db.write() as s:
            imap_checkpoints.release(s, self.claimant)

    def record_error(self, text: str, code: str | None, *, session_ended: bool) -> None:
        with contextlib.suppress(Exception), self.db.write() as s:
            imap_checkpoints.record_error(
                s, self.claimant, text, self.clock.now(), code=code, session_ended=session_ended
            )
        self._failures_recorded = self._failures_recorded or session_ended

    def recovered(self) -> None:
        """After a whole pass: clear the failing state (once, unless a failure set it)."""
        if self._failures_recorded:
            with self.db.write() as s:
                imap_checkpoints.recovered(s, self.claimant)
            self._failures_recorded = False

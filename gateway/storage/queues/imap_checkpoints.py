"""The IMAP mailbox checkpoints: how far each (source, folder) has been read, and which
poller reads it now. Every write to `imap_checkpoints` is made here.

A checkpoint row is created by the first claim of its mailbox and is never deleted:

    (no row) ──claim──> held ──release──> free ──claim──> held …
                         │
                         │ the holder: resume, renew, advance, record_error, recovered
                         │ (lease extended by renew and advance)
                         ▼
                       expired ──claim by another poller──> held by that poller
                         │                                  (the old holder is refused)
                         └──claim, renew or advance by the holder──> held again

- free: `claimed_by` is NULL (never claimed since the row was made, or released). Any
  poller may claim it.
- held: `claimed_by` names a poller (node:pid:source) and `lease_until` is ahead. Only that
  poller's claim succeeds; it renews the lease while it waits for mail, and each advance
  (a batch stored) extends it.
- expired: `lease_until` has passed: the holder died or hung. Any poller may claim it.
  Until one does, the row is still the holder's: a batch slower than the lease loses
  nothing.

Guards. The claim is the one statement of every queue (`queues.base.claim`): a guarded
UPDATE … RETURNING that matches only a claimable row (free, already ours, or expired); on
PostgreSQL the row is picked inside it by SELECT … FOR UPDATE SKIP LOCKED, so a claimant
never waits behind a holder's open transaction, and of two claimants at once exactly one
gets the row. Only when the mailbox
has no row yet does the claim insert it (INSERT … ON CONFLICT DO NOTHING: of two first
claimants, one creates and holds it). Every later write is one UPDATE … WHERE source,
folder AND claimed_by = that poller: once another poller has taken the checkpoint over, the
old holder's writes match nothing. `resume`, `renew` and `advance` then raise `LeaseLost`
(logged, with the new holder) and change nothing; `record_error` and `release` change
nothing and say so by their result.

The position is (UIDVALIDITY, last UID): UIDs mean something only with their UIDVALIDITY,
and `last_uid` is the highest UID taken under it. A new UIDVALIDITY (the folder was
recreated) starts over from UID 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from gateway.errors import GatewayError
from gateway.storage.db import upsert_insert
from gateway.storage.models import ImapCheckpoint
from gateway.storage.queues.base import LEASE, Leases, log_takeovers, rows_changed
from gateway.storage.queues.base import claim as claim_rows

log = structlog.get_logger("gateway.imap")

__all__ = ["FAILING_AFTER", "LEASE", "LEASES", "LeaseLost"]

# Sessions ended by an error in a row before a folder reads as failing: one dropped
# connection is weather, three are a problem an admin should see.
FAILING_AFTER = 3

# A poller holds its mailbox for hours: its process's heartbeat renews the lease (`LEASE`,
# as every queue's), so a dead poller's mailbox is picked up again within a minute.
LEASES = Leases(ImapCheckpoint)


class LeaseLost(GatewayError):
    """Another poller took this mailbox over (our lease expired): stop at once."""


@dataclass(frozen=True)
class Claimant:
    """A poller reading one mailbox folder: the checkpoint's key, and the name the poller
    writes in `claimed_by` (unique per process: node:pid:source)."""

    source: str
    folder: str
    poller: str

    @property
    def mailbox(self) -> str:
        return f"{self.source}/{self.folder}"


@dataclass(frozen=True)
class Resumed:
    """Where reading resumes in a folder just opened."""

    last_uid: int  # the highest UID taken under the folder's UIDVALIDITY (0: from the start)
    previous_uidvalidity: int | None  # the checkpoint's before; differs: folder recreated


def _this_mailbox(who: Claimant) -> ColumnElement[bool]:
    return and_(ImapCheckpoint.source == who.source, ImapCheckpoint.folder == who.folder)


def _held_by(who: Claimant) -> ColumnElement[bool]:
    return and_(_this_mailbox(who), ImapCheckpoint.claimed_by == who.poller)


def _claimable(who: Claimant, now: datetime) -> ColumnElement[bool]:
    return and_(
        _this_mailbox(who),
        or_(
            ImapCheckpoint.claimed_by.is_(None),
            ImapCheckpoint.claimed_by == who.poller,
            ImapCheckpoint.lease_until < now,
        ),
    )


def claim(s: Session, who: Claimant, now: datetime) -> bool:
    """Take the checkpoint with a lease of `LEASE` from `now`, creating it on first use.
    False when another poller holds it and its lease has not expired."""
    claimable = _claimable(who, now)
    claimed = claim_rows(
        s,
        ImapCheckpoint,
        select(ImapCheckpoint.id).where(claimable),
        claimable,
        claimed_by=who.poller,
        lease_until=now + LEASE,
    )
    if claimed:
        log_takeovers(f"imap_checkpoints {who.mailbox}", claimed, who.poller)
        return True
    exists = s.execute(select(ImapCheckpoint.id).where(_this_mailbox(who))).first()
    if exists is not None:
        return False
    created = s.execute(
        upsert_insert(s)(ImapCheckpoint)
        .values(
            source=who.source,
            folder=who.folder,
            last_uid=0,
            claimed_by=who.poller,
            lease_until=now + LEASE,
        )
        .on_conflict_do_nothing()
        .returning(ImapCheckpoint.id)
    ).first()
    return created is not None


def resume(s: Session, who: Claimant, uidvalidity: int) -> Resumed:
    """The folder was opened with `uidvalidity`: where to resume. A new UIDVALIDITY moves
    the checkpoint to it and back to UID 0 (old UIDs mean nothing under the new one)."""
    row = s.execute(
        select(ImapCheckpoint.uidvalidity, ImapCheckpoint.last_uid).where(_held_by(who))
    ).first()
    if row is None:
        raise _refused(s, who, "resume")
    previous, last_uid = row
    if previous == uidvalidity:
        return Resumed(last_uid=int(last_uid), previous_uidvalidity=previous)
    _guarded(s, who, "resume", uidvalidity=uidvalidity, last_uid=0)
    return Resumed(last_uid=0, previous_uidvalidity=previous)


def renew(s: Session, who: Claimant, now: datetime) -> None:
    """Extend the holder's lease to `LEASE` from `now`."""
    _guarded(s, who, "renew", lease_until=now + LEASE)


def advance(s: Session, who: Claimant, last_uid: int, now: datetime) -> None:
    """Every UID up to `last_uid` is taken: move the checkpoint there (in the transaction
    that stored them), extend the lease, note the sync and clear the last error."""
    _guarded(
        s,
        who,
        "advance",
        last_uid=last_uid,
        lease_until=now + LEASE,
        last_sync_at=now,
        last_error=None,
        failures=0,
        failing_since=None,
        error_code=None,
    )


def record_error(
    s: Session,
    who: Claimant,
    error: str,
    now: datetime,
    *,
    code: str | None = None,
    session_ended: bool = True,
) -> bool:
    """Note what went wrong last (shown by `gateway imap status`). A session that ended in
    it counts one more failure in a row (from `FAILING_AFTER`, the folder is failing) and
    keeps the provider's error `code`. False when `who` does not hold the checkpoint: its
    error is not the holder's to show."""
    values: dict[str, Any] = {"last_error": error}
    if session_ended:
        values |= {
            "failures": ImapCheckpoint.failures + 1,
            "failing_since": func.coalesce(ImapCheckpoint.failing_since, now),
            "error_code": code,
        }
    return _held_write(s, who, **values)


def recovered(s: Session, who: Claimant) -> bool:
    """A whole pass went through: no longer failing (the last error stays, as history)."""
    return _held_write(s, who, failures=0, failing_since=None, error_code=None)


def release(s: Session, who: Claimant) -> bool:
    """Free the checkpoint for any poller. False when `who` no longer held it."""
    return _held_write(s, who, claimed_by=None, lease_until=None)


def _held_write(s: Session, who: Claimant, **values: Any) -> bool:
    """One UPDATE guarded by the claimant; False when `who` does not hold the checkpoint."""
    return rows_changed(s, update(ImapCheckpoint).where(_held_by(who)).values(**values)) == 1


def _guarded(s: Session, who: Claimant, what: str, **values: Any) -> None:
    if not _held_write(s, who, **values):
        raise _refused(s, who, what)


def _refused(s: Session, who: Claimant, what: str) -> LeaseLost:
    holder = s.execute(select(ImapCheckpoint.claimed_by).where(_this_mailbox(who))).scalar()
    log.warning(
        "imap_checkpoint_refused",
        source=who.source,
        folder=who.folder,
        poller=who.poller,
        write=what,
        held_by=holder,
    )
    return LeaseLost(f"{who.mailbox}: now read by {holder or 'no poller'}, not {who.poller}")

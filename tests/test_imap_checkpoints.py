"""The IMAP checkpoint queue (gateway/storage/queues/imap_checkpoints.py), on SQLite and
PostgreSQL: the claim and its lease, take-over of an expired lease, the refusal of a poller
whose checkpoint was taken over, and claimants racing for one checkpoint."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from gateway.app import Gateway
from gateway.clock import as_utc
from gateway.storage.models import ImapCheckpoint
from gateway.storage.queues import imap_checkpoints
from gateway.storage.queues.imap_checkpoints import LEASE, Claimant, LeaseLost
from tests.support import FixedClock

A = Claimant("factures", "INBOX", "node-a:100:factures")
B = Claimant("factures", "INBOX", "node-b:200:factures")


def _claim(gw: Gateway, who: Claimant, clock: FixedClock) -> bool:
    with gw.db.write() as s:
        return imap_checkpoints.claim(s, who, clock.now())


def _row(gw: Gateway, who: Claimant = A) -> ImapCheckpoint:
    with gw.db.read() as s:
        return s.execute(
            select(ImapCheckpoint).where(
                ImapCheckpoint.source == who.source, ImapCheckpoint.folder == who.folder
            )
        ).scalar_one()


def _failing(gw: Gateway, who: Claimant = A) -> dict[str, Any]:
    row = _row(gw, who)
    since = as_utc(row.failing_since) if row.failing_since else None
    return {"failures": row.failures, "failing_since": since, "error_code": row.error_code}


def _state(gw: Gateway, who: Claimant = A) -> dict[str, Any]:
    row = _row(gw, who)
    return {
        "uidvalidity": row.uidvalidity,
        "last_uid": row.last_uid,
        "claimed_by": row.claimed_by,
        "lease_until": as_utc(row.lease_until) if row.lease_until else None,
        "last_sync_at": as_utc(row.last_sync_at) if row.last_sync_at else None,
        "last_error": row.last_error,
    }


def test_claim_creates_the_checkpoint_and_sets_the_lease(gw: Gateway, clock: FixedClock) -> None:
    assert _claim(gw, A, clock)
    assert _state(gw) == {
        "uidvalidity": None,
        "last_uid": 0,
        "claimed_by": A.poller,
        "lease_until": clock.now() + LEASE,
        "last_sync_at": None,
        "last_error": None,
    }
    clock.advance(seconds=30)
    assert _claim(gw, A, clock)  # the holder may claim again: its lease starts over
    assert _state(gw)["lease_until"] == clock.now() + LEASE


def test_a_second_claimant_is_refused_while_the_lease_holds_and_wins_once_it_expired(
    gw: Gateway, clock: FixedClock
) -> None:
    assert _claim(gw, A, clock)
    held = _state(gw)
    assert not _claim(gw, B, clock)
    clock.advance(seconds=LEASE.total_seconds() - 1)
    assert not _claim(gw, B, clock)
    assert _state(gw) == held  # a refused claim changes nothing

    clock.advance(seconds=2)  # A died: its lease ran out
    assert _claim(gw, B, clock)
    assert _state(gw)["claimed_by"] == B.poller
    assert _state(gw)["lease_until"] == clock.now() + LEASE
    assert not _claim(gw, A, clock)  # and now A is the one refused


def test_other_mailboxes_are_claimed_independently(gw: Gateway, clock: FixedClock) -> None:
    assert _claim(gw, A, clock)
    other_folder = Claimant(A.source, "Factures", B.poller)
    other_source = Claimant("achats", A.folder, B.poller)
    assert _claim(gw, other_folder, clock)
    assert _claim(gw, other_source, clock)
    assert _state(gw)["claimed_by"] == A.poller


def test_a_poller_whose_checkpoint_was_taken_over_is_refused_and_nothing_changes(
    gw: Gateway, clock: FixedClock
) -> None:
    assert _claim(gw, A, clock)
    with gw.db.write() as s:
        assert imap_checkpoints.resume(s, A, 7).last_uid == 0
        imap_checkpoints.advance(s, A, 10, clock.now())
    clock.advance(minutes=3)
    assert _claim(gw, B, clock)
    taken_over = _state(gw)
    assert taken_over["last_uid"] == 10 and taken_over["claimed_by"] == B.poller

    clock.advance(seconds=5)
    with capture_logs() as logs, pytest.raises(LeaseLost), gw.db.write() as s:
        imap_checkpoints.advance(s, A, 20, clock.now())
    assert [e for e in logs if e["event"] == "imap_checkpoint_refused"] == [
        {
            "event": "imap_checkpoint_refused",
            "log_level": "warning",
            "source": A.source,
            "folder": A.folder,
            "poller": A.poller,
            "write": "advance",
            "held_by": B.poller,
        }
    ]
    with pytest.raises(LeaseLost), gw.db.write() as s:
        imap_checkpoints.renew(s, A, clock.now())
    with pytest.raises(LeaseLost), gw.db.write() as s:
        imap_checkpoints.resume(s, A, 8)
    with gw.db.write() as s:
        assert not imap_checkpoints.record_error(s, A, "connection refused", clock.now())
        assert not imap_checkpoints.release(s, A)
    assert _state(gw) == taken_over


def test_an_expired_lease_nobody_took_is_still_the_holders(gw: Gateway, clock: FixedClock) -> None:
    # A batch slower than the lease loses nothing while no other poller has claimed.
    assert _claim(gw, A, clock)
    clock.advance(minutes=3)
    with gw.db.write() as s:
        imap_checkpoints.resume(s, A, 7)
        imap_checkpoints.advance(s, A, 4, clock.now())
    state = _state(gw)
    assert state["last_uid"] == 4 and state["lease_until"] == clock.now() + LEASE
    assert not _claim(gw, B, clock)


def test_resume_under_a_new_uidvalidity_starts_over(gw: Gateway, clock: FixedClock) -> None:
    assert _claim(gw, A, clock)
    with gw.db.write() as s:
        first = imap_checkpoints.resume(s, A, 7)
        imap_checkpoints.advance(s, A, 12, clock.now())
    assert (first.previous_uidvalidity, first.last_uid) == (None, 0)
    with gw.db.write() as s:
        again = imap_checkpoints.resume(s, A, 7)
    assert (again.previous_uidvalidity, again.last_uid) == (7, 12)
    with gw.db.write() as s:
        recreated = imap_checkpoints.resume(s, A, 8)
    assert (recreated.previous_uidvalidity, recreated.last_uid) == (7, 0)
    assert (_state(gw)["uidvalidity"], _state(gw)["last_uid"]) == (8, 0)


def test_renew_error_advance_and_release(gw: Gateway, clock: FixedClock) -> None:
    assert _claim(gw, A, clock)
    clock.advance(seconds=60)
    with gw.db.write() as s:
        imap_checkpoints.renew(s, A, clock.now())
        assert imap_checkpoints.record_error(
            s, A, "no answer from imap.example.net:993", clock.now()
        )
    first_failure = clock.now()
    assert _state(gw)["lease_until"] == clock.now() + LEASE
    assert _state(gw)["last_error"] == "no answer from imap.example.net:993"
    assert _failing(gw) == {"failures": 1, "failing_since": first_failure, "error_code": None}
    clock.advance(seconds=60)
    with gw.db.write() as s:
        assert imap_checkpoints.record_error(s, A, "token refused", clock.now(), code="AADSTS70008")
        # A refused move while reading goes on: said, not counted as a failed session.
        assert imap_checkpoints.record_error(s, A, "move refused", clock.now(), session_ended=False)
    assert _failing(gw) == {
        "failures": 2,
        "failing_since": first_failure,
        "error_code": "AADSTS70008",
    }
    assert _state(gw)["last_error"] == "move refused"
    with gw.db.write() as s:
        assert imap_checkpoints.recovered(s, A)
    assert _failing(gw) == {"failures": 0, "failing_since": None, "error_code": None}
    assert _state(gw)["last_error"] == "move refused"  # kept as history
    with gw.db.write() as s:
        imap_checkpoints.record_error(s, A, "again", clock.now(), code="invalid_grant")
    with gw.db.write() as s:
        imap_checkpoints.resume(s, A, 7)
        imap_checkpoints.advance(s, A, 3, clock.now())
    assert _state(gw)["last_error"] is None  # a batch stored: the error is over
    assert _failing(gw) == {"failures": 0, "failing_since": None, "error_code": None}
    assert _state(gw)["last_sync_at"] == clock.now()

    with gw.db.write() as s:
        assert imap_checkpoints.release(s, A)
    assert _state(gw)["claimed_by"] is None and _state(gw)["lease_until"] is None
    assert _state(gw)["last_uid"] == 3  # the position stays
    assert _claim(gw, B, clock)  # free: any poller takes it at once


def _race(gw: Gateway, clock: FixedClock, claimants: list[Claimant]) -> list[Claimant]:
    """Every claimant claims at the same moment, each in its own thread and transaction."""
    barrier = threading.Barrier(len(claimants))
    won: list[Claimant] = []
    errors: list[BaseException] = []

    def attempt(who: Claimant) -> None:
        try:
            barrier.wait(timeout=10)
            if _claim(gw, who, clock):
                won.append(who)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=attempt, args=(who,)) for who in claimants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    return won


def test_two_claimants_at_once_never_both_hold_a_checkpoint(gw: Gateway, clock: FixedClock) -> None:
    for n in range(8):
        folder = f"Factures-{n}"
        a, b = Claimant(A.source, folder, A.poller), Claimant(B.source, folder, B.poller)
        for stage in ("new", "free", "expired"):
            if stage == "free":
                with gw.db.write() as s:
                    imap_checkpoints.release(s, _row_holder(gw, a))
            if stage == "expired":
                clock.advance(minutes=3)
            won = _race(gw, clock, [a, b])
            assert len(won) == 1, (folder, stage, won)
            assert _row(gw, a).claimed_by == won[0].poller


def _row_holder(gw: Gateway, who: Claimant) -> Claimant:
    holder = _row(gw, who).claimed_by
    assert holder is not None
    return Claimant(who.source, who.folder, holder)


def test_a_claimant_does_not_wait_behind_a_holders_open_transaction(
    gw: Gateway, clock: FixedClock
) -> None:
    if gw.db.is_sqlite:
        pytest.skip("SQLite has one writer at a time: a second claimant waits its turn")
    assert _claim(gw, A, clock)
    with gw.db.write() as s:
        imap_checkpoints.release(s, A)
    outcome: list[bool] = []
    with gw.db.write() as s:
        assert imap_checkpoints.claim(s, A, clock.now())  # row locked until this commits
        other = threading.Thread(target=lambda: outcome.append(_claim(gw, B, clock)))
        other.start()
        other.join(timeout=10)
        assert outcome == [False]  # skipped the locked row instead of waiting for it
    assert _row(gw).claimed_by == A.poller

"""The registry of processes and their heartbeats (`gateway/storage/processes.py`): a live
process keeps its claims however long its work takes; a dead one's are taken over once
their lease runs out, saying from whom; a restarted serve takes its node's back at once."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from gateway.storage import processes
from gateway.storage.db import Database
from gateway.storage.models import InboundMessage, MessageStatus
from gateway.storage.queues import imap_checkpoints
from gateway.storage.queues import inbound as inbound_queue
from gateway.storage.queues.imap_checkpoints import Claimant
from tests.test_filing import arrive

LEASE = inbound_queue.LEASE.total_seconds()


def _message(gw: Any, clock: Any) -> int:
    return arrive(gw, ["compta+dupont-maconnerie@welyb.fr"], b"Subject: x\r\n\r\nx\r\n", clock)


def _register(gw: Any, clock: Any, name: str, node: str = "n1", role: str = "filing") -> None:
    with gw.db.write() as s:
        processes.register(s, name, node, role, clock.now())


def _claim(gw: Any, clock: Any, worker: str) -> list[int]:
    with gw.db.write() as s:
        return inbound_queue.claim_waiting(s, worker, clock.now(), 10)


def _beat(gw: Any, clock: Any, name: str) -> int:
    with gw.db.write() as s:
        return processes.beat(s, name, clock.now())


def _holder(gw: Any, row: int) -> tuple[str, str | None]:
    with gw.db.read() as s:
        m = s.get(InboundMessage, row)
        assert m is not None
        return m.status, m.claimed_by


def test_a_beating_process_keeps_its_claims_however_long_it_works(gw, clock):
    row = _message(gw, clock)
    _register(gw, clock, "n1:10:aa")
    assert _claim(gw, clock, "n1:10:aa") == [row]
    for _ in range(10):  # five minutes of work, a beat every 10 s … here every 0.8 lease
        clock.advance(seconds=LEASE * 0.8)
        assert _beat(gw, clock, "n1:10:aa") == 1
        assert _claim(gw, clock, "n2:20:bb") == []
    assert _holder(gw, row) == (MessageStatus.FILING, "n1:10:aa")


def test_a_silent_process_loses_its_claims_and_the_taker_says_from_whom(gw, clock):
    row = _message(gw, clock)
    _register(gw, clock, "n1:10:aa")
    _claim(gw, clock, "n1:10:aa")
    clock.advance(seconds=LEASE - 1)
    assert _claim(gw, clock, "n2:20:bb") == []  # not yet
    clock.advance(seconds=2)
    assert _claim(gw, clock, "n2:20:bb") == [row]
    with gw.db.read() as s:
        details = [e.detail for e in inbound_queue.history(s, row)]
    assert details[-1] == "taken over from n1:10:aa by n2:20:bb"
    # The late beat of the process taken over revives nothing.
    assert _beat(gw, clock, "n1:10:aa") == 0
    assert _holder(gw, row) == (MessageStatus.FILING, "n2:20:bb")


def test_an_expired_lease_is_not_revived_by_a_late_beat(gw, clock):
    row = _message(gw, clock)
    _claim(gw, clock, "n1:10:aa")
    clock.advance(seconds=LEASE + 1)
    assert _beat(gw, clock, "n1:10:aa") == 0
    assert _claim(gw, clock, "n2:20:bb") == [row]


def test_released_claims_are_free_at_once_for_any_worker(gw, clock):
    """After a failed pass (the database was away), a worker releases what it holds as soon
    as the database answers: nobody waits for its lease."""
    first, second = _message(gw, clock), _message(gw, clock)
    _claim(gw, clock, "n1:10:aa")
    with gw.db.write() as s:
        assert processes.release(s, "n1:10:aa", clock.now()) == 2
    clock.advance(seconds=0.001)
    assert _claim(gw, clock, "n2:20:bb") == [first, second]
    with gw.db.write() as s:  # nothing of n1's is left to release
        assert processes.release(s, "n1:10:aa", clock.now()) == 0


def test_a_restarted_serve_takes_back_what_its_node_held_and_nothing_else(gw, clock):
    mine, theirs = _message(gw, clock), _message(gw, clock)
    _register(gw, clock, "n1:10:aa")
    _register(gw, clock, "n2:20:bb", node="n2")
    assert _claim(gw, clock, "n1:10:aa") == [mine, theirs]
    with gw.db.write() as s:  # hand `theirs` to the other node, as if it had claimed it
        inbound_queue.release_after_failure(
            s, theirs, "n1:10:aa", "x", clock.now(), retry_at=clock.now()
        )
    clock.advance(seconds=0.001)
    assert _claim(gw, clock, "n2:20:bb") == [theirs]
    _register(gw, clock, "n1:11:cc", role="smtp")
    with gw.db.write() as s:
        assert processes.take_back(s, "n1", "n1:11:cc", clock.now()) == ["n1:10:aa"]
    clock.advance(seconds=0.001)
    assert _claim(gw, clock, "n1:12:dd") == [mine]  # at once, not after the lease
    assert _holder(gw, theirs) == (MessageStatus.FILING, "n2:20:bb")
    with gw.db.read() as s:
        shown = {p.name: p.alive for p in processes.listing(s, clock.now(), include_stopped=True)}
    assert shown == {"n1:10:aa": False, "n2:20:bb": True, "n1:11:cc": True}


def test_an_imap_poller_s_mailbox_is_kept_by_its_process_heartbeat(gw, clock):
    poller = Claimant("boite", "INBOX", "n1:10:aa:boite")
    other = Claimant("boite", "INBOX", "n2:20:bb:boite")
    with gw.db.write() as s:
        assert imap_checkpoints.claim(s, poller, clock.now())
    clock.advance(seconds=LEASE * 0.8)
    assert _beat(gw, clock, "n1:10:aa") == 1  # the process's beat renews its pollers' leases
    clock.advance(seconds=LEASE * 0.8)
    with gw.db.write() as s:
        assert not imap_checkpoints.claim(s, other, clock.now())
    clock.advance(seconds=LEASE)
    with gw.db.write() as s:
        assert imap_checkpoints.claim(s, other, clock.now())


def test_the_heartbeat_thread_registers_beats_and_stops(gw, clock):
    row = _message(gw, clock)
    heartbeat = processes.Heartbeat(gw.db, clock, "n1:10:aa", "n1", "filing")
    heartbeat.start()
    try:
        _claim(gw, clock, "n1:10:aa")
        clock.advance(seconds=LEASE * 0.8)
        heartbeat.beat_once()
        clock.advance(seconds=LEASE * 0.8)
        assert _claim(gw, clock, "n2:20:bb") == []
        with gw.db.read() as s:
            [state] = processes.alive(s, clock.now())
        assert (state.name, state.role, state.alive) == ("n1:10:aa", "filing", True)
    finally:
        heartbeat.stop()
    clock.advance(seconds=0.001)
    assert _claim(gw, clock, "n2:20:bb") == [row]  # a clean stop released it
    with gw.db.read() as s:
        assert processes.alive(s, clock.now()) == []


def test_a_failing_beat_is_tried_again_on_the_next(gw, clock, free_port_url):
    row = _message(gw, clock)
    heartbeat = processes.Heartbeat(gw.db, clock, "n1:10:aa", "n1", "filing")
    heartbeat.start()
    heartbeat.stop()
    _claim(gw, clock, "n1:10:aa")
    heartbeat.db = Database(free_port_url)  # a PostgreSQL nobody listens for: refused
    heartbeat.beat_once()
    assert heartbeat.failing
    heartbeat.db = gw.db  # the database is back before the lease ran out
    clock.advance(seconds=LEASE * 0.8)
    heartbeat.beat_once()
    assert not heartbeat.failing
    clock.advance(seconds=LEASE * 0.8)
    assert _claim(gw, clock, "n2:20:bb") == []
    assert _holder(gw, row) == (MessageStatus.FILING, "n1:10:aa")


@pytest.fixture
def free_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/nothing"

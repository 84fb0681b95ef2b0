"""The queue modules (gateway/storage/queues/): each allowed transition works, a disallowed one
raises, a worker whose claim was taken over is refused, the database refuses an unknown
status, and concurrent claims on PostgreSQL never come back empty-handed or overlap."""

from __future__ import annotations

import threading
from datetime import timedelta
from enum import StrEnum
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.storage.connections import add_connection, add_document, set_switch
from gateway.storage.models import (
    BotMail,
    BotMailForward,
    Delivery,
    DeliveryStatus,
    ForwardStatus,
    ImapOutcome,
    InboundMessage,
    MessageStatus,
)
from gateway.storage.queues import deliveries, forwards
from gateway.storage.queues import inbound as inbound_queue
from gateway.storage.queues.base import TransitionError
from tests.test_filing import arrive

ACHATS = "Dossier comptable annuel/2026/Achats"


# -- helpers: rows put in a given state directly (a test may; the gateway may not) ----------


def _force(gw: Any, model: Any, row_id: int, **values: Any) -> None:
    with gw.db.write() as s:
        s.execute(update(model).where(model.id == row_id).values(**values))


def _status(gw: Any, model: Any, row_id: int) -> tuple[str, str | None]:
    with gw.db.read() as s:
        row = s.execute(select(model.status, model.claimed_by).where(model.id == row_id)).one()
    return row[0], row[1]


def _disallowed(table: dict[Any, frozenset[Any]], enum: type[StrEnum]) -> list[tuple[Any, Any]]:
    return [(a, b) for a in table for b in enum if b not in table[a]]


def _allowed(table: dict[Any, frozenset[Any]]) -> list[tuple[Any, Any]]:
    return [(a, b) for a, targets in table.items() for b in sorted(targets)]


# -- deliveries --------------------------------------------------------------------------------


def _delivery(gw: Any, clock: Any, tmp_path: Any, n: int = 1) -> list[int]:
    add_connection(
        gw.db, gw.grammar, "dupont-maconnerie", "meg", "meg+macon-dupont@welyb.fr", clock.now()
    )
    set_switch(gw.db, "dupont-maconnerie", ACHATS, "meg", True, clock.now(), create_folder=True)
    clock.advance(minutes=1)
    ids: list[int] = []
    for i in range(n):
        path = tmp_path / f"f{i}.pdf"
        path.write_bytes(b"%PDF-1.4 " + str(i).encode())
        _, created = add_document(
            gw.db, gw.grammar, gw.blobs, "dupont-maconnerie", ACHATS + "/11", path, clock.now()
        )
        ids.extend(created.ids)
    return ids


@pytest.mark.parametrize(("source", "target"), _allowed(deliveries.ALLOWED))
def test_every_allowed_delivery_transition_works_and_is_recorded(
    gw, clock, tmp_path, source, target
):
    [d] = _delivery(gw, clock, tmp_path)
    _force(gw, Delivery, d, status=source)
    with gw.db.write() as s:
        deliveries.transition(s, d, [source], target, clock.now(), "test")
    assert _status(gw, Delivery, d)[0] == target
    with gw.db.read() as s:
        last = deliveries.history(s, d)[-1]
    assert (last.from_status, last.to_status) == (source, target)


@pytest.mark.parametrize(("source", "target"), _disallowed(deliveries.ALLOWED, DeliveryStatus)[:12])
def test_a_disallowed_delivery_transition_raises_and_changes_nothing(
    gw, clock, tmp_path, source, target
):
    [d] = _delivery(gw, clock, tmp_path)
    _force(gw, Delivery, d, status=source)
    with pytest.raises(TransitionError), gw.db.write() as s:
        deliveries.transition(s, d, [source], target, clock.now())
    assert _status(gw, Delivery, d)[0] == source


def test_a_sender_whose_claim_was_taken_over_cannot_record(gw, clock, tmp_path):
    [d] = _delivery(gw, clock, tmp_path)
    clock.advance(hours=1)  # due
    with gw.db.write() as s:
        assert deliveries.claim_due(s, "dead", clock.now(), limit=10) == [d]
    clock.advance(seconds=deliveries.LEASE.total_seconds() + 1)
    with gw.db.write() as s:
        assert deliveries.claim_due(s, "alive", clock.now(), limit=10) == [d]
    late = deliveries.Move(d, DeliveryStatus.SENT, "250 ok", {"reason": "250 ok"})
    with gw.db.write() as s:
        refused = deliveries.transition_many(
            s, DeliveryStatus.SENDING, [late], clock.now(), claimant="dead"
        )
    assert refused == [late]
    assert _status(gw, Delivery, d) == (DeliveryStatus.SENDING, "alive")
    with gw.db.write() as s:
        assert (
            deliveries.transition_many(
                s, DeliveryStatus.SENDING, [late], clock.now(), claimant="alive"
            )
            == []
        )
    assert _status(gw, Delivery, d)[0] == DeliveryStatus.SENT


def test_a_delivery_is_created_only_queued_or_skipped(gw, clock, tmp_path):
    [d] = _delivery(gw, clock, tmp_path)
    with gw.db.read() as s:
        document_id, connection_id = s.execute(
            select(Delivery.document_id, Delivery.connection_id).where(Delivery.id == d)
        ).one()
    with pytest.raises(TransitionError, match="starts queued or skipped"), gw.db.write() as s:
        deliveries.create(
            s, document_id, connection_id, DeliveryStatus.SENT, clock.now(), None, "x", clock.now()
        )


# -- bot-mail forwards -------------------------------------------------------------------------


def _forward(gw: Any, clock: Any) -> int:
    row = arrive(gw, ["myunisoft+aecconseil@welyb.fr"], b"Subject: hi\r\n\r\nbody\r\n", clock)
    with gw.db.write() as s:
        mail = BotMail(
            inbound_message_id=row,
            cabinet_id=None,
            recipient="myunisoft+aecconseil@welyb.fr",
            mail_from="x@example.org",
            received_at=clock.now(),
        )
        s.add(mail)
        s.flush()
        forward = BotMailForward(
            bot_mail_id=mail.id,
            to_address="contact@aecconseil.fr",
            status=ForwardStatus.QUEUED,
            due_at=clock.now(),
            attempts=0,
            created_at=clock.now(),
        )
        s.add(forward)
        s.flush()
        return forward.id


@pytest.mark.parametrize(("source", "target"), _allowed(forwards.ALLOWED))
def test_every_allowed_forward_transition_works(gw, clock, source, target):
    f = _forward(gw, clock)
    _force(gw, BotMailForward, f, status=source)
    with gw.db.write() as s:
        forwards.transition(s, f, [source], target, clock.now())
    assert _status(gw, BotMailForward, f)[0] == target
    with gw.db.read() as s:
        last = forwards.history(s, f)[-1]
    assert (last.from_status, last.to_status) == (source, target)


@pytest.mark.parametrize(("source", "target"), _disallowed(forwards.ALLOWED, ForwardStatus))
def test_a_disallowed_forward_transition_raises(gw, clock, source, target):
    f = _forward(gw, clock)
    _force(gw, BotMailForward, f, status=source)
    with pytest.raises(TransitionError, match="no forward transition"), gw.db.write() as s:
        forwards.transition(s, f, [source], target, clock.now())
    assert _status(gw, BotMailForward, f)[0] == source


def test_a_forwarder_whose_claim_was_taken_over_is_refused(gw, clock):
    f = _forward(gw, clock)
    with gw.db.write() as s:
        assert forwards.claim_due(s, "dead", clock.now(), limit=5) == [f]
    clock.advance(seconds=forwards.LEASE.total_seconds() + 1)
    with gw.db.write() as s:
        assert forwards.claim_due(s, "alive", clock.now(), limit=5) == [f]
    with pytest.raises(TransitionError, match="held by alive"), gw.db.write() as s:
        forwards.transition(
            s, f, [ForwardStatus.SENDING], ForwardStatus.SENT, clock.now(), claimed_by="dead"
        )
    assert _status(gw, BotMailForward, f) == (ForwardStatus.SENDING, "alive")
    with gw.db.read() as s:
        story = [(e.to_status, e.detail) for e in forwards.history(s, f)]
    assert story == [("sending", "claimed by dead"), ("sending", "taken over from dead by alive")]


# -- inbound messages --------------------------------------------------------------------------


def _claimed_message(gw: Any, clock: Any, worker: str = "w1") -> int:
    row = arrive(gw, ["compta+dupont-maconnerie@welyb.fr"], b"Subject: x\r\n\r\nx\r\n", clock)
    with gw.db.write() as s:
        assert inbound_queue.claim_waiting(s, worker, clock.now(), 10) == [row]
    return row


@pytest.mark.parametrize("final", sorted(inbound_queue.STATES.allowed[MessageStatus.FILING]))
def test_every_end_of_filing_is_written_by_its_claimant(gw, clock, final):
    row = _claimed_message(gw, clock)
    with gw.db.write() as s:
        if final == MessageStatus.FILING:
            inbound_queue.release_after_failure(
                s, row, "w1", "boom", clock.now(), retry_at=clock.now() + timedelta(seconds=30)
            )
        elif final == MessageStatus.HELD:
            inbound_queue.release_after_failure(s, row, "w1", "boom", clock.now(), retry_at=None)
        else:
            inbound_queue.finish(s, row, "w1", final, clock.now(), reason="done")
    assert _status(gw, InboundMessage, row)[0] == final
    with gw.db.read() as s:
        moves = [(e.from_status, e.to_status) for e in inbound_queue.history(s, row)]
    assert moves == [(None, MessageStatus.FILING), (MessageStatus.FILING, final)]


def test_a_message_not_claimed_cannot_be_finished(gw, clock):
    row = arrive(gw, ["compta+dupont-maconnerie@welyb.fr"], b"Subject: x\r\n\r\nx\r\n", clock)
    with pytest.raises(TransitionError, match="is received"), gw.db.write() as s:
        inbound_queue.finish(s, row, "w1", MessageStatus.FILED, clock.now())
    with pytest.raises(TransitionError), gw.db.write() as s:
        inbound_queue.finish(s, row, "w1", MessageStatus.RECEIVED, clock.now())
    assert _status(gw, InboundMessage, row)[0] == MessageStatus.RECEIVED


def test_a_filer_whose_claim_was_taken_over_is_refused(gw, clock):
    row = _claimed_message(gw, clock, "dead")
    clock.advance(seconds=inbound_queue.LEASE.total_seconds() + 1)
    with gw.db.write() as s:
        assert inbound_queue.claim_waiting(s, "alive", clock.now(), 10) == [row]
    with gw.db.write() as s:
        assert inbound_queue.renew(s, [row], "dead", clock.now()) == set()
    with pytest.raises(TransitionError, match="held by alive"), gw.db.write() as s:
        inbound_queue.finish(s, row, "dead", MessageStatus.FILED, clock.now())
    assert _status(gw, InboundMessage, row) == (MessageStatus.FILING, "alive")


# -- the database itself -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "column"),
    [
        (InboundMessage, "status"),
        (Delivery, "status"),
        (BotMailForward, "status"),
    ],
)
def test_the_database_refuses_an_unknown_status(gw, clock, tmp_path, model, column):
    if model is InboundMessage:
        row = arrive(gw, ["compta+dupont-maconnerie@welyb.fr"], b"\r\nx\r\n", clock)
    elif model is Delivery:
        [row] = _delivery(gw, clock, tmp_path)
    else:
        row = _forward(gw, clock)
    with pytest.raises(IntegrityError, match="ck_"), gw.db.write() as s:
        s.execute(update(model).where(model.id == row).values({column: "lost"}))


def test_the_migration_checks_the_same_values_as_the_models():
    from importlib import import_module

    migration = import_module("gateway.storage.migrations.versions.0005_status_checks")
    # 0009 (message trust) replaced the inbound messages' list: quarantined, discarded.
    trust = import_module("gateway.storage.migrations.versions.0009_message_trust")
    latest = {**migration.CHECKS, ("inbound_messages", "status"): trust.AFTER}
    assert {
        ("inbound_messages", "status"): tuple(MessageStatus),
        ("deliveries", "status"): tuple(DeliveryStatus),
        ("bot_mail_forwards", "status"): tuple(ForwardStatus),
        ("imap_messages", "outcome"): tuple(ImapOutcome),
    } == latest
    assert migration.CHECKS[("inbound_messages", "status")] == trust.BEFORE


# -- claiming at once on PostgreSQL ------------------------------------------------------------


def test_two_workers_claiming_at_once_both_get_work_and_never_the_same_row(
    gw, clock, tmp_path, database_url
):
    """With the old SELECT-then-UPDATE, the second worker picked the same lowest ids, waited
    for the first one's commit and came back empty. One statement with SKIP LOCKED: the
    second worker takes the next rows while the first one's transaction is still open."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: claims cannot overlap there")
    ids = _delivery(gw, clock, tmp_path, n=6)
    clock.advance(hours=1)
    got: dict[str, list[int]] = {}
    first = Session(gw.db.engine)
    try:
        got["first"] = deliveries.claim_due(first, "first", clock.now(), limit=3)
        # The first claim is not committed: its rows are locked.

        def second() -> None:
            with Session(gw.db.engine) as s, s.begin():
                got["second"] = deliveries.claim_due(s, "second", clock.now(), limit=3)

        worker = threading.Thread(target=second)
        worker.start()
        worker.join(timeout=10)
        assert not worker.is_alive(), "the second claim waited for the first one's locks"
        first.commit()
    finally:
        first.close()
    assert len(got["first"]) == 3 and len(got["second"]) == 3
    assert not set(got["first"]) & set(got["second"])
    assert sorted(got["first"] + got["second"]) == sorted(ids)


def test_a_held_message_is_queued_again_by_hand(gw, clock, config_path):
    from click.testing import CliRunner

    from gateway.cli import cli

    row = _claimed_message(gw, clock)
    with gw.db.write() as s:
        inbound_queue.release_after_failure(s, row, "w1", "boom", clock.now(), retry_at=None)
        queue_id = s.execute(
            select(InboundMessage.queue_id).where(InboundMessage.id == row)
        ).scalar_one()
    retried = CliRunner().invoke(cli, ["messages", "retry", queue_id, "-c", str(config_path)])
    assert retried.exit_code == 0, retried.output
    assert _status(gw, InboundMessage, row) == (MessageStatus.RECEIVED, None)
    with gw.db.read() as s:
        moves = [(e.from_status, e.to_status) for e in inbound_queue.history(s, row)][-2:]
    assert moves == [(MessageStatus.FILING, MessageStatus.HELD), (MessageStatus.HELD, "received")]
    # Only a held message: a second retry finds it received and says so.
    again = CliRunner().invoke(cli, ["messages", "retry", queue_id, "-c", str(config_path)])
    assert again.exit_code != 0 and "is received" in str(again.exception)


def test_enqueue_stores_every_column_as_given_and_returns_ids_in_order(gw, clock):
    """The spool's insert (gateway/storage/bulk.py: arrays unnested on PostgreSQL, the ORM's
    bulk insert on SQLite) keeps each value, None and JSON lists included, and gives each
    row its own id, in the order of the rows (not the order of their unique key)."""
    now = clock.now()
    rows = [
        {
            "queue_id": f"Q{(i * 7919) % 101:04d}",  # unique, not in the rows' order
            "source": "imap" if i % 3 else "smtp",
            "source_mailbox": f"INBOX/{i}" if i % 3 else None,
            "received_at": now + timedelta(seconds=i),
            "peer": None if i % 4 == 0 else f"192.0.2.{i}",
            "helo": f"mx{i}.example.org",
            "mail_from": "" if i == 5 else f"fournisseur{i}@example.org",
            "rcpt_tos": [f"compta+dupont-{j}@welyb.fr" for j in range(i % 3 + 1)],
            "size": 1000 + i,
            "sha256": f"{i:064x}",
            "spool_segment": "2026-11-30/node-1.seg",
            "spool_offset": 1000 * i,
            "reason": "no address of ours" if i == 7 else None,
            "subject": "Façture é ✓" if i == 2 else None,
            "header_message_id": f"<{i}@example.org>",
        }
        for i in range(30)
    ]
    with gw.db.write() as s:
        ids = inbound_queue.enqueue(s, rows)
    assert len(set(ids)) == 30
    with gw.db.read() as s:
        stored = {m.id: m for m in s.scalars(select(InboundMessage))}
    for row_id, row in zip(ids, rows, strict=True):
        message = stored[row_id]
        for column, value in row.items():
            got = getattr(message, column)
            if column == "received_at":
                got = got.replace(tzinfo=value.tzinfo)
            assert got == value, (column, got, value)
        expected = MessageStatus.REJECTED if row["reason"] else MessageStatus.RECEIVED
        assert (message.status, message.attempts) == (expected, 0)

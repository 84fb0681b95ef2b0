"""Switches and the delivery ledger: which placements become deliveries (R9–R14).

Sending is not built yet (issue 3 continues); these tests pin down the ledger it will run.
"""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from gateway.clock import as_utc
from gateway.storage.accounts import AccountError
from gateway.storage.connections import add_connection, add_document, move_document, set_switch
from gateway.storage.events import events_after
from gateway.storage.models import Delivery, DeliveryStatus, Document, DuplicateDocument
from gateway.storage.queues.deliveries import (
    Move,
    TransitionError,
    history,
    retry,
    transition,
    transition_many,
)
from tests.support import file_all, message, pdf
from tests.test_filing import arrive

ACHATS = "Dossier comptable annuel/2026/Achats"


@pytest.fixture
def meg(gw, clock):
    """dupont-maconnerie connected to MEG."""
    add_connection(
        gw.db, gw.grammar, "dupont-maconnerie", "meg", "meg+macon-dupont@welyb.fr", clock.now()
    )
    return gw


def deliveries(gw) -> list[Delivery]:
    with gw.db.read() as s:
        return list(s.execute(select(Delivery).order_by(Delivery.id)).scalars())


def upload(gw, clock, tmp_path, name: str, content: bytes, folder: str = ACHATS + "/11"):
    path = tmp_path / name
    path.write_bytes(content)
    doc, placed = add_document(
        gw.db, gw.grammar, gw.blobs, "dupont-maconnerie", folder, path, clock.now()
    )
    return doc, placed.ids


def test_mail_filed_below_a_switched_folder_is_queued_for_the_partners_next_run(meg, clock):
    """R9 (sub-folders inherit), R11 (SMTP is a modality), R12 (MEG every 15 min)."""
    set_switch(meg.db, "dupont-maconnerie", ACHATS, "meg", True, clock.now(), create_folder=True)
    clock.advance(minutes=1)  # 10:31
    arrive(
        meg,
        ["compta+dupont-maconnerie@welyb.fr"],
        message(attachments=[("f.pdf", "application/pdf", pdf("switched"))]),
        clock,
    )
    file_all(meg)
    [d] = deliveries(meg)
    assert d.status == DeliveryStatus.QUEUED
    assert d.due_at.replace(tzinfo=UTC) == datetime(2026, 11, 22, 10, 45, tzinfo=UTC)


def test_one_batch_of_mail_gets_each_new_document_its_delivery_event_and_duplicate(meg, clock):
    """A filing batch inserts its documents together: each delivery, event and duplicate
    record points at the right one, in the order the files came."""
    set_switch(meg.db, "dupont-maconnerie", ACHATS, "meg", True, clock.now(), create_folder=True)
    clock.advance(minutes=1)
    a = pdf("a")
    to = ["compta+dupont-maconnerie@welyb.fr"]
    arrive(meg, to, message(attachments=[("a.pdf", "application/pdf", a)]), clock)
    again = arrive(
        meg,
        to,
        message(
            subject="2",
            attachments=[
                ("copie.pdf", "application/pdf", a),
                ("b.pdf", "application/pdf", pdf("b")),
            ],
        ),
        clock,
    )
    arrive(
        meg, to, message(subject="3", attachments=[("c.pdf", "application/pdf", pdf("c"))]), clock
    )
    assert file_all(meg) == 3
    with meg.db.read() as s:
        documents = list(s.execute(select(Document).order_by(Document.id)).scalars())
        [duplicate] = s.execute(select(DuplicateDocument)).scalars().all()
    assert [d.filename for d in documents] == ["a.pdf", "b.pdf", "c.pdf"]
    by_name = {d.filename: d.id for d in documents}
    assert (duplicate.document_id, duplicate.inbound_message_id) == (by_name["a.pdf"], again)
    assert [(d.document_id, d.status) for d in deliveries(meg)] == [
        (i, DeliveryStatus.QUEUED) for i in by_name.values()
    ]
    filed = events_after(meg.db, 0, 100, types=["document.filed"])
    assert [(e.subject, e.payload["filename"]) for e in filed] == [
        (i, name) for name, i in by_name.items()
    ]
    assert [e.payload["size"] for e in filed] == [d.size for d in documents]


def test_documents_placed_before_the_switch_are_never_sent(meg, clock, tmp_path):
    """R10: not retroactive."""
    before, _ = upload(meg, clock, tmp_path, "avant.pdf", pdf("avant"))
    clock.advance(minutes=5)
    set_switch(meg.db, "dupont-maconnerie", ACHATS, "meg", True, clock.now(), create_folder=True)
    clock.advance(minutes=5)
    after, created = upload(meg, clock, tmp_path, "apres.pdf", pdf("apres"))
    assert [d.document_id for d in deliveries(meg)] == [after.id] and len(created) == 1
    assert before.id != after.id


def test_a_move_into_a_switched_folder_is_a_placement(meg, clock, tmp_path):
    """R11: uploads and moves count like mail."""
    set_switch(meg.db, "dupont-maconnerie", ACHATS, "meg", True, clock.now(), create_folder=True)
    clock.advance(minutes=1)
    doc, created = upload(
        meg,
        clock,
        tmp_path,
        "ventes.pdf",
        pdf("v"),
        folder="Dossier comptable annuel/2026/Ventes/11",
    )
    assert created == []
    clock.advance(minutes=1)
    _, placed = move_document(meg.db, meg.grammar, doc.id, ACHATS + "/11", clock.now())
    assert len(placed.queued) == 1
    # Moving it again inside the switched tree makes no second delivery.
    _, again = move_document(meg.db, meg.grammar, doc.id, ACHATS + "/12", clock.now())
    assert again.ids == [] and len(deliveries(meg)) == 1


def test_switch_off_then_on_counts_from_the_latest_activation(meg, clock, tmp_path):
    set_switch(meg.db, "dupont-maconnerie", ACHATS, "meg", True, clock.now(), create_folder=True)
    clock.advance(minutes=1)
    set_switch(meg.db, "dupont-maconnerie", ACHATS, "meg", False, clock.now())
    clock.advance(minutes=1)
    _, off = upload(meg, clock, tmp_path, "off.pdf", pdf("off"))
    clock.advance(minutes=1)
    set_switch(meg.db, "dupont-maconnerie", ACHATS, "meg", True, clock.now(), create_folder=True)
    clock.advance(minutes=1)
    _, on = upload(meg, clock, tmp_path, "on.pdf", pdf("on"))
    assert off == [] and len(on) == 1


def test_parent_and_child_switched_make_one_delivery(meg, clock, tmp_path):
    set_switch(
        meg.db,
        "dupont-maconnerie",
        "Dossier comptable annuel",
        "meg",
        True,
        clock.now(),
        create_folder=True,
    )
    set_switch(meg.db, "dupont-maconnerie", ACHATS, "meg", True, clock.now(), create_folder=True)
    clock.advance(minutes=1)
    _, created = upload(meg, clock, tmp_path, "one.pdf", pdf("one"))
    assert len(created) == 1


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.pdf", pdf("in zip"))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("archive.zip", _zip(), "application/zip"),
        ("huge.pdf", pdf("big") + b"\0" * (10 * 1024 * 1024), "10,485,760 bytes"),
    ],
)
def test_partner_limits_skip_with_a_reason(meg, clock, tmp_path, name, content, reason):
    """R14: MEG takes no ZIP and at most 10 MB; skipped, with the reason, never dropped."""
    set_switch(meg.db, "dupont-maconnerie", ACHATS, "meg", True, clock.now(), create_folder=True)
    clock.advance(minutes=1)
    upload(meg, clock, tmp_path, name, content)
    [d] = deliveries(meg)
    assert d.status == DeliveryStatus.SKIPPED and reason in (d.reason or "")


def test_myunisoft_runs_hourly(gw, clock, tmp_path):
    """R12: MyUnisoft every hour."""
    add_connection(
        gw.db,
        gw.grammar,
        "dupont-maconnerie",
        "myunisoft",
        "myunisoft+aecconseil+67-45-ACH@welyb.fr",
        clock.now(),
    )
    set_switch(
        gw.db, "dupont-maconnerie", ACHATS, "myunisoft", True, clock.now(), create_folder=True
    )
    clock.advance(minutes=1)
    upload(gw, clock, tmp_path, "m.pdf", pdf("mu"))
    [d] = deliveries(gw)
    assert d.due_at.replace(tzinfo=UTC) == datetime(2026, 11, 22, 11, 0, tzinfo=UTC)


def test_switch_needs_a_connection(gw, clock):
    with pytest.raises(AccountError, match="no connection to meg"):
        set_switch(gw.db, "dupont-maconnerie", ACHATS, "meg", True, clock.now(), create_folder=True)


def test_transitions_are_guarded_and_recorded(meg, clock, tmp_path):
    set_switch(meg.db, "dupont-maconnerie", ACHATS, "meg", True, clock.now(), create_folder=True)
    clock.advance(minutes=1)
    upload(meg, clock, tmp_path, "t.pdf", pdf("t"))
    [d] = deliveries(meg)
    Q, SENDING, SENT = DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.SENT
    with meg.db.write() as s:
        transition(s, d.id, [Q], SENDING, clock.now(), "claimed")
    with pytest.raises(TransitionError, match="is sending, not queued"), meg.db.write() as s:
        transition(s, d.id, [Q], SENDING, clock.now())  # a second worker loses the race
    with pytest.raises(TransitionError, match="no transition"), meg.db.write() as s:
        transition(s, d.id, [SENT], DeliveryStatus.DEFERRED, clock.now())
    with meg.db.write() as s:
        transition(s, d.id, [SENDING], DeliveryStatus.FAILED, clock.now(), "550 5.1.1 unknown")
        retry(s, d.id, clock.now())
    with meg.db.read() as s:
        steps = [(e.from_status, e.to_status) for e in history(s, d.id)]
    assert steps == [
        (None, "queued"),
        ("queued", "sending"),
        ("sending", "failed"),
        ("failed", "queued"),
    ]


def test_transition_many_is_guarded_per_row_and_keeps_each_rows_values(meg, clock, tmp_path):
    """The sender's batch recording: one UPDATE per kind of move, yet each row gets its own
    reply and due time, and a row not in `sending` is refused without touching the rest."""
    set_switch(meg.db, "dupont-maconnerie", ACHATS, "meg", True, clock.now(), create_folder=True)
    clock.advance(minutes=1)
    for n in range(5):
        upload(meg, clock, tmp_path, f"m{n}.pdf", pdf(f"many {n}"))
    ids = [d.id for d in deliveries(meg)]
    Q, SENDING = DeliveryStatus.QUEUED, DeliveryStatus.SENDING
    SENT, DEFERRED = DeliveryStatus.SENT, DeliveryStatus.DEFERRED
    now = clock.now()
    with meg.db.write() as s:
        for i in ids[:4]:  # the fifth stays queued: its move must be refused
            transition(s, i, [Q], SENDING, now)
    later = [now + timedelta(seconds=300), now + timedelta(seconds=600)]
    moves = [
        Move(ids[0], SENT, "250 queued as A", {"reason": "250 queued as A", "sent_at": now}),
        Move(ids[1], SENT, "250 queued as B", {"reason": "250 queued as B", "sent_at": now}),
        Move(ids[2], DEFERRED, "451 busy", {"reason": "451 busy", "due_at": later[0]}),
        Move(ids[3], DEFERRED, "452 full", {"reason": "452 full", "due_at": later[1]}),
        Move(ids[4], SENT, "250 stray", {"reason": "250 stray", "sent_at": now}),
    ]
    with meg.db.write() as s:
        refused = transition_many(s, SENDING, moves, now)
    assert [m.delivery_id for m in refused] == [ids[4]]
    rows = {d.id: d for d in deliveries(meg)}
    assert [(rows[i].status, rows[i].reason) for i in ids] == [
        ("sent", "250 queued as A"),
        ("sent", "250 queued as B"),
        ("deferred", "451 busy"),
        ("deferred", "452 full"),
        ("queued", None),
    ]
    assert [as_utc(rows[i].due_at) for i in ids[2:4]] == later
    with meg.db.read() as s:
        assert [e.to_status for e in history(s, ids[4])] == ["queued"]  # no event either
        assert [(e.from_status, e.to_status, e.detail) for e in history(s, ids[3])][-1] == (
            "sending",
            "deferred",
            "452 full",
        )
    with pytest.raises(TransitionError, match="no transition"), meg.db.write() as s:
        transition_many(s, SENT, [Move(ids[0], DeliveryStatus.SKIPPED, None)], now)


def test_documents_add_refuses_a_file_the_company_already_has(meg, clock, tmp_path):
    upload(meg, clock, tmp_path, "a.pdf", pdf("same"))
    with pytest.raises(AccountError, match="already has this file"):
        upload(meg, clock, tmp_path, "b.pdf", pdf("same"))
    with meg.db.read() as s:
        assert len(s.execute(select(Document)).scalars().all()) == 1

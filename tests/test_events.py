"""Events (issue 13, item 4): the outbox written in the transaction of each change it
reports, read by polling, scoped to a cabinet."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from gateway.routing.sender_policy import PolicyKind
from gateway.storage import events
from gateway.storage.accounts import AccountError, add_cabinet, add_company
from gateway.storage.connections import add_connection, add_document, set_switch
from gateway.storage.events import EventRow, events_after
from gateway.storage.models import Cabinet, Delivery, DeliveryStatus
from gateway.storage.queues import deliveries
from gateway.storage.sender_policies import set_policy
from gateway.storage.tenancy import ALL, Tenant
from tests.support import file_all, message, pdf
from tests.test_filing import arrive

ACHATS = "Dossier comptable annuel/2026/Achats"
BOT = "myunisoft+aecconseil@welyb.fr"


def cabinet_id(gw, slug: str = "aecconseil") -> int:
    with gw.db.read() as s:
        return s.execute(select(Cabinet.id).where(Cabinet.slug == slug)).scalar_one()


def all_events(gw, tenant: Tenant = ALL, types=None) -> list[EventRow]:
    return events_after(gw.db, 0, 1000, tenant, types)


def upload(gw, clock, tmp_path, name, content, company="dupont-maconnerie"):
    path = tmp_path / name
    path.write_bytes(content)
    return add_document(gw.db, gw.grammar, gw.blobs, company, ACHATS, path, clock.now())


@pytest.fixture
def other_cabinet(gw, clock):
    """A second cabinet with one company."""
    add_cabinet(gw.db, "fidu", "Fidu", "contact@fidu.fr", clock.now())
    add_company(gw.db, gw.grammar, "garage-leroy", "fidu", "Garage Leroy", "12-31", clock.now())
    return cabinet_id(gw, "fidu")


def test_filing_and_uploads_emit_document_filed_seen_by_their_cabinet_only(
    gw, clock, tmp_path, other_cabinet
):
    arrive(
        gw,
        ["compta+dupont-maconnerie@welyb.fr"],
        message(attachments=[("f.pdf", "application/pdf", pdf("mail"))]),
        clock,
    )
    file_all(gw)
    theirs, _ = upload(gw, clock, tmp_path, "g.pdf", pdf("other"), company="garage-leroy")
    ours = cabinet_id(gw)

    everything = all_events(gw)
    assert [e.type for e in everything] == ["document.filed", "document.filed"]
    mail, uploaded = everything
    assert mail.id < uploaded.id
    assert mail.cabinet_id == ours and mail.payload["filename"] == "f.pdf"
    assert mail.payload["folder"].startswith("Dossier comptable annuel/")
    assert mail.payload["inbound_message_id"] is not None
    assert uploaded.subject == theirs.id and uploaded.payload["source"] == "upload"

    assert all_events(gw, Tenant(ours)) == [mail]
    assert all_events(gw, Tenant(other_cabinet)) == [uploaded]
    # Polling goes on from the last id seen.
    assert events_after(gw.db, mail.id, 10) == [uploaded]
    assert events_after(gw.db, uploaded.id, 10) == []
    assert events_after(gw.db, 0, 1) == [mail]


def test_bad_polling_arguments_name_their_field(gw):
    for kwargs, field in (
        ({"after": -1}, "after"),
        ({"limit": 0}, "limit"),
        ({"types": ["document.eaten"]}, "types"),
    ):
        args = {"after": 0, "limit": 10, **kwargs}
        with pytest.raises(AccountError) as caught:
            events_after(gw.db, args["after"], args["limit"], ALL, args.get("types"))
        assert caught.value.field == field


def test_a_rolled_back_change_leaves_no_event(gw, clock, tmp_path):
    """The event is written in the change's transaction: no change, no event."""
    add_connection(
        gw.db, gw.grammar, "dupont-maconnerie", "meg", "meg+macon-dupont@welyb.fr", clock.now()
    )
    set_switch(gw.db, "dupont-maconnerie", ACHATS, "meg", True, clock.now(), create_folder=True)
    clock.advance(minutes=1)
    upload(gw, clock, tmp_path, "a.pdf", pdf("a"))
    with gw.db.read() as s:
        delivery_id = s.execute(select(Delivery.id)).scalar_one()
    before = all_events(gw)

    class Crash(Exception):
        pass

    with pytest.raises(Crash), gw.db.write() as s:
        deliveries.transition(
            s, delivery_id, [DeliveryStatus.QUEUED], DeliveryStatus.SKIPPED, clock.now()
        )
        raise Crash
    assert all_events(gw) == before

    # An upload refused (the file is already there) writes nothing either.
    with pytest.raises(AccountError):
        upload(gw, clock, tmp_path, "again.pdf", pdf("a"))
    assert all_events(gw) == before


def test_delivery_moves_emit_validated_failed_bounced_and_skipped(gw, clock, tmp_path):
    add_connection(
        gw.db, gw.grammar, "dupont-maconnerie", "meg", "meg+macon-dupont@welyb.fr", clock.now()
    )
    set_switch(gw.db, "dupont-maconnerie", ACHATS, "meg", True, clock.now(), create_folder=True)
    clock.advance(minutes=1)
    docs = [upload(gw, clock, tmp_path, f"{n}.pdf", pdf(n))[0] for n in ("ok", "ko", "back")]
    # MEG takes 10,485,760 bytes at most (R14): skipped at once.
    big = upload(gw, clock, tmp_path, "big.pdf", pdf("big") + b"\0" * 11_000_000)[0]
    with gw.db.read() as s:
        ids = {d: i for d, i in s.execute(select(Delivery.document_id, Delivery.id))}
    ok, ko, back = (ids[d.id] for d in docs)
    S = DeliveryStatus
    with gw.db.write() as s:
        claimed = deliveries.claim_due(s, "w", clock.now(), limit=10, flush=True)
        assert sorted(claimed) == sorted([ok, ko, back])
        deliveries.transition_many(
            s,
            S.SENDING,
            [
                deliveries.Move(ok, S.SENT, "250 ok", {"reason": "250 ok"}),
                deliveries.Move(ko, S.FAILED, "550 no", {"reason": "550 no such user"}),
                deliveries.Move(back, S.SENT, "250 ok", {}),
            ],
            clock.now(),
            claimant="w",
        )
        deliveries.bounce(s, back, "5.1.1 gone", clock.now())
    found = {(e.type, e.subject): e for e in all_events(gw) if e.type != "document.filed"}
    assert set(found) == {
        ("delivery.skipped", ids[big.id]),
        ("document.validated", docs[0].id),
        ("delivery.failed", ko),
        ("document.validated", docs[2].id),
        ("delivery.bounced", back),
    }
    validated = found[("document.validated", docs[0].id)]
    assert validated.payload["delivery_id"] == ok and validated.payload["partner"] == "meg"
    assert found[("delivery.failed", ko)].payload["reason"] == "550 no such user"
    assert "10" in found[("delivery.skipped", ids[big.id])].payload["reason"]
    assert found[("delivery.bounced", back)].payload["reason"] == "5.1.1 gone"
    assert {e.company_id for e in found.values()} == {docs[0].company_id}

    # A retry (queued again) is the gateway's business: no event.
    count = len(all_events(gw))
    with gw.db.write() as s:
        deliveries.retry(s, ko, clock.now())
    assert len(all_events(gw)) == count
    assert [e.subject for e in all_events(gw, types=["delivery.failed"])] == [ko]


def test_bot_mail_rejected_and_quarantined_messages_emit_their_events(gw, clock):
    ours = cabinet_id(gw)
    arrive(gw, [BOT], message(to=BOT, subject="Invitation"), clock)
    # No address of ours: rejected, and no cabinet hears of it.
    arrive(gw, ["compta+nobody@welyb.fr"], message(subject="Bonjour"), clock)
    file_all(gw)
    with gw.db.write() as s:
        set_policy(s, cabinet_id=ours, company_id=None, kind=PolicyKind.ALLOW_LIST, now=clock.now())
    arrive(
        gw,
        ["compta+boulangerie-martin@welyb.fr"],
        message(attachments=[("q.pdf", "application/pdf", pdf("q"))]),
        clock,
    )
    file_all(gw)
    bot, rejected, quarantined = all_events(gw)
    assert (bot.type, bot.cabinet_id, bot.payload["recipient"]) == (
        "bot_mail.received",
        ours,
        BOT,
    )
    assert bot.payload["subject"] == "Invitation"
    assert (rejected.type, rejected.cabinet_id, rejected.company_id) == (
        "message.rejected",
        None,
        None,
    )
    assert rejected.payload["subject"] == "Bonjour"
    assert (quarantined.type, quarantined.cabinet_id) == ("message.quarantined", ours)
    assert quarantined.company_id is not None
    assert "not on the allow list" in quarantined.payload["reason"]
    assert all_events(gw, Tenant(ours)) == [bot, quarantined]


def test_event_ids_are_handed_out_in_commit_order(gw, clock):
    """PostgreSQL: a transaction that took an event id but has not committed makes a later
    one wait, so a poller never sees id N+1 while N may still appear."""
    if gw.db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: commit order is id order")
    ours = cabinet_id(gw)

    def emit(s, subject: int) -> None:
        events.emit(
            s,
            events.DOCUMENT_FILED,
            cabinet_id=ours,
            company_id=None,
            subject=subject,
            payload={},
            now=clock.now(),
        )

    second_done = threading.Event()

    def second() -> None:
        with gw.db.write() as s:
            emit(s, 2)
        second_done.set()

    with gw.db.write() as s:
        emit(s, 1)
        s.flush()
        later = threading.Thread(target=second)
        later.start()
        # The second writer waits for this transaction; a poller sees nothing yet.
        assert not second_done.wait(0.5)
        assert all_events(gw) == []
    later.join(10)
    assert second_done.is_set()
    first, then = all_events(gw)
    assert (first.subject, then.subject) == (1, 2) and first.id < then.id

"""The filing stage: placement rules, duplicates, idempotence, leases (R2–R4, R8)."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select, update

from gateway.app import Gateway
from gateway.inbound.folders import fiscal_year
from gateway.inbound.spool import Arrival, SpoolWriter, new_queue_id
from gateway.storage.models import Document, DuplicateDocument, Folder, InboundMessage
from tests.support import FixedClock, file_all, message, pdf


def arrive(gw: Gateway, rcpts: list[str], content: bytes, clock: FixedClock) -> int:
    """Store a message through the same spool the SMTP server uses."""
    writer = SpoolWriter(gw.db, gw.segments("test"))
    try:
        [row_id] = writer.store_batch(
            [
                Arrival(
                    queue_id=new_queue_id(),
                    source="smtp",
                    received_at=clock.now(),
                    mail_from="fournisseur@example.org",
                    rcpt_tos=rcpts,
                    content=content,
                )
            ]
        )
    finally:
        writer.close()
    return row_id


def status(gw: Gateway, row_id: int) -> InboundMessage:
    with gw.db.read() as s:
        row = s.get(InboundMessage, row_id)
        assert row is not None
        return row


def docs(gw: Gateway) -> list[tuple[str, str, str]]:
    with gw.db.read() as s:
        return [
            tuple(r)
            for r in s.execute(
                select(Document.filename, Folder.path, Document.sha256)
                .join(Folder, Document.folder_id == Folder.id)
                .order_by(Document.id)
            )
        ]


@pytest.mark.parametrize(
    ("received", "fye", "expected"),
    [
        (date(2026, 11, 22), "12-31", 2026),
        (date(2026, 12, 31), "12-31", 2026),
        (date(2026, 6, 30), "06-30", 2026),
        (date(2026, 7, 1), "06-30", 2027),
        (date(2027, 2, 28), "02-29", 2027),
        (date(2027, 3, 1), "02-29", 2028),
        (date(2028, 2, 29), "02-29", 2028),
        (date(2026, 1, 1), "03-31", 2026),
    ],
)
def test_fiscal_year_is_named_by_the_year_it_ends(received, fye, expected):
    """R3: fiscal year from the company's fiscal year end."""
    assert fiscal_year(received, fye) == expected


def test_month_is_taken_in_the_firms_time_zone(gw, clock):
    """R3: 30 Nov 23:30 UTC is already December in Paris."""
    clock.moment = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    arrive(
        gw,
        ["compta+dupont-maconnerie@welyb.fr"],
        message(
            attachments=[
                ("a.pdf", "application/pdf", pdf("a")),
                ("b.pdf", "application/pdf", pdf("b")),
            ]
        ),
        clock,
    )
    file_all(gw)
    # All attachments of one message land in the same month.
    assert [p for _, p, _ in docs(gw)] == ["Dossier comptable annuel/2026/Achats/12"] * 2


def test_same_file_twice_is_filed_once_and_recorded_as_duplicate(gw, clock):
    invoice = pdf("once")
    first = arrive(
        gw,
        ["compta+dupont-maconnerie@welyb.fr"],
        message(attachments=[("facture.pdf", "application/pdf", invoice)]),
        clock,
    )
    second = arrive(
        gw,
        ["dupont-maconnerie@welyb.fr"],
        message(subject="relance", attachments=[("copie.pdf", "application/pdf", invoice)]),
        clock,
    )
    file_all(gw)
    assert len(docs(gw)) == 1
    assert status(gw, first).status == "filed"
    dup = status(gw, second)
    assert dup.status == "duplicate" and "copie.pdf" in (dup.reason or "")
    with gw.db.read() as s:
        [row] = s.execute(select(DuplicateDocument)).scalars().all()
    assert row.filename == "copie.pdf" and row.inbound_message_id == second


def test_new_and_known_files_in_one_message_is_partly_filed(gw, clock):
    known = pdf("known")
    arrive(
        gw,
        ["compta+dupont-maconnerie@welyb.fr"],
        message(attachments=[("k.pdf", "application/pdf", known)]),
        clock,
    )
    mixed = arrive(
        gw,
        ["compta+dupont-maconnerie@welyb.fr"],
        message(
            subject="2",
            attachments=[
                ("k.pdf", "application/pdf", known),
                ("n.pdf", "application/pdf", pdf("new")),
            ],
        ),
        clock,
    )
    file_all(gw)
    row = status(gw, mixed)
    assert row.status == "partly_filed"
    assert "already filed 1" in (row.reason or "") and "filed 1" in (row.reason or "")


def test_one_message_to_two_companies_files_into_both(gw, clock):
    arrive(
        gw,
        ["compta+dupont-maconnerie@welyb.fr", "ventes+boulangerie-martin@welyb.fr"],
        message(attachments=[("f.pdf", "application/pdf", pdf("both"))]),
        clock,
    )
    file_all(gw)
    assert sorted(p for _, p, _ in docs(gw)) == [
        "Dossier comptable annuel/2026/Achats/11",
        "Dossier comptable annuel/2027/Ventes/11",
    ]


def test_message_without_attachment_is_kept_as_eml(gw, clock):
    """R4: a message with no attachment keeps its body as a document, and (issue 12) a PDF
    of its body beside it."""
    row_id = arrive(
        gw,
        ["dupont-maconnerie@welyb.fr"],
        message(subject="Question TVA", body="Pouvez-vous me rappeler ?\n"),
        clock,
    )
    file_all(gw)
    [(name, path, sha), (pdf_name, pdf_path, _)] = docs(gw)
    assert name.endswith(".eml") and path == "A classer"
    assert b"Pouvez-vous me rappeler" in gw.blobs.get(sha)
    assert pdf_name == name.removesuffix(".eml") + ".pdf" and pdf_path == "A classer"
    assert status(gw, row_id).status == "filed"


def _zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("bomb.pdf", b"\0" * (20 * 1024 * 1024))
    return buf.getvalue()


def test_zip_bomb_is_refused_with_a_reason_and_nothing_is_filed(gw, clock):
    row_id = arrive(
        gw,
        ["compta+dupont-maconnerie@welyb.fr"],
        message(attachments=[("factures.zip", "application/zip", _zip_bomb())]),
        clock,
    )
    file_all(gw)
    row = status(gw, row_id)
    assert row.status == "rejected"
    assert "factures.zip" in (row.reason or "") and "ratio" in (row.reason or "")
    assert docs(gw) == []


def test_zip_members_are_filed_as_documents(gw, clock):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("janvier.pdf", pdf("janvier"))
        z.writestr("fevrier.pdf", pdf("fevrier"))
    arrive(
        gw,
        ["compta+dupont-maconnerie@welyb.fr"],
        message(attachments=[("factures.zip", "application/zip", buf.getvalue())]),
        clock,
    )
    file_all(gw)
    assert sorted(n for n, _, _ in docs(gw)) == ["fevrier.pdf", "janvier.pdf"]


def test_a_worker_that_dies_mid_filing_leaves_the_message_to_another_once(gw, clock):
    """R8: crash between claim and commit: the lease expires, another worker files it once."""
    row_id = arrive(
        gw,
        ["compta+dupont-maconnerie@welyb.fr"],
        message(attachments=[("f.pdf", "application/pdf", pdf("lease"))]),
        clock,
    )
    dead = gw.filer("worker-that-dies")
    assert dead.claim() == [row_id]  # ... and then it is killed before committing
    alive = gw.filer("worker-b")
    assert alive.run_once() == 0  # the lease still holds
    clock.advance(minutes=6)
    assert alive.run_once() == 1
    assert len(docs(gw)) == 1
    # The dead worker comes back to life and finishes its copy: its lease is gone.
    dead.file(row_id)
    assert len(docs(gw)) == 1
    assert status(gw, row_id).status == "filed"


def test_filing_twice_is_impossible(gw, clock):
    row_id = arrive(
        gw,
        ["compta+dupont-maconnerie@welyb.fr"],
        message(attachments=[("f.pdf", "application/pdf", pdf("x"))]),
        clock,
    )
    assert file_all(gw) == 1
    assert file_all(gw) == 0
    assert gw.filer("other").claim() == []
    assert status(gw, row_id).attempts == 1


def test_message_that_keeps_failing_is_held_with_reason(gw, clock):
    row_id = arrive(
        gw,
        ["compta+dupont-maconnerie@welyb.fr"],
        message(attachments=[("f.pdf", "application/pdf", pdf("held"))]),
        clock,
    )
    row = status(gw, row_id)
    (gw.config.spool_path / row.spool_segment).write_bytes(b"")  # the spool file is damaged
    filer = gw.filer("w")
    for _ in range(gw.config.filing.max_attempts):
        assert filer.run_once() == 1
        clock.advance(hours=2)
    row = status(gw, row_id)
    assert row.status == "held"
    assert "short" in (row.reason or "") and "administrator" in (row.reason or "")
    assert filer.run_once() == 0


def test_recipient_whose_company_vanished_is_reported(gw, clock):
    row_id = arrive(
        gw,
        ["compta+ghost@welyb.fr"],
        message(attachments=[("f.pdf", "application/pdf", pdf("g"))]),
        clock,
    )
    file_all(gw)
    row = status(gw, row_id)
    assert row.status == "rejected" and "ghost" in (row.reason or "")


def test_claim_is_guarded_against_a_second_worker(gw, clock):
    row_id = arrive(
        gw,
        ["compta+dupont-maconnerie@welyb.fr"],
        message(attachments=[("f.pdf", "application/pdf", pdf("c"))]),
        clock,
    )
    a, b = gw.filer("a"), gw.filer("b")
    assert a.claim() == [row_id]
    assert b.claim() == []
    with gw.db.write() as s:  # the guarded update refuses a row in another state
        n = s.execute(
            update(InboundMessage)
            .where(InboundMessage.id == row_id, InboundMessage.status == "received")
            .values(status="filing")
        ).rowcount
    assert n == 0

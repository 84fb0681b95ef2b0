"""Realistic messages through the real SMTP server, then the filing stage (R4).

Each corpus message (built by tests/corpus/make_corpus.py to mimic the client that sends it)
is sent with a real SMTP client to a collection address; what ends up in the GED is checked.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from gateway.storage.models import Document, InboundMessage
from tests.corpus import make_corpus as corpus
from tests.support import file_all

RCPT = "compta+dupont-maconnerie@welyb.fr"


def send_and_file(server, gw, raw: bytes) -> tuple[InboundMessage, list[tuple[str, str]]]:
    with server.client() as smtp:
        smtp.sendmail("client@example.org", [RCPT], raw)
    file_all(gw)
    with gw.db.read() as s:
        [message] = s.execute(select(InboundMessage)).scalars().all()
        docs = [
            (d.filename, d.media_type)
            for d in s.execute(select(Document).order_by(Document.id)).scalars()
        ]
    return message, docs


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (corpus.apple_mail_inline_pdf, [("Facture-2024-03.pdf", "application/pdf")]),
        (
            corpus.outlook_winmail_dat,
            [
                (
                    "Relevé de compte janvier 2024 - Crédit Agricole Île-de-France.pdf",
                    "application/pdf",
                ),
                ("Grand livre 2023 (export Sage).csv", "text/csv"),
            ],
        ),
        (corpus.forwarded_message, [("Facture_EDF_10045879.pdf", "application/pdf")]),
        (corpus.zip_of_invoices, [(f"Facture-00{i}.pdf", "application/pdf") for i in (1, 2, 3)]),
        (corpus.iso_8859_1_filename, [("Facture_février.pdf", "application/pdf")]),
        (
            corpus.rfc2231_filename,
            [("Relevé de compte société générale - janvier 2024.pdf", "application/pdf")],
        ),
        (
            corpus.octet_stream_pdf,
            [("SCAN0001.pdf", "application/pdf"), ("job.prn", "application/pdf")],
        ),
        (
            corpus.no_content_disposition_pdf,
            [("devis.pdf", "application/pdf"), ("document-1.pdf", "application/pdf")],
        ),
        (
            corpus.no_attachment,
            [
                ("Question sur la TVA à 20%.eml", "message/rfc822"),
                ("Question sur la TVA à 20%.pdf", "application/pdf"),
            ],
        ),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_realistic_messages_are_filed_document_by_document(server, gw, make, expected):
    message, docs = send_and_file(server, gw, make())
    assert docs == expected
    assert message.status == "filed"


def test_signature_logo_referenced_from_html_is_not_a_document(server, gw):
    """R4: the cid:-referenced logo is skipped; the invoice and the stamp are filed."""
    _, docs = send_and_file(server, gw, corpus.signature_logo())
    names = [n for n, _ in docs]
    assert "Facture 88.pdf" in names
    assert not any("logo" in n.lower() for n in names)


def test_hostile_file_names_are_sanitised(server, gw):
    _, docs = send_and_file(server, gw, corpus.hostile_filenames())
    names = [n for n, _ in docs]
    assert len(names) == 10
    for name in names:
        assert "/" not in name and "\\" not in name and not name.startswith(".")
        assert all(ord(c) >= 32 for c in name) and len(name.encode("utf-8")) <= 255
    assert "passwd.pdf" in names and "_CON.pdf" in names


@pytest.mark.parametrize("variant", sorted(corpus.malformed_mime()))
def test_malformed_mime_is_filed_not_lost(server, gw, variant):
    """Whatever the MIME damage, the message ends filed with at least one document."""
    message, docs = send_and_file(server, gw, corpus.malformed_mime()[variant])
    assert message.status == "filed", message.reason
    assert docs


def test_zip_bomb_over_smtp_is_rejected_with_its_reason(server, gw):
    message, docs = send_and_file(server, gw, corpus.zip_bomb())
    assert docs == []
    assert message.status == "rejected"
    assert "factures.zip" in (message.reason or "") and "ratio" in (message.reason or "")

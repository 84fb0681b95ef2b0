"""E-invoices at filing (issue 15), through the real SMTP server and the filing stage: what
they say is kept with the document; the checks against the company are recorded and said;
the bare address files them by the company's role (the rule file); the same invoice is filed
once per company whatever its bytes; partners get the same bytes, the ledger its number."""

from __future__ import annotations

import email
import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from email import policy
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from gateway.app import Gateway
from gateway.cli import cli
from gateway.storage.accounts import set_company
from gateway.storage.connections import set_switch
from gateway.storage.events import DOCUMENT_FILED, events_after
from gateway.storage.listings.documents import DocumentRow, document_detail, list_documents
from gateway.storage.listings.outbound import list_deliveries
from gateway.storage.models import DuplicateDocument, InboundMessage
from tests.api_server import running_api
from tests.conftest import custom_server
from tests.einvoice_samples import (
    BUYER_SIREN,
    SELLER_SIREN,
    cii_xml,
    facturx_pdf,
    ubl_xml,
)
from tests.support import FixedClock, RunningServer, file_all, message, pdf
from tests.test_outbound import connect_meg
from tests.test_outbound import run as send_due
from tests.test_smtp import send

YEAR = "Dossier comptable annuel/2026"
BARE = "dupont-maconnerie@welyb.fr"
PURCHASES = "compta+dupont-maconnerie@welyb.fr"
SALES = "ventes+dupont-maconnerie@welyb.fr"
ANOTHER_SIREN = "404833048"


def _mail(to: str, *files: tuple[str, str, bytes], subject: str = "Facture") -> bytes:
    return message(to=to, subject=subject, attachments=list(files))


def _facturx(**fields: Any) -> tuple[str, str, bytes]:
    return ("facture.pdf", "application/pdf", facturx_pdf(**fields))


def _filed(gw: Gateway, server: RunningServer, to: str, *files: tuple[str, str, bytes]) -> None:
    code, reply = send(server, to, _mail(to, *files))
    assert code == 250, reply
    file_all(gw)


def _only_document(gw: Gateway) -> DocumentRow:
    [doc] = list_documents(gw.db)
    return doc


def _reason(gw: Gateway) -> str:
    with gw.db.read() as s:
        reasons = s.scalars(select(InboundMessage.reason).order_by(InboundMessage.id)).all()
    return str(reasons[-1])


@pytest.fixture
def buyer(gw: Gateway) -> Gateway:
    """dupont-maconnerie is the samples' buyer."""
    set_company(gw.db, "dupont-maconnerie", siren=BUYER_SIREN)
    return gw


@pytest.mark.parametrize(("siren", "journal"), [(BUYER_SIREN, "Achats"), (SELLER_SIREN, "Ventes")])
def test_the_bare_address_files_an_einvoice_by_the_companys_role(
    gw: Gateway, server: RunningServer, siren: str, journal: str
) -> None:
    set_company(gw.db, "dupont-maconnerie", siren=siren)
    _filed(gw, server, BARE, _facturx(), ("photo.pdf", "application/pdf", pdf("pas une facture")))
    docs = {d.filename: d for d in list_documents(gw.db)}
    invoice_doc = docs["facture.pdf"]
    assert invoice_doc.folder == f"{YEAR}/{journal}/11"
    assert docs["photo.pdf"].folder == "A classer"  # not an e-invoice: the address's folder
    invoice = invoice_doc.invoice
    assert invoice is not None
    assert (invoice["format"], invoice["number"], invoice["issue_date"]) == (
        "factur-x",
        "F-2026-0042",
        "2026-11-02",
    )
    assert invoice["role"] == ("buyer" if journal == "Achats" else "seller")
    assert invoice["checks"] == []
    assert docs["photo.pdf"].invoice is None


def test_a_company_without_a_siren_is_filed_as_the_address_says_and_the_reason_says_why(
    gw: Gateway, server: RunningServer
) -> None:
    _filed(gw, server, BARE, _facturx())
    doc = _only_document(gw)
    assert doc.folder == "A classer"
    assert doc.invoice is not None and doc.invoice["role"] is None
    assert "its SIREN is not set" in doc.invoice["checks"][0]
    assert "facture.pdf (invoice F-2026-0042, dupont-maconnerie): not checked" in _reason(gw)


def test_an_invoice_for_another_company_is_filed_and_said(
    gw: Gateway, server: RunningServer
) -> None:
    set_company(gw.db, "dupont-maconnerie", siren=ANOTHER_SIREN)
    _filed(gw, server, PURCHASES, _facturx())
    doc = _only_document(gw)
    assert doc.folder == f"{YEAR}/Achats/11"
    said = (
        f"addressed to another company: the buyer is SIREN {BUYER_SIREN} (Dupont Maçonnerie), "
        f"dupont-maconnerie is SIREN {ANOTHER_SIREN}"
    )
    assert doc.invoice is not None and doc.invoice["checks"] == [said]
    assert said in _reason(gw)


@pytest.mark.parametrize(
    ("siren", "to", "folder", "says"),
    [
        (SELLER_SIREN, PURCHASES, "Achats", "the company is the seller of this invoice"),
        (BUYER_SIREN, SALES, "Ventes", "the company is the buyer of this invoice"),
    ],
)
def test_a_journal_that_does_not_fit_the_role_keeps_its_folder_and_is_noted(
    gw: Gateway, server: RunningServer, siren: str, to: str, folder: str, says: str
) -> None:
    set_company(gw.db, "dupont-maconnerie", siren=siren)
    _filed(gw, server, to, _facturx())
    doc = _only_document(gw)
    assert doc.folder == f"{YEAR}/{folder}/11"
    assert doc.invoice is not None
    [check] = doc.invoice["checks"]
    assert check.startswith("journal mismatch: ") and says in check
    assert "journal mismatch" in _reason(gw)


def test_totals_that_do_not_add_up_are_noted(buyer: Gateway, server: RunningServer) -> None:
    _filed(buyer, server, PURCHASES, _facturx(total_with_tax="121.00", amount_due="121.00"))
    doc = _only_document(buyer)
    assert doc.invoice is not None
    assert doc.invoice["checks"] == [
        "totals do not add up: 100.00 (BT-109) + 20.00 (BT-110) = 120.00, "
        "the invoice says 121.00 (BT-112)"
    ]


def test_xml_invoices_standalone_in_a_zip_and_in_a_forwarded_mail_are_read(
    buyer: Gateway, server: RunningServer
) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("cii.xml", cii_xml(number="CII-7"))
    forwarded = _mail("x@example.org", _facturx(number="FX-9"), subject="Fwd: facture")
    _filed(
        buyer,
        server,
        BARE,
        ("ubl.xml", "application/xml", ubl_xml(number="UBL-1")),
        ("lot.zip", "application/zip", archive.getvalue()),
        ("transfert.eml", "message/rfc822", forwarded),
    )
    numbers = {d.invoice["number"]: d for d in list_documents(buyer.db) if d.invoice}
    assert set(numbers) == {"UBL-1", "CII-7", "FX-9"}
    assert numbers["UBL-1"].invoice is not None and numbers["UBL-1"].invoice["format"] == "ubl"
    assert numbers["CII-7"].origin.startswith("zip:")
    assert all(d.folder == f"{YEAR}/Achats/11" for d in numbers.values())


def test_an_invalid_or_hostile_einvoice_stays_a_document_with_the_reason(
    buyer: Gateway, server: RunningServer
) -> None:
    invalid = cii_xml().replace(b"<ram:TypeCode>", b"<ram:Unknown>x</ram:Unknown><ram:TypeCode>")
    hostile = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<rsm:CrossIndustryInvoice xmlns:rsm="urn:un:unece:uncefact:data:standard:'
        b'CrossIndustryInvoice:100">&x;</rsm:CrossIndustryInvoice>'
    )
    _filed(
        buyer,
        server,
        PURCHASES,
        ("invalide.xml", "application/xml", invalid),
        ("piege.xml", "application/xml", hostile),
    )
    docs = {d.filename: d for d in list_documents(buyer.db)}
    assert set(docs) == {"invalide.xml", "piege.xml"}
    checks = docs["invalide.xml"].invoice["checks"]  # type: ignore[index]
    assert checks[0].startswith("not a valid cii e-invoice: ")
    assert docs["invalide.xml"].invoice["number"] == "F-2026-0042"  # type: ignore[index]
    problem = docs["piege.xml"].invoice["problem"]  # type: ignore[index]
    assert "DTD" in problem and "root:" not in json.dumps(docs["piege.xml"].invoice)
    assert "piege.xml" in _reason(buyer) and problem in _reason(buyer)


@pytest.mark.parametrize("together", [False, True], ids=["one after the other", "one batch"])
def test_the_same_invoice_in_other_bytes_is_filed_once_and_recorded_as_a_duplicate(
    buyer: Gateway, server: RunningServer, together: bool
) -> None:
    first = facturx_pdf()
    again = facturx_pdf(seller_name="Fournitures Martin")  # re-rendered: other bytes
    assert first != again
    code, _ = send(server, PURCHASES, _mail(PURCHASES, ("facture.pdf", "application/pdf", first)))
    assert code == 250
    if not together:
        file_all(buyer)
    code, _ = send(
        server, BARE, _mail(BARE, ("facture-bis.pdf", "application/pdf", again), subject="Bis")
    )
    assert code == 250
    file_all(buyer)
    doc = _only_document(buyer)
    assert doc.filename == "facture.pdf"
    with buyer.db.read() as s:
        [duplicate] = s.scalars(select(DuplicateDocument)).all()
    assert duplicate.document_id == doc.id and duplicate.filename == "facture-bis.pdf"
    assert duplicate.reason == "same invoice F-2026-0042 of the same seller, other bytes"
    assert "already filed 1: facture-bis.pdf" in _reason(buyer)
    [line] = document_detail(buyer.db, doc.id).duplicates
    assert line.reason == duplicate.reason
    # Its bytes, filed as nothing, are not kept either (once the first is known).
    again_sha = hashlib.sha256(again).hexdigest()
    assert buyer.blobs.exists(doc.sha256) and buyer.blobs.exists(again_sha) is together
    # Another invoice number from the same seller is another invoice.
    _filed(buyer, server, PURCHASES, _facturx(number="F-2026-0043"))
    assert len(list_documents(buyer.db)) == 2


def test_another_company_files_the_same_invoice_too(buyer: Gateway, server: RunningServer) -> None:
    _filed(buyer, server, PURCHASES, _facturx())
    _filed(buyer, server, "compta+boulangerie-martin@welyb.fr", _facturx())
    assert {d.company for d in list_documents(buyer.db)} == {
        "dupont-maconnerie",
        "boulangerie-martin",
    }


@pytest.fixture
def rules_trusting_the_invoice(tmp_path: Path) -> Path:
    path = tmp_path / "einvoice_filing.toml"
    path.write_text(
        '[journals]\npurchases = ["compta", "achats"]\nsales = ["ventes"]\n'
        '[bare_address]\nbuyer = "achats"\nseller = "ventes"\n'
        "[journal_address]\ntrust_invoice = true\n"
    )
    return path


def test_journal_addresses_trust_the_invoice_when_the_rules_say_so(
    tmp_path: Path, database_url: str, clock: FixedClock, rules_trusting_the_invoice: Path
) -> None:
    sections = {"einvoice": {"rules": str(rules_trusting_the_invoice)}}
    with custom_server(tmp_path, database_url, clock, **sections) as (gw, server):
        set_company(gw.db, "dupont-maconnerie", siren=SELLER_SIREN)
        _filed(gw, server, PURCHASES, _facturx())
        doc = _only_document(gw)
    assert doc.folder == f"{YEAR}/Ventes/11"
    assert doc.invoice is not None
    [check] = doc.invoice["checks"]
    assert check.startswith("journal mismatch") and check.endswith(
        "filed by the invoice into ventes"
    )


def test_with_einvoices_off_nothing_is_read(
    tmp_path: Path, database_url: str, clock: FixedClock
) -> None:
    with custom_server(tmp_path, database_url, clock, einvoice={"enabled": False}) as (gw, server):
        set_company(gw.db, "dupont-maconnerie", siren=BUYER_SIREN)
        _filed(gw, server, BARE, _facturx())
        doc = _only_document(gw)
    assert doc.folder == "A classer" and doc.invoice is None


@pytest.fixture
def out_buyer(out_gw: Gateway) -> Iterator[Gateway]:
    set_company(out_gw.db, "dupont-maconnerie", siren=BUYER_SIREN)
    yield out_gw


def test_partners_get_the_same_bytes_and_the_ledger_shows_the_invoice_number(
    out_buyer: Gateway, clock: FixedClock, partner_inbox: Any
) -> None:
    connect_meg(out_buyer, clock)
    folder = f"{YEAR}/Achats"
    set_switch(
        out_buyer.db, "dupont-maconnerie", folder, "meg", True, clock.now(), create_folder=True
    )
    clock.advance(minutes=1)
    invoice = facturx_pdf()
    server = RunningServer(out_buyer).start()
    try:
        _filed(out_buyer, server, BARE, ("facture.pdf", "application/pdf", invoice))
    finally:
        server.stop()
    [delivery] = list_deliveries(out_buyer.db)
    assert delivery.invoice_number == "F-2026-0042"
    listed = (
        CliRunner().invoke(cli, ["deliveries", "list", "-c", str(out_buyer.config.path)]).output
    )
    assert "F-2026-0042" in listed
    assert send_due(out_buyer, flush=True) == 1
    [(_, _, data)] = partner_inbox.accepted
    assert _attachment(data) == invoice


def _attachment(data: bytes) -> bytes:
    parsed = email.message_from_bytes(data, policy=policy.default)
    [attachment] = list(parsed.iter_attachments())
    content = attachment.get_content()
    assert isinstance(content, bytes)
    return content


def test_documents_show_and_list_give_the_invoice(buyer: Gateway, server: RunningServer) -> None:
    _filed(buyer, server, BARE, _facturx())
    doc = _only_document(buyer)
    c = ["-c", str(buyer.config.path)]
    shown = CliRunner().invoke(cli, ["documents", "show", str(doc.id), *c])
    assert shown.exit_code == 0, shown.output
    assert "invoice F-2026-0042 of 2026-11-02" in shown.output
    assert f"buyer Dupont Maçonnerie (SIREN {BUYER_SIREN}" in shown.output
    assert "the company is buyer" in shown.output
    as_json = json.loads(
        CliRunner().invoke(cli, ["documents", "show", str(doc.id), "--json", *c]).output
    )
    assert as_json["invoice"]["total_with_tax"] == "120.00"
    listed = json.loads(CliRunner().invoke(cli, ["documents", "list", "--json", *c]).output)
    assert listed[0]["invoice"]["seller"]["siren"] == SELLER_SIREN


def test_a_siren_set_while_the_worker_runs_counts_for_the_next_message(
    gw: Gateway, server: RunningServer
) -> None:
    """The worker's directory keeps companies for a minute; their identity is read fresh."""
    filer = gw.filer("one-worker")
    for number, siren in (("F-1", None), ("F-2", BUYER_SIREN)):
        if siren:
            set_company(gw.db, "dupont-maconnerie", siren=siren)
        code, _ = send(server, BARE, _mail(BARE, _facturx(number=number), subject=number))
        assert code == 250
        while filer.run_once():
            pass
    folders = {d.invoice["number"]: d.folder for d in list_documents(gw.db) if d.invoice}
    assert folders == {"F-1": "A classer", "F-2": f"{YEAR}/Achats/11"}


def test_an_invoice_and_a_credit_note_of_the_same_number_are_two_documents(
    buyer: Gateway, server: RunningServer
) -> None:
    _filed(buyer, server, PURCHASES, _facturx())
    _filed(buyer, server, PURCHASES, _facturx(type_code="381"))
    kinds = sorted(d.invoice["kind"] for d in list_documents(buyer.db) if d.invoice)
    assert kinds == ["credit_note", "invoice"]


def test_the_filed_event_and_the_api_carry_the_invoice(
    tmp_path: Path, database_url: str, clock: FixedClock
) -> None:
    with custom_server(tmp_path, database_url, clock) as (gw, server):
        set_company(gw.db, "dupont-maconnerie", siren=BUYER_SIREN)
        _filed(gw, server, PURCHASES, _facturx())
        _filed(gw, server, BARE, _facturx(seller_name="Martin"))  # the same, re-rendered
        [event] = events_after(gw.db, 0, 100, types=[DOCUMENT_FILED])
        assert event.payload["invoice"]["number"] == "F-2026-0042"
        assert event.payload["invoice"]["role"] == "buyer"
        with running_api(gw) as api:
            doc = api.get(f"/documents/{event.subject}", api.token("read")).json()
    assert doc["invoice"]["total_with_tax"] == "120.00"
    [duplicate] = doc["duplicates"]
    assert duplicate["reason"] == "same invoice F-2026-0042 of the same seller, other bytes"

"""gateway.einvoice: e-invoices read field by field, and hostile ones refused with a reason."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tracemalloc
import zlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import facturx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from pypdf import PdfWriter
from pypdf.generic import ArrayObject, DictionaryObject, NameObject, NumberObject

from gateway.einvoice.model import Invoice, Party, Reading, kind_of, siren_of
from gateway.einvoice.reader import read_einvoice
from tests.einvoice_samples import (
    BUYER_SIREN,
    BUYER_VAT,
    CII_NS,
    FACTURX_LEVEL,
    GUIDELINE_ID,
    LEVELS,
    PROFILE,
    SELLER_SIREN,
    SELLER_SIRET,
    SELLER_VAT,
    cii_xml,
    facturx_pdf,
    plain_pdf,
    ubl_xml,
)

LIMIT = 10 * 1024 * 1024
CII_NAMESPACE = CII_NS["rsm"]


def read(content: bytes, filename: str = "facture.xml", media_type: str = "") -> Reading | None:
    return read_einvoice(filename, media_type, content, max_xml_bytes=LIMIT)


def read_invoice(content: bytes, filename: str = "facture.xml", media_type: str = "") -> Invoice:
    reading = read(content, filename, media_type)
    assert reading is not None and reading.problem is None, reading
    assert reading.invoice is not None
    return reading.invoice


def refusal(content: bytes, filename: str = "facture.xml", media_type: str = "") -> str:
    """The reason a file is refused; it must be refused, not read nor ignored."""
    reading = read(content, filename, media_type)
    assert reading is not None, "not taken for an e-invoice"
    assert reading.invoice is None, reading
    assert reading.problem is not None and reading.problem.startswith("e-invoice refused: ")
    assert "\n" not in reading.problem
    return reading.problem


def expected(source_format: str, level: str = "EN16931", **changes: Any) -> Invoice:
    """The invoice the samples' defaults make."""
    invoice = Invoice(
        format=source_format,
        profile=PROFILE[level],
        number="F-2026-0042",
        issue_date=date(2026, 11, 2),
        type_code="380",
        kind="invoice",
        currency="EUR",
        seller=Party("Fournitures Martin SARL", SELLER_SIREN, SELLER_VAT),
        # MINIMUM knows no buyer VAT number, nor due date.
        buyer=Party("Dupont Maçonnerie", BUYER_SIREN, None if level == "MINIMUM" else BUYER_VAT),
        total_without_tax=Decimal("100.00"),
        total_tax=Decimal("20.00"),
        total_with_tax=Decimal("120.00"),
        amount_due=Decimal("120.00"),
        due_date=None if level == "MINIMUM" else date(2026, 12, 2),
    )
    return replace(invoice, **changes)


# Not the defaults in any field, so that nothing read can be a constant.
OTHER_VALUES: dict[str, Any] = {
    "number": "AV/2027-7",
    "issue_date": date(2027, 1, 15),
    "type_code": "381",
    "currency": "USD",
    "seller_name": "Négoce & Fils <SAS>",
    "buyer_name": "Boulangerie L'Épi",
    "total_without_tax": "250.50",
    "total_tax": "50.10",
    "total_with_tax": "300.60",
    "amount_due": "100.60",
    "due_date": date(2027, 2, 28),
}
OTHER_INVOICE_FIELDS: dict[str, Any] = {
    "number": "AV/2027-7",
    "issue_date": date(2027, 1, 15),
    "type_code": "381",
    "kind": "credit_note",
    "currency": "USD",
    "seller": Party("Négoce & Fils <SAS>", SELLER_SIREN, SELLER_VAT),
    "buyer": Party("Boulangerie L'Épi", BUYER_SIREN, BUYER_VAT),
    "total_without_tax": Decimal("250.50"),
    "total_tax": Decimal("50.10"),
    "total_with_tax": Decimal("300.60"),
    "amount_due": Decimal("100.60"),
    "due_date": date(2027, 2, 28),
}


# --- The samples are what they claim to be ---------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_cii_samples_validate_against_their_level_xsd(level: str) -> None:
    for content in (cii_xml(level), cii_xml(level, **OTHER_VALUES)):
        assert facturx.xml_check_xsd(content, flavor="factur-x", level=FACTURX_LEVEL[level])


@pytest.mark.parametrize("kind", ["invoice", "credit_note"])
def test_ubl_samples_validate_against_the_ubl_xsd(kind: str) -> None:
    flavor = "ubl-2.1-invoice" if kind == "invoice" else "ubl-2.1-creditnote"
    for content in (ubl_xml(kind), ubl_xml(kind, **OTHER_VALUES)):
        assert facturx.xml_check_xsd(content, flavor=flavor)


# --- Every field, every syntax ----------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_facturx_pdf_every_field(level: str) -> None:
    assert read_invoice(facturx_pdf(level), "facture.pdf", "application/pdf") == expected(
        "factur-x", level
    )


@pytest.mark.parametrize("level", LEVELS)
def test_standalone_cii_every_field(level: str) -> None:
    assert read_invoice(cii_xml(level)) == expected("cii", level)


def test_other_values_are_read_not_assumed() -> None:
    pdf = facturx_pdf("EN16931", **OTHER_VALUES)
    assert read_invoice(pdf, "x.pdf", "application/pdf") == expected(
        "factur-x", **OTHER_INVOICE_FIELDS
    )
    assert read_invoice(cii_xml("EXTENDED", **OTHER_VALUES)) == expected(
        "cii", "EXTENDED", **OTHER_INVOICE_FIELDS
    )
    assert read_invoice(ubl_xml("invoice", **OTHER_VALUES)) == expected(
        "ubl", **OTHER_INVOICE_FIELDS
    )


def test_ubl_invoice_every_field() -> None:
    assert read_invoice(ubl_xml("invoice")) == expected("ubl")


def test_ubl_credit_note_every_field() -> None:
    invoice = read_invoice(ubl_xml("credit_note"))
    assert invoice == expected("ubl", type_code="381", kind="credit_note")
    # UBL 2.1 credit notes carry the due date in PaymentMeans: it is read from there.
    assert b"<cbc:DueDate>" not in ubl_xml("credit_note")
    assert invoice.due_date == date(2026, 12, 2)


def test_a_ubl_credit_note_is_one_whatever_its_type_code() -> None:
    assert read_invoice(ubl_xml("credit_note", type_code="380")).kind == "credit_note"


@pytest.mark.parametrize(
    "type_code", ["381", "261", "262", "296", "308", "396", "420", "458", "532"]
)
def test_credit_note_type_codes(type_code: str) -> None:
    assert kind_of(type_code) == "credit_note"
    invoice = read_invoice(cii_xml(type_code=type_code))
    assert (invoice.type_code, invoice.kind) == (type_code, "credit_note")


@pytest.mark.parametrize("type_code", ["380", "384", "386", "389", "751", None])
def test_other_type_codes_are_invoices(type_code: str | None) -> None:
    assert kind_of(type_code) == "invoice"


@pytest.mark.parametrize(
    ("level", "guideline", "profile"),
    [
        (
            "EXTENDED",
            "urn:cen.eu:en16931:2017#conformant#urn.cpro.gouv.fr:1p0:extended-ctc-fr",
            "EXTENDED-CTC-FR",
        ),
        ("BASIC", "urn:zugferd.de:2p0:basic", "BASIC"),
        (
            "EN16931",
            "urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0",
            "urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0",
        ),
    ],
)
def test_other_cii_profiles(level: str, guideline: str, profile: str) -> None:
    content = cii_xml(level).replace(f">{GUIDELINE_ID[level]}<".encode(), f">{guideline}<".encode())
    invoice = read_invoice(content)
    assert (invoice.profile, invoice.schema_error) == (profile, None)


def test_ubl_profile_as_written_when_unknown() -> None:
    custom = "urn:cen.eu:en16931:2017#compliant#urn:example:cius:1.0"
    content = ubl_xml().replace(b">urn:cen.eu:en16931:2017<", f">{custom}<".encode())
    assert read_invoice(content).profile == custom


def test_the_siren_of_a_siret_is_its_first_nine_digits() -> None:
    assert siren_of(SELLER_SIRET, "0009") == SELLER_SIREN
    assert siren_of("732 829 320 00074", "0009") == SELLER_SIREN
    assert siren_of(SELLER_SIRET, "0002") is None  # a SIREN has 9 digits
    assert siren_of(SELLER_SIREN, None) == SELLER_SIREN
    assert siren_of("FR12345", "0002") is None
    assert b'schemeID="0009">73282932000074<' in cii_xml(seller_siren=SELLER_SIRET)
    assert read_invoice(cii_xml(seller_siren=SELLER_SIRET)).seller.siren == SELLER_SIREN
    assert read_invoice(ubl_xml(buyer_siren=SELLER_SIRET)).buyer.siren == SELLER_SIREN


def test_missing_identifiers_are_none() -> None:
    invoice = read_invoice(cii_xml(seller_siren=None, seller_vat=None, buyer_siren=None))
    assert invoice.seller == Party("Fournitures Martin SARL", None, None)
    assert invoice.buyer.siren is None
    assert read_invoice(ubl_xml(seller_siren=None, seller_vat=None)).seller.siren is None


def test_vat_number_without_spaces_upper_case() -> None:
    invoice = read_invoice(cii_xml(seller_vat="fr 44 732 829 320"))
    assert invoice.seller.vat_number == SELLER_VAT


def test_the_tax_total_in_the_invoice_currency() -> None:
    """An invoice in USD with its VAT also accounted in EUR has two TaxTotalAmounts (BT-110
    and BT-111); BT-110 is the one in the invoice currency, whichever comes first."""
    root = etree.fromstring(cii_xml("EN16931", currency="USD", total_tax="20.00"))
    summation = root.find(".//ram:SpecifiedTradeSettlementHeaderMonetarySummation", CII_NS)
    in_eur = etree.Element(f"{{{CII_NS['ram']}}}TaxTotalAmount", currencyID="EUR")
    in_eur.text = "18.50"
    summation.find("ram:TaxTotalAmount", CII_NS).addprevious(in_eur)
    invoice = read_invoice(etree.tostring(root))
    assert invoice.total_tax == Decimal("20.00")
    assert invoice.schema_error is None


def test_schema_invalid_but_well_formed_is_read_with_the_reason() -> None:
    content = cii_xml().replace(
        b"<ram:TypeCode>380</ram:TypeCode>",
        b"<ram:TypeCode>380</ram:TypeCode><ram:Mood>cheerful</ram:Mood>",
    )
    invoice = read_invoice(content)
    assert invoice.schema_error is not None
    assert "Mood" in invoice.schema_error and "not expected" in invoice.schema_error
    assert "\n" not in invoice.schema_error
    assert replace(invoice, schema_error=None) == expected("cii")


def test_a_minimum_invoice_is_checked_against_the_minimum_xsd() -> None:
    # A due date is fine at EN 16931 but not at MINIMUM: the level's own XSD decides.
    en16931_terms = b"<ram:SpecifiedTradePaymentTerms><ram:DueDateDateTime>"
    minimum = cii_xml("MINIMUM").replace(
        b"<ram:SpecifiedTradeSettlementHeaderMonetarySummation>",
        en16931_terms
        + b'<udt:DateTimeString format="102">20261202</udt:DateTimeString>'
        + b"</ram:DueDateDateTime></ram:SpecifiedTradePaymentTerms>"
        + b"<ram:SpecifiedTradeSettlementHeaderMonetarySummation>",
    )
    invoice = read_invoice(minimum)
    assert invoice.schema_error is not None and "SpecifiedTradePaymentTerms" in invoice.schema_error
    assert invoice.due_date == date(2026, 12, 2)


def test_ubl_schema_error() -> None:
    content = ubl_xml().replace(b"<cbc:ID>F-2026-0042</cbc:ID>", b"")
    invoice = read_invoice(content)
    assert invoice.number is None
    assert invoice.schema_error is not None and "IssueDate" in invoice.schema_error


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        (b"20261102", b"2026-11-02", "issue_date"),
        (b"20261102", b"20261341", "issue_date"),
        (b'format="102">20261202', b'format="610">202612', "due_date"),
        (
            b">100.00</ram:TaxBasisTotalAmount>",
            b">cent</ram:TaxBasisTotalAmount>",
            "total_without_tax",
        ),
        (b">20.00</ram:TaxTotalAmount>", b">NaN</ram:TaxTotalAmount>", "total_tax"),
        (b">120.00</ram:GrandTotalAmount>", b">1e9999</ram:GrandTotalAmount>", "total_with_tax"),
        (b">120.00</ram:DuePayableAmount>", b"></ram:DuePayableAmount>", "amount_due"),
    ],
)
def test_a_malformed_value_is_none_not_an_error(old: bytes, new: bytes, field: str) -> None:
    content = cii_xml()
    assert old in content
    invoice = read_invoice(content.replace(old, new, 1))
    assert getattr(invoice, field) is None
    assert invoice.number == "F-2026-0042"  # the rest is still read


def test_malformed_ubl_values() -> None:
    content = ubl_xml().replace(b"2026-11-02", b"2026-02-30").replace(b">120.00<", b">12O.00<")
    invoice = read_invoice(content)
    assert invoice.issue_date is None and invoice.total_with_tax is None
    assert invoice.amount_due is None and invoice.total_tax == Decimal("20.00")


def test_json_round_trip() -> None:
    for invoice in (
        read_invoice(cii_xml()),
        read_invoice(cii_xml("MINIMUM", **OTHER_VALUES)),
        read_invoice(ubl_xml("credit_note")),
        replace(read_invoice(cii_xml()), schema_error="line 3: oops", seller=Party()),
    ):
        data = json.loads(json.dumps(invoice.to_json()))
        assert data["total_tax"] == str(invoice.total_tax)
        assert Invoice.from_json(data) == invoice
        assert Invoice.from_json(data).to_json() == data  # "120.00" stays "120.00"


# --- Not e-invoices ---------------------------------------------------------------------------


def test_plain_pdf_is_not_an_einvoice() -> None:
    assert read(plain_pdf(), "scan.pdf", "application/pdf") is None
    assert read(plain_pdf(), "scan", "application/octet-stream") is None


def test_pdf_with_another_attachment_is_not_an_einvoice() -> None:
    writer = PdfWriter(clone_from=io.BytesIO(plain_pdf()))
    writer.add_attachment("notes.xml", cii_xml())
    out = io.BytesIO()
    writer.write(out)
    assert b"/EmbeddedFile" in out.getvalue()
    assert read(out.getvalue(), "x.pdf", "application/pdf") is None


def test_invoice_found_among_other_attachments_without_af() -> None:
    """No /AF, the invoice second in the embedded files' name tree, named as ZUGFeRD 2.0
    named it: still found."""
    writer = PdfWriter(clone_from=io.BytesIO(plain_pdf()))
    writer.add_attachment("bon-de-livraison.txt", b"42 parpaings")
    writer.add_attachment("ZUGFeRD-invoice.xml", cii_xml())
    out = io.BytesIO()
    writer.write(out)
    assert b"/AF" not in out.getvalue()
    assert read_invoice(out.getvalue(), "f.pdf", "application/pdf") == expected("factur-x")


@pytest.mark.timeout(10)
def test_an_endless_name_tree_is_given_up() -> None:
    """A name tree whose node is its own 50 kids: 50**8 nodes to a depth bound alone."""
    writer = PdfWriter(clone_from=io.BytesIO(plain_pdf()))
    node = DictionaryObject()
    reference = writer._add_object(node)
    node[NameObject("/Kids")] = ArrayObject([reference] * 50)
    writer._root_object[NameObject("/Names")] = DictionaryObject(
        {NameObject("/EmbeddedFiles"): reference}
    )
    out = io.BytesIO()
    writer.write(out)
    assert read(out.getvalue(), "x.pdf", "application/pdf") is None


def test_broken_pdf_is_not_an_einvoice() -> None:
    assert read(b"%PDF-1.7\n/EmbeddedFile /AF garbage", "x.pdf", "application/pdf") is None
    assert read(facturx_pdf()[:1500], "x.pdf", "application/pdf") is None


@pytest.mark.parametrize(
    "content",
    [
        b'<?xml version="1.0"?><catalogue><item>pain</item></catalogue>',
        # Names the CII namespace, but is no invoice: a stylesheet.
        b'<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0"'
        b' xmlns:rsm="urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"/>',
        b"Bonjour, voici la facture.",
        b"",
    ],
)
def test_other_xml_is_not_an_einvoice(content: bytes) -> None:
    assert read(content) is None
    assert read(content, "notes.txt", "text/plain") is None


def test_xml_is_recognised_by_its_bytes_whatever_its_label() -> None:
    assert read_invoice(cii_xml(), "FACTURE", "application/octet-stream").format == "cii"
    assert read_invoice(b"\xef\xbb\xbf" + ubl_xml(), "x.bin", "").format == "ubl"
    utf16 = cii_xml().decode().replace("UTF-8", "UTF-16").encode("utf-16")
    assert read_invoice(utf16, "x", "") == expected("cii")


def test_the_bytes_decide_before_the_label() -> None:
    assert read_invoice(ubl_xml(), "facture.pdf", "application/pdf").format == "ubl"
    pdf = facturx_pdf()
    assert read_invoice(pdf, "SCAN0001", "application/octet-stream").format == "factur-x"
    assert read_invoice(b"junk\r\n" + pdf, "f", "").format == "factur-x"


def test_invoice_namespace_but_not_well_formed_is_refused() -> None:
    problem = refusal(cii_xml()[:-40])
    assert "not well-formed" in problem


# --- Hostile input ----------------------------------------------------------------------------


def cii_with_prolog(prolog: str, body: str = "", encoding: str = "utf-8") -> bytes:
    document = (
        f'<?xml version="1.0" encoding="{encoding}"?>\n{prolog}\n'
        f'<rsm:CrossIndustryInvoice xmlns:rsm="{CII_NAMESPACE}" xmlns:ram="{CII_NS["ram"]}">'
        f"{body}</rsm:CrossIndustryInvoice>"
    )
    return document.encode(encoding)


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A named pipe nobody writes: a parser that opens it blocks forever (the test times out).
    Opened for writing at the end, it lets a stray reader go, so no thread outlives the test."""
    path = tmp_path / "fifo"
    os.mkfifo(path)
    yield path
    with contextlib.suppress(OSError):  # ENXIO: nobody is reading it, all is well
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.timeout(10)
@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_external_entities_read_nothing(tmp_path: Path, fifo: Path, encoding: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-7d1f0c")
    for target in (fifo, secret):
        for prolog, body in (
            (f'<!DOCTYPE r [<!ENTITY x SYSTEM "file://{target}">]>', "<ram:ID>&x;</ram:ID>"),
            (f'<!DOCTYPE r [<!ENTITY % p SYSTEM "{target}"> %p;]>', ""),
            (f'<!DOCTYPE r SYSTEM "{target}">', ""),
        ):
            content = cii_with_prolog(prolog, body, encoding)
            assert "DTD" in refusal(content)
            assert "SECRET-7d1f0c" not in repr(read(content))


def billion_laughs(encoding: str = "utf-8") -> bytes:
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    )
    return cii_with_prolog(f"<!DOCTYPE r [{entities}]>", "<ram:ID>&lol9;</ram:ID>", encoding)


def test_entity_expansion_bomb_is_refused() -> None:
    assert "DTD" in refusal(billion_laughs())
    # UTF-16 hides the DOCTYPE from the byte check: the parser's own guards stop it.
    assert "refused" in refusal(billion_laughs("utf-16"))


def test_a_dtd_is_refused_before_parsing() -> None:
    # Not well-formed after the DOCTYPE: only a refusal before parsing names the DTD.
    assert "declares a DTD" in refusal(cii_with_prolog("<!DOCTYPE r []>", "<unclosed>"))


def test_internal_subset_alone_is_refused() -> None:
    assert "declares a DTD" in refusal(cii_with_prolog('<!DOCTYPE r [<!ENTITY a "b">]>'))
    utf16 = cii_with_prolog('<!DOCTYPE r [<!ENTITY a "b">]>', encoding="utf-16")
    assert "declares a DTD" in refusal(utf16)


def test_fifty_megabyte_xml_is_refused_by_size() -> None:
    content = cii_xml().replace(b"</rsm:CrossIndustryInvoice>", b" " * (50 * 1024 * 1024)) + (
        b"</rsm:CrossIndustryInvoice>"
    )
    problem = refusal(content)
    assert f"size limit of {LIMIT} bytes" in problem
    assert str(len(content)) in problem


def embedded_stream_patched(pdf: bytes, *, data: bytes | None = None, **entries: Any) -> bytes:
    """``pdf`` (a Factur-X PDF) with its embedded XML's stream bytes replaced as they go in
    the file (no encoding on the way) and stream dictionary entries set (None: removed);
    "Size" is the /Params /Size."""
    writer = PdfWriter(clone_from=io.BytesIO(pdf))
    file_spec = writer._root_object["/AF"][0].get_object()
    stream = file_spec["/EF"]["/F"].get_object()
    if data is not None:
        stream._data = data
    for key, value in entries.items():
        target = stream["/Params"] if key == "Size" else stream
        if value is None:
            del target[NameObject(f"/{key}")]
        else:
            target[NameObject(f"/{key}")] = value
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_embedded_file_that_lies_about_its_size() -> None:
    real_size = len(cii_xml())
    for declared in (real_size - 1, real_size + 100, 12):
        lying = embedded_stream_patched(facturx_pdf(), Size=NumberObject(declared))
        problem = refusal(lying, "f.pdf", "application/pdf")
        assert (
            f"the embedded XML's declared size ({declared} bytes) is not its real size "
            f"({real_size} bytes)"
        ) in problem
    # The truth, or no size at all, reads.
    honest = embedded_stream_patched(facturx_pdf(), Size=NumberObject(real_size))
    assert read_invoice(honest, "f.pdf", "application/pdf") == expected("factur-x")
    no_size = embedded_stream_patched(facturx_pdf(), Size=None)
    assert read_invoice(no_size, "f.pdf", "application/pdf") == expected("factur-x")


def test_embedded_file_declaring_more_than_the_limit() -> None:
    huge = embedded_stream_patched(facturx_pdf(), Size=NumberObject(LIMIT + 1))
    assert f"declares {LIMIT + 1} bytes, over the size limit" in refusal(huge, "f.pdf")


def flate_bomb(megabytes: int) -> bytes:
    compressor = zlib.compressobj(9)
    zeros = bytes(1024 * 1024)
    return b"".join(compressor.compress(zeros) for _ in range(megabytes)) + compressor.flush()


@pytest.mark.parametrize("declared_size", [None, 3000])
def test_embedded_flate_bomb_is_refused_within_the_bound(declared_size: int | None) -> None:
    size = None if declared_size is None else NumberObject(declared_size)
    bomb = embedded_stream_patched(facturx_pdf(), data=flate_bomb(200), Size=size)
    tracemalloc.start()
    try:
        problem = refusal(bomb, "f.pdf", "application/pdf")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"over the size limit of {LIMIT} bytes" in problem
    # The bound is what kept it small: inflated whole it would hold 200 MB.
    assert peak < 4 * LIMIT


def test_embedded_stream_with_an_unsupported_filter_is_refused() -> None:
    xml = cii_xml()
    hexed = embedded_stream_patched(
        facturx_pdf(), data=xml.hex().encode() + b">", Filter=NameObject("/ASCIIHexDecode")
    )
    assert "encoded with /ASCIIHexDecode" in refusal(hexed, "f.pdf", "application/pdf")
    predictor = embedded_stream_patched(
        facturx_pdf(), DecodeParms=DictionaryObject({NameObject("/Predictor"): NumberObject(12)})
    )
    assert "with parameters" in refusal(predictor, "f.pdf", "application/pdf")


def test_embedded_stream_not_compressed_is_read() -> None:
    plain = embedded_stream_patched(facturx_pdf(), data=cii_xml(), Filter=None)
    assert read_invoice(plain, "f.pdf", "application/pdf") == expected("factur-x")


def test_embedded_stream_corrupt_is_refused() -> None:
    corrupt = embedded_stream_patched(facturx_pdf(), data=b"\x78\x9cnot zlib at all")
    assert "cannot be inflated" in refusal(corrupt, "f.pdf", "application/pdf")


def test_embedded_xml_is_parsed_as_safely() -> None:
    hostile = billion_laughs()
    pdf = embedded_stream_patched(
        facturx_pdf(), data=zlib.compress(hostile), Size=NumberObject(len(hostile))
    )
    assert "the PDF's embedded factur-x.xml declares a DTD" in refusal(pdf, "f.pdf")


def test_embedded_xml_that_is_no_invoice() -> None:
    other = b"<order>42</order>"
    pdf = embedded_stream_patched(
        facturx_pdf(), data=zlib.compress(other), Size=NumberObject(len(other))
    )
    assert "not a CII or UBL invoice (its root is order)" in refusal(pdf, "f.pdf")


SAMPLES = [cii_xml(), cii_xml("MINIMUM"), ubl_xml(), ubl_xml("credit_note"), facturx_pdf()]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_einvoices_never_raise(data: st.DataObject) -> None:
    """Bytes changed anywhere in an invoice give an invoice, a refusal or None: never an
    exception."""
    original = data.draw(st.sampled_from(SAMPLES))
    damaged = bytearray(original)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(damaged) - 1))
        damaged[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(damaged)))
    reading = read(bytes(damaged[:cut]), "f", "")
    assert reading is None or (reading.invoice is None) != (reading.problem is None)

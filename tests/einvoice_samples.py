"""Electronic invoices to test with: Factur-X PDFs at each level, standalone CII and UBL XML.

Shared by the e-invoice reader's tests and the filing integration tests, so the signatures stay
put. Every builder's default output validates against the XSD factur-x ships for it (checked in
tests/test_einvoice.py); the identifiers are valid ones (checked below with python-stdnum).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation
from io import BytesIO
from typing import Any, Final

import facturx
from lxml import etree
from pypdf import PdfWriter
from stdnum.fr import siren, siret, tva

SELLER_SIREN: Final = "732829320"
SELLER_SIRET: Final = "73282932000074"  # an establishment of SELLER_SIREN
SELLER_VAT: Final = "FR44732829320"
BUYER_SIREN: Final = "483593216"
BUYER_VAT: Final = "FR33483593216"

assert siren.is_valid(SELLER_SIREN) and siren.is_valid(BUYER_SIREN)
assert siret.is_valid(SELLER_SIRET) and SELLER_SIRET.startswith(SELLER_SIREN)
assert tva.is_valid(SELLER_VAT) and SELLER_VAT.endswith(SELLER_SIREN)
assert tva.is_valid(BUYER_VAT) and BUYER_VAT.endswith(BUYER_SIREN)

LEVELS: Final = ("MINIMUM", "BASIC WL", "BASIC", "EN16931", "EXTENDED")
# The level as factur-x's functions name it.
FACTURX_LEVEL: Final = {
    "MINIMUM": "minimum",
    "BASIC WL": "basicwl",
    "BASIC": "basic",
    "EN16931": "en16931",
    "EXTENDED": "extended",
}
GUIDELINE_ID: Final = {
    "MINIMUM": "urn:factur-x.eu:1p0:minimum",
    "BASIC WL": "urn:factur-x.eu:1p0:basicwl",
    "BASIC": "urn:cen.eu:en16931:2017#compliant#urn:factur-x.eu:1p0:basic",
    "EN16931": "urn:cen.eu:en16931:2017",
    "EXTENDED": "urn:cen.eu:en16931:2017#conformant#urn:factur-x.eu:1p0:extended",
}
# What Invoice.profile says for each level.
PROFILE: Final = {
    "MINIMUM": "MINIMUM",
    "BASIC WL": "BASIC WL",
    "BASIC": "BASIC",
    "EN16931": "EN 16931",
    "EXTENDED": "EXTENDED",
}
UBL_CUSTOMIZATION_ID: Final = "urn:cen.eu:en16931:2017"

CII_NS: Final = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "qdt": "urn:un:unece:uncefact:data:standard:QualifiedDataType:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
}
UBL_NS: Final = {
    "invoice": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
    "credit_note": "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2",
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
}


def _add(parent: Any, name: str, text: str | None = None, **attributes: str) -> Any:
    """A child element named ``prefix:local`` (CII and UBL prefixes both resolve)."""
    prefix, local = name.split(":")
    namespace = CII_NS.get(prefix) or UBL_NS[prefix]
    element = etree.SubElement(parent, f"{{{namespace}}}{local}", attributes)
    if text is not None:
        element.text = text
    return element


def _rate(total_without_tax: str, total_tax: str) -> str:
    """The VAT rate that makes one line's tax equal the total (20.00 for the defaults)."""
    try:
        base, tax = Decimal(total_without_tax), Decimal(total_tax)
        return str((tax * 100 / base).quantize(Decimal("0.01"))) if base else "0.00"
    except (InvalidOperation, ArithmeticError):
        return "20.00"  # a malformed amount on purpose: any rate will do


def _legal_id(identifier: str) -> tuple[str, str]:
    """schemeID and value: a SIREN (9 digits, scheme 0002) or a SIRET (14, scheme 0009)."""
    return ("0009" if len(identifier) == 14 else "0002"), identifier


def _cii_date(parent: Any, name: str, day: date) -> None:
    _add(_add(parent, name), "udt:DateTimeString", day.strftime("%Y%m%d"), format="102")


def _cii_party(
    parent: Any,
    name: str,
    party_name: str,
    legal_id: str | None,
    vat: str | None,
    level: str,
) -> None:
    party = _add(parent, name)
    _add(party, "ram:Name", party_name)
    if legal_id is not None:
        scheme, value = _legal_id(legal_id)
        _add(_add(party, "ram:SpecifiedLegalOrganization"), "ram:ID", value, schemeID=scheme)
    if name == "ram:SellerTradeParty" or level != "MINIMUM":
        # MINIMUM knows no buyer address nor buyer VAT number.
        _add(_add(party, "ram:PostalTradeAddress"), "ram:CountryID", "FR")
        if vat is not None:
            _add(_add(party, "ram:SpecifiedTaxRegistration"), "ram:ID", vat, schemeID="VA")


def _cii_line(transaction: Any, total_without_tax: str, rate: str) -> None:
    line = _add(transaction, "ram:IncludedSupplyChainTradeLineItem")
    _add(_add(line, "ram:AssociatedDocumentLineDocument"), "ram:LineID", "1")
    _add(_add(line, "ram:SpecifiedTradeProduct"), "ram:Name", "Parpaings 20x20x50")
    price = _add(_add(line, "ram:SpecifiedLineTradeAgreement"), "ram:NetPriceProductTradePrice")
    _add(price, "ram:ChargeAmount", total_without_tax)
    delivery = _add(line, "ram:SpecifiedLineTradeDelivery")
    _add(delivery, "ram:BilledQuantity", "1", unitCode="C62")
    settlement = _add(line, "ram:SpecifiedLineTradeSettlement")
    tax = _add(settlement, "ram:ApplicableTradeTax")
    _add(tax, "ram:TypeCode", "VAT")
    _add(tax, "ram:CategoryCode", "S")
    _add(tax, "ram:RateApplicablePercent", rate)
    summation = _add(settlement, "ram:SpecifiedTradeSettlementLineMonetarySummation")
    _add(summation, "ram:LineTotalAmount", total_without_tax)


def cii_xml(
    level: str = "EN16931",
    *,
    number: str = "F-2026-0042",
    issue_date: date = date(2026, 11, 2),
    type_code: str = "380",
    currency: str = "EUR",
    seller_name: str = "Fournitures Martin SARL",
    seller_siren: str | None = SELLER_SIREN,
    seller_vat: str | None = SELLER_VAT,
    buyer_name: str = "Dupont Maçonnerie",
    buyer_siren: str | None = BUYER_SIREN,
    total_without_tax: str = "100.00",
    total_tax: str = "20.00",
    total_with_tax: str = "120.00",
    amount_due: str = "120.00",
    due_date: date | None = date(2026, 12, 2),
) -> bytes:
    """A UN/CEFACT CII invoice at a Factur-X level ("MINIMUM", "BASIC WL", "BASIC", "EN16931",
    "EXTENDED"), carrying what that level allows: MINIMUM has no due date, no lines, no buyer
    VAT number; BASIC and above have one line whose VAT matches the totals.

    ``seller_siren`` / ``buyer_siren`` may be a SIRET (14 digits): it is then written with
    scheme 0009 instead of 0002. The buyer's VAT number is BUYER_VAT where the level has one.
    """
    if level not in GUIDELINE_ID:
        raise ValueError(f"unknown Factur-X level {level!r}, expected one of {LEVELS}")
    root = etree.Element(f"{{{CII_NS['rsm']}}}CrossIndustryInvoice", nsmap=CII_NS)
    context = _add(root, "rsm:ExchangedDocumentContext")
    guideline = _add(context, "ram:GuidelineSpecifiedDocumentContextParameter")
    _add(guideline, "ram:ID", GUIDELINE_ID[level])
    document = _add(root, "rsm:ExchangedDocument")
    _add(document, "ram:ID", number)
    _add(document, "ram:TypeCode", type_code)
    _cii_date(document, "ram:IssueDateTime", issue_date)

    transaction = _add(root, "rsm:SupplyChainTradeTransaction")
    rate = _rate(total_without_tax, total_tax)
    has_lines = level in ("BASIC", "EN16931", "EXTENDED")
    if has_lines:
        _cii_line(transaction, total_without_tax, rate)
    agreement = _add(transaction, "ram:ApplicableHeaderTradeAgreement")
    _cii_party(agreement, "ram:SellerTradeParty", seller_name, seller_siren, seller_vat, level)
    _cii_party(agreement, "ram:BuyerTradeParty", buyer_name, buyer_siren, BUYER_VAT, level)
    _add(transaction, "ram:ApplicableHeaderTradeDelivery")

    settlement = _add(transaction, "ram:ApplicableHeaderTradeSettlement")
    _add(settlement, "ram:InvoiceCurrencyCode", currency)
    if level != "MINIMUM":
        tax = _add(settlement, "ram:ApplicableTradeTax")
        _add(tax, "ram:CalculatedAmount", total_tax)
        _add(tax, "ram:TypeCode", "VAT")
        _add(tax, "ram:BasisAmount", total_without_tax)
        _add(tax, "ram:CategoryCode", "S")
        _add(tax, "ram:RateApplicablePercent", rate)
        if due_date is not None:
            _cii_date(
                _add(settlement, "ram:SpecifiedTradePaymentTerms"), "ram:DueDateDateTime", due_date
            )
    summation = _add(settlement, "ram:SpecifiedTradeSettlementHeaderMonetarySummation")
    if level != "MINIMUM":
        _add(summation, "ram:LineTotalAmount", total_without_tax)
    _add(summation, "ram:TaxBasisTotalAmount", total_without_tax)
    _add(summation, "ram:TaxTotalAmount", total_tax, currencyID=currency)
    _add(summation, "ram:GrandTotalAmount", total_with_tax)
    prepaid = _difference(total_with_tax, amount_due)
    if prepaid is not None and level != "MINIMUM":
        _add(summation, "ram:TotalPrepaidAmount", prepaid)
    _add(summation, "ram:DuePayableAmount", amount_due)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _difference(total_with_tax: str, amount_due: str) -> str | None:
    """What was paid already (BT-113), when the amount due is not the whole total."""
    try:
        paid = Decimal(total_with_tax) - Decimal(amount_due)
    except (InvalidOperation, ArithmeticError):
        return None
    return str(paid) if paid else None


def _ubl_party(parent: Any, name: str, party_name: str, legal_id: str | None, vat: str) -> None:
    party = _add(_add(parent, name), "cac:Party")
    _add(_add(party, "cac:PartyName"), "cbc:Name", party_name)
    address = _add(party, "cac:PostalAddress")
    _add(_add(address, "cac:Country"), "cbc:IdentificationCode", "FR")
    if vat:
        tax_scheme = _add(party, "cac:PartyTaxScheme")
        _add(tax_scheme, "cbc:CompanyID", vat)
        _add(_add(tax_scheme, "cac:TaxScheme"), "cbc:ID", "VAT")
    legal_entity = _add(party, "cac:PartyLegalEntity")
    _add(legal_entity, "cbc:RegistrationName", party_name)
    if legal_id is not None:
        scheme, value = _legal_id(legal_id)
        _add(legal_entity, "cbc:CompanyID", value, schemeID=scheme)


def _ubl_tax_category(parent: Any, name: str, rate: str) -> None:
    category = _add(parent, name)
    _add(category, "cbc:ID", "S")
    _add(category, "cbc:Percent", rate)
    _add(_add(category, "cac:TaxScheme"), "cbc:ID", "VAT")


def ubl_xml(
    kind: str = "invoice",
    *,
    number: str = "F-2026-0042",
    issue_date: date = date(2026, 11, 2),
    type_code: str = "380",
    currency: str = "EUR",
    seller_name: str = "Fournitures Martin SARL",
    seller_siren: str | None = SELLER_SIREN,
    seller_vat: str | None = SELLER_VAT,
    buyer_name: str = "Dupont Maçonnerie",
    buyer_siren: str | None = BUYER_SIREN,
    total_without_tax: str = "100.00",
    total_tax: str = "20.00",
    total_with_tax: str = "120.00",
    amount_due: str = "120.00",
    due_date: date | None = date(2026, 12, 2),
) -> bytes:
    """A UBL 2.1 Invoice (kind "invoice") or CreditNote (kind "credit_note"), EN 16931.

    A credit note's type code is 381 whatever ``type_code`` says when that is left at 380; its
    due date goes in PaymentMeans/PaymentDueDate (UBL 2.1 CreditNote has no DueDate).
    """
    if kind not in ("invoice", "credit_note"):
        raise ValueError(f"kind must be 'invoice' or 'credit_note', not {kind!r}")
    credit_note = kind == "credit_note"
    if credit_note and type_code == "380":
        type_code = "381"
    nsmap = {None: UBL_NS[kind], "cac": UBL_NS["cac"], "cbc": UBL_NS["cbc"]}
    root = etree.Element(
        f"{{{UBL_NS[kind]}}}{'CreditNote' if credit_note else 'Invoice'}", nsmap=nsmap
    )
    _add(root, "cbc:CustomizationID", UBL_CUSTOMIZATION_ID)
    _add(root, "cbc:ID", number)
    _add(root, "cbc:IssueDate", issue_date.isoformat())
    if due_date is not None and not credit_note:
        _add(root, "cbc:DueDate", due_date.isoformat())
    _add(root, "cbc:CreditNoteTypeCode" if credit_note else "cbc:InvoiceTypeCode", type_code)
    _add(root, "cbc:DocumentCurrencyCode", currency)
    _ubl_party(root, "cac:AccountingSupplierParty", seller_name, seller_siren, seller_vat or "")
    _ubl_party(root, "cac:AccountingCustomerParty", buyer_name, buyer_siren, BUYER_VAT)
    means = _add(root, "cac:PaymentMeans")
    _add(means, "cbc:PaymentMeansCode", "30")
    if due_date is not None and credit_note:
        _add(means, "cbc:PaymentDueDate", due_date.isoformat())

    rate = _rate(total_without_tax, total_tax)
    tax_total = _add(root, "cac:TaxTotal")
    _add(tax_total, "cbc:TaxAmount", total_tax, currencyID=currency)
    subtotal = _add(tax_total, "cac:TaxSubtotal")
    _add(subtotal, "cbc:TaxableAmount", total_without_tax, currencyID=currency)
    _add(subtotal, "cbc:TaxAmount", total_tax, currencyID=currency)
    _ubl_tax_category(subtotal, "cac:TaxCategory", rate)

    totals = _add(root, "cac:LegalMonetaryTotal")
    _add(totals, "cbc:LineExtensionAmount", total_without_tax, currencyID=currency)
    _add(totals, "cbc:TaxExclusiveAmount", total_without_tax, currencyID=currency)
    _add(totals, "cbc:TaxInclusiveAmount", total_with_tax, currencyID=currency)
    prepaid = _difference(total_with_tax, amount_due)
    if prepaid is not None:
        _add(totals, "cbc:PrepaidAmount", prepaid, currencyID=currency)
    _add(totals, "cbc:PayableAmount", amount_due, currencyID=currency)

    line = _add(root, "cac:CreditNoteLine" if credit_note else "cac:InvoiceLine")
    _add(line, "cbc:ID", "1")
    quantity = "cbc:CreditedQuantity" if credit_note else "cbc:InvoicedQuantity"
    _add(line, quantity, "1", unitCode="C62")
    _add(line, "cbc:LineExtensionAmount", total_without_tax, currencyID=currency)
    item = _add(line, "cac:Item")
    _add(item, "cbc:Name", "Parpaings 20x20x50")
    _ubl_tax_category(item, "cac:ClassifiedTaxCategory", rate)
    _add(_add(line, "cac:Price"), "cbc:PriceAmount", total_without_tax, currencyID=currency)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def plain_pdf() -> bytes:
    """A one-page PDF with nothing embedded: the base of the Factur-X PDFs."""
    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)  # A4 in points
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def facturx_pdf(
    level: str = "EN16931",
    *,
    number: str = "F-2026-0042",
    issue_date: date = date(2026, 11, 2),
    type_code: str = "380",
    currency: str = "EUR",
    seller_name: str = "Fournitures Martin SARL",
    seller_siren: str | None = SELLER_SIREN,
    seller_vat: str | None = SELLER_VAT,
    buyer_name: str = "Dupont Maçonnerie",
    buyer_siren: str | None = BUYER_SIREN,
    total_without_tax: str = "100.00",
    total_tax: str = "20.00",
    total_with_tax: str = "120.00",
    amount_due: str = "120.00",
    due_date: date | None = date(2026, 12, 2),
) -> bytes:
    """A Factur-X PDF made by the factur-x library: a blank page with :func:`cii_xml` embedded
    as factur-x.xml (factur-x checks the XML against its level's XSD on the way)."""
    xml = cii_xml(
        level,
        number=number,
        issue_date=issue_date,
        type_code=type_code,
        currency=currency,
        seller_name=seller_name,
        seller_siren=seller_siren,
        seller_vat=seller_vat,
        buyer_name=buyer_name,
        buyer_siren=buyer_siren,
        total_without_tax=total_without_tax,
        total_tax=total_tax,
        total_with_tax=total_with_tax,
        amount_due=amount_due,
        due_date=due_date,
    )
    pdf: bytes = facturx.generate_from_binary(
        plain_pdf(), xml, flavor="factur-x", level=FACTURX_LEVEL[level]
    )
    return pdf

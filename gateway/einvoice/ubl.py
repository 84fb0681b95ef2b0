"""The fields of a UBL 2.1 Invoice or CreditNote, by the EN 16931 UBL binding (Peppol BIS
Billing 3.0 and the French CIUS follow it).

As for CII, every field is read on its own and a value that does not parse is None.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from gateway.einvoice.model import Invoice, Party, kind_of, siren_of, vat_number_of
from gateway.einvoice.xml import UBL_CREDIT_NOTE_ROOT, amount_of, iso_date, text_of

NS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
        "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
    }
)

# CustomizationID (BT-24) of the specifications most UBL invoices follow, by their short name;
# any other is kept as written.
_PROFILES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "urn:cen.eu:en16931:2017": "EN 16931",
        "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0": (
            "Peppol BIS Billing 3.0"
        ),
    }
)


def read_ubl(root: Any, *, source_format: str, schema_error: str | None) -> Invoice:
    """The invoice ``root`` (a UBL Invoice or CreditNote element) says."""
    credit_note = root.tag == UBL_CREDIT_NOTE_ROOT
    type_code = text_of(
        root.find("cbc:CreditNoteTypeCode" if credit_note else "cbc:InvoiceTypeCode", NS)
    )
    currency = text_of(root.find("cbc:DocumentCurrencyCode", NS))
    customization = text_of(root.find("cbc:CustomizationID", NS))
    totals = root.find("cac:LegalMonetaryTotal", NS)
    # UBL 2.1 credit notes have no DueDate: EN 16931 puts theirs in the payment means.
    due_date = iso_date(root.find("cbc:DueDate", NS)) or iso_date(
        root.find("cac:PaymentMeans/cbc:PaymentDueDate", NS)
    )
    return Invoice(
        format=source_format,
        profile=None if customization is None else _PROFILES.get(customization, customization),
        number=text_of(root.find("cbc:ID", NS)),
        issue_date=iso_date(root.find("cbc:IssueDate", NS)),
        type_code=type_code,
        kind=kind_of(type_code, ubl_credit_note=credit_note),
        currency=currency,
        seller=_party(root.find("cac:AccountingSupplierParty/cac:Party", NS)),
        buyer=_party(root.find("cac:AccountingCustomerParty/cac:Party", NS)),
        total_without_tax=amount_of(_find(totals, "cbc:TaxExclusiveAmount")),
        total_tax=amount_of(_tax_total(root, currency)),
        total_with_tax=amount_of(_find(totals, "cbc:TaxInclusiveAmount")),
        amount_due=amount_of(_find(totals, "cbc:PayableAmount")),
        due_date=due_date,
        schema_error=schema_error,
    )


def _find(parent: Any, path: str) -> Any:
    return None if parent is None else parent.find(path, NS)


def _party(party: Any) -> Party:
    """BT-27/30/31 of the seller or BT-44/47/48 of the buyer."""
    if party is None:
        return Party()
    legal_entity = party.find("cac:PartyLegalEntity", NS)
    name = text_of(_find(legal_entity, "cbc:RegistrationName")) or text_of(
        party.find("cac:PartyName/cbc:Name", NS)
    )
    legal_id = _find(legal_entity, "cbc:CompanyID")
    return Party(
        name=name,
        siren=None if legal_id is None else siren_of(text_of(legal_id), legal_id.get("schemeID")),
        vat_number=vat_number_of(_vat_number(party)),
    )


def _vat_number(party: Any) -> str | None:
    """The CompanyID of the party's VAT scheme (another scheme may come first, e.g. the
    'LOC' of a local tax)."""
    for tax_scheme in party.findall("cac:PartyTaxScheme", NS):
        scheme = text_of(tax_scheme.find("cac:TaxScheme/cbc:ID", NS))
        if scheme is not None and scheme.upper() == "VAT":
            return text_of(tax_scheme.find("cbc:CompanyID", NS))
    return None


def _tax_total(root: Any, currency: str | None) -> Any:
    """BT-110: the TaxTotal/TaxAmount in the document currency; a second TaxTotal in the tax
    accounting currency (BT-111) is not the invoice's total."""
    amounts = [
        amount
        for tax_total in root.findall("cac:TaxTotal", NS)
        if (amount := tax_total.find("cbc:TaxAmount", NS)) is not None
    ]
    for amount in amounts:
        if currency is not None and amount.get("currencyID") == currency:
            return amount
    return amounts[0] if len(amounts) == 1 else None

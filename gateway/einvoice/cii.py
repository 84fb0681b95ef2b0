"""The fields of a UN/CEFACT Cross Industry Invoice (D16B, as Factur-X and ZUGFeRD 2 embed it
and as it travels alone), by the EN 16931 CII binding.

Every field is read on its own and a value that does not parse is None: a schema-invalid
invoice is still recorded with what it says (see :mod:`gateway.einvoice.xml`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from gateway.einvoice.model import Invoice, Party, kind_of, siren_of, vat_number_of
from gateway.einvoice.xml import amount_of, date_102, text_of

NS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
        "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
        "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
    }
)

# GuidelineSpecifiedDocumentContextParameter/ID (BT-24) of each Factur-X level, and of the
# French e-invoicing reform's extended CII. ZUGFeRD 2.x writes the same levels with its own
# URNs, recognised by their last part.
_PROFILES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "urn:factur-x.eu:1p0:minimum": "MINIMUM",
        "urn:factur-x.eu:1p0:basicwl": "BASIC WL",
        "urn:cen.eu:en16931:2017#compliant#urn:factur-x.eu:1p0:basic": "BASIC",
        "urn:cen.eu:en16931:2017": "EN 16931",
        "urn:cen.eu:en16931:2017#conformant#urn:factur-x.eu:1p0:extended": "EXTENDED",
        "urn:cen.eu:en16931:2017#conformant#urn.cpro.gouv.fr:1p0:extended-ctc-fr": (
            "EXTENDED-CTC-FR"
        ),
    }
)
_LEVEL_SUFFIXES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "minimum": "MINIMUM",
        "basicwl": "BASIC WL",
        "basic": "BASIC",
        "en16931": "EN 16931",
        "extended": "EXTENDED",
        "extended-ctc-fr": "EXTENDED-CTC-FR",
    }
)

_SETTLEMENT: Final = "rsm:SupplyChainTradeTransaction/ram:ApplicableHeaderTradeSettlement"
_DUE_DATE: Final = "ram:SpecifiedTradePaymentTerms/ram:DueDateDateTime/udt:DateTimeString"
_AGREEMENT: Final = "rsm:SupplyChainTradeTransaction/ram:ApplicableHeaderTradeAgreement"


def profile_of(root: Any) -> str | None:
    """The Factur-X level the invoice declares ("MINIMUM" … "EXTENDED"), or the guideline ID
    as written when it is none of them (an XRechnung CIUS, say)."""
    guideline = text_of(
        root.find(
            "rsm:ExchangedDocumentContext/ram:GuidelineSpecifiedDocumentContextParameter/ram:ID",
            NS,
        )
    )
    if guideline is None:
        return None
    known = _PROFILES.get(guideline)
    if known is not None:
        return known
    return _LEVEL_SUFFIXES.get(guideline.rsplit(":", 1)[-1].lower(), guideline)


def read_cii(root: Any, *, source_format: str, schema_error: str | None) -> Invoice:
    """The invoice ``root`` (an rsm:CrossIndustryInvoice element) says."""
    document = root.find("rsm:ExchangedDocument", NS)
    settlement = root.find(_SETTLEMENT, NS)
    summation = _find(settlement, "ram:SpecifiedTradeSettlementHeaderMonetarySummation")
    type_code = text_of(_find(document, "ram:TypeCode"))
    currency = text_of(_find(settlement, "ram:InvoiceCurrencyCode"))
    return Invoice(
        format=source_format,
        profile=profile_of(root),
        number=text_of(_find(document, "ram:ID")),
        issue_date=date_102(_find(document, "ram:IssueDateTime/udt:DateTimeString")),
        type_code=type_code,
        kind=kind_of(type_code),
        currency=currency,
        seller=_party(root.find(f"{_AGREEMENT}/ram:SellerTradeParty", NS)),
        buyer=_party(root.find(f"{_AGREEMENT}/ram:BuyerTradeParty", NS)),
        total_without_tax=amount_of(_find(summation, "ram:TaxBasisTotalAmount")),
        total_tax=amount_of(_tax_total(summation, currency)),
        total_with_tax=amount_of(_find(summation, "ram:GrandTotalAmount")),
        amount_due=amount_of(_find(summation, "ram:DuePayableAmount")),
        # EXTENDED may have several payment terms: the first due date is the one to chase.
        due_date=date_102(
            _find(
                settlement, "ram:SpecifiedTradePaymentTerms/ram:DueDateDateTime/udt:DateTimeString"
            )
        ),
        schema_error=schema_error,
    )


def _find(parent: Any, path: str) -> Any:
    return None if parent is None else parent.find(path, NS)


def _party(party: Any) -> Party:
    """BT-27/30/31 of the seller or BT-44/47/48 of the buyer."""
    if party is None:
        return Party()
    legal_id = party.find("ram:SpecifiedLegalOrganization/ram:ID", NS)
    vat = party.find("ram:SpecifiedTaxRegistration/ram:ID[@schemeID='VA']", NS)
    return Party(
        name=text_of(party.find("ram:Name", NS)),
        siren=None if legal_id is None else siren_of(text_of(legal_id), legal_id.get("schemeID")),
        vat_number=vat_number_of(text_of(vat)),
    )


def _tax_total(summation: Any, currency: str | None) -> Any:
    """BT-110: the TaxTotalAmount in the invoice currency; an invoice whose VAT is accounted
    in another currency has a second one (BT-111), which is not the invoice's total."""
    if summation is None:
        return None
    amounts = summation.findall("ram:TaxTotalAmount", NS)
    for amount in amounts:
        if currency is not None and amount.get("currencyID") == currency:
            return amount
    return amounts[0] if len(amounts) == 1 else None

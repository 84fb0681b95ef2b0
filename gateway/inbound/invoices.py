"""E-invoices at filing (issue 15): read in the extraction child, then checked against the
company each copy is filed for, filed by what they say, and keyed so that the same invoice
is filed once per company whatever its bytes.

Reading runs beside extraction, in its sandboxed child (gateway/inbound/sandbox.py): an
e-invoice is untrusted XML, perhaps inside a PDF, and a hostile one must cost the child, not
the worker. What the filing worker does with a reading is decided here, per company:

- the company's role: buyer when the buyer's SIREN (or VAT number) is the company's, seller
  when the seller's is;
- the checks, never silent (kept with the document, said in the message's reason): the
  invoice is addressed to another company; the journal does not fit the role; the totals
  do not add up (BT-109 + BT-110 ≠ BT-112); the XML fails its schema; it could not be read;
- the journal (gateway/routing/einvoice_filing.py);
- the duplicate key: seller (SIREN, else VAT number) | number | type code | issue date.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from gateway.einvoice.model import Invoice, Reading
from gateway.einvoice.reader import read_einvoice
from gateway.inbound.extraction import Extraction
from gateway.inbound.extraction.run import brief
from gateway.routing.einvoice_filing import EinvoiceFiling, Role
from gateway.storage.directory import CompanyRef

KEY_PART_CHARS = 120  # of each part of the key: a number is short; the column is 400


def read_invoices(extraction: Extraction, max_xml_bytes: int) -> Extraction:
    """Each document's e-invoice, read (in the extraction child). Reading never fails a
    message: what cannot be read is said in the document's reading."""
    documents = []
    for doc in extraction.documents:
        try:
            reading = read_einvoice(
                doc.filename, doc.media_type, doc.content, max_xml_bytes=max_xml_bytes
            )
        except Exception as exc:  # a reader bug must not cost the message its documents
            reading = Reading(None, f"e-invoice not read: {brief(exc)}")
        documents.append(replace(doc, einvoice=reading) if reading is not None else doc)
    return replace(extraction, documents=documents)


@dataclass(frozen=True)
class FiledInvoice:
    """What filing one document for one company makes of its e-invoice."""

    record: dict[str, Any]  # documents.invoice: what it says, the role, the checks
    key: str | None  # documents.invoice_key: the duplicate rule's (None: no dedupe)
    journal: str | None  # the journal it is filed into
    notes: list[str] = field(default_factory=list)  # the checks' findings, for the reason

    @property
    def label(self) -> str:
        """How the firm recognises it: the invoice number, when it has one."""
        number = self.record.get("number")
        return f"invoice {number}" if number else "e-invoice"


def file_invoice(
    reading: Reading,
    company: CompanyRef,
    journal: str | None,
    rules: EinvoiceFiling,
) -> FiledInvoice:
    """`reading` of a document sent to `journal` (None: the bare company address) of
    `company`: where it goes and what is noted."""
    if reading.invoice is None:
        problem = reading.problem or "e-invoice not read"
        return FiledInvoice({"problem": problem}, None, journal, [problem])
    invoice = reading.invoice
    role = role_of(invoice, company)
    decision = rules.decide(journal, role)
    notes = [n for n in (_schema(invoice), _identity(invoice, company, role)) if n]
    if decision.note:
        notes.append(decision.note)
    if (totals := totals_problem(invoice)) is not None:
        notes.append(totals)
    record = {**invoice.to_json(), "role": role, "checks": notes}
    return FiledInvoice(record, invoice_key(invoice), decision.journal, notes)


def role_of(invoice: Invoice, company: CompanyRef) -> Role | None:
    """The company's part in the invoice, by SIREN or VAT number; None when neither."""

    def is_company(siren: str | None, vat_number: str | None) -> bool:
        # Both sides' VAT numbers are upper-case already (the reader's, and the checked one).
        return bool(
            (siren and siren == company.siren) or (vat_number and vat_number == company.vat_number)
        )

    if is_company(invoice.buyer.siren, invoice.buyer.vat_number):
        return "buyer"
    if is_company(invoice.seller.siren, invoice.seller.vat_number):
        return "seller"
    return None


def _identity(invoice: Invoice, company: CompanyRef, role: Role | None) -> str | None:
    if role is not None:
        return None
    if company.siren is None and company.vat_number is None:
        return (
            f"not checked against {company.slug}: its SIREN is not set "
            f"(gateway company set {company.slug} --siren …)"
        )
    buyer = invoice.buyer
    if buyer.siren is None and buyer.vat_number is None:
        return f"the buyer ({buyer.name or 'unnamed'}) has no SIREN or VAT number to check"
    named = f"SIREN {buyer.siren}" if buyer.siren else f"VAT number {buyer.vat_number}"
    ours = f"SIREN {company.siren}" if company.siren else f"VAT number {company.vat_number}"
    who = f" ({buyer.name})" if buyer.name else ""
    return f"addressed to another company: the buyer is {named}{who}, {company.slug} is {ours}"


def _schema(invoice: Invoice) -> str | None:
    if invoice.schema_error is None:
        return None
    return f"not a valid {invoice.format} e-invoice: {invoice.schema_error}"


def totals_problem(invoice: Invoice) -> str | None:
    """BT-109 + BT-110 = BT-112, or what does not add up."""
    net, tax, gross = invoice.total_without_tax, invoice.total_tax, invoice.total_with_tax
    if net is None or tax is None or gross is None or net + tax == gross:
        return None
    return (
        f"totals do not add up: {net} (BT-109) + {tax} (BT-110) = {net + tax}, "
        f"the invoice says {gross} (BT-112)"
    )


def invoice_key(invoice: Invoice) -> str | None:
    """The duplicate rule's key: the same invoice from the same seller, whatever the bytes
    (a re-sent or re-rendered PDF); None when a part is missing (no dedupe by content)."""
    seller = invoice.seller
    who = f"siren:{seller.siren}" if seller.siren else f"vat:{seller.vat_number}"
    if not (seller.siren or seller.vat_number) or not invoice.number or not invoice.type_code:
        return None
    if invoice.issue_date is None:
        return None
    number = " ".join(invoice.number.split())[:KEY_PART_CHARS]
    return f"{who}|{number}|{invoice.type_code}|{invoice.issue_date.isoformat()}"

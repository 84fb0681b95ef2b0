"""Where each document of one message goes, for each company it was sent to (R2, R3): the
folder of the address's journal for the reception month, or, for an e-invoice, the journal
its content decides (gateway/inbound/invoices.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace

from gateway.inbound.extraction import Extraction
from gateway.inbound.filing_report import Placement, PlannedDocument
from gateway.inbound.invoices import file_invoice
from gateway.inbound.recipients import Destination
from gateway.routing.einvoice_filing import EinvoiceFiling
from gateway.storage.directory import CompanyRef, Identities

# (journal, company) -> the folder's path; (company, path) -> the folder's id, created.
FolderPath = Callable[[str | None, CompanyRef], str]
FolderId = Callable[[CompanyRef, str], int]


def plan_placements(
    extraction: Extraction,
    ged: list[Destination],
    identities: Identities,
    folder_path: FolderPath,
    folder_id: FolderId,
    rules: EinvoiceFiling | None,
    notes: list[str],
) -> list[Placement]:
    """The placements of `extraction`'s documents for the companies of `ged` (addresses
    that file into the GED); what the e-invoice checks find is appended to `notes`.
    `identities`: the companies' SIREN and VAT number, read for this batch."""
    plan: list[Placement] = []
    # One company reached twice in one message gets its documents once; the same bytes
    # twice in the message are both kept here, the second becoming a duplicate record.
    seen: set[tuple[int, int]] = set()
    shas = [hashlib.sha256(doc.content).hexdigest() for doc in extraction.documents]
    for dest in ged:
        company = dest.company
        assert company is not None
        if company.id in identities:  # its e-invoices are checked against what it is now
            siren, vat_number = identities[company.id]
            company = replace(company, siren=siren, vat_number=vat_number)
        by_path: dict[str, list[PlannedDocument]] = {}
        for index, doc in enumerate(extraction.documents):
            if (company.id, index) in seen:
                continue
            seen.add((company.id, index))
            journal, invoice = dest.address.journal, None
            if doc.einvoice is not None and rules is not None:
                invoice = file_invoice(doc.einvoice, company, journal, rules)
                journal = invoice.journal
                notes.extend(
                    f"{doc.filename} ({invoice.label}, {company.slug}): {note}"
                    for note in invoice.notes
                )
            path = folder_path(journal, company)
            by_path.setdefault(path, []).append(PlannedDocument(doc, shas[index], invoice))
        if not by_path:  # nothing to file, but the company was reached: it hears why
            by_path[folder_path(dest.address.journal, company)] = []
        plan.extend(
            Placement(company, path, folder_id(company, path), docs)
            for path, docs in by_path.items()
        )
    return plan

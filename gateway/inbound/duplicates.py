"""The duplicate rules of filing: a company files the same bytes once (R4's raw documents),
and the same e-invoice once whatever its bytes (issue 15: seller, number, type code, issue
date; gateway/inbound/invoices.py makes the key).

Both rules' keys live in one mapping per message (`Prepared.known`, and the batch's new rows
in gateway/inbound/filing_write.py): a sha256 is hex, an invoice's key is marked, so the two
never meet.
"""

from __future__ import annotations

from sqlalchemy import select

from gateway.inbound.filing_report import Placement, PlannedDocument
from gateway.storage.db import Database
from gateway.storage.models import Document

_INVOICE = "invoice "


def _is_invoice_key(key: str) -> bool:
    return key.startswith(_INVOICE)


def invoice_key(document: PlannedDocument) -> str | None:
    """The key of the document's e-invoice, marked; None when it is none (or has no key)."""
    invoice = document.invoice
    return None if invoice is None or invoice.key is None else _INVOICE + invoice.key


def document_keys(document: PlannedDocument) -> list[str]:
    """What makes the document a duplicate: its bytes, then its invoice when it is one."""
    key = invoice_key(document)
    return [document.sha256] if key is None else [document.sha256, key]


def duplicate_keys(placement: Placement) -> list[str]:
    """`document_keys` of each of the placement's documents."""
    return [key for document in placement.docs for key in document_keys(document)]


def known_documents(db: Database, keys: set[tuple[int, str]]) -> dict[tuple[int, str], int]:
    """Which of these (company, sha256 or invoice key) are filed already, and as what."""
    if not keys:
        return {}
    companies = {company for company, _ in keys}
    shas = {k for _, k in keys if not _is_invoice_key(k)}
    invoices = {k.removeprefix(_INVOICE) for _, k in keys if _is_invoice_key(k)}
    found: dict[tuple[int, str], int] = {}
    with db.read() as s:
        if shas:
            # Both columns, so that the (company_id, sha256) unique index answers: by sha256
            # alone it was a scan of every document ever filed, per message.
            rows = s.execute(
                select(Document.company_id, Document.sha256, Document.id).where(
                    Document.company_id.in_(companies), Document.sha256.in_(shas)
                )
            )
            found.update(((c, sha), i) for c, sha, i in rows)
        if invoices:
            rows = s.execute(
                select(Document.company_id, Document.invoice_key, Document.id).where(
                    Document.company_id.in_(companies), Document.invoice_key.in_(invoices)
                )
            )
            found.update(((c, _INVOICE + key), i) for c, key, i in rows)
    return {k: i for k, i in found.items() if k in keys}

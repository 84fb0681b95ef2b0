"""The duplicate rules of filing: a company files the same bytes once (R4's raw documents),
and the same e-invoice once whatever its bytes (issue 15: seller, number, type code, issue
date; gateway/inbound/invoices.py makes the key).

Both rules' keys live in one mapping per message (`Prepared.known`, and the batch's new rows
in gateway/inbound/filing_write.py): a sha256 is hex, an invoice's key is marked, so the two
never meet.
"""

from __future__ import annotations

from sqlalchemy import select

from gateway.inbound.filing_report import Placement
from gateway.inbound.invoices import FiledInvoice
from gateway.storage.db import Database
from gateway.storage.models import Document

_INVOICE = "invoice "


def as_duplicate_key(invoice_key: str) -> str:
    return _INVOICE + invoice_key


def is_invoice_key(key: str) -> bool:
    return key.startswith(_INVOICE)


def invoice_duplicate_key(invoice: FiledInvoice) -> str:
    assert invoice.key is not None
    return as_duplicate_key(invoice.key)


def duplicate_keys(placement: Placement) -> list[str]:
    """What makes each of the placement's documents a duplicate: its bytes, and its
    invoice when it is one."""
    keys = [d.sha256 for d in placement.docs]
    keys += [as_duplicate_key(d.invoice.key) for d in placement.docs if d.invoice and d.invoice.key]
    return keys


def known_documents(db: Database, keys: set[tuple[int, str]]) -> dict[tuple[int, str], int]:
    """Which of these (company, sha256 or invoice key) are filed already, and as what."""
    companies = {company for company, _ in keys}
    shas = {k for _, k in keys if not is_invoice_key(k)}
    invoices = {k.removeprefix(_INVOICE) for _, k in keys if is_invoice_key(k)}
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
            found.update(((c, as_duplicate_key(key)), i) for c, key, i in rows)
    return {k: i for k, i in found.items() if k in keys}

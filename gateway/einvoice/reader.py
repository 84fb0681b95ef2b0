"""Reading a filed attachment as an e-invoice: a Factur-X PDF, or a standalone CII or UBL XML.

Filing calls this for every attachment, and nearly all are not e-invoices: that is decided from
a few bytes (the PDF has no embedded file, the XML names no invoice namespace near its start)
before anything is parsed.
"""

from __future__ import annotations

import re
from typing import Any, Final

from gateway.einvoice.model import Invoice, Reading, Refused

# pypdf and lxml (pdf.py, xml.py and the readers on it) are imported only once a file may be
# an e-invoice: they take the extraction child from 47 to 82 MB of address space, which its
# memory budget (`extraction.memory_limit_mb`) counts, for mail that is mostly not.

# An invoice's root element and its namespace declaration come first; a prolog (declaration,
# comments, a stylesheet instruction) longer than this hides an invoice no sender makes.
_SNIFF_BYTES: Final = 8192
_INVOICE_NAMESPACES: Final = (
    b"urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    b"urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
    b"urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2",
)
# The embedded file stream's /Type /EmbeddedFile is always in the file as written, since a
# stream cannot hide in a compressed object stream; /AF (the catalog's associated files) is
# there unless the catalog is compressed. A PDF with neither has no invoice to look for. One
# regular expression finds either in half the time two searches take (10 µs for 20 KB).
_EMBEDDING: Final = re.compile(rb"/(?:EmbeddedFile|AF)")
_UTF16_BOMS: Final = (b"\xff\xfe", b"\xfe\xff")
_UTF8_BOM: Final = b"\xef\xbb\xbf"
_REFUSED: Final = "e-invoice refused: "


def read_einvoice(
    filename: str, media_type: str, content: bytes, *, max_xml_bytes: int
) -> Reading | None:
    """None: not an e-invoice (most documents) — decided cheaply; a Reading otherwise.

    A PDF's embedded invoice XML (Factur-X, ZUGFeRD, XRechnung, whether CII or UBL) gives
    format "factur-x", a standalone XML "cii" or "ubl". A file that is an e-invoice, or says
    it is one, but is refused (too big, a DTD, not well-formed, a lying embedded file…) gives
    a Reading without invoice and the reason; an invoice that fails its XSD is still read,
    with :attr:`Invoice.schema_error` saying why.
    """
    kind = media_type.split(";", 1)[0].strip().lower()
    # The bytes first, the label second (senders mislabel): XML text is never read as a PDF.
    starts_like_xml = _starts_like_xml(content)
    if not starts_like_xml and (b"%PDF-" in content[:1024] or kind == "application/pdf"):
        return _read_pdf(content, max_xml_bytes)
    labelled_xml = kind.endswith(("/xml", "+xml")) or filename.lower().endswith(".xml")
    if (starts_like_xml or labelled_xml) and _names_an_invoice(content[:_SNIFF_BYTES]):
        return _read_xml(content, max_xml_bytes)
    return None


def _read_pdf(content: bytes, max_xml_bytes: int) -> Reading | None:
    if _EMBEDDING.search(content) is None:
        return None
    from gateway.einvoice import pdf
    from gateway.einvoice.xml import parse_untrusted

    try:
        embedded = pdf.embedded_invoice_xml(content, max_xml_bytes=max_xml_bytes)
        if embedded is None:
            return None
        what = f"the PDF's embedded {embedded.name}"
        root = parse_untrusted(embedded.data, max_xml_bytes=max_xml_bytes, what=what)
        invoice = _invoice(root, "factur-x")
    except Refused as refusal:
        return Reading(invoice=None, problem=f"{_REFUSED}{refusal}")
    if invoice is None:
        problem = f"{_REFUSED}{what} is not a CII or UBL invoice (its root is {_local(root)})"
        return Reading(invoice=None, problem=problem)
    return Reading(invoice=invoice, problem=None)


def _read_xml(content: bytes, max_xml_bytes: int) -> Reading | None:
    from gateway.einvoice.xml import CII_ROOT, parse_untrusted

    try:
        root = parse_untrusted(content, max_xml_bytes=max_xml_bytes)
    except Refused as refusal:
        return Reading(invoice=None, problem=f"{_REFUSED}{refusal}")
    is_cii = root.tag == CII_ROOT
    invoice = _invoice(root, "cii" if is_cii else "ubl")
    # Something else that names an invoice namespace (a stylesheet, an envelope): a document.
    return None if invoice is None else Reading(invoice=invoice, problem=None)


def _invoice(root: Any, source_format: str) -> Invoice | None:
    """The invoice a parsed root element is, None when it is no CII or UBL invoice."""
    from gateway.einvoice import cii, ubl
    from gateway.einvoice.xml import CII_ROOT, UBL_CREDIT_NOTE_ROOT, UBL_INVOICE_ROOT, schema_error

    if root.tag == CII_ROOT:
        profile = cii.profile_of(root)
        return cii.read_cii(
            root, source_format=source_format, schema_error=schema_error(root, profile)
        )
    if root.tag in (UBL_INVOICE_ROOT, UBL_CREDIT_NOTE_ROOT):
        return ubl.read_ubl(
            root, source_format=source_format, schema_error=schema_error(root, None)
        )
    return None


def _starts_like_xml(content: bytes) -> bool:
    """A byte-order mark or "<" (an XML declaration, a comment, the root) after blanks; PDF
    readers accept junk before "%PDF-", so a PDF is only recognised once this says no."""
    start = content[:64]
    return start.startswith((_UTF8_BOM, *_UTF16_BOMS)) or start.lstrip().startswith(b"<")


def _names_an_invoice(head: bytes) -> bool:
    """Whether the first bytes declare a CII or UBL invoice namespace (a UTF-16 file's once
    decoded, the others' as they are: the namespaces are ASCII in every ASCII-compatible
    encoding)."""
    if head.startswith(_UTF16_BOMS):
        head = head.decode("utf-16", errors="ignore").encode("utf-8")
    return any(namespace in head for namespace in _INVOICE_NAMESPACES)


def _local(root: Any) -> str:
    tag = root.tag
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else "not an element"

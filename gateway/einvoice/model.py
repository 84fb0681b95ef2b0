"""What an electronic invoice says, as the gateway records it at filing.

The fields are the EN 16931 business terms an accounting firm files by (BT numbers in the
comments); every one may be missing, since a document that fails its schema is still recorded
with what could be read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Final

# UNTDID 1001 codes that are credit notes (EN 16931 and the French CTC code lists): a credit
# note lowers what the buyer owes, so the firm books it the other way round.
CREDIT_NOTE_TYPE_CODES: Final = frozenset(
    {"381", "261", "262", "296", "308", "396", "420", "458", "532"}
)


def kind_of(type_code: str | None, *, ubl_credit_note: bool = False) -> str:
    """ "credit_note" or "invoice": a UBL CreditNote is one whatever its type code says."""
    if ubl_credit_note or type_code in CREDIT_NOTE_TYPE_CODES:
        return "credit_note"
    return "invoice"


SIREN_SCHEME: Final = "0002"  # ISO 6523 ICD of the SIREN
SIRET_SCHEME: Final = "0009"  # ... and of the SIRET (SIREN + 5-digit establishment number)
_DIGITS: Final = re.compile(r"[0-9]+")


def siren_of(identifier: str | None, scheme: str | None) -> str | None:
    """The SIREN a legal registration identifier (BT-30 / BT-47) gives: itself under scheme
    0002, the first 9 digits of a SIRET under 0009, itself when there is no scheme and it is
    9 digits (French invoices often leave the scheme out). Spaces and dots as people write
    them ("732 829 320") are dropped; the check digit is not checked, since a wrong one is
    still what the invoice says and matching it against known companies is the caller's."""
    if identifier is None:
        return None
    scheme = scheme.strip() or None if scheme is not None else None
    digits = "".join(identifier.split()).replace(".", "")
    if not _DIGITS.fullmatch(digits):
        return None
    if scheme == SIRET_SCHEME:
        return digits[:9] if len(digits) == 14 else None
    if scheme in (SIREN_SCHEME, None) and len(digits) == 9:
        return digits
    return None


def vat_number_of(text: str | None) -> str | None:
    """A VAT identifier (BT-31 / BT-48) as written, without spaces, upper-case."""
    if text is None:
        return None
    return "".join(text.split()).upper() or None


@dataclass(frozen=True)
class Party:
    """The seller or the buyer, by the identifiers French filing matches companies on."""

    name: str | None = None
    # BT-30 / BT-47 under scheme 0002 (SIREN), or the first 9 digits of a SIRET (scheme 0009).
    siren: str | None = None
    # BT-31 / BT-48, as written without spaces, upper-case.
    vat_number: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "siren": self.siren, "vat_number": self.vat_number}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Party:
        return cls(name=data["name"], siren=data["siren"], vat_number=data["vat_number"])


@dataclass(frozen=True)
class Invoice:
    """One e-invoice (or credit note) as read from its XML."""

    format: str  # "factur-x" (a PDF with its XML), "cii" or "ubl" (standalone XML)
    # "MINIMUM", "BASIC WL", "BASIC", "EN 16931", "EXTENDED" from the CII guideline ID; for
    # UBL a short name for the known CustomizationIDs, else the ID as written.
    profile: str | None
    number: str | None  # BT-1
    issue_date: date | None  # BT-2
    type_code: str | None  # BT-3 as written, e.g. "380"
    kind: str  # "invoice" | "credit_note"
    currency: str | None  # BT-5
    seller: Party  # BT-27, BT-30, BT-31
    buyer: Party  # BT-44, BT-47, BT-48
    total_without_tax: Decimal | None  # BT-109
    total_tax: Decimal | None  # BT-110, in the invoice currency
    total_with_tax: Decimal | None  # BT-112
    amount_due: Decimal | None  # BT-115
    due_date: date | None  # BT-9
    # Set when the XML is well-formed but fails its XSD: the invoice is still recorded with
    # what could be read, and this says why it is not to be trusted as is.
    schema_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-safe: dates as ISO strings, amounts as strings (no float rounding)."""
        return {
            "format": self.format,
            "profile": self.profile,
            "number": self.number,
            "issue_date": _iso(self.issue_date),
            "type_code": self.type_code,
            "kind": self.kind,
            "currency": self.currency,
            "seller": self.seller.to_json(),
            "buyer": self.buyer.to_json(),
            "total_without_tax": _text(self.total_without_tax),
            "total_tax": _text(self.total_tax),
            "total_with_tax": _text(self.total_with_tax),
            "amount_due": _text(self.amount_due),
            "due_date": _iso(self.due_date),
            "schema_error": self.schema_error,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Invoice:
        """The exact inverse of :meth:`to_json`."""
        return cls(
            format=data["format"],
            profile=data["profile"],
            number=data["number"],
            issue_date=_date(data["issue_date"]),
            type_code=data["type_code"],
            kind=data["kind"],
            currency=data["currency"],
            seller=Party.from_json(data["seller"]),
            buyer=Party.from_json(data["buyer"]),
            total_without_tax=_amount(data["total_without_tax"]),
            total_tax=_amount(data["total_tax"]),
            total_with_tax=_amount(data["total_with_tax"]),
            amount_due=_amount(data["amount_due"]),
            due_date=_date(data["due_date"]),
            schema_error=data["schema_error"],
        )


def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


def _text(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount)


def _date(value: str | None) -> date | None:
    return None if value is None else date.fromisoformat(value)


def _amount(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


@dataclass(frozen=True)
class Reading:
    """What reading one file gave: an invoice, or why a file that is an e-invoice (or claims
    to be) could not be read."""

    invoice: Invoice | None
    # One line the accounting firm can read, e.g. "e-invoice refused: the XML declares a DTD
    # (not allowed)".
    problem: str | None


class Refused(Exception):
    """An e-invoice the gateway will not read; the message is the reason, in one line."""

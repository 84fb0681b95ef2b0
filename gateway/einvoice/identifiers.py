"""A company's identity as French e-invoices state it: SIREN (9 digits, Luhn), SIRET (the
SIREN and a 5-digit establishment number, 14 digits, Luhn — La Poste's own rule included)
and the intra-EU VAT number (FR: a 2-digit key computed from the SIREN; other member states
by their own rules). The checks are python-stdnum's, which keeps each country's rules; what
is here is the wording a person typing a number needs when it is wrong.

Numbers are kept compact: no spaces, dots or dashes; a VAT number upper-case with its country
prefix (`FR40303265045`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from stdnum import exceptions
from stdnum.eu import vat
from stdnum.fr import siren as siren_number
from stdnum.fr import siret as siret_number

from gateway.errors import GatewayError


class IdentifierError(GatewayError, ValueError):
    """A SIREN, SIRET or VAT number that is not one; the message says what is wrong.
    `field` names the input (siren, siret, vat_number)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


def _why(exc: exceptions.ValidationError, length: str) -> str:
    if isinstance(exc, exceptions.InvalidChecksum):
        return "its check digit is wrong (a typing error?)"
    if isinstance(exc, exceptions.InvalidLength):
        return f"it must have {length}"
    if isinstance(exc, exceptions.InvalidFormat):
        return "it must be digits only" if "digits" in length else "its format is wrong"
    if isinstance(exc, exceptions.InvalidComponent):
        return "its country prefix is not an EU member state's"
    return "it is not valid"


def check_siren(value: str) -> str:
    """The SIREN, compact; IdentifierError naming what is wrong."""
    return _validated(siren_number.validate, value, "SIREN", "9 digits", "siren")


def check_siret(value: str) -> str:
    return _validated(siret_number.validate, value, "SIRET", "14 digits (SIREN + 5)", "siret")


def _validated(
    validate: Callable[[str], str], value: str, label: str, length: str, field: str
) -> str:
    try:
        return str(validate(value))
    except exceptions.ValidationError as exc:
        raise IdentifierError(
            f"{label} {value!r} is not valid: {_why(exc, length)}", field=field
        ) from exc


def check_vat_number(value: str) -> str:
    """An intra-EU VAT number with its country prefix, compact and upper-case."""
    compact = "".join(c for c in value if c not in " -./,:").upper()
    if len(compact) < 3 or not compact[:2].isalpha():
        raise IdentifierError(
            f"VAT number {value!r} is not valid: it must start with its country code "
            "(FR40303265045)",
            field="vat_number",
        )
    try:
        return str(vat.validate(compact))
    except exceptions.ValidationError as exc:
        raise IdentifierError(
            f"VAT number {value!r} is not valid: {_why(exc, 'the length of its country')}",
            field="vat_number",
        ) from exc


def siren_of_vat_number(value: str) -> str | None:
    """The SIREN a French VAT number is made of (FR + key + SIREN); None for another
    country's."""
    if not value.upper().startswith("FR"):
        return None
    tail = value[4:]
    return tail if len(tail) == 9 and tail.isdigit() else None


@dataclass(frozen=True)
class CompanyIdentity:
    """What a company is known by in e-invoices; each part checked and consistent with the
    others (a SIRET is one of the SIREN's establishments, a French VAT number is the
    SIREN's)."""

    siren: str | None = None
    siret: str | None = None
    vat_number: str | None = None

    @classmethod
    def checked(
        cls, siren: str | None, siret: str | None, vat_number: str | None
    ) -> CompanyIdentity:
        """From what a person typed ("" or None: not set). A SIRET alone gives its SIREN."""
        siren = check_siren(siren) if siren else None
        siret = check_siret(siret) if siret else None
        vat_number = check_vat_number(vat_number) if vat_number else None
        if siret is not None:
            if siren is None:
                siren = siret[:9]
            elif siret[:9] != siren:
                raise IdentifierError(
                    f"SIRET {siret} is not an establishment of SIREN {siren} "
                    "(its first 9 digits are the SIREN)",
                    field="siret",
                )
        vat_siren = siren_of_vat_number(vat_number) if vat_number else None
        if vat_siren is not None and siren is not None and vat_siren != siren:
            raise IdentifierError(
                f"VAT number {vat_number} is SIREN {vat_siren}'s, not {siren}'s",
                field="vat_number",
            )
        return cls(siren, siret, vat_number)

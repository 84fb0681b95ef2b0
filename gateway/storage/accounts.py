"""Cabinets and companies: creation with the checks a person typing them needs."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.einvoice.identifiers import CompanyIdentity, IdentifierError
from gateway.errors import GatewayError
from gateway.routing.addresses import AddressGrammar, split_address
from gateway.routing.slugs import slug_problem
from gateway.storage.db import Database
from gateway.storage.models import Cabinet, Company
from gateway.storage.tenancy import ALL, Tenant

_MM_DD = re.compile(r"(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])")
_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


class AccountError(GatewayError, ValueError):
    """Input a person must correct; the message says how. `field` names the input it is
    about, when one is (the HTTP API answers 422 naming it; the CLI prints the message)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(AccountError):
    """No such thing, or not one the caller may see (another cabinet's: the API's 404)."""


class Conflict(AccountError):
    """It exists already, or the change clashes with what is there (the API's 409)."""


def company_id_of(session: Session, slug: str, tenant: Tenant = ALL) -> int:
    """The id of company `slug`, if `tenant` may see it (else NotFound, as if absent)."""
    company_id = session.execute(
        tenant.companies(select(Company.id).where(Company.slug == slug))
    ).scalar_one_or_none()
    if company_id is None:
        raise NotFound(f"no company {slug!r} (see `gateway company list`)", field="company")
    return int(company_id)


def check_fiscal_year_end(value: str) -> str:
    m = _MM_DD.fullmatch(value)
    if m is None or int(m.group(2)) > _DAYS[int(m.group(1))]:
        raise AccountError(
            f"fiscal year end {value!r} must be a day of the year as MM-DD, e.g. 12-31 or 06-30",
            field="fiscal_year_end",
        )
    return value


def add_cabinet(
    db: Database, slug: str, name: str | None, contact: str | None, now: datetime
) -> Cabinet:
    problem = slug_problem(slug, "cabinet")
    if problem:
        raise AccountError(problem, field="slug")
    if contact is not None and split_address(contact) is None:
        raise AccountError(f"contact {contact!r} is not an email address", field="contact")
    try:
        with db.write() as s:
            cabinet = Cabinet(slug=slug, name=name or slug, contact_email=contact, created_at=now)
            s.add(cabinet)
    except IntegrityError as exc:
        raise Conflict(f"a cabinet {slug!r} already exists", field="slug") from exc
    return cabinet


def add_company(
    db: Database,
    grammar: AddressGrammar,
    slug: str,
    cabinet_slug: str,
    name: str | None,
    fiscal_year_end: str,
    now: datetime,
    tenant: Tenant = ALL,
    identity: CompanyIdentity | None = None,
) -> Company:
    problem = slug_problem(slug, "company") or grammar.reserved_slug_problem(slug)
    if problem:
        raise AccountError(problem, field="slug")
    check_fiscal_year_end(fiscal_year_end)
    identity = identity or CompanyIdentity()
    try:
        with db.write() as s:
            cabinet_id = s.execute(
                select(Cabinet.id).where(Cabinet.slug == cabinet_slug)
            ).scalar_one_or_none()
            if cabinet_id is None or not tenant.sees_cabinet(cabinet_id):
                raise NotFound(
                    f"no cabinet {cabinet_slug!r}; "
                    f"create it with `gateway cabinet add {cabinet_slug}`",
                    field="cabinet",
                )
            company = Company(
                slug=slug,
                cabinet_id=cabinet_id,
                name=name or slug,
                fiscal_year_end=fiscal_year_end,
                created_at=now,
                siren=identity.siren,
                siret=identity.siret,
                vat_number=identity.vat_number,
            )
            s.add(company)
    except IntegrityError as exc:
        raise Conflict(f"a company {slug!r} already exists", field="slug") from exc
    return company


def company_identity(
    siren: str | None, siret: str | None, vat_number: str | None
) -> CompanyIdentity:
    """The identity a person typed, checked; AccountError naming the field when wrong."""
    try:
        return CompanyIdentity.checked(siren, siret, vat_number)
    except IdentifierError as exc:
        raise AccountError(str(exc), field=exc.field) from exc


# A change to one of a company's settings: None leaves it as it is; "" clears an identifier.
Change = str | None


def set_company(
    db: Database,
    slug: str,
    *,
    name: Change = None,
    fiscal_year_end: Change = None,
    siren: Change = None,
    siret: Change = None,
    vat_number: Change = None,
    tenant: Tenant = ALL,
) -> Company:
    """Change a company's name, fiscal year end or identity (`company set`, PATCH). The
    identity is checked as a whole after the change: a new SIREN must still own the SIRET
    and the VAT number kept, or they are changed (or cleared) with it."""
    if fiscal_year_end is not None:
        check_fiscal_year_end(fiscal_year_end)
    if name is not None and not name.strip():
        raise AccountError("a company's name cannot be empty", field="name")
    with db.write() as s:
        company = s.execute(
            tenant.companies(select(Company).where(Company.slug == slug))
        ).scalar_one_or_none()
        if company is None:
            raise NotFound(f"no company {slug!r} (see `gateway company list`)", field="slug")
        identity = company_identity(
            company.siren if siren is None else siren,
            company.siret if siret is None else siret,
            company.vat_number if vat_number is None else vat_number,
        )
        company.siren, company.siret, company.vat_number = (
            identity.siren,
            identity.siret,
            identity.vat_number,
        )
        if name is not None:
            company.name = name.strip()
        if fiscal_year_end is not None:
            company.fiscal_year_end = fiscal_year_end
    return company


def set_bot_mail_forwarding(
    db: Database,
    slug: str,
    on: bool,
    contact: str | None,
    served_domains: tuple[str, ...] | list[str],
) -> str | None:
    """Turn forwarding of a cabinet's bot mail to its contact address on or off (R6), and
    set the contact address when one is given; returns the contact address.

    On needs a contact address, and one that is not on a domain we serve: mail forwarded
    there would come back to us (at best refused, at worst to a bot identity: a loop).
    """
    if contact is not None:
        parts = split_address(contact)
        if parts is None or not contact.isascii():
            raise AccountError(f"contact {contact!r} is not an email address")
        contact = contact.strip().strip("<>")
    with db.write() as s:
        cabinet = s.execute(select(Cabinet).where(Cabinet.slug == slug)).scalar_one_or_none()
        if cabinet is None:
            raise AccountError(f"no cabinet {slug!r} (see `gateway cabinet list`)")
        if contact is not None:
            cabinet.contact_email = contact
        address = cabinet.contact_email
        if on:
            if not address:
                raise AccountError(
                    f"cabinet {slug!r} has no contact address to forward its bot mail to; "
                    f"give one: `gateway cabinet forwarding {slug} on --contact ADDRESS`"
                )
            domain = (split_address(address) or ("", ""))[1]
            if domain in {d.lower() for d in served_domains}:
                raise AccountError(
                    f"contact {address!r} is on {domain}, a domain this gateway serves: "
                    "forwarded mail would come back here; give the cabinet's own address"
                )
        cabinet.forward_bot_mail = on
    return address

"""/cabinets and /companies: who the firms and their clients are, and where mail reaches
them (collection addresses). The same service functions as `gateway cabinet` and `gateway
company` (gateway/storage/accounts.py)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from gateway.app import Gateway
from gateway.http.api.access import Admin, Gw, Reader, Writer
from gateway.http.api.schemas import Moment, Strict, refusals
from gateway.storage.accounts import (
    NotFound,
    add_cabinet,
    add_company,
    company_identity,
    set_company,
)
from gateway.storage.listings.accounts import CompanyRow, list_cabinets, list_companies

router = APIRouter()


class Cabinet(BaseModel):
    slug: str
    name: str
    contact: str | None
    forwarding: str = Field(description="on or off: bot mail forwarded to the contact (R6)")
    created_at: Moment


class NewCabinet(Strict):
    slug: str = Field(min_length=1, max_length=63, examples=["aecconseil"])
    name: str | None = Field(default=None, max_length=200)
    contact: str | None = Field(default=None, max_length=254, examples=["contact@aec.fr"])


class CollectionAddress(BaseModel):
    address: str
    folder: str


class Company(BaseModel):
    slug: str
    name: str
    cabinet: str
    fiscal_year_end: str
    created_at: Moment
    siren: str | None = Field(description="9 digits: what e-invoices name it by")
    siret: str | None
    vat_number: str | None = Field(examples=["FR40303265045"])
    collection_addresses: list[CollectionAddress]


class NewCompany(Strict):
    slug: str = Field(min_length=1, max_length=63, examples=["dupont-maconnerie"])
    cabinet: str = Field(min_length=1, max_length=63)
    name: str | None = Field(default=None, max_length=200)
    fiscal_year_end: str = Field(default="12-31", pattern=r"^\d\d-\d\d$", examples=["12-31"])
    siren: str | None = Field(default=None, max_length=20, examples=["732829320"])
    siret: str | None = Field(default=None, max_length=30)
    vat_number: str | None = Field(default=None, max_length=30, examples=["FR40303265045"])


class CompanyChange(Strict):
    """Only what is given changes; an empty string clears an identifier."""

    name: str | None = Field(default=None, max_length=200)
    fiscal_year_end: str | None = Field(default=None, pattern=r"^\d\d-\d\d$")
    siren: str | None = Field(default=None, max_length=20)
    siret: str | None = Field(default=None, max_length=30)
    vat_number: str | None = Field(default=None, max_length=30)


@router.get("/cabinets", tags=["cabinets"], responses=refusals())
def cabinets(who: Reader, gw: Gw) -> list[Cabinet]:
    """The cabinets this token sees (a cabinet's token: its own)."""
    return [
        Cabinet.model_validate(r, from_attributes=True) for r in list_cabinets(gw.db, who.tenant)
    ]


@router.get("/cabinets/{slug}", tags=["cabinets"], responses=refusals(404))
def cabinet(slug: str, who: Reader, gw: Gw) -> Cabinet:
    for row in list_cabinets(gw.db, who.tenant):
        if row.slug == slug:
            return Cabinet.model_validate(row, from_attributes=True)
    raise NotFound(f"no cabinet {slug!r}", field="slug")


@router.post(
    "/cabinets",
    status_code=201,
    tags=["cabinets"],
    responses=refusals(422, 409),
)
def create_cabinet(
    body: NewCabinet,
    who: Admin,
    gw: Gw,
) -> Cabinet:
    """A new cabinet (admin tokens only)."""
    add_cabinet(gw.db, body.slug, body.name, body.contact, gw.clock.now())
    return cabinet(body.slug, who, gw)


@router.get("/companies", tags=["companies"], responses=refusals())
def companies(who: Reader, gw: Gw, cabinet: str | None = None) -> list[Company]:
    """The companies this token sees, with their collection addresses."""
    rows = list_companies(gw.db, who.tenant)
    return [_company(gw, r) for r in rows if cabinet is None or r.cabinet == cabinet]


@router.get("/companies/{slug}", tags=["companies"], responses=refusals(404))
def company(slug: str, who: Reader, gw: Gw) -> Company:
    rows = list_companies(gw.db, who.tenant, slug=slug)
    if not rows:
        raise NotFound(f"no company {slug!r}", field="slug")
    return _company(gw, rows[0])


@router.post(
    "/companies",
    status_code=201,
    tags=["companies"],
    responses=refusals(422, 404, 409),
)
def create_company(
    body: NewCompany,
    who: Writer,
    gw: Gw,
) -> Company:
    """A new client company of a cabinet this token sees; its collection addresses."""
    add_company(
        gw.db,
        gw.grammar,
        body.slug,
        body.cabinet,
        body.name,
        body.fiscal_year_end,
        gw.clock.now(),
        who.tenant,
        identity=company_identity(body.siren, body.siret, body.vat_number),
    )
    return company(body.slug, who, gw)


@router.patch("/companies/{slug}", tags=["companies"], responses=refusals(422, 404))
def change_company(slug: str, body: CompanyChange, who: Writer, gw: Gw) -> Company:
    """Change a company's name, fiscal year end, SIREN, SIRET or VAT number."""
    set_company(gw.db, slug, tenant=who.tenant, **body.model_dump(exclude_unset=True))
    return company(slug, who, gw)


def _company(gw: Gateway, row: CompanyRow) -> Company:
    addresses = [
        CollectionAddress(address=a, folder=f) for a, f in gw.collection_addresses(row.slug)
    ]
    return Company(
        slug=row.slug,
        name=row.name,
        cabinet=row.cabinet,
        fiscal_year_end=row.fiscal_year_end,
        created_at=row.created_at,
        siren=row.siren,
        siret=row.siret,
        vat_number=row.vat_number,
        collection_addresses=addresses,
    )

"""`gateway company`: a cabinet's client companies and their collection addresses."""

from __future__ import annotations

from dataclasses import asdict

import click

from gateway.cli.context import Context, config_option, json_option
from gateway.cli.output import emit
from gateway.storage.accounts import add_company, company_identity, set_company
from gateway.storage.listings.accounts import list_companies


@click.group()
def company() -> None:
    """A cabinet's client companies."""


@company.command("add")
@config_option
@click.argument("slug")
@click.option("--cabinet", "cabinet_slug", required=True, help="The cabinet's slug.")
@click.option("--name", default=None)
@click.option("--fiscal-year-end", default="12-31", show_default=True, help="MM-DD")
@click.option("--siren", default=None, help="9 digits; what e-invoices name the company by.")
@click.option("--siret", default=None, help="14 digits (gives the SIREN when it is not given).")
@click.option("--vat", "vat_number", default=None, help="Intra-EU VAT number, e.g. FR40303265045.")
def company_add(
    config_path: str | None,
    slug: str,
    cabinet_slug: str,
    name: str | None,
    fiscal_year_end: str,
    siren: str | None,
    siret: str | None,
    vat_number: str | None,
) -> None:
    """Add a company; prints its collection addresses."""
    gw = Context(config_path).gateway
    identity = company_identity(siren, siret, vat_number)
    add_company(
        gw.db,
        gw.grammar,
        slug,
        cabinet_slug,
        name,
        fiscal_year_end,
        gw.clock.now(),
        identity=identity,
    )
    click.echo(f"company {slug} added to {cabinet_slug}; collection addresses:")
    for address, folder in gw.collection_addresses(slug):
        click.echo(f"  {address}  -> {folder}")


@company.command("list")
@config_option
@json_option
def company_list(config_path: str | None, as_json: bool) -> None:
    """List companies."""
    gw = Context(config_path).gateway
    rows = [asdict(row) for row in list_companies(gw.db)]
    emit(rows, as_json, ["slug", "cabinet", "name", "fiscal_year_end", "siren", "vat_number"])


@company.command("set")
@config_option
@click.argument("slug")
@click.option("--name", default=None)
@click.option("--fiscal-year-end", default=None, help="MM-DD")
@click.option("--siren", default=None, help='9 digits; "" clears it.')
@click.option("--siret", default=None, help='14 digits; "" clears it.')
@click.option("--vat", "vat_number", default=None, help='Intra-EU VAT number; "" clears it.')
def company_set(
    config_path: str | None,
    slug: str,
    name: str | None,
    fiscal_year_end: str | None,
    siren: str | None,
    siret: str | None,
    vat_number: str | None,
) -> None:
    """Change a company's name, fiscal year end, SIREN, SIRET or VAT number."""
    gw = Context(config_path).gateway
    changed = set_company(
        gw.db,
        slug,
        name=name,
        fiscal_year_end=fiscal_year_end,
        siren=siren,
        siret=siret,
        vat_number=vat_number,
    )
    click.echo(
        f"company {slug}: name {changed.name!r}, fiscal year end {changed.fiscal_year_end}, "
        f"SIREN {changed.siren or '-'}, SIRET {changed.siret or '-'}, "
        f"VAT number {changed.vat_number or '-'}"
    )

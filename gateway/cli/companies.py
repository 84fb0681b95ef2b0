"""`gateway company`: a cabinet's client companies and their collection addresses."""

from __future__ import annotations

from dataclasses import asdict

import click

from gateway.cli.context import Context, config_option, json_option
from gateway.cli.output import emit
from gateway.storage.accounts import add_company
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
def company_add(
    config_path: str | None, slug: str, cabinet_slug: str, name: str | None, fiscal_year_end: str
) -> None:
    """Add a company; prints its collection addresses."""
    gw = Context(config_path).gateway
    add_company(gw.db, gw.grammar, slug, cabinet_slug, name, fiscal_year_end, gw.clock.now())
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
    emit(rows, as_json, ["slug", "cabinet", "name", "fiscal_year_end"])

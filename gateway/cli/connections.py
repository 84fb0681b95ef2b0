"""`gateway connection` and `gateway switch`: a company connected to a partner tool, and
the folders whose documents go to it (R9, R10)."""

from __future__ import annotations

from dataclasses import asdict

import click

from gateway.cli.context import Context, config_option, json_option
from gateway.cli.output import emit
from gateway.storage.connections import (
    add_connection,
    delete_connection,
    set_switch,
    update_connection,
)
from gateway.storage.listings.outbound import list_connections, list_switches


@click.group()
def connection() -> None:
    """A company connected to a partner tool."""


@connection.command("add")
@config_option
@click.option("--company", "company_slug", required=True)
@click.option("--partner", required=True, help="myunisoft, meg, quickbooks, jefacture, upflow")
@click.option("--address", required=True, help="What the partner's settings say to enter.")
def connection_add(config_path: str | None, company_slug: str, partner: str, address: str) -> None:
    """Connect a company to a partner; the address is checked and parsed."""
    gw = Context(config_path).gateway
    c = add_connection(gw.db, gw.grammar, company_slug, partner, address, gw.clock.now())
    sender = c.sender or "the gateway's sender"
    click.echo(
        f"{company_slug} connected to {c.partner}: documents go to {c.destination}, from {sender}"
    )


@connection.command("update")
@config_option
@click.option("--company", "company_slug", required=True)
@click.option("--partner", required=True)
@click.option("--address", required=True, help="The corrected address.")
def connection_update(
    config_path: str | None, company_slug: str, partner: str, address: str
) -> None:
    """Correct the address entered for a connection; checked and parsed again."""
    gw = Context(config_path).gateway
    c = update_connection(gw.db, gw.grammar, company_slug, partner, address)
    sender = c.sender or "the gateway's sender"
    click.echo(
        f"{company_slug}'s connection to {c.partner} updated: documents go to "
        f"{c.destination}, from {sender}"
    )


@connection.command("delete")
@config_option
@click.option("--company", "company_slug", required=True)
@click.option("--partner", required=True)
def connection_delete(config_path: str | None, company_slug: str, partner: str) -> None:
    """Delete a connection: its switches go, its waiting deliveries are skipped."""
    gw = Context(config_path).gateway
    skipped = delete_connection(gw.db, gw.grammar, company_slug, partner, gw.clock.now())
    click.echo(
        f"{company_slug}'s connection to {partner} deleted, with its switches"
        + (f"; {len(skipped)} waiting delivery(ies) skipped" if skipped else "")
    )


@connection.command("list")
@config_option
@json_option
def connection_list(config_path: str | None, as_json: bool) -> None:
    """List connections."""
    gw = Context(config_path).gateway
    rows = [asdict(row) for row in list_connections(gw.db)]
    emit(rows, as_json, ["id", "company", "partner", "destination", "sender"])


@click.group()
def switch() -> None:
    """Switch a connection on or off for a folder and its sub-folders."""


@switch.command("on")
@config_option
@click.option("--company", "company_slug", required=True)
@click.option("--folder", "folder_path", required=True)
@click.option("--partner", required=True)
@click.option("--create-folder", is_flag=True, help="Create FOLDER if the company has none.")
def switch_on(
    config_path: str | None,
    company_slug: str,
    folder_path: str,
    partner: str,
    create_folder: bool,
) -> None:
    """From now on, documents placed in FOLDER or below go to PARTNER (R9, R10)."""
    gw = Context(config_path).gateway
    row = set_switch(
        gw.db, company_slug, folder_path, partner, True, gw.clock.now(), create_folder=create_folder
    )
    click.echo(
        f"{partner} switched on for {company_slug}:{row.folder} and its sub-folders "
        f"since {row.turned_on_at}; documents already there are not sent"
    )


@switch.command("off")
@config_option
@click.option("--company", "company_slug", required=True)
@click.option("--folder", "folder_path", required=True)
@click.option("--partner", required=True)
def switch_off(config_path: str | None, company_slug: str, folder_path: str, partner: str) -> None:
    """Stop sending documents placed in FOLDER from now on."""
    gw = Context(config_path).gateway
    set_switch(gw.db, company_slug, folder_path, partner, False, gw.clock.now())
    click.echo(f"{partner} switched off for {company_slug}:{folder_path}")


@switch.command("list")
@config_option
@json_option
def switch_list(config_path: str | None, as_json: bool) -> None:
    """List switches."""
    gw = Context(config_path).gateway
    rows = [asdict(row) for row in list_switches(gw.db)]
    emit(rows, as_json, ["company", "partner", "folder", "on", "turned_on_at"])

"""`gateway cabinet`: the accounting firms, and where their bot mail goes (R6)."""

from __future__ import annotations

from dataclasses import asdict

import click

from gateway.app import Gateway
from gateway.cli.context import Context, config_option, json_option
from gateway.cli.output import emit
from gateway.storage.accounts import add_cabinet, set_bot_mail_forwarding
from gateway.storage.listings.accounts import list_cabinets


@click.group()
def cabinet() -> None:
    """Accounting firms."""


@cabinet.command("add")
@config_option
@click.argument("slug")
@click.option("--name", default=None)
@click.option("--contact", default=None, help="Where the cabinet's bot mail may be forwarded.")
def cabinet_add(config_path: str | None, slug: str, name: str | None, contact: str | None) -> None:
    """Add a cabinet."""
    gw = Context(config_path).gateway
    add_cabinet(gw.db, slug, name, contact, gw.clock.now())
    click.echo(f"cabinet {slug} added; its bots: " + ", ".join(_bot_examples(gw, slug)))


def _bot_examples(gw: Gateway, cabinet_slug: str) -> list[str]:
    domain = gw.config.domains[0]
    return [
        f"{p.bot_identity.render({'cabinet': cabinet_slug})}@{domain}"
        for p in gw.registry.partners
        if p.bot_identity is not None and p.bot_scope == "cabinet"
    ]


@cabinet.command("list")
@config_option
@json_option
def cabinet_list(config_path: str | None, as_json: bool) -> None:
    """List cabinets."""
    gw = Context(config_path).gateway
    rows = [asdict(row) for row in list_cabinets(gw.db)]
    emit(rows, as_json, ["slug", "name", "contact", "forwarding"])


@cabinet.command("forwarding")
@config_option
@click.argument("slug")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--contact", default=None, help="Set the contact address at the same time.")
def cabinet_forwarding(config_path: str | None, slug: str, state: str, contact: str | None) -> None:
    """Forward the cabinet's bot mail to its contact address (on), or only keep it in the
    bot mailbox (off). Not retroactive; off also stops forwards still waiting."""
    gw = Context(config_path).gateway
    address = set_bot_mail_forwarding(gw.db, slug, state == "on", contact, gw.config.domains)
    if state == "on":
        click.echo(
            f"cabinet {slug}: bot mail received from now on is forwarded to {address}, "
            f"from {gw.config.gateway_sender} (sent by `gateway sender`)"
        )
    else:
        click.echo(f"cabinet {slug}: bot mail is kept in the bot mailbox only")

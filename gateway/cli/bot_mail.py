"""`gateway bot-mail`: what the cabinets' bot identities received (R6), and its forwards."""

from __future__ import annotations

from dataclasses import asdict

import click

from gateway.cli.context import Context, config_option, json_option
from gateway.cli.output import emit
from gateway.storage.listings.inbound import list_bot_mail


@click.group("bot-mail")
def bot_mail() -> None:
    """The cabinets' bot mailboxes (mail to bot identities, R6)."""


@bot_mail.command("list")
@config_option
@json_option
@click.option("--cabinet", "cabinet_slug", default=None)
def bot_mail_list(config_path: str | None, as_json: bool, cabinet_slug: str | None) -> None:
    """List mail received by bot identities."""
    gw = Context(config_path).gateway
    rows = [asdict(row) for row in list_bot_mail(gw.db, cabinet_slug)]
    emit(
        rows,
        as_json,
        ["id", "cabinet", "recipient", "mail_from", "subject", "received_at", "forward"],
    )

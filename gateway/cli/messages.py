"""`gateway messages`: the inbound log, every message received or taken and what became of it."""

from __future__ import annotations

from dataclasses import asdict

import click

from gateway.cli.context import Context, config_option, json_option
from gateway.cli.output import emit
from gateway.storage.listings.inbound import list_messages
from gateway.storage.models import MessageStatus


@click.group()
def messages() -> None:
    """The inbound log."""


@messages.command("list")
@config_option
@json_option
@click.option("--status", type=click.Choice([s.value for s in MessageStatus]), default=None)
@click.option("--limit", type=int, default=100, show_default=True)
def messages_list(config_path: str | None, as_json: bool, status: str | None, limit: int) -> None:
    """List received messages, newest first: envelope, status, reason."""
    gw = Context(config_path).gateway
    rows = [asdict(row) for row in list_messages(gw.db, status, limit)]
    emit(rows, as_json, ["queue_id", "received_at", "mail_from", "rcpt_tos", "status", "reason"])

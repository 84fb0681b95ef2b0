"""`gateway messages`: the inbound log, every message received or taken and what became of it."""

from __future__ import annotations

from dataclasses import asdict

import click
from sqlalchemy import select

from gateway.cli.context import Context, config_option, json_option
from gateway.cli.output import emit
from gateway.storage.listings.inbound import list_messages
from gateway.storage.models import InboundMessage, MessageStatus
from gateway.storage.queues import inbound as inbound_queue


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


@messages.command("retry")
@config_option
@click.argument("queue_id")
def messages_retry(config_path: str | None, queue_id: str) -> None:
    """Queue a `held` message (QUEUE_ID, as `messages list` shows it) for filing again, once
    what held it is fixed."""
    gw = Context(config_path).gateway
    with gw.db.write() as s:
        message_id = s.execute(
            select(InboundMessage.id).where(InboundMessage.queue_id == queue_id.upper())
        ).scalar_one_or_none()
        if message_id is None:
            raise click.ClickException(f"no message {queue_id}: see `gateway messages list`")
        inbound_queue.retry_held(s, message_id, gw.clock.now())
    click.echo(f"message {queue_id.upper()} queued for filing again")

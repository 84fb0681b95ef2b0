"""`gateway messages`: the inbound log, every message received or taken and what became of it."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

import click

from gateway.cli.context import Context, config_option, json_option
from gateway.cli.output import cell, emit, print_json
from gateway.inbound.trust.results import AuthenticationResults
from gateway.storage.listings.inbound import list_messages, message_detail
from gateway.storage.messages import retry_message
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


@messages.command("show")
@config_option
@json_option
@click.argument("queue_id")
def messages_show(config_path: str | None, as_json: bool, queue_id: str) -> None:
    """One message (QUEUE_ID, as `messages list` and the 250 reply show it): its envelope,
    status and reason, its history, and the documents or bot mail made from it."""
    gw = Context(config_path).gateway
    detail = message_detail(gw.db, queue_id)
    if detail is None:
        raise click.ClickException(f"no message {queue_id}: see `gateway messages list`")
    if as_json:
        print_json(asdict(detail))
        return
    m = detail.message
    fields = {
        "message": m.queue_id,
        "status": m.status,
        "reason": m.reason,
        "received": f"{cell(m.received_at)} by {m.source} from {m.peer or 'unknown'}"
        + (f" (helo {detail.helo})" if detail.helo else "")
        + (f", {m.source_mailbox}" if m.source_mailbox else ""),
        "mail from": m.mail_from or "<>",
        "recipients": ", ".join(m.rcpt_tos),
        "subject": m.subject,
        "message-id": m.message_id,
        "authenticated": (
            AuthenticationResults.from_json(detail.authentication).summary()
            if detail.authentication
            else None
        ),
        "size": f"{m.size} bytes, sha256 {detail.sha256}",
        "attempts": m.attempts,
        "claim": _claim(m.status, detail.claimed_by, detail.lease_until),
        "processed": detail.processed_at,
    }
    for name, value in fields.items():
        click.echo(f"{name + ':':12} {cell(value)}")
    click.echo("\nhistory:")
    emit([asdict(h) for h in detail.history], False, ["at", "from_status", "to_status", "detail"])
    click.echo("\nmade from it:")
    emit([asdict(d) for d in detail.made], False, ["kind", "id", "where", "filename", "detail"])


def _claim(status: str, claimed_by: str | None, lease_until: datetime | None) -> str | None:
    """Who files it now, or when it is tried again; None once filing is over."""
    if status != MessageStatus.FILING:
        return None
    if claimed_by:
        return f"{claimed_by} until {cell(lease_until)}"
    return f"none: tried again after {cell(lease_until)} (an attempt failed)"


@messages.command("retry")
@config_option
@click.argument("queue_id")
def messages_retry(config_path: str | None, queue_id: str) -> None:
    """Queue a `held` message (QUEUE_ID, as `messages list` shows it) for filing again, once
    what held it is fixed."""
    gw = Context(config_path).gateway
    retry_message(gw.db, queue_id, gw.clock.now())
    click.echo(f"message {queue_id.upper()} queued for filing again")

"""`gateway quarantine`: mail that failed its sender policy, carried malware or scored as spam.

Nothing of it was filed and no delivery was made; no notice went back to its sender (its
From is what is in doubt: a notice would be backscatter to whoever was forged). `release`
files it as if it had just arrived (R11: placements, deliveries), without the checks that
quarantined it; `delete` removes its copy and keeps the record; `purge` does that for what
is older than `trust.quarantine_retention_days`, as the filing workers do by themselves.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from gateway.cli.context import Context, config_option, json_option
from gateway.cli.output import cell, emit, print_json
from gateway.inbound.trust.results import AuthenticationResults
from gateway.storage import quarantine as quarantined_copies
from gateway.storage.db import Database
from gateway.storage.listings.inbound import list_messages, message_detail
from gateway.storage.messages import message_id_of, release_message
from gateway.storage.models import MessageStatus


@click.group()
def quarantine() -> None:
    """Quarantined mail: list, show, release, delete, purge."""


@quarantine.command("list")
@config_option
@json_option
@click.option("--limit", type=int, default=100, show_default=True)
def quarantine_list(config_path: str | None, as_json: bool, limit: int) -> None:
    """Quarantined messages, newest first, with why each is there."""
    gw = Context(config_path).gateway
    rows = [asdict(row) for row in list_messages(gw.db, MessageStatus.QUARANTINED, limit)]
    emit(rows, as_json, ["queue_id", "received_at", "mail_from", "rcpt_tos", "subject", "reason"])


@quarantine.command("show")
@config_option
@json_option
@click.argument("queue_id")
def quarantine_show(config_path: str | None, as_json: bool, queue_id: str) -> None:
    """One quarantined (or once quarantined) message: why, who sent it as far as SPF, DKIM
    and DMARC tell, its Authentication-Results header and its history."""
    gw = Context(config_path).gateway
    detail = message_detail(gw.db, queue_id)
    if detail is None:
        raise click.ClickException(f"no message {queue_id}: see `gateway quarantine list`")
    results = (
        AuthenticationResults.from_json(detail.authentication) if detail.authentication else None
    )
    header = results.to_header(gw.config.trust.authserv_id) if results else None
    if as_json:
        print_json({**asdict(detail), "authentication_results": header})
        return
    m = detail.message
    fields: dict[str, Any] = {
        "message": m.queue_id,
        "status": m.status,
        "reason": m.reason,
        "received": f"{cell(m.received_at)} by {m.source} from {m.peer or 'unknown'}",
        "mail from": m.mail_from or "<>",
        "recipients": ", ".join(m.rcpt_tos),
        "subject": m.subject,
        "authenticated": results.summary() if results else "not checked",
        "copy": (gw.blobs.where(detail.quarantine_sha256) if detail.quarantine_sha256 else None),
    }
    for name, value in fields.items():
        click.echo(f"{name + ':':15} {cell(value)}")
    if header:
        click.echo(f"\n{header}")
    click.echo("\nhistory:")
    emit([asdict(h) for h in detail.history], False, ["at", "from_status", "to_status", "detail"])


@quarantine.command("release")
@config_option
@click.argument("queue_id")
def quarantine_release(config_path: str | None, queue_id: str) -> None:
    """File a quarantined message as if it had just arrived, without the checks that
    quarantined it: its documents are placed, and sent on from switched folders."""
    gw = Context(config_path).gateway
    release_message(gw.db, queue_id, gw.clock.now(), "gateway quarantine release")
    click.echo(f"message {queue_id.upper()} released: queued for filing")


@quarantine.command("delete")
@config_option
@click.argument("queue_id")
def quarantine_delete(config_path: str | None, queue_id: str) -> None:
    """Delete a quarantined message's copy; its record (reason, results, history) stays."""
    gw = Context(config_path).gateway
    quarantined_copies.discard(
        gw.db, gw.blobs, _message_id(gw.db, queue_id), gw.clock.now(), "deleted by hand"
    )
    click.echo(f"message {queue_id.upper()} deleted (its record stays)")


@quarantine.command("purge")
@config_option
def quarantine_purge(config_path: str | None) -> None:
    """Delete now what is older than trust.quarantine_retention_days (the filing workers do
    it by themselves, hourly)."""
    gw = Context(config_path).gateway
    days = gw.config.trust.quarantine_retention_days
    count = quarantined_copies.purge(gw.db, gw.blobs, gw.clock.now(), days)
    click.echo(f"purged {count} message(s) quarantined more than {days} days ago")


def _message_id(db: Database, queue_id: str) -> int:
    with db.read() as s:
        return message_id_of(s, queue_id, "gateway quarantine list")

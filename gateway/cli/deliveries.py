"""`gateway deliveries`: the outbound ledger, one delivery per document and connection;
listing it, retrying one, flushing the queue."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

import click

from gateway.cli.context import Context, config_option, json_option
from gateway.cli.output import emit
from gateway.storage.ledger import retry_delivery
from gateway.storage.listings.outbound import list_deliveries
from gateway.storage.models import DeliveryStatus


@click.group()
def deliveries() -> None:
    """The outbound ledger: one delivery per document and connection."""


@deliveries.command("list")
@config_option
@json_option
@click.option("--company", "company_slug", default=None)
@click.option("--status", type=click.Choice([s.value for s in DeliveryStatus]), default=None)
def deliveries_list(
    config_path: str | None, as_json: bool, company_slug: str | None, status: str | None
) -> None:
    """List deliveries with their state and reason."""
    gw = Context(config_path).gateway
    rows = [asdict(row) for row in list_deliveries(gw.db, company_slug, status)]
    columns = ["id", "company", "partner", "filename", "invoice_number", "status", "due_at"]
    emit(rows, as_json, [*columns, "reason"])


@deliveries.command("retry")
@config_option
@click.argument("delivery_id", type=int)
def deliveries_retry(config_path: str | None, delivery_id: int) -> None:
    """Queue a failed, bounced or skipped delivery again, due now (if it may be sent: the
    partner's limits and the switched folder are checked again)."""
    gw = Context(config_path).gateway
    retry_delivery(gw.db, gw.registry, delivery_id, gw.clock.now())
    click.echo(f"delivery {delivery_id} queued again")


@deliveries.command("flush")
@config_option
@click.option("--partner", default=None, help="Only this partner's deliveries.")
def deliveries_flush(config_path: str | None, partner: str | None) -> None:
    """Send everything waiting now, whatever the schedule (like `postqueue -f`)."""
    gw = Context(config_path).gateway

    async def flush() -> int:
        dispatcher = gw.dispatcher()
        try:
            # One pass: each waiting delivery is tried once (a partner answering 4xx is
            # not hammered until it gives in).
            return await dispatcher.run_once(flush=True, partner=partner)
        finally:
            await dispatcher.close()

    click.echo(f"tried {asyncio.run(flush())} delivery(ies); see `gateway deliveries list`")

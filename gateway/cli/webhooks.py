"""`gateway webhooks`: events pushed to the platform's configured `[webhooks.NAME]`;
running the dispatcher, listing the webhooks, where each stands, retrying a delivery."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

import click

from gateway.cli.context import Context, config_option, json_option
from gateway.cli.output import emit
from gateway.cli.service import until_signalled
from gateway.runner import Runner, in_thread
from gateway.storage.queues import webhook_deliveries
from gateway.storage.queues.webhook_deliveries import TransitionError

IDLE_SECONDS = 1.0  # between passes once nothing is waiting: events go out within a second


@click.group()
def webhooks() -> None:
    """Events pushed to the platform as signed POSTs."""


@webhooks.command("run")
@config_option
@click.option("--once", is_flag=True, help="Send what is waiting now, then exit.")
def webhooks_run(config_path: str | None, once: bool) -> None:
    """Push events to every configured webhook until SIGTERM (started by `serve`)."""
    context = Context(config_path, role="webhooks")
    gw = context.gateway if once else context.gateway_when_available()
    if gw is None:
        return
    dispatcher = gw.webhook_dispatcher()
    runner = Runner("webhooks", [in_thread(dispatcher.run_once)], IDLE_SECONDS)
    try:
        if once:
            click.echo(f"took {asyncio.run(runner.drain())} event(s) and delivery(ies)")
            return
        with gw.running_as("webhooks") as heartbeat:
            runner.recover = heartbeat.release_claims
            asyncio.run(until_signalled(runner))
    finally:
        dispatcher.close()


@webhooks.command("list")
@config_option
@json_option
def webhooks_list(config_path: str | None, as_json: bool) -> None:
    """The configured webhooks: URL, cabinet, event types."""
    gw = Context(config_path).gateway
    rows = [
        {
            "name": h.name,
            "url": h.url,
            "cabinet": h.cabinet or "(all)",
            "events": ", ".join(h.events) or "(all)",
            "allow_private": h.allow_private,
        }
        for h in gw.config.webhooks.values()
    ]
    emit(rows, as_json, ["name", "url", "cabinet", "allow_private", "events"])


@webhooks.command("status")
@config_option
@json_option
def webhooks_status(config_path: str | None, as_json: bool) -> None:
    """Where each webhook stands: deliveries per state, the oldest waiting, the last failure."""
    gw = Context(config_path).gateway
    with gw.db.read() as s:
        states = webhook_deliveries.states(s, list(gw.config.webhooks))
    columns = ["webhook", "cursor", "queued", "sending", "deferred", "delivered", "failed"]
    rows = [
        {
            "webhook": st.webhook,
            "cursor": st.cursor,
            **st.counts,
            "oldest_waiting_event": st.oldest_pending_event,
            "last_failure": st.last_failure,
        }
        for st in states
    ]
    if as_json:
        emit([{**asdict(st)} for st in states], True, [])
        return
    emit(
        rows,
        False,
        [*columns, "oldest_waiting_event", "last_failure"],
    )


@webhooks.command("retry")
@config_option
@click.argument("delivery_id", type=int)
def webhooks_retry(config_path: str | None, delivery_id: int) -> None:
    """Queue a failed webhook delivery again, due now (in its company's order)."""
    gw = Context(config_path).gateway
    try:
        with gw.db.write() as s:
            webhook_deliveries.retry(s, delivery_id, gw.clock.now())
    except TransitionError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"webhook delivery {delivery_id} queued again")

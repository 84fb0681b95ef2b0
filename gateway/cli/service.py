"""Setting up and running: `init`, and the long-running verbs `serve`, `worker`, `sender`."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import click

from gateway.cli.context import Context, config_option
from gateway.config import default_toml
from gateway.outbound.sending import sending_runner
from gateway.priority import run_at_idle_priority
from gateway.runner import Runner, in_thread


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing gateway.toml.")
def init(directory: Path, force: bool) -> None:
    """Write DIR/gateway.toml (the embedded default), create the database and storage."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "gateway.toml"
    if path.exists() and not force:
        click.echo(f"gateway: {path} exists; keeping it (use --force to overwrite)", err=True)
    else:
        path.write_text(default_toml(directory), encoding="utf-8")
    gw = Context(str(path)).unopened()
    gw.prepare_storage()
    click.echo(f"configuration: {path}")
    click.echo(f"database:      {gw.config.database_url}")
    click.echo(f"storage:       {gw.config.storage_path}")
    click.echo(f"next: gateway serve -c {path}")


@click.command()
@config_option
def migrate(config_path: str | None) -> None:
    """Bring the database schema up to date (an upgrade step; safe to run on every node at
    once: one migrates, the others wait and find nothing to do)."""
    gw = Context(config_path).unopened()
    before = gw.prepare_storage()
    after = gw.db.revision()
    if before == after:
        click.echo(f"schema at revision {after}: up to date")
    else:
        click.echo(f"schema migrated from revision {before or '(none)'} to {after}")


@click.command()
@config_option
@click.option("--smtp-host", default=None, help="Listen address (default: smtp.host).")
@click.option("--smtp-port", type=int, default=None, help="Listen port (default: smtp.port).")
def serve(config_path: str | None, smtp_host: str | None, smtp_port: int | None) -> None:
    """Run the SMTP server and filing workers until SIGTERM/SIGINT, then stop cleanly."""
    from gateway.serve import install_fast_event_loop
    from gateway.serve import serve as run

    gw = Context(config_path, role="smtp").unopened()  # serve opens it, waiting for the database
    install_fast_event_loop()
    asyncio.run(run(gw, smtp_host, smtp_port, lambda line: click.echo(line, err=True)))


@click.command()
@config_option
@click.option("--once", is_flag=True, help="File what is waiting now, then exit.")
def worker(config_path: str | None, once: bool) -> None:
    """Run a filing worker (started by `serve`; run more on other nodes if needed)."""
    # Filing is idempotent (a lost commit is redone), so it need not fsync each commit.
    context = Context(config_path, durable_commits=False, role="filing")
    if once:
        opened = context.gateway
        runner = Runner(
            "filing", [in_thread(opened.filer().run_once)], opened.config.filing.poll_seconds
        )
        click.echo(f"processed {asyncio.run(runner.drain())} message(s)")
        return
    if (gw := context.gateway_when_available()) is None:
        return
    filer = gw.filer()
    run_at_idle_priority()  # acknowledging mail comes before filing it
    with gw.running_as("filing") as heartbeat:
        runner = Runner(
            "filing",
            [in_thread(filer.run_once)],
            gw.config.filing.poll_seconds,
            recover=heartbeat.release_claims,
        )
        asyncio.run(until_signalled(runner))


@click.command()
@config_option
@click.option("--once", is_flag=True, help="Send what is due now, then exit.")
@click.option(
    "--interval", type=float, default=30.0, show_default=True, help="Seconds between runs."
)
def sender(config_path: str | None, once: bool, interval: float) -> None:
    """Run a sending worker: due deliveries out on each partner's schedule (R12), and bot
    mail forwards to cabinet contacts (R6)."""
    context = Context(config_path, role="sender")
    gw = context.gateway if once else context.gateway_when_available()
    if gw is None:
        return

    async def send(recover: Callable[[], None] | None) -> None:
        dispatcher = gw.dispatcher()
        forwarder = gw.forwarder(dispatcher.transport)  # one connection pool for both
        runner = sending_runner(dispatcher, forwarder, interval, recover)
        try:
            await (runner.drain() if once else until_signalled(runner))
        finally:
            await dispatcher.close()

    if once:
        asyncio.run(send(None))
        return
    with gw.running_as("sender") as heartbeat:
        asyncio.run(send(heartbeat.release_claims))


async def until_signalled(runner: Runner) -> None:
    """Run `runner` until SIGTERM or SIGINT; it stops between two passes."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runner.run(stop)

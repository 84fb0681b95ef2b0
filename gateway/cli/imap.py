"""`gateway imap`: IMAP sources, existing mailboxes pulled into the filing pipeline: checking
one, reading them, and where each folder stands."""

from __future__ import annotations

import signal
import sys
import threading
from dataclasses import asdict
from typing import Any

import click

from gateway.cli.context import Context, config_option, json_option
from gateway.cli.output import emit
from gateway.inbound.imap import ImapProblem, check_source
from gateway.inbound.imap.run import run_pollers
from gateway.storage.listings.inbound import ImapFolderRow, imap_folder_states


@click.group()
def imap() -> None:
    """IMAP sources: existing mailboxes pulled into the filing pipeline."""


@imap.command("test")
@config_option
@click.argument("source_name", metavar="SOURCE")
def imap_test(config_path: str | None, source_name: str) -> None:
    """Log in to SOURCE and check its folders; say what is wrong in plain words."""
    gw = Context(config_path).gateway
    source = gw.imap_source(source_name)
    try:
        lines = check_source(source, gw.imap_connector(source))
    except ImapProblem as exc:
        click.echo(f"gateway: imap source {source_name}: {exc}", err=True)
        sys.exit(1)
    for line in lines:
        click.echo(line)
    click.echo(f"imap source {source_name}: ok")


@imap.command("sync")
@config_option
@click.argument("source_name", metavar="SOURCE")
@click.option("--once", is_flag=True, help="Drain the folders now, then exit.")
def imap_sync(config_path: str | None, source_name: str, once: bool) -> None:
    """Read SOURCE's folders into the gateway (with --once: what is there now)."""
    gw = Context(config_path, role="imap").gateway
    source = gw.imap_source(source_name)
    stop = _stop_on_signals()
    pollers = gw.imap_pollers(source, stop)
    if not once:
        with gw.running_as("imap"):
            run_pollers(pollers, stop)
        return
    failed = False
    for poller in pollers:
        with _ProgressBar(f"{source_name} {poller.folder}") as bar:
            try:
                result = poller.run(once=True, progress=bar.update)
            except ImapProblem as exc:
                click.echo(f"gateway: imap source {source_name}: {exc}", err=True)
                failed = True
                continue
        click.echo(
            f"{source_name} {poller.folder}: {result.taken} taken, {result.stored} to filing, "
            f"{result.rejected} rejected, {result.duplicates} already taken before, "
            f"{result.settled} moved or flagged"
        )
    if failed:
        sys.exit(1)


@imap.command("run")
@config_option
def imap_run(config_path: str | None) -> None:
    """Read every configured source until SIGTERM (started by `serve`)."""
    if (gw := Context(config_path, role="imap").gateway_when_available()) is None:
        return
    stop = _stop_on_signals()
    pollers = [p for s in gw.config.imap_sources.values() for p in gw.imap_pollers(s, stop)]
    with gw.running_as("imap"):
        run_pollers(pollers, stop)


@imap.command("status")
@config_option
@json_option
def imap_status(config_path: str | None, as_json: bool) -> None:
    """Where each source's folders stand: checkpoint, reader, last error."""
    gw = Context(config_path).gateway
    rows = [
        {**asdict(row), "state": _state(row)}
        for row in imap_folder_states(gw.db, gw.config.imap_folders)
    ]
    emit(
        rows,
        as_json,
        [
            "source",
            "folder",
            "state",
            "uidvalidity",
            "last_uid",
            "taken",
            "reader",
            "last_sync_at",
            "error_code",
            "last_error",
        ],
    )


def _state(row: ImapFolderRow) -> str:
    """ok, failing (with how long), or retrying (failures not yet in FAILING_AFTER)."""
    if row.failing:
        since = row.failing_since.strftime("%Y-%m-%dT%H:%M:%SZ") if row.failing_since else "?"
        return f"failing: {row.failures} attempts in a row since {since}"
    if row.failures:
        return f"retrying ({row.failures} failed)"
    return "never read" if row.uidvalidity is None else "ok"


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


class _ProgressBar:
    """A progress bar on a terminal; nothing when output goes to a file or a pipe."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None
        self.shown = 0

    def __enter__(self) -> _ProgressBar:
        return self

    def update(self, done: int, total: int) -> None:
        if not sys.stderr.isatty() or total == 0:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.shown)
        self.shown = done

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)

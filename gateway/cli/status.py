"""`gateway status`: the work queues at a glance (counts by state, the oldest waiting item,
who holds claims until when), the processes of every node and the IMAP sources. Read-only;
any node may run it."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

import click

from gateway.cli.context import Context, config_option, json_option
from gateway.cli.output import emit, print_json
from gateway.clock import as_utc
from gateway.storage.listings.inbound import imap_folder_states
from gateway.storage.listings.queues import claims, queue_summaries, registered_processes


@click.command()
@config_option
@json_option
def status(config_path: str | None, as_json: bool) -> None:
    """Each queue's items by state and its oldest waiting item; the claims workers hold and
    until when; every node's processes and whether they are alive (heartbeating); each
    IMAP folder's reader, last success and last error."""
    gw = Context(config_path).gateway
    now = gw.clock.now()
    queues = [
        {**asdict(q), "oldest_waiting_seconds": _age(q.oldest_waiting_at, now)}
        for q in queue_summaries(gw.db)
    ]
    held = [asdict(c) for c in claims(gw.db)]
    running = [asdict(p) for p in registered_processes(gw.db, now)]
    imap = [asdict(row) for row in imap_folder_states(gw.db, gw.config.imap_folders)]
    if as_json:
        print_json({"queues": queues, "claims": held, "processes": running, "imap": imap})
        return
    for q in queues:
        counts = ", ".join(f"{state} {n}" for state, n in q["states"].items() if n)
        q["states"] = counts or "(empty)"
        q["oldest_waiting"] = _duration(q["oldest_waiting_seconds"])
    emit(queues, False, ["queue", "waiting", "oldest_waiting", "states"])
    click.echo("\nclaims held by workers:")
    emit(held, False, ["queue", "claimed_by", "items", "lease_until"])
    click.echo("\nprocesses, by node:")
    emit(running, False, ["node", "role", "pid", "alive", "heartbeat_at", "name"])
    if imap:
        click.echo("\nIMAP folders:")
        emit(
            imap, False, ["source", "folder", "reader", "lease_until", "last_sync_at", "last_error"]
        )


def _age(since: datetime | None, now: datetime) -> float | None:
    return None if since is None else round((now - as_utc(since)).total_seconds(), 1)


def _duration(seconds: Any) -> str:
    """A wait in words: 42 s, 3 min 5 s, 2 h 10 min, 3 d 4 h; '-' for none."""
    if seconds is None:
        return "-"
    s = int(seconds)
    for unit, size, smaller, smaller_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "min", 60),
        ("min", 60, "s", 1),
    ):
        if s >= size:
            return f"{s // size} {unit} {s % size // smaller_size} {smaller}"
    return f"{s} s"

"""The IMAP reader's loop (`gateway imap run`, `gateway imap sync`): every folder's poller at
once, until told to stop."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from gateway.inbound.imap.poller import MailboxPoller


def run_pollers(pollers: Sequence[MailboxPoller], stop: threading.Event) -> None:
    """Run each poller in its own thread (IMAP IDLE watches one selected folder per
    connection) until `stop` is set or every poller has returned; then set `stop`, so that
    the others end too, and wait up to 30 s for each."""
    threads = [
        threading.Thread(target=p.run, kwargs={"once": False}, name=f"imap-{p.folder}", daemon=True)
        for p in pollers
    ]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads) and not stop.wait(1.0):
        pass
    stop.set()
    for t in threads:
        t.join(timeout=30)

"""Pulling mail from existing IMAP mailboxes: the connection (`connection`), what a message's
routing headers say (`headers`) and the poller that reads one folder into the spool
(`poller`). The checkpoint each poller holds is owned by
`gateway.storage.queues.imap_checkpoints`."""

from gateway.inbound.imap.connection import (
    Connector,
    ImapProblem,
    MailboxClient,
    check_source,
    connect,
    explain,
)
from gateway.inbound.imap.headers import candidate_recipients, fingerprint
from gateway.inbound.imap.poller import MailboxPoller, Progress, SyncResult

__all__ = [
    "Connector",
    "ImapProblem",
    "MailboxClient",
    "MailboxPoller",
    "Progress",
    "SyncResult",
    "candidate_recipients",
    "check_source",
    "connect",
    "explain",
    "fingerprint",
]

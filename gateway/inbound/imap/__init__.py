"""Pulling mail from existing IMAP mailboxes: the connection (`connection`), what a message's
routing headers say (`headers`), the poller that reads one folder into the spool
(`poller`), where its folders are on the server (`folders`), the check behind `gateway
imap test` (`check`) and the loop that runs every folder's poller at once (`run`). The checkpoint
each poller holds is owned by `gateway.storage.queues.imap_checkpoints`."""

from gateway.inbound.imap.check import check_source
from gateway.inbound.imap.connection import (
    Connector,
    ImapProblem,
    MailboxClient,
    connect,
    explain,
)
from gateway.inbound.imap.folders import FolderRefused, Namespaces
from gateway.inbound.imap.headers import candidate_recipients, fingerprint
from gateway.inbound.imap.poller import MailboxPoller, Progress, SyncResult
from gateway.inbound.imap.run import run_pollers

__all__ = [
    "Connector",
    "FolderRefused",
    "ImapProblem",
    "MailboxClient",
    "MailboxPoller",
    "Namespaces",
    "Progress",
    "SyncResult",
    "candidate_recipients",
    "check_source",
    "connect",
    "explain",
    "fingerprint",
    "run_pollers",
]

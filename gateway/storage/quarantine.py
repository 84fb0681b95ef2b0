"""Quarantined mail's copies: removed when a message is deleted by hand or purged after the
retention period (`trust.quarantine_retention_days`). The row, its reason, its
authentication results and its history stay as the record; the queue module
(queues/inbound.py) writes the status.

The blob store is content-addressed: a copy is only removed when nothing else points at the
same bytes (a document filed from the same message after a release, another quarantined
message identical to it).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.storage.blobs import BlobStore
from gateway.storage.db import Database
from gateway.storage.models import Document, InboundMessage, MessageStatus
from gateway.storage.queues import inbound as inbound_queue

PURGE_BATCH = 100


def discard(db: Database, blobs: BlobStore, message_id: int, now: datetime, why: str) -> None:
    """A quarantined message deleted: status `discarded`, then its copy removed if unused.
    `TransitionError` when it is not quarantined."""
    with db.write() as s:
        sha256 = s.execute(
            select(InboundMessage.quarantine_sha256).where(InboundMessage.id == message_id)
        ).scalar_one_or_none()
        inbound_queue.discard_quarantined(s, message_id, now, why)
        unused = sha256 is not None and not _still_used(s, sha256)
    if unused:
        assert sha256 is not None
        blobs.delete(sha256)


def purge(db: Database, blobs: BlobStore, now: datetime, retention_days: int) -> int:
    """Discard what was quarantined more than `retention_days` ago; how many."""
    cutoff = now - timedelta(days=retention_days)
    purged = 0
    while True:
        with db.read() as s:
            due = inbound_queue.quarantined_before(s, cutoff, PURGE_BATCH)
        for message_id, _ in due:
            discard(db, blobs, message_id, now, f"purged after {retention_days} days")
        purged += len(due)
        if len(due) < PURGE_BATCH:
            return purged


def _still_used(s: Session, sha256: str) -> bool:
    documents = s.execute(
        select(func.count()).select_from(Document).where(Document.sha256 == sha256)
    ).scalar_one()
    quarantined = s.execute(
        select(func.count())
        .select_from(InboundMessage)
        .where(
            InboundMessage.quarantine_sha256 == sha256,
            InboundMessage.status == MessageStatus.QUARANTINED,
        )
    ).scalar_one()
    return bool(documents or quarantined)

"""Listings of the GED: a company's folder tree, its documents."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from gateway.storage.accounts import company_id_of
from gateway.storage.db import Database
from gateway.storage.folders import normalise_path
from gateway.storage.models import Company, Document, Folder, InboundMessage


@dataclass(frozen=True, slots=True)
class FolderRow:
    path: str
    documents: int  # in this folder itself, not its sub-folders


def folder_tree(db: Database, company_slug: str) -> list[FolderRow]:
    """A company's folders by path (so a parent comes before its children), with counts."""
    with db.read() as s:
        company_id = company_id_of(s, company_slug)
        folders = s.execute(
            select(Folder.id, Folder.path)
            .where(Folder.company_id == company_id)
            .order_by(Folder.path)
        ).all()
        counts = dict(
            s.execute(
                select(Document.folder_id, func.count(Document.id))
                .where(Document.company_id == company_id)
                .group_by(Document.folder_id)
            ).all()
        )
    return [FolderRow(path=path, documents=counts.get(folder_id, 0)) for folder_id, path in folders]


@dataclass(frozen=True, slots=True)
class DocumentRow:
    id: int
    company: str
    folder: str
    filename: str
    media_type: str
    size: int
    sha256: str
    source: str
    source_mailbox: str | None
    origin: str
    placed_at: datetime
    message_id: str | None  # of the message it came in (None: uploaded)
    queue_id: str | None
    # That message's SPF, DKIM, DMARC and ARC results (issue 11), as stored.
    authentication: dict[str, Any] | None = None


def list_documents(
    db: Database, company_slug: str | None = None, folder_path: str | None = None
) -> list[DocumentRow]:
    """Documents, oldest first; optionally one company's, or one folder's and below."""
    query = (
        select(
            Document,
            Company.slug,
            Folder.path,
            InboundMessage.header_message_id,
            InboundMessage.queue_id,
            InboundMessage.authentication,
        )
        .join(Company, Document.company_id == Company.id)
        .join(Folder, Document.folder_id == Folder.id)
        .outerjoin(InboundMessage, Document.inbound_message_id == InboundMessage.id)
        .order_by(Document.id)
    )
    if company_slug:
        query = query.where(Company.slug == company_slug)
    if folder_path:
        path = normalise_path(folder_path)
        query = query.where((Folder.path == path) | Folder.path.startswith(path + "/"))
    with db.read() as s:
        if company_slug:
            company_id_of(s, company_slug)  # an unknown company is an error, not "(none)"
        return [
            DocumentRow(
                id=d.id,
                company=slug,
                folder=path,
                filename=d.filename,
                media_type=d.media_type,
                size=d.size,
                sha256=d.sha256,
                source=d.source,
                source_mailbox=d.source_mailbox,
                origin=d.origin,
                placed_at=d.placed_at,
                message_id=message_id,
                queue_id=queue_id,
                authentication=authentication,
            )
            for d, slug, path, message_id, queue_id, authentication in s.execute(query)
        ]

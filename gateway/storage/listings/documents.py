"""Listings of the GED: a company's folder tree, its documents (a page at a time, by keyset:
a million documents answer as fast as a hundred), one document's metadata and bytes."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, literal, select, tuple_
from sqlalchemy.orm import Session

from gateway.storage.accounts import AccountError, NotFound, company_id_of
from gateway.storage.blobs import BlobMissing, BlobStore
from gateway.storage.db import Database
from gateway.storage.folders import normalise_path
from gateway.storage.models import (
    Company,
    Connection,
    Delivery,
    Document,
    DuplicateDocument,
    Folder,
    InboundMessage,
)
from gateway.storage.tenancy import ALL, Tenant

MAX_PAGE = 500
SOURCES = ("smtp", "imap", "upload")


@dataclass(frozen=True, slots=True)
class FolderRow:
    path: str
    documents: int  # in this folder itself, not its sub-folders


def folder_tree(db: Database, company_slug: str, tenant: Tenant = ALL) -> list[FolderRow]:
    """A company's folders by path (so a parent comes before its children), with counts."""
    with db.read() as s:
        company_id = company_id_of(s, company_slug, tenant)
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
    # Its e-invoice (issue 15): what it says, the company's role, the checks; or why it
    # could not be read (gateway/inbound/invoices.py).
    invoice: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[DocumentRow]
    next_cursor: str | None  # None: this is the last page


def list_documents_page(
    db: Database,
    tenant: Tenant = ALL,
    *,
    company: str | None = None,
    folder: str | None = None,
    media_type: str | None = None,
    source: str | None = None,
    placed_after: datetime | None = None,
    placed_before: datetime | None = None,
    filename_contains: str | None = None,
    limit: int = 50,
    after: str | None = None,
) -> Page:
    """Documents oldest placed first (then by id), `limit` at a time; `after` is the
    `next_cursor` of the page before. `folder` takes its sub-folders too; `placed_after`
    is inclusive, `placed_before` exclusive. Paging by keyset (the last row's placed_at and
    id), never by offset: a page deep in costs what the first does, and documents added
    meanwhile never shift a page (a moved document is placed again: it comes later)."""
    if not 1 <= limit <= MAX_PAGE:
        raise AccountError(f"limit must be from 1 to {MAX_PAGE}, not {limit}", field="limit")
    if source is not None and source not in SOURCES:
        raise AccountError(f"source must be one of {', '.join(SOURCES)}", field="source")
    position = decode_cursor(after) if after is not None else None
    query = tenant.companies(_rows_query())
    if placed_after is not None:
        query = query.where(Document.placed_at >= placed_after)
    if placed_before is not None:
        query = query.where(Document.placed_at < placed_before)
    if media_type is not None:
        query = query.where(Document.media_type == media_type.strip().lower())
    if source is not None:
        query = query.where(Document.source == source)
    if filename_contains:
        query = query.where(Document.filename.icontains(filename_contains, autoescape=True))
    if position is not None:
        placed_at, document_id = position
        query = query.where(
            tuple_(Document.placed_at, Document.id)
            > tuple_(literal(placed_at, Document.placed_at.type), literal(document_id))
        )
    with db.read() as s:
        if company is not None:
            query = query.where(Document.company_id == company_id_of(s, company, tenant))
        if folder is not None:
            subtree = _subtree(s, folder, company, tenant)
            if not subtree:
                return Page([], None)
            query = query.where(Document.folder_id.in_(subtree))
        query = query.order_by(Document.placed_at, Document.id).limit(limit + 1)
        items = [_row(*r) for r in s.execute(query)]
    more = len(items) > limit
    items = items[:limit]
    return Page(items, encode_cursor(items[-1].placed_at, items[-1].id) if more else None)


def list_documents(
    db: Database,
    company_slug: str | None = None,
    folder_path: str | None = None,
    tenant: Tenant = ALL,
) -> list[DocumentRow]:
    """Every document (the CLI's listing), oldest placed first: all the pages."""
    rows: list[DocumentRow] = []
    cursor: str | None = None
    while True:
        page = list_documents_page(
            db, tenant, company=company_slug, folder=folder_path, limit=MAX_PAGE, after=cursor
        )
        rows += page.items
        if page.next_cursor is None:
            return rows
        cursor = page.next_cursor


@dataclass(frozen=True, slots=True)
class DeliveryLine:
    id: int
    partner: str
    status: str
    attempts: int
    reason: str | None
    created_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class DuplicateLine:
    """A later arrival of the same document (same bytes, or the same e-invoice)."""

    queue_id: str
    filename: str
    seen_at: datetime
    reason: str | None  # None: the same bytes


@dataclass(frozen=True, slots=True)
class DocumentDetail:
    document: DocumentRow
    deliveries: list[DeliveryLine]  # to each connected partner, oldest first
    duplicates: list[DuplicateLine] = field(default_factory=list)  # oldest first


def document_detail(db: Database, document_id: int, tenant: Tenant = ALL) -> DocumentDetail:
    """One document's metadata with the statuses of its deliveries."""
    with db.read() as s:
        row = _one(s, document_id, tenant)
        deliveries = [
            DeliveryLine(d.id, partner, d.status, d.attempts, d.reason, d.created_at, d.sent_at)
            for d, partner in s.execute(
                select(Delivery, Connection.partner)
                .join(Connection, Delivery.connection_id == Connection.id)
                .where(Delivery.document_id == document_id)
                .order_by(Delivery.id)
            )
        ]
        duplicates = [
            DuplicateLine(queue_id, d.filename, d.seen_at, d.reason)
            for d, queue_id in s.execute(
                select(DuplicateDocument, InboundMessage.queue_id)
                .join(InboundMessage, DuplicateDocument.inbound_message_id == InboundMessage.id)
                .where(DuplicateDocument.document_id == document_id)
                .order_by(DuplicateDocument.id)
            )
        ]
    return DocumentDetail(row, deliveries, duplicates)


def document_content(
    db: Database, blobs: BlobStore, document_id: int, tenant: Tenant = ALL
) -> tuple[DocumentRow, Iterator[bytes]]:
    """A document and its bytes, a chunk at a time, never read whole; NotFound when the
    bytes are missing from the store (said before the first chunk)."""
    with db.read() as s:
        row = _one(s, document_id, tenant)
    try:
        return row, blobs.chunks(row.sha256)
    except BlobMissing:
        raise NotFound(f"document #{document_id}: its bytes are missing from the store") from None


# -- cursors ----------------------------------------------------------------------------------


def encode_cursor(placed_at: datetime, document_id: int) -> str:
    """Opaque to callers: base64url of the JSON of a row's sort key."""
    key = json.dumps([placed_at.isoformat(), document_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The sort key a cursor holds; anything but a cursor this module made is refused."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        placed_at, document_id = json.loads(raw)
        if type(document_id) is not int or not isinstance(placed_at, str):
            raise ValueError("wrong types")
        return datetime.fromisoformat(placed_at), document_id
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise AccountError(
            "cursor is not one this API gave: pass next_cursor from the previous page as is",
            field="cursor",
        ) from exc


# -- the query --------------------------------------------------------------------------------


def _rows_query() -> Select[Any]:
    return (
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
    )


def _row(
    d: Document,
    slug: str,
    path: str,
    message_id: str | None,
    queue_id: str | None,
    authentication: dict[str, Any] | None,
) -> DocumentRow:
    return DocumentRow(
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
        invoice=d.invoice,
    )


def _one(s: Session, document_id: int, tenant: Tenant) -> DocumentRow:
    found = s.execute(tenant.companies(_rows_query()).where(Document.id == document_id)).first()
    if found is None:
        raise NotFound(
            f"no document #{document_id} (see `gateway documents list`)", field="document"
        )
    return _row(*found)


def _subtree(s: Session, folder: str, company: str | None, tenant: Tenant) -> Sequence[int]:
    """The ids of `folder` and its sub-folders (in every visible company, or `company`'s):
    fetched first, so that the documents query stays on its (folder_id, placed_at) index."""
    path = normalise_path(folder)  # a bad path: FolderPathError, naming the field
    query = tenant.companies(
        select(Folder.id)
        .join(Company, Folder.company_id == Company.id)
        .where((Folder.path == path) | Folder.path.startswith(path + "/", autoescape=True))
    )
    if company is not None:
        query = query.where(Company.slug == company)
    return s.execute(query).scalars().all()

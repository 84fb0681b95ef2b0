"""/documents: the GED's documents — listed a page at a time (keyset: as fast on page 20,000
as on page 1), uploaded as a multipart stream (spooled to disk, hashed as it is copied into
the blob store: never whole in memory), downloaded as a stream, moved (a move into a switched
folder is a placement, R11), with their deliveries; and /companies/{slug}/folders, the tree.
The same service functions as `gateway documents` and `gateway folder`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from gateway.app import Gateway
from gateway.http.api.access import Gw, Reader, Writer
from gateway.http.api.schemas import Id, Moment, Strict, refusals
from gateway.storage.api_tokens import Caller
from gateway.storage.connections import add_document, move_document
from gateway.storage.listings.documents import (
    document_content,
    document_detail,
    folder_tree,
    list_documents_page,
)
from gateway.storage.placement import Placement

router = APIRouter()


class InvoiceParty(BaseModel):
    name: str | None = None
    siren: str | None = None
    vat_number: str | None = None


class Invoice(BaseModel):
    """A document's e-invoice: what it says (gateway/einvoice/model.py), the company's role
    and the checks made at filing; or only `problem`, why it could not be read."""

    problem: str | None = Field(default=None, description="why it could not be read")
    format: str | None = Field(default=None, description="factur-x, cii or ubl")
    profile: str | None = Field(default=None, examples=["EN 16931"])
    number: str | None = Field(default=None, description="BT-1")
    issue_date: str | None = Field(default=None, description="BT-2, YYYY-MM-DD")
    type_code: str | None = Field(default=None, description="BT-3, e.g. 380, 381")
    kind: str | None = Field(default=None, description="invoice or credit_note")
    currency: str | None = Field(default=None, description="BT-5")
    seller: InvoiceParty | None = Field(default=None, description="BT-27, BT-30, BT-31")
    buyer: InvoiceParty | None = Field(default=None, description="BT-44, BT-47, BT-48")
    total_without_tax: str | None = Field(default=None, description="BT-109, a decimal")
    total_tax: str | None = Field(default=None, description="BT-110")
    total_with_tax: str | None = Field(default=None, description="BT-112")
    amount_due: str | None = Field(default=None, description="BT-115")
    due_date: str | None = Field(default=None, description="BT-9, YYYY-MM-DD")
    schema_error: str | None = Field(default=None, description="why it fails its XSD")
    role: str | None = Field(default=None, description="the company's: buyer, seller or null")
    checks: list[str] = Field(default_factory=list, description="what filing found")


class Document(BaseModel):
    id: int
    company: str
    folder: str
    filename: str
    media_type: str
    size: int
    sha256: str
    source: str = Field(description="smtp, imap or upload")
    source_mailbox: str | None
    origin: str
    placed_at: Moment
    message_id: str | None = Field(description="Message-ID of the mail it came in")
    queue_id: str | None
    invoice: Invoice | None = Field(default=None, description="when it is an e-invoice")


class Page(BaseModel):
    items: list[Document]
    next_cursor: str | None = Field(description="give it as `after` for the next page; null: last")


class Delivery(BaseModel):
    id: int
    partner: str
    status: str
    attempts: int
    reason: str | None
    created_at: Moment
    sent_at: Moment | None


class Duplicate(BaseModel):
    queue_id: str
    filename: str
    seen_at: Moment
    reason: str | None = Field(description="null: the same bytes; else e.g. the same invoice")


class DocumentDetail(Document):
    deliveries: list[Delivery]
    duplicates: list[Duplicate] = Field(description="later arrivals of the same document")


class Skipped(BaseModel):
    id: int
    reason: str = Field(description="the partner's rule it breaks (R14), or why it is withdrawn")


class Placed(Document):
    deliveries: list[int] = Field(description="deliveries this placement queued (R11)")
    skipped: list[Skipped] = Field(description="deliveries it made but will not send, and why")


class Move(Strict):
    folder: str = Field(min_length=1, max_length=500, examples=["Achats/2026-11"])


class Folder(BaseModel):
    path: str
    documents: int = Field(description="in this folder itself, not its sub-folders")


@router.get("/documents", tags=["documents"], responses=refusals(404, 422))
def documents(
    who: Reader,
    gw: Gw,
    company: str | None = None,
    folder: Annotated[str | None, Query(description="this folder and its sub-folders")] = None,
    media_type: str | None = None,
    source: str | None = None,
    placed_after: datetime | None = None,
    placed_before: datetime | None = None,
    filename_contains: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: Annotated[str | None, Query(description="the previous page's next_cursor")] = None,
) -> Page:
    """Documents oldest first, a page at a time."""
    page = list_documents_page(
        gw.db,
        who.tenant,
        company=company,
        folder=folder,
        media_type=media_type,
        source=source,
        placed_after=placed_after,
        placed_before=placed_before,
        filename_contains=filename_contains,
        limit=limit,
        after=after,
    )
    return Page(
        items=[Document.model_validate(r, from_attributes=True) for r in page.items],
        next_cursor=page.next_cursor,
    )


@router.post("/documents", status_code=201, tags=["documents"], responses=refusals(404, 409, 422))
def upload(
    who: Writer,
    gw: Gw,
    company: Annotated[str, Form(min_length=1, max_length=63)],
    folder: Annotated[str, Form(min_length=1, max_length=500)],
    file: Annotated[UploadFile, File(description="the document's bytes and its name")],
) -> Placed:
    """Place a file in a company's folder (an upload is a placement, R11)."""
    document, placed = add_document(
        gw.db,
        gw.grammar,
        gw.blobs,
        company,
        folder,
        file.file,
        gw.clock.now(),
        filename=file.filename or "document",
        tenant=who.tenant,
    )
    return _placed(gw, who, document.id, placed)


@router.get("/documents/{document_id}", tags=["documents"], responses=refusals(404))
def document(document_id: Id, who: Reader, gw: Gw) -> DocumentDetail:
    detail = document_detail(gw.db, document_id, who.tenant)
    return DocumentDetail(
        **Document.model_validate(detail.document, from_attributes=True).model_dump(),
        deliveries=[Delivery.model_validate(d, from_attributes=True) for d in detail.deliveries],
        duplicates=[Duplicate.model_validate(d, from_attributes=True) for d in detail.duplicates],
    )


@router.get(
    "/documents/{document_id}/content",
    tags=["documents"],
    # Its own media type, whatever the document is.
    responses={**refusals(404), 200: {"content": {"*/*": {"schema": {"type": "string"}}}}},
    response_class=StreamingResponse,
)
def content(document_id: Id, who: Reader, gw: Gw) -> StreamingResponse:
    """The document's bytes, streamed from the blob store, with its name and media type."""
    row, chunks = document_content(gw.db, gw.blobs, document_id, who.tenant)
    # As Starlette's FileResponse names a file (RFC 6266; RFC 5987 beyond ASCII).
    quoted = quote(row.filename)
    disposition = (
        f'attachment; filename="{row.filename}"'
        if quoted == row.filename
        else f"attachment; filename*=utf-8''{quoted}"
    )
    return StreamingResponse(
        chunks,
        media_type=row.media_type,
        headers={"content-disposition": disposition, "content-length": str(row.size)},
    )


@router.post("/documents/{document_id}/move", tags=["documents"], responses=refusals(404, 422))
def move(document_id: Id, body: Move, who: Writer, gw: Gw) -> Placed:
    """Move to another folder of its company (into a switched folder: a placement)."""
    _, placed = move_document(
        gw.db, gw.grammar, document_id, body.folder, gw.clock.now(), tenant=who.tenant
    )
    return _placed(gw, who, document_id, placed)


@router.get("/companies/{slug}/folders", tags=["documents"], responses=refusals(404))
def folders(slug: str, who: Reader, gw: Gw) -> list[Folder]:
    """The company's folder tree, with each folder's own document count."""
    return [
        Folder.model_validate(f, from_attributes=True) for f in folder_tree(gw.db, slug, who.tenant)
    ]


def _placed(gw: Gateway, who: Caller, document_id: int, placed: Placement) -> Placed:
    row = document_detail(gw.db, document_id, who.tenant).document
    return Placed(
        **Document.model_validate(row, from_attributes=True).model_dump(),
        deliveries=placed.queued,
        skipped=[Skipped(id=i, reason=r) for i, r in placed.skipped],
    )

"""Connections, switches and hand-placed documents: what a cabinet does for outbound.

Every change that places a document goes through `record_placement` (R11).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, cast

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gateway.mail.names import sanitize_filename
from gateway.mail.sniff import sniff_media_type
from gateway.routing.addresses import AddressGrammar
from gateway.routing.connections import ConnectionAddressError, parse_connection_address
from gateway.storage import events
from gateway.storage.accounts import AccountError, Conflict, NotFound, company_id_of
from gateway.storage.blobs import BlobStore
from gateway.storage.db import Database
from gateway.storage.folders import FolderPathError, ensure_folder, normalise_path
from gateway.storage.models import Company, Connection, Document, Folder, Switch
from gateway.storage.placement import record_placement
from gateway.storage.tenancy import ALL, Tenant


def add_connection(
    db: Database, grammar: AddressGrammar, company: str, partner: str, address: str, now: datetime
) -> Connection:
    try:
        target = parse_connection_address(address, partner, grammar)
    except ConnectionAddressError as exc:
        raise AccountError(str(exc)) from exc
    try:
        with db.write() as s:
            connection = Connection(
                company_id=company_id_of(s, company),
                partner=target.partner,
                entered_address=target.entered,
                destination=target.destination,
                sender=target.sender,
                created_at=now,
            )
            s.add(connection)
    except IntegrityError as exc:
        raise AccountError(f"{company} is already connected to {partner}") from exc
    return connection


def set_switch(
    db: Database, company: str, folder: str, partner: str, on: bool, now: datetime
) -> Switch:
    """Turn a connection on or off for a folder (and its sub-folders, R9). Turning it on
    again starts a new activation: R10 counts from the latest `turned_on_at`."""
    path = normalise_path(folder)
    with db.write() as s:
        company_id = company_id_of(s, company)
        connection = s.execute(
            select(Connection).where(
                Connection.company_id == company_id, Connection.partner == partner.lower()
            )
        ).scalar_one_or_none()
        if connection is None:
            raise AccountError(
                f"{company} has no connection to {partner}; add one with "
                f"`gateway connection add --company {company} --partner {partner} --address …`"
            )
        folder_id = ensure_folder(s, company_id, path, now)
        switch = s.execute(
            select(Switch).where(
                Switch.connection_id == connection.id, Switch.folder_id == folder_id
            )
        ).scalar_one_or_none()
        if switch is None:
            switch = Switch(
                connection_id=connection.id,
                folder_id=folder_id,
                is_on=False,
                turned_on_at=None,
                turned_off_at=None,
            )
            s.add(switch)
        if on and not switch.is_on:
            switch.is_on, switch.turned_on_at = True, now
        elif not on and switch.is_on:
            switch.is_on, switch.turned_off_at = False, now
    return switch


def add_document(
    db: Database,
    grammar: AddressGrammar,
    blobs: BlobStore,
    company: str,
    folder: str,
    file: Path | BinaryIO | Iterable[bytes],
    now: datetime,
    *,
    filename: str | None = None,
    tenant: Tenant = ALL,
) -> tuple[Document, list[int]]:
    """Upload a file by hand (R11: an upload is a placement like any other). `file` is a
    path, an open binary file or chunks of bytes (an HTTP upload), stored a chunk at a time;
    `filename` names it (default: the path's name)."""
    name = filename if filename is not None else file.name if isinstance(file, Path) else None
    if not name:
        raise AccountError("the file needs a name", field="filename")
    path = document_folder(folder)
    with db.read() as s:
        company_id_of(s, company, tenant)  # before storing anything
    if isinstance(file, Path) or hasattr(file, "read"):
        stored = blobs.put_file(cast(Path | BinaryIO, file))
    else:  # checked second: an open file is iterable too, by lines
        stored = blobs.put_stream(file)
    media_type = sniff_media_type(stored.head, mimetypes.guess_type(name)[0], name)
    with db.write() as s:
        company_id = company_id_of(s, company, tenant)
        existing = s.execute(
            select(Document.id).where(
                Document.company_id == company_id, Document.sha256 == stored.sha256
            )
        ).scalar_one_or_none()
        if existing is not None:
            raise Conflict(
                f"{name}: {company} already has this file (document #{existing})", field="file"
            )
        document = Document(
            company_id=company_id,
            folder_id=ensure_folder(s, company_id, path, now),
            filename=sanitize_filename(name, "document"),
            media_type=media_type,
            size=stored.size,
            sha256=stored.sha256,
            source="upload",
            source_mailbox=None,
            origin="upload",
            placed_at=now,
            inbound_message_id=None,
        )
        s.add(document)
        s.flush()
        cabinet_id = s.execute(
            select(Company.cabinet_id).where(Company.id == company_id)
        ).scalar_one()
        events.document_filed(s, document, path, cabinet_id, now)
        deliveries = record_placement(s, document, path, grammar.partners, now)
    return document, deliveries


def move_document(
    db: Database,
    grammar: AddressGrammar,
    document_id: int,
    folder: str,
    now: datetime,
    *,
    tenant: Tenant = ALL,
) -> tuple[Document, list[int]]:
    """Move a document; a move into a switched folder counts as a placement (R11)."""
    path = document_folder(folder)
    with db.write() as s:
        document = s.execute(
            tenant.companies(
                select(Document)
                .join(Company, Document.company_id == Company.id)
                .where(Document.id == document_id)
            )
        ).scalar_one_or_none()
        if document is None:
            raise NotFound(
                f"no document #{document_id} (see `gateway documents list`)", field="document"
            )
        current = s.execute(select(Folder.path).where(Folder.id == document.folder_id)).scalar_one()
        if current == path:
            return document, []
        document.folder_id = ensure_folder(s, document.company_id, path, now)
        document.placed_at = now
        s.flush()
        deliveries = record_placement(s, document, path, grammar.partners, now)
    return document, deliveries


def document_folder(folder: str) -> str:
    """A folder path as given for a document, normalised; a bad one names the field."""
    try:
        return normalise_path(folder)
    except FolderPathError as exc:
        raise AccountError(str(exc), field="folder") from exc

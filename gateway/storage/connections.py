"""Connections, switches and hand-placed documents: what a cabinet does for outbound.

Every change that places a document goes through `record_placement` (R11).
"""

from __future__ import annotations

import mimetypes
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gateway.mail.names import sanitize_filename
from gateway.mail.sniff import sniff_media_type
from gateway.routing.addresses import AddressGrammar
from gateway.routing.connections import ConnectionAddressError, parse_connection_address
from gateway.storage import events
from gateway.storage.accounts import AccountError, company_id_of
from gateway.storage.blobs import BlobStore
from gateway.storage.db import Database
from gateway.storage.folders import ensure_folder, normalise_path
from gateway.storage.models import Company, Connection, Document, Folder, Switch
from gateway.storage.placement import record_placement


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
    file: Path,
    now: datetime,
) -> tuple[Document, list[int]]:
    """Upload a file by hand (R11: an upload is a placement like any other)."""
    content = file.read_bytes()
    declared = mimetypes.guess_type(file.name)[0]
    media_type = sniff_media_type(content, declared, file.name)
    filename = sanitize_filename(file.name, "document")
    sha = blobs.put(content)
    path = normalise_path(folder)
    with db.write() as s:
        company_id = company_id_of(s, company)
        existing = s.execute(
            select(Document.id).where(Document.company_id == company_id, Document.sha256 == sha)
        ).scalar_one_or_none()
        if existing is not None:
            raise AccountError(
                f"{file.name}: {company} already has this file (document #{existing})"
            )
        document = Document(
            company_id=company_id,
            folder_id=ensure_folder(s, company_id, path, now),
            filename=filename,
            media_type=media_type,
            size=len(content),
            sha256=sha,
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
    db: Database, grammar: AddressGrammar, document_id: int, folder: str, now: datetime
) -> tuple[Document, list[int]]:
    """Move a document; a move into a switched folder counts as a placement (R11)."""
    path = normalise_path(folder)
    with db.write() as s:
        document = s.get(Document, document_id)
        if document is None:
            raise AccountError(f"no document #{document_id} (see `gateway documents list`)")
        current = s.execute(select(Folder.path).where(Folder.id == document.folder_id)).scalar_one()
        if current == path:
            return document, []
        document.folder_id = ensure_folder(s, document.company_id, path, now)
        document.placed_at = now
        s.flush()
        deliveries = record_placement(s, document, path, grammar.partners, now)
    return document, deliveries

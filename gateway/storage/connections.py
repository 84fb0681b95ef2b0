"""Connections, switches and hand-placed documents: what a cabinet does for outbound.

The CLI and the HTTP API call these same functions. Every change that places a document goes
through `record_placement` (R11).

Deleting a connection keeps its row (`deleted_at`: the ledger still says what was sent to
it, R13), removes its switches, and skips its waiting deliveries with the reason "the
connection was deleted before the run"; a delivery being sent at that moment is caught by
the sender's own check. Adding the partner again brings the row back with the new address
and no switch: the firm switches folders on again, and R10 counts from then.
"""

from __future__ import annotations

import difflib
import mimetypes
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, cast

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from gateway.mail.names import sanitize_filename
from gateway.mail.sniff import sniff_media_type
from gateway.routing.addresses import AddressGrammar
from gateway.routing.connections import (
    ConnectionAddressError,
    ConnectionTarget,
    parse_connection_address,
)
from gateway.storage import events
from gateway.storage.accounts import AccountError, Conflict, NotFound, company_id_of
from gateway.storage.blobs import BlobStore
from gateway.storage.db import Database
from gateway.storage.folders import ensure_folder, normalise_path
from gateway.storage.listings.outbound import SwitchRow
from gateway.storage.models import (
    Company,
    Connection,
    Delivery,
    DeliveryStatus,
    Document,
    Folder,
    Switch,
)
from gateway.storage.placement import Placement, record_placement, withdraw_waiting
from gateway.storage.tenancy import ALL, Tenant

WAITING = (DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED)


def _target(grammar: AddressGrammar, partner: str, address: str) -> ConnectionTarget:
    """The parsed address, or AccountError naming the field to correct (`partner` when the
    partner is unknown, else `address`, with an example of a right one)."""
    field = "address" if grammar.partners.get(partner.strip()) else "partner"
    try:
        return parse_connection_address(address, partner, grammar)
    except ConnectionAddressError as exc:
        raise AccountError(str(exc), field=field) from exc


def _connection(
    s: Session, company: str, partner: str, tenant: Tenant, *, deleted: bool = False
) -> Connection | None:
    """The company's connection to `partner` (with `deleted`, also a deleted one)."""
    company_id = company_id_of(s, company, tenant)
    query = select(Connection).where(
        Connection.company_id == company_id, Connection.partner == partner.strip().lower()
    )
    if not deleted:
        query = query.where(Connection.deleted_at.is_(None))
    return s.execute(query).scalar_one_or_none()


def _existing(s: Session, company: str, partner: str, tenant: Tenant) -> Connection:
    connection = _connection(s, company, partner, tenant)
    if connection is None:
        raise NotFound(
            f"{company} has no connection to {partner}; add one with "
            f"`gateway connection add --company {company} --partner {partner} --address …`",
            field="partner",
        )
    return connection


def _set_target(connection: Connection, target: ConnectionTarget) -> None:
    connection.entered_address = target.entered
    connection.destination = target.destination
    connection.sender = target.sender


def add_connection(
    db: Database,
    grammar: AddressGrammar,
    company: str,
    partner: str,
    address: str,
    now: datetime,
    tenant: Tenant = ALL,
) -> Connection:
    """Connect a company to a partner with the address the cabinet entered (checked)."""
    target = _target(grammar, partner, address)
    with db.write() as s:
        connection = _connection(s, company, target.partner, tenant, deleted=True)
        if connection is not None and connection.deleted_at is None:
            raise Conflict(
                f"{company} is already connected to {target.partner}; correct its address "
                f"with `gateway connection update --company {company} --partner "
                f"{target.partner} --address …`",
                field="partner",
            )
        if connection is None:
            connection = Connection(
                company_id=company_id_of(s, company, tenant),
                partner=target.partner,
                created_at=now,
            )
            s.add(connection)
        connection.deleted_at, connection.created_at = None, now
        _set_target(connection, target)
    return connection


def get_connection(db: Database, company: str, partner: str, tenant: Tenant = ALL) -> Connection:
    with db.read() as s:
        return _existing(s, company, partner, tenant)


def update_connection(
    db: Database,
    grammar: AddressGrammar,
    company: str,
    partner: str,
    address: str,
    tenant: Tenant = ALL,
) -> Connection:
    """Correct the address entered for a connection (a typo in an alias): parsed and checked
    again; waiting deliveries go to the new destination (the sender reads it when sending)."""
    with db.write() as s:
        connection = _existing(s, company, partner, tenant)
        _set_target(connection, _target(grammar, connection.partner, address))
    return connection


def delete_connection(
    db: Database,
    grammar: AddressGrammar,
    company: str,
    partner: str,
    now: datetime,
    tenant: Tenant = ALL,
) -> list[int]:
    """Delete a connection (see the module's docstring); returns the deliveries skipped."""
    with db.write() as s:
        connection = _existing(s, company, partner, tenant)
        connection.deleted_at = now
        s.execute(delete(Switch).where(Switch.connection_id == connection.id))
        s.flush()
        waiting = s.execute(
            select(Delivery.id).where(
                Delivery.connection_id == connection.id, Delivery.status.in_(WAITING)
            )
        ).scalars()
        return sorted(withdraw_waiting(s, list(waiting), grammar.partners, now))


def _folder_id(s: Session, company_id: int, path: str, create: bool, now: datetime) -> int:
    """The folder at `path`; an unknown one is created only when asked (a typo must not
    make a folder), else refused with the closest existing names."""
    if create:
        return ensure_folder(s, company_id, path, now)
    query = select(Folder.path, Folder.id).where(Folder.company_id == company_id)
    paths: dict[str, int] = {p: i for p, i in s.execute(query)}
    if path in paths:
        return paths[path]
    close = difflib.get_close_matches(path, list(paths), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(p) for p in close)}?" if close else ""
    raise AccountError(
        f"no folder {path!r}{hint} (to create it, ask for it: `--create-folder`)",
        field="folder",
    )


def set_switch(
    db: Database,
    company: str,
    folder: str,
    partner: str,
    on: bool,
    now: datetime,
    *,
    create_folder: bool = False,
    tenant: Tenant = ALL,
) -> SwitchRow:
    """Turn a connection on or off for a folder (and its sub-folders, R9). Turning it on
    again starts a new activation: R10 counts from the latest `turned_on_at`."""
    path = normalise_path(folder)
    with db.write() as s:
        connection = _existing(s, company, partner, tenant)
        folder_id = _folder_id(s, connection.company_id, path, create_folder and on, now)
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
        return SwitchRow(
            company=company,
            partner=connection.partner,
            folder=path,
            on=switch.is_on,
            turned_on_at=switch.turned_on_at,
            turned_off_at=switch.turned_off_at,
        )


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
) -> tuple[Document, Placement]:
    """Upload a file by hand (R11: an upload is a placement like any other). `file` is a
    path, an open binary file or chunks of bytes (an HTTP upload), stored a chunk at a time;
    `filename` names it (default: the path's name)."""
    name = filename if filename is not None else file.name if isinstance(file, Path) else None
    if not name:
        raise AccountError("the file needs a name", field="filename")
    path = normalise_path(folder)
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
) -> tuple[Document, Placement]:
    """Move a document; a move into a switched folder counts as a placement (R11), and its
    waiting deliveries to partners whose switch no longer covers it are skipped: the firm is
    correcting a misfiling before the partner's run."""
    path = normalise_path(folder)
    with db.write() as s:
        found = s.execute(
            tenant.companies(
                select(Document, Folder.path)
                .join(Company, Document.company_id == Company.id)
                .join(Folder, Document.folder_id == Folder.id)
                .where(Document.id == document_id)
            )
        ).one_or_none()
        if found is None:
            raise NotFound(
                f"no document #{document_id} (see `gateway documents list`)", field="document"
            )
        document, current = found
        if current == path:
            return document, Placement()
        document.folder_id = ensure_folder(s, document.company_id, path, now)
        document.placed_at = now
        s.flush()
        waiting = s.execute(
            select(Delivery.id).where(
                Delivery.document_id == document.id, Delivery.status.in_(WAITING)
            )
        ).scalars()
        withdraw_waiting(s, list(waiting), grammar.partners, now)
        placed = record_placement(s, document, path, grammar.partners, now)
    return document, placed

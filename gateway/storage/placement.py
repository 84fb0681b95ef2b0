"""Placing a document in a folder: the one way a document enters or moves in the GED.

Whoever places a document (the filing stage, `documents add`, `documents move`) does it
here, so that the outbound rules hold whatever the modality (R11): in the same transaction,
one delivery is created for every connection whose switch covers the folder (R9: the
switched folder or any folder below it) and was turned on before the placement (R10).
Deliveries are due at the partner's next run (R12); a document that breaks the partner's
limits gets its delivery `skipped` with the reason at once (R14).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.clock import as_utc
from gateway.routing.partners import PartnerRegistry
from gateway.storage.models import Connection, DeliveryStatus, Document, Folder, Switch
from gateway.storage.queues import deliveries


def covering_switches(
    session: Session, company_id: int, folder_path: str, placed_at: datetime
) -> list[Connection]:
    """Connections switched on, before `placed_at`, for this folder or one above it."""
    rows = session.execute(
        select(Connection, Folder.path, Switch.turned_on_at)
        .join(Switch, Switch.connection_id == Connection.id)
        .join(Folder, Switch.folder_id == Folder.id)
        .where(Connection.company_id == company_id, Switch.is_on.is_(True))
    )
    found: dict[int, Connection] = {}
    for connection, switch_path, turned_on_at in rows:
        covers = folder_path == switch_path or folder_path.startswith(switch_path + "/")
        if covers and turned_on_at is not None and as_utc(turned_on_at) <= as_utc(placed_at):
            found[connection.id] = connection
    return list(found.values())


def record_placement(
    session: Session,
    document: Document,
    folder_path: str,
    registry: PartnerRegistry,
    now: datetime,
) -> list[int]:
    """Create the deliveries this placement calls for; returns their ids (new ones only)."""
    created: list[int] = []
    for connection in covering_switches(
        session, document.company_id, folder_path, document.placed_at
    ):
        partner = registry.get(connection.partner)
        if partner is None:
            problem: str | None = f"partner {connection.partner!r} is not in the registry"
            due = now
        else:
            problem = partner.limit_problem(document.size, document.media_type)
            due = partner.next_run(now)
        status = DeliveryStatus.SKIPPED if problem else DeliveryStatus.QUEUED
        delivery_id = deliveries.create(
            session,
            document.id,
            connection.id,
            status,
            due,
            problem,
            problem or f"placed in {folder_path}; due at the next run",
            now,
        )
        if delivery_id is None:  # already delivered or waiting: one delivery per pair
            continue
        created.append(delivery_id)
    return created

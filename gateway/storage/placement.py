"""Placing a document in a folder: the one way a document enters or moves in the GED.

Whoever places a document (the filing stage, `documents add`, `documents move`) does it
here, so that the outbound rules hold whatever the modality (R11): in the same transaction,
one delivery is created for every connection whose switch covers the folder (R9: the
switched folder or any folder below it) and was turned on before the placement (R10).
Deliveries are due at the partner's next run (R12); a document that breaks the partner's
limits gets its delivery `skipped` with the reason at once (R14).

`send_problems` is the same question asked again later, of deliveries already made: at a
move, at `deliveries retry` and by the sender just before sending. A delivery is sent only
while its document still keeps the partner's limits (R14) and still sits in a folder its
connection is switched on for (the firm correcting a misfiling before the partner's run).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.clock import as_utc
from gateway.routing.partners import PartnerRegistry
from gateway.storage.models import Connection, Delivery, DeliveryStatus, Document, Folder, Switch
from gateway.storage.queues import deliveries

MOVED_OUT = "moved out of the switched folder before the run"
SWITCHED_OFF = "switched off before the run"
CONNECTION_DELETED = "the connection was deleted before the run"


@dataclass(frozen=True)
class Placement:
    """The deliveries a placement made: queued ones, and skipped ones with their reason."""

    queued: list[int] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return self.queued + [d for d, _ in self.skipped]

    def summary(self) -> str:
        """For a person: "2 delivery(ies) queued; 1 skipped (MEG Achats does not take …)"."""
        parts = [f"{len(self.queued)} delivery(ies) queued"] if self.queued else []
        if self.skipped:
            reasons = "; ".join(sorted({reason for _, reason in self.skipped}))
            parts.append(f"{len(self.skipped)} delivery(ies) skipped ({reasons})")
        return "; ".join(parts)


def covers(switch_path: str, folder_path: str) -> bool:
    """R9: a switch covers its folder and every folder below it."""
    return folder_path == switch_path or folder_path.startswith(switch_path + "/")


def covering_switches(
    session: Session, company_id: int, folder_path: str, placed_at: datetime
) -> list[Connection]:
    """Connections switched on, before `placed_at`, for this folder or one above it."""
    switched = switches_of(session, [company_id]).get(company_id, [])
    return covering(switched, folder_path, placed_at)


def switches_of(
    session: Session, company_ids: Iterable[int]
) -> dict[int, list[tuple[Connection, str, datetime | None]]]:
    """Each company's switches turned on, (connection, folder path, turned on at), read in
    one query: a batch that places many documents asks `covering` of them in memory."""
    rows = session.execute(
        select(Connection, Folder.path, Switch.turned_on_at)
        .join(Switch, Switch.connection_id == Connection.id)
        .join(Folder, Switch.folder_id == Folder.id)
        .where(
            Connection.company_id.in_(list(company_ids)),
            Connection.deleted_at.is_(None),
            Switch.is_on.is_(True),
        )
    )
    found: dict[int, list[tuple[Connection, str, datetime | None]]] = {}
    for connection, switch_path, turned_on_at in rows:
        found.setdefault(connection.company_id, []).append((connection, switch_path, turned_on_at))
    return found


def covering(
    switched: Iterable[tuple[Connection, str, datetime | None]],
    folder_path: str,
    placed_at: datetime,
) -> list[Connection]:
    """Of a company's `switches_of`, the connections covering `folder_path` (R9), switched
    on before `placed_at` (R10)."""
    found: dict[int, Connection] = {}
    for connection, switch_path, turned_on_at in switched:
        on_before = turned_on_at is not None and as_utc(turned_on_at) <= as_utc(placed_at)
        if covers(switch_path, folder_path) and on_before:
            found[connection.id] = connection
    return list(found.values())


def record_placement(
    session: Session,
    document: Document,
    folder_path: str,
    registry: PartnerRegistry,
    now: datetime,
) -> Placement:
    """Create the deliveries this placement calls for (new ones only)."""
    connections = covering_switches(session, document.company_id, folder_path, document.placed_at)
    return create_deliveries(
        session,
        document.id,
        document.size,
        document.media_type,
        connections,
        folder_path,
        registry,
        now,
    )


def create_deliveries(
    session: Session,
    document_id: int,
    size: int,
    media_type: str,
    connections: Iterable[Connection],
    folder_path: str,
    registry: PartnerRegistry,
    now: datetime,
) -> Placement:
    """`record_placement` once the covering `connections` are known."""
    placed = Placement()
    for connection in connections:
        partner = registry.get(connection.partner)
        if partner is None:
            problem: str | None = f"partner {connection.partner!r} is not in the registry"
            due = now
        else:
            problem = partner.limit_problem(size, media_type)
            due = partner.next_run(now)
        status = DeliveryStatus.SKIPPED if problem else DeliveryStatus.QUEUED
        delivery_id = deliveries.create(
            session,
            document_id,
            connection.id,
            status,
            due,
            problem,
            problem or f"placed in {folder_path}; due at the next run",
            now,
        )
        if delivery_id is None:  # already delivered or waiting: one delivery per pair
            continue
        if problem:
            placed.skipped.append((delivery_id, problem))
        else:
            placed.queued.append(delivery_id)
    return placed


def send_problems(
    session: Session, delivery_ids: Iterable[int], registry: PartnerRegistry
) -> dict[int, str]:
    """Why each of these deliveries may not be sent now (R14, R9), for those that may not."""
    ids = list(delivery_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(Delivery.id, Connection, Document, Folder.path)
        .join(Connection, Delivery.connection_id == Connection.id)
        .join(Document, Delivery.document_id == Document.id)
        .join(Folder, Document.folder_id == Folder.id)
        .where(Delivery.id.in_(ids))
    ).all()
    connection_ids = {c.id for _, c, _, _ in rows}
    switches: dict[int, list[tuple[str, bool]]] = {}
    for connection_id, path, is_on in session.execute(
        select(Switch.connection_id, Folder.path, Switch.is_on)
        .join(Folder, Switch.folder_id == Folder.id)
        .where(Switch.connection_id.in_(connection_ids))
    ):
        switches.setdefault(connection_id, []).append((path, is_on))
    problems: dict[int, str] = {}
    for delivery_id, connection, document, folder_path in rows:
        partner = registry.get(connection.partner)
        covering = [on for path, on in switches.get(connection.id, []) if covers(path, folder_path)]
        if connection.deleted_at is not None:
            problems[delivery_id] = CONNECTION_DELETED
        elif partner is None:
            problems[delivery_id] = f"partner {connection.partner!r} is not in the registry"
        elif problem := partner.limit_problem(document.size, document.media_type):
            problems[delivery_id] = problem
        elif not covering:
            problems[delivery_id] = f"{MOVED_OUT} (now in {folder_path})"
        elif not any(covering):
            problems[delivery_id] = f"{partner.display_name} {SWITCHED_OFF}"
    return problems


def withdraw_waiting(
    session: Session, delivery_ids: Iterable[int], registry: PartnerRegistry, now: datetime
) -> dict[int, str]:
    """Skip, with the reason, the deliveries among these that wait (queued or deferred) and
    may no longer be sent; returns those skipped. Rows that are not waiting are left."""
    waiting = session.execute(
        select(Delivery.id, Delivery.status).where(
            Delivery.id.in_(list(delivery_ids)),
            Delivery.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED]),
        )
    ).all()
    problems = send_problems(session, [d for d, _ in waiting], registry)
    for status in (DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED):
        moves = [
            deliveries.Move(d, DeliveryStatus.SKIPPED, problems[d], {"reason": problems[d]})
            for d, s in waiting
            if s == status and d in problems
        ]
        if moves:
            deliveries.transition_many(session, status, moves, now)
    return problems

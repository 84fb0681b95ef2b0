"""What goes out to the partner tools: connections (the connection form, with its edit
pencil: a typo in an alias is corrected, never saved wrong), switches (the partner switch on
a folder's toolbar, with the time it was turned on, R9/R10), the delivery ledger with its
events and retries (R12–R17), and the events the platform polls (`/events?after=`). The
same service functions as `gateway connection`, `gateway switch` and `gateway deliveries`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from gateway.http.api.access import Gw, Reader, Writer
from gateway.http.api.schemas import Id, Moment, Strict, refusals
from gateway.storage.accounts import NotFound
from gateway.storage.connections import (
    add_connection,
    delete_connection,
    set_switch,
    update_connection,
)
from gateway.storage.events import TYPES, events_after
from gateway.storage.ledger import delivery_events, retry_delivery
from gateway.storage.listings.outbound import list_connections, list_deliveries, list_switches
from gateway.storage.models import DeliveryStatus

router = APIRouter()


class Connection(BaseModel):
    id: int
    company: str
    partner: str
    entered: str = Field(description="the address as the cabinet typed it")
    destination: str
    sender: str | None = Field(description="null: the gateway's own sender")
    created_at: Moment


class NewConnection(Strict):
    company: str = Field(min_length=1, max_length=63, examples=["dupont-maconnerie"])
    partner: str = Field(min_length=1, max_length=63, examples=["meg"])
    address: str = Field(
        min_length=1, max_length=320, description="what the partner's settings say to enter"
    )


class ConnectionChange(Strict):
    address: str = Field(min_length=1, max_length=320)


class Deleted(BaseModel):
    company: str
    partner: str
    skipped: list[int] = Field(description="waiting deliveries it will not send")


class Switch(BaseModel):
    company: str
    partner: str
    folder: str
    on: bool
    turned_on_at: Moment | None = Field(description="R10: only documents placed after it go")
    turned_off_at: Moment | None


class SwitchChange(Strict):
    partner: str = Field(min_length=1, max_length=63)
    folder: str = Field(min_length=1, max_length=500, examples=["Achats"])
    on: bool
    create_folder: bool = Field(
        default=False, description="create the folder if it does not exist (else 422)"
    )


class Delivery(BaseModel):
    id: int
    company: str
    partner: str
    document_id: int
    filename: str
    destination: str
    status: str
    due_at: Moment
    attempts: int
    reason: str | None
    sent_at: Moment | None


class DeliveryEvent(BaseModel):
    at: Moment
    from_status: str | None
    to_status: str
    detail: str | None


class Ledger(Delivery):
    events: list[DeliveryEvent]


class Event(BaseModel):
    id: int
    type: str
    cabinet_id: int | None
    company_id: int | None
    subject: int = Field(description="the document, delivery, bot mail or message it is about")
    created_at: Moment
    data: dict[str, Any]


class Events(BaseModel):
    items: list[Event]
    next_after: int = Field(description="give it as `after` to read what follows")


def _connection(gw: Gw, who: Reader, company: str, partner: str) -> Connection:
    for row in list_connections(gw.db, who.tenant):
        if row.company == company and row.partner == partner.strip().lower():
            return Connection.model_validate(row, from_attributes=True)
    raise NotFound(f"{company} has no connection to {partner}", field="partner")


@router.get("/connections", tags=["connections"], responses=refusals())
def connections(who: Reader, gw: Gw, company: str | None = None) -> list[Connection]:
    rows = list_connections(gw.db, who.tenant)
    return [
        Connection.model_validate(r, from_attributes=True)
        for r in rows
        if company is None or r.company == company
    ]


@router.post(
    "/connections", status_code=201, tags=["connections"], responses=refusals(404, 409, 422)
)
def create_connection(body: NewConnection, who: Writer, gw: Gw) -> Connection:
    """Connect a company to a partner; a wrong address is 422 saying what a right one is."""
    c = add_connection(
        gw.db, gw.grammar, body.company, body.partner, body.address, gw.clock.now(), who.tenant
    )
    return _connection(gw, who, body.company, c.partner)


@router.get(
    "/companies/{company}/connections/{partner}", tags=["connections"], responses=refusals(404)
)
def connection(company: str, partner: str, who: Reader, gw: Gw) -> Connection:
    return _connection(gw, who, company, partner)


@router.put(
    "/companies/{company}/connections/{partner}",
    tags=["connections"],
    responses=refusals(404, 422),
)
def change_connection(
    company: str, partner: str, body: ConnectionChange, who: Writer, gw: Gw
) -> Connection:
    """Correct the address (the edit pencil); waiting deliveries go to the new one."""
    update_connection(gw.db, gw.grammar, company, partner, body.address, who.tenant)
    return _connection(gw, who, company, partner)


@router.delete(
    "/companies/{company}/connections/{partner}", tags=["connections"], responses=refusals(404)
)
def remove_connection(company: str, partner: str, who: Writer, gw: Gw) -> Deleted:
    """Its switches go, its waiting deliveries are skipped; the ledger keeps what was sent."""
    skipped = delete_connection(gw.db, gw.grammar, company, partner, gw.clock.now(), who.tenant)
    return Deleted(company=company, partner=partner.strip().lower(), skipped=skipped)


@router.get("/switches", tags=["switches"], responses=refusals())
def switches(who: Reader, gw: Gw, company: str | None = None) -> list[Switch]:
    rows = list_switches(gw.db, who.tenant)
    return [
        Switch.model_validate(r, from_attributes=True)
        for r in rows
        if company is None or r.company == company
    ]


@router.put("/companies/{company}/switches", tags=["switches"], responses=refusals(404, 422))
def switch(company: str, body: SwitchChange, who: Writer, gw: Gw) -> Switch:
    """Turn a partner on or off for a folder and its sub-folders (R9); documents already
    there are not sent (R10)."""
    row = set_switch(
        gw.db,
        company,
        body.folder,
        body.partner,
        body.on,
        gw.clock.now(),
        create_folder=body.create_folder,
        tenant=who.tenant,
    )
    return Switch.model_validate(row, from_attributes=True)


@router.get("/deliveries", tags=["deliveries"], responses=refusals())
def deliveries(
    who: Reader, gw: Gw, company: str | None = None, status: DeliveryStatus | None = None
) -> list[Delivery]:
    """The ledger, oldest first."""
    rows = list_deliveries(gw.db, company, status.value if status else None, who.tenant)
    return [Delivery.model_validate(r, from_attributes=True) for r in rows]


@router.get("/deliveries/{delivery_id}", tags=["deliveries"], responses=refusals(404))
def delivery(delivery_id: Id, who: Reader, gw: Gw) -> Ledger:
    """One delivery with every step it went through."""
    ledger = delivery_events(gw.db, delivery_id, who.tenant)
    return Ledger(
        **Delivery.model_validate(ledger.delivery, from_attributes=True).model_dump(),
        events=[DeliveryEvent.model_validate(e, from_attributes=True) for e in ledger.events],
    )


@router.post("/deliveries/{delivery_id}/retry", tags=["deliveries"], responses=refusals(404, 409))
def retry(delivery_id: Id, who: Writer, gw: Gw) -> Delivery:
    """Queued again, if the partner's rules still allow it (R14, else 409 saying which)."""
    row = retry_delivery(gw.db, gw.registry, delivery_id, gw.clock.now(), who.tenant)
    return Delivery.model_validate(row, from_attributes=True)


@router.get("/events", tags=["events"], responses=refusals(422))
def events(
    who: Reader,
    gw: Gw,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    types: Annotated[list[str] | None, Query(description=f"any of {', '.join(TYPES)}")] = None,
) -> Events:
    """What happened after event `after`, oldest first: poll with the last `next_after`."""
    rows = events_after(gw.db, after, limit, who.tenant, types)
    items = [Event.model_validate(r.to_json()) for r in rows]
    return Events(items=items, next_after=items[-1].id if items else after)

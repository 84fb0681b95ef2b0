"""Mail as the firm and the admin see it: a cabinet's bot mailbox (list, read, forwarding,
R6), and for admin tokens the inbound log (show, retry) and the quarantine (release,
delete). The inbound log and the quarantine are the gateway's, not a cabinet's: a message
may be for several cabinets or none (rejected), so they need an admin token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from gateway.http.api.access import Admin, Gw, Reader, Writer
from gateway.http.api.schemas import Id, Moment, Strict, refusals
from gateway.storage import quarantine as quarantined_copies
from gateway.storage.accounts import NotFound, set_bot_mail_forwarding
from gateway.storage.db import Database
from gateway.storage.listings.accounts import list_cabinets
from gateway.storage.listings.inbound import (
    MessageRow,
    list_bot_mail,
    list_messages,
    message_detail,
)
from gateway.storage.messages import (
    bot_mail_message,
    message_id_of,
    release_message,
    retry_message,
)
from gateway.storage.models import MessageStatus

router = APIRouter()


class BotMail(BaseModel):
    id: int
    cabinet: str | None
    recipient: str
    partner: str | None
    mail_from: str
    subject: str | None
    received_at: Moment
    queue_id: str
    forward: str | None = Field(description="queued, sent, failed…; null: not forwarded")
    forward_to: str | None
    forward_attempts: int | None
    forward_reason: str | None
    forwarded_at: Moment | None


class Forwarding(BaseModel):
    on: bool
    contact: str | None


class NewForwarding(Strict):
    on: bool
    contact: str | None = Field(default=None, max_length=254)


class Message(BaseModel):
    queue_id: str
    received_at: Moment
    source: str
    source_mailbox: str | None
    peer: str | None
    mail_from: str
    rcpt_tos: list[str]
    size: int
    message_id: str | None
    subject: str | None
    status: str
    reason: str | None
    attempts: int


class Done(BaseModel):
    queue_id: str
    status: str


@router.get("/bot-mail", tags=["bot mail"], responses=refusals())
def bot_mail(who: Reader, gw: Gw, cabinet: str | None = None) -> list[BotMail]:
    """Mail received by the bot identities of the cabinets this token sees (R5, R6)."""
    visible = {c.slug for c in list_cabinets(gw.db, who.tenant)}
    rows = list_bot_mail(gw.db, cabinet)
    return [
        BotMail.model_validate(r, from_attributes=True)
        for r in rows
        if (r.cabinet in visible) or (who.tenant.everything and r.cabinet is None)
    ]


@router.get(
    "/bot-mail/{bot_mail_id}/message",
    tags=["bot mail"],
    responses={**refusals(404), 200: {"content": {"message/rfc822": {}}}},
    response_class=Response,
)
def bot_mail_read(bot_mail_id: Id, who: Reader, gw: Gw) -> Response:
    """The message as it arrived (message/rfc822)."""
    raw = bot_mail_message(gw.db, gw.raw_mail, bot_mail_id, who.tenant)
    return Response(raw, media_type="message/rfc822")


@router.get("/cabinets/{slug}/forwarding", tags=["bot mail"], responses=refusals(404))
def forwarding(slug: str, who: Reader, gw: Gw) -> Forwarding:
    """Whether the cabinet's bot mail is forwarded to its contact address (R6)."""
    for row in list_cabinets(gw.db, who.tenant):
        if row.slug == slug:
            return Forwarding(on=row.forwarding == "on", contact=row.contact)
    raise NotFound(f"no cabinet {slug!r}", field="slug")


@router.put("/cabinets/{slug}/forwarding", tags=["bot mail"], responses=refusals(404, 422))
def set_forwarding(slug: str, body: NewForwarding, who: Writer, gw: Gw) -> Forwarding:
    forwarding(slug, who, gw)  # 404 unless this token sees it
    set_bot_mail_forwarding(gw.db, slug, body.on, body.contact, gw.config.domains)
    return forwarding(slug, who, gw)


Limit = Annotated[int, Query(ge=1, le=1000)]


@router.get("/messages", tags=["inbound messages"], responses=refusals())
def messages(
    who: Admin,
    gw: Gw,
    status: MessageStatus | None = None,
    limit: Limit = 100,
) -> list[Message]:
    """The inbound log, newest first."""
    return [
        Message.model_validate(r, from_attributes=True) for r in list_messages(gw.db, status, limit)
    ]


@router.get("/messages/{queue_id}", tags=["inbound messages"], responses=refusals(404))
def message(queue_id: str, who: Admin, gw: Gw) -> Message:
    rows = _by_queue_id(gw.db, queue_id)
    return Message.model_validate(rows, from_attributes=True)


@router.post("/messages/{queue_id}/retry", tags=["inbound messages"], responses=refusals(404, 409))
def retry(queue_id: str, who: Admin, gw: Gw) -> Done:
    """A held message queued for filing again (409 when it is not held)."""
    retry_message(gw.db, queue_id, gw.clock.now())
    return Done(queue_id=queue_id.upper(), status=MessageStatus.RECEIVED.value)


@router.get("/quarantine", tags=["quarantine"], responses=refusals())
def quarantine(who: Admin, gw: Gw, limit: Limit = 100) -> list[Message]:
    rows = list_messages(gw.db, MessageStatus.QUARANTINED, limit)
    return [Message.model_validate(r, from_attributes=True) for r in rows]


@router.post("/quarantine/{queue_id}/release", tags=["quarantine"], responses=refusals(404, 409))
def release(queue_id: str, who: Admin, gw: Gw) -> Done:
    """Filed as if it had just arrived, without the checks that quarantined it."""
    release_message(gw.db, queue_id, gw.clock.now(), f"API token #{who.token_id}")
    return Done(queue_id=queue_id.upper(), status=MessageStatus.RECEIVED.value)


@router.delete("/quarantine/{queue_id}", tags=["quarantine"], responses=refusals(404, 409))
def delete(queue_id: str, who: Admin, gw: Gw) -> Done:
    """The quarantined copy deleted; the record (reason, results, history) stays."""
    with gw.db.read() as s:
        message_id = message_id_of(s, queue_id, "GET /quarantine")
    quarantined_copies.discard(
        gw.db, gw.blobs, message_id, gw.clock.now(), f"deleted by API token #{who.token_id}"
    )
    return Done(queue_id=queue_id.upper(), status=MessageStatus.DISCARDED.value)


def _by_queue_id(db: Database, queue_id: str) -> MessageRow:
    detail = message_detail(db, queue_id)
    if detail is None:
        raise NotFound(f"no message {queue_id}", field="queue_id")
    return detail.message

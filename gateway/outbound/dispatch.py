"""The sending stage: due deliveries out to partner inboxes (R12–R17).

A run claims due deliveries with one guarded UPDATE (queued or deferred and due, or sending
with an expired lease: a worker that died mid-send), then for each: compose the message,
DKIM-sign the final bytes (in a thread: CPU work), hand it to the transport, and record the
outcome with a guarded transition:

    accepted  -> sent (R13: validated for that connection); never sent again
    permanent -> failed, with the partner's words (R17)
    temporary -> deferred, due again after back-off (300 s doubling to 4000 s, as Postfix),
                 failed once the delivery is older than the lifetime (5 days)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from sqlalchemy import and_, or_, select, update

from gateway.clock import Clock, as_utc
from gateway.config import OutboundConfig
from gateway.outbound.compose import OutboundDocument, compose
from gateway.outbound.ledger import transition
from gateway.outbound.transport import Outcome, Transport
from gateway.routing.addresses import split_address
from gateway.storage.blobs import BlobStore
from gateway.storage.db import Database
from gateway.storage.models import (
    Company,
    Connection,
    Delivery,
    DeliveryEvent,
    DeliveryStatus,
    Document,
)

log = structlog.get_logger("gateway.outbound")

LEASE = timedelta(minutes=5)
QUEUED, SENDING, SENT = DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.SENT
DEFERRED, FAILED = DeliveryStatus.DEFERRED, DeliveryStatus.FAILED


class Signer(Protocol):
    def sign(self, message: bytes, domain: str) -> bytes: ...


class BounceAddressing(Protocol):
    def for_delivery(self, delivery_id: int) -> str: ...


@dataclass(frozen=True)
class Job:
    delivery_id: int
    attempts: int
    created_at: datetime
    sender: str
    recipient: str
    partner: str
    document: OutboundDocument


class Dispatcher:
    def __init__(
        self,
        db: Database,
        config: OutboundConfig,
        gateway_sender: str,
        transport: Transport,
        signer: Signer,
        bounces: BounceAddressing,
        blobs: BlobStore,
        clock: Clock,
        worker_name: str,
        partner_names: dict[str, str],
    ) -> None:
        self.db = db
        self.config = config
        self.gateway_sender = gateway_sender
        self.transport = transport
        self.signer = signer
        self.bounces = bounces
        self.blobs = blobs
        self.clock = clock
        self.worker_name = worker_name
        self.partner_names = partner_names  # registry name -> display name

    def claim(
        self, *, flush: bool = False, partner: str | None = None, limit: int = 50
    ) -> list[int]:
        """Take deliveries to send now; `flush` ignores the schedule (`postqueue -f`)."""
        now = self.clock.now()
        waiting = Delivery.status.in_([QUEUED.value, DEFERRED.value])
        if not flush:
            waiting = and_(waiting, Delivery.due_at <= now)
        stalled = and_(Delivery.status == SENDING, Delivery.lease_until < now)
        claimable = or_(waiting, stalled)
        with self.db.write() as s:
            query = select(Delivery.id).where(claimable).order_by(Delivery.due_at).limit(limit)
            if partner:
                query = query.join(Connection, Delivery.connection_id == Connection.id).where(
                    Connection.partner == partner.lower()
                )
            ids = list(s.execute(query).scalars())
            if not ids:
                return []
            claimed = list(
                s.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(ids), claimable)
                    .values(
                        status=SENDING,
                        claimed_by=self.worker_name,
                        lease_until=now + LEASE,
                        attempts=Delivery.attempts + 1,
                    )
                    .returning(Delivery.id)
                ).scalars()
            )
            for delivery_id in claimed:
                s.add(
                    DeliveryEvent(
                        delivery_id=delivery_id,
                        at=now,
                        from_status=None,
                        to_status=SENDING,
                        detail=f"claimed by {self.worker_name}",
                    )
                )
            return sorted(claimed)

    async def run_once(self, *, flush: bool = False, partner: str | None = None) -> int:
        """Send what is due (everything waiting, with `flush`); returns how many were tried."""
        ids = await asyncio.to_thread(self.claim, flush=flush, partner=partner)
        for delivery_id in ids:
            job = await asyncio.to_thread(self.job, delivery_id)
            await self._send(job)
        return len(ids)

    def job(self, delivery_id: int) -> Job:
        """What one delivery needs to be sent, read from its rows and the blob store."""
        with self.db.read() as s:
            delivery, connection, document, company = s.execute(
                select(Delivery, Connection, Document, Company)
                .join(Connection, Delivery.connection_id == Connection.id)
                .join(Document, Delivery.document_id == Document.id)
                .join(Company, Connection.company_id == Company.id)
                .where(Delivery.id == delivery_id)
            ).one()
            return Job(
                delivery_id=delivery.id,
                attempts=delivery.attempts,
                created_at=as_utc(delivery.created_at),
                sender=connection.sender or self.gateway_sender,
                recipient=connection.destination,
                partner=connection.partner,
                document=OutboundDocument(
                    delivery_id=delivery.id,
                    document_id=document.id,
                    filename=document.filename,
                    media_type=document.media_type,
                    content=self.blobs.get(document.sha256),
                    sha256=document.sha256,
                    company_name=company.name,
                    company_slug=company.slug,
                    partner_display_name=self.partner_names.get(
                        connection.partner, connection.partner
                    ),
                ),
            )

    def compose(self, job: Job) -> tuple[str, bytes]:
        """(From domain, unsigned message bytes) for a job; signing comes after, last."""
        sender_domain = (split_address(job.sender) or ("", ""))[1]
        data = compose(
            job.document,
            job.sender,
            job.recipient,
            sender_domain,
            self.clock.now(),
            sender_name=self.config.sender_name,
        )
        return sender_domain, data

    async def _send(self, job: Job) -> None:
        bound = log.bind(delivery_id=job.delivery_id, partner=job.partner, to=job.recipient)
        try:
            sender_domain, data = self.compose(job)
            signed = await asyncio.to_thread(self.signer.sign, data, sender_domain)
        except Exception as exc:  # our own problem (no DKIM key…): retried, visible
            bound.exception("compose_failed")
            await asyncio.to_thread(self._record_temporary, job, f"not sent: {exc}")
            return
        result = await self.transport.send(
            self.bounces.for_delivery(job.delivery_id), job.recipient, signed
        )
        bound.info(
            "sent" if result.outcome is Outcome.ACCEPTED else "not_sent",
            outcome=result.outcome.value,
            reply=result.reply,
        )
        if result.outcome is Outcome.ACCEPTED:
            await asyncio.to_thread(self._record, job, SENT, result.reply, sent_at=True)
        elif result.outcome is Outcome.PERMANENT:
            await asyncio.to_thread(self._record, job, FAILED, result.reply)
        else:
            await asyncio.to_thread(self._record_temporary, job, result.reply)

    def _record(self, job: Job, target: DeliveryStatus, reply: str, sent_at: bool = False) -> None:
        now = self.clock.now()
        values: dict[str, object] = {"reason": reply, "lease_until": None}
        if sent_at:
            values["sent_at"] = now
        with self.db.write() as s:
            transition(s, job.delivery_id, [SENDING], target, now, reply, **values)

    def _record_temporary(self, job: Job, reply: str) -> None:
        now = self.clock.now()
        age = now - job.created_at
        if age.total_seconds() >= self.config.lifetime_seconds:
            self._record(job, FAILED, f"gave up after {age.days} days; last reply: {reply}")
            return
        delay = min(
            self.config.retry_min_seconds * 2 ** max(job.attempts - 1, 0),
            self.config.retry_max_seconds,
        )
        with self.db.write() as s:
            transition(
                s,
                job.delivery_id,
                [SENDING],
                DEFERRED,
                now,
                reply,
                reason=reply,
                lease_until=None,
                due_at=now + timedelta(seconds=delay),
            )

"""The sending stage: due deliveries out to partner inboxes (R12–R17).

A run claims due deliveries with one guarded UPDATE (queued or deferred and due, or sending
with an expired lease: a worker that died mid-send), then for each: compose the message,
DKIM-sign the final bytes (in a thread: CPU work), hand it to the transport, and record the
outcome with a guarded transition:

    accepted  -> sent (R13: validated for that connection); never sent again
    permanent -> failed, with the partner's words (R17)
    temporary -> deferred, due again after back-off (300 s doubling to 4000 s, as Postfix),
                 failed once the delivery is older than the lifetime (5 days)

Just after the claim, the rules are asked again (placement.send_problems): a delivery whose
document now breaks the partner's limits (R14), was moved out of the switched folder, or
whose switch or connection went away before the run is `skipped` with the reason, not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from multiprocessing import get_context
from typing import Protocol

import structlog
from sqlalchemy import select

from gateway.clock import Clock, as_utc
from gateway.config import OutboundConfig
from gateway.outbound.compose import OutboundDocument, compose
from gateway.outbound.settle import settle
from gateway.outbound.transport import SendOutcome, Transport
from gateway.priority import run_at_idle_priority
from gateway.routing.addresses import split_address
from gateway.routing.partners import PartnerRegistry
from gateway.storage.blobs import BlobStore
from gateway.storage.db import Database
from gateway.storage.models import (
    Company,
    Connection,
    Delivery,
    DeliveryStatus,
    Document,
)
from gateway.storage.placement import send_problems
from gateway.storage.queues import deliveries

log = structlog.get_logger("gateway.outbound")

CLAIM_LIMIT = 200  # deliveries per claim: a few seconds of sending, well inside the lease
PIPELINE_DEPTH = 16  # messages composed and signed ahead of the one being sent
PREPARE_CHUNK = 8  # composed per trip to the worker thread
RECORD_BATCH = 64  # outcomes written in one transaction ...
RECORD_DELAY_SECONDS = 0.05  # ... or after this long, whichever comes first
SENDING = DeliveryStatus.SENDING


class Signer(Protocol):
    def sign(self, message: bytes, domain: str) -> bytes: ...


class BounceAddressing(Protocol):
    def for_delivery(self, delivery_id: int) -> str: ...


_Prepared = tuple["Job", tuple[str, bytes] | Exception]  # a job and its signed bytes


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
        registry: PartnerRegistry,
        signing_pool: SigningPool | None = None,
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
        self.registry = registry
        self.partner_names = {p.name: p.display_name for p in registry.partners}
        # Composing and signing are CPU work; in a process pool they run beside the event
        # loop instead of sharing its GIL. None: a thread of this process.
        self.signing_pool = signing_pool

    async def close(self) -> None:
        await self.transport.close()
        if self.signing_pool is not None:
            self.signing_pool.shutdown()

    def claim(
        self,
        *,
        flush: bool = False,
        partner: str | None = None,
        limit: int = CLAIM_LIMIT,
        after: int = 0,
    ) -> list[int]:
        """Take deliveries to send now; `flush` ignores the schedule (`postqueue -f`) and
        takes ids above `after` only, so one flush tries each delivery once."""
        return self._claim(flush, partner, limit, after)[1]

    def _claim(
        self, flush: bool, partner: str | None, limit: int, after: int
    ) -> tuple[list[int], list[int]]:
        """The ids claimed and, among them, those to send (the others were found
        unsendable and are skipped)."""
        now = self.clock.now()
        with self.db.write() as s:
            claimed = deliveries.claim_due(
                s,
                self.worker_name,
                now,
                limit=limit,
                flush=flush,
                partner=partner,
                after=after,
            )
            problems = send_problems(s, claimed, self.registry)
            if problems:
                moves = [
                    deliveries.Move(d, DeliveryStatus.SKIPPED, why, {"reason": why})
                    for d, why in problems.items()
                ]
                deliveries.transition_many(s, SENDING, moves, now, claimant=self.worker_name)
                log.info("skipped_at_send", deliveries=problems)
        return claimed, [d for d in claimed if d not in problems]

    async def run_once(self, *, flush: bool = False, partner: str | None = None) -> int:
        """Send everything due now; with `flush`, everything waiting, each tried once (a
        delivery deferred during this run waits for its next turn, as with `postqueue -f`).
        Returns how many deliveries were tried.

        One pipeline, so the connection is never idle for our own work: a producer claims
        batches (one guarded UPDATE, one query to read them) and composes and signs their
        messages (in the signing processes) ahead of the one on the wire; a recorder writes
        the outcomes in groups. Claimed rows not sent because we were stopped come back
        when their lease ends.
        """
        ready: asyncio.Queue[_Prepared | None] = asyncio.Queue(maxsize=PIPELINE_DEPTH)
        producer = asyncio.create_task(self._produce(flush, partner, ready))
        recorder = _Recorder(self)
        tried = 0
        try:
            while (item := await ready.get()) is not None:
                job, prepared = item
                tried += 1
                if isinstance(prepared, Exception):  # our own problem (no DKIM key…)
                    recorder.add(job, None, f"not sent: {prepared}")
                    continue
                result = await self.transport.send(
                    self.bounces.for_delivery(job.delivery_id), job.recipient, prepared[1]
                )
                log.info(
                    "sent" if result.outcome is SendOutcome.ACCEPTED else "not_sent",
                    delivery_id=job.delivery_id,
                    partner=job.partner,
                    to=job.recipient,
                    outcome=result.outcome.value,
                    reply=result.reply,
                )
                recorder.add(job, result.outcome, result.reply)
            await producer  # raises what went wrong in claiming, if anything
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
            await recorder.close()
        return tried

    async def _produce(
        self, flush: bool, partner: str | None, ready: asyncio.Queue[_Prepared | None]
    ) -> None:
        """Fill `ready`, then put None: the end (also after an error, which the consumer
        then raises by awaiting this task; a cancelled producer has no consumer left)."""
        try:
            after = 0
            while True:
                claimed, jobs = await asyncio.to_thread(self._next_batch, flush, partner, after)
                if not claimed:
                    break
                after = max(claimed)
                for start in range(0, len(jobs), PREPARE_CHUNK):
                    chunk = jobs[start : start + PREPARE_CHUNK]
                    for job, prepared in zip(chunk, await self._prepare(chunk), strict=True):
                        if isinstance(prepared, Exception):
                            log.error(
                                "compose_failed", delivery_id=job.delivery_id, error=str(prepared)
                            )
                        await ready.put((job, prepared))
                if len(claimed) < CLAIM_LIMIT:
                    break
        except asyncio.CancelledError:
            raise
        except Exception:
            await ready.put(None)
            raise
        await ready.put(None)

    def _next_batch(
        self, flush: bool, partner: str | None, after: int
    ) -> tuple[list[int], list[Job]]:
        claimed, ids = self._claim(flush, partner, CLAIM_LIMIT, after)
        return claimed, self.jobs(ids) if ids else []

    async def _prepare(self, jobs: list[Job]) -> list[tuple[str, bytes] | Exception]:
        now, name = self.clock.now(), self.config.sender_name
        if self.signing_pool is None:
            return await asyncio.to_thread(prepare_messages, jobs, now, name, self.signer)
        return await self.signing_pool.prepare(jobs, now, name)

    def job(self, delivery_id: int) -> Job:
        """What one delivery needs to be sent, read from its rows and the blob store."""
        return self.jobs([delivery_id])[0]

    def jobs(self, delivery_ids: list[int]) -> list[Job]:
        """`job` for many deliveries, in one query, in the order given."""
        with self.db.read() as s:
            rows = s.execute(
                select(Delivery, Connection, Document, Company)
                .join(Connection, Delivery.connection_id == Connection.id)
                .join(Document, Delivery.document_id == Document.id)
                .join(Company, Connection.company_id == Company.id)
                .where(Delivery.id.in_(delivery_ids))
            ).all()
        by_id = {
            delivery.id: Job(
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
            for delivery, connection, document, company in rows
        }
        return [by_id[i] for i in delivery_ids]

    def compose(self, job: Job) -> tuple[str, bytes]:
        """(From domain, unsigned message bytes) for a job; signing comes after, last."""
        return compose_job(job, self.clock.now(), self.config.sender_name)

    def record(self, outcomes: list[tuple[Job, SendOutcome | None, str]]) -> None:
        """Write the outcomes of several sends in one transaction (one commit, one fsync).

        Each is a guarded transition from `sending`; one refused (the row is no longer
        ours: a lease taken over) changes nothing, is logged as an error with the row's
        state, and does not stop the others.
        """
        now = self.clock.now()
        moves = [self._move(job, outcome, reply, now) for job, outcome, reply in outcomes]
        with self.db.write() as s:
            refused = deliveries.transition_many(s, SENDING, moves, now, claimant=self.worker_name)
            states = deliveries.states_of(s, [m.delivery_id for m in refused]) if refused else {}
        for m in refused:
            log.error(
                "transition_refused",
                delivery_id=m.delivery_id,
                status=states.get(m.delivery_id, "missing"),
                wanted=m.target.value,
            )

    def _move(
        self, job: Job, outcome: SendOutcome | None, reply: str, now: datetime
    ) -> deliveries.Move:
        done = settle(self.config, outcome, reply, job.attempts, job.created_at, now)
        values: dict[str, object] = {"reason": done.reason, "lease_until": None}
        if done.target == "sent":
            values["sent_at"] = now  # R13: sent = validated for that connection
        if done.retry_at is not None:
            values["due_at"] = done.retry_at
        return deliveries.Move(job.delivery_id, DeliveryStatus(done.target), done.reason, values)


def compose_job(job: Job, date: datetime, sender_name: str) -> tuple[str, bytes]:
    """(From domain, unsigned message bytes) for a job."""
    sender_domain = (split_address(job.sender) or ("", ""))[1]
    data = compose(job.document, job.sender, job.recipient, sender_domain, date, sender_name)
    return sender_domain, data


def prepare_messages(
    jobs: list[Job], date: datetime, sender_name: str, signer: Signer
) -> list[tuple[str, bytes] | Exception]:
    """Compose and DKIM-sign (the last step) each job; an exception stands for a job that
    could not be (no key for the domain…). Module-level: it runs in a process pool."""
    out: list[tuple[str, bytes] | Exception] = []
    for job in jobs:
        try:
            domain, data = compose_job(job, date, sender_name)
            out.append((domain, signer.sign(data, domain)))
        except Exception as exc:
            out.append(exc)
    return out


class SigningPool:
    """Compose and sign in worker processes, beside the event loop rather than under its
    GIL. Each worker loads the DKIM keys once, at start (loading an RSA key costs more
    than signing with it)."""

    def __init__(self, signer: Signer, processes: int) -> None:
        # spawn, not fork: a forked child would inherit database connections and the
        # event loop's state.
        self.executor = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=get_context("spawn"),
            initializer=_install_signer,
            initargs=(signer,),
        )

    async def prepare(
        self, jobs: list[Job], date: datetime, sender_name: str
    ) -> list[tuple[str, bytes] | Exception]:
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, _prepare_in_worker, jobs, date, sender_name
        )

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)


# The signer of a SigningPool worker process, installed once by the pool's initializer.
_worker_signer: list[Signer] = []


def _install_signer(signer: Signer) -> None:
    _worker_signer[:] = [signer]
    run_at_idle_priority()


def _prepare_in_worker(
    jobs: list[Job], date: datetime, sender_name: str
) -> list[tuple[str, bytes] | Exception]:
    return prepare_messages(jobs, date, sender_name, _worker_signer[0])


class _Recorder:
    """Writes send outcomes in groups, in one thread, while sending goes on (like the
    spool's group commit): a group is written once RECORD_BATCH outcomes are waiting or
    RECORD_DELAY has passed, so a partner's 250 is on disk within ~50 ms. A crash inside
    that window leaves the delivery `sending`: it is sent again once its lease expires
    (at-least-once, like Postfix between the remote 250 and its queue file update).
    `close` returns once every outcome added is committed."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.pending: list[tuple[Job, SendOutcome | None, str]] = []
        self.writing: asyncio.Task[None] | None = None
        self.full = asyncio.Event()

    def add(self, job: Job, outcome: SendOutcome | None, reply: str) -> None:
        self.pending.append((job, outcome, reply))
        if len(self.pending) >= RECORD_BATCH:
            self.full.set()
        if self.writing is None or self.writing.done():
            self.writing = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while self.pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.full.wait(), RECORD_DELAY_SECONDS)
            self.full.clear()
            batch, self.pending = self.pending, []
            try:
                await asyncio.to_thread(self.dispatcher.record, batch)
            except Exception:
                # The database is away: these stay `sending` until their lease runs out and
                # are then sent again; nothing is lost, a duplicate is possible.
                log.exception("record_failed", deliveries=[j.delivery_id for j, _, _ in batch])

    async def close(self) -> None:
        self.full.set()  # no more waiting for a fuller group
        while self.writing is not None and not self.writing.done():
            await self.writing

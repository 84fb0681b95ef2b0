"""The filing stage: from a durably stored message to documents in a company's folders.

It runs after the 250, in its own worker (`gateway worker`, started by `gateway serve`),
over the `inbound_messages` rows — never called by the SMTP server. A message is claimed
with a guarded UPDATE carrying a lease, so several workers (or nodes) can run at once and a
worker that dies mid-way leaves a message that another worker re-claims when the lease
expires. All of a message's rows are written in one transaction together with its final
status, so filing is all-or-nothing and a re-run files a message exactly once. A message that
keeps failing is moved aside (`held`) after `filing.max_attempts` tries instead of looping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gateway import metrics
from gateway.clock import Clock, as_utc
from gateway.config import FilingConfig
from gateway.inbound.body_pdf import BodyPdfRenderer
from gateway.inbound.duplicates import duplicate_keys, invoice_key, known_documents
from gateway.inbound.extraction import Extraction
from gateway.inbound.filing_report import (
    FilingReport,
    Prepared,
    reached_by,
)
from gateway.inbound.filing_write import BatchWriter
from gateway.inbound.folders import folder_path
from gateway.inbound.placing import plan_placements
from gateway.inbound.recipients import Destination, Recipients
from gateway.inbound.sandbox import ExtractionSandbox, OverBudget
from gateway.inbound.trust.checkpoint import Checkpoint, WaitForChecks
from gateway.inbound.trust.results import AuthenticationResults
from gateway.inbound.trust.screen import Wait
from gateway.mail.dsn import parse_bounce
from gateway.routing.einvoice_filing import EinvoiceFiling
from gateway.routing.partners import PartnerRegistry
from gateway.runner import Backoff
from gateway.storage import quarantine
from gateway.storage.blobs import BlobStore
from gateway.storage.db import Database
from gateway.storage.directory import Identities, company_identities
from gateway.storage.folders import ensure_folder
from gateway.storage.models import (
    InboundMessage,
    MessageStatus,
)
from gateway.storage.objects import ObjectStoreUnavailable
from gateway.storage.queues import inbound as inbound_queue
from gateway.storage.queues.inbound import TransitionError
from gateway.storage.rawmail import RawMail

log = structlog.get_logger("gateway.filing")

RETRY_FIRST = timedelta(seconds=30)
PURGE_EVERY = timedelta(hours=1)
STORE_RETRY = 10  # seconds before a message that found the object store down is tried again
PREPARING_AT_ONCE = 4  # in threads: mostly waiting (DNS, fsyncs, the extraction child)
# Messages claimed per pass, written in one transaction (benchmarks/pipeline.py: 50 files
# ~10% faster than 20; the heartbeat renews the lease, so a longer batch loses nothing).
BATCH = 50

_T = TypeVar("_T")


@dataclass
class _Checked:
    """A message read and authenticated, waiting for its extraction."""

    message: InboundMessage
    checkpoint: Checkpoint
    raw: bytes
    destinations: list[Destination]
    results: AuthenticationResults | None
    stamped: bytes
    seconds: float


class _MessageFailed(Exception):
    """A step of preparing failed for this message only: recorded, the batch goes on."""

    def __init__(self, message: InboundMessage, error: Exception) -> None:
        super().__init__(str(error))
        self.message = message
        self.error = error


class Filer:
    def __init__(
        self,
        db: Database,
        config: FilingConfig,
        sandbox: ExtractionSandbox,
        recipients: Recipients,
        registry: PartnerRegistry,
        blobs: BlobStore,
        raw_mail: RawMail,
        clock: Clock,
        worker_name: str,
        checkpoint: Checkpoint,
        body_pdf: BodyPdfRenderer | None = None,
        einvoice_rules: EinvoiceFiling | None = None,
    ) -> None:
        self.db = db
        # Where e-invoices go and how they are checked; None: [einvoice] off (not read).
        self.einvoice_rules = einvoice_rules
        self.checkpoint = checkpoint  # authentication, malware, spam, policy (issue 11)
        self.config = config
        self.sandbox = sandbox  # extraction under a time and memory budget
        self.body_pdf = body_pdf  # a PDF beside a lone .eml; None: [extraction] body_pdf off
        self.recipients = recipients
        self.registry = registry
        self.blobs = blobs
        self.raw_mail = raw_mail
        self.clock = clock
        self.worker_name = worker_name
        # 30 s doubling; moved aside (`held`) after `max_attempts` tries.
        self.backoff = Backoff(first=RETRY_FIRST, max_attempts=config.max_attempts)
        self._folders: dict[tuple[int, str], int] = {}
        self._next_purge: datetime | None = None
        self._preparing = ThreadPoolExecutor(PREPARING_AT_ONCE, thread_name_prefix="filing")

    # -- claiming -------------------------------------------------------------------------

    def claim(self, limit: int = BATCH) -> list[int]:
        """Take up to `limit` messages waiting for filing; one guarded UPDATE, safe to race."""
        with self.db.write() as s:
            return inbound_queue.claim_waiting(s, self.worker_name, self.clock.now(), limit)

    # -- filing ---------------------------------------------------------------------------

    def run_once(self, limit: int = BATCH) -> int:
        """File what is waiting now, as one batch; returns how many messages it took."""
        self._purge_when_due()
        ids = self.claim(limit)
        if ids:
            self._file_batch(self._load(ids))
        return len(ids)

    def file(self, message_id: int) -> None:
        """File one message this worker has claimed."""
        self._file_batch(self._load([message_id]))

    def _load(self, ids: list[int]) -> list[InboundMessage]:
        with self.db.read() as s:
            rows = list(
                s.execute(
                    select(InboundMessage)
                    .where(InboundMessage.id.in_(ids))
                    .order_by(InboundMessage.id)
                ).scalars()
            )
            s.expunge_all()
        return rows

    def _file_batch(self, messages: list[InboundMessage]) -> None:
        """Prepare the batch (no lock held), then write it in one transaction: one commit
        (one fsync) for the batch, not one each. Preparing goes in steps over the whole
        batch: read and authenticate (threads: DNS), extract (back to back in the sandbox's
        child), scan and place (threads: clamd, rspamd), then the documents' bytes made
        durable together and the duplicates looked up in one query."""
        checkpoint = self.checkpoint.for_batch()  # sender policies read once for the batch
        raws = self.raw_mail.read_many(
            [(m.spool_segment, m.spool_offset, m.size) for m in messages]
        )
        checked = self._each(
            self._check, [(m, raw, checkpoint) for m, raw in zip(messages, raws, strict=True)]
        )
        extractions = self.sandbox.extract_many([c.stamped for c in checked])
        identities = self._identities(checked, extractions)
        prepared = self._each(
            self._place, [(c, e, identities) for c, e in zip(checked, extractions, strict=True)]
        )
        if not prepared:
            return
        try:
            self._store_documents(prepared)
        except Exception as exc:
            for p in prepared:
                self._failed(p.message, exc)
            return
        try:
            self._commit_counted(prepared)
        except IntegrityError as exc:
            # Another worker filed the same bytes for the same company between our read
            # and our insert: file one by one, and they are seen as the duplicates they are.
            if len(messages) == 1:
                self._failed(messages[0], exc)
                return
            for p in prepared:
                self._file_batch([p.message])
            return
        except Exception as exc:
            for p in prepared:
                log.exception("filing_failed", queue_id=p.message.queue_id)
                self._release_after_failure(p.message, exc)
            return
        for p in prepared:
            if p.owned:
                log.info(
                    "filed",
                    queue_id=p.message.queue_id,
                    status=p.outcome.status().value,
                    documents=len(p.outcome.filed),
                    duplicates=len(p.outcome.duplicates),
                    refused=len(p.outcome.refused),
                    message_id=p.extraction.message_id,
                )
            else:
                log.warning("lease_lost", queue_id=p.message.queue_id)

    def _each(self, step: Callable[[Any], _T | None], items: list[Any]) -> list[_T]:
        """`step` over the items in the preparing threads; those it failed (recorded by
        `_failed`) are left out."""

        def guarded(item: Any) -> _T | None:
            try:
                return step(item)
            except _MessageFailed as failed:
                self._failed(failed.message, failed.error)
                return None

        return [r for r in self._preparing.map(guarded, items) if r is not None]

    def _failed(self, message: InboundMessage, error: Exception) -> None:
        """Record why `message` is not written now: waiting for the checks or the object
        store, held over its budget, or released after a failure."""
        if isinstance(error, WaitForChecks):
            self._wait(message, error.wait)
        elif isinstance(error, ObjectStoreUnavailable):
            # Not the message's fault: it waits for the store without using up a try.
            self._wait(message, Wait(f"waiting for the object store: {error}", STORE_RETRY))
        elif isinstance(error, OverBudget):
            # It would blow the budget again: held at once, with the reason.
            log.warning("extraction_over_budget", queue_id=message.queue_id, why=str(error))
            self._hold(message, error)
        else:
            log.error(
                "filing_failed",
                queue_id=message.queue_id,
                attempt=message.attempts,
                exc_info=error,
            )
            self._release_after_failure(message, error)

    def _check(self, item: tuple[InboundMessage, bytes | Exception, Checkpoint]) -> _Checked:
        """Authenticate the message (DNS)."""
        message, raw, checkpoint = item
        if isinstance(raw, Exception):
            raise _MessageFailed(message, raw)
        started = time.perf_counter()
        try:
            destinations = [self.recipients.resolve(r) for r in message.rcpt_tos]
            results, stamped = checkpoint.authenticate(message, raw, destinations)
        except Exception as exc:
            raise _MessageFailed(message, exc) from exc
        seconds = time.perf_counter() - started
        return _Checked(message, checkpoint, raw, destinations, results, stamped, seconds)

    def _identities(
        self, checked: list[_Checked], extractions: list[Extraction | Exception]
    ) -> Identities:
        """The identity of each company the batch's e-invoices go to, read now: the
        directory's cache would be a minute late after a `company set`."""
        if self.einvoice_rules is None:
            return {}
        companies = {
            d.company.id
            for c, e in zip(checked, extractions, strict=True)
            if isinstance(e, Extraction) and any(doc.einvoice for doc in e.documents)
            for d in c.destinations
            if d.company is not None
        }
        return company_identities(self.db, companies)

    def _place(self, item: tuple[_Checked, Extraction | Exception, Identities]) -> Prepared:
        checked, extraction, identities = item
        if isinstance(extraction, Exception):
            raise _MessageFailed(checked.message, extraction)
        started = time.perf_counter()
        try:
            prepared = self._prepare(checked, extraction, identities)
        except Exception as exc:
            raise _MessageFailed(checked.message, exc) from exc
        prepared.seconds += checked.seconds + time.perf_counter() - started
        return prepared

    def _prepare(
        self, checked: _Checked, extraction: Extraction, identities: Identities
    ) -> Prepared:
        """Everything that can be read or decided before the write transaction, so that the
        database's write lock (one writer at a time on SQLite, shared with the SMTP server's
        commits) is held for a few inserts only."""
        message, checkpoint, raw, stamped = (
            checked.message,
            checked.checkpoint,
            checked.raw,
            checked.stamped,
        )
        destinations, results = checked.destinations, checked.results
        why_quarantined = checkpoint.quarantine_reason(
            message,
            raw,
            stamped,
            [(d.filename, d.content) for d in extraction.documents],
            extraction.sender,
            destinations,
            results,
        )
        reached = reached_by(destinations)
        if why_quarantined is not None:
            # Kept whole, with our results, until released or purged; nothing is filed.
            return Prepared(
                message,
                extraction,
                FilingReport(),
                [],
                {},
                [],
                as_utc(message.received_at),
                [],
                None,
                0.0,
                results,
                why_quarantined,
                self.blobs.put(stamped),
                reached=reached,
            )
        outcome = FilingReport()
        if self.body_pdf is not None:
            with metrics.BODY_PDF_SECONDS.time():
                extraction, failed = self.body_pdf.add_to(extraction)
            if failed is not None:
                log.warning("body_pdf_failed", queue_id=message.queue_id, why=failed)
                outcome.notes.append(failed)
        outcome.recipients_refused = [
            f"{d.address.address}: {d.reason or d.refusal}" for d in destinations if not d.accepted
        ]
        ged = [d for d in destinations if d.accepted and d.address.files_into_ged]
        now = self.clock.now()
        received_at = as_utc(message.received_at)
        plan = plan_placements(
            extraction,
            ged,
            identities,
            lambda journal, company: folder_path(
                self.config, journal, company.fiscal_year_end, received_at
            ),
            lambda company, path: self._folder_id(company.id, path, now),
            self.einvoice_rules,
            outcome.notes,
        )
        bots = [d for d in destinations if d.accepted and d.address.goes_to_bot_mailbox]
        bounces = [d for d in destinations if d.accepted and d.address.is_bounce]
        report = parse_bounce(raw) if bounces else None
        return Prepared(
            message,
            extraction,
            outcome,
            plan,
            {},
            bots,
            received_at,
            bounces,
            report,
            0.0,
            results,
            reached=reached,
        )

    def _store_documents(self, batch: list[Prepared]) -> None:
        """Which of the batch's documents each company already has (the duplicate rules,
        one query for the batch); then the bytes of the others, durable together, before
        any row (a crash in between leaves unreferenced blobs, never a row pointing at
        nothing). An e-invoice filed before in other bytes has nothing to store."""
        keys = {(pl.company.id, k) for p in batch for pl in p.plan for k in duplicate_keys(pl)}
        known = known_documents(self.db, keys)
        for p in batch:
            p.known = {
                (pl.company.id, k): known[(pl.company.id, k)]
                for pl in p.plan
                for k in duplicate_keys(pl)
                if (pl.company.id, k) in known
            }
        contents = {
            d.sha256: d.doc.content
            for p in batch
            for pl in p.plan
            for d in pl.docs
            if (key := invoice_key(d)) is None or (pl.company.id, key) not in known
        }
        self.blobs.put_many(list(contents.values()))

    def _commit_counted(self, batch: list[Prepared]) -> None:
        """`_commit`, then count what it finished: each message's filing time is its own
        preparation plus its batch's write transaction."""
        started = time.perf_counter()
        self._commit(batch)
        seconds = time.perf_counter() - started
        for p in batch:
            if p.owned:
                metrics.FILING_MESSAGES.labels(p.outcome.status().value).inc()
                metrics.FILING_SECONDS.observe(p.seconds + seconds)

    def _commit(self, batch: list[Prepared]) -> None:
        now = self.clock.now()
        with self.db.write() as s:
            # Guarded first: a message whose lease another worker took over gets nothing.
            owned = inbound_queue.renew(s, [p.message.id for p in batch], self.worker_name, now)
            for p in batch:
                p.owned = p.message.id in owned
            writer = BatchWriter(s, self.registry, now)
            finished = writer.write([p for p in batch if p.owned])
            inbound_queue.finish_many(s, self.worker_name, finished, now)

    def _folder_id(self, company_id: int, path: str, now: datetime) -> int:
        """The folder's id, created if missing (R3); remembered, since folders stay."""
        key = (company_id, path)
        folder_id = self._folders.get(key)
        if folder_id is None:
            with self.db.write() as s:
                folder_id = ensure_folder(s, company_id, path, now)
            self._folders[key] = folder_id
        return folder_id

    def _purge_when_due(self) -> None:
        """Hourly: quarantined mail past its retention period loses its copy (the record
        stays). Every worker may do it; a message already discarded is skipped."""
        now = self.clock.now()
        if self._next_purge is not None and now < self._next_purge:
            return
        self._next_purge = now + PURGE_EVERY
        days = self.checkpoint.screen.trust.quarantine_retention_days
        try:
            purged = quarantine.purge(self.db, self.blobs, now, days)
        except TransitionError:
            return  # another worker purged the same message first: its turn next hour
        if purged:
            log.info("quarantine_purged", messages=purged, older_than_days=days)

    def _wait(self, message: InboundMessage, wait: Wait) -> None:
        """Not a failure: back in `wait.seconds`, without using up an attempt."""
        log.info("checks_waiting", queue_id=message.queue_id, why=wait.reason)
        now = self.clock.now()
        authentication = wait.authentication.to_json() if wait.authentication else None
        with self.db.write() as s:
            inbound_queue.wait_for_checks(
                s,
                message.id,
                self.worker_name,
                wait.reason,
                now,
                now + timedelta(seconds=wait.seconds),
                authentication,
            )

    def _hold(self, message: InboundMessage, error: OverBudget) -> None:
        self._release_after_failure(message, error, retry=False)

    def _release_after_failure(
        self, message: InboundMessage, error: Exception, retry: bool = True
    ) -> None:
        """Retry later with back-off (the row stays claimable once `lease_until` passes)."""
        reason = f"filing failed (attempt {message.attempts}): {error!r}"
        retry_at = (
            self.backoff.next_try(message.attempts, as_utc(message.received_at), self.clock.now())
            if retry
            else None
        )
        if retry_at is None:
            reason += "; held for an administrator after too many attempts"
        else:
            reason += f"; will retry after {retry_at:%Y-%m-%d %H:%M:%S}Z"
        with self.db.write() as s:
            inbound_queue.release_after_failure(
                s, message.id, self.worker_name, reason, self.clock.now(), retry_at=retry_at
            )
        if retry_at is None:
            metrics.FILING_MESSAGES.labels(MessageStatus.HELD.value).inc()

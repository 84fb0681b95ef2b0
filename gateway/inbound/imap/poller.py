"""Pulling mail from existing IMAP mailboxes into the same pipeline as SMTP.

One `MailboxPoller` reads one (source, folder). Per batch of UIDs it fetches `BODY.PEEK[]`
(nothing is marked read), routes each message by the address it was delivered to, stores the
batch through the spool (one fsync, one commit, the same rows SMTP writes) and, in that same
transaction, records every message taken and moves the checkpoint. Only then is anything
moved or flagged on the server, so a crash at any point loses nothing: what was not stored is
fetched again, what was stored but not moved is moved on the next session.

- The checkpoint is (UIDVALIDITY, last UID): a restart reads nothing twice, and a mailbox of
  tens of thousands of messages is read once (flag mode never searches old UIDs again).
- A new UIDVALIDITY (the folder was recreated) starts over from UID 1; every message is
  recognised by its fingerprint (Message-ID, routed recipients, body hash) and settled
  without being filed again. Documents are also deduplicated per company at filing, so the
  same invoice arriving by SMTP and IMAP is filed once.
- The checkpoint row carries a lease: one poller per mailbox at a time, across nodes
  (gateway/storage/queues/imap_checkpoints.py owns it).
- IDLE when the server offers it (and `idle = true`), polling otherwise; connection errors
  back off from 1 s to 60 s and reconnect; a refused login or OAuth2 token from 1 min to
  30 min (an account is never locked by a tight loop). Sessions that end in an error count
  on the checkpoint; from three in a row the folder is failing (`imap status`, readiness,
  metrics) until a whole pass goes through.
- Folder names are placed in the server's namespaces at login; a NO to a move ends `sync
  --once`, the long-running reader reads on and retries the moves later (`folders`).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from imapclient.exceptions import IMAPClientError, LoginError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway.clock import Clock
from gateway.config import ConfigError, ImapSourceConfig
from gateway.inbound.imap.connection import (
    CONNECTION_ERRORS,
    Connector,
    ImapProblem,
    MailboxClient,
    connect,
    explain,
    wait_for_mail,
)
from gateway.inbound.imap.folders import FolderMover, FolderRefused, Namespaces, read_namespaces
from gateway.inbound.imap.headers import (
    candidate_recipients,
    fingerprint,
    parse_header_block,
    rejected_record,
)
from gateway.inbound.imap.holding import LEASE_RENEW_SECONDS, FolderHold
from gateway.inbound.imap.oauth import TokenRefused
from gateway.inbound.recipients import Recipients
from gateway.inbound.spool import Arrival, SpoolWriter, new_queue_id
from gateway.mail.header_limits import HeaderLimits, header_overflow
from gateway.routing.addresses import AddressKind
from gateway.storage.db import Database, upsert_insert
from gateway.storage.models import ImapMessage
from gateway.storage.queues import inbound as inbound_queue
from gateway.storage.queues.imap_checkpoints import LEASE, Claimant, LeaseLost

log = structlog.get_logger("gateway.imap")

BACKOFF_MIN_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
# A refused login or token: 1 min, doubling to 30 min (Postfix-like; never a tight loop).
REFUSED_BACKOFF_MIN_SECONDS = 60.0
REFUSED_BACKOFF_MAX_SECONDS = 1800.0
# What ends a session: recorded on the checkpoint, then handled by `run`.
SESSION_ERRORS = (
    LoginError,
    ConfigError,
    TokenRefused,
    FolderRefused,
    *CONNECTION_ERRORS,
    IMAPClientError,
)


# -- the poller --------------------------------------------------------------------------------


@dataclass
class SyncResult:
    taken: int = 0  # messages read from the server in this run
    stored: int = 0  # handed to filing
    rejected: int = 0  # no address of ours (recorded, moved to the rejected folder)
    duplicates: int = 0  # already taken before (a recreated folder): not filed again
    settled: int = 0  # moved or flagged on the server
    errors: list[str] = field(default_factory=list)


Progress = Callable[[int, int], None]  # (messages done, messages found) in this pass


@dataclass(frozen=True)
class _Taken:
    uid: int
    raw: bytes
    sha256: str
    fingerprint: str
    received_at: datetime
    recipients: list[str]
    refusal: str | None  # set: recorded as rejected
    # What a rejected message says about itself, for `messages list` (a stored one gets
    # these from filing).
    about: dict[str, Any] = field(default_factory=dict)


class MailboxPoller:
    """Reads one folder of one IMAP source into the spool. See the module docstring."""

    def __init__(
        self,
        source: ImapSourceConfig,
        folder: str,
        db: Database,
        spool: SpoolWriter,
        recipients: Recipients,
        clock: Clock,
        worker_name: str,
        max_message_size: int,
        header_limits: HeaderLimits,
        connector: Connector = connect,
        stop: threading.Event | None = None,
    ) -> None:
        self.source = source
        self.folder = folder
        self.db = db
        self.spool = spool
        self.recipients = recipients
        self.clock = clock
        self.worker_name = worker_name
        self.max_message_size = max_message_size
        self.header_limits = header_limits  # as SMTP's: over them, stored rejected
        self.connector = connector
        self.stop = stop or threading.Event()
        self.mailbox = source.mailbox(folder)
        self._log = log.bind(source=source.name, folder=folder)
        self._uidvalidity = 0
        self._last_uid = 0
        self._hold = FolderHold(db, clock, Claimant(source.name, folder, worker_name))
        self._mover = FolderMover(self.mailbox)
        self.namespaces = Namespaces()

    # -- running --------------------------------------------------------------------------

    def run(
        self, *, once: bool, progress: Progress | None = None, max_failures: int = 8
    ) -> SyncResult:
        """Read the folder. `once`: until it is drained, then return; otherwise until
        `stop` is set, waiting for new mail in between. Connection failures reconnect
        with back-off (`max_failures` in a row ends a `once` run with ImapProblem)."""
        result = SyncResult()
        backoff = BACKOFF_MIN_SECONDS
        refused_backoff = REFUSED_BACKOFF_MIN_SECONDS
        failures = 0
        while not self.stop.is_set():
            try:
                if not self._hold.claim():
                    if once:
                        raise ImapProblem(
                            f"{self.mailbox} is being read by another poller right now; "
                            "try again when it has finished (or stop the other gateway)"
                        )
                    self.stop.wait(LEASE.total_seconds() / 4)
                    continue
                try:
                    with self._connected() as client:
                        self._open_folder(client)
                        while not self.stop.is_set():
                            self._settle_pending(client, result)
                            self._drain(client, result, progress)
                            # Only a whole pass resets the back-off: a session that opens
                            # and then fails must not reconnect every second.
                            backoff, failures = BACKOFF_MIN_SECONDS, 0
                            refused_backoff = REFUSED_BACKOFF_MIN_SECONDS
                            self._hold.recovered()
                            if once:
                                if self._mover.refused is not None:
                                    raise self._mover.refused
                                return result
                            wait_for_mail(
                                client,
                                self.source,
                                self.stop,
                                self._hold.renew,
                                LEASE_RENEW_SECONDS,
                            )
                except SESSION_ERRORS as exc:
                    self._record_error(exc)  # while we still hold the checkpoint
                    raise
                finally:
                    self._hold.release()
            except LeaseLost:
                self._log.warning("imap_lease_lost")
            except (LoginError, ConfigError, TokenRefused) as exc:
                if once:
                    raise ImapProblem(explain(self.source, exc)) from exc
                if isinstance(exc, TokenRefused) and not exc.permanent:
                    self.stop.wait(backoff)  # the provider's hiccup: as a dropped connection
                    backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
                    continue
                # Not transient: retrying fast would only lock the account (or get the app
                # throttled by its provider); the wait doubles until the admin acts.
                self.stop.wait(refused_backoff)
                refused_backoff = min(refused_backoff * 2, REFUSED_BACKOFF_MAX_SECONDS)
            except (*CONNECTION_ERRORS, IMAPClientError) as exc:
                failures += 1
                result.errors.append(explain(self.source, exc))
                if once and failures >= max_failures:
                    raise ImapProblem(
                        f"gave up after {failures} attempts: {explain(self.source, exc)}"
                    ) from exc
                self.stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
        return result

    @contextlib.contextmanager
    def _connected(self) -> Iterator[MailboxClient]:
        client = self.connector(self.source)
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def _open_folder(self, client: MailboxClient) -> None:
        self.namespaces = read_namespaces(client)
        info = client.select_folder(self.namespaces.resolve(self.folder))
        uidvalidity = int(info[b"UIDVALIDITY"])
        resumed = self._hold.resume(uidvalidity)
        previous = resumed.previous_uidvalidity
        if previous is not None and previous != uidvalidity:
            # Old UIDs mean nothing now; fingerprints keep old mail from being refiled.
            self._log.warning("imap_uidvalidity_changed", old=previous, new=uidvalidity)
        self._uidvalidity = uidvalidity
        self._last_uid = resumed.last_uid

    # -- one pass ---------------------------------------------------------------------------

    def _drain(self, client: MailboxClient, result: SyncResult, progress: Progress | None) -> None:
        # "n:*" always matches the highest UID, even below n: filter.
        uids = sorted(
            u for u in client.search(["UID", f"{self._last_uid + 1}:*"]) if u > self._last_uid
        )
        done = 0
        if progress is not None:
            progress(0, len(uids))
        for start in range(0, len(uids), self.source.batch_size):
            if self.stop.is_set():
                return
            batch = uids[start : start + self.source.batch_size]
            taken = self._fetch(client, batch)
            outcomes = self._store(batch, taken, result)
            self._settle(client, outcomes, result)
            done += len(batch)
            if progress is not None:
                progress(done, len(uids))

    def _fetch(self, client: MailboxClient, uids: list[int]) -> list[_Taken]:
        sizes = client.fetch(uids, ["RFC822.SIZE"])
        small = [
            u for u in uids if int(sizes.get(u, {}).get(b"RFC822.SIZE", 0)) <= self.max_message_size
        ]
        large = [u for u in uids if u in sizes and u not in small]
        taken: list[_Taken] = []
        if small:
            for uid, data in sorted(client.fetch(small, ["BODY.PEEK[]", "INTERNALDATE"]).items()):
                taken.append(self._route(uid, data.get(b"BODY[]") or b"", data, None))
        if large:
            fetched = client.fetch(large, ["BODY.PEEK[HEADER]", "INTERNALDATE"])
            for uid, data in sorted(fetched.items()):
                size = int(sizes[uid][b"RFC822.SIZE"])
                why = (
                    f"message of {size} bytes is larger than smtp.max_message_size "
                    f"({self.max_message_size}); only its header is kept here, the message "
                    f"is in {self._target('rejected')!r} on the IMAP server"
                )
                taken.append(self._route(uid, data.get(b"BODY[HEADER]") or b"", data, why))
        return sorted(taken, key=lambda t: t.uid)

    def _route(self, uid: int, raw: bytes, data: dict[bytes, Any], refusal: str | None) -> _Taken:
        # A header over the intake limits is never parsed (Python's parser is super-linear
        # in a field's length): the message is recorded rejected, as SMTP refuses it.
        overflow = header_overflow(raw, self.header_limits)
        if overflow is not None:
            refusal = refusal or f"{overflow} (the [smtp] header limits); not parsed"
        headers = parse_header_block(b"" if overflow else raw)
        if self.source.routes_by_recipient:
            grammar = self.recipients.grammar
            candidates = candidate_recipients(
                headers,
                lambda a: grammar.parse(a).kind not in (AddressKind.FOREIGN, AddressKind.INVALID),
            )
        else:
            candidates = [self.source.route]
        accepted: list[str] = []
        refused: list[str] = []
        for address in candidates:
            destination = self.recipients.resolve(address)
            if destination.accepted:
                accepted.append(address)
            else:
                refused.append(f"{address}: {destination.refusal}")
        if refusal is None and not accepted:
            refusal = (
                "no address of ours in Delivered-To, X-Original-To, To or Cc"
                if not candidates
                else "no recipient could be used: " + "; ".join(refused)
            )
        internal = data.get(b"INTERNALDATE")
        received_at = internal if isinstance(internal, datetime) and internal.tzinfo else None
        return _Taken(
            uid=uid,
            raw=raw,
            sha256=hashlib.sha256(raw).hexdigest(),
            fingerprint=fingerprint(headers.get("Message-ID"), accepted or candidates, raw),
            received_at=received_at or self.clock.now(),
            recipients=accepted,
            refusal=refusal,
            about=rejected_record(headers, candidates) if refusal is not None else {},
        )

    def _store(self, uids: list[int], taken: list[_Taken], result: SyncResult) -> dict[int, str]:
        """Store what is new, record every message taken, move the checkpoint past `uids`:
        one transaction. Returns uid -> outcome (stored, rejected, duplicate)."""
        with self.db.read() as s:
            known = dict(
                s.execute(
                    select(ImapMessage.fingerprint, ImapMessage.inbound_message_id).where(
                        ImapMessage.source == self.source.name,
                        ImapMessage.fingerprint.in_({t.fingerprint for t in taken}),
                    )
                ).all()
            )
        arrivals: list[tuple[_Taken, Arrival]] = []
        repeats: list[_Taken] = []
        for t in taken:
            if t.fingerprint in known:
                repeats.append(t)
                continue
            known[t.fingerprint] = None  # twice in one batch: the second is a repeat
            arrivals.append(
                (
                    t,
                    Arrival(
                        queue_id=new_queue_id(),
                        source="imap",
                        received_at=t.received_at,
                        mail_from=t.about.get("mail_from", ""),
                        rcpt_tos=t.about.get("rcpt_tos", t.recipients),
                        content=t.raw,
                        peer=f"{self.source.host}:{self.source.port}",
                        source_mailbox=self.mailbox,
                        rejected_reason=t.refusal,
                        sha256=t.sha256,
                        subject=t.about.get("subject"),
                        header_message_id=t.about.get("header_message_id"),
                    ),
                )
            )
        now = self.clock.now()
        outcomes: dict[int, str] = {}

        def record(s: Session, ids: list[int]) -> None:
            rows = []
            for (t, _), row_id in zip(arrivals, ids, strict=True):
                outcome = "rejected" if t.refusal else "stored"
                outcomes[t.uid] = outcome
                known[t.fingerprint] = row_id
                rows.append(self._row(t, outcome, row_id, now))
            for t in repeats:
                outcomes[t.uid] = "duplicate"
                rows.append(self._row(t, "duplicate", known.get(t.fingerprint), now))
            if rows:  # rows as parameters: one statement compiled once, executed for many
                s.execute(upsert_insert(s)(ImapMessage).on_conflict_do_nothing(), rows)
            rejected_ids = [i for (t, _), i in zip(arrivals, ids, strict=True) if t.refusal]
            if rejected_ids:
                inbound_queue.close_rejected(s, rejected_ids, now)
            self._hold.advance(s, max(uids), now)

        if arrivals:
            self.spool.store_batch([a for _, a in arrivals], also=record)
        else:
            with self.db.write() as s:
                record(s, [])
        self._last_uid = max(uids)
        result.taken += len(taken)
        result.stored += sum(1 for o in outcomes.values() if o == "stored")
        result.rejected += sum(1 for o in outcomes.values() if o == "rejected")
        result.duplicates += len(repeats)
        for t, _ in arrivals:
            self._log.info(
                "imap_taken", uid=t.uid, outcome=outcomes[t.uid], recipients=t.recipients
            )
        return outcomes

    def _row(
        self, t: _Taken, outcome: str, inbound_id: int | None, now: datetime
    ) -> dict[str, Any]:
        return {
            "source": self.source.name,
            "folder": self.folder,
            "uidvalidity": self._uidvalidity,
            "uid": t.uid,
            "sha256": t.sha256,
            "fingerprint": t.fingerprint,
            "outcome": outcome,
            "inbound_message_id": inbound_id,
            "taken_at": now,
            "settled_at": None,
        }

    # -- settling: move or flag on the server, only after the batch is stored -------------

    def _settle_pending(self, client: MailboxClient, result: SyncResult) -> None:
        """Messages stored in an earlier session whose move did not happen (the server
        dropped the connection in between)."""
        with self.db.read() as s:
            pending = dict(
                s.execute(
                    select(ImapMessage.uid, ImapMessage.outcome).where(
                        ImapMessage.source == self.source.name,
                        ImapMessage.folder == self.folder,
                        ImapMessage.uidvalidity == self._uidvalidity,
                        ImapMessage.settled_at.is_(None),
                    )
                ).all()
            )
        if pending and not self._mover.waiting:
            self._log.info("imap_settling_pending", count=len(pending))
            self._settle(client, {int(u): o for u, o in pending.items()}, result)

    def _settle(self, client: MailboxClient, outcomes: dict[int, str], result: SyncResult) -> None:
        if not outcomes:
            return
        if self.source.after == "move" and self._mover.waiting:
            return  # refused a moment ago: left recorded unsettled, retried later
        by_target: dict[str, list[int]] = {}
        for uid, outcome in sorted(outcomes.items()):
            target = self._target("rejected" if outcome == "rejected" else "processed")
            by_target.setdefault(target, []).append(uid)
        settled: list[int] = []
        for target, uids in by_target.items():
            if self.source.after == "flag":
                client.add_flags(uids, [self.source.flag], silent=True)
            else:
                try:
                    if not self._mover.move(client, uids, target):
                        self._log.warning("imap_no_uidplus", hint="copied, not expunged")
                except FolderRefused as exc:
                    self._record_error(exc, session_ended=False)  # reading goes on
                    continue
            settled.extend(uids)
        if not settled:
            return
        with self.db.write() as s:
            s.execute(
                update(ImapMessage)
                .where(
                    ImapMessage.source == self.source.name,
                    ImapMessage.folder == self.folder,
                    ImapMessage.uidvalidity == self._uidvalidity,
                    ImapMessage.uid.in_(settled),
                )
                .values(settled_at=self.clock.now())
            )
        result.settled += len(settled)

    def _target(self, role: str) -> str:
        name = self.source.rejected_folder if role == "rejected" else self.source.processed_folder
        return self.namespaces.resolve(name)

    def _record_error(self, exc: BaseException, *, session_ended: bool = True) -> None:
        text = explain(self.source, exc)
        code = exc.code if isinstance(exc, TokenRefused) else None
        self._log.warning("imap_error", error=text, code=code)
        self._hold.record_error(text, code, session_ended=session_ended)

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
- The checkpoint row carries a lease: one poller per mailbox at a time, across nodes.
- IDLE when the server offers it (and `idle = true`), polling otherwise; connection errors
  back off from 1 s to 60 s and reconnect.
"""

from __future__ import annotations

import contextlib
import hashlib
import imaplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from typing import Any, Protocol

import structlog
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from gateway.clock import Clock
from gateway.config import ConfigError, ImapSourceConfig
from gateway.errors import GatewayError
from gateway.inbound.recipients import Recipients
from gateway.inbound.spool import Arrival, SpoolWriter, new_queue_id
from gateway.routing.addresses import AddressKind
from gateway.storage.db import Database, upsert_insert
from gateway.storage.models import ImapCheckpoint, ImapMessage, InboundMessage

log = structlog.get_logger("gateway.imap")

LEASE = timedelta(minutes=2)
LEASE_RENEW_SECONDS = 30.0
IDLE_RESTART_SECONDS = 9 * 60.0  # RFC 2177: re-issue IDLE well before the 29-minute timeout
BACKOFF_MIN_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
ROUTING_HEADERS: tuple[tuple[str, ...], ...] = (("Delivered-To",), ("X-Original-To",), ("To", "Cc"))

# What a dropped or unreachable server raises (imaplib's abort is an IMAPClientError).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, imaplib.IMAP4.abort, EOFError)


class MailboxClient(Protocol):
    """The part of imapclient's IMAPClient the poller uses (tests may pass another)."""

    def select_folder(self, folder: str, readonly: bool = False) -> dict[bytes, Any]: ...
    def search(self, criteria: Any = "ALL", charset: str | None = None) -> list[int]: ...
    def fetch(
        self, messages: Sequence[int], data: Sequence[str]
    ) -> dict[int, dict[bytes, Any]]: ...
    def has_capability(self, capability: str) -> bool: ...
    def folder_exists(self, folder: str) -> bool: ...
    def create_folder(self, folder: str) -> Any: ...
    def list_folders(self, directory: str = "", pattern: str = "*") -> list[Any]: ...
    def move(self, messages: Sequence[int], folder: str) -> Any: ...
    def copy(self, messages: Sequence[int], folder: str) -> Any: ...
    def add_flags(
        self, messages: Sequence[int], flags: Sequence[str], silent: bool = False
    ) -> Any: ...
    def expunge(self, messages: Sequence[int] | None = None) -> Any: ...
    def idle(self) -> Any: ...
    def idle_check(self, timeout: float | None = None) -> list[Any]: ...
    def idle_done(self) -> Any: ...
    def noop(self) -> Any: ...
    def logout(self) -> Any: ...


Connector = Callable[[ImapSourceConfig], MailboxClient]


class ImapProblem(GatewayError):
    """Something a mail admin must fix or wait for, said in plain words."""


class LeaseLost(GatewayError):
    """Another poller took this mailbox over (our lease expired): stop at once."""


def connect(source: ImapSourceConfig) -> IMAPClient:
    """Open, secure and log in, as the source's configuration says."""
    if source.tls == "implicit":
        client = IMAPClient(
            source.host,
            source.port,
            ssl=True,
            ssl_context=ssl.create_default_context(),
            timeout=source.timeout_seconds,
        )
    else:
        client = IMAPClient(source.host, source.port, ssl=False, timeout=source.timeout_seconds)
        if source.tls == "starttls":
            client.starttls(ssl.create_default_context())
    client.normalise_times = False  # INTERNALDATE as an aware datetime
    try:
        client.login(source.user, source.password())
    except BaseException:
        with contextlib.suppress(Exception):
            client.shutdown()
        raise
    return client


def explain(source: ImapSourceConfig, exc: BaseException) -> str:
    """What went wrong, for a mail admin rather than a programmer."""
    where = f"{source.host}:{source.port}"
    if isinstance(exc, ConfigError | ImapProblem):
        return str(exc)
    if isinstance(exc, LoginError):
        return (
            f"login refused for {source.user!r} on {where}: wrong user name or password, or "
            f"the account may not use IMAP (server said: {_text(exc)})"
        )
    if isinstance(exc, socket.gaierror):
        return f"cannot find the IMAP server {source.host!r} in DNS ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {where}: connection refused (is the server up, the port right?)"
    if isinstance(exc, TimeoutError):
        return f"no answer from {where} within {source.timeout_seconds} s"
    if isinstance(exc, ssl.SSLError):
        hint = "try tls = 'starttls' with port 143" if source.tls == "implicit" else "check tls"
        return f"TLS with {where} failed: {exc.reason or exc} ({hint})"
    if isinstance(exc, imaplib.IMAP4.abort | EOFError):
        return f"the server at {where} closed the connection ({_text(exc)})"
    if isinstance(exc, OSError):
        return f"cannot talk to {where}: {exc.strerror or exc}"
    return f"IMAP error from {where}: {_text(exc)}"


def _text(exc: BaseException) -> str:
    text = str(exc)
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text or type(exc).__name__


# -- routing and fingerprints -------------------------------------------------------------------


def candidate_recipients(headers: Message, is_ours: Callable[[str], bool]) -> list[str]:
    """Our addresses this message was delivered to: Delivered-To, else X-Original-To, else
    To and Cc. The first header family holding an address of ours wins (a forwarded
    message's To names the original recipient, Delivered-To the mailbox it reached)."""
    for names in ROUTING_HEADERS:
        values = [v for name in names for v in headers.get_all(name, [])]
        found: list[str] = []
        for _, address in getaddresses([str(v) for v in values]):
            address = address.strip()
            if address and is_ours(address) and address.lower() not in map(str.lower, found):
                found.append(address)
        if found:
            return found
    return []


def fingerprint(message_id: str | None, recipients: Sequence[str], raw: bytes) -> str:
    """The same message read again has the same fingerprint, whatever its UID.

    The body is hashed without the header block, which servers may rewrite (Status:,
    X-Keywords:); the recipients are part of it because a hosted mailbox keeps one copy,
    with the same Message-ID, per address the message reached.
    """
    end = _header_end(raw)
    body = raw[end:].lstrip(b"\r\n")
    parts = [
        (message_id or "").strip(),
        ",".join(sorted(r.lower() for r in recipients)),
        hashlib.sha256(body).hexdigest(),
    ]
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


def _header_end(raw: bytes) -> int:
    """Where the header block ends (the blank line), or the end of a header-only message."""
    found = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    return min(found) if found else len(raw)


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
        self.connector = connector
        self.stop = stop or threading.Event()
        self.mailbox = source.mailbox(folder)
        self._log = log.bind(source=source.name, folder=folder)
        self._uidvalidity = 0
        self._last_uid = 0
        self._renewed_at = 0.0
        self._folders_seen: set[str] = set()

    # -- running --------------------------------------------------------------------------

    def run(
        self, *, once: bool, progress: Progress | None = None, max_failures: int = 8
    ) -> SyncResult:
        """Read the folder. `once`: until it is drained, then return; otherwise until
        `stop` is set, waiting for new mail in between. Connection failures reconnect
        with back-off (`max_failures` in a row ends a `once` run with ImapProblem)."""
        result = SyncResult()
        backoff = BACKOFF_MIN_SECONDS
        failures = 0
        while not self.stop.is_set():
            try:
                if not self._claim():
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
                        backoff, failures = BACKOFF_MIN_SECONDS, 0
                        while not self.stop.is_set():
                            self._settle_pending(client, result)
                            self._drain(client, result, progress)
                            if once:
                                return result
                            self._wait_for_mail(client)
                finally:
                    self._release()
            except LeaseLost:
                self._log.warning("imap_lease_lost")
            except (LoginError, ConfigError) as exc:
                # Not transient: retrying fast would only lock the account.
                self._record_error(exc)
                if once:
                    raise ImapProblem(explain(self.source, exc)) from exc
                self.stop.wait(BACKOFF_MAX_SECONDS)
            except (*CONNECTION_ERRORS, IMAPClientError) as exc:
                failures += 1
                self._record_error(exc)
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
        info = client.select_folder(self.folder)
        uidvalidity = int(info[b"UIDVALIDITY"])
        with self.db.write() as s:
            checkpoint = self._checkpoint(s)
            if checkpoint.uidvalidity != uidvalidity:
                if checkpoint.uidvalidity is not None:
                    # Old UIDs mean nothing now; fingerprints keep old mail from being refiled.
                    self._log.warning(
                        "imap_uidvalidity_changed", old=checkpoint.uidvalidity, new=uidvalidity
                    )
                checkpoint.uidvalidity = uidvalidity
                checkpoint.last_uid = 0
            self._uidvalidity = uidvalidity
            self._last_uid = int(checkpoint.last_uid)

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
                    f"is in {self.source.rejected_folder!r} on the IMAP server"
                )
                taken.append(self._route(uid, data.get(b"BODY[HEADER]") or b"", data, why))
        return sorted(taken, key=lambda t: t.uid)

    def _route(self, uid: int, raw: bytes, data: dict[bytes, Any], refusal: str | None) -> _Taken:
        # The header block only: the parser would otherwise walk the whole body line by line.
        headers = BytesHeaderParser(policy=compat32).parsebytes(raw[: _header_end(raw)])
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
                        mail_from="",
                        rcpt_tos=t.recipients,
                        content=t.raw,
                        peer=f"{self.source.host}:{self.source.port}",
                        source_mailbox=self.mailbox,
                        rejected_reason=t.refusal,
                        sha256=t.sha256,
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
                s.execute(
                    update(InboundMessage)
                    .where(InboundMessage.id.in_(rejected_ids))
                    .values(processed_at=now)
                )
            self._advance(s, max(uids), now)

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
        if pending:
            self._log.info("imap_settling_pending", count=len(pending))
            self._settle(client, {int(u): o for u, o in pending.items()}, result)

    def _settle(self, client: MailboxClient, outcomes: dict[int, str], result: SyncResult) -> None:
        if not outcomes:
            return
        by_target: dict[str, list[int]] = {}
        for uid, outcome in sorted(outcomes.items()):
            target = (
                self.source.rejected_folder
                if outcome == "rejected"
                else self.source.processed_folder
            )
            by_target.setdefault(target, []).append(uid)
        for target, uids in by_target.items():
            if self.source.after == "flag":
                client.add_flags(uids, [self.source.flag], silent=True)
            else:
                self._move(client, uids, target)
        with self.db.write() as s:
            s.execute(
                update(ImapMessage)
                .where(
                    ImapMessage.source == self.source.name,
                    ImapMessage.folder == self.folder,
                    ImapMessage.uidvalidity == self._uidvalidity,
                    ImapMessage.uid.in_(list(outcomes)),
                )
                .values(settled_at=self.clock.now())
            )
        result.settled += len(outcomes)

    def _move(self, client: MailboxClient, uids: list[int], target: str) -> None:
        if target not in self._folders_seen:
            if not client.folder_exists(target):
                client.create_folder(target)
            self._folders_seen.add(target)
        if client.has_capability("MOVE"):
            client.move(uids, target)
            return
        # RFC 6851 fallback: copy, then remove exactly these UIDs (UIDPLUS), never others.
        client.copy(uids, target)
        client.add_flags(uids, [r"\Deleted"], silent=True)
        if client.has_capability("UIDPLUS"):
            client.expunge(uids)
        else:
            self._log.warning("imap_no_uidplus", hint="copied and flagged \\Deleted, not expunged")

    # -- waiting ------------------------------------------------------------------------------

    def _wait_for_mail(self, client: MailboxClient) -> None:
        if self.source.idle and client.has_capability("IDLE"):
            client.idle()
            try:
                started = time.monotonic()
                while not self.stop.is_set() and time.monotonic() - started < IDLE_RESTART_SECONDS:
                    responses = client.idle_check(timeout=1.0)
                    if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                        return
                    self._renew_lease()
            finally:
                client.idle_done()
            return
        deadline = time.monotonic() + self.source.poll_seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            self.stop.wait(min(LEASE_RENEW_SECONDS, max(0.0, deadline - time.monotonic())))
            self._renew_lease()
        client.noop()  # new messages become visible to the next SEARCH

    # -- checkpoint and lease ---------------------------------------------------------------

    def _this_mailbox(self) -> Any:
        return and_(ImapCheckpoint.source == self.source.name, ImapCheckpoint.folder == self.folder)

    def _held_by_us(self) -> Any:
        return and_(self._this_mailbox(), ImapCheckpoint.claimed_by == self.worker_name)

    def _claimable(self, now: datetime) -> Any:
        return and_(
            self._this_mailbox(),
            or_(
                ImapCheckpoint.claimed_by.is_(None),
                ImapCheckpoint.claimed_by == self.worker_name,
                ImapCheckpoint.lease_until < now,
            ),
        )

    def _claim(self) -> bool:
        now = self.clock.now()
        with self.db.write() as s:
            s.execute(
                upsert_insert(s)(ImapCheckpoint)
                .values(source=self.source.name, folder=self.folder, last_uid=0)
                .on_conflict_do_nothing()
            )
            claimed = s.execute(
                update(ImapCheckpoint)
                .where(self._claimable(now))
                .values(claimed_by=self.worker_name, lease_until=now + LEASE)
                .returning(ImapCheckpoint.id)
            ).first()
        self._renewed_at = time.monotonic()
        return claimed is not None

    def _renew_lease(self) -> None:
        if time.monotonic() - self._renewed_at < LEASE_RENEW_SECONDS:
            return
        now = self.clock.now()
        with self.db.write() as s:
            self._guarded(s, now, lease_until=now + LEASE)
        self._renewed_at = time.monotonic()

    def _advance(self, s: Session, last_uid: int, now: datetime) -> None:
        self._guarded(
            s, now, last_uid=last_uid, lease_until=now + LEASE, last_sync_at=now, last_error=None
        )
        self._renewed_at = time.monotonic()

    def _guarded(self, s: Session, now: datetime, **values: Any) -> None:
        done = s.execute(
            update(ImapCheckpoint)
            .where(self._held_by_us())
            .values(**values)
            .returning(ImapCheckpoint.id)
        ).first()
        if done is None:
            raise LeaseLost(self.mailbox)

    def _checkpoint(self, s: Session) -> ImapCheckpoint:
        checkpoint = s.execute(
            select(ImapCheckpoint).where(self._held_by_us())
        ).scalar_one_or_none()
        if checkpoint is None:
            raise LeaseLost(self.mailbox)
        return checkpoint

    def _release(self) -> None:
        with contextlib.suppress(Exception), self.db.write() as s:
            s.execute(
                update(ImapCheckpoint)
                .where(self._held_by_us())
                .values(claimed_by=None, lease_until=None)
            )

    def _record_error(self, exc: BaseException) -> None:
        text = explain(self.source, exc)
        self._log.warning("imap_error", error=text)
        with contextlib.suppress(Exception), self.db.write() as s:
            s.execute(update(ImapCheckpoint).where(self._this_mailbox()).values(last_error=text))


# -- `gateway imap test` -------------------------------------------------------------------------


def check_source(source: ImapSourceConfig, connector: Connector = connect) -> list[str]:
    """Log in and look at the folders; returns what was found, line by line.

    Raises ImapProblem saying what is wrong (login, TLS, network, a missing folder).
    """
    lines: list[str] = []
    try:
        client = connector(source)
    except (ConfigError, LoginError, *CONNECTION_ERRORS, IMAPClientError) as exc:
        raise ImapProblem(explain(source, exc)) from exc
    try:
        lines.append(
            f"logged in as {source.user} on {source.host}:{source.port} (tls {source.tls})"
        )
        idle = (
            "yes"
            if client.has_capability("IDLE")
            else f"no (polling every {source.poll_seconds:g} s)"
        )
        move = "yes" if client.has_capability("MOVE") else "no"
        lines.append(f"server offers IDLE: {idle}, MOVE: {move}")
        names = [_folder_name(entry) for entry in client.list_folders()]
        missing = [f for f in source.folders if f not in names]
        if missing:
            raise ImapProblem(
                f"folder {', '.join(repr(f) for f in missing)} does not exist on "
                f"{source.host}; folders there: {', '.join(sorted(names)) or '(none)'}"
            )
        for folder in source.folders:
            info = client.select_folder(folder, readonly=True)
            lines.append(
                f"folder {folder!r}: {int(info.get(b'EXISTS', 0))} message(s), "
                f"UIDVALIDITY {int(info[b'UIDVALIDITY'])}"
            )
        if source.after == "move":
            for target in (source.processed_folder, source.rejected_folder):
                state = "exists" if target in names else "will be created on first use"
                lines.append(f"folder {target!r}: {state}")
        else:
            lines.append(f"messages taken are flagged {source.flag} and left in place")
    except (*CONNECTION_ERRORS, IMAPClientError) as exc:
        raise ImapProblem(explain(source, exc)) from exc
    finally:
        with contextlib.suppress(Exception):
            client.logout()
    return lines


def _folder_name(entry: Any) -> str:
    name = entry[2] if isinstance(entry, tuple | list) and len(entry) == 3 else entry
    return name.decode() if isinstance(name, bytes) else str(name)

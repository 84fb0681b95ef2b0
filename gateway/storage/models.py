"""Tables. The inbound stages talk through these durable rows, never through memory.

Why this module is long: it is the one declaration of the schema (every table, its
constraints and states), which the migrations are checked against; split, the schema would
be read in pieces.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gateway.routing.sender_policy import PolicyKind


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(timezone=True)}


def one_of(table: str, column: str, values: Iterable[str]) -> CheckConstraint:
    """The database refuses any other value in `column` (migration 0005 adds the same)."""
    allowed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=f"ck_{table}_{column}")


class MessageStatus(StrEnum):
    """Where an inbound message stands. Every message ends in a state the firm can see."""

    RECEIVED = "received"  # durably stored, acknowledged with 250, not yet filed
    FILING = "filing"  # claimed by a filing worker (lease in lease_until)
    FILED = "filed"  # every document filed
    PARTLY_FILED = "partly_filed"  # some documents filed, some refused or already there
    DUPLICATE = "duplicate"  # every document was already in the company's folders
    REJECTED = "rejected"  # nothing could be filed; `reason` says why
    BOT_MAIL = "bot_mail"  # went to a cabinet's bot mailbox (R6)
    BOUNCE = "bounce"  # a delivery report for one of our deliveries, applied to the ledger
    HELD = "held"  # filing kept failing; moved aside for an admin (reason says why)
    # Failed its sender policy, carries malware or scored as spam: not filed, no delivery;
    # kept (the message with its Authentication-Results, as a blob) until released or purged.
    QUARANTINED = "quarantined"
    DISCARDED = "discarded"  # quarantined, then deleted by hand or purged: the record stays


FINAL_STATUSES = frozenset(MessageStatus) - {MessageStatus.RECEIVED, MessageStatus.FILING}


class Cabinet(Base):
    __tablename__ = "cabinets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    contact_email: Mapped[str | None] = mapped_column(String(254))
    # R6: forward bot mail to `contact_email` (gateway/outbound/forward.py); off by default.
    forward_bot_mail: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime]


class Company(Base):
    __tablename__ = "companies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    cabinet_id: Mapped[int] = mapped_column(ForeignKey("cabinets.id"))
    name: Mapped[str] = mapped_column(String(200))
    fiscal_year_end: Mapped[str] = mapped_column(String(5))  # "MM-DD"
    created_at: Mapped[datetime]
    # What e-invoices know it by (gateway/einvoice/identifiers.py), compact; optional.
    siren: Mapped[str | None] = mapped_column(String(9))
    siret: Mapped[str | None] = mapped_column(String(14))
    vat_number: Mapped[str | None] = mapped_column(String(20))


class Folder(Base):
    __tablename__ = "folders"
    __table_args__ = (UniqueConstraint("company_id", "path"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("folders.id"))
    name: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime]


class InboundMessage(Base):
    """The inbound log: one row per message acknowledged (SMTP) or taken (IMAP)."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        Index("ix_inbound_messages_status_lease", "status", "lease_until"),
        one_of("inbound_messages", "status", MessageStatus),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    queue_id: Mapped[str] = mapped_column(String(32), unique=True)
    source: Mapped[str] = mapped_column(String(16))  # smtp | imap
    source_mailbox: Mapped[str | None] = mapped_column(String(512))
    received_at: Mapped[datetime]
    peer: Mapped[str | None] = mapped_column(String(128))
    helo: Mapped[str | None] = mapped_column(String(255))
    mail_from: Mapped[str] = mapped_column(String(512))
    rcpt_tos: Mapped[list[str]] = mapped_column(JSON)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    spool_segment: Mapped[str] = mapped_column(String(255))
    spool_offset: Mapped[int] = mapped_column(BigInteger)
    header_message_id: Mapped[str | None] = mapped_column(String(998))
    subject: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=MessageStatus.RECEIVED)
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None]
    processed_at: Mapped[datetime | None]
    # Issue 11: SPF, DKIM, DMARC and ARC results (AuthenticationResults.to_json()).
    authentication: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The quarantined copy (the message with our Authentication-Results), in the blob store.
    quarantine_sha256: Mapped[str | None] = mapped_column(String(64))
    # Released from quarantine by hand: filed without the checks that quarantined it.
    checks_waived: Mapped[bool] = mapped_column(server_default=false())


class HistoryLine:
    """The columns of every queue's history: when, from which status to which, and why
    (the queue modules write them through `queues.base.History`)."""

    at: Mapped[datetime]
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)


class InboundMessageEvent(HistoryLine, Base):
    """The history of an inbound message: every move of its status, with what caused it."""

    __tablename__ = "inbound_message_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    inbound_message_id: Mapped[int] = mapped_column(ForeignKey("inbound_messages.id"), index=True)


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (
        # The duplicate rule: the same bytes are filed once per company.
        UniqueConstraint("company_id", "sha256"),
        # Keyset pages in (placed_at, id) order: a company's, a folder's, everyone's.
        Index("ix_documents_company_placed", "company_id", "placed_at", "id"),
        Index("ix_documents_folder_placed", "folder_id", "placed_at", "id"),
        Index("ix_documents_placed", "placed_at", "id"),
        # The duplicate rule for e-invoices: the same invoice is filed once per company,
        # whatever its bytes (NULL for every other document: never equal).
        Index("ux_documents_company_invoice", "company_id", "invoice_key", unique=True),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id"))
    filename: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))  # smtp | imap | upload
    source_mailbox: Mapped[str | None] = mapped_column(String(512))
    origin: Mapped[str] = mapped_column(String(255))  # attachment, inline, zip:<name>, ...
    placed_at: Mapped[datetime]
    inbound_message_id: Mapped[int | None] = mapped_column(
        ForeignKey("inbound_messages.id"), index=True
    )
    # An e-invoice: what it says (gateway.einvoice.model.Invoice.to_json), the checks made
    # against the company, or why it could not be read.
    invoice: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # seller|number|type|issue date (gateway.einvoice.filing.invoice_key); see the index.
    invoice_key: Mapped[str | None] = mapped_column(String(400))


class DuplicateDocument(Base):
    """A file that arrived again for a company that already has it: recorded, not refiled."""

    __tablename__ = "duplicate_documents"
    __table_args__ = (UniqueConstraint("inbound_message_id", "company_id", "sha256"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    inbound_message_id: Mapped[int] = mapped_column(ForeignKey("inbound_messages.id"))
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"))
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    seen_at: Mapped[datetime]
    # Why it is the same document (NULL: the same bytes): "same invoice F-1 of SIREN …".
    reason: Mapped[str | None] = mapped_column(String(400))


class BotMail(Base):
    """A message for one of the gateway's bot identities, kept for the cabinet to read (R6)."""

    __tablename__ = "bot_mail"
    __table_args__ = (UniqueConstraint("inbound_message_id", "recipient"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    inbound_message_id: Mapped[int] = mapped_column(ForeignKey("inbound_messages.id"))
    cabinet_id: Mapped[int | None] = mapped_column(ForeignKey("cabinets.id"), index=True)
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id"))
    recipient: Mapped[str] = mapped_column(String(320))
    partner: Mapped[str | None] = mapped_column(String(63))
    mail_from: Mapped[str] = mapped_column(String(512))
    subject: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime]


class ForwardStatus(StrEnum):
    """A bot mail forward's state machine; see gateway/storage/queues/forwards.py."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"


class BotMailForward(Base):
    """A bot mail on its way to the cabinet's contact address (R6), queued by the filer in
    the transaction that writes the bot mail; at most one per bot mail."""

    __tablename__ = "bot_mail_forwards"
    __table_args__ = (
        Index("ix_bot_mail_forwards_status_due", "status", "due_at"),
        one_of("bot_mail_forwards", "status", ForwardStatus),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bot_mail_id: Mapped[int] = mapped_column(ForeignKey("bot_mail.id"), unique=True)
    to_address: Mapped[str] = mapped_column(String(320))  # the contact when it was queued
    status: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class BotMailForwardEvent(HistoryLine, Base):
    """The history of a bot mail forward: every move of its status, with what caused it."""

    __tablename__ = "bot_mail_forward_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    forward_id: Mapped[int] = mapped_column(ForeignKey("bot_mail_forwards.id"), index=True)


# -- outbound: connections, switches and the delivery ledger (R9–R17) -------------------------


class Connection(Base):
    """A company connected to a partner tool, with the address the cabinet entered."""

    __tablename__ = "connections"
    __table_args__ = (UniqueConstraint("company_id", "partner"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    partner: Mapped[str] = mapped_column(String(63))
    entered_address: Mapped[str] = mapped_column(String(320))
    destination: Mapped[str] = mapped_column(String(320))
    sender: Mapped[str | None] = mapped_column(String(320))  # None: the gateway's sender
    created_at: Mapped[datetime]
    # Deleted connections stay, so that the ledger keeps what was sent (R13); adding the
    # partner again brings the row back with the new address.
    deleted_at: Mapped[datetime | None]


class Switch(Base):
    """A connection switched on for a folder and its sub-folders (R9), from `turned_on_at`
    (R10: only documents placed after that are sent)."""

    __tablename__ = "switches"
    __table_args__ = (UniqueConstraint("connection_id", "folder_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id"))
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id"))
    is_on: Mapped[bool]
    turned_on_at: Mapped[datetime | None]
    turned_off_at: Mapped[datetime | None]


class DeliveryStatus(StrEnum):
    """The delivery state machine; see gateway/storage/queues/deliveries.py for the transitions."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    SKIPPED = "skipped"
    BOUNCED = "bounced"


class Delivery(Base):
    """One document to one connection: created once, whatever happens to it after."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("document_id", "connection_id"),
        Index("ix_deliveries_status_due", "status", "due_at"),
        one_of("deliveries", "status", DeliveryStatus),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"))
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id"))
    status: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class DeliveryEvent(HistoryLine, Base):
    """The history of a delivery: every transition, with what caused it."""

    __tablename__ = "delivery_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id"), index=True)


# -- sender policies (issue 11) ---------------------------------------------------------------


class SenderPolicySetting(Base):
    """A cabinet's (cabinet_id set) or a company's (company_id set) own sender policy: its
    kind (None: inherited from the level above) and its allow-list entries, which add to
    those of the levels above (gateway/routing/sender_policy.py)."""

    __tablename__ = "sender_policies"
    __table_args__ = (
        CheckConstraint(
            "(cabinet_id IS NULL) <> (company_id IS NULL)", name="ck_sender_policies_level"
        ),
        one_of("sender_policies", "kind", PolicyKind),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cabinet_id: Mapped[int | None] = mapped_column(ForeignKey("cabinets.id"), unique=True)
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id"), unique=True)
    kind: Mapped[str | None] = mapped_column(String(32))
    allowed: Mapped[list[str]] = mapped_column(JSON)
    updated_at: Mapped[datetime]


# -- IMAP sources ------------------------------------------------------------------------------


class ImapCheckpoint(Base):
    """Where the reading of one (source, folder) stands, and who is reading it.

    UIDs mean something only with their UIDVALIDITY; `last_uid` is the highest UID taken
    under `uidvalidity`. The lease makes one poller per mailbox at a time, across nodes.
    """

    __tablename__ = "imap_checkpoints"
    __table_args__ = (UniqueConstraint("source", "folder"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(63))
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_sync_at: Mapped[datetime | None]
    # Sessions that ended in an error since the last batch taken; from FAILING_AFTER on the
    # folder reads as failing (imap status, readiness, metrics).
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failing_since: Mapped[datetime | None]  # the first of those failures
    error_code: Mapped[str | None] = mapped_column(String(64))  # AADSTS70008, invalid_grant…


class OAuthRefreshToken(Base):
    """The latest refresh token of an IMAP source whose provider rotates them, encrypted with
    the gateway's secrets key (gateway/storage/sealed.py). `seed_sha256` is the hash of the
    configured first token it descends from: when the admin configures a new one (consent
    given again), the configured token wins over this row."""

    __tablename__ = "oauth_refresh_tokens"
    source: Mapped[str] = mapped_column(String(63), primary_key=True)
    sealed: Mapped[str] = mapped_column(Text)
    seed_sha256: Mapped[str] = mapped_column(String(64))
    saved_at: Mapped[datetime]


class GatewaySecret(Base):
    """A secret every node of the gateway shares (gateway/storage/shared_secrets.py): the VERP
    secret, the DKIM private keys. Sealed with the gateway's secrets key, bound to `name`."""

    __tablename__ = "gateway_secrets"
    name: Mapped[str] = mapped_column(String(255), primary_key=True)  # "verp", "dkim/…"
    sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class ImapOutcome(StrEnum):
    """What became of a message taken from an IMAP folder."""

    STORED = "stored"  # in the inbound queue
    REJECTED = "rejected"  # stored `rejected`: nothing we can route
    DUPLICATE = "duplicate"  # read before (same fingerprint): not filed again


class ImapMessage(Base):
    """One message taken from an IMAP folder: what became of it, and whether it has been
    moved (or flagged) on the server yet. Its fingerprints let a folder recreated under a
    new UIDVALIDITY be read again without filing anything twice."""

    __tablename__ = "imap_messages"
    __table_args__ = (
        UniqueConstraint("source", "folder", "uidvalidity", "uid"),
        Index("ix_imap_messages_source_fingerprint", "source", "fingerprint"),
        one_of("imap_messages", "outcome", ImapOutcome),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(63))
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))  # of the raw message
    # Message-ID, routed recipients and body hash: the same message read again (a folder
    # recreated under a new UIDVALIDITY) has the same fingerprint; see
    # gateway/inbound/imap/headers.py.
    fingerprint: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))  # stored | rejected | duplicate
    inbound_message_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_messages.id"))
    taken_at: Mapped[datetime]
    settled_at: Mapped[datetime | None]  # moved or flagged on the server


# -- the processes of every node ---------------------------------------------------------------


class GatewayProcess(Base):
    """One running (or stopped, or dead) gateway process: who holds claims, and whether it
    is still alive. `name` is what the process writes in the queues' `claimed_by` (its IMAP
    pollers add `:<source>`): node, pid and a random part, so a restarted process with the
    same pid (a container) is never taken for its dead predecessor. A live process renews
    `heartbeat_at`, and the leases of everything it holds, every few seconds
    (`gateway.storage.processes`)."""

    __tablename__ = "gateway_processes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    node: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(16))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    stopped_at: Mapped[datetime | None]


# -- the platform API ---------------------------------------------------------------------------


class ApiScope(StrEnum):
    """What an API token may do: read; write (a cabinet's data); admin (everything)."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


class ApiToken(Base):
    """A token of the HTTP API (gateway/storage/api_tokens.py). Only its SHA-256 is kept:
    the token is shown once, at creation. `cabinet_id` set: it sees that cabinet only."""

    __tablename__ = "api_tokens"
    __table_args__ = (one_of("api_tokens", "scope", ApiScope),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(16), unique=True)  # the token's public part
    sha256: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(16))
    cabinet_id: Mapped[int | None] = mapped_column(ForeignKey("cabinets.id"))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class AuditEntry(Base):
    """One write through the API: which token, what it did to what, when, and the answer."""

    __tablename__ = "api_audit_log"
    __table_args__ = (Index("ix_api_audit_log_at", "at"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id"))
    action: Mapped[str] = mapped_column(String(200))  # "POST /connections"
    object: Mapped[str] = mapped_column(String(500))  # the path the write named
    status: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime]


# -- events (issue 13): the outbox, and its webhook deliveries --------------------------------

# An integer that grows without wrapping: 64 bits on PostgreSQL; SQLite's INTEGER PRIMARY KEY
# is its 64-bit rowid already (a BIGINT there would not autoincrement).
EVENT_ID = BigInteger().with_variant(Integer(), "sqlite")


class OutboxEvent(Base):
    """Something a platform wants to hear about, written in the transaction of the change
    it reports (gateway/storage/events.py): read by polling, pushed to webhooks."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_cabinet_id_id", "cabinet_id", "id"),)
    id: Mapped[int] = mapped_column(EVENT_ID, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(32))
    # None: a message no cabinet could be told from (refused before any address matched).
    cabinet_id: Mapped[int | None] = mapped_column(ForeignKey("cabinets.id"))
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id"))
    subject_id: Mapped[int] = mapped_column(BigInteger)  # the document, delivery, bot mail…
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime]


class WebhookStatus(StrEnum):
    """A webhook delivery's state machine; see gateway/storage/queues/webhook_deliveries.py."""

    QUEUED = "queued"
    SENDING = "sending"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    FAILED = "failed"


class WebhookDelivery(Base):
    """One event to one configured webhook (`[webhooks.NAME]`)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook", "event_id"),
        Index("ix_webhook_deliveries_order", "webhook", "ordering", "event_id"),
        Index("ix_webhook_deliveries_status_due", "status", "due_at"),
        one_of("webhook_deliveries", "status", WebhookStatus),
    )
    id: Mapped[int] = mapped_column(EVENT_ID, primary_key=True, autoincrement=True)
    webhook: Mapped[str] = mapped_column(String(63))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    # Events of one company (or, without one, one cabinet) go out one after the other.
    ordering: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]


class WebhookCursor(Base):
    """The last event a webhook's dispatcher has queued deliveries for."""

    __tablename__ = "webhook_cursors"
    webhook: Mapped[str] = mapped_column(String(63), primary_key=True)
    after: Mapped[int] = mapped_column(BigInteger)

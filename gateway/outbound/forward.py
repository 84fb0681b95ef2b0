"""Bot mail forwarded to the cabinet's contact address (R6), wrapped so that it passes DMARC.

Why wrap instead of resending the original as it is: the original's From is the partner's
domain (`no-reply@myunisoft.fr`). Resent by us, neither SPF nor DKIM would align with that
domain, and a partner publishing `p=reject` would have it thrown away at the cabinet. So the
forward is a new message *from us*: From is the gateway's sender identity on our domain
(`config.gateway_sender`, as for documents), DKIM-signed for that domain like any outbound
message (R15), and the original rides along untouched as an attachment.

The queue, `bot_mail_forwards`, is owned by `gateway/storage/queues/forwards.py` (its state
table, the filer's `enqueue` in the transaction that writes the bot mail, the claim and every
status write). A `Forwarder` (run by `gateway sender`, beside the dispatcher) claims due
forwards with a lease, composes, signs last, sends through the same `Transport` as
deliveries and records the outcome with a transition guarded by its claim, mapped as for
deliveries (`gateway/outbound/settle.py`): accepted -> sent; permanent -> failed with the
server's words; temporary -> deferred with the back-off and lifetime of `[outbound]`.
A worker killed between the server's 250 and the record sends the forward again once its
lease expires: at least once, with the same Message-ID, as for deliveries.

Decisions:
  * Envelope sender: `postmaster@<first served domain>`. Not a VERP `bounce+…` address:
    those stand for delivery ids and a bounce to one is applied to the deliveries ledger,
    so it would mark an unrelated delivery bounced. Not the null sender `<>` either: that
    is for delivery reports (RFC 5321 4.5.5), and a forward that cannot be delivered should
    bounce somewhere a person sees. Postmaster mail is accepted by our server and kept in
    the bot mailbox with no cabinet, so a bounce is visible to the admin and is never
    forwarded itself (no loop). With the default sender (documents@<first domain>) the
    envelope domain also aligns for SPF.
  * Loop guard: the forward's Message-ID is `<bmf<id>.<sha256[:16]>@<domain>>`; a message
    that comes back to a bot identity with such a Message-ID (the contact auto-forwards to
    the bot) is kept in the bot mailbox but not forwarded again. `cabinet forwarding … on`
    also refuses a contact address on one of our own domains.
  * The original is attached as `message/rfc822` with `7bit` when it is 7-bit clean: ASCII,
    no NUL, CRLF line endings only, lines of at most 998 octets (RFC 5322 2.1.1). RFC 2046
    5.2.1 forbids base64 and quoted-printable for message/rfc822, so anything else (8-bit
    text, long lines, bare CR or LF) goes as `application/octet-stream` `original.eml` in
    base64: the forward stays 7-bit, CRLF and short-lined, so no relay re-encodes it and
    breaks the DKIM body hash. (RFC 6532 message/global may be base64, but few clients
    open it.) The attached bytes are the raw message as spooled, our Received line included.
  * Deterministic: Date is when the forward was queued and the boundary derives from the
    forward id, so a retry sends the same bytes (only the DKIM `t=` differs).
  * Switching forwarding off also stops forwards still waiting: they end `failed` with a
    reason saying so. Switching it on is not retroactive: mail already in the bot mailbox
    is not forwarded.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from email.utils import format_datetime

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.clock import Clock, as_utc
from gateway.config import OutboundConfig
from gateway.outbound.compose import header_display_name, plain_address
from gateway.outbound.dispatch import Signer
from gateway.outbound.mime import (
    base64_lines,
    clean_text,
    display_name_tokens,
    fold,
    multipart_mixed,
    plain_text_word,
    text_part,
    tokens,
)
from gateway.outbound.settle import settle
from gateway.outbound.transport import SendOutcome, Transport
from gateway.routing.addresses import split_address
from gateway.storage.db import Database
from gateway.storage.models import BotMail, BotMailForward, Cabinet, ForwardStatus, InboundMessage
from gateway.storage.queues import forwards
from gateway.storage.queues.forwards import TransitionError, forward_message_id
from gateway.storage.rawmail import RawMail

log = structlog.get_logger("gateway.forward")

SENDING = ForwardStatus.SENDING

ORIGINAL_NAME = "original.eml"
_SUBJECT_MAX = 200  # characters of the original subject kept in ours
# What keeps the original from travelling as 7bit message/rfc822: an 8-bit byte or NUL, a CR
# not before LF, an LF not after CR, or a line of more than 998 octets.
_NOT_7BIT = re.compile(rb"[\x00\x80-\xff]|\r(?!\n)|(?<!\r)\n|[^\r\n]{999}")


# -- the wrapper message ----------------------------------------------------------------------


@dataclass(frozen=True)
class ForwardedMail:
    """What the wrapper says about the original, and the original's raw bytes."""

    forward_id: int
    bot_address: str  # the bot identity that received it
    partner_name: str | None  # the partner's display name ("MyUnisoft")
    envelope_from: str  # MAIL FROM of the original ("" for a null sender)
    subject: str | None  # as the filer decoded it
    received_at: datetime
    raw: bytes
    sha256: str  # of `raw`, as stored with the inbound message


def compose_forward(
    mail: ForwardedMail,
    sender: str,
    recipient: str,
    date: datetime,
    *,
    sender_name: str | None = None,
    zone: tzinfo = UTC,
) -> bytes:
    """The final, unsigned bytes of the forward of `mail` (CRLF, 7-bit, lines <= 998).

    `sender` (our identity, From) and `recipient` (the cabinet contact, To) must be plain
    addresses; ValueError otherwise. Everything taken from the original (subject, senders)
    is cleaned of line breaks and control characters and RFC 2047-encoded when not plain
    ASCII, so nothing in it can add a header. `zone` is how the reception time is shown.
    """
    from_address = plain_address(sender, "sender")
    to_address = plain_address(recipient, "recipient")
    domain = from_address.rpartition("@")[2]
    message_id = forward_message_id(mail.forward_id, mail.sha256, domain)
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    partner = _clean(mail.partner_name or "", 100)
    subject = _clean(mail.subject or "", _SUBJECT_MAX) or "(sans objet)"
    tag = f"[Bot {partner}]" if partner else "[Bot]"

    text = text_part(_text(mail, partner, subject, zone))
    if _NOT_7BIT.search(mail.raw) is None:
        original_part = (
            b"Content-Type: message/rfc822\r\n"
            b"Content-Transfer-Encoding: 7bit\r\n"
            b'Content-Disposition: attachment; filename="' + ORIGINAL_NAME.encode() + b'"\r\n'
            b"\r\n" + mail.raw
        )
    else:  # RFC 2046 5.2.1: message/rfc822 may not be base64; an opaque file may
        original_part = (
            b'Content-Type: application/octet-stream; name="' + ORIGINAL_NAME.encode() + b'"\r\n'
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="' + ORIGINAL_NAME.encode() + b'"\r\n'
            b"\r\n" + base64_lines(mail.raw)
        )
    display = header_display_name(sender_name) if sender_name else None
    sender_tokens = [(False, from_address)]
    if display:
        sender_tokens = [*display_name_tokens(display), (False, f"<{from_address}>")]
    head = (
        fold("From", sender_tokens)
        + fold("To", [(False, to_address)])
        + fold("Subject", tokens(f"{tag} {subject}", plain_text_word))
        + fold("Date", [(False, format_datetime(date))])
        + fold("Message-ID", [(False, message_id)])
        # RFC 3834: tells autoresponders (out-of-office…) to stay quiet.
        + fold("Auto-Submitted", [(False, "auto-forwarded")])
    )
    return multipart_mixed(head, (text, original_part), f"bmf{mail.forward_id}")


def _text(mail: ForwardedMail, partner: str, subject: str, zone: tzinfo) -> str:
    bot = _clean(mail.bot_address, 320)
    sender = _clean(_header_from(mail.raw) or "", 320)
    envelope = _clean(mail.envelope_from, 320) or "<> (adresse vide / null sender)"
    local = as_utc(mail.received_at).astimezone(zone)
    shown_partner = f" ({partner})" if partner else ""
    return (
        "Bonjour,\n"
        "\n"
        f"L'identité robot {bot}{shown_partner} a reçu le message joint. Il n'a pas été "
        "classé dans la GED : ce sont souvent des invitations ou des activations qu'une "
        "personne du cabinet doit traiter.\n"
        "\n"
        f"Reçu par : {bot}\n"
        f"De : {sender or envelope}\n"
        f"Expéditeur (enveloppe) : {envelope}\n"
        f"Objet : {subject}\n"
        f"Reçu le : {local:%d/%m/%Y %H:%M} ({zone})\n"
        "\n"
        f"Le message d'origine est joint tel qu'il a été reçu ({ORIGINAL_NAME}).\n"
        "\n"
        "--\n"
        f"The bot identity {bot}{shown_partner} received the attached message from "
        f"{sender or envelope} on {as_utc(mail.received_at):%Y-%m-%d %H:%M} UTC. "
        "The original is attached as it was received.\n"
        "\n"
        "Message transféré automatiquement par la plateforme documentaire.\n"
        "(Forwarded automatically by the document platform.)\n"
    )


def _header_from(raw: bytes) -> str | None:
    """The original's From header as a person reads it, or None if it cannot be read."""
    try:
        value = BytesHeaderParser(policy=default_policy).parsebytes(raw).get("from")
        return None if value is None else str(value)
    except Exception:  # a malformed header must not stop the forward
        return None


def _clean(value: str, limit: int) -> str:
    """Text from outside (subject, addresses) made safe to show (`mime.clean_text`), cut
    to `limit` characters."""
    text = clean_text(value)
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# -- sending ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForwardJob:
    """One claimed forward and what composing it needs (the raw bytes are read later, one
    job at a time, so a batch of large messages is never all in memory)."""

    forward_id: int
    attempts: int
    created_at: datetime
    to_address: str
    forwarding_on: bool  # the cabinet's switch now: off stops a forward still waiting
    bot_address: str
    partner: str | None
    envelope_from: str
    subject: str | None
    received_at: datetime
    spool_segment: str
    spool_offset: int
    size: int
    sha256: str


class Forwarder:
    """Sends due forwards: claim with a lease, compose, DKIM-sign last, send, record."""

    def __init__(
        self,
        db: Database,
        config: OutboundConfig,
        gateway_sender: str,
        envelope_sender: str,
        transport: Transport,
        signer: Signer,
        raw_mail: RawMail,
        clock: Clock,
        worker_name: str,
        partner_names: dict[str, str],
        zone: tzinfo = UTC,
    ) -> None:
        self.db = db
        self.config = config
        self.gateway_sender = gateway_sender
        self.envelope_sender = envelope_sender
        self.transport = transport
        self.signer = signer
        self.raw_mail = raw_mail
        self.clock = clock
        self.worker_name = worker_name
        self.partner_names = partner_names  # registry name -> display name
        self.zone = zone

    def claim(self, *, flush: bool = False, limit: int = 50) -> list[int]:
        """Take forwards to send now (queued or deferred and due, or `sending` with an
        expired lease: a worker that died mid-send); one guarded UPDATE, safe to race.
        `flush` ignores the back-off."""
        with self.db.write() as s:
            return forwards.claim_due(
                s, self.worker_name, self.clock.now(), limit=limit, flush=flush
            )

    def jobs(self, forward_ids: list[int]) -> list[ForwardJob]:
        """The claimed forwards with their bot mail, message and cabinet, in one query."""
        with self.db.read() as s:
            rows = s.execute(
                select(BotMailForward, BotMail, InboundMessage, Cabinet.forward_bot_mail)
                .join(BotMail, BotMailForward.bot_mail_id == BotMail.id)
                .join(InboundMessage, BotMail.inbound_message_id == InboundMessage.id)
                .outerjoin(Cabinet, BotMail.cabinet_id == Cabinet.id)
                .where(BotMailForward.id.in_(forward_ids))
                .order_by(BotMailForward.id)
            ).all()
        return [
            ForwardJob(
                forward_id=f.id,
                attempts=f.attempts,
                created_at=as_utc(f.created_at),
                to_address=f.to_address,
                forwarding_on=bool(on),
                bot_address=b.recipient,
                partner=b.partner,
                envelope_from=b.mail_from,
                subject=b.subject,
                received_at=as_utc(b.received_at),
                spool_segment=m.spool_segment,
                spool_offset=m.spool_offset,
                size=m.size,
                sha256=m.sha256,
            )
            for f, b, m, on in rows
        ]

    def compose(self, job: ForwardJob) -> tuple[str, bytes]:
        """(From domain, unsigned bytes) of a job's forward; signing comes after, last."""
        raw = self.raw_mail.read(job.spool_segment, job.spool_offset, job.size)
        mail = ForwardedMail(
            forward_id=job.forward_id,
            bot_address=job.bot_address,
            partner_name=self.partner_names.get(job.partner or "", job.partner),
            envelope_from=job.envelope_from,
            subject=job.subject,
            received_at=job.received_at,
            raw=raw,
            sha256=job.sha256,
        )
        domain = (split_address(self.gateway_sender) or ("", ""))[1]
        data = compose_forward(
            mail,
            self.gateway_sender,
            job.to_address,
            job.created_at,  # the same Date on every attempt
            sender_name=self.config.sender_name,
            zone=self.zone,
        )
        return domain, data

    def prepare(self, job: ForwardJob) -> bytes:
        domain, data = self.compose(job)
        return self.signer.sign(data, domain)  # DKIM: the last step before the wire

    async def run_once(self, *, flush: bool = False) -> int:
        """Send the forwards due now; returns how many were tried. One at a time: forwards
        are few (notices to people), so the dispatcher's pipeline is not worth it here."""
        ids = await asyncio.to_thread(self.claim, flush=flush)
        if not ids:
            return 0
        for job in await asyncio.to_thread(self.jobs, ids):
            outcome: SendOutcome | None
            if not job.forwarding_on:
                outcome, reply = SendOutcome.PERMANENT, "not sent: forwarding was turned off"
            else:
                try:
                    signed = await asyncio.to_thread(self.prepare, job)
                except Exception as exc:  # our own problem (no DKIM key…): retried
                    log.exception("forward_compose_failed", forward_id=job.forward_id)
                    outcome, reply = None, f"not sent: {exc}"
                else:
                    result = await self.transport.send(self.envelope_sender, job.to_address, signed)
                    outcome, reply = result.outcome, result.reply
                    log.info(
                        "forwarded" if outcome is SendOutcome.ACCEPTED else "not_forwarded",
                        forward_id=job.forward_id,
                        to=job.to_address,
                        outcome=outcome.value,
                        reply=reply,
                    )
            await asyncio.to_thread(self.record, job, outcome, reply)
        return len(ids)

    def record(self, job: ForwardJob, outcome: SendOutcome | None, reply: str) -> None:
        """The outcome of one send, as a guarded transition from our own `sending`; one
        refused (the lease was taken over) is logged, not raised."""
        now = self.clock.now()
        try:
            with self.db.write() as s:
                self._record(s, job, outcome, reply, now)
        except TransitionError:
            log.exception("forward_transition_refused", forward_id=job.forward_id)

    def _record(
        self, s: Session, job: ForwardJob, outcome: SendOutcome | None, reply: str, now: datetime
    ) -> None:
        done = settle(self.config, outcome, reply, job.attempts, job.created_at, now)
        values: dict[str, object] = {"reason": done.reason}
        if done.target == "sent":
            values["sent_at"] = now
        if done.retry_at is not None:
            values["due_at"] = done.retry_at
        forwards.transition(
            s,
            job.forward_id,
            [SENDING],
            ForwardStatus(done.target),
            now,
            done.reason,
            claimed_by=self.worker_name,
            **values,
        )

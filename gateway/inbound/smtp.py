"""The SMTP server (aiosmtpd): RCPT checks, durable DATA, clean shutdown.

`handle_DATA` does the least it can — hand the bytes to the spool, wait for the group commit,
answer — because aiosmtpd does not reset its session timeout while the hook runs. Parsing and
filing happen later, in the filing stage, from the durable row.

The protocol object of each connection (and with it every use of aiosmtpd's private members)
is `gateway.inbound.smtp_session.GatewaySMTP`; this module uses only its own members.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway import metrics
from gateway.clock import Clock
from gateway.config import SmtpConfig
from gateway.inbound.anvil import Anvil
from gateway.inbound.recipients import Recipients
from gateway.inbound.smtp_session import DataBudget, GatewaySMTP, client_address, say_and_close
from gateway.inbound.spool import Arrival, Spool, new_queue_id
from gateway.mail.header_limits import header_overflow
from gateway.replies import Reply
from gateway.routing.reverse_path import is_reverse_path

log = structlog.get_logger("gateway.smtp")

# Per-session command budgets (aiosmtpd has none by default): generous for MTAs that reuse
# a connection for many messages, tight for commands nobody needs to repeat.
COMMAND_CALL_LIMITS: dict[str, int] = {
    "MAIL": 1000,
    "RCPT": 20_000,
    "DATA": 1000,
    "RSET": 1000,
    "NOOP": 100,
    "*": 30,
}


class InboundHandler:
    """aiosmtpd handler hooks. Each returns the whole reply line, from `Reply`."""

    def __init__(
        self,
        recipients: Recipients,
        spool: Spool,
        clock: Clock,
        config: SmtpConfig,
    ) -> None:
        self.recipients = recipients
        self.spool = spool
        self.clock = clock
        self.config = config
        self.draining = False

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        # A receive-only MX: no login can succeed, so AUTH is not offered (aiosmtpd offers
        # its built-in mechanisms after STARTTLS whatever the handler does with them).
        session.host_name = hostname  # this hook's job once it exists
        return [line for line in responses if not line[4:].upper().startswith("AUTH")]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        sender = _reverse_path(address, options)
        if sender is None:
            return Reply.BAD_SENDER_SYNTAX.value
        envelope.mail_from = sender
        envelope.mail_options.extend(options)
        envelope.queue_id = new_queue_id()  # type: ignore[attr-defined]
        return Reply.SENDER_OK.value

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        queue_id = getattr(envelope, "queue_id", None)
        if len(envelope.rcpt_tos) >= self.config.max_recipients:
            return Reply.TOO_MANY_RECIPIENTS.format(limit=self.config.max_recipients)
        try:
            destination = await self.recipients.resolve_async(address)
        except Exception:
            log.exception("directory_lookup_failed", queue_id=queue_id, rcpt=address)
            return Reply.DIRECTORY_UNAVAILABLE.format(address=address.strip("<>"))
        if destination.refusal is not None:
            log.info(
                "rcpt_refused",
                queue_id=queue_id,
                rcpt=address,
                peer=_peer(session),
                mail_from=envelope.mail_from,
                reply=destination.refusal,
                reason=destination.reason,
            )
            return destination.refusal
        # A custom handle_RCPT must record the recipient itself.
        envelope.rcpt_tos.append(destination.address.address)
        envelope.rcpt_options.extend(options)
        return Reply.RECIPIENT_OK.value

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        queue_id: str = getattr(envelope, "queue_id", None) or new_queue_id()
        content = envelope.original_content or b""
        if (refusal := self._header_refusal(content, session, queue_id)) is not None:
            return refusal
        arrival = Arrival(
            queue_id=queue_id,
            source="smtp",
            received_at=self.clock.now(),
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            content=_with_received_header(
                content, session, queue_id, self.config.hostname, self.clock
            ),
            peer=_peer(session),
            helo=session.host_name,
        )
        try:
            await self.spool.store(arrival)
        except Exception:
            log.exception("store_failed", queue_id=queue_id)
            return Reply.INTERNAL_ERROR.value
        log.info(
            "received",
            queue_id=queue_id,
            mail_from=arrival.mail_from,
            rcpt=arrival.rcpt_tos,
            size=len(arrival.content),
            peer=arrival.peer,
        )
        return Reply.QUEUED.format(queue_id=queue_id)

    def _header_refusal(self, content: bytes, session: Session, queue_id: str) -> str | None:
        """552 5.3.4 when the header section is over a limit: refused before anything
        parses it (README "SMTP intake limits" says why refused rather than cut)."""
        why = header_overflow(content, self.config.header_limits)
        if why is None:
            return None
        log.info("header_refused", queue_id=queue_id, peer=_peer(session), why=why)
        return Reply.HEADER_TOO_BIG.format(why=why)

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd's default is a 500: senders would bounce the mail for our own failure.
        log.error("session_error", exc_info=error)
        return Reply.INTERNAL_ERROR.value


def _reverse_path(address: str, options: list[str]) -> str | None:
    """The sender as stored, "<>" for the null sender of bounces (RFC 5321 4.5.5: aiosmtpd
    needs a non-empty sender to take RCPT); None when it is not a valid reverse path.
    aiosmtpd has already refused SMTPUTF8 unless the server offers it."""
    utf8 = any(option.upper() == "SMTPUTF8" for option in options)
    return address if is_reverse_path("" if address == "<>" else address, utf8=utf8) else None


def _peer(session: Session) -> str | None:
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer) if peer else None


def _with_received_header(
    content: bytes, session: Session, queue_id: str, hostname: str, clock: Clock
) -> bytes:
    """Prepend a Received: trace header (RFC 5321 4.4), as every MTA on the path does."""
    when = clock.now().strftime("%a, %d %b %Y %H:%M:%S +0000")
    helo = (session.host_name or "unknown").replace("\r", "").replace("\n", "")[:255]
    tls = " with ESMTPS" if session.ssl else " with ESMTP"
    line = (
        f"Received: from {helo} ([{_peer(session) or 'unknown'}])\r\n"
        f"\tby {hostname}{tls} id {queue_id};\r\n\t{when}\r\n"
    )
    return line.encode("ascii", "replace") + content


class _Refuse421(asyncio.Protocol):
    """What a new connection gets while the server drains."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        metrics.SMTP_CONNECTIONS.inc()
        say_and_close(transport, Reply.SHUTTING_DOWN.format(hostname=self.hostname))


class _Admission(asyncio.Protocol):
    """A connection's first protocol: the 421 of the per-client limits comes from here,
    before the session exists; an admitted connection is handed to its session. aiosmtpd's
    SMTP() introspects its handler and itself for every connection (`inspect.getmembers`):
    under a connection flood that took 55% of serve's CPU, all for clients refused at once,
    and the other clients' acknowledgements waited behind it."""

    def __init__(self, anvil: Anvil, hostname: str, session: Callable[[], GatewaySMTP]) -> None:
        self.anvil = anvil
        self.hostname = hostname
        self.session = session

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        client = client_address(transport)
        refusal = self.anvil.refusal(client)
        if refusal is not None:
            metrics.SMTP_CONNECTIONS.inc()
            say_and_close(transport, refusal.format(hostname=self.hostname, client=client))
            return
        session = self.session()  # admits and counts the connection itself
        transport.set_protocol(session)
        session.connection_made(transport)


class InboundServer:
    """Listens on the SMTP port; `drain()` stops it the way an MTA should."""

    def __init__(
        self,
        handler: InboundHandler,
        config: SmtpConfig,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.handler = handler
        self.config = config
        self.anvil = Anvil.for_config(config, monotonic)
        self.sessions: set[GatewaySMTP] = set()
        self.data_budget = DataBudget(config.data_memory_budget)
        self._server: asyncio.AbstractServer | None = None
        self.tls_context = _tls_context(config)

    def _factory(self) -> asyncio.Protocol:
        if self.handler.draining:
            return _Refuse421(self.config.hostname)
        return _Admission(self.anvil, self.config.hostname, self._session)

    def _session(self) -> GatewaySMTP:
        return GatewaySMTP(
            self.handler,
            self.sessions,
            self.data_budget,
            self.anvil,
            self.config,
            hostname=self.config.hostname,
            ident="ESMTP gateway",
            data_size_limit=self.config.max_message_size,
            tls_context=self.tls_context,
            require_starttls=False,  # a public MX must accept plain-text senders
            timeout=self.config.timeout_seconds,
            command_call_limit=COMMAND_CALL_LIMITS,
        )

    async def start(self, host: str | None = None, port: int | None = None) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory,
            host or self.config.host,
            self.config.port if port is None else port,
        )
        sock = self._server.sockets[0].getsockname()
        return str(sock[0]), int(sock[1])

    async def drain(
        self, grace_seconds: float, sleep: Callable[[float], Any] = asyncio.sleep
    ) -> None:
        """Stop the way an MTA should. New connections get 421 at once, and so does every
        session between two transactions (a load balancer's idle connection, a client that
        has just had its 250); a transaction in progress may finish for up to
        `grace_seconds` (smtp.drain_seconds), and gets its 421 then. Then close."""
        self.handler.draining = True
        waited = 0.0
        while waited < grace_seconds:
            in_transaction = False
            for session in list(self.sessions):
                if session.in_transaction:
                    in_transaction = True
                else:
                    session.close_for_shutdown()
            if not in_transaction:
                break
            await sleep(0.05)
            waited += 0.05
        for session in list(self.sessions):
            session.close_for_shutdown()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _tls_context(config: SmtpConfig) -> ssl.SSLContext | None:
    if config.tls_certificate is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(config.tls_certificate), str(config.tls_key))
    return context

"""One SMTP session (connection): our one subclass of aiosmtpd's `SMTP` protocol.

It is the only place in the gateway that uses aiosmtpd's private members (and one of
asyncio's): each use says why we need it, and tests/test_aiosmtpd_internals.py checks that
each still exists as we use it. pyproject.toml bounds aiosmtpd to the range tested
(`>=1.4.6,<1.5`); moving the bound means running that test against the new version.
Everything else about a session (the replies of the handler hooks, the listener, draining)
lives in `gateway.inbound.smtp` and uses only this class's own members.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import enum
import functools
import re
import time
from typing import Any, AnyStr, Protocol, cast

from aiosmtpd.smtp import MISSING, SMTP

from gateway import metrics
from gateway.config import SmtpConfig
from gateway.inbound.anvil import Anvil
from gateway.replies import AIOSMTPD_REPLACEMENTS, Reply
from gateway.routing.reverse_path import has_control_characters

END_OF_DATA = b"\r\n.\r\n"
DATA_CHUNK = 64 * 1024
# After a session has held this much DATA, its freed memory is handed back to the system.
RETURN_MEMORY_AFTER = 1024 * 1024


class Dropped(enum.Enum):
    """What `read_content` returns when it had to drop the data rather than keep it."""

    TOO_BIG = "past the size limit"
    OVER_BUDGET = "past the in-flight DATA budget"


class DataBudget:
    """Bytes of DATA held in memory by all sessions together, against one limit
    (`smtp.data_memory_budget`). One per server; every session takes from it and gives back."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


class DrainingFlag(Protocol):
    """What a session needs of its handler besides aiosmtpd's hooks: are we draining?"""

    draining: bool


class GatewaySMTP(SMTP):
    """aiosmtpd's protocol with our reply table, shutdown behaviour and a faster DATA phase.

    aiosmtpd reads DATA line by line in Python (a 20 KB message is ~300 awaits); that loop
    alone costs more CPU than everything else the gateway does per message. `smtp_DATA`
    here reads the stream in chunks and finds the end with one `bytes.find`. What it accepts
    is what RFC 5321 says and aiosmtpd does: only CR LF . CR LF ends the data (a bare LF
    never does, so "\\n.\\n" cannot smuggle a second message), leading dots are removed,
    the size limit answers 552 after the data is drained. Unlike aiosmtpd, lines over 1000
    octets are accepted as they are, as Postfix does: we store mail, we do not relay it.

    Our own members have public names, so that every `_name` used here is aiosmtpd's or
    asyncio's (the internals test lists them from this module's source).
    """

    def __init__(
        self,
        handler: DrainingFlag,
        sessions: set[GatewaySMTP],
        data_budget: DataBudget,
        anvil: Anvil,
        limits: SmtpConfig,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.gateway_handler = handler
        self.open_sessions = sessions
        self.data_budget = data_budget
        self.data_held = 0  # bytes of the current DATA counted in data_budget
        self.data_over_budget = False
        self.data_bytes_read = 0  # bytes of the current DATA read so far, kept or not
        self.data_buffer = bytearray()  # read_content's buffer, emptied by release_data
        self.anvil = anvil
        self.limits = limits
        self.client: str | None = None
        self.admitted: bool | None = None  # None until the connection is made
        self.error_count = 0  # 4xx/5xx replies since the last message queued

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.admitted is None:  # not the second call of STARTTLS, which changes transport
            metrics.SMTP_CONNECTIONS.inc()
            if not self.admit(transport):
                return
            self.open_sessions.add(self)
        super().connection_made(transport)

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """Count the session with the anvil, or answer 421 and close before any greeting."""
        self.client = client_address(transport)
        refusal = self.anvil.open_session(self.client)
        self.admitted = refusal is None
        if refusal is not None:
            say_and_close(transport, refusal.format(hostname=self.hostname, client=self.client))
        return self.admitted

    def connection_lost(self, error: Exception | None) -> None:
        if not self.admitted:
            return  # refused in connection_made: aiosmtpd never saw the connection
        self.admitted = False
        self.anvil.close_session(self.client)
        self.open_sessions.discard(self)
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        # The client closed its side: the session is over. aiosmtpd 1.4.6 cancels the
        # session's task and asks asyncio to keep the transport half-open; when the client
        # closed before that task had started (a load balancer's TCP check, a port scan),
        # nothing closes it afterwards, and the socket sits in CLOSE-WAIT, counted as a
        # session that a stop waits for, until the idle timeout (300 s). Returning False
        # makes asyncio close the transport, and connection_lost forgets the session.
        if not self.admitted:
            return False
        super().eof_received()  # cancels the session's task
        self.open_sessions.discard(self)
        return False

    @property
    def in_transaction(self) -> bool:
        """MAIL accepted and the transaction not over yet (its DATA may be running)."""
        return self.envelope is not None and self.envelope.mail_from is not None

    def close_for_shutdown(self) -> None:
        """421 and close: what a session gets when a stop will not wait for it."""
        if self.transport is not None:
            say_and_close(self.transport, Reply.SHUTTING_DOWN.format(hostname=self.hostname))

    async def push(self, status: AnyStr) -> None:
        reply: str | bytes = status
        if isinstance(status, str):
            replacement = AIOSMTPD_REPLACEMENTS.get(status)
            if replacement is not None:
                reply = replacement.format(limit=self.data_size_limit, hostname=self.hostname)
        if self.error_count >= self.limits.hard_error_limit:
            # Postfix: the command after the last error allowed is answered 421 4.7.0, and
            # the session ends (answering the command, not unasked, spares the client a
            # reset connection that could lose the 421).
            self.close_with(Reply.TOO_MANY_ERRORS.format(hostname=self.hostname))
            return
        closing = reply[:3] in ("421", b"421")
        error = reply[:1] in ("4", "5", b"4", b"5") and not closing
        self.error_count += error
        # The client's errors over all its sessions: at their limit this one ends as at
        # the hard limit (after this reply, which waits only for this session's errors).
        client_over_limit = error and self.anvil.new_error(self.client)
        if self.error_count > self.limits.soft_error_limit:
            # Postfix: past the soft limit every reply waits a second per error, which
            # slows a harvester down to a crawl without hurting a client's odd mistake.
            await asyncio.sleep(self.error_count * self.limits.error_delay_seconds)
        _count_reply(reply)
        if isinstance(reply, str):  # two calls: push takes str or bytes, not their union
            await super().push(reply)
        else:
            await super().push(reply)
        if client_over_limit:
            self.error_count = max(self.error_count, self.limits.hard_error_limit)

    def close_with(self, line: str) -> None:
        if self.transport is not None:
            say_and_close(self.transport, line)

    def _timeout_cb(self) -> None:
        # aiosmtpd private: its timer's callback, which closes without a word; an MTA says
        # why (Postfix: 421 4.4.2 timeout exceeded) so that the sender retries.
        self.close_with(Reply.TIMEOUT_EXCEEDED.format(hostname=self.hostname))

    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push(Reply.NEED_RCPT.value)
            return
        if arg:
            await self.push(Reply.DATA_SYNTAX.value)
            return
        await self.push(Reply.START_DATA.value)
        try:
            await self.receive_message()
        finally:
            self.release_data()

    async def receive_message(self) -> None:
        """The DATA phase after the 354: read, store (through the handler), answer."""
        assert self.envelope is not None
        content = await self.read_content()
        if content is None:  # the connection went away mid-data
            return
        limit = self.data_size_limit
        if limit and not isinstance(content, Dropped) and len(content) > limit:
            content = Dropped.TOO_BIG  # past the limit only in its last chunk
        if isinstance(content, Dropped):
            # aiosmtpd private: its own end-of-transaction reset (a fresh envelope), which
            # its smtp_DATA calls on every outcome; ours replaces that method, so must too.
            # (aiosmtpd leaves it unannotated.)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            if content is Dropped.OVER_BUDGET:
                await self.push(Reply.DATA_MEMORY_BUSY.value)
            else:
                await self.push(Reply.MESSAGE_TOO_BIG.format(limit=self.data_size_limit))
            return
        self.envelope.content = self.envelope.original_content = content
        ended = time.perf_counter()
        # aiosmtpd private: how its smtp_DATA runs the handler's handle_DATA (with this
        # server, session and envelope; MISSING when there is none). Calling it keeps our
        # smtp_DATA calling the hook exactly as aiosmtpd's does.
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd private, as above
        reply = Reply.OK.value if status is MISSING else status
        await self.push(reply)
        if reply.startswith("250"):
            metrics.SMTP_ACKNOWLEDGEMENT_SECONDS.observe(time.perf_counter() - ended)
            self.error_count = 0  # Postfix's error limits count errors "without delivering mail"

    async def read_content(self) -> bytes | Dropped | None:
        """The message up to the end-of-data line, dot-unstuffed; None on disconnect.

        Past the size limit, or once the sessions together hold `data_budget` bytes, the
        rest is read and dropped (keeping a tail to find the end), so that memory stays
        bounded and the 552 (451 4.3.2 for the budget) comes after the data, as RFC 5321
        4.2.5 implies. The result then says which (`Dropped`).
        """
        # aiosmtpd private: the StreamReader the connection feeds (set in its
        # `_cb_client_connected`); aiosmtpd offers no public way to read the raw stream.
        reader = self._reader
        limit = self.data_size_limit or 0
        buf = bytearray(b"\r\n")  # so that a message starting with ".\r\n" ends at once
        self.data_buffer = buf
        dropped = 0
        start = 0
        deadline = DataDeadline(
            self.loop.time(), self.limits.timeout_seconds, self.limits.data_min_rate, limit
        )
        while (end := buf.find(END_OF_DATA, start)) < 0:
            if (limit and len(buf) + dropped > limit + 2) or self.data_over_budget:
                keep = len(END_OF_DATA) - 1  # searched already; only a split marker matters
                dropped += len(buf) - keep
                del buf[:-keep]
            start = max(0, len(buf) - len(END_OF_DATA) + 1)
            chunk = await reader.read(DATA_CHUNK)
            if not chunk:
                return None
            # aiosmtpd private: moves the session's timer (aiosmtpd's resets it per command
            # line only) to DATA's deadline, which the bytes just received extend.
            self._reset_timeout(deadline.received(len(chunk), self.loop.time()))
            self.hold_data(len(chunk), keep=not dropped)
            buf += chunk
        # Bytes after the terminator are the client's next (pipelined) commands: give them
        # back to the reader, where aiosmtpd's command loop reads them next.
        rest = buf[end + len(END_OF_DATA) :]
        if rest:
            # asyncio private: StreamReader has no "unread"; its buffer is a bytearray that
            # aiosmtpd itself edits (it clears it on STARTTLS).
            reader._buffer[:0] = rest  # type: ignore[attr-defined]
        if limit and dropped + end - 2 > limit:  # (buf began with 2 bytes of ours)
            return Dropped.TOO_BIG
        if self.data_over_budget:
            return Dropped.OVER_BUDGET
        # One copy of the message at a time: the buffer goes as soon as the bytes are out
        # (replace returns the same object when there is no dot to remove).
        del buf[end + 2 :]
        data = bytes(memoryview(buf)[2:])
        buf.clear()
        data = data.replace(b"\r\n.", b"\r\n")
        return data[1:] if data.startswith(b".") else data

    def hold_data(self, size: int, keep: bool) -> None:
        """Count `size` more bytes of this DATA in the shared budget, or, when they do not
        fit, mark this DATA as over budget: its bytes are dropped from now on, and what it
        held goes back to the budget at once, so that the sessions already under way can
        finish (all of them sharing the budget and all failing is what this avoids).
        `keep` false: the data is being dropped (past the size limit), nothing is held."""
        self.data_bytes_read += size
        if keep and not self.data_over_budget:
            if self.data_budget.take(size):
                self.data_held += size
                return
            self.data_over_budget = True
        self.data_budget.give_back(self.data_held)
        self.data_held = 0

    def release_data(self) -> None:
        """The DATA is over (stored, refused or cut off): give its bytes back to the budget,
        and, after a large one, its memory back to the system."""
        self.data_budget.give_back(self.data_held)
        received, self.data_bytes_read = self.data_bytes_read, 0
        self.data_held, self.data_over_budget = 0, False
        # When the client went away mid-data, the exception that ends the task keeps
        # read_content's frame, and its buffer, alive in a reference cycle until the garbage
        # collector runs, which an idle server may not do for a long time: empty it now.
        self.data_buffer.clear()
        if received >= RETURN_MEMORY_AFTER:
            return_freed_memory()

    async def smtp_MAIL(self, arg: str | None) -> None:
        if await self.refused_for_control_characters(arg, Reply.BAD_SENDER_SYNTAX.value):
            return
        # Draining: the transaction in progress has finished; start no new one.
        if self.gateway_handler.draining:
            await self.push(Reply.SHUTTING_DOWN.format(hostname=self.hostname))
            if self.transport is not None:
                self.transport.close()
            return
        # Counted only when MAIL could succeed (after HELO, outside a transaction).
        if self.session is not None and self.session.host_name and not self.in_transaction:
            refusal = self.anvil.new_message(self.client)
            if refusal is not None:
                await self.push(refusal.format(client=self.client))
                return
        await super().smtp_MAIL(arg)

    # RFC 5321 as Postfix reads it: control characters, STARTTLS inside TLS, no AUTH.

    async def refused_for_control_characters(self, arg: str | None, reply: str) -> bool:
        """NUL, CR, LF, other C0 controls or DEL in HELO, MAIL or RCPT: refused before any
        parsing, so that they are never stored (PostgreSQL's text cannot even hold NUL)."""
        if arg is None or not has_control_characters(arg):
            return False
        await self.push(reply)
        return True

    async def smtp_HELO(self, hostname: str) -> None:
        if await self.refused_for_control_characters(hostname, Reply.BAD_HELO.format(verb="HELO")):
            return
        await super().smtp_HELO(hostname)

    async def smtp_EHLO(self, hostname: str) -> None:
        if await self.refused_for_control_characters(hostname, Reply.BAD_HELO.format(verb="EHLO")):
            return
        await super().smtp_EHLO(hostname)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self.refused_for_control_characters(arg, Reply.BAD_RECIPIENT_CHARACTERS.value):
            return
        await super().smtp_RCPT(arg)

    async def smtp_STARTTLS(self, arg: str) -> None:
        # aiosmtpd answers 220 and starts a second handshake inside the first, which kills
        # the session with a traceback; Postfix refuses and the session goes on.
        # (aiosmtpd private: `_tls_protocol` is set once its STARTTLS handshake has begun.)
        if self._tls_protocol is not None:
            await self.push(Reply.TLS_ALREADY_ACTIVE.value)
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_VRFY(self, arg: str) -> None:
        # aiosmtpd parses the address with email's header parser, which raises on some
        # inputs (an unterminated quote: found by tests/test_fuzz.py); the answer does not
        # depend on the address anyway.
        await self.push(Reply.CANNOT_VRFY.value if arg else Reply.VRFY_SYNTAX.value)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd private: MAIL and RCPT's address parser, over email's header parser,
        # which raises IndexError on some malformed addresses instead of HeaderParseError:
        # a malformed address is a syntax error (None), not a session that dies.
        plain = _PLAIN_ADDRESS.match(arg)
        if plain is not None:  # what the header parser would make of it, at a fraction
            address = plain.group(1)
            if self.local_part_limit and address.index("@") > self.local_part_limit:
                return None, None
            return address, arg[plain.end() :]  # (the parser drops the blanks after `>`)
        try:
            return super()._getaddr(arg)
        except (IndexError, ValueError, TypeError):
            return None, None

    async def smtp_AUTH(self, arg: str) -> None:
        # A receive-only MX: no login can succeed, so AUTH is neither advertised (see
        # `InboundHandler.handle_EHLO`) nor taken; Postfix's answer without SASL.
        await self.push(Reply.AUTH_NOT_ENABLED.value)


# The address almost every client sends, `<local@host.name>` with a dot-atom local part,
# read without email's header parser: that parser (and a class aiosmtpd defines on each
# call) was a quarter of the server's CPU per message (py-spy on benchmarks/inbound.py).
# Anything else (quoted local parts, literals, UTF-8, spaces, routes) still goes through it.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(
    rf"<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>[ \t]*(?![ \t(])"
)


@functools.cache
def _malloc_trim() -> Any:
    libc = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None


def return_freed_memory() -> None:
    """Hand freed heap memory back to the system. glibc keeps what a large message's
    buffers used (its mmap threshold rises to the largest block freed, so the next large
    buffers come from the heap), and the server would stay at its peak after the clients
    left; malloc_trim(0) releases the free pages. Elsewhere (musl, macOS) nothing to do."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class DataDeadline:
    """When DATA must be over: `timeout` seconds from its start, extended by 1/`min_rate`
    seconds per byte received, never more than `timeout` ahead (Postfix's
    smtpd_per_request_deadline with smtpd_min_data_rate). Bytes past the size limit extend
    nothing, so a session in DATA lasts at most timeout + limit / min_rate seconds."""

    def __init__(self, now: float, timeout: float, min_rate: int, limit: int) -> None:
        self.at = now + timeout
        self.timeout = timeout
        self.min_rate = min_rate
        self.credit_left = limit or 2**63

    def received(self, size: int, now: float) -> float:
        """Seconds left after `size` more bytes arrived at `now`."""
        credited = min(size, self.credit_left)
        self.credit_left -= credited
        self.at = min(self.at + credited / self.min_rate, now + self.timeout)
        return max(self.at - now, 0.001)  # aiosmtpd reads 0 as "the full timeout"


def client_address(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


def say_and_close(transport: asyncio.BaseTransport, line: str) -> None:
    """Write one reply line and close. (uvloop's transports are not registered as
    asyncio.WriteTransport, hence the cast rather than an isinstance check.)"""
    if not transport.is_closing():
        _count_reply(line)
        cast(asyncio.WriteTransport, transport).write(line.encode() + b"\r\n")
        transport.close()


def _count_reply(reply: str | bytes) -> None:
    code = reply[:3]
    metrics.SMTP_REPLIES.labels(
        code.decode("ascii", "replace") if isinstance(code, bytes) else code
    ).inc()


# aiosmtpd internal: HELP lists a command, and answers `HELP MAIL`, only if its method
# carries the attributes aiosmtpd's @syntax decorator sets (read by its private
# `_syntax_available`); our override keeps aiosmtpd's text.
SYNTAX_ATTRIBUTES = ("__smtp_syntax__", "__smtp_syntax_extended__", "__smtp_syntax_when__")
for _command in ("MAIL", "HELO", "EHLO", "RCPT", "STARTTLS"):
    for _attr in SYNTAX_ATTRIBUTES:
        if hasattr(getattr(SMTP, f"smtp_{_command}"), _attr):
            _ours = getattr(GatewaySMTP, f"smtp_{_command}")
            setattr(_ours, _attr, getattr(getattr(SMTP, f"smtp_{_command}"), _attr))

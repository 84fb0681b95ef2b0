"""How a signed message reaches a partner's inbox: a smarthost, or the destination's MX.

Both sit behind the `Transport` protocol, so the dispatcher (and the tests) never care
which. A transport keeps one SMTP connection per host and reuses it for the next message
to the same host (RSET between transactions), reconnecting when the host drops it.

Outcomes are classified the way an MTA does (R17): a 2xx to DATA is `accepted`; a 5xx at
MAIL, RCPT or DATA is `permanent` (the partner refused, with its words); a 4xx, a refused
connection, a timeout, a DNS failure is `temporary` (retried later with back-off).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import aiosmtplib

from gateway.config import SmarthostConfig
from gateway.routing.addresses import split_address


class SendOutcome(StrEnum):
    """How a send ended, as an MTA classifies it (see the module's docstring)."""

    ACCEPTED = "accepted"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class SendResult:
    outcome: SendOutcome
    reply: str  # the remote server's words ("250 2.0.0 Ok: queued as 4Xy"), or why we failed


class Transport(Protocol):
    async def send(self, envelope_from: str, recipient: str, data: bytes) -> SendResult: ...

    async def close(self) -> None: ...


class MxResolver(Protocol):
    async def mx_hosts(self, domain: str) -> Sequence[tuple[int, str]]:
        """(preference, host) pairs; the domain itself (preference 0) when it has no MX."""
        ...


class DnsMxResolver:
    """MX lookups through dnspython."""

    async def mx_hosts(self, domain: str) -> Sequence[tuple[int, str]]:
        import dns.asyncresolver
        import dns.resolver

        try:
            answer = await dns.asyncresolver.resolve(domain, "MX")
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            return [(0, domain)]  # RFC 5321 5.1: the implicit MX
        return sorted((int(r.preference), str(r.exchange).rstrip(".")) for r in answer)


def _checked(address: str) -> str:
    # Addresses reaching aiosmtplib must be plain: CR/LF would inject SMTP commands.
    if address and split_address(address) is None:
        raise ValueError(f"refusing to send with a malformed address {address!r}")
    return address


class _Connections:
    """One live aiosmtplib connection per (host, port), reused between messages."""

    def __init__(self, timeout: float, helo: str | None) -> None:
        self.timeout = timeout
        self.helo = helo
        self._open: dict[tuple[str, int], aiosmtplib.SMTP] = {}
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}

    def lock(self, host: str, port: int) -> asyncio.Lock:
        return self._locks.setdefault((host, port), asyncio.Lock())

    async def get(
        self, host: str, port: int, starttls: bool, username: str | None, password: str | None
    ) -> aiosmtplib.SMTP:
        smtp = self._open.get((host, port))
        if smtp is not None and smtp.is_connected:
            return smtp
        smtp = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            timeout=self.timeout,
            local_hostname=self.helo,
            start_tls=False,
        )
        await smtp.connect()
        if starttls and smtp.supports_extension("starttls"):
            await smtp.starttls()
        if username:
            await smtp.login(username, password or "")
        self._open[(host, port)] = smtp
        return smtp

    def drop(self, host: str, port: int) -> None:
        smtp = self._open.pop((host, port), None)
        if smtp is not None:
            smtp.close()

    async def close(self) -> None:
        for smtp in self._open.values():
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()
        self._open.clear()


async def _transaction(
    smtp: aiosmtplib.SMTP, envelope_from: str, recipient: str, data: bytes
) -> SendResult:
    try:
        errors, reply = await smtp.sendmail(_checked(envelope_from), [_checked(recipient)], data)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        refusal = exc.recipients[0]
        return _classified(refusal.code, refusal.message)
    except aiosmtplib.SMTPResponseException as exc:
        return _classified(exc.code, exc.message)
    if errors:
        code, text = next(iter(errors.values()))
        return _classified(code, text)
    return SendResult(SendOutcome.ACCEPTED, f"250 {reply}")


def _classified(code: int, text: str) -> SendResult:
    outcome = SendOutcome.PERMANENT if 500 <= code < 600 else SendOutcome.TEMPORARY
    return SendResult(outcome, f"{code} {text}")


class SmarthostTransport:
    """Everything through one relay (host, port, STARTTLS, AUTH)."""

    def __init__(self, config: SmarthostConfig, timeout: float, helo: str | None = None) -> None:
        self.config = config
        self.connections = _Connections(timeout, helo)
        self.password = os.environ.get(config.password_env) if config.password_env else None

    async def send(self, envelope_from: str, recipient: str, data: bytes) -> SendResult:
        c = self.config
        async with self.connections.lock(c.host, c.port):
            try:
                smtp = await self.connections.get(
                    c.host, c.port, c.starttls, c.username, self.password
                )
                result = await _transaction(smtp, envelope_from, recipient, data)
                if result.outcome is not SendOutcome.ACCEPTED:
                    await _reset(smtp)
                return result
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                self.connections.drop(c.host, c.port)
                return SendResult(SendOutcome.TEMPORARY, f"smarthost {c.host}:{c.port}: {exc}")

    async def close(self) -> None:
        await self.connections.close()


class DirectMxTransport:
    """Straight to the recipient domain's MX hosts, best preference first."""

    def __init__(
        self, resolver: MxResolver, timeout: float, helo: str | None = None, port: int = 25
    ) -> None:
        self.resolver = resolver
        self.port = port
        self.connections = _Connections(timeout, helo)

    async def send(self, envelope_from: str, recipient: str, data: bytes) -> SendResult:
        parts = split_address(recipient)
        if parts is None:
            return SendResult(
                SendOutcome.PERMANENT, f"not a valid recipient address: {recipient!r}"
            )
        try:
            hosts = await self.resolver.mx_hosts(parts[1])
        except Exception as exc:  # DNS trouble is temporary
            return SendResult(SendOutcome.TEMPORARY, f"MX lookup for {parts[1]} failed: {exc}")
        last = SendResult(SendOutcome.TEMPORARY, f"no MX host for {parts[1]}")
        for _, host in sorted(hosts):  # best preference first
            async with self.connections.lock(host, self.port):
                try:
                    smtp = await self.connections.get(host, self.port, True, None, None)
                    result = await _transaction(smtp, envelope_from, recipient, data)
                except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                    self.connections.drop(host, self.port)
                    last = SendResult(SendOutcome.TEMPORARY, f"{host}: {exc}")
                    continue
                if result.outcome is not SendOutcome.ACCEPTED:
                    await _reset(smtp)
                if result.outcome is SendOutcome.TEMPORARY:
                    last = result
                    continue  # the next MX may take it
                return result
        return last

    async def close(self) -> None:
        await self.connections.close()


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()

"""The outbound transports against real SMTP servers on free ports (R17 classification)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.config import SmarthostConfig
from gateway.outbound.transport import DirectMxTransport, SendOutcome, SmarthostTransport
from tests.support import CaptureServer
from tests.test_serve import free_port

MESSAGE = b"From: documents@welyb.fr\r\nTo: x@factures-meg.fr\r\nSubject: t\r\n\r\nbody\r\n"


class FakeResolver:
    """The DNS, which cannot be reached here, behind the MxResolver interface."""

    def __init__(self, answers: dict[str, Sequence[tuple[int, str]]] | Exception) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def mx_hosts(self, domain: str) -> Sequence[tuple[int, str]]:
        self.asked.append(domain)
        if isinstance(self.answers, Exception):
            raise self.answers
        return self.answers[domain]


def send_all(transport, count: int = 1, recipient: str = "x@factures-meg.fr"):
    async def go():
        try:
            return [
                await transport.send("bounce+1-abc@welyb.fr", recipient, MESSAGE)
                for _ in range(count)
            ]
        finally:
            await transport.close()

    return asyncio.run(go())


def test_smarthost_reuses_one_connection_for_several_messages():
    with CaptureServer() as inbox:
        transport = SmarthostTransport(
            SmarthostConfig(host="127.0.0.1", port=inbox.port, starttls=False), timeout=10
        )
        results = send_all(transport, count=5)
    assert [r.outcome for r in results] == [SendOutcome.ACCEPTED] * 5
    assert len(inbox.accepted) == 5 and inbox.sessions == 1


def test_smarthost_refusing_connections_is_temporary():
    transport = SmarthostTransport(
        SmarthostConfig(host="127.0.0.1", port=free_port(), starttls=False), timeout=5
    )
    [result] = send_all(transport)
    assert result.outcome is SendOutcome.TEMPORARY and "smarthost 127.0.0.1" in result.reply


def test_direct_mx_tries_hosts_by_preference_and_falls_back():
    """The best MX refuses connections; the next one takes the message. Each MX is its own
    loopback address (127.0.0.0/8 is all local), all listening on one port as MXes do."""
    port = free_port()
    with CaptureServer(host="127.0.0.3", port=port) as backup:
        resolver = FakeResolver({"factures-meg.fr": [(20, "127.0.0.3"), (10, "127.0.0.2")]})
        [result] = send_all(DirectMxTransport(resolver, timeout=5, port=port))
    assert result.outcome is SendOutcome.ACCEPTED
    assert resolver.asked == ["factures-meg.fr"] and len(backup.accepted) == 1


def test_direct_mx_permanent_refusal_is_not_retried_elsewhere():
    port = free_port()
    with (
        CaptureServer(["550 5.1.1 no such user"], host="127.0.0.2", port=port) as first,
        CaptureServer(host="127.0.0.3", port=port) as second,
    ):
        resolver = FakeResolver({"factures-meg.fr": [(10, "127.0.0.2"), (20, "127.0.0.3")]})
        [result] = send_all(DirectMxTransport(resolver, timeout=5, port=port))
    assert result.outcome is SendOutcome.PERMANENT and result.reply.startswith("550 5.1.1")
    assert first.accepted == [] and second.accepted == []


def test_direct_mx_temporary_refusal_tries_the_next_host():
    port = free_port()
    with (
        CaptureServer(["451 4.3.0 busy"], host="127.0.0.2", port=port) as first,
        CaptureServer(host="127.0.0.3", port=port) as second,
    ):
        resolver = FakeResolver({"factures-meg.fr": [(10, "127.0.0.2"), (20, "127.0.0.3")]})
        [result] = send_all(DirectMxTransport(resolver, timeout=5, port=port))
    assert result.outcome is SendOutcome.ACCEPTED
    assert first.accepted == [] and len(second.accepted) == 1


def test_dns_failure_is_temporary():
    transport = DirectMxTransport(FakeResolver(TimeoutError("no answer")), timeout=5)
    [result] = send_all(transport)
    assert result.outcome is SendOutcome.TEMPORARY and "MX lookup" in result.reply


def test_malformed_recipient_is_refused_before_any_connection():
    resolver = FakeResolver({})
    [result] = send_all(
        DirectMxTransport(resolver, timeout=5),
        recipient="x@factures-meg.fr\r\nRCPT TO:<victim@example.org>",
    )
    assert result.outcome is SendOutcome.PERMANENT and resolver.asked == []

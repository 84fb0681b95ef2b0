"""Test helpers: a clock moved by hand, a server on a free port, a real SMTP client."""

from __future__ import annotations

import asyncio
import smtplib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from gateway.app import Gateway
from gateway.inbound.smtp import InboundServer
from gateway.inbound.spool import Spool
from tests.corpus.make_corpus import pdf_bytes
from tests.processes import free_port


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment

    def advance(self, **kwargs: float) -> None:
        self.moment += timedelta(**kwargs)


DEFAULT_NOW = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)


class RunningServer:
    """The real InboundServer on its own event loop in a thread, as a deployment runs it."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: InboundServer | None = None
        self.spool: Spool | None = None
        self.host = ""
        self.port = 0

    def start(self) -> RunningServer:
        self.thread.start()

        async def _start() -> tuple[str, int]:
            self.server, self.spool = self.gw.inbound_server()
            return await self.server.start("127.0.0.1", 0)

        self.host, self.port = asyncio.run_coroutine_threadsafe(_start(), self.loop).result(10)
        return self

    def run(self, coro: object, timeout: float = 30) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def stop(self, grace: float = 5.0) -> None:
        async def _stop() -> None:
            assert self.server is not None and self.spool is not None
            await self.server.drain(grace)
            await self.spool.close()

        self.run(_stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @contextmanager
    def client(self) -> Iterator[smtplib.SMTP]:
        with smtplib.SMTP(self.host, self.port, timeout=10) as smtp:
            smtp.ehlo("client.example.org")
            yield smtp


def message(
    to: str = "compta+dupont-maconnerie@welyb.fr",
    sender: str = "fournisseur@example.org",
    subject: str = "Facture 2026-117",
    attachments: Sequence[tuple[str, str, bytes]] = (),
    body: str = "Bonjour,\nveuillez trouver la facture ci-jointe.\n",
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{abs(hash((to, subject, body)))}@example.org>"
    msg.set_content(body)
    for filename, media_type, content in attachments:
        maintype, subtype = media_type.split("/", 1)
        msg.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))  # as sent on the wire


def pdf(text: str = "Facture") -> bytes:
    """A small, valid PDF whose bytes depend on `text`."""
    return pdf_bytes(text)


def file_all(gateway: Gateway) -> int:
    """Run the filing stage until nothing is waiting; returns how many messages it took."""
    filer = gateway.filer("test-filer")
    total = 0
    while (n := filer.run_once()) > 0:
        total += n
    return total


class CaptureServer:
    """A partner's inbox: a real aiosmtpd server on a free port that records what it
    accepts, and answers DATA from a script (e.g. ["451 4.3.0 busy", "250 OK"])."""

    def __init__(
        self, replies: list[str] | None = None, host: str = "127.0.0.1", port: int | None = None
    ) -> None:
        from aiosmtpd.controller import Controller

        self.accepted: list[tuple[str, list[str], bytes]] = []
        self.replies = list(replies or [])
        # hold_first: the first DATA gets no answer (a slow partner) until the client goes
        # away; `holding` is set while it waits, so a test can kill the sender mid-send.
        self.hold_first = False
        self.holding = threading.Event()
        self.sessions = 0  # EHLOs seen: one per connection (no STARTTLS here)
        capture = self

        class Handler:
            async def handle_EHLO(
                self,
                server: object,
                session: object,
                envelope: object,
                hostname: str,
                responses: list[str],
            ) -> list[str]:
                capture.sessions += 1
                session.host_name = hostname  # type: ignore[attr-defined]  # the hook's job
                return responses

            async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
                if capture.hold_first and not capture.holding.is_set():
                    capture.holding.set()
                    await asyncio.sleep(60)  # cancelled when the connection is lost
                    return "451 4.3.0 held"
                reply = capture.replies.pop(0) if capture.replies else "250 2.0.0 OK captured"
                if reply.startswith("250"):
                    capture.accepted.append(
                        (
                            envelope.mail_from,
                            list(envelope.rcpt_tos),  # type: ignore[attr-defined]
                            envelope.original_content,
                        )
                    )  # type: ignore[attr-defined]
                return reply

        if port is None:
            port = free_port(host)  # Controller cannot be given port 0
        self.controller = Controller(Handler(), hostname=host, port=port)

    def __enter__(self) -> CaptureServer:
        self.controller.start()
        return self

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def __exit__(self, *_: object) -> None:
        self.controller.stop()


def self_signed(key: Any, common_name: str) -> x509.Certificate:
    """A certificate for `key` signed by itself, valid from yesterday for 30 days."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )

"""The real SMTP server on a free port, driven by a real SMTP client (smtplib)."""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select, text

from gateway.app import Gateway
from gateway.storage.connections import add_connection
from gateway.storage.models import BotMail, Company, Document, Folder, InboundMessage
from gateway.storage.rawmail import read_spooled
from tests.conftest import custom_server
from tests.support import FixedClock, RunningServer, file_all, message, pdf, self_signed


def messages(gw: Gateway) -> list[InboundMessage]:
    with gw.db.read() as s:
        return list(s.execute(select(InboundMessage).order_by(InboundMessage.id)).scalars())


def documents(gw: Gateway) -> list[tuple[Document, str]]:
    with gw.db.read() as s:
        return list(
            s.execute(
                select(Document, Folder.path)
                .join(Folder, Document.folder_id == Folder.id)
                .order_by(Document.id)
            )
        )


def send(
    server: RunningServer, to: str | list[str], data: bytes, sender: str = "fournisseur@example.org"
) -> tuple[int, bytes]:
    with server.client() as smtp:
        smtp.mail(sender)
        for rcpt in [to] if isinstance(to, str) else to:
            code, reply = smtp.rcpt(rcpt)
            assert code == 250, reply
        return smtp.data(data)


def test_collection_address_acknowledges_only_durable_mail_then_files_it(server, gw):
    """R8, R2, R3: 250 once stored; the PDF lands in Achats of fiscal year and month."""
    invoice = pdf("Facture 117")
    code, reply = send(
        server,
        "compta+dupont-maconnerie@welyb.fr",
        message(attachments=[("facture-117.pdf", "application/pdf", invoice)]),
    )
    assert code == 250 and reply.startswith(b"2.0.0 OK: queued as ")
    queue_id = reply.rsplit(b" ", 1)[1].decode()
    [row] = messages(gw)
    assert row.queue_id == queue_id and row.status == "received"
    raw = read_spooled(gw.config.spool_path, row.spool_segment, row.spool_offset, row.size)
    assert b"facture-117.pdf" in raw and raw.startswith(b"Received: from client.example.org")
    assert file_all(gw) == 1
    [(doc, path)] = documents(gw)
    assert path == "Dossier comptable annuel/2026/Achats/11"
    assert (doc.filename, doc.media_type, doc.source) == (
        "facture-117.pdf",
        "application/pdf",
        "smtp",
    )
    assert gw.blobs.get(doc.sha256) == invoice
    assert messages(gw)[0].status == "filed"


@pytest.mark.parametrize(
    ("rcpt", "folder"),
    [
        ("ventes+dupont-maconnerie@welyb.com", "Dossier comptable annuel/2026/Ventes/11"),
        ("Banque+Dupont-Maconnerie@WELYB.FR", "Dossier comptable annuel/2026/Banque/11"),
        ("social+boulangerie-martin@welyb.fr", "Dossier comptable annuel/2027/Social/11"),
        ("dupont-maconnerie@welyb.fr", "A classer"),
    ],
)
def test_each_collection_address_kind_files_into_its_folder(server, gw, rcpt, folder):
    """R1, R2, R3, R5: journals, both domains, any case; fiscal year from the company's end
    (boulangerie-martin ends on 30 June, so November 2026 is fiscal year 2027)."""
    send(server, rcpt, message(to=rcpt, attachments=[("f.pdf", "application/pdf", pdf(rcpt))]))
    file_all(gw)
    [(_, path)] = documents(gw)
    assert path == folder


@pytest.mark.parametrize(
    ("rcpt", "partner"),
    [
        ("myunisoft+aecconseil@welyb.fr", "myunisoft"),
        ("quickbooks+dupont-maconnerie@welyb.com", "quickbooks"),
        ("myunisoft+aecconseil+67-45-ACH@welyb.fr", "myunisoft"),
    ],
)
def test_bot_identity_mail_goes_to_the_cabinet_bot_mailbox(server, gw, rcpt, partner):
    """R6: not filed into the GED; readable by the cabinet."""
    send(
        server,
        rcpt,
        message(
            to=rcpt,
            subject="Activez votre compte",
            attachments=[("cgv.pdf", "application/pdf", pdf("cgv"))],
        ),
        sender="no-reply@partner.example",
    )
    file_all(gw)
    assert documents(gw) == []
    with gw.db.read() as s:
        [bot] = s.execute(select(BotMail)).scalars().all()
    assert (bot.recipient, bot.partner, bot.subject) == (
        rcpt.lower(),
        partner,
        "Activez votre compte",
    )
    assert bot.cabinet_id is not None
    assert messages(gw)[0].status == "bot_mail"


def test_partner_alias_in_use_by_a_connection_reaches_the_bot_mailbox(server, gw, clock):
    """meg+<name>@ is known only through the connection that uses it: before the connection
    it is refused at RCPT, after it MEG's notices reach the company's cabinet (R6), on every
    served domain (R1)."""
    add_connection(
        gw.db, gw.grammar, "dupont-maconnerie", "meg", "meg+macon-dupont@welyb.fr", clock.now()
    )
    with server.client() as smtp:
        smtp.mail("no-reply@factures-meg.fr")
        refused, reply = smtp.rcpt("meg+macon-durand@welyb.fr")  # no connection uses it
    assert (refused, reply.endswith(b"recipient unknown")) == (550, True)
    rcpt = "MEG+Macon-Dupont@welyb.com"
    send(server, rcpt, message(to=rcpt, subject="Compte MEG activé"), sender="no-reply@meg.fr")
    file_all(gw)
    with gw.db.read() as s:
        [bot] = s.execute(select(BotMail)).scalars().all()
        company = s.execute(select(Company).where(Company.id == bot.company_id)).scalar_one()
    assert (bot.partner, bot.subject, company.slug) == (
        "meg",
        "Compte MEG activé",
        "dupont-maconnerie",
    )
    assert bot.cabinet_id == company.cabinet_id


@pytest.mark.parametrize(
    ("rcpt", "code", "enhanced"),
    [
        ("someone@gmail.com", 550, b"5.7.1"),
        ("compta+dupont-maconnerie@example.com", 550, b"5.7.1"),
        ("compta+inconnue@welyb.fr", 550, b"5.1.1"),
        ("inconnue@welyb.fr", 550, b"5.1.1"),
        ("tartempion+dupont-maconnerie@welyb.fr", 550, b"5.1.1"),
        ("myunisoft+cabinet-inconnu@welyb.fr", 550, b"5.1.1"),
        ("meg+macon-dupont@welyb.fr", 550, b"5.1.1"),
        ("compta+dupont maconnerie@welyb.fr", 553, b"5.1.3"),
    ],
)
def test_rcpt_refusals(server, gw, rcpt, code, enhanced):
    """R7: unknown addresses are refused at RCPT; never an open relay."""
    with server.client() as smtp:
        smtp.mail("a@example.org")
        got_code, reply = smtp.rcpt(rcpt)
    assert (got_code, reply.split(b" ", 1)[0]) == (code, enhanced), reply
    assert messages(gw) == []


def test_relay_attempt_with_a_local_sender_is_still_refused(server, gw):
    """R7: a sender on our own domain does not make us relay."""
    with server.client() as smtp:
        smtp.mail("compta+dupont-maconnerie@welyb.fr")
        code, reply = smtp.rcpt("victim@example.net")
    assert code == 550 and reply.startswith(b"5.7.1")


def test_recipient_limit(tmp_path, database_url, clock):
    with custom_server(tmp_path, database_url, clock, smtp={"max_recipients": 2}) as (_, running):
        with running.client() as smtp:
            smtp.mail("a@example.org")
            assert smtp.rcpt("compta+dupont-maconnerie@welyb.fr")[0] == 250
            assert smtp.rcpt("ventes+dupont-maconnerie@welyb.fr")[0] == 250
            code, reply = smtp.rcpt("banque+dupont-maconnerie@welyb.fr")
        assert code == 452 and reply.startswith(b"4.5.3")


def test_oversize_is_refused_with_552_and_nothing_is_kept(tmp_path, database_url, clock):
    with custom_server(tmp_path, database_url, clock, smtp={"max_message_size": 50_000}) as (
        gw,
        running,
    ):
        with running.client() as smtp:
            assert smtp.has_extn("size") and smtp.esmtp_features["size"] == "50000"
            code, reply = smtp.mail("a@example.org", ["SIZE=80000"])
            assert code == 552 and reply.startswith(b"5.3.4"), reply
            smtp.rset()
            smtp.mail("a@example.org")
            smtp.rcpt("compta+dupont-maconnerie@welyb.fr")
            big = message(
                attachments=[("big.pdf", "application/pdf", b"%PDF-1.4\n" + b"x" * 60_000)]
            )
            code, reply = smtp.data(big)
        assert code == 552 and reply.startswith(b"5.3.4"), reply
        assert messages(gw) == []


def test_our_own_failure_answers_451_never_5xx(server, gw):
    """R8: a failure before the 250 is temporary, so the sender keeps the mail and retries."""
    with server.client() as smtp:
        smtp.mail("a@example.org")
        assert smtp.rcpt("compta+dupont-maconnerie@welyb.fr")[0] == 250
        with gw.db.write() as s:  # the database loses its table under our feet
            s.execute(
                text(
                    "DROP TABLE inbound_messages CASCADE"
                    if not gw.db.is_sqlite
                    else "DROP TABLE inbound_messages"
                )
            )
        code, reply = smtp.data(message(attachments=[("f.pdf", "application/pdf", pdf())]))
    assert code == 451 and reply.startswith(b"4.3.0"), reply


def test_directory_failure_at_rcpt_answers_451(server, gw):
    with gw.db.write() as s:
        s.execute(
            text("DROP TABLE companies CASCADE" if not gw.db.is_sqlite else "DROP TABLE companies")
        )
    with server.client() as smtp:
        smtp.mail("a@example.org")
        code, reply = smtp.rcpt("compta+dupont-maconnerie@welyb.fr")
    assert code == 451 and reply.startswith(b"4.3.0"), reply


def _raw_session(server: RunningServer, payload: bytes) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        # No half-close: aiosmtpd drops a session on EOF; QUIT at the end closes it.
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_bare_lf_smuggling_creates_no_extra_message(server, gw):
    """SMTP smuggling: `\\n.\\n` inside DATA is not an end of data."""
    smuggled = (
        b"EHLO attacker.example\r\nMAIL FROM:<a@example.org>\r\n"
        b"RCPT TO:<compta+dupont-maconnerie@welyb.fr>\r\nDATA\r\n"
        b"Subject: first\r\n\r\nhello\n.\nMAIL FROM:<b@example.org>\n"
        b"RCPT TO:<ventes+dupont-maconnerie@welyb.fr>\nDATA\nSubject: smuggled\n\nx\n.\r\n"
        b"Subject: still first\r\n.\r\nQUIT\r\n"
    )
    replies = _raw_session(server, smuggled)
    assert replies.count(b"queued as") == 1, replies
    [row] = messages(gw)
    assert row.rcpt_tos == ["compta+dupont-maconnerie@welyb.fr"]
    raw = read_spooled(gw.config.spool_path, row.spool_segment, row.spool_offset, row.size)
    assert b"Subject: smuggled" in raw  # it stayed inside the one message


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed(key, "mx.welyb.test")
    cert_path, key_path = tmp_path / "mx.pem", tmp_path / "mx.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextmanager
def tls_server(
    tmp_path: Path, database_url: str, clock: FixedClock
) -> Iterator[tuple[Gateway, RunningServer, ssl.SSLContext]]:
    """A server with a self-signed certificate, and a client context that trusts it."""
    cert, key = _self_signed(tmp_path)
    tls = {"tls_certificate": str(cert), "tls_key": str(key)}
    with custom_server(tmp_path, database_url, clock, smtp=tls) as (gw, running):
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        yield gw, running, context


def test_starttls_when_a_certificate_is_configured(tmp_path, database_url, clock):
    with tls_server(tmp_path, database_url, clock) as (gw, running, context):
        with smtplib.SMTP(running.host, running.port, timeout=10) as smtp:
            smtp.ehlo("client.example.org")
            assert smtp.has_extn("starttls")
            smtp.starttls(context=context)
            smtp.ehlo("client.example.org")
            assert smtp.sock.version() is not None  # type: ignore[union-attr]
            smtp.sendmail(
                "a@example.org",
                ["compta+dupont-maconnerie@welyb.fr"],
                message(attachments=[("f.pdf", "application/pdf", pdf())]),
            )
        [row] = messages(gw)
        raw = read_spooled(gw.config.spool_path, row.spool_segment, row.spool_offset, row.size)
        assert b"with ESMTPS" in raw.split(b"\r\n\r\n", 1)[0]


def test_no_starttls_without_certificate(server):
    with server.client() as smtp:
        assert not smtp.has_extn("starttls")


def test_shutdown_finishes_sessions_in_flight_and_answers_421_to_new_ones(gw):
    running = RunningServer(gw).start()
    import threading

    in_flight = smtplib.SMTP(running.host, running.port, timeout=10)
    in_flight.ehlo("client.example.org")
    in_flight.mail("a@example.org")
    in_flight.rcpt("compta+dupont-maconnerie@welyb.fr")
    stopper = threading.Thread(target=running.stop, kwargs={"grace": 10.0})
    stopper.start()
    try:
        # While draining, a new connection is turned away with 421 ...
        import time

        for _ in range(100):
            if running.server is not None and running.server.handler.draining:
                break
            time.sleep(0.02)
        with socket.create_connection((running.host, running.port), timeout=5) as sock:
            greeting = sock.recv(1024)
        assert greeting.startswith(b"421 4.3.2"), greeting
        # ... and the transaction in flight still completes with 250,
        code, _ = in_flight.data(message(attachments=[("f.pdf", "application/pdf", pdf())]))
        assert code == 250
        # after which no new transaction starts.
        code, _ = in_flight.mail("b@example.org")
        assert code == 421
    finally:
        stopper.join(15)
    assert len(messages(gw)) == 1


def stored(gw: Gateway) -> list[bytes]:
    """Each stored message without the Received: line the gateway prepends."""
    out = []
    for row in messages(gw):
        raw = read_spooled(gw.config.spool_path, row.spool_segment, row.spool_offset, row.size)
        out.append(raw.split(b"\r\n", 3)[3])  # Received: spans three lines
    return out


def test_dot_stuffed_lines_come_back_unstuffed(server, gw):
    body = b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n\r\nend\r\n"
    with server.client() as smtp:
        smtp.sendmail("a@example.org", ["dupont-maconnerie@welyb.fr"], body)
    assert stored(gw) == [body]


def test_data_phase_edge_cases_over_a_raw_socket(server, gw):
    """The DATA reader: empty message, terminator split across packets, pipelined commands
    after the terminator in the same packet (PIPELINING), a message several chunks long."""
    big_body = b"".join(b"line %06d of a long message\r\n" % i for i in range(120_000))
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        f = sock.makefile("rb")

        def reply() -> bytes:
            line = f.readline()
            while line[3:4] == b"-":
                line = f.readline()
            return line

        assert reply().startswith(b"220")
        envelope = b"MAIL FROM:<a@example.org>\r\nRCPT TO:<dupont-maconnerie@welyb.fr>\r\nDATA\r\n"
        sock.sendall(b"EHLO c.example\r\n")
        assert reply().startswith(b"250")
        # 1. an empty message: the terminator right away
        sock.sendall(envelope)
        assert [reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        sock.sendall(b".\r\n")
        assert reply().startswith(b"250 2.0.0")
        # 2. the terminator split over three packets
        sock.sendall(envelope)
        assert [reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        for part in (b"Subject: split\r\n\r\nbody\r", b"\n.", b"\r\n"):
            sock.sendall(part)
            time.sleep(0.05)
        assert reply().startswith(b"250 2.0.0")
        # 3. a big message and the next transaction in the same packet
        sock.sendall(envelope)
        assert [reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        sock.sendall(
            b"Subject: big\r\n\r\n"
            + big_body
            + b".\r\n"
            + envelope
            + b"Subject: pipelined\r\n\r\nx\r\n.\r\nQUIT\r\n"
        )
        assert reply().startswith(b"250 2.0.0")
        assert [reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        assert reply().startswith(b"250 2.0.0")
        assert reply().startswith(b"221")
    assert stored(gw) == [
        b"",
        b"Subject: split\r\n\r\nbody\r\n",
        b"Subject: big\r\n\r\n" + big_body,
        b"Subject: pipelined\r\n\r\nx\r\n",
    ]


def test_long_lines_and_bare_lf_are_kept_as_sent(server, gw):
    body = b"Subject: long\r\n\r\n" + b"x" * 5000 + b"\r\nbare\nlf\r\n"
    with server.client() as smtp:
        smtp.sendmail("a@example.org", ["dupont-maconnerie@welyb.fr"], body)
    assert stored(gw) == [body]

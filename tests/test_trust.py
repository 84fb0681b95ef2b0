"""Trust in what is filed (issue 11), end to end: mail sent to the real SMTP server, filed by
the real filing stage, with a real DNS server publishing SPF, DKIM and DMARC for the test
domains (tests/dns_server.py), messages signed with dkimpy, a real clamd and a real rspamd.

Domains: `supplier.example` signs with DKIM and publishes SPF for 127.0.0.1 and DMARC
p=reject; `bank.example` publishes DMARC p=reject and an SPF that names no one: a message
"From" it sent from here is the forged supplier invoice of the issue.
"""

from __future__ import annotations

import email
from collections.abc import Iterator
from contextlib import contextmanager
from email import policy as email_policy
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import event, select

from gateway.app import Gateway
from gateway.cli import cli
from gateway.outbound.dkim import KeyStore, generate_key
from gateway.storage.connections import set_switch
from gateway.storage.models import Document, InboundMessage, MessageStatus
from tests.authmail import Key, rsa_key, sign
from tests.clamd import EICAR, ClamdDaemon
from tests.conftest import custom_server
from tests.dns_server import DnsServer
from tests.rspamd import RspamdServer
from tests.support import CaptureServer, FixedClock, RunningServer, file_all, pdf
from tests.test_outbound import ACHATS, connect_meg, run

COMPANY = "dupont-maconnerie"
TO = f"compta+{COMPANY}@welyb.fr"
AUTHSERV = "mx.welyb.test"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


@pytest.fixture(scope="module")
def supplier_key() -> Key:
    return rsa_key()


@pytest.fixture(scope="module")
def zone(supplier_key: Key) -> Iterator[DnsServer]:
    with DnsServer(
        {
            ("supplier.example", "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
            ("s1._domainkey.supplier.example", "TXT"): [supplier_key.record],
            ("_dmarc.supplier.example", "TXT"): ["v=DMARC1; p=reject"],
            ("bank.example", "TXT"): ["v=spf1 ip4:192.0.2.1 -all"],
            ("_dmarc.bank.example", "TXT"): ["v=DMARC1; p=reject"],
        }
    ) as server:
        yield server


@contextmanager
def gateway(
    tmp_path: Path, database_url: str, clock: FixedClock, zone: DnsServer, **sections: Any
) -> Iterator[tuple[Gateway, RunningServer]]:
    trust = {"nameservers": ["127.0.0.1"], "dns_port": zone.port, "authserv_id": AUTHSERV}
    trust.update(sections.pop("trust", {}))
    with custom_server(tmp_path, database_url, clock, trust=trust, **sections) as running:
        yield running


def mail(
    sender: str,
    attachment: tuple[str, bytes] | None = ("facture-117.pdf", pdf("Facture 117")),
    body: str = "Bonjour,\r\nla facture est jointe.\r\n",
    extra: str = "",
) -> bytes:
    msg = email.message.EmailMessage()
    msg["From"] = sender
    msg["To"] = TO
    msg["Subject"] = "Facture 117"
    msg["Message-ID"] = "<117@supplier.example>"
    msg.set_content(body)
    if attachment is not None:
        name, content = attachment
        msg.add_attachment(content, maintype="application", subtype="pdf", filename=name)
    return extra.encode() + msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def send(server: RunningServer, mail_from: str, data: bytes, to: str = TO) -> None:
    with server.client() as smtp:
        smtp.sendmail(mail_from, [to], data)


def the_message(gw: Gateway) -> InboundMessage:
    with gw.db.read() as s:
        [message] = s.execute(select(InboundMessage)).scalars().all()
        s.expunge_all()
    return message


def documents(gw: Gateway) -> list[Document]:
    with gw.db.read() as s:
        rows = list(s.execute(select(Document).order_by(Document.id)).scalars())
        s.expunge_all()
    return rows


def gateway_cli(gw: Gateway, *args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "-c", str(gw.config.path)])
    assert result.exit_code == 0, result.output
    return result.output


def set_policy(gw: Gateway, kind: str, *, company: str = COMPANY) -> None:
    gateway_cli(gw, "policy", "set", "--company", company, kind)


# -- authentication and the sender policy -----------------------------------------------------


def test_a_forged_from_of_a_p_reject_domain_is_filed_under_open_with_its_results(
    tmp_path, database_url, clock, zone
):
    with gateway(tmp_path, database_url, clock, zone) as (gw, server):
        send(server, "billing@bank.example", mail("Bank <billing@bank.example>"))
        file_all(gw)
    message = the_message(gw)
    assert message.status == MessageStatus.FILED
    assert message.authentication is not None
    assert message.authentication["spf"]["result"] == "fail"
    assert message.authentication["dmarc"]["result"] == "fail"
    shown = gateway_cli(gw, "messages", "show", message.queue_id)
    assert "dmarc=fail" in shown and "header.from=bank.example" in shown


def test_a_forged_from_under_authenticated_is_quarantined_and_nothing_is_filed(
    tmp_path, database_url, clock, zone
):
    with gateway(tmp_path, database_url, clock, zone) as (gw, server):
        set_policy(gw, "authenticated")
        send(server, "billing@bank.example", mail("Bank <billing@bank.example>"))
        file_all(gw)
    message = the_message(gw)
    assert message.status == MessageStatus.QUARANTINED
    assert message.reason is not None
    assert "sender policy authenticated" in message.reason and "dmarc=fail" in message.reason
    assert f"company {COMPANY}" in message.reason
    assert documents(gw) == []
    listed = gateway_cli(gw, "quarantine", "list")
    assert message.queue_id in listed
    shown = gateway_cli(gw, "quarantine", "show", message.queue_id)
    assert f"Authentication-Results: {AUTHSERV};" in shown
    # The copy kept is the message with our results on top.
    assert message.quarantine_sha256 is not None
    kept = gw.blobs.get(message.quarantine_sha256)
    assert kept.startswith(f"Authentication-Results: {AUTHSERV};".encode())


def test_a_dkim_signed_aligned_message_passes_authenticated_with_our_header_on_top(
    tmp_path, database_url, clock, zone, supplier_key
):
    # Someone else's Authentication-Results claiming our authserv-id must not survive.
    forged = f"Authentication-Results: {AUTHSERV}; dmarc=pass header.from=bank.example\r\n"
    signed = sign(
        mail("Supplier <factures@supplier.example>", attachment=None, extra=forged),
        supplier_key,
        "supplier.example",
        "s1",
    )
    with gateway(tmp_path, database_url, clock, zone) as (gw, server):
        set_policy(gw, "authenticated")
        send(server, "factures@supplier.example", signed)
        file_all(gw)
    message = the_message(gw)
    assert message.status == MessageStatus.FILED, message.reason
    assert message.authentication is not None
    assert message.authentication["dmarc"]["result"] == "pass"
    [eml] = [d for d in documents(gw) if d.origin == "body"]  # no attachment: the .eml
    kept = gw.blobs.get(eml.sha256)
    headers = kept.split(b"\r\n\r\n", 1)[0]
    assert headers.startswith(f"Authentication-Results: {AUTHSERV};".encode())
    assert headers.count(f"Authentication-Results: {AUTHSERV}".encode()) == 1
    assert b"dmarc=pass header.from=bank.example" not in kept


def test_a_temporary_dns_error_waits_once_then_the_second_result_stands(
    tmp_path, database_url, clock, zone
):
    zone.servfail.add(zone.hook("_dmarc.bank.example"))
    try:
        with gateway(tmp_path, database_url, clock, zone) as (gw, server):
            set_policy(gw, "authenticated")
            send(server, "billing@bank.example", mail("Bank <billing@bank.example>"))
            file_all(gw)
            first = the_message(gw)
            assert first.status == MessageStatus.FILING, first.reason
            assert first.reason is not None and "temporary DNS error" in first.reason
            assert first.attempts == 0, "waiting for DNS is not a failed attempt"
            assert documents(gw) == []
            zone.servfail.discard(zone.hook("_dmarc.bank.example"))
            clock.advance(seconds=gw.config.trust.temperror_retry_seconds + 1)
            file_all(gw)
    finally:
        zone.servfail.discard(zone.hook("_dmarc.bank.example"))
    second = the_message(gw)
    assert second.status == MessageStatus.QUARANTINED
    assert second.reason is not None and "dmarc=fail" in second.reason


def test_a_temporary_dns_error_under_open_is_filed_at_once_with_its_temperror(
    tmp_path, database_url, clock, zone
):
    zone.servfail.add(zone.hook("_dmarc.bank.example"))
    try:
        with gateway(tmp_path, database_url, clock, zone) as (gw, server):
            send(
                server, "billing@bank.example", mail("Bank <billing@bank.example>", attachment=None)
            )
            file_all(gw)
    finally:
        zone.servfail.discard(zone.hook("_dmarc.bank.example"))
    message = the_message(gw)
    assert message.status == MessageStatus.FILED, message.reason
    assert message.authentication is not None
    assert message.authentication["dmarc"]["result"] == "temperror"
    [eml] = [d for d in documents(gw) if d.origin == "body"]  # our results on top
    headers = gw.blobs.get(eml.sha256).split(b"\r\n\r\n", 1)[0]
    assert headers.startswith(f"Authentication-Results: {AUTHSERV};".encode())
    assert b"dmarc=temperror" in headers


def test_a_message_without_a_temporary_error_reads_the_sender_policies_once(
    tmp_path, database_url, clock, zone, supplier_key
):
    # requires_authentication() is asked only after a temporary DNS error: each question is
    # a database read in the filing stage's path (benchmarks/trust.py).
    signed = sign(
        mail("Supplier <factures@supplier.example>"), supplier_key, "supplier.example", "s1"
    )
    with gateway(tmp_path, database_url, clock, zone) as (gw, server):
        set_policy(gw, "authenticated")
        send(server, "factures@supplier.example", signed)
        reads: list[str] = []

        def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if "sender_policies" in statement:
                reads.append(statement)

        event.listen(gw.db.engine, "before_cursor_execute", count)
        try:
            file_all(gw)
        finally:
            event.remove(gw.db.engine, "before_cursor_execute", count)
    assert the_message(gw).status == MessageStatus.FILED
    assert len(reads) == 1, reads


@pytest.fixture
def partner_inbox() -> Iterator[CaptureServer]:
    with CaptureServer() as capture:
        yield capture


def test_release_files_it_and_a_switched_partner_receives_it(
    tmp_path, database_url, clock, zone, partner_inbox
):
    relay = {"host": "127.0.0.1", "port": partner_inbox.port, "starttls": False}
    with gateway(tmp_path, database_url, clock, zone, outbound={"smarthost": relay}) as (
        gw,
        server,
    ):
        for domain in gw.config.domains:  # outbound mail is DKIM-signed: a key per domain
            KeyStore(gw.config.dkim_path).save(generate_key(domain, "s2026"))
        set_policy(gw, "authenticated")
        connect_meg(gw, clock)
        set_switch(gw.db, COMPANY, ACHATS, "meg", True, clock.now(), create_folder=True)
        clock.advance(minutes=1)
        send(server, "billing@bank.example", mail("Bank <billing@bank.example>"))
        file_all(gw)
        message = the_message(gw)
        assert message.status == MessageStatus.QUARANTINED
        assert run(gw, flush=True) == 0, "nothing quarantined is relayed"
        gateway_cli(gw, "quarantine", "release", message.queue_id)
        file_all(gw)
        assert the_message(gw).status == MessageStatus.FILED
        [document] = documents(gw)
        assert document.filename == "facture-117.pdf"
        assert run(gw, flush=True) == 1
    [(_, rcpts, data)] = partner_inbox.accepted
    assert rcpts == ["macon-dupont@factures-meg.fr"]
    assert (
        pdf("Facture 117")
        in email.message_from_bytes(data, policy=email_policy.default).get_payload(1).get_content()
    )  # type: ignore[union-attr]


def test_bot_mail_passes_the_cabinet_s_policy(tmp_path, database_url, clock, zone):
    with gateway(tmp_path, database_url, clock, zone) as (gw, server):
        gateway_cli(gw, "policy", "set", "--cabinet", "aecconseil", "authenticated")
        send(
            server,
            "noreply@bank.example",
            mail("MyUnisoft <noreply@bank.example>", attachment=None),
            to="myunisoft+aecconseil@welyb.fr",
        )
        file_all(gw)
    message = the_message(gw)
    assert message.status == MessageStatus.QUARANTINED
    assert message.reason is not None and "cabinet aecconseil" in message.reason


def test_quarantined_mail_is_purged_after_the_retention_and_its_record_stays(
    tmp_path, database_url, clock, zone
):
    with gateway(tmp_path, database_url, clock, zone) as (gw, server):
        set_policy(gw, "authenticated")
        send(server, "billing@bank.example", mail("Bank <billing@bank.example>"))
        file_all(gw)
        kept = the_message(gw).quarantine_sha256
        assert kept is not None and gw.blobs.exists(kept)
        clock.advance(days=gw.config.trust.quarantine_retention_days, minutes=61)
        file_all(gw)  # the workers purge hourly
    message = the_message(gw)
    assert message.status == MessageStatus.DISCARDED
    assert message.reason is not None and "dmarc=fail" in message.reason  # the record
    assert message.authentication is not None
    assert not gw.blobs.exists(kept)


# -- malware: a real clamd ----------------------------------------------------------------------


def _eicar_forwarded() -> bytes:
    inner = mail("Someone <someone@supplier.example>", ("facture.pdf", EICAR))
    outer = email.message.EmailMessage()
    outer["From"] = "Supplier <factures@supplier.example>"
    outer["To"] = TO
    outer["Subject"] = "Fwd: facture"
    outer.set_content("Voir ci-dessous.\r\n")
    outer.add_attachment(inner, maintype="message", subtype="rfc822")
    return outer.as_bytes(policy=outer.policy.clone(linesep="\r\n"))


def _eicar_zipped() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("facture.pdf", EICAR)
    return mail("Supplier <factures@supplier.example>", ("factures.zip", buffer.getvalue()))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            lambda: mail("S <factures@supplier.example>", ("facture.pdf", EICAR)), id="pdf"
        ),
        pytest.param(_eicar_zipped, id="zip"),
        pytest.param(_eicar_forwarded, id="forwarded"),
    ],
)
def test_eicar_is_quarantined_with_clamd_s_signature_name(
    tmp_path, database_url, clock, zone, clamd_daemon: ClamdDaemon, data
):
    clamav = {"enabled": True, "address": clamd_daemon.address}
    with gateway(tmp_path, database_url, clock, zone, clamav=clamav) as (gw, server):
        send(server, "factures@supplier.example", data())
        file_all(gw)
    message = the_message(gw)
    assert message.status == MessageStatus.QUARANTINED
    assert message.reason is not None and "malware: clamd found" in message.reason
    assert "EICAR" in message.reason.upper()
    assert documents(gw) == []


def test_clamd_stopped_the_message_waits_then_is_scanned_when_it_is_back(
    tmp_path, database_url, clock, zone, clamd_daemon: ClamdDaemon
):
    clamav = {"enabled": True, "address": clamd_daemon.address, "timeout_seconds": 2}
    with gateway(tmp_path, database_url, clock, zone, clamav=clamav) as (gw, server):
        send(server, "factures@supplier.example", mail("S <factures@supplier.example>"))
        with clamd_daemon.stopped():
            file_all(gw)
            waiting = the_message(gw)
            assert waiting.status == MessageStatus.FILING
            assert waiting.reason is not None and "waiting for clamd" in waiting.reason
            assert documents(gw) == [], "nothing is filed unscanned"
            clock.advance(seconds=gw.config.trust.scanner_retry_seconds + 1)
            file_all(gw)
            assert the_message(gw).status == MessageStatus.FILING
        clock.advance(seconds=gw.config.trust.scanner_retry_seconds + 1)
        file_all(gw)
    message = the_message(gw)
    assert message.status == MessageStatus.FILED, message.reason
    assert message.attempts <= 1, "waiting for the scanner used up no attempt"
    assert [d.filename for d in documents(gw)] == ["facture-117.pdf"]


# -- spam: a real rspamd ------------------------------------------------------------------------


def test_gtube_through_rspamd_is_quarantined_as_spam(
    tmp_path, database_url, clock, zone, rspamd_server: RspamdServer
):
    rspamd = {"enabled": True, "url": rspamd_server.url}
    with gateway(tmp_path, database_url, clock, zone, rspamd=rspamd) as (gw, server):
        send(server, "promo@supplier.example", mail("P <promo@supplier.example>", body=GTUBE))
        send(server, "factures@supplier.example", mail("S <factures@supplier.example>"))
        file_all(gw)
    with gw.db.read() as s:
        statuses = dict(s.execute(select(InboundMessage.mail_from, InboundMessage.status)).all())
        spam_reason = s.execute(
            select(InboundMessage.reason).where(InboundMessage.mail_from.startswith("promo"))
        ).scalar_one()
    assert statuses == {
        "promo@supplier.example": MessageStatus.QUARANTINED,
        "factures@supplier.example": MessageStatus.FILED,
    }
    assert spam_reason.startswith("spam: rspamd reject") and "GTUBE" in spam_reason

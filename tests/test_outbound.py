"""Documents out to partner inboxes (R12–R17), end to end over real SMTP.

A capture server on a free port plays the partner's inbox (smarthost mode); DKIM signatures
are checked with dkimpy against the public key the gateway would publish.
"""

from __future__ import annotations

import asyncio
import email
import os
import signal
import subprocess
import sys
from datetime import timedelta
from email import policy

from sqlalchemy import select

from gateway.app import Gateway
from gateway.clock import as_utc
from gateway.outbound.dkim import KeyStore
from gateway.storage.connections import add_connection, add_document, set_switch
from gateway.storage.models import Delivery
from tests.conftest import dkim_verifies
from tests.support import RunningServer, file_all, message, pdf
from tests.test_dkim import opendkim_results, opendkim_verify

ACHATS = "Dossier comptable annuel/2026/Achats"


def run(gateway: Gateway, flush: bool = False, worker: str = "sender-1") -> int:
    async def once() -> int:
        dispatcher = gateway.dispatcher(worker_name=worker)
        try:
            return await dispatcher.run_once(flush=flush)
        finally:
            await dispatcher.close()

    return asyncio.run(once())


def delivery(gateway: Gateway) -> Delivery:
    with gateway.db.read() as s:
        [d] = s.execute(select(Delivery)).scalars().all()
        return d


def place(gateway: Gateway, clock, tmp_path, name: str) -> None:
    """Upload a small PDF called `name` into Achats/11."""
    path = tmp_path / name
    path.write_bytes(pdf(name))
    add_document(
        gateway.db,
        gateway.grammar,
        gateway.blobs,
        "dupont-maconnerie",
        ACHATS + "/11",
        path,
        clock.now(),
    )


def connect_meg(gateway: Gateway, clock) -> None:
    add_connection(
        gateway.db,
        gateway.grammar,
        "dupont-maconnerie",
        "meg",
        "meg+macon-dupont@welyb.fr",
        clock.now(),
    )


def test_mail_in_reaches_meg_signed_and_only_what_came_after_the_switch(
    out_gw, clock, partner_inbox, tmp_path
):
    """R9–R13, R15: mailed in to compta+…, filed under a switched Achats folder, sent to
    …@factures-meg.fr after `deliveries flush`, DKIM-verified; a document placed before the
    switch never goes."""
    connect_meg(out_gw, clock)
    place(out_gw, clock, tmp_path, "avant.pdf")
    clock.advance(minutes=1)
    set_switch(out_gw.db, "dupont-maconnerie", ACHATS, "meg", True, clock.now(), create_folder=True)
    clock.advance(minutes=1)
    server = RunningServer(out_gw).start()
    try:
        with server.client() as smtp:
            smtp.sendmail(
                "client@example.org",
                ["compta+dupont-maconnerie@welyb.fr"],
                message(attachments=[("facture-117.pdf", "application/pdf", pdf("Facture 117"))]),
            )
    finally:
        server.stop()
    file_all(out_gw)
    assert run(out_gw, flush=True) == 1
    [(mail_from, rcpts, data)] = partner_inbox.accepted
    assert rcpts == ["macon-dupont@factures-meg.fr"]
    assert mail_from.startswith("bounce+") and mail_from.endswith("@welyb.fr")
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert parsed["From"].addresses[0].addr_spec == "documents@welyb.fr"
    [attachment] = list(parsed.iter_attachments())
    assert attachment.get_filename() == "facture-117.pdf"
    assert attachment.get_content() == pdf("Facture 117")
    assert dkim_verifies(out_gw, data)
    # ... and by OpenDKIM, software nobody here wrote, on the bytes the partner received.
    keys = KeyStore(out_gw.config.dkim_path).keys_for("welyb.fr")
    output = opendkim_verify(tmp_path, data, keys)
    assert opendkim_results(output) == {keys[0].selector: "pass"}, output
    d = delivery(out_gw)
    assert d.status == "sent" and d.reason.startswith("250") and d.sent_at is not None
    assert run(out_gw, flush=True) == 0  # never sent twice


def _queued_document(gateway: Gateway, clock, tmp_path, name: str = "f.pdf") -> None:
    connect_meg(gateway, clock)
    set_switch(
        gateway.db, "dupont-maconnerie", ACHATS, "meg", True, clock.now(), create_folder=True
    )
    clock.advance(minutes=1)  # 10:31: MEG's next run is 10:45
    place(gateway, clock, tmp_path, name)


def test_sending_waits_for_the_partners_run(out_gw, clock, partner_inbox, tmp_path):
    """R12: MEG every 15 minutes; never instantaneous, sent at the next run."""
    _queued_document(out_gw, clock, tmp_path)
    assert run(out_gw) == 0
    clock.advance(minutes=13)  # 10:44
    assert run(out_gw) == 0
    clock.advance(minutes=1)  # 10:45
    assert run(out_gw) == 1
    assert len(partner_inbox.accepted) == 1 and delivery(out_gw).status == "sent"


def test_451_twice_then_250_is_sent_once_after_back_off(out_gw, clock, partner_inbox, tmp_path):
    """R17: temporary failures are retried with back-off and sent once."""
    partner_inbox.replies = ["451 4.3.0 Try again later", "451 4.3.0 Still busy"]
    _queued_document(out_gw, clock, tmp_path)
    assert run(out_gw, flush=True) == 1
    d = delivery(out_gw)
    assert d.status == "deferred" and "451 4.3.0 Try again later" in d.reason
    clock.advance(seconds=299)
    assert run(out_gw) == 0  # back-off: 300 s
    clock.advance(seconds=1)
    assert run(out_gw) == 1 and delivery(out_gw).status == "deferred"
    clock.advance(seconds=599)
    assert run(out_gw) == 0  # doubled: 600 s
    clock.advance(seconds=1)
    assert run(out_gw) == 1
    assert delivery(out_gw).status == "sent" and len(partner_inbox.accepted) == 1


def test_550_fails_with_the_partners_words(out_gw, clock, partner_inbox, tmp_path):
    """R17: a 5xx during the transaction marks the delivery failed with the reply."""
    partner_inbox.replies = ["550 5.1.1 <macon-dupont@factures-meg.fr>: mailbox unknown"]
    _queued_document(out_gw, clock, tmp_path)
    run(out_gw, flush=True)
    d = delivery(out_gw)
    assert d.status == "failed" and "550 5.1.1" in d.reason and "mailbox unknown" in d.reason
    assert partner_inbox.accepted == []


def test_worker_killed_mid_send_is_delivered_once(out_gw, clock, partner_inbox, tmp_path):
    """A claimed delivery whose worker died is taken over when its lease expires."""
    _queued_document(out_gw, clock, tmp_path)
    dead = out_gw.dispatcher(worker_name="dead")
    assert len(dead.claim(flush=True)) == 1  # ... and the process is killed here
    assert run(out_gw, flush=True, worker="alive") == 0  # the lease still holds
    clock.advance(minutes=6)
    assert run(out_gw, flush=True, worker="alive") == 1
    assert len(partner_inbox.accepted) == 1 and delivery(out_gw).status == "sent"


def test_sender_process_killed_mid_send_is_delivered_once(out_gw, clock, partner_inbox, tmp_path):
    """A real `gateway deliveries flush` process is SIGKILLed while the partner holds its
    DATA: nothing was accepted, the delivery stays `sending` under the dead process's lease,
    and once that lease ends another sender delivers it, once."""
    _queued_document(out_gw, clock, tmp_path)
    partner_inbox.hold_first = True
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "deliveries", "flush", "-c", str(out_gw.config.path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its signing process goes down with it
    )
    try:
        assert partner_inbox.holding.wait(30), "the sender never reached DATA"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    d = delivery(out_gw)
    assert d.status == "sending" and d.claimed_by != "alive"
    assert partner_inbox.accepted == []
    clock.moment = as_utc(d.lease_until) - timedelta(seconds=30)
    assert run(out_gw, flush=True, worker="alive") == 0  # the dead one's lease still holds
    clock.moment = as_utc(d.lease_until) + timedelta(seconds=1)
    assert run(out_gw, flush=True, worker="alive") == 1
    assert len(partner_inbox.accepted) == 1 and delivery(out_gw).status == "sent"
    assert run(out_gw, flush=True, worker="alive") == 0


def test_bot_partners_get_mail_from_the_bot_identity(out_gw, clock, partner_inbox, tmp_path):
    """R16: QuickBooks only accepts mail from its registered user, the bot."""
    add_connection(
        out_gw.db,
        out_gw.grammar,
        "dupont-maconnerie",
        "quickbooks",
        "quickbooks+dupont-maconnerie@welyb.com",
        clock.now(),
    )
    set_switch(
        out_gw.db, "dupont-maconnerie", ACHATS, "quickbooks", True, clock.now(), create_folder=True
    )
    clock.advance(minutes=1)
    place(out_gw, clock, tmp_path, "qb.pdf")
    run(out_gw, flush=True)
    [(_, rcpts, data)] = partner_inbox.accepted
    assert rcpts == ["dupont-maconnerie@qbodocs.com"]
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert parsed["From"].addresses[0].addr_spec == "quickbooks+dupont-maconnerie@welyb.com"
    assert b"d=welyb.com" in data.split(b"\r\n\r\n", 1)[0]
    assert dkim_verifies(out_gw, data)


def test_without_a_dkim_key_nothing_leaves_unsigned(out_gw, clock, partner_inbox, tmp_path):
    """R15: no key for the From domain: deferred with a reason that says what to do."""
    for path in out_gw.config.dkim_path.rglob("*.pem"):
        path.unlink()
    _queued_document(out_gw, clock, tmp_path)
    run(out_gw, flush=True)
    d = delivery(out_gw)
    assert d.status == "deferred" and "dkim keygen" in d.reason
    assert partner_inbox.accepted == []


def _dsn(verp: str, diagnostic: str) -> bytes:
    """A delivery status notification as Postfix sends it back to the envelope sender."""
    return (
        "From: MAILER-DAEMON@mx.factures-meg.fr (Mail Delivery System)\r\n"
        f"To: {verp}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B1"\r\n'
        "\r\n--B1\r\nContent-Type: text/plain\r\n\r\n"
        "I'm sorry to have to inform you that your message could not be delivered.\r\n"
        "\r\n--B1\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.factures-meg.fr\r\n\r\n"
        "Final-Recipient: rfc822; macon-dupont@factures-meg.fr\r\n"
        "Action: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; {diagnostic}\r\n"
        "\r\n--B1--\r\n"
    ).encode()


def test_a_bounce_that_comes_back_later_marks_the_delivery_bounced(
    out_gw, clock, partner_inbox, tmp_path
):
    """R17: the envelope sender is a per-delivery address; the partner's bounce to it,
    received by our own SMTP server, marks that delivery bounced with the partner's words."""
    _queued_document(out_gw, clock, tmp_path)
    run(out_gw, flush=True)
    [(verp, _, _)] = partner_inbox.accepted
    server = RunningServer(out_gw).start()
    try:
        with server.client() as smtp:
            forged = verp.replace("bounce+", "bounce+9").lower()
            smtp.mail("<>")
            code, reply = smtp.rcpt(forged)
            assert code == 550 and reply.startswith(b"5.1.1")
            smtp.rset()
            smtp.sendmail(
                "<>",
                [verp],
                _dsn(
                    verp,
                    "550 5.1.1 <macon-dupont@factures-meg.fr>: "
                    "Recipient address rejected: User unknown",
                ),
            )
    finally:
        server.stop()
    file_all(out_gw)
    d = delivery(out_gw)
    assert d.status == "bounced"
    assert "User unknown" in d.reason and "550 5.1.1" in d.reason
    with out_gw.db.read() as s:
        from gateway.storage.models import InboundMessage

        [m] = s.execute(select(InboundMessage)).scalars().all()
    assert m.status == "bounce" and f"delivery #{d.id} bounced" in m.reason

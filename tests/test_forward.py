"""Bot mail forwarded to the cabinet's contact address (R6), end to end over real SMTP.

Mail reaches a bot identity through the running gateway server, is filed into the bot
mailbox, and the forwarder sends it through a capture server (smarthost mode) playing the
cabinet's mail server. The forward must pass DMARC at the cabinet: From on our domain,
DKIM-signed for it (R15, verified with dkimpy), the original attached untouched.
"""

from __future__ import annotations

import asyncio
import email
import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from gateway.app import Gateway
from gateway.cli import cli
from gateway.outbound.forward import ORIGINAL_NAME, ForwardedMail, compose_forward
from gateway.storage.accounts import AccountError, add_cabinet, set_bot_mail_forwarding
from gateway.storage.models import BotMail, BotMailForward, ForwardStatus
from gateway.storage.queues.forwards import TransitionError, transition
from tests.conftest import dkim_verifies, relaying_gateway
from tests.support import CaptureServer, FixedClock, RunningServer, file_all, message, pdf

BOT = "myunisoft+aecconseil@welyb.fr"
CONTACT = "contact@aecconseil.fr"  # the seeded cabinet's contact address
PARTNER = "no-reply@myunisoft.example"


@pytest.fixture
def contact_inbox():
    with CaptureServer() as capture:
        yield capture


@pytest.fixture
def fwd_gw(tmp_path, database_url, clock, contact_inbox):
    """A gateway relaying through the capture server, with DKIM keys for both domains."""
    with relaying_gateway(tmp_path, database_url, clock, contact_inbox.port) as gateway:
        yield gateway


def forwarding(gateway: Gateway, on: bool = True) -> None:
    set_bot_mail_forwarding(gateway.db, "aecconseil", on, None, gateway.config.domains)


def receive(
    gateway: Gateway,
    data: bytes,
    rcpts: tuple[str, ...] = (BOT,),
    sender: str = PARTNER,
) -> None:
    """Send `data` into the running gateway server over SMTP, then file it."""
    server = RunningServer(gateway).start()
    try:
        with server.client() as smtp:
            smtp.sendmail(sender, list(rcpts), data)
    finally:
        server.stop()
    file_all(gateway)


def invitation(subject: str = "Invitation à rejoindre MyUnisoft", **headers: str) -> bytes:
    data = message(
        to=BOT,
        sender=f"MyUnisoft <{PARTNER}>",
        subject=subject,
        body="Bonjour,\nCliquez ici pour activer votre compte.\n",
        attachments=[("cgu.pdf", "application/pdf", pdf("cgu"))],
    )
    for name, value in headers.items():
        data = f"{name}: {value}\r\n".encode() + data
    return data


def forward_run(gateway: Gateway, flush: bool = False, worker: str = "sender-1") -> int:
    async def once() -> int:
        forwarder = gateway.forwarder(worker_name=worker)
        try:
            return await forwarder.run_once(flush=flush)
        finally:
            await forwarder.transport.close()

    return asyncio.run(once())


def forwards(gateway: Gateway) -> list[BotMailForward]:
    with gateway.db.read() as s:
        return list(s.execute(select(BotMailForward).order_by(BotMailForward.id)).scalars())


def assert_wire_safe(data: bytes) -> None:
    """7-bit, CRLF only, no line over 998 octets: nothing a relay would re-encode."""
    assert data.isascii()
    assert data.count(b"\n") == data.count(b"\r\n") and data.count(b"\r") == data.count(b"\r\n")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


# -- end to end -------------------------------------------------------------------------------


def test_bot_mail_is_forwarded_wrapped_signed_and_once(fwd_gw, contact_inbox, tmp_path):
    """R6, R15: mail to a bot identity reaches the cabinet's contact, From our domain,
    DKIM-verified, the original attached as message/rfc822; never sent twice."""
    forwarding(fwd_gw)
    original = invitation()
    receive(fwd_gw, original)
    [queued] = forwards(fwd_gw)
    assert (queued.status, queued.to_address) == ("queued", CONTACT)

    assert forward_run(fwd_gw) == 1
    [(mail_from, rcpts, data)] = contact_inbox.accepted
    assert rcpts == [CONTACT]
    assert mail_from == "postmaster@welyb.fr"  # the documented envelope sender
    assert_wire_safe(data)
    assert dkim_verifies(fwd_gw, data)
    parsed = email.message_from_bytes(data, policy=policy.default)
    sender = parsed["From"].addresses[0].addr_spec
    assert sender == "documents@welyb.fr" and sender.split("@")[1] in fwd_gw.config.domains
    assert parsed["To"] == CONTACT
    assert parsed["Subject"] == "[Bot MyUnisoft] Invitation à rejoindre MyUnisoft"
    assert parsed["Auto-Submitted"] == "auto-forwarded"
    assert re.fullmatch(r"<bmf\d+\.[0-9a-f]{16}@welyb\.fr>", parsed["Message-ID"])
    text = parsed.get_body(("plain",)).get_content()
    assert BOT in text and PARTNER in text and "22/11/2026 11:30" in text  # Paris time
    [attached] = list(parsed.iter_attachments())
    assert attached.get_content_type() == "message/rfc822"
    assert attached["Content-Transfer-Encoding"] == "7bit"
    inner = attached.get_content()
    assert inner["Subject"] == "Invitation à rejoindre MyUnisoft"
    assert inner["From"].addresses[0].addr_spec == PARTNER
    [cgu] = list(inner.iter_attachments())
    assert cgu.get_content() == pdf("cgu")
    assert original in data  # the bytes as sent, after our Received line

    [sent] = forwards(fwd_gw)
    assert sent.status == "sent" and sent.reason.startswith("250") and sent.sent_at is not None
    assert sent.attempts == 1 and sent.lease_until is None
    assert forward_run(fwd_gw, flush=True) == 0  # a second run sends nothing more
    assert len(contact_inbox.accepted) == 1


def test_forwarding_off_queues_nothing(fwd_gw, contact_inbox):
    """R6: forwarding is the cabinet's choice, off by default: the bot mailbox only."""
    receive(fwd_gw, invitation())
    with fwd_gw.db.read() as s:
        assert len(s.execute(select(BotMail)).scalars().all()) == 1
    assert forwards(fwd_gw) == []
    assert forward_run(fwd_gw, flush=True) == 0 and contact_inbox.accepted == []


def test_451_then_250_is_sent_once_after_back_off(fwd_gw, clock, contact_inbox):
    """R17 for forwards: a temporary failure is retried after the [outbound] back-off."""
    forwarding(fwd_gw)
    contact_inbox.replies = ["451 4.3.0 Try again later"]
    receive(fwd_gw, invitation())
    assert forward_run(fwd_gw) == 1
    [f] = forwards(fwd_gw)
    assert f.status == "deferred" and "451 4.3.0 Try again later" in f.reason
    clock.advance(seconds=299)
    assert forward_run(fwd_gw) == 0  # back-off: 300 s
    clock.advance(seconds=1)
    assert forward_run(fwd_gw) == 1
    [f] = forwards(fwd_gw)
    assert (f.status, f.attempts) == ("sent", 2)
    assert len(contact_inbox.accepted) == 1
    assert forward_run(fwd_gw, flush=True) == 0


def test_550_fails_with_the_servers_words(fwd_gw, contact_inbox):
    """R17 for forwards: a 5xx marks the forward failed with the reply, not retried."""
    forwarding(fwd_gw)
    contact_inbox.replies = [f"550 5.1.1 <{CONTACT}>: mailbox unknown"]
    receive(fwd_gw, invitation())
    assert forward_run(fwd_gw) == 1
    [f] = forwards(fwd_gw)
    assert f.status == "failed" and "550 5.1.1" in f.reason and "mailbox unknown" in f.reason
    assert contact_inbox.accepted == []
    assert forward_run(fwd_gw, flush=True) == 0


def test_temporary_failures_give_up_after_the_lifetime(fwd_gw, clock, contact_inbox):
    forwarding(fwd_gw)
    contact_inbox.replies = ["451 4.3.0 busy"] * 3
    receive(fwd_gw, invitation())
    forward_run(fwd_gw)
    clock.advance(days=5)
    assert forward_run(fwd_gw) == 1
    [f] = forwards(fwd_gw)
    assert f.status == "failed" and f.reason.startswith("gave up after 5 days")


def test_one_forward_per_message_and_contact(fwd_gw, contact_inbox):
    """A message to two bot identities of one cabinet makes two bot mails, one forward."""
    forwarding(fwd_gw)
    qb = "quickbooks+dupont-maconnerie@welyb.fr"
    receive(fwd_gw, invitation(), rcpts=(BOT, qb))
    with fwd_gw.db.read() as s:
        assert len(s.execute(select(BotMail)).scalars().all()) == 2
    assert len(forwards(fwd_gw)) == 1
    assert forward_run(fwd_gw) == 1 and len(contact_inbox.accepted) == 1


def test_our_own_forward_coming_back_is_not_forwarded_again(fwd_gw, contact_inbox):
    """The loop guard: the contact auto-forwards our forward back to the bot identity."""
    forwarding(fwd_gw)
    receive(fwd_gw, invitation())
    forward_run(fwd_gw)
    [(_, _, data)] = contact_inbox.accepted
    receive(fwd_gw, data, sender="contact@aecconseil.fr")
    with fwd_gw.db.read() as s:
        assert len(s.execute(select(BotMail)).scalars().all()) == 2  # kept, readable
    assert len(forwards(fwd_gw)) == 1


def test_turning_forwarding_off_stops_forwards_still_waiting(fwd_gw, contact_inbox):
    forwarding(fwd_gw)
    receive(fwd_gw, invitation())
    forwarding(fwd_gw, on=False)
    assert forward_run(fwd_gw) == 1
    [f] = forwards(fwd_gw)
    assert f.status == "failed" and "turned off" in f.reason
    assert contact_inbox.accepted == []


def test_a_worker_that_lost_its_lease_cannot_record(fwd_gw, clock, contact_inbox):
    """Claimed with a lease; a dead worker's forward is taken over and sent once, and
    the guarded transition refuses the dead worker's late record."""
    forwarding(fwd_gw)
    receive(fwd_gw, invitation())
    dead = fwd_gw.forwarder(worker_name="dead")
    [forward_id] = dead.claim()
    assert forward_run(fwd_gw, worker="alive") == 0  # the lease still holds
    clock.advance(minutes=6)
    assert forward_run(fwd_gw, worker="alive") == 1
    assert len(contact_inbox.accepted) == 1 and forwards(fwd_gw)[0].status == "sent"
    with pytest.raises(TransitionError), fwd_gw.db.write() as s:
        transition(
            s,
            forward_id,
            [ForwardStatus.SENDING],
            ForwardStatus.FAILED,
            clock.now(),
            claimed_by="dead",
        )
    with pytest.raises(TransitionError, match="no forward transition"), fwd_gw.db.write() as s:
        transition(s, forward_id, [ForwardStatus.SENT], ForwardStatus.QUEUED, clock.now())
    assert forwards(fwd_gw)[0].status == "sent"


def test_no_dkim_key_defers_instead_of_sending_unsigned(fwd_gw, contact_inbox):
    forwarding(fwd_gw)
    receive(fwd_gw, invitation())
    for path in fwd_gw.config.dkim_path.rglob("*.pem"):
        path.unlink()
    assert forward_run(fwd_gw) == 1
    [f] = forwards(fwd_gw)
    assert f.status == "deferred" and "no DKIM key" in f.reason
    assert contact_inbox.accepted == []


# -- the command line -------------------------------------------------------------------------


def gateway_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60
    )


def test_forwarding_command_listings_and_refusals(fwd_gw, clock, tmp_path: Path):
    """`cabinet forwarding SLUG on|off`, shown in `cabinet list`; `bot-mail list` shows
    each bot mail's forward."""
    config = str(tmp_path / "gateway.toml")
    runner = CliRunner()
    on = runner.invoke(cli, ["cabinet", "forwarding", "aecconseil", "on", "-c", config])
    assert on.exit_code == 0, on.output
    assert CONTACT in on.output and "documents@welyb.fr" in on.output
    listed = json.loads(runner.invoke(cli, ["cabinet", "list", "--json", "-c", config]).output)
    assert [(c["slug"], c["contact"], c["forwarding"]) for c in listed] == [
        ("aecconseil", CONTACT, "on")
    ]
    table = runner.invoke(cli, ["cabinet", "list", "-c", config]).output
    assert "FORWARDING" in table and " on" in table

    receive(fwd_gw, invitation())
    forward_run(fwd_gw)
    bots = json.loads(runner.invoke(cli, ["bot-mail", "list", "--json", "-c", config]).output)
    assert [(b["forward"], b["forward_to"]) for b in bots] == [("sent", CONTACT)]
    assert "FORWARD" in runner.invoke(cli, ["bot-mail", "list", "-c", config]).output

    add_cabinet(fwd_gw.db, "sans-contact", None, None, clock.now())
    refused = gateway_cli("cabinet", "forwarding", "sans-contact", "on", "-c", config)
    assert refused.returncode == 1
    assert "has no contact address" in refused.stderr and "--contact" in refused.stderr
    looping = gateway_cli(
        "cabinet", "forwarding", "sans-contact", "on", "--contact", "x@welyb.com", "-c", config
    )
    assert looping.returncode == 1 and "a domain this gateway serves" in looping.stderr
    given = runner.invoke(
        cli,
        ["cabinet", "forwarding", "sans-contact", "on", "--contact", "a@cab.fr", "-c", config],
    )
    assert given.exit_code == 0 and "a@cab.fr" in given.output
    off = runner.invoke(cli, ["cabinet", "forwarding", "aecconseil", "off", "-c", config])
    assert off.exit_code == 0
    listed = json.loads(runner.invoke(cli, ["cabinet", "list", "--json", "-c", config]).output)
    assert {c["slug"]: c["forwarding"] for c in listed} == {
        "aecconseil": "off",
        "sans-contact": "on",
    }
    with pytest.raises(AccountError, match="no cabinet 'nobody'"):
        set_bot_mail_forwarding(fwd_gw.db, "nobody", True, None, fwd_gw.config.domains)


# -- the composer ----------------------------------------------------------------------------

RECEIVED = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)


def mail(
    raw: bytes, subject: str | None = "Activez votre compte", forward_id: int = 7
) -> ForwardedMail:
    return ForwardedMail(
        forward_id=forward_id,
        bot_address=BOT,
        partner_name="MyUnisoft",
        envelope_from=PARTNER,
        subject=subject,
        received_at=RECEIVED,
        raw=raw,
        sha256="ab" * 32,
    )


def compose(m: ForwardedMail, sender_name: str | None = "Welyb") -> bytes:
    return compose_forward(m, "documents@welyb.fr", CONTACT, RECEIVED, sender_name=sender_name)


def original(body: bytes = b"Bonjour\r\n", **headers: str) -> bytes:
    head = {"From": f"MyUnisoft <{PARTNER}>", "To": BOT, "Subject": "Activez", **headers}
    return b"".join(f"{k}: {v}\r\n".encode() for k, v in head.items()) + b"\r\n" + body


def attachment(data: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(data, policy=policy.default)
    [part] = list(parsed.iter_attachments())
    return part


@pytest.mark.parametrize(
    "raw",
    [
        original("Activé, déjà".encode()),  # 8-bit body (8BITMIME sender)
        original(b"x" * 999 + b"\r\n"),  # a line over RFC 5322's 998
        original(b"one\ntwo\r\n"),  # a bare LF, kept as received
        original(b"nul\x00byte\r\n"),
    ],
    ids=["8bit", "long-line", "bare-lf", "nul"],
)
def test_an_original_that_is_not_7bit_is_attached_as_base64_octet_stream(raw):
    """RFC 2046 5.2.1: message/rfc822 may not be base64; the file may, and the forward
    stays 7-bit so no relay re-encodes it (which would break the DKIM body hash)."""
    data = compose(mail(raw))
    assert_wire_safe(data)
    part = attachment(data)
    assert part.get_content_type() == "application/octet-stream"
    assert part["Content-Transfer-Encoding"] == "base64"
    assert part.get_filename() == ORIGINAL_NAME
    assert part.get_content() == raw  # byte for byte


def test_a_7bit_original_is_attached_as_message_rfc822_untouched():
    raw = original(b"line\r\n" + b"y" * 998 + b"\r\n")  # 998 is still allowed
    data = compose(mail(raw))
    assert_wire_safe(data)
    part = attachment(data)
    assert part.get_content_type() == "message/rfc822"
    assert b"\r\n\r\n" + raw + b"\r\n--" in data
    assert part.get_content()["Subject"] == "Activez"


@pytest.mark.parametrize(
    "subject",
    [
        "Activez\r\nBcc: victim@example.org",
        "Activez\nBcc: victim@example.org",
        "Activez\rBcc: victim@example.org",
        "Activez\u2028Bcc: victim@example.org",
        "Activez\x00\x0bBcc: victim@example.org",
    ],
)
def test_a_hostile_subject_cannot_add_a_header(subject):
    data = compose(mail(original(), subject=subject))
    assert_wire_safe(data)
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert "Bcc" not in parsed
    head = data.split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"^Bcc", head, re.MULTILINE | re.IGNORECASE)
    assert parsed["Subject"] == "[Bot MyUnisoft] Activez Bcc: victim@example.org"


def test_subjects_are_encoded_folded_and_deterministic():
    for subject, shown in [
        ("Réinitialisez votre mot de passe — été", None),
        ("=?utf-8?b?QWNoZXRleg==?= is not decoded", None),  # literal text stays literal
        ("Ünïcödé " * 40, ("Ünïcödé " * 40).strip()[:199] + "…"),  # cut at 200 characters
        ("x" * 300, "x" * 199 + "…"),
        ("", "(sans objet)"),
        (None, "(sans objet)"),
        ("Facture\tn°\u200b 12", "Facture n° 12"),
    ]:
        data = compose(mail(original(), subject=subject))
        assert_wire_safe(data)
        head = data.split(b"\r\n\r\n", 1)[0]
        assert max(len(line) for line in head.split(b"\r\n")) <= 78
        parsed = email.message_from_bytes(data, policy=policy.default)
        assert parsed["Subject"] == f"[Bot MyUnisoft] {shown or subject}"
        assert compose(mail(original(), subject=subject)) == data  # a retry is the same mail


def test_from_display_names_and_refused_addresses():
    for name in ("Welyb", "Welyb, Inc.", "Plateforme Welyb — Équipe"):
        data = compose(mail(original()), sender_name=name)
        assert_wire_safe(data)
        parsed = email.message_from_bytes(data, policy=policy.default)
        [address] = parsed["From"].addresses
        assert (address.display_name, address.addr_spec) == (name, "documents@welyb.fr")
    with pytest.raises(ValueError):
        compose(mail(original()), sender_name="Welyb\r\nBcc: x@example.org")
    with pytest.raises(ValueError):
        compose_forward(mail(original()), "documents@welyb.fr", "a@b.fr\r\nRCPT TO:<x@y>", RECEIVED)


def test_the_boundary_avoids_text_in_the_original():
    raw = original(b"--=_gw.bmf7.0\r\n--=_gw.bmf7.1--\r\n")
    data = compose(mail(raw))
    part = attachment(data)
    assert part.get_content_type() == "message/rfc822"
    assert b'boundary="=_gw.bmf7.2"' in data
    assert part.get_content().get_content().endswith("--=_gw.bmf7.1--\r\n")


def test_forward_uses_the_clock_date_of_queueing(fwd_gw, clock: FixedClock, contact_inbox):
    """Date is when the forward was queued (not sent), so every attempt is the same mail."""
    forwarding(fwd_gw)
    contact_inbox.replies = ["451 4.3.0 later"]
    receive(fwd_gw, invitation())
    queued_at = clock.now()
    forward_run(fwd_gw)
    clock.advance(hours=1)
    forward_run(fwd_gw)
    [(_, _, data)] = contact_inbox.accepted
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert parsed["Date"].datetime == queued_at

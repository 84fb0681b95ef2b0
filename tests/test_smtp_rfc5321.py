"""RFC 5321 as Postfix reads it, and one bad message never hurting another (issue 10, items 6
and 7): real sessions over real sockets against the real server."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select, text

from gateway.app import Gateway
from gateway.inbound.spool import Arrival
from gateway.routing.reverse_path import is_reverse_path
from gateway.storage.models import BotMail, InboundMessage
from tests.support import DEFAULT_NOW, RunningServer, file_all, message
from tests.test_smtp import tls_server

OURS = "compta+dupont-maconnerie@welyb.fr"


def rows(gw: Gateway) -> list[InboundMessage]:
    with gw.db.read() as s:
        return list(s.execute(select(InboundMessage).order_by(InboundMessage.id)).scalars())


def raw_replies(server: RunningServer, *commands: bytes) -> list[bytes]:
    """Each command's reply (last line), over a raw socket, one command at a time."""
    replies = []
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        stream = sock.makefile("rb")
        stream.readline()  # greeting
        for command in commands:
            sock.sendall(command + b"\r\n")
            while (line := stream.readline())[3:4] == b"-":
                pass
            replies.append(line.rstrip(b"\r\n"))
        sock.sendall(b"QUIT\r\n")
    return replies


# --- Isolation: one message's failure to store stays its own -------------------------------


def _arrival(queue_id: str) -> Arrival:
    return Arrival(
        queue_id=queue_id,
        source="smtp",
        received_at=DEFAULT_NOW,
        mail_from="a@example.org",
        rcpt_tos=[OURS],
        content=message(subject=queue_id),
    )


def test_a_row_that_cannot_be_stored_fails_alone_in_its_group(server, gw):
    """Three arrivals in one group commit; the middle one's row cannot be inserted (its queue
    id is taken). It alone fails; the two others are stored and answered."""
    assert server.spool is not None
    spool = server.spool
    taken = _arrival("TAKEN0000000001")
    server.run(spool.store(taken))

    async def group() -> list[object]:
        # Queued together before the writer runs: one batch.
        return await asyncio.gather(
            spool.store(_arrival("GOOD000000000001")),
            spool.store(_arrival("TAKEN0000000001")),
            spool.store(_arrival("GOOD000000000002")),
            return_exceptions=True,
        )

    first, duplicate, last = server.run(group())  # type: ignore[misc]
    assert isinstance(first, int) and isinstance(last, int), (first, last)
    assert isinstance(duplicate, Exception)
    assert [r.queue_id for r in rows(gw)] == [
        "TAKEN0000000001",
        "GOOD000000000001",
        "GOOD000000000002",
    ]


POISON = "poison@example.org"


def _refuse_rows_from(gw: Gateway, sender: str) -> None:
    """A row the database refuses (as PostgreSQL refuses a NUL or an oversized value)."""
    with gw.db.write() as s:
        if gw.db.is_sqlite:
            s.execute(
                text(
                    "CREATE TRIGGER poison BEFORE INSERT ON inbound_messages "
                    f"WHEN NEW.mail_from = '{sender}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )
            return
        s.execute(
            text(
                "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.mail_from = '{sender}' THEN RAISE EXCEPTION 'refused'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        s.execute(
            text(
                "CREATE TRIGGER poison BEFORE INSERT ON inbound_messages "
                "FOR EACH ROW EXECUTE FUNCTION poison()"
            )
        )


def test_concurrent_clients_one_refused_row_fails_only_its_own_message(server, gw):
    """Real clients at once; the writer is held while they queue, so that one group commit
    holds the refused row and two good ones. Only the refused one gets its 451."""
    assert server.spool is not None
    _refuse_rows_from(gw, POISON)

    def send(sender: str) -> tuple[int, bytes]:
        # A generous timeout: the test's console log renders the 451's traceback slowly.
        with smtplib.SMTP(server.host, server.port, timeout=60) as smtp:
            smtp.ehlo("client.example.org")
            smtp.mail(sender)
            smtp.rcpt(OURS)
            return smtp.data(message(subject=sender))

    senders = ["good-1@example.org", POISON, "good-2@example.org"]
    with ThreadPoolExecutor(len(senders) + 1) as pool, gw.db.write() as held:
        if not gw.db.is_sqlite:  # (on SQLite the write turn held here is enough)
            held.execute(text("LOCK TABLE inbound_messages IN EXCLUSIVE MODE"))
        first = pool.submit(send, "first@example.org")  # its group waits on the lock
        for _ in range(100):  # bounded: 5 s, until its group is with the writer
            if server.spool._busy and not server.spool._pending:
                break
            time.sleep(0.05)
        replies = [pool.submit(send, sender) for sender in senders]
        for _ in range(100):  # the next group: what arrives meanwhile
            if len(server.spool._pending) == len(senders):
                break
            time.sleep(0.05)
        assert len(server.spool._pending) == len(senders)
    good1, poison, good2 = (r.result(30) for r in replies)
    assert first.result(30)[0] == 250
    assert good1[0] == 250 and good2[0] == 250, (good1, good2)
    assert poison[0] == 451 and poison[1].startswith(b"4.3.0"), poison
    assert sorted(r.mail_from for r in rows(gw)) == [
        "first@example.org",
        "good-1@example.org",
        "good-2@example.org",
    ]


def test_a_long_helo_does_not_make_the_message_fail(server, gw):
    """A HELO name longer than the row's column (255) is kept cut, not a 451 for the message
    (on PostgreSQL today the insert fails, and with it every message of its group)."""
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.ehlo("h" * 300 + ".example.org")
        smtp.mail("a@example.org")
        smtp.rcpt(OURS)
        code, reply = smtp.data(message())
    assert code == 250, reply
    [row] = rows(gw)
    assert row.helo is not None and row.helo.startswith("hhh") and len(row.helo) <= 255


# --- Control characters are refused at the command, never stored ---------------------------


@pytest.mark.parametrize("char", [b"\x00", b"\x01", b"\x1b", b"\x7f", b"\r", b"\t\x0b"])
def test_control_characters_in_helo_are_refused(server, gw, char):
    for verb in (b"HELO", b"EHLO"):
        [reply] = raw_replies(server, verb + b" bad" + char + b"name.example.org")
        assert reply.startswith(b"501 5.5.2"), reply
    assert rows(gw) == []


@pytest.mark.parametrize("char", [b"\x00", b"\x01", b"\x1b", b"\x7f", b"\r"])
def test_control_characters_in_addresses_are_refused(server, gw, char):
    mail, good_mail, rcpt, data = raw_replies(
        server,
        b"EHLO client.example.org",
        b"MAIL FROM:<a" + char + b"b@example.org>",
        b"MAIL FROM:<a@example.org>",
        b"RCPT TO:<compta+dupont-" + char + b"maconnerie@welyb.fr>",
        b"DATA",
    )[1:]
    assert mail.startswith(b"553 5.1.7"), mail
    assert good_mail.startswith(b"250"), good_mail
    assert rcpt.startswith(b"553 5.1.3"), rcpt
    assert data.startswith(b"503"), data  # no recipient was taken
    assert rows(gw) == []


def test_a_nul_in_helo_sent_with_good_mail_is_refused_and_the_good_mail_stored(server, gw):
    """Today a NUL in HELO is stored (SQLite) or fails the whole group commit (PostgreSQL)."""

    def send(helo: str) -> tuple[int, bytes]:
        with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
            code, reply = smtp.ehlo(helo)
            if code != 250:
                return code, reply
            smtp.mail("a@example.org")
            smtp.rcpt(OURS)
            return smtp.data(message(subject=helo))

    helos = ["good-1.example.org", "bad\x00.example.org", "good-2.example.org"]
    with ThreadPoolExecutor(len(helos)) as pool:
        good1, bad, good2 = pool.map(send, helos)
    assert good1[0] == 250 and good2[0] == 250, (good1, good2)
    assert bad[0] == 501 and bad[1].startswith(b"5.5.2"), bad
    assert sorted(r.helo or "" for r in rows(gw)) == ["good-1.example.org", "good-2.example.org"]


# --- <Postmaster> without a domain (RFC 5321 4.5.1) ----------------------------------------


@pytest.mark.parametrize("postmaster", ["<Postmaster>", "<postmaster>", "<POSTMASTER>"])
def test_postmaster_without_a_domain_is_accepted_like_postmaster_at(server, gw, postmaster):
    with server.client() as smtp:
        smtp.mail("a@example.org")
        code, reply = smtp.docmd("RCPT TO:" + postmaster)
        assert code == 250, reply
        code, reply = smtp.data(message(to="postmaster"))
    assert code == 250, reply
    assert file_all(gw) == 1
    with gw.db.read() as s:
        [bot_mail] = s.execute(select(BotMail)).scalars().all()
    assert bot_mail.cabinet_id is None  # where postmaster@welyb.fr goes: the gateway's own


@pytest.mark.parametrize(
    "rcpt", ["<Postmaster@example.net>", "<postmaster.x>", "<Postmasters>", "<Post master>"]
)
def test_only_the_bare_postmaster_is_accepted_without_a_domain(server, rcpt):
    with server.client() as smtp:
        smtp.mail("a@example.org")
        code, _ = smtp.docmd("RCPT TO:" + rcpt)
    assert code in (501, 550, 553), code


# --- MAIL FROM: every valid reverse path -------------------------------------------------


VALID_SENDERS = [
    "bounce-" + "x" * 120 + "@bulk.example.com",  # local part over 64 octets
    '"john doe"@example.org',
    '"a\\"b"@example.org',
    '"weird@local"@example.org',
    "user@[192.0.2.1]",
    "user@[IPv6:2001:db8::1]",
    "user@mail_relay.example.org",
    "user@_dmarc.example.org",
    "user!%x@example.org",
    "a@" + "d" * 63 + ".example.org",
]


@pytest.mark.parametrize("sender", VALID_SENDERS)
def test_every_valid_reverse_path_is_accepted_and_kept(server, gw, sender):
    with server.client() as smtp:
        code, reply = smtp.docmd(f"MAIL FROM:<{sender}>")
        assert code == 250, reply
        assert smtp.rcpt(OURS)[0] == 250
        assert smtp.data(message())[0] == 250
    [row] = rows(gw)
    assert row.mail_from == sender


def test_the_null_sender_is_accepted(server, gw):
    with server.client() as smtp:
        code, reply = smtp.docmd("MAIL FROM:<>")
        assert code == 250, reply
        assert smtp.rcpt(OURS)[0] == 250
        assert smtp.data(message())[0] == 250
    assert [r.mail_from for r in rows(gw)] == ["<>"]


INVALID_SENDERS = [
    "no-at-sign",
    "@example.org",
    "user@",
    "a..b@example.org",
    ".a@example.org",
    "user@-bad-.example.org",
    "user@exa mple.org",
    "user@[300.1.1.1]",
    "user@[IPv6:not-an-address]",
    "user@example..org",
    "a@" + "d" * 64 + ".example.org",  # a label over 63
    "x" * 250 + "@example.org",  # past the 256-octet path
    "usér@example.org",  # UTF-8 without SMTPUTF8
]


@pytest.mark.parametrize("sender", INVALID_SENDERS)
def test_what_is_not_an_address_is_still_refused(server, gw, sender):
    _, reply = raw_replies(server, b"EHLO client.example.org", f"MAIL FROM:<{sender}>".encode())
    assert reply[:3] in (b"500", b"501", b"553"), reply  # 500: aiosmtpd, non-ASCII unannounced
    assert rows(gw) == []


def test_utf8_senders_only_when_the_client_asked_for_smtputf8():
    """The server does not offer SMTPUTF8 today (aiosmtpd then answers 500 to non-ASCII
    itself); the grammar is ready for the day it does (RFC 6531)."""
    for sender in ("usér@example.org", "jürgen@bücher.example", '"zoë x"@example.org'):
        assert is_reverse_path(sender, utf8=True), sender
        assert not is_reverse_path(sender, utf8=False), sender
    assert not is_reverse_path("a\x00é@example.org", utf8=True)


def test_a_long_sender_does_not_open_a_relay(server, gw):
    with server.client() as smtp:
        assert smtp.docmd("MAIL FROM:<" + "x" * 100 + "@welyb.fr>")[0] == 250
        code, reply = smtp.rcpt("victim@example.net")
        assert code == 550 and reply.startswith(b"5.7.1"), reply
        code, reply = smtp.rcpt("x" * 100 + "@welyb.fr")
        assert code == 553, reply  # our own addresses keep their 64-octet grammar


# --- STARTTLS and AUTH -------------------------------------------------------------------


@pytest.fixture
def tls(tmp_path, database_url, clock):
    with tls_server(tmp_path, database_url, clock) as running:
        yield running


def test_starttls_inside_tls_is_refused_and_the_session_goes_on(tls):
    gw, running, context = tls
    with smtplib.SMTP(running.host, running.port, timeout=10) as smtp:
        smtp.ehlo("client.example.org")
        smtp.starttls(context=context)
        smtp.ehlo("client.example.org")
        assert not smtp.has_extn("starttls")
        code, reply = smtp.docmd("STARTTLS")
        assert (code, reply) == (554, b"5.5.1 Error: TLS already active")
        assert smtp.noop()[0] == 250
        smtp.sendmail("a@example.org", [OURS], message())
    assert len(rows(gw)) == 1


def test_auth_is_not_advertised_on_a_receive_only_mx(tls):
    _, running, context = tls
    with smtplib.SMTP(running.host, running.port, timeout=10) as smtp:
        smtp.ehlo("client.example.org")
        assert not smtp.has_extn("auth")
        smtp.starttls(context=context)
        smtp.ehlo("client.example.org")
        assert not smtp.has_extn("auth"), smtp.esmtp_features
        code, reply = smtp.docmd("AUTH", "PLAIN AGFAAGI=")
        assert code == 503 and reply.startswith(b"5.5.1"), reply
        assert smtp.noop()[0] == 250


def test_vrfy_gives_one_answer_whatever_the_address_and_never_fails(server):
    """Found by tests/test_fuzz.py: an unterminated quote made aiosmtpd's VRFY raise (451
    4.3.0 and an error in the log); VRFY answers the same 252 for any address, known or not."""
    with server.client() as smtp:
        known = smtp.docmd("VRFY", "<compta+dupont-maconnerie@welyb.fr>")
        assert known == smtp.docmd("VRFY", "<nobody+nothing@welyb.fr>")
        assert known[0] == 252 and known[1].startswith(b"2.0.0")
        smtp.sock.sendall(b'VRFY "\r\r\n')  # smtplib refuses to send a CR itself
        assert smtp.getreply()[0] == 252
        assert smtp.docmd("VRFY")[0] == 501


def test_an_address_the_header_parser_chokes_on_is_a_syntax_error(server):
    with server.client() as smtp:
        assert smtp.docmd("MAIL", 'FROM:<"\t>')[0] in (501, 553)
        assert smtp.docmd("MAIL", "FROM:<a@example.org>")[0] == 250
        assert smtp.docmd("RCPT", 'TO:"\t')[0] in (501, 553)
        assert smtp.noop()[0] == 250

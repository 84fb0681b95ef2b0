"""Hostile SMTP sessions over real sockets against the real server (issue 10): connection
limits, deadlines, error limits and recipient probing. Each test is the attack, bounded;
limits are configured small (and the error delay short) so that each runs in seconds.

Tests connect from 127.0.0.1, which no limit exempts unless `limit_exempt_networks` says so.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from gateway.inbound.anvil import Anvil
from gateway.replies import Reply
from gateway.serve import open_files_needed, raise_open_files_limit
from tests.conftest import custom_server
from tests.support import FixedClock, RunningServer

UNKNOWN_RECIPIENTS = [
    "compta+no-such-company@welyb.fr",  # no company
    "tartempion+dupont-maconnerie@welyb.fr",  # the company exists, the journal does not
    "meg+macon-inconnu@welyb.fr",  # no connection uses this partner alias
    "myunisoft+cabinet-inconnu@welyb.fr",  # no cabinet
    "inconnue@welyb.fr",  # nothing at all
]


class Client:
    """A raw SMTP client: one socket, replies read line by line."""

    def __init__(self, server: RunningServer, timeout: float = 10) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def reply(self) -> bytes:
        """One whole reply (its last line), b"" when the server has closed."""
        while (line := self.file.readline()) and line[3:4] == b"-":
            pass
        return line.rstrip(b"\r\n")

    def hello(self) -> None:
        """The greeting, then EHLO."""
        assert self.reply().startswith(b"220")
        assert self.command(b"EHLO client.example.org").startswith(b"250")

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def closed(self) -> bool:
        return self.file.read() == b""  # blocks until EOF (or the socket's timeout)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@contextmanager
def clients(server: RunningServer, count: int) -> Iterator[list[Client]]:
    with ExitStack() as stack:
        opened = []
        for _ in range(count):
            client = Client(server)
            stack.callback(client.close)
            opened.append(client)
        yield opened


@contextmanager
def serving(
    tmp_path: Path, database_url: str, clock: FixedClock, limits: dict[str, object], count: int
) -> Iterator[tuple[RunningServer, list[Client]]]:
    """The server with these `smtp` settings, and `count` clients connected to it."""
    with (
        custom_server(tmp_path, database_url, clock, smtp=limits) as (_, server),
        clients(server, count) as opened,
    ):
        yield server, opened


def wait_for_sessions(server: RunningServer, count: int) -> None:
    """Until the server counts `count` open sessions (a close reaches it asynchronously)."""
    assert server.server is not None
    for _ in range(200):
        if server.server.anvil.sessions == count:
            return
        time.sleep(0.01)
    raise AssertionError(f"{server.server.anvil.sessions} sessions open, expected {count}")


# -- connections --------------------------------------------------------------------------


def test_connections_beyond_the_per_client_limit_get_421_and_are_closed(
    tmp_path, database_url, clock
):
    limits = {"client_connection_count_limit": 3}
    with serving(tmp_path, database_url, clock, limits, 3) as (server, held):
        assert [c.reply()[:3] for c in held] == [b"220"] * 3
        with clients(server, 1) as [extra]:
            refused = extra.reply()
            assert refused.startswith(b"421 4.7.0") and b"127.0.0.1" in refused, refused
            assert extra.closed()
        held[0].close()
        wait_for_sessions(server, 2)
        with clients(server, 1) as [again]:
            assert again.reply().startswith(b"220")


def test_sessions_beyond_the_global_limit_get_421(tmp_path, database_url, clock):
    limits = {"session_limit": 2, "limit_exempt_networks": ["127.0.0.0/8"]}
    with serving(tmp_path, database_url, clock, limits, 3) as (_, [first, second, third]):
        assert (first.reply()[:3], second.reply()[:3]) == (b"220", b"220")
        assert third.reply().startswith(b"421 4.7.0"), "the global limit binds exempt clients"
        assert third.closed()


def test_exempt_networks_are_not_limited_per_client(tmp_path, database_url, clock):
    limits = {"client_connection_count_limit": 1, "limit_exempt_networks": ["127.0.0.0/8"]}
    with serving(tmp_path, database_url, clock, limits, 3) as (_, held):
        assert [c.reply()[:3] for c in held] == [b"220"] * 3


def test_connection_rate_limit_refuses_the_client_for_the_rest_of_the_window(
    tmp_path, database_url, clock
):
    limits = {"client_connection_rate_limit": 3, "client_rate_window_seconds": 3600}
    with custom_server(tmp_path, database_url, clock, smtp=limits) as (_, server):
        for _ in range(3):
            with clients(server, 1) as [client]:
                assert client.reply().startswith(b"220")
                assert client.command(b"QUIT").startswith(b"221")
        with clients(server, 1) as [client]:
            assert client.reply().startswith(b"421 4.7.0")
            assert client.closed()


def test_message_rate_limit_answers_450_to_mail_from(tmp_path, database_url, clock):
    limits = {"client_message_rate_limit": 2, "client_rate_window_seconds": 3600}
    with serving(tmp_path, database_url, clock, limits, 1) as (_, [client]):
        client.hello()
        for _ in range(2):
            assert client.command(b"MAIL FROM:<a@example.org>").startswith(b"250")
            assert client.command(b"RSET").startswith(b"250")
        refused = client.command(b"MAIL FROM:<a@example.org>")
        assert refused.startswith(b"450 4.7.1"), refused


def test_a_client_that_closes_at_once_leaves_no_session(tmp_path, database_url, clock):
    """Connect-and-close probes, many of them: each session is forgotten at once, so they
    never add up to the per-client limit."""
    limits = {"client_connection_count_limit": 5}
    with custom_server(tmp_path, database_url, clock, smtp=limits) as (_, server):
        for _ in range(50):
            socket.create_connection((server.host, server.port), timeout=10).close()
        with clients(server, 1) as [marker]:
            marker.reply()  # accepted after every probe: the listen queue is in order
        wait_for_sessions(server, 0)
        with clients(server, 1) as [client]:
            assert client.reply().startswith(b"220")


# -- time ---------------------------------------------------------------------------------


def test_data_trickled_slowly_is_cut_at_its_deadline_with_421(tmp_path, database_url, clock):
    """A line every 0.2 s: each resets no timer; past the deadline (2 s, with a minimum rate
    no trickle meets) the session gets 421 4.4.2 and is closed."""
    limits = {"timeout_seconds": 2, "data_min_rate": 1_000_000}
    with serving(tmp_path, database_url, clock, limits, 1) as (server, [client]):
        client.hello()
        client.command(b"MAIL FROM:<a@example.org>")
        assert client.command(b"RCPT TO:<compta+dupont-maconnerie@welyb.fr>")[:3] == b"250"
        assert client.command(b"DATA")[:3] == b"354"
        started = time.monotonic()
        try:
            for n in range(50):  # 10 s of trickling at most
                client.sock.sendall(b"line %d of a message that never ends\r\n" % n)
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert client.reply().startswith(b"421 4.4.2")
        assert client.closed()
        assert time.monotonic() - started < 8, "cut near the 2 s deadline, not later"
        wait_for_sessions(server, 0)


def test_a_command_line_trickled_byte_by_byte_is_cut_at_the_timeout(tmp_path, database_url, clock):
    with serving(tmp_path, database_url, clock, {"timeout_seconds": 1}, 1) as (_, [client]):
        client.reply()
        try:
            for byte in b"EHLO a-very-slowly-typed-name.example.org":  # 8 s at most
                client.sock.sendall(bytes([byte]))
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert client.reply().startswith(b"421 4.4.2")
        assert client.closed()


# -- errors and recipient probing ----------------------------------------------------------


def test_unknown_recipients_get_one_text_and_the_hard_error_limit_closes(
    tmp_path, database_url, clock
):
    """Directory harvesting: 1,000 unknown recipients on one connection. Every refusal says
    the same whatever was missing; the command after the 20th error gets 421 4.7.0, and the
    session ends."""
    limits = {"error_delay_seconds": 0.001}
    with serving(tmp_path, database_url, clock, limits, 1) as (_, [client]):
        client.hello()
        client.command(b"MAIL FROM:<a@example.org>")
        replies = []
        for n in range(1000):
            rcpt = UNKNOWN_RECIPIENTS[n % len(UNKNOWN_RECIPIENTS)]
            client.sock.sendall(f"RCPT TO:<{rcpt}>\r\n".encode())
            if not (reply := client.reply()):
                break
            replies.append(reply)
            if reply.startswith(b"421"):
                break
        refusals = replies[:-1]
        assert len(refusals) == 20 and replies[-1].startswith(b"421 4.7.0"), replies[-3:]
        texts = {
            r.replace(f"<{a}>".encode(), b"<>") for r, a in zip(refusals, _cycle(20), strict=True)
        }
        assert texts == {b"550 5.1.1 <>: Recipient address rejected: recipient unknown"}
        assert client.closed()


def _cycle(count: int) -> list[str]:
    return [UNKNOWN_RECIPIENTS[n % len(UNKNOWN_RECIPIENTS)] for n in range(count)]


def test_replies_past_the_soft_error_limit_wait_longer_per_error(tmp_path, database_url, clock):
    """Past smtpd_soft_error_limit every reply waits error_count x error_delay_seconds
    (lower bounds only: a slow machine can only make them longer). The error is RCPT before
    MAIL: aiosmtpd closes by itself after 5 unknown commands."""
    limits = {"soft_error_limit": 2, "hard_error_limit": 5, "error_delay_seconds": 0.1}
    with serving(tmp_path, database_url, clock, limits, 1) as (_, [client]):
        client.hello()
        waits = []
        for _ in range(4):
            started = time.monotonic()
            assert client.command(b"RCPT TO:<a@welyb.fr>")[:3] == b"503"
            waits.append(time.monotonic() - started)
        assert waits[2] >= 0.28 and waits[3] >= 0.38, waits  # errors 3 and 4: 0.3 s, 0.4 s
        assert client.command(b"RCPT TO:<a@welyb.fr>")[:3] == b"503"
        assert client.command(b"NOOP").startswith(b"421 4.7.0"), "the 5th error ends the session"
        assert client.closed()


def test_the_fifth_unknown_command_gets_421_not_a_5xx_goodbye(tmp_path, database_url, clock):
    """Found by the fuzz (tests/test_fuzz.py): aiosmtpd closes a session at its fifth unknown
    verb with "502 5.5.1 … goodbye", a permanent reply on a closing session; it must be 421."""
    with serving(tmp_path, database_url, clock, {}, 1) as (_, [client]):
        client.hello()
        for _ in range(4):
            assert client.command(b"BOGUS")[:3] == b"500"
        closing = client.command(b"BOGUS")
        assert closing.startswith(b"421 4.7.0") and b"unrecognised" in closing, closing
        assert client.closed()


def test_a_client_s_errors_count_over_all_its_sessions(tmp_path, database_url, clock):
    """A harvester that reconnects before the hard limit: its errors add up over the window;
    at the limit its session ends and its new connections are refused."""
    limits = {"client_error_rate_limit": 5, "client_rate_window_seconds": 3600}
    with serving(tmp_path, database_url, clock, limits, 2) as (server, [first, second]):
        for client, errors in ((first, 3), (second, 2)):
            client.hello()
            for _ in range(errors):
                assert client.command(b"RCPT TO:<a@welyb.fr>")[:3] == b"503"
        assert second.command(b"NOOP").startswith(b"421 4.7.0")
        assert first.command(b"NOOP")[:3] == b"250", "a session under its own limit goes on"
        with clients(server, 1) as [third]:
            assert third.reply().startswith(b"421 4.7.0")


def test_a_delivered_message_starts_the_error_count_again(tmp_path, database_url, clock):
    limits = {"hard_error_limit": 3, "error_delay_seconds": 0.001}
    with serving(tmp_path, database_url, clock, limits, 1) as (_, [client]):
        client.hello()
        for _ in range(2):
            assert client.command(b"BOGUS")[:1] == b"5"
            client.command(b"MAIL FROM:<a@example.org>")
            client.command(b"RCPT TO:<compta+dupont-maconnerie@welyb.fr>")
            client.command(b"DATA")
            assert client.command(b"Subject: hi\r\n\r\nhello\r\n.")[:3] == b"250"
        assert client.command(b"BOGUS")[:1] == b"5"
        assert client.command(b"NOOP")[:3] == b"250", "3 errors, but never 3 in a row"


# -- the bookkeeping and the open-files limit, without sockets ----------------------------


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def anvil(ticks: Ticks, **limits: int) -> Anvil:
    values = {
        "session_limit": 100,
        "connection_count_limit": 0,
        "connection_rate_limit": 0,
        "message_rate_limit": 0,
        "error_rate_limit": 0,
        "window_seconds": 60,
    } | limits
    return Anvil(**values, exempt_networks=["10.0.0.0/8", "::1"], monotonic=ticks)


def test_anvil_counts_sessions_per_client_and_in_all():
    ticks = Ticks()
    limits = anvil(ticks, session_limit=3, connection_count_limit=2)
    assert [limits.open_session("192.0.2.1") for _ in range(3)] == [
        None,
        None,
        Reply.TOO_MANY_CONNECTIONS,
    ]
    assert limits.open_session("192.0.2.2") is None
    assert limits.open_session("192.0.2.3") is Reply.TOO_MANY_SESSIONS
    limits.close_session("192.0.2.1")
    assert limits.open_session("192.0.2.1") is None
    assert limits.sessions == 3


def test_anvil_rates_count_in_a_window_and_exempt_networks_are_free():
    ticks = Ticks()
    limits = anvil(ticks, connection_rate_limit=2, message_rate_limit=1)
    for _ in range(2):
        assert limits.open_session("192.0.2.1") is None
        limits.close_session("192.0.2.1")
    assert limits.open_session("192.0.2.1") is Reply.CONNECTION_RATE_EXCEEDED
    assert limits.new_message("192.0.2.1") is None
    assert limits.new_message("192.0.2.1") is Reply.MESSAGE_RATE_EXCEEDED
    for exempt in ("10.1.2.3", "::1", "::ffff:10.0.0.1"):
        assert [limits.open_session(exempt) for _ in range(3)] == [None] * 3
        assert limits.new_message(exempt) is None and limits.new_message(exempt) is None
    ticks.now += 60
    assert limits.open_session("192.0.2.1") is None
    assert limits.new_message("192.0.2.1") is None


def test_anvil_counts_a_client_s_errors_in_its_window():
    ticks = Ticks()
    limits = anvil(ticks, error_rate_limit=3)
    assert [limits.new_error("192.0.2.1") for _ in range(3)] == [False, False, True]
    assert limits.open_session("192.0.2.1") is Reply.TOO_MANY_ERRORS
    assert limits.open_session("192.0.2.2") is None
    assert limits.new_error("10.0.0.1") is False and limits.new_error(None) is False
    ticks.now += 60
    assert limits.open_session("192.0.2.1") is None


def test_anvil_says_why_a_session_would_be_refused_counting_nothing():
    # The listener asks before it builds a session (aiosmtpd's is costly to build), so a
    # refused flood costs little; asking must not count the connection.
    limits = anvil(Ticks(), connection_count_limit=1, connection_rate_limit=2)
    for _ in range(3):
        assert limits.refusal("192.0.2.1") is None
    assert limits.open_session("192.0.2.1") is None
    assert limits.refusal("192.0.2.1") is Reply.TOO_MANY_CONNECTIONS
    assert (limits.sessions, limits.clients["192.0.2.1"].connections) == (1, 1)
    limits.close_session("192.0.2.1")
    assert limits.refusal("192.0.2.1") is None  # one connection of two in the window


def test_anvil_forgets_clients_once_their_window_is_over():
    ticks = Ticks()
    limits = anvil(ticks, connection_rate_limit=5)
    for n in range(100):
        client = f"192.0.2.{n}"
        assert limits.open_session(client) is None
        limits.close_session(client)
    limits.open_session("198.51.100.1")  # still open: kept
    ticks.now += 61
    assert limits.open_session("198.51.100.2") is None
    assert set(limits.clients) == {"198.51.100.1", "198.51.100.2"}


@pytest.mark.parametrize(
    ("soft", "hard", "set_to"),
    [
        (1024, 1_048_576, (open_files_needed(1000), 1_048_576)),  # raised to what is needed
        (1024, 1500, (1500, 1500)),  # up to the hard limit only
        (65_536, 1_048_576, None),  # already enough: left alone
    ],
)
def test_the_soft_open_files_limit_is_raised_to_what_the_sessions_need(soft, hard, set_to):
    calls = []
    result = raise_open_files_limit(
        open_files_needed(1000),
        get=lambda _: (soft, hard),
        set_=lambda _, limits: calls.append(limits),
    )
    assert calls == ([set_to] if set_to else [])
    assert result == (set_to[0] if set_to else soft)

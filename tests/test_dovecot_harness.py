"""The Dovecot harness (tests/dovecot.py) runs a real IMAP server: logins, mail, restarts."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from tests import dovecot as dovecot_module
from tests.dovecot import Dovecot, DovecotError, running_dovecot
from tests.processes import live_processes

ALICE = "alice@example.test"
BOB = "bob@example.test"

RAW = (
    b"From: Sender <sender@example.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: Invoice 42\r\n"
    b"Message-ID: <harness-1@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Bonjour, voici la facture \xc3\xa9tablie hier.\r\n"
    b".leading dot and trailing spaces   \r\n"
)


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    with running_dovecot(tmp_path, {ALICE: "alice-pw", BOB: "bob pw with spaces"}) as server:
        yield server


def test_login_and_wrong_password(dovecot: Dovecot) -> None:
    for user in (ALICE, BOB):
        client = dovecot.client(user)
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
        client.logout()

    wrong = IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=5)
    with pytest.raises(LoginError):
        wrong.login(ALICE, "not-the-password")
    wrong.shutdown()


def test_append_then_fetch_returns_the_same_bytes(dovecot: Dovecot) -> None:
    uid = dovecot.append(ALICE, "INBOX", RAW, flags=[b"\\Seen"])
    assert dovecot.folder_uids(ALICE, "INBOX") == [uid]
    assert dovecot.folder_uids(BOB, "INBOX") == []
    with dovecot.session(ALICE) as client:
        client.select_folder("INBOX", readonly=True)
        fetched = client.fetch([uid], ["BODY.PEEK[]", "FLAGS"])[uid]
    assert fetched[b"BODY[]"] == RAW
    assert b"\\Seen" in fetched[b"FLAGS"]


def test_restart_keeps_port_and_mail(dovecot: Dovecot) -> None:
    dovecot.create_folder(ALICE, "Clients/ACME S.A.")
    first = dovecot.append(ALICE, "Clients/ACME S.A.", RAW)
    validity = dovecot.uidvalidity(ALICE, "Clients/ACME S.A.")
    port = dovecot.port

    dovecot.stop()
    assert not dovecot.running
    with pytest.raises(ConnectionRefusedError):
        dovecot.client(ALICE)
    dovecot.start()

    assert dovecot.port == port
    assert dovecot.folder_uids(ALICE, "Clients/ACME S.A.") == [first]
    assert dovecot.uidvalidity(ALICE, "Clients/ACME S.A.") == validity
    second = dovecot.append(ALICE, "Clients/ACME S.A.", RAW)
    assert second > first


def test_kill_then_start_keeps_mail(dovecot: Dovecot) -> None:
    uid = dovecot.append(ALICE, "INBOX", RAW)
    dovecot.kill()
    dovecot.start()
    assert dovecot.folder_uids(ALICE, "INBOX") == [uid]


def test_recreated_folder_gets_a_new_uidvalidity(dovecot: Dovecot) -> None:
    dovecot.create_folder(ALICE, "Archive")
    dovecot.append(ALICE, "Archive", RAW)
    before = dovecot.uidvalidity(ALICE, "Archive")

    dovecot.delete_folder(ALICE, "Archive")
    dovecot.create_folder(ALICE, "Archive")

    assert dovecot.uidvalidity(ALICE, "Archive") != before
    assert dovecot.folder_uids(ALICE, "Archive") == []


def test_idle_is_advertised_and_wakes_on_new_mail(dovecot: Dovecot) -> None:
    with dovecot.session(ALICE) as client:
        assert b"IDLE" in client.capabilities()
        client.select_folder("INBOX")
        client.idle()
        uid = dovecot.append(ALICE, "INBOX", RAW)
        responses = client.idle_check(timeout=5)
        client.idle_done()
    assert (1, b"EXISTS") in responses
    assert uid == 1


def test_close_is_idempotent_and_leaves_no_process(tmp_path: Path) -> None:
    with running_dovecot(tmp_path, {ALICE: "pw"}) as server:
        assert server.running
        pgid = server.pid
        assert pgid is not None
        # A logged-in client: an imap process runs besides Dovecot's services.
        client = server.client(ALICE)
        client.select_folder("INBOX")
        assert len(live_processes(group=pgid)) >= 5
    assert not server.running
    client.shutdown()
    server.close()
    assert live_processes(group=pgid) == []
    with pytest.raises(ConnectionRefusedError):
        IMAPClient(server.host, server.port, ssl=False, timeout=2)


def test_failed_start_raises_with_dovecots_log(tmp_path: Path) -> None:
    with socket.socket() as holder:  # the port is taken before Dovecot comes
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = Dovecot(tmp_path, {ALICE: "pw"}, port=port)
        with pytest.raises(DovecotError, match="Address already in use"):
            server.start()
        assert not server.running
        server.close()


def test_missing_dovecot_skips_unless_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dovecot_module, "find_dovecot", lambda: None)
    monkeypatch.delenv(dovecot_module.REQUIRE_ENV, raising=False)
    with (
        pytest.raises(pytest.skip.Exception, match="setup-test-packages"),
        running_dovecot(tmp_path, {ALICE: "pw"}),
    ):
        pass
    monkeypatch.setenv(dovecot_module.REQUIRE_ENV, "1")
    with (
        pytest.raises(pytest.fail.Exception, match="setup-test-packages"),
        running_dovecot(tmp_path, {ALICE: "pw"}),
    ):
        pass

"""IMAP sources on a server whose personal namespace is `INBOX.` with `.` as its delimiter
(Cyrus, Courier), folders the server refuses, and what a rejected message records: against
a real Dovecot configured that way."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient
from sqlalchemy import select

from gateway.config import ImapSourceConfig
from gateway.inbound.imap import Namespaces, connect
from gateway.storage.listings.inbound import list_messages
from gateway.storage.models import InboundMessage
from tests.dovecot import Dovecot, running_dovecot
from tests.support import FixedClock, file_all
from tests.test_imap import (
    PASSWORD,
    USER,
    _count,
    _gateway,
    _invoice,
    _sync,
    _three_invoices_and_a_stray,
    _wait,
)

CYRUS_STYLE = ("INBOX.", ".")
# Bounds a run of the CLI: today's code never ended here (a reconnect loop).
CLI_BOUND_SECONDS = 60


@pytest.fixture
def cyrus(tmp_path: Path) -> Iterator[Dovecot]:
    with running_dovecot(tmp_path / "dovecot", {USER: PASSWORD}, namespace=CYRUS_STYLE) as server:
        yield server


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Dovecot]:
    with running_dovecot(tmp_path / "dovecot", {USER: PASSWORD}) as server:
        yield server


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=CLI_BOUND_SECONDS,
    )


def test_sync_once_files_into_the_personal_namespace(
    tmp_path: Path, database_url: str, clock: FixedClock, cyrus: Dovecot
) -> None:
    gw = _gateway(tmp_path, database_url, clock, cyrus)
    _three_invoices_and_a_stray(cyrus)
    config = str(gw.config.path)

    done = _cli("imap", "sync", "box", "--once", "-c", config)
    assert done.returncode == 0, done.stderr
    assert "4 taken, 3 to filing, 1 rejected" in done.stdout
    assert cyrus.folder_uids(USER, "INBOX") == []
    assert len(cyrus.folder_uids(USER, "INBOX.Processed")) == 3
    assert len(cyrus.folder_uids(USER, "INBOX.Rejected")) == 1
    assert file_all(gw) == 3

    again = _cli("imap", "sync", "box", "--once", "-c", config)
    assert again.returncode == 0, again.stderr
    assert "0 taken" in again.stdout
    assert _count(gw, InboundMessage) == 4


def test_imap_test_prints_the_exact_folder_names(
    tmp_path: Path, database_url: str, clock: FixedClock, cyrus: Dovecot
) -> None:
    gw = _gateway(tmp_path, database_url, clock, cyrus, rejected_folder="INBOX.Refusés")
    done = _cli("imap", "test", "box", "-c", str(gw.config.path))
    assert done.returncode == 0, done.stderr
    assert "personal namespace: prefix 'INBOX.', delimiter '.'" in done.stdout
    assert "processed folder 'INBOX.Processed' (configured as 'Processed')" in done.stdout
    assert "rejected folder 'INBOX.Refusés': created now" in done.stdout  # absolute: as is


def test_a_refused_folder_fails_imap_test_and_sync_once_with_the_servers_words(
    tmp_path: Path, database_url: str, clock: FixedClock, cyrus: Dovecot
) -> None:
    # Dovecot will not create a folder whose name begins with '~'.
    gw = _gateway(tmp_path, database_url, clock, cyrus, processed_folder="~Traités")
    cyrus.append(USER, "INBOX", _invoice(1))
    config = str(gw.config.path)

    checked = _cli("imap", "test", "box", "-c", config)
    assert checked.returncode == 1
    assert "'INBOX.~Traités'" in checked.stderr
    assert "Invalid mailbox name" in checked.stderr

    synced = _cli("imap", "sync", "box", "--once", "-c", config)
    assert synced.returncode == 1
    assert "refused to create the folder 'INBOX.~Traités'" in synced.stderr
    assert "Invalid mailbox name" in synced.stderr
    assert _count(gw, InboundMessage) == 1  # stored all the same; moved once it can be
    assert len(cyrus.folder_uids(USER, "INBOX")) == 1


def test_a_refused_move_never_stops_reading_new_mail_nor_reconnects(
    tmp_path: Path, database_url: str, clock: FixedClock, cyrus: Dovecot
) -> None:
    gw = _gateway(tmp_path, database_url, clock, cyrus, processed_folder="~Traités")
    stop = threading.Event()
    logins: list[str] = []

    def counted(source: ImapSourceConfig) -> IMAPClient:
        logins.append(source.user)
        return connect(source)

    [poller] = gw.imap_pollers(gw.config.imap_sources["box"], stop, connector=counted)
    thread = threading.Thread(target=poller.run, kwargs={"once": False}, daemon=True)
    cyrus.append(USER, "INBOX", _invoice(1))
    thread.start()
    try:
        _wait(lambda: _count(gw, InboundMessage) == 1, timeout=10)
        time.sleep(1.5)  # a reconnect loop would log in again within this
        cyrus.append(USER, "INBOX", _invoice(2))
        _wait(lambda: _count(gw, InboundMessage) == 2, timeout=10)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert logins == [USER]  # one session all along
    assert len(cyrus.folder_uids(USER, "INBOX")) == 2  # left where they were


def test_a_rejected_message_records_subject_message_id_sender_and_recipients(
    tmp_path: Path, database_url: str, clock: FixedClock, plain: Dovecot
) -> None:
    gw = _gateway(tmp_path, database_url, clock, plain)
    raw = (
        b"Delivered-To: factures@cabinet.test\r\n"
        b"From: Lettre <lettre@example.org>\r\n"
        b"To: Someone <someone@example.org>\r\n"
        b"Subject: =?utf-8?q?R=C3=A9sum=C3=A9_de_mars?=\r\n"
        b"Message-ID: <mars-42@example.org>\r\n\r\nBonjour\r\n"
    )
    plain.append(USER, "INBOX", raw)
    assert _sync(gw).rejected == 1
    [row] = list_messages(gw.db, "rejected")
    assert row.subject == "Résumé de mars"
    assert row.message_id == "mars-42@example.org"
    assert row.mail_from == "lettre@example.org"
    assert row.rcpt_tos == ["factures@cabinet.test", "someone@example.org"]
    with gw.db.read() as s:
        reason = s.execute(select(InboundMessage.reason)).scalar_one()
    assert "no address of ours" in (reason or "")


@pytest.mark.parametrize(
    ("configured", "on_cyrus", "on_dovecot"),
    [
        ("INBOX", "INBOX", "INBOX"),
        ("Processed", "INBOX.Processed", "Processed"),
        ("INBOX.Processed", "INBOX.Processed", "INBOX.Processed"),
        ("Archive/Processed", "INBOX.Archive.Processed", "Archive/Processed"),
        ("#shared/Factures", "#shared/Factures", "#shared/Factures"),
    ],
)
def test_configured_names_are_relative_unless_under_a_namespace_prefix(
    configured: str, on_cyrus: str, on_dovecot: str
) -> None:
    cyrus_style = Namespaces("INBOX.", ".", ("INBOX.", "#shared/"))
    assert cyrus_style.resolve(configured) == on_cyrus
    assert Namespaces("", "/", ("",)).resolve(configured) == on_dovecot

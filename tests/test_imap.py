"""IMAP sources against a real Dovecot: filing, moving, checkpoints, reconnects, UIDVALIDITY."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from email.message import Message
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from gateway.app import Gateway
from gateway.cli import cli
from gateway.config import ConfigError, parse_config
from gateway.inbound.imap import ImapProblem, candidate_recipients, connect, fingerprint
from gateway.storage.models import (
    Document,
    DuplicateDocument,
    ImapCheckpoint,
    ImapMessage,
    InboundMessage,
    MessageStatus,
)
from tests.conftest import seeded_gateway, write_config
from tests.dovecot import Dovecot, running_dovecot
from tests.support import FixedClock, file_all, message, pdf

USER = "factures@cabinet.test"
PASSWORD = "s3cret-Mot de passe"


# -- configuration --------------------------------------------------------------------------


def _source(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "host": "imap.example.net",
        "user": USER,
        "password_env": "IMAP_PASSWORD",
    }
    values.update(overrides)
    return values


def _parse(tmp_path: Path, **source: Any) -> Any:
    data = {"imap": {"sources": {"box": source}}}
    return parse_config(data, base=tmp_path)


def test_config_reads_a_source_with_defaults(tmp_path: Path) -> None:
    config = _parse(tmp_path, **_source())
    box = config.imap_sources["box"]
    assert (box.port, box.tls, box.folders, box.route) == (993, "implicit", ("INBOX",), "recipient")
    assert box.mailbox("INBOX") == f"imap://{USER}@imap.example.net/INBOX"


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"tls": "none"}, "only allowed for a loopback host"),
        ({"tls": "ssl"}, "one of implicit, starttls, none"),
        ({"password_env": None}, "set exactly one of password_env"),
        ({"password_file": "secret"}, "set exactly one of password_env"),
        ({"route": "compta+x@example.org"}, "one of our collection addresses"),
        ({"folders": ["INBOX", "Processed"]}, "differ from the folders read"),
        ({"folders": []}, "list the folders to read"),
        ({"after": "delete"}, "'move' or 'flag'"),
        ({"passwd": "x"}, "unknown key 'passwd'"),
        ({"host": ""}, "host name"),
    ],
)
def test_config_refuses_bad_sources_with_the_key(
    tmp_path: Path, overrides: dict[str, Any], words: str
) -> None:
    source = {k: v for k, v in _source(**overrides).items() if v is not None}
    with pytest.raises(ConfigError, match=r"imap\.sources\.box") as error:
        _parse(tmp_path, **source)
    assert words in str(error.value)


def test_password_comes_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = _parse(tmp_path, **_source()).imap_sources["box"]
    monkeypatch.delenv("IMAP_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="IMAP_PASSWORD is not set"):
        box.password()
    monkeypatch.setenv("IMAP_PASSWORD", "pw")
    assert box.password() == "pw"
    (tmp_path / "secret").write_text("from-file\n")
    source = {k: v for k, v in _source(password_file="secret").items() if k != "password_env"}
    filed = _parse(tmp_path, **source)
    assert filed.imap_sources["box"].password() == "from-file"


# -- routing and fingerprints ---------------------------------------------------------------


def _headers(raw: bytes) -> Message:
    return BytesHeaderParser().parsebytes(raw)


def _ours(address: str) -> bool:
    return address.lower().endswith("@welyb.fr")


def test_delivered_to_wins_over_to_and_cc() -> None:
    raw = (
        b"Delivered-To: ventes+dupont-maconnerie@welyb.fr\r\n"
        b"To: Compta <compta+dupont-maconnerie@welyb.fr>, other@example.org\r\n\r\nbody"
    )
    assert candidate_recipients(_headers(raw), _ours) == ["ventes+dupont-maconnerie@welyb.fr"]


def test_falls_back_to_x_original_to_then_to_and_cc() -> None:
    foreign_delivered = b"Delivered-To: factures@cabinet.test\r\n"
    raw = foreign_delivered + b"X-Original-To: social+dupont-maconnerie@welyb.fr\r\n\r\nx"
    assert candidate_recipients(_headers(raw), _ours) == ["social+dupont-maconnerie@welyb.fr"]
    raw = (
        foreign_delivered + b"To: a@example.org\r\nCc: Banque <banque+dupont-maconnerie@welyb.fr>,"
        b" BANQUE+dupont-maconnerie@welyb.fr\r\n\r\nx"
    )
    assert candidate_recipients(_headers(raw), _ours) == ["banque+dupont-maconnerie@welyb.fr"]
    assert candidate_recipients(_headers(foreign_delivered + b"\r\nx"), _ours) == []


def test_fingerprint_ignores_header_rewrites_but_not_recipients_or_body() -> None:
    raw = b"Message-ID: <1@x>\r\nSubject: s\r\n\r\nbody\r\n"
    rewritten = b"Status: RO\r\nMessage-ID: <1@x>\r\nSubject: s\r\n\r\nbody\r\n"
    same = fingerprint("<1@x>", ["a@welyb.fr"], raw)
    assert fingerprint("<1@x>", ["A@welyb.fr"], rewritten) == same
    assert fingerprint("<1@x>", ["b@welyb.fr"], raw) != same  # one copy per address
    assert fingerprint("<1@x>", ["a@welyb.fr"], raw.replace(b"body", b"other")) != same
    assert fingerprint("<2@x>", ["a@welyb.fr"], raw) != same


# -- against a real Dovecot -------------------------------------------------------------------


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    with running_dovecot(tmp_path / "dovecot", {USER: PASSWORD}) as server:
        yield server


def _gateway(
    tmp_path: Path,
    database_url: str,
    clock: FixedClock,
    dovecot: Dovecot,
    smtp: dict[str, Any] | None = None,
    **source: Any,
) -> Gateway:
    secret = tmp_path / "imap-password"
    secret.write_text(PASSWORD)
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": dovecot.port,
        "tls": "none",
        "user": USER,
        "password_file": str(secret),
        "batch_size": 2,
        "poll_seconds": 0.2,
    }
    values.update(source)
    path = write_config(tmp_path, database_url, imap={"sources": {"box": values}}, smtp=smtp or {})
    return seeded_gateway(path, clock)


def _sync(gw: Gateway, stop: threading.Event | None = None, **kwargs: Any) -> Any:
    [poller] = gw.imap_pollers(gw.config.imap_sources["box"], stop or threading.Event())
    return poller.run(once=True, **kwargs)


def _invoice(number: int, to: str = "compta+dupont-maconnerie@welyb.fr") -> bytes:
    raw = message(
        to=to,
        subject=f"Facture {number}",
        body=f"Facture {number} ci-jointe.\n",
        attachments=[(f"facture-{number}.pdf", "application/pdf", pdf(f"Facture {number}"))],
    )
    return b"Delivered-To: " + to.encode() + b"\r\n" + raw


def _count(gw: Gateway, model: Any) -> int:
    with gw.db.read() as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


def _three_invoices_and_a_stray(dovecot: Dovecot) -> None:
    """Three invoices to a company, one message to no address of ours, in INBOX."""
    for n in range(3):
        dovecot.append(USER, "INBOX", _invoice(n))
    stray = message(to="someone@example.org", subject="Newsletter")
    dovecot.append(USER, "INBOX", b"Delivered-To: factures@cabinet.test\r\n" + stray)


def test_mail_is_filed_moved_and_never_read_twice(
    tmp_path: Path, database_url: str, clock: FixedClock, dovecot: Dovecot
) -> None:
    gw = _gateway(tmp_path, database_url, clock, dovecot)
    _three_invoices_and_a_stray(dovecot)

    result = _sync(gw)
    assert (result.taken, result.stored, result.rejected) == (4, 3, 1)
    assert dovecot.folder_uids(USER, "INBOX") == []
    assert len(dovecot.folder_uids(USER, "Processed")) == 3
    assert len(dovecot.folder_uids(USER, "Rejected")) == 1

    assert file_all(gw) == 3
    with gw.db.read() as s:
        documents = s.execute(select(Document.filename, Document.source, Document.source_mailbox))
        rows = sorted(documents.all())
        rejected = s.execute(
            select(InboundMessage.reason).where(InboundMessage.status == MessageStatus.REJECTED)
        ).scalar_one()
    assert rows == [
        (f"facture-{n}.pdf", "imap", f"imap://{USER}@127.0.0.1/INBOX") for n in range(3)
    ]
    assert "no address of ours" in rejected

    again = _sync(gw)
    assert (again.taken, again.stored) == (0, 0)
    assert _count(gw, InboundMessage) == 4


def test_a_fixed_route_takes_the_whole_mailbox(
    tmp_path: Path, database_url: str, clock: FixedClock, dovecot: Dovecot
) -> None:
    gw = _gateway(
        tmp_path, database_url, clock, dovecot, route="ventes+boulangerie-martin@welyb.fr"
    )
    dovecot.append(USER, "INBOX", _invoice(7, to="factures@cabinet.test"))
    assert _sync(gw).stored == 1
    file_all(gw)
    with gw.db.read() as s:
        [rcpts] = s.execute(select(InboundMessage.rcpt_tos)).scalars().all()
        paths = s.execute(select(Document.filename)).scalars().all()
    assert rcpts == ["ventes+boulangerie-martin@welyb.fr"]
    assert paths == ["facture-7.pdf"]


def test_message_appended_while_idle_is_taken_within_seconds(
    tmp_path: Path, database_url: str, clock: FixedClock, dovecot: Dovecot
) -> None:
    gw = _gateway(tmp_path, database_url, clock, dovecot, poll_seconds=600)
    stop = threading.Event()
    [poller] = gw.imap_pollers(gw.config.imap_sources["box"], stop)
    thread = threading.Thread(target=poller.run, kwargs={"once": False}, daemon=True)
    thread.start()
    try:
        _wait(lambda: _checkpoint(gw) is not None and _checkpoint(gw).uidvalidity is not None)
        time.sleep(0.3)  # in IDLE now (polling would wait 600 s)
        dovecot.append(USER, "INBOX", _invoice(1))
        _wait(lambda: _count(gw, InboundMessage) == 1, timeout=8)
        _wait(lambda: len(dovecot.folder_uids(USER, "Processed")) == 1)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert _checkpoint(gw).claimed_by is None  # lease released on the way out


def test_dovecot_restarted_mid_sync_nothing_lost_or_doubled(
    tmp_path: Path, database_url: str, clock: FixedClock, dovecot: Dovecot
) -> None:
    gw = _gateway(tmp_path, database_url, clock, dovecot)
    for n in range(9):
        dovecot.append(USER, "INBOX", _invoice(n))
    restarted = threading.Event()

    def outage(done: int, total: int) -> None:
        if done == 2 and not restarted.is_set():
            restarted.set()
            dovecot.stop()
            threading.Timer(0.5, dovecot.start).start()

    result = _sync(gw, progress=outage)
    assert restarted.is_set()
    assert result.errors  # it did see the outage
    assert _count(gw, InboundMessage) == 9
    assert dovecot.folder_uids(USER, "INBOX") == []
    assert len(dovecot.folder_uids(USER, "Processed")) == 9
    assert file_all(gw) == 9
    assert _count(gw, Document) == 9


def test_connection_lost_between_storing_and_moving_moves_later_without_refiling(
    tmp_path: Path, database_url: str, clock: FixedClock, dovecot: Dovecot
) -> None:
    gw = _gateway(tmp_path, database_url, clock, dovecot)
    for n in range(3):
        dovecot.append(USER, "INBOX", _invoice(n))
    source = gw.config.imap_sources["box"]
    dropped = threading.Event()

    class DropsBeforeFirstMove:
        """A real client; the server goes away just before our first MOVE."""

        def __init__(self, client: Any) -> None:
            self.client = client

        def __getattr__(self, name: str) -> Any:
            return getattr(self.client, name)

        def move(self, uids: Any, folder: str) -> Any:
            if not dropped.is_set():
                dropped.set()
                dovecot.stop()
                threading.Timer(0.5, dovecot.start).start()
            return self.client.move(uids, folder)

    [poller] = gw.imap_pollers(
        source, threading.Event(), connector=lambda s: DropsBeforeFirstMove(connect(s))
    )
    result = poller.run(once=True)
    assert dropped.is_set() and result.errors
    assert _count(gw, InboundMessage) == 3  # the first batch was stored once, not twice
    assert dovecot.folder_uids(USER, "INBOX") == []
    assert len(dovecot.folder_uids(USER, "Processed")) == 3
    with gw.db.read() as s:
        unsettled = s.execute(
            select(func.count()).where(ImapMessage.settled_at.is_(None))
        ).scalar_one()
    assert unsettled == 0


def test_recreated_folder_new_uidvalidity_does_not_refile(
    tmp_path: Path, database_url: str, clock: FixedClock, dovecot: Dovecot
) -> None:
    dovecot.create_folder(USER, "Factures")
    gw = _gateway(tmp_path, database_url, clock, dovecot, folders=["Factures"], after="flag")
    old = [_invoice(n) for n in range(3)]
    for raw in old:
        dovecot.append(USER, "Factures", raw)
    assert _sync(gw).stored == 3
    first_validity = _checkpoint(gw, "Factures").uidvalidity

    dovecot.delete_folder(USER, "Factures")  # e.g. the hosting provider migrated the mailbox
    dovecot.create_folder(USER, "Factures")
    for raw in [*old, _invoice(99)]:
        dovecot.append(USER, "Factures", raw)
    assert dovecot.uidvalidity(USER, "Factures") != first_validity

    result = _sync(gw)
    assert (result.taken, result.stored, result.duplicates) == (4, 1, 3)
    assert _checkpoint(gw, "Factures").uidvalidity == dovecot.uidvalidity(USER, "Factures")
    assert _count(gw, InboundMessage) == 4
    assert file_all(gw) == 4
    assert _count(gw, Document) == 4
    with dovecot.client(USER) as client:
        client.select_folder("Factures")
        assert len(client.search(["KEYWORD", "$Filed"])) == 4  # flagged, never deleted


def test_same_invoice_by_smtp_and_imap_is_filed_once(
    tmp_path: Path, database_url: str, clock: FixedClock, dovecot: Dovecot
) -> None:
    from tests.support import RunningServer

    gw = _gateway(tmp_path, database_url, clock, dovecot)
    raw = _invoice(5)
    running = RunningServer(gw).start()
    try:
        with running.client() as smtp:
            smtp.sendmail("fournisseur@example.org", ["compta+dupont-maconnerie@welyb.fr"], raw)
    finally:
        running.stop()
    dovecot.append(USER, "INBOX", raw)
    assert _sync(gw).stored == 1
    assert file_all(gw) == 2
    assert _count(gw, Document) == 1
    assert _count(gw, DuplicateDocument) == 1


def test_oversize_message_is_recorded_and_set_aside(
    tmp_path: Path, database_url: str, clock: FixedClock, dovecot: Dovecot
) -> None:
    gw = _gateway(tmp_path, database_url, clock, dovecot, smtp={"max_message_size": 4096})
    big = message(attachments=[("scan.pdf", "application/pdf", pdf("x" * 8000))])
    assert len(big) > 4096
    dovecot.append(USER, "INBOX", b"Delivered-To: compta+dupont-maconnerie@welyb.fr\r\n" + big)
    result = _sync(gw)
    assert result.rejected == 1
    with gw.db.read() as s:
        row = s.execute(select(InboundMessage)).scalar_one()
    assert row.status == MessageStatus.REJECTED
    assert "larger than smtp.max_message_size (4096)" in (row.reason or "")
    assert row.size < 4096  # only the header was kept
    assert len(dovecot.folder_uids(USER, "Rejected")) == 1


def test_a_huge_header_is_recorded_rejected_never_parsed(
    tmp_path: Path, database_url: str, clock: FixedClock, dovecot: Dovecot
) -> None:
    """Issue 10: the IMAP intake bounds headers as SMTP does (500 KB field: ~30 s to parse)."""
    gw = _gateway(tmp_path, database_url, clock, dovecot)
    huge = "; ".join(f"p{i}=v{i}" for i in range(90_000))[:500_000]
    dovecot.append(USER, "INBOX", f"Subject: {huge}\r\n".encode() + _invoice(1))
    dovecot.append(USER, "INBOX", _invoice(2))
    started = time.monotonic()
    result = _sync(gw)
    assert time.monotonic() - started < 10
    assert (result.rejected, result.stored) == (1, 1)
    with gw.db.read() as s:
        rows = list(s.execute(select(InboundMessage).order_by(InboundMessage.id)).scalars())
    assert rows[0].status == MessageStatus.REJECTED
    assert "header field larger than 102400 bytes" in (rows[0].reason or "")
    assert len(dovecot.folder_uids(USER, "Rejected")) == 1


def test_one_poller_per_mailbox(
    tmp_path: Path, database_url: str, clock: FixedClock, dovecot: Dovecot
) -> None:
    gw = _gateway(tmp_path, database_url, clock, dovecot)
    source = gw.config.imap_sources["box"]
    [first] = gw.imap_pollers(source, threading.Event())
    assert first._hold.claim()
    [second] = gw.imap_pollers(source, threading.Event())
    second._hold.claimant = dataclasses.replace(second._hold.claimant, poller="other:1:box")
    with pytest.raises(ImapProblem, match="being read by another poller"):
        second.run(once=True)
    clock.advance(minutes=3)  # the first one died: its lease runs out
    dovecot.append(USER, "INBOX", _invoice(1))
    assert second.run(once=True).stored == 1


def test_cli_imap_test_and_sync(
    tmp_path: Path, database_url: str, clock: FixedClock, dovecot: Dovecot
) -> None:
    gw = _gateway(tmp_path, database_url, clock, dovecot)
    config = str(gw.config.path)
    runner = CliRunner()
    ok = runner.invoke(cli, ["imap", "test", "box", "-c", config])
    assert ok.exit_code == 0, ok.output
    assert "folder 'INBOX': 0 message(s)" in ok.output
    assert "processed folder 'Processed': created now" in ok.output

    dovecot.append(USER, "INBOX", _invoice(3))
    synced = runner.invoke(cli, ["imap", "sync", "box", "--once", "-c", config])
    assert synced.exit_code == 0, synced.output
    assert "1 taken, 1 to filing, 0 rejected" in synced.output

    (tmp_path / "imap-password").write_text("wrong")
    refused = runner.invoke(cli, ["imap", "test", "box", "-c", config])
    assert refused.exit_code == 1
    assert f"login refused for '{USER}'" in refused.output
    assert "wrong user name or password" in refused.output


def test_cli_imap_test_names_a_missing_folder(
    tmp_path: Path, database_url: str, clock: FixedClock, dovecot: Dovecot
) -> None:
    gw = _gateway(tmp_path, database_url, clock, dovecot, folders=["Factures"])
    result = CliRunner().invoke(cli, ["imap", "test", "box", "-c", str(gw.config.path)])
    assert result.exit_code == 1
    assert "folder 'Factures' does not exist" in result.output
    assert "INBOX" in result.output


def _checkpoint(gw: Gateway, folder: str = "INBOX") -> Any:
    with gw.db.read() as s:
        return s.execute(
            select(ImapCheckpoint).where(ImapCheckpoint.folder == folder)
        ).scalar_one_or_none()


def _wait(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")

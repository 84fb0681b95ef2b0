"""The ClamAV client against a real clamd (tests/clamd.py), and against hostile peers.

The real clamd runs on a database of our own: EICAR's MD5 and a body signature (MARKER).
Hostile peers (silent, slow reader, garbage) are small socket servers here: they are what a
broken or impostor daemon does, which a real clamd cannot be made to do.
"""

from __future__ import annotations

import contextlib
import io
import socket
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest

from gateway.inbound.trust.clamav import Clamd, MalwareScanner, ScanVerdict, scan_all
from gateway.inbound.trust.scanning import ScannerUnavailable
from tests import clamd as clamd_module
from tests.clamd import EICAR, EICAR_SIGNATURE, MARKER, MARKER_SIGNATURE, ClamdDaemon, running_clamd
from tests.processes import daemon_missing

CLEAN = ScanVerdict(infected=False, signature=None)
# A peer that misbehaves is given this long; the tests wait for the client's own timeout.
PEER_BOUND = 30.0


def pdf_like(size: int) -> bytes:
    body = bytes(range(256)) * (size // 256 + 1)
    return b"%PDF-1.4\n" + body[:size] + b"\n%%EOF\n"


def message(*attachments: tuple[bytes, str, str]) -> EmailMessage:
    """A message from a client with (content, mime type, filename) attachments, base64."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "Dupont Maçonnerie <compta@dupont.example>"
    msg["To"] = "factures+dupont-maconnerie@welyb.fr"
    msg["Subject"] = "Facture de novembre"
    msg.set_content("Bonjour,\n\nla facture est jointe.\n")
    for content, mime, filename in attachments:
        maintype, subtype = mime.split("/")
        msg.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def zipped(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, content)
    return buffer.getvalue()


@pytest.fixture
def clamd(clamd_daemon: ClamdDaemon) -> Clamd:
    return clamd_daemon.client()


# -- verdicts of a real clamd ---------------------------------------------------------------


def test_clean_bytes_are_clean(clamd: Clamd) -> None:
    assert clamd.scan(pdf_like(100_000)) == CLEAN
    assert clamd.scan(b"") == CLEAN


def test_eicar_as_raw_bytes(clamd: Clamd) -> None:
    assert clamd.scan(EICAR) == ScanVerdict(infected=True, signature=EICAR_SIGNATURE)


def test_over_tcp_too(clamd_daemon: ClamdDaemon) -> None:
    scanner = Clamd(clamd_daemon.tcp_address)
    scanner.ping()
    assert scanner.scan(EICAR).signature == EICAR_SIGNATURE
    assert scanner.scan(b"hello") == CLEAN


def test_eicar_named_as_a_pdf_in_a_mime_message(clamd: Clamd) -> None:
    clean = message((pdf_like(50_000), "application/pdf", "facture.pdf"))
    infected = message(
        (pdf_like(50_000), "application/pdf", "devis.pdf"),
        (EICAR, "application/pdf", "facture.pdf"),
    )
    assert b"Content-Transfer-Encoding: base64" in infected.as_bytes()
    assert EICAR not in infected.as_bytes()  # only clamd's MIME decoding can find it
    assert clamd.scan(clean.as_bytes()) == CLEAN
    assert clamd.scan(infected.as_bytes()).signature == EICAR_SIGNATURE


def test_eicar_inside_a_zip(clamd: Clamd) -> None:
    archive = zipped("facture.pdf", EICAR)
    assert EICAR not in archive  # deflated: found by unpacking, not by a byte match
    assert clamd.scan(archive).signature == EICAR_SIGNATURE
    assert clamd.scan(zipped("facture.pdf", pdf_like(10_000))) == CLEAN


def test_eicar_zipped_in_a_mail_attachment(clamd: Clamd) -> None:
    raw = message((zipped("factures.pdf", EICAR), "application/zip", "factures.zip")).as_bytes()
    assert clamd.scan(raw).signature == EICAR_SIGNATURE


def test_eicar_inside_a_forwarded_message(clamd: Clamd) -> None:
    inner = message((EICAR, "application/pdf", "facture.pdf"))
    outer = message()
    outer.replace_header("Subject", "Fwd: Facture de novembre")
    outer.add_attachment(inner)  # a message/rfc822 part holding the base64 attachment
    raw = outer.as_bytes()
    assert b"Content-Type: message/rfc822" in raw
    assert EICAR not in raw
    assert clamd.scan(raw).signature == EICAR_SIGNATURE


def test_a_25_mb_stream(clamd: Clamd) -> None:
    size = 25 * 1024 * 1024
    assert clamd.scan(pdf_like(size)) == CLEAN
    # The body signature at the very end: clamd saw the whole stream, none was cut off.
    assert clamd.scan(pdf_like(size) + MARKER).signature == MARKER_SIGNATURE


def test_stream_over_clamds_limit_is_unavailable_not_clean(tmp_path: Path) -> None:
    with running_clamd(tmp_path, stream_max_length="1M") as small:
        scanner = small.client(timeout=10.0)
        assert scanner.scan(pdf_like(500_000)) == CLEAN
        with pytest.raises(ScannerUnavailable) as caught:
            scanner.scan(pdf_like(3 * 1024 * 1024) + MARKER)
    assert caught.value.scanner == "clamd"
    assert "size limit exceeded" in caught.value.detail


def test_ping(clamd: Clamd) -> None:
    clamd.ping()


def test_scan_all_names_the_first_infected_item(clamd: Clamd) -> None:
    clean_pdf = pdf_like(1000)
    assert scan_all(clamd, [("facture.pdf", clean_pdf), ("message", b"hello")]) is None
    items = [
        ("facture.pdf", clean_pdf),
        ("devis.zip", zipped("devis.pdf", EICAR)),
        ("message", MARKER),
    ]
    assert scan_all(clamd, items) == ("devis.zip", EICAR_SIGNATURE)


def test_scan_all_passes_unavailability_on(tmp_path: Path) -> None:
    scanner: MalwareScanner = Clamd(f"unix:{tmp_path / 'nothing.sock'}")
    with pytest.raises(ScannerUnavailable):
        scan_all(scanner, [("facture.pdf", b"%PDF-1.4")])


# -- clamd down ----------------------------------------------------------------------------


def test_clamd_stopped_is_unavailable_then_back(clamd_daemon: ClamdDaemon) -> None:
    unix, tcp = clamd_daemon.client(), Clamd(clamd_daemon.tcp_address)
    with clamd_daemon.stopped():
        for scanner in (unix, tcp):
            with pytest.raises(ScannerUnavailable) as caught:
                scanner.scan(EICAR)
            assert "cannot connect" in caught.value.detail
            with pytest.raises(ScannerUnavailable):
                scanner.ping()
    unix.ping()
    assert tcp.scan(EICAR).signature == EICAR_SIGNATURE


# -- hostile peers -------------------------------------------------------------------------


@contextlib.contextmanager
def peer(behave: Callable[[socket.socket], None]) -> Iterator[str]:
    """A unix socket server that hands each connection to `behave`; yields its address.

    A connection idle for PEER_BOUND seconds is closed, so a client that would wait forever
    still ends (and its test fails on what it then says).
    """
    # A short folder of its own: unix socket paths end at 108 bytes, tmp_path may be longer.
    folder = tempfile.TemporaryDirectory(prefix="peer-")
    path = Path(folder.name) / "peer.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    server.settimeout(PEER_BOUND)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            if done.is_set():
                conn.close()
                return
            with conn:
                conn.settimeout(PEER_BOUND)
                with contextlib.suppress(OSError):
                    behave(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"unix:{path}"
    finally:
        done.set()
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)  # wakes the accept() waiting in the thread
        server.close()
        thread.join(PEER_BOUND + 5)
        folder.cleanup()


def read_all_stay_silent(conn: socket.socket) -> None:
    while conn.recv(65536):
        pass


def test_a_silent_peer_times_out() -> None:
    with peer(read_all_stay_silent) as address:
        scanner = Clamd(address, timeout=0.5)
        with pytest.raises(ScannerUnavailable) as caught:
            scanner.scan(pdf_like(10_000))
        assert "no reply within 0.5s" in caught.value.detail
        with pytest.raises(ScannerUnavailable) as caught:
            scanner.ping()
        assert "no reply" in caught.value.detail


def test_the_timeout_bounds_the_whole_scan_not_each_chunk() -> None:
    stop = threading.Event()

    def read_slowly(conn: socket.socket) -> None:
        # Always reading a little: no single send waits long, only the sum does.
        while conn.recv(1024) and not stop.wait(0.005):
            pass

    with peer(read_slowly) as address:
        try:
            with pytest.raises(ScannerUnavailable) as caught:
                Clamd(address, timeout=0.5, chunk_size=1024).scan(pdf_like(8 * 1024 * 1024))
        finally:
            stop.set()
    assert "sending timed out after 0.5s" in caught.value.detail


@pytest.mark.parametrize(
    "reply",
    [
        b"",  # closes without a word
        b"stream: OK",  # no NUL: cut short, not a verdict
        b"HTTP/1.1 400 Bad Request\r\n\r\n\0",
        b"stream: FOUND\0",
        b"stream: Eicar OK\0",
        b"\xff\xfe\0",
        b"x" * 10_000,  # never ends
        b"INSTREAM size limit exceeded. ERROR\0",
        b"stream: Can't allocate memory ERROR\0",
    ],
)
def test_a_peer_answering_garbage_is_unavailable(reply: bytes) -> None:
    def answer(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(reply)

    with peer(answer) as address:
        with pytest.raises(ScannerUnavailable) as caught:
            Clamd(address, timeout=5.0).scan(b"hello")
        assert caught.value.scanner == "clamd"
        with pytest.raises(ScannerUnavailable):
            Clamd(address, timeout=5.0).ping()


def test_addresses() -> None:
    assert Clamd("unix:/run/clamd.ctl")._target == "/run/clamd.ctl"
    assert Clamd("/run/clamd.ctl")._target == "/run/clamd.ctl"
    assert Clamd("127.0.0.1:3310")._target == ("127.0.0.1", 3310)
    assert Clamd("[::1]:3310")._target == ("::1", 3310)
    for bad in ("clamd", "host:", ":3310", "host:99999", "unix:"):
        with pytest.raises(ValueError):
            Clamd(bad)


# -- the harness ---------------------------------------------------------------------------


def test_missing_clamd_skips_unless_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clamd_module, "find_clamd", lambda: None)
    monkeypatch.delenv(clamd_module.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="setup-test-packages"), running_clamd(tmp_path):
        pass
    monkeypatch.setenv(clamd_module.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="setup-test-packages"), running_clamd(tmp_path):
        pass


def test_a_clamd_that_cannot_start_says_why(tmp_path: Path) -> None:
    if clamd_module.find_clamd() is None:
        daemon_missing("clamd", clamd_module.REQUIRE_ENV, clamd_module.SETUP_HINT)
    daemon = ClamdDaemon(tmp_path)
    (daemon.database / "gateway-test.hdb").write_text("not a signature\n")
    with pytest.raises(clamd_module.ClamdError, match="exited with status") as caught:
        daemon.start()
    assert "gateway-test.hdb" in str(caught.value)  # clamd's own complaint is in the error
    assert not daemon.running
    daemon.close()

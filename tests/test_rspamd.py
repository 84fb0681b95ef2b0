"""The rspamd client (gateway/inbound/trust/rspamd.py) against a real rspamd (tests/rspamd.py),
and against hostile peers that are not rspamd: refused, silent, trickling, HTTP 500, not JSON."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.inbound.trust.rspamd import (
    DEFAULT_QUARANTINE_ACTIONS,
    MAX_REPLY_BYTES,
    Rspamd,
    SpamEnvelope,
    SpamScorer,
    SpamVerdict,
    is_spam,
    load_reply,
    verdict_of,
)
from gateway.inbound.trust.scanning import ScannerUnavailable
from tests.processes import free_port, live_processes
from tests.rspamd import (
    ENVELOPE_SYMBOL,
    STRICT_SETTINGS_ID,
    RspamdServer,
    running_rspamd,
    shared_hs_cache,
)
from tests.support import message, pdf

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
ENVELOPE = SpamEnvelope(
    client_address="192.0.2.7",
    helo="mail.fournisseur.example",
    mail_from="fournisseur@example.org",
    recipients=("compta+dupont-maconnerie@welyb.fr",),
    queue_id="q-117",
    # Given, so that rspamd does not look the address up (its resolver here answers nothing).
    client_hostname="mail.fournisseur.example",
)


def invoice() -> bytes:
    return message(attachments=[("facture-2026-117.pdf", "application/pdf", pdf("Facture 117"))])


# -- a real rspamd ---------------------------------------------------------------------------


def test_gtube_is_rejected_and_spam(rspamd_server: RspamdServer) -> None:
    scorer: SpamScorer = Rspamd(rspamd_server.url, timeout=30)
    verdict = scorer.score(message(body=f"Bonjour,\n{GTUBE}\n"), ENVELOPE)
    assert verdict.action == "reject"
    assert "GTUBE" in dict(verdict.symbols)
    assert verdict.score >= verdict.required_score > 0
    assert is_spam(verdict, DEFAULT_QUARANTINE_ACTIONS, None)
    assert verdict.summary().startswith(f"reject, score {verdict.score:.1f}/")
    assert "GTUBE(0.0)" in verdict.summary()


def test_an_invoice_with_a_pdf_is_not_spam(rspamd_server: RspamdServer) -> None:
    verdict = Rspamd(rspamd_server.url).score(invoice(), ENVELOPE)
    assert verdict.action == "no action"
    assert not is_spam(verdict, DEFAULT_QUARANTINE_ACTIONS, None)
    assert verdict.score < verdict.required_score
    names = dict(verdict.symbols)
    # rspamd read the MIME structure: an attachment, and content types it knows.
    assert "HAS_ATTACHMENT" in names and "MIME_GOOD" in names
    # The score is the sum of the symbols' scores, listed by weight.
    assert verdict.score == pytest.approx(sum(names.values()), abs=0.01)
    weights = [abs(score) for _, score in verdict.symbols]
    assert weights == sorted(weights, reverse=True)
    # A threshold below the score makes it spam after all.
    assert is_spam(verdict, DEFAULT_QUARANTINE_ACTIONS, verdict.score)
    assert not is_spam(verdict, frozenset(), verdict.score + 0.1)


def test_the_envelope_reaches_rspamd(rspamd_server: RspamdServer) -> None:
    envelope = SpamEnvelope(
        client_address="198.51.100.23",
        helo="smtp.partner.example",
        mail_from="relance@partner.example",
        recipients=("compta+dupont-maconnerie@welyb.fr", "paie@welyb.fr"),
        queue_id="q-118",
        client_hostname="smtp.partner.example",
    )
    reply = Rspamd(rspamd_server.url).check(invoice(), envelope)
    assert reply["symbols"][ENVELOPE_SYMBOL]["options"] == [
        "ip=198.51.100.23",
        "helo=smtp.partner.example",
        "hostname=smtp.partner.example",
        "from=relance@partner.example",
        "rcpt=compta+dupont-maconnerie@welyb.fr",
        "rcpt=paie@welyb.fr",
        "queue_id=q-118",
    ]
    # rspamd's own rules use it: the envelope sender differs from the From: header.
    assert "FROM_NEQ_ENVFROM" in reply["symbols"]
    same_sender = Rspamd(rspamd_server.url).score(invoice(), ENVELOPE)
    assert "FROM_EQ_ENVFROM" in dict(same_sender.symbols)


def test_the_null_sender_and_no_client_address(rspamd_server: RspamdServer) -> None:
    envelope = SpamEnvelope(None, None, "", ("compta@welyb.fr",))
    reply = Rspamd(rspamd_server.url).check(invoice(), envelope)
    assert reply["symbols"][ENVELOPE_SYMBOL]["options"] == ["from=<>", "rcpt=compta@welyb.fr"]
    assert verdict_of(reply).action == "no action"


def test_a_settings_id_picks_rspamd_settings(rspamd_server: RspamdServer) -> None:
    plain = Rspamd(rspamd_server.url).score(invoice(), ENVELOPE)
    strict = Rspamd(rspamd_server.url, settings_id=STRICT_SETTINGS_ID).score(invoice(), ENVELOPE)
    assert plain.score > 0.5 and plain.action == "no action"
    assert (strict.action, strict.required_score) == ("reject", 0.5)
    assert is_spam(strict, DEFAULT_QUARANTINE_ACTIONS, None)


def test_ping(rspamd_server: RspamdServer) -> None:
    Rspamd(rspamd_server.url).ping()
    with pytest.raises(ScannerUnavailable):
        Rspamd(f"http://127.0.0.1:{free_port()}").ping()


def test_the_controller_scans_only_with_its_password(rspamd_server: RspamdServer) -> None:
    with pytest.raises(ScannerUnavailable, match="HTTP 401"):
        Rspamd(rspamd_server.controller_url).score(invoice(), ENVELOPE)
    with pytest.raises(ScannerUnavailable, match="HTTP 401"):
        Rspamd(rspamd_server.controller_url, password="wrong").score(invoice(), ENVELOPE)
    verdict = Rspamd(rspamd_server.controller_url, password=rspamd_server.password).score(
        invoice(), ENVELOPE
    )
    assert verdict.action == "no action"


def test_the_harness_leaves_no_process_behind(tmp_path: Path) -> None:
    with running_rspamd(tmp_path, hs_cache_dir=shared_hs_cache()) as server:
        assert server._process is not None
        group = server._process.pid
        # The main process, its normal worker, its controller and its regexp compiler.
        assert len(live_processes(group=group)) >= 3
        Rspamd(server.url).ping()
    assert live_processes(group=group) == []
    with pytest.raises(ScannerUnavailable):
        Rspamd(server.url).ping()


# -- peers that give no verdict --------------------------------------------------------------


def test_rspamd_down_is_unavailable() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(ScannerUnavailable) as caught:
        Rspamd(f"http://127.0.0.1:{port}", timeout=30).score(invoice(), ENVELOPE)
    assert caught.value.scanner == "rspamd"
    assert "ConnectionRefusedError" in caught.value.detail


def test_a_peer_that_never_answers_times_out() -> None:
    with socket.socket() as silent:
        # Listens but never accepts: the kernel completes the connection and takes the
        # request, and no reply ever comes.
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(ScannerUnavailable, match="timed out"):
            Rspamd(url, timeout=0.5).score(invoice(), ENVELOPE)
        with pytest.raises(ScannerUnavailable, match="timed out"):
            Rspamd(url, timeout=0.5).ping()


class _Peer(http.server.BaseHTTPRequestHandler):
    answer: Callable[[http.server.BaseHTTPRequestHandler], None]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).answer(self)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def hostile_peer(answer: Callable[[http.server.BaseHTTPRequestHandler], None]) -> Iterator[str]:
    """A small HTTP server on a free loopback port that answers every POST with `answer`."""
    handler = type("Peer", (_Peer,), {"answer": staticmethod(answer)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _reply(status: int, body: bytes, content_type: str = "application/json") -> Callable[..., None]:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        with contextlib.suppress(OSError):  # the client may stop reading: its right
            handler.wfile.write(body)

    return answer


@pytest.mark.parametrize(
    ("status", "body", "detail"),
    [
        (500, b'{"error": "internal"}', "HTTP 500"),
        (200, b"<html>Bad gateway</html>", "not JSON"),
        (200, b'["reject"]', "not a JSON object"),
        (200, b'{"error": "message too big"}', "error"),
        (200, b'{"score": 1.0, "required_score": 15.0, "symbols": {}}', "no action"),
        (200, b'{"action": "reject", "required_score": 15.0}', "score"),
        (200, b'{"action": "reject", "score": "high", "required_score": 15.0}', "score"),
        (200, b'{"action": "reject", "score": 1e999, "required_score": 15.0}', "score"),
        (200, b'{"action": "no action", "score": 0, "required_score": 15}', ""),
        (200, b'{"action": "x", "score": 0, "required_score": 1, "symbols": []}', "symbols"),
        (200, b'{"action": "x", "score": 0, "required_score": 1, "symbols": {"A": 1}}', "A"),
    ],
)
def test_a_peer_without_a_verdict_is_unavailable(status: int, body: bytes, detail: str) -> None:
    with hostile_peer(_reply(status, body)) as url:
        if detail == "":  # the control case: a minimal valid reply is a verdict
            verdict = Rspamd(url, timeout=5).score(invoice(), ENVELOPE)
            assert verdict == SpamVerdict("no action", 0.0, 15.0, ())
            return
        with pytest.raises(ScannerUnavailable, match=detail):
            Rspamd(url, timeout=5).score(invoice(), ENVELOPE)


def test_an_oversized_reply_is_not_read() -> None:
    huge = b'{"action": "no action", "pad": "' + b"x" * MAX_REPLY_BYTES + b'"}'
    with hostile_peer(_reply(200, huge)) as url, pytest.raises(ScannerUnavailable, match="over"):
        Rspamd(url, timeout=5).score(invoice(), ENVELOPE)

    def unannounced(handler: http.server.BaseHTTPRequestHandler) -> None:
        # No Content-Length: the body runs until the peer closes.
        handler.send_response(200)
        handler.end_headers()
        with contextlib.suppress(OSError):
            handler.wfile.write(huge)
        handler.close_connection = True

    with hostile_peer(unannounced) as url, pytest.raises(ScannerUnavailable, match="over"):
        Rspamd(url, timeout=5).score(invoice(), ENVELOPE)


def test_a_trickling_peer_is_cut_at_the_deadline() -> None:
    def trickle(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "10000")
        handler.end_headers()
        # A byte every 50 ms: each wait is short, the whole far longer than the timeout.
        with contextlib.suppress(OSError):
            for _ in range(200):
                handler.wfile.write(b" ")
                handler.wfile.flush()
                time.sleep(0.05)

    with hostile_peer(trickle) as url, pytest.raises(ScannerUnavailable, match="timed out"):
        Rspamd(url, timeout=0.5).score(invoice(), ENVELOPE)


def test_a_peer_that_hangs_up_is_unavailable() -> None:
    def hang_up(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.close_connection = True

    with hostile_peer(hang_up) as url, pytest.raises(ScannerUnavailable):
        Rspamd(url, timeout=5).score(invoice(), ENVELOPE)


# -- pure parts ------------------------------------------------------------------------------


def test_is_spam_by_action_and_threshold() -> None:
    def verdict(action: str, score: float = 0.0) -> SpamVerdict:
        return SpamVerdict(action, score, 15.0, ())

    for action in ("reject", "add header", "rewrite subject", "discard", "quarantine"):
        assert is_spam(verdict(action), DEFAULT_QUARANTINE_ACTIONS, None)
    for action in ("no action", "greylist", "soft reject"):
        assert not is_spam(verdict(action, 9.0), DEFAULT_QUARANTINE_ACTIONS, None)
    assert is_spam(verdict("no action", 9.0), DEFAULT_QUARANTINE_ACTIONS, 9.0)
    assert not is_spam(verdict("no action", 8.9), DEFAULT_QUARANTINE_ACTIONS, 9.0)
    assert not is_spam(verdict("add header", 7.0), frozenset({"reject"}), None)


def test_summary_lists_the_heaviest_symbols_first() -> None:
    reply = load_reply(
        b'{"action": "add header", "score": 3.5, "required_score": 15, "symbols": {'
        b'"SMALL": {"score": 0.25}, "BIG": {"score": 5}, "NEG": {"score": -2}, '
        b'"ZERO": {"score": 0}, "ALSO_SMALL": {"score": 0.25}}}'
    )
    verdict = verdict_of(reply)
    assert verdict.symbols == (
        ("BIG", 5.0),
        ("NEG", -2.0),
        ("ALSO_SMALL", 0.25),
        ("SMALL", 0.25),
        ("ZERO", 0.0),
    )
    assert verdict.summary() == (
        "add header, score 3.5/15.0: BIG(5.0) NEG(-2.0) ALSO_SMALL(0.25) SMALL(0.25) ZERO(0.0)"
    )
    assert verdict.summary(limit=2) == "add header, score 3.5/15.0: BIG(5.0) NEG(-2.0) …"
    assert SpamVerdict("no action", 0, 15, ()).summary() == "no action, score 0.0/15.0"


def test_bad_settings_are_refused() -> None:
    for url in ("127.0.0.1:11333", "ftp://127.0.0.1/", "http://"):
        with pytest.raises(ValueError):
            Rspamd(url)
    with pytest.raises(ValueError):
        Rspamd("http://127.0.0.1:11333", timeout=0)

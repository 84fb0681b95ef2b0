"""Fuzzing in CI with a fixed time budget (issue 10): the SMTP command handling of the real
`gateway serve` over real sockets, and extraction, with inputs hypothesis makes.

Each test runs examples until its budget is spent (GATEWAY_FUZZ_SECONDS, 20 s by default) or
GATEWAY_FUZZ_EXAMPLES have run (3,000; raise both to fuzz longer locally); examples past the
budget return at once. Inputs are
random, not derandomised: each CI run explores new ones, and a failure prints the input that
reproduces it (kept in .hypothesis/, replayed first next time; not shrunk, which has no time
bound).

What must hold whatever a client sends:
- every reply is well-formed (three digits, a space or a dash, the last line with a space);
- never our internal-failure reply, never a 250 for a recipient outside our domains (no
  open relay), and the server still greets the next client;
- nothing in the server's log at level error (a session that died with an exception).
What must hold whatever bytes a message holds: extraction returns (it never raises), never
stops early on an exception it caught, and every document has a safe name and a type.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gateway.inbound.extraction import extract_documents
from gateway.replies import Reply
from tests.conftest import seeded_gateway, write_config
from tests.corpus import make_corpus as corpus
from tests.support import DEFAULT_NOW, FixedClock, message, pdf
from tests.test_serve import free_port

BUDGET = float(os.environ.get("GATEWAY_FUZZ_SECONDS", "20"))
# A failing example is replayed after the budget: room for that beside the budget itself.
pytestmark = pytest.mark.timeout(int(BUDGET) * 3 + 120)
# Hypothesis cannot be told to stop: past the budget it goes on drawing inputs that the test
# skips, so the count bounds that tail. Enough examples for the budget on this machine.
EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "3000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
    # No shrinking: it has no time bound, and a session of a dozen commands reads well as is.
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)
REPLY = re.compile(rb"^[2-5][0-9][0-9]([ -]|$)")
OUR_DOMAINS = ("welyb.fr",)


class Budget:
    """The fuzz's wall-clock allowance, started by its first example. Once an example has
    failed the budget no longer applies: hypothesis must be able to replay and shrink it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends: float | None = None
        self.examples = 0
        self.failed = False

    @contextmanager
    def example(self) -> Iterator[bool]:
        """Yields whether to run this example; a failure inside marks the budget failed."""
        if self.spent():
            yield False
            return
        try:
            yield True
        except BaseException:
            self.failed = True
            raise

    def spent(self) -> bool:
        if self.failed:
            return False
        now = time.monotonic()
        if self.ends is None:
            self.ends = now + self.seconds
        if now >= self.ends:
            return True
        self.examples += 1
        return False


# -- SMTP command handling ------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """`gateway serve` (SQLite) with the seeded companies, its log in a file: (port, log)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    config = write_config(
        tmp,
        f"sqlite:///{tmp / 'gateway.db'}",
        smtp={
            "port": port,
            # The fuzz is one client making many errors on purpose: its per-client error
            # budget would end it early; the soft and hard limits per session stay on.
            "client_error_rate_limit": 0,
            "error_delay_seconds": 0.001,
            "timeout_seconds": 5,
        },
        filing={"workers": 1},
        outbound={"workers": 1},
        http={"enabled": False},
    )
    seeded_gateway(config, FixedClock(DEFAULT_NOW)).db.dispose()
    log = tmp / "serve.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "-c", str(config)],
            stderr=stderr,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while "listening on smtp://" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        assert "listening on smtp://" in log.read_text(), log.read_text()
        yield port, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)


_VERBS = [
    b"HELO",
    b"EHLO",
    b"MAIL FROM:",
    b"RCPT TO:",
    b"DATA",
    b"RSET",
    b"NOOP",
    b"VRFY",
    b"EXPN",
    b"HELP",
    b"STARTTLS",
    b"AUTH PLAIN",
    b"BDAT",
    b"mail from:",
    b"rcpt to:",
]
_ADDRESSES = [
    b"<ventes+dupont-maconnerie@welyb.fr>",
    b"<achats+dupont-maconnerie@welyb.fr>",
    b"<dupont-maconnerie@welyb.fr>",
    b"<myunisoft+aecconseil@welyb.fr>",
    b"<Postmaster>",
    b"<postmaster@welyb.fr>",
    b"<>",
    b"<someone@example.org>",
    b'<"quoted local"@example.org>',
    b"<user@[192.0.2.1]>",
    b"<@relay.example:user@example.org>",
    b"<victim@example.com>",
    b"<ventes+dupont-maconnerie@welyb.fr@example.com>",
    b"<ventes+dupont-maconnerie%example.com@welyb.fr>",
    b"<" + b"a" * 300 + b"@example.org>",
]
# Any byte but LF: a bare LF ends a command line, which would make two commands of one.
_TEXT = st.binary(max_size=600).map(lambda b: b.replace(b"\n", b""))
_ARGUMENT = st.one_of(
    st.sampled_from(_ADDRESSES),
    st.tuples(st.sampled_from(_ADDRESSES), _TEXT).map(lambda t: t[0] + b" " + t[1]),
    st.sampled_from([b" SIZE=1000", b" BODY=8BITMIME", b" SMTPUTF8", b" SIZE=99999999999"]).map(
        lambda option: _ADDRESSES[0] + option
    ),
    _TEXT,
    st.just(b""),
)
_COMMAND = st.one_of(
    st.tuples(st.sampled_from(_VERBS), _ARGUMENT).map(lambda t: t[0] + b" " + t[1]),
    st.tuples(st.sampled_from(_VERBS), _ARGUMENT).map(lambda t: t[0] + t[1]),
    _TEXT,
)
_BODY = st.one_of(
    st.binary(max_size=4000),
    st.just(
        message(
            "ventes+dupont-maconnerie@welyb.fr",
            attachments=[("a.pdf", "application/pdf", pdf())],
        )
    ),
    st.lists(st.sampled_from([b".", b"..", b"\r", b"\n", b"\r\n", b".\n", b"\x00", b"x"])).map(
        b"".join
    ),
)


class Session:
    """One raw SMTP session: commands sent one at a time, each reply read whole."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.transcript: list[bytes] = []

    def reply(self) -> list[bytes]:
        lines = []
        while line := self.file.readline():
            lines.append(line.rstrip(b"\r\n"))
            if line[3:4] != b"-":
                break
        return lines

    def send(self, data: bytes) -> list[bytes]:
        self.transcript.append(data[:200])
        self.sock.sendall(data)
        try:
            lines = self.reply()
        except TimeoutError:
            raise AssertionError(f"no reply within 10 s; sent: {self.transcript}") from None
        self.transcript.extend(lines)
        return lines

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _check_reply(lines: list[bytes], sent: bytes) -> None:
    assert lines, f"the server closed without a reply to {sent[:80]!r}"
    for line in lines:
        assert REPLY.match(line), f"malformed reply {line[:100]!r} to {sent[:80]!r}"
    last = lines[-1]
    assert last[3:4] in (b" ", b""), f"the last line is a continuation: {last[:100]!r}"
    assert not last.startswith(Reply.INTERNAL_ERROR.value[:9].encode()), (
        f"internal failure replied to {sent[:80]!r}: {last!r}"
    )


def _relayed(command: bytes, reply: bytes) -> bool:
    """A RCPT answered 250 for an address outside our domains."""
    if not command[:8].upper().startswith(b"RCPT TO:") or not reply.startswith(b"250"):
        return False
    address = command[8:].strip().split(b" ")[0].strip(b"<>").lower()
    domain = address.rsplit(b"@", 1)[-1] if b"@" in address else b""
    return address != b"postmaster" and domain.decode(errors="replace") not in OUR_DOMAINS


def _dot_stuffed(body: bytes) -> bytes:
    """DATA as a client sends it (RFC 5321 4.5.2): a line that starts with a dot gets one
    more, and the data ends with CR LF, so that only our final dot ends it."""
    lines = body.split(b"\r\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


def _fuzz_session(port: int, commands: list[bytes], body: bytes) -> None:
    session = Session(port)
    try:
        greeting = session.reply()
        _check_reply(greeting, b"(connect)")
        if not greeting[-1].startswith(b"220"):
            return
        for command in commands:
            lines = session.send(command + b"\r\n")
            if not lines:
                break  # closed: only after a 421 or 221, which the previous reply said
            _check_reply(lines, command)
            assert not _relayed(command, lines[-1]), f"relayed: {command!r} → {lines[-1]!r}"
            code = lines[-1][:3]
            if code == b"354":
                lines = session.send(_dot_stuffed(body) + b".\r\n")
                _check_reply(lines, b"(end of data)")
            if code in (b"421", b"221"):
                break
    finally:
        session.close()


SMTP_BUDGET = Budget(BUDGET)


@FUZZ
@given(commands=st.lists(_COMMAND, min_size=1, max_size=12), body=_BODY)
def test_fuzzed_smtp_sessions_get_well_formed_replies_and_never_relay(
    served: tuple[int, Path], commands: list[bytes], body: bytes
) -> None:
    with SMTP_BUDGET.example() as run:
        if run:
            _fuzz_session(served[0], commands, body)


def test_after_the_fuzz_the_server_greets_and_logged_no_error(
    served: tuple[int, Path],
) -> None:
    """Runs after the fuzz (tests run in file order): the server is alive and its log has no
    session that died with an exception, nor any line at level error."""
    port, log = served
    session = Session(port)
    try:
        assert session.reply()[-1].startswith(b"220")
        assert session.send(b"NOOP\r\n")[-1].startswith(b"250")
    finally:
        session.close()
    errors = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            if not line.startswith("gateway: listening on"):  # the one line for a person
                errors.append(line)  # not a log record: a traceback printed by something
            continue
        if record.get("level") in ("error", "critical") or record.get("event") == "session_error":
            errors.append(line)
    assert not errors, "\n".join(errors[:20])
    print(f"SMTP fuzz: {SMTP_BUDGET.examples} sessions in {BUDGET:.0f} s")


# -- extraction -----------------------------------------------------------------------------

_SEEDS = [
    corpus.apple_mail_inline_pdf(),
    corpus.forwarded_message(),
    corpus.forwarded_base64_encoded(),
    corpus.outlook_winmail_dat(),
    corpus.gmail_with_attachment("f.zip", "application/zip", corpus.invoices_zip()),
    corpus.rfc2231_filename(),
    corpus.signature_logo(),
    corpus.smime_signed(),
    *corpus.malformed_mime().values(),
]
_FILES = [pdf(), corpus.invoices_zip(), corpus.zip_bomb(), corpus.nested_zip()]
_ENCODINGS = ["base64", "quoted-printable", "7bit", "8bit", "binary", "x-uuencode", "bogus", ""]
_TYPES = [
    "application/pdf",
    "application/octet-stream",
    "application/zip",
    "application/ms-tnef",
    "message/rfc822",
    "multipart/mixed",
    "multipart/alternative",
    "text/plain",
    "text/html",
    "image/png",
    "garbage",
]


def _mutated(data: bytes, seed: int, count: int) -> bytes:
    """`data` with `count` byte-level edits (flip, insert, delete, duplicate a slice)."""
    rng = random.Random(seed)
    buf = bytearray(data)
    for _ in range(count):
        if not buf:
            buf.extend(rng.randbytes(8))
        at = rng.randrange(len(buf))
        edit = rng.randrange(4)
        if edit == 0:
            buf[at] = rng.randrange(256)
        elif edit == 1:
            buf[at:at] = rng.choice([b"\r\n", b"--", b"=?utf-8?b?", b";", b'"', b"\x00", b"=\r\n"])
        elif edit == 2:
            del buf[at : at + rng.randrange(1, 64)]
        else:
            end = min(len(buf), at + rng.randrange(1, 256))
            buf[at:at] = buf[at:end]
    return bytes(buf)


@st.composite
def _mime(draw: st.DrawFn, depth: int = 0) -> bytes:
    """A MIME entity with random types, parameters, encodings and bodies."""
    ctype = draw(st.sampled_from(_TYPES))
    params = draw(
        st.lists(
            st.sampled_from(
                [
                    '; name="facture.pdf"',
                    "; name=This is a test.pdf",
                    "; name*=utf-8''%C3%A9t%C3%A9.pdf",
                    "; name*0=a; name*1=b.pdf",
                    '; filename="=?utf-8?b?w6l0w6kucGRm?="',
                    "; charset=utf-8",
                    "; charset=x-unknown",
                    '; boundary="b"',
                    "; boundary=",
                    ";;;",
                ]
            ),
            max_size=3,
        )
    )
    encoding = draw(st.sampled_from(_ENCODINGS))
    disposition = draw(st.sampled_from(["", "attachment", "inline", 'attachment; filename="x']))
    head = f"Content-Type: {ctype}{''.join(params)}\r\n"
    if encoding:
        head += f"Content-Transfer-Encoding: {encoding}\r\n"
    if disposition:
        head += f"Content-Disposition: {disposition}\r\n"
    if ctype.startswith("multipart/") and depth < 4:
        parts = draw(st.lists(_mime(depth + 1), max_size=4))
        boundary = draw(st.sampled_from(["b", "b--", "", "=_x"]))
        head = head.replace(ctype, f'{ctype}; boundary="{boundary}"', 1)
        body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
        body += draw(st.sampled_from([b"--" + boundary.encode() + b"--\r\n", b""]))
    elif ctype == "message/rfc822" and depth < 4:
        body = draw(_mime(depth + 1))
    else:
        body = draw(
            st.one_of(
                st.binary(max_size=2000),
                st.sampled_from(_FILES),
                st.text(max_size=500).map(lambda t: t.encode("utf-8", "surrogatepass")),
            )
        )
    return head.encode() + b"\r\n" + body


_MESSAGE = st.one_of(
    st.tuples(st.sampled_from(_SEEDS), st.integers(0, 2**32), st.integers(1, 40)).map(
        lambda t: _mutated(*t)
    ),
    _mime().map(lambda entity: b"From: a@example.org\r\nSubject: fuzz\r\n" + entity),
    st.binary(max_size=5000),
)


def _check_extraction(raw: bytes) -> None:
    result = extract_documents(raw)
    stopped = [d for d in result.defects if "extraction stopped early" in d]
    assert not stopped, stopped
    assert result.documents or result.refused, "a message always gives a document or a reason"
    for document in result.documents:
        assert document.filename and document.media_type
        assert not set(document.filename) & {"/", "\\", "\x00"}, document.filename
        assert len(document.filename.encode("utf-8")) <= 255, document.filename


EXTRACTION_BUDGET = Budget(BUDGET)


@FUZZ
@given(raw=_MESSAGE)
def test_fuzzed_messages_are_extracted_without_an_exception(raw: bytes) -> None:
    with EXTRACTION_BUDGET.example() as run:
        if run:
            _check_extraction(raw)


def test_extraction_fuzz_ran(capsys: pytest.CaptureFixture[str]) -> None:
    """The budget was spent on examples, not on setting up: at least a few hundred ran."""
    assert EXTRACTION_BUDGET.examples >= 100, EXTRACTION_BUDGET.examples
    print(f"extraction fuzz: {EXTRACTION_BUDGET.examples} messages in {BUDGET:.0f} s")

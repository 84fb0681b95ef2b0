"""aiosmtpd's private members that gateway/inbound/smtp_session.py uses, checked as it uses them.

aiosmtpd promises nothing about its private members (nor asyncio about StreamReader's), so
a new version may rename or change them silently. Each test here fails naming what changed;
pyproject.toml bounds aiosmtpd to the range these pass on. Raising the bound: install the
new version, run this file, then tests/test_smtp.py and tests/test_corpus_smtp.py.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import random
import time
import tomllib
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiosmtpd.smtp
import pytest
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session
from packaging.requirements import Requirement

import gateway
import gateway.inbound.smtp_session
from gateway.config import SmtpConfig
from gateway.inbound.anvil import Anvil
from gateway.inbound.smtp_session import SYNTAX_ATTRIBUTES, DataBudget, GatewaySMTP
from gateway.replies import AIOSMTPD_REPLACEMENTS

ROOT = Path(__file__).resolve().parent.parent
AIOSMTPD = f"aiosmtpd {version('aiosmtpd')}"

# How smtp_session.py calls aiosmtpd's private methods: (positional arguments, awaited?).
PRIVATE_CALLS: dict[str, tuple[tuple[object, ...], bool]] = {
    "_call_handler_hook": (("DATA",), True),
    "_set_post_data_state": ((), False),
    "_reset_timeout": ((1.0,), False),
    # MAIL and RCPT's address parser, guarded against email's IndexError on bad addresses.
    "_getaddr": (("<a@example.org>",), False),
}
# Private methods it overrides: aiosmtpd's timer callback, called with no argument.
PRIVATE_OVERRIDES: dict[str, tuple[tuple[object, ...], bool]] = {
    "_timeout_cb": ((), False),
    "_getaddr": (("<a@example.org>",), False),
}
# Private attributes it reads: the session's StreamReader, and that reader's buffer; whether
# STARTTLS has begun (the TLS protocol, None before).
PRIVATE_ATTRIBUTES = {"_reader", "_buffer", "_tls_protocol"}
# aiosmtpd methods GatewaySMTP overrides or calls, as aiosmtpd calls them / we call them.
PUBLIC_CALLS: dict[str, tuple[tuple[object, ...], bool]] = {
    "smtp_DATA": (("",), True),
    "smtp_MAIL": (("FROM:<a@example.org>",), True),
    "smtp_HELO": (("client.example.org",), True),
    "smtp_EHLO": (("client.example.org",), True),
    "smtp_RCPT": (("TO:<a@example.org>",), True),
    "smtp_STARTTLS": (("",), True),
    "smtp_AUTH": (("PLAIN",), True),
    "smtp_VRFY": (("a@example.org",), True),
    "push": (("250 OK",), True),
    "check_helo_needed": ((), True),
    "check_auth_needed": (("DATA",), True),
    "connection_made": ((None,), False),
    "connection_lost": ((None,), False),
    "eof_received": ((), False),
}
OVERRIDES = {
    "__init__",
    "connection_made",
    "connection_lost",
    "eof_received",
    "push",
    "smtp_DATA",
    "smtp_MAIL",
    "smtp_HELO",
    "smtp_EHLO",
    "smtp_RCPT",
    "smtp_STARTTLS",
    "smtp_AUTH",
    "smtp_VRFY",
    "_timeout_cb",
    "_getaddr",
}


def _attributes_used(path: Path) -> set[str]:
    """Every `x._name` (single underscore) in a module's source."""
    tree = ast.parse(path.read_text())
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    }


def _imports_aiosmtpd(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            continue
        if any(m == "aiosmtpd" or m.startswith("aiosmtpd.") for m in modules):
            return True
    return False


def test_installed_aiosmtpd_is_inside_the_tested_range() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    requirement = next(
        Requirement(d) for d in dependencies if Requirement(d).name.lower() == "aiosmtpd"
    )
    assert any(spec.operator in ("<", "<=", "==", "~=") for spec in requirement.specifier), (
        f"pyproject.toml's {requirement} has no upper bound: aiosmtpd's private members "
        "(see gateway/inbound/smtp_session.py) may change in any release"
    )
    installed = version("aiosmtpd")
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"installed {AIOSMTPD} is outside pyproject.toml's tested range {requirement}"
    )


@pytest.mark.parametrize("name", sorted(PRIVATE_CALLS))
def test_private_method_takes_the_arguments_we_pass(name: str) -> None:
    _assert_callable_as(name, *PRIVATE_CALLS[name])


@pytest.mark.parametrize("name", sorted(PRIVATE_OVERRIDES))
def test_private_method_we_override_is_called_as_we_define_it(name: str) -> None:
    _assert_callable_as(name, *PRIVATE_OVERRIDES[name])


@pytest.mark.parametrize("name", sorted(PUBLIC_CALLS))
def test_method_we_override_or_call_keeps_its_signature(name: str) -> None:
    _assert_callable_as(name, *PUBLIC_CALLS[name])


def _assert_callable_as(name: str, args: tuple[object, ...], awaited: bool) -> None:
    member = getattr(SMTP, name, None)
    assert callable(member), f"{AIOSMTPD} has no SMTP.{name} any more (smtp_session.py uses it)"
    signature = inspect.signature(member)
    try:
        signature.bind(object(), *args)
    except TypeError as error:
        pytest.fail(
            f"{AIOSMTPD} changed SMTP.{name}{signature}: smtp_session.py uses it as "
            f"{name}({', '.join(map(repr, args))}) and that no longer binds ({error})"
        )
    assert inspect.iscoroutinefunction(member) == awaited, (
        f"{AIOSMTPD}: SMTP.{name} is "
        f"{'now' if not awaited else 'no longer'} a coroutine function; smtp_session.py "
        f"{'awaits' if awaited else 'calls'} it"
    )


def test_stream_reader_buffer_is_a_bytearray_read_before_new_data() -> None:
    """Pushing pipelined bytes back (`reader._buffer[:0] = rest`) relies on this."""

    async def check() -> None:
        reader = asyncio.StreamReader()
        buffer = getattr(reader, "_buffer", None)
        assert isinstance(buffer, bytearray), (
            f"asyncio.StreamReader._buffer is {type(buffer).__name__}, not bytearray: "
            "GatewaySMTP.read_content cannot give pipelined commands back to the reader"
        )
        reader.feed_data(b"RSET\r\n")
        buffer[:0] = b"NOOP\r\n"
        lines = [await reader.readuntil(b"\r\n"), await reader.readuntil(b"\r\n")]
        assert lines == [b"NOOP\r\n", b"RSET\r\n"], (
            f"asyncio.StreamReader no longer reads its _buffer first: got {lines!r}"
        )

    asyncio.run(check())


def test_the_modules_private_uses_are_exactly_the_checked_ones() -> None:
    used = _attributes_used(Path(gateway.inbound.smtp_session.__file__))
    assert used == set(PRIVATE_CALLS) | PRIVATE_ATTRIBUTES, (
        f"smtp_session.py now uses private members {sorted(used)}; this file checks "
        f"{sorted(set(PRIVATE_CALLS) | PRIVATE_ATTRIBUTES)}: add a check (and a comment there)"
    )


def _plain_session() -> SMTP:
    """aiosmtpd's own protocol object, as it stands before any connection."""
    loop = asyncio.new_event_loop()
    try:
        return SMTP(object(), hostname="test", loop=loop)
    finally:
        loop.close()


def test_no_other_module_uses_aiosmtpd_private_members() -> None:
    plain = _plain_session()
    private = {
        n for n in set(dir(SMTP)) | set(vars(plain)) if n.startswith("_") and not n.startswith("__")
    } | PRIVATE_ATTRIBUTES
    offenders = {}
    for path in Path(gateway.__file__).parent.rglob("*.py"):
        if path.name == "smtp_session.py" or not _imports_aiosmtpd(path):
            continue
        if used := _attributes_used(path) & private:
            offenders[str(path.relative_to(ROOT))] = sorted(used)
    assert not offenders, f"aiosmtpd private members used outside smtp_session.py: {offenders}"


def test_no_name_of_ours_shadows_one_of_aiosmtpds(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.new_event_loop()
    try:
        aiosmtpd_names = set(dir(SMTP)) | set(vars(SMTP(object(), hostname="test", loop=loop)))
    finally:
        loop.close()
    # What GatewaySMTP's own __init__ sets, without aiosmtpd's.
    monkeypatch.setattr(SMTP, "__init__", lambda self, *args, **kwargs: None)
    ours = set(vars(GatewaySMTP(_Handler(), set(), DataBudget(2**30), _anvil(), SmtpConfig()))) | {
        n for n in vars(GatewaySMTP) if not (n.startswith("__") and n.endswith("__"))
    }
    shadowed = (ours - OVERRIDES) & aiosmtpd_names
    assert not shadowed, f"{AIOSMTPD} now has members GatewaySMTP also defines: {sorted(shadowed)}"


@pytest.mark.parametrize("command", ["MAIL", "HELO", "EHLO", "RCPT", "STARTTLS"])
def test_help_reads_the_syntax_attributes_we_copy(command: str) -> None:
    theirs, ours = getattr(SMTP, f"smtp_{command}"), getattr(GatewaySMTP, f"smtp_{command}")
    for attribute in SYNTAX_ATTRIBUTES:
        assert hasattr(theirs, attribute), (
            f"{AIOSMTPD}: SMTP.smtp_{command} has no {attribute} (set by its @syntax "
            f"decorator); HELP would no longer list our {command} override"
        )
        assert getattr(ours, attribute) == getattr(theirs, attribute)


def test_tls_protocol_is_none_until_starttls() -> None:
    """`smtp_STARTTLS` refuses a second STARTTLS when `_tls_protocol` is set."""
    plain = _plain_session()
    assert "_tls_protocol" in vars(plain) and plain._tls_protocol is None, (
        f"{AIOSMTPD}: SMTP._tls_protocol is gone or not None before STARTTLS; "
        "GatewaySMTP.smtp_STARTTLS can no longer tell a session already in TLS"
    )


def test_reply_texts_we_replace_are_still_aiosmtpds() -> None:
    """`GatewaySMTP.push` maps these exact aiosmtpd texts onto our reply table."""
    tree = ast.parse(inspect.getsource(aiosmtpd.smtp))
    texts = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
    missing = sorted(set(AIOSMTPD_REPLACEMENTS) - texts)
    assert not missing, (
        f"{AIOSMTPD} no longer sends {missing}: gateway.replies.AIOSMTPD_REPLACEMENTS would "
        "let its own wording (without enhanced status codes) through"
    )


def _anvil() -> Anvil:
    return Anvil.for_config(SmtpConfig(), time.monotonic)


class _Handler:
    """The least a GatewaySMTP needs: the draining flag and a DATA hook."""

    draining = False

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.calls.append((server, session, envelope))
        return "250 hook"


class _LiveSession:
    """One GatewaySMTP on a real socket, and the client end of it."""

    def __init__(self) -> None:
        self.handler = _Handler()
        self.sessions: set[GatewaySMTP] = set()

    async def __aenter__(self) -> _LiveSession:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: GatewaySMTP(
                self.handler,
                self.sessions,
                DataBudget(2**30),
                _anvil(),
                SmtpConfig(),
                hostname="test",
                loop=loop,
            ),
            "127.0.0.1",
            0,
        )
        port = self.server.sockets[0].getsockname()[1]
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await self.reader.readline()).startswith(b"220")
        (self.session,) = self.sessions
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()
        self.server.close()
        await self.server.wait_closed()

    async def buffered(self, expected: bytes) -> bytes:
        """The session reader's unread bytes, once they equal `expected` (or after 2 s)."""
        for _ in range(200):
            if bytes(self.session._reader._buffer) == expected:
                break
            await asyncio.sleep(0.01)
        return bytes(self.session._reader._buffer)


def _live(check: Callable[[_LiveSession], Awaitable[None]]) -> None:
    async def run() -> None:
        try:
            async with asyncio.timeout(10), _LiveSession() as live:
                await check(live)
        except TimeoutError:
            pytest.fail(f"{AIOSMTPD}: a GatewaySMTP session did not answer within 10 s")

    asyncio.run(run())


def test_session_reader_is_the_connection_stream_and_pushed_back_bytes_are_read_first() -> None:
    async def check(live: _LiveSession) -> None:
        reader = getattr(live.session, "_reader", None)
        assert isinstance(reader, asyncio.StreamReader), (
            f"{AIOSMTPD}: SMTP._reader is {type(reader).__name__}, not the StreamReader "
            "(set in its _cb_client_connected) that GatewaySMTP.read_content reads DATA from"
        )
        live.writer.write(b"NOO")
        buffered = await live.buffered(b"NOO")
        assert buffered == b"NOO", (
            f"{AIOSMTPD}: bytes the client sent are not in SMTP._reader._buffer ({buffered!r})"
        )
        # What read_content does with pipelined commands: aiosmtpd's loop must read them next.
        reader._buffer[:0] = b"NOOP\r\n"  # type: ignore[attr-defined]
        live.writer.write(b"P\r\n")
        replies = [await live.reader.readline(), await live.reader.readline()]
        assert [r[:3] for r in replies] == [b"250", b"250"], (
            f"{AIOSMTPD}'s command loop did not read bytes given back to SMTP._reader: {replies}"
        )

    _live(check)


def test_private_methods_do_what_smtp_data_relies_on() -> None:
    async def check(live: _LiveSession) -> None:
        session = live.session
        envelope = session.envelope
        assert isinstance(envelope, Envelope)
        status = await session._call_handler_hook("DATA")
        called = live.handler.calls
        assert status == "250 hook" and called == [(session, session.session, envelope)], (
            f"{AIOSMTPD}: SMTP._call_handler_hook('DATA') no longer calls "
            f"handle_DATA(server, session, envelope) and returns its reply ({status!r})"
        )
        session._set_post_data_state()
        assert isinstance(session.envelope, Envelope) and session.envelope is not envelope, (
            f"{AIOSMTPD}: SMTP._set_post_data_state() no longer starts a fresh envelope"
        )
        session._reset_timeout(5.0)  # callable with a duration on a live session

        class NoHooks:
            draining = False

        bare = GatewaySMTP(
            NoHooks(),
            set(),
            DataBudget(2**30),
            _anvil(),
            SmtpConfig(),
            hostname="test",
            loop=asyncio.get_running_loop(),
        )
        assert await bare._call_handler_hook("DATA") is MISSING, (
            f"{AIOSMTPD}: SMTP._call_handler_hook no longer returns MISSING without a hook"
        )

    _live(check)


def test_help_mail_answers_with_aiosmtpds_syntax_through_our_override() -> None:
    async def check(live: _LiveSession) -> None:
        live.writer.write(b"HELP MAIL\r\n")
        reply = await live.reader.readline()
        assert reply == f"250 Syntax: {SMTP.smtp_MAIL.__smtp_syntax__}\r\n".encode(), (  # type: ignore[attr-defined]
            f"{AIOSMTPD}: HELP MAIL through GatewaySMTP answered {reply!r}"
        )

    _live(check)


_ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
_AFTER = ["", " ", "  SIZE=1", "\tBODY=8BITMIME", " (a) SIZE=1", "(c)", "x", " \t x", "\r\n x"]


def _addresses(count: int) -> list[str]:
    """MAIL/RCPT arguments, mostly plain `<local@host>`, some not (a leading dot, an
    empty label, a quoted local part, a literal, UTF-8)."""
    rng = random.Random(14)
    odd = ['<"q"@b.c>', "<a@[192.0.2.1]>", "<é@b.c>", " <a@b.c>", "<@r:a@b.c>", "<a@b_c.d>"]
    found = []
    for _ in range(count):
        local = ".".join(
            "".join(rng.choice(_ATEXT) for _ in range(rng.randint(1, 6)))
            for _ in range(rng.randint(1, 3))
        )
        host = ".".join(
            "".join(rng.choice("ab-9") for _ in range(rng.randint(1, 5)))
            for _ in range(rng.randint(1, 3))
        )
        address = f"<{'.' if rng.random() < 0.05 else ''}{local}@{host}>"
        found.append((rng.choice(odd) if rng.random() < 0.05 else address) + rng.choice(_AFTER))
    return found


def test_our_address_reading_answers_as_aiosmtpds_parser() -> None:
    ours = GatewaySMTP(_Handler(), set(), DataBudget(2**30), _anvil(), SmtpConfig())
    theirs = SMTP(_Handler())
    for limit in (0, 5):
        ours.local_part_limit = theirs.local_part_limit = limit
        for argument in _addresses(20_000):
            try:
                expected = theirs._getaddr(argument)
            except (IndexError, ValueError, TypeError):
                expected = (None, None)  # what our override makes of those
            assert ours._getaddr(argument) == expected, (
                f"{AIOSMTPD}: MAIL/RCPT argument {argument!r} read differently"
            )

"""Talking to an IMAP server: opening a logged-in connection as a source's configuration
says, and what went wrong in plain words for a mail admin (`explain`, `ImapProblem`)."""

from __future__ import annotations

import contextlib
import imaplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from gateway.config import ConfigError, ImapSourceConfig
from gateway.errors import GatewayError
from gateway.inbound.imap.oauth import TokenRefused

# What a dropped or unreachable server raises (imaplib's abort is an IMAPClientError).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, imaplib.IMAP4.abort, EOFError)


class MailboxClient(Protocol):
    """The part of imapclient's IMAPClient the poller uses (tests may pass another)."""

    def select_folder(self, folder: str, readonly: bool = False) -> dict[bytes, Any]: ...
    def search(self, criteria: Any = "ALL", charset: str | None = None) -> list[int]: ...
    def fetch(
        self, messages: Sequence[int], data: Sequence[str]
    ) -> dict[int, dict[bytes, Any]]: ...
    def has_capability(self, capability: str) -> bool: ...
    def folder_exists(self, folder: str) -> bool: ...
    def create_folder(self, folder: str) -> Any: ...
    def list_folders(self, directory: str = "", pattern: str = "*") -> list[Any]: ...
    def namespace(self) -> Any: ...
    def move(self, messages: Sequence[int], folder: str) -> Any: ...
    def copy(self, messages: Sequence[int], folder: str) -> Any: ...
    def add_flags(
        self, messages: Sequence[int], flags: Sequence[str], silent: bool = False
    ) -> Any: ...
    def expunge(self, messages: Sequence[int] | None = None) -> Any: ...
    def idle(self) -> Any: ...
    def idle_check(self, timeout: float | None = None) -> list[Any]: ...
    def idle_done(self) -> Any: ...
    def noop(self) -> Any: ...
    def logout(self) -> Any: ...


Connector = Callable[[ImapSourceConfig], MailboxClient]


class ImapProblem(GatewayError):
    """Something a mail admin must fix or wait for, said in plain words."""


def connect(source: ImapSourceConfig) -> IMAPClient:
    """Open, secure and log in with the source's password (an OAuth2 source logs in through
    `oauth.OAuthConnector`, which the wiring gives it)."""
    client = open_client(source)
    try:
        client.login(source.user, source.password())
    except BaseException:
        with contextlib.suppress(Exception):
            client.shutdown()
        raise
    return client


def open_client(source: ImapSourceConfig) -> IMAPClient:
    """Open and secure the connection, as the source's configuration says; not logged in."""
    if source.tls == "implicit":
        client = IMAPClient(
            source.host,
            source.port,
            ssl=True,
            ssl_context=ssl.create_default_context(),
            timeout=source.timeout_seconds,
        )
    else:
        client = IMAPClient(source.host, source.port, ssl=False, timeout=source.timeout_seconds)
        if source.tls == "starttls":
            try:
                client.starttls(ssl.create_default_context())
            except BaseException:
                with contextlib.suppress(Exception):
                    client.shutdown()
                raise
    client.normalise_times = False  # INTERNALDATE as an aware datetime
    return client


def explain(source: ImapSourceConfig, exc: BaseException) -> str:
    """What went wrong, for a mail admin rather than a programmer."""
    where = f"{source.host}:{source.port}"
    if isinstance(exc, ConfigError | ImapProblem):
        return str(exc)
    if isinstance(exc, TokenRefused):
        return f"no OAuth2 token for {source.user!r}: {exc}"
    if isinstance(exc, LoginError) and source.oauth2 is not None:
        return (
            f"the server at {where} refused the OAuth2 token for {source.user!r}: the app may "
            f"not be granted this mailbox, or IMAP may be off for it (server said: "
            f"{_text(exc)})"
        )
    if isinstance(exc, LoginError):
        return (
            f"login refused for {source.user!r} on {where}: wrong user name or password, or "
            f"the account may not use IMAP (server said: {_text(exc)})"
        )
    if isinstance(exc, socket.gaierror):
        return f"cannot find the IMAP server {source.host!r} in DNS ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {where}: connection refused (is the server up, the port right?)"
    if isinstance(exc, TimeoutError):
        return f"no answer from {where} within {source.timeout_seconds} s"
    if isinstance(exc, ssl.SSLError):
        hint = "try tls = 'starttls' with port 143" if source.tls == "implicit" else "check tls"
        return f"TLS with {where} failed: {exc.reason or exc} ({hint})"
    if isinstance(exc, imaplib.IMAP4.abort | EOFError):
        return f"the server at {where} closed the connection ({_text(exc)})"
    if isinstance(exc, OSError):
        return f"cannot talk to {where}: {exc.strerror or exc}"
    return f"IMAP error from {where}: {_text(exc)}"


def _text(exc: BaseException) -> str:
    text = str(exc)
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text or type(exc).__name__


IDLE_RESTART_SECONDS = 9 * 60.0  # RFC 2177: re-issue IDLE well before the 29-minute timeout


def wait_for_mail(
    client: MailboxClient,
    source: ImapSourceConfig,
    stop: threading.Event,
    tick: Callable[[], None],
    tick_seconds: float = 1.0,
) -> None:
    """Until new mail may be there: IDLE when offered (and `idle`), else `poll_seconds`;
    `tick` (the lease's renewal) is called at least every `tick_seconds` meanwhile."""
    if source.idle and client.has_capability("IDLE"):
        client.idle()
        try:
            started = time.monotonic()
            while not stop.is_set() and time.monotonic() - started < IDLE_RESTART_SECONDS:
                responses = client.idle_check(timeout=min(1.0, tick_seconds))
                if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                    return
                tick()
        finally:
            client.idle_done()
        return
    deadline = time.monotonic() + source.poll_seconds
    while not stop.is_set() and time.monotonic() < deadline:
        stop.wait(min(tick_seconds, max(0.0, deadline - time.monotonic())))
        tick()
    client.noop()  # new messages become visible to the next SEARCH

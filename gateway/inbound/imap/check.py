"""The check behind `gateway imap test`: log in (with an OAuth2 source, say where its token
came from and until when it is valid; a provider's refusal is shown in its own words), read
the namespaces, and say which folders the source will read and file into, by their exact
names on the server."""

from __future__ import annotations

import contextlib
from typing import Any

from imapclient.exceptions import IMAPClientError, LoginError

from gateway.config import ConfigError, ImapSourceConfig
from gateway.inbound.imap import connection
from gateway.inbound.imap.connection import CONNECTION_ERRORS, ImapProblem, MailboxClient
from gateway.inbound.imap.folders import (
    FolderRefused,
    is_refusal,
    read_namespaces,
    server_words,
)
from gateway.inbound.imap.oauth import OAuthConnector, TokenRefused

GMAIL_NOTE = (
    "Gmail: moving a message out of INBOX removes its INBOX label (it stays in "
    "[Gmail]/All Mail, which is read only when listed in folders)"
)


def check_source(
    source: ImapSourceConfig, connector: connection.Connector = connection.connect
) -> list[str]:
    """Log in and look at the folders; returns what was found, line by line.

    Raises ImapProblem saying what is wrong (login, TLS, network, a missing folder, a
    processed or rejected folder the server refuses to create).
    """
    lines: list[str] = []
    try:
        client = connector(source)
    except (ConfigError, LoginError, TokenRefused, *CONNECTION_ERRORS, IMAPClientError) as exc:
        raise ImapProblem(connection.explain(source, exc)) from exc
    try:
        lines.append(
            f"logged in as {source.user} on {source.host}:{source.port} (tls {source.tls})"
        )
        if isinstance(connector, OAuthConnector):
            lines.append(connector.last_login)
        idle = (
            "yes"
            if client.has_capability("IDLE")
            else f"no (polling every {source.poll_seconds:g} s)"
        )
        move = "yes" if client.has_capability("MOVE") else "no"
        lines.append(f"server offers IDLE: {idle}, MOVE: {move}")
        spaces = read_namespaces(client)
        lines.append(
            f"personal namespace: prefix {spaces.prefix!r}, delimiter {spaces.delimiter!r}"
        )
        names = [_folder_name(entry) for entry in client.list_folders()]
        wanted = {f: spaces.resolve(f) for f in source.folders}
        missing = [name for name in wanted.values() if name not in names]
        if missing:
            raise ImapProblem(
                f"folder {', '.join(repr(f) for f in missing)} does not exist on "
                f"{source.host}; folders there: {', '.join(sorted(names)) or '(none)'}"
            )
        for folder, name in wanted.items():
            info = client.select_folder(name, readonly=True)
            lines.append(
                f"folder {_shown(folder, name)}: {int(info.get(b'EXISTS', 0))} message(s), "
                f"UIDVALIDITY {int(info[b'UIDVALIDITY'])}"
            )
        if source.after == "move":
            for role, folder in (
                ("processed", source.processed_folder),
                ("rejected", source.rejected_folder),
            ):
                name = spaces.resolve(folder)
                state = _prepare(client, name, names, source)
                lines.append(f"{role} folder {_shown(folder, name)}: {state}")
        else:
            lines.append(f"messages taken are flagged {source.flag} and left in place")
        if client.has_capability("X-GM-EXT-1"):
            lines.append(GMAIL_NOTE)
    except (*CONNECTION_ERRORS, IMAPClientError) as exc:
        raise ImapProblem(connection.explain(source, exc)) from exc
    finally:
        with contextlib.suppress(Exception):
            client.logout()
    return lines


def _prepare(
    client: MailboxClient,
    name: str,
    names: list[str],
    source: ImapSourceConfig,
) -> str:
    """Whether `name` exists; else create it now (as the first move would), so that a
    server that refuses it says so here rather than on the first message."""
    if name in names:
        return "exists"
    try:
        client.create_folder(name)
    except IMAPClientError as exc:
        if not is_refusal(exc):
            raise
        raise FolderRefused(
            f"the server refuses to create the folder {name!r} on {source.host}: "
            f"{server_words(exc)}"
        ) from exc
    return "created now"


def _shown(configured: str, name: str) -> str:
    return repr(name) if configured == name else f"{name!r} (configured as {configured!r})"


def _folder_name(entry: Any) -> str:
    name = entry[2] if isinstance(entry, tuple | list) and len(entry) == 3 else entry
    return name.decode() if isinstance(name, bytes) else str(name)

"""Where a source's folders are on its server: the names configured, placed in the server's
namespaces (RFC 2342 NAMESPACE, read at login, and the hierarchy delimiter from LIST), and
what the server said when it refused to create a folder or take a message into it.

How a configured folder name is read:

- `INBOX` (any case), or a name that starts with one of the server's namespace prefixes
  (`INBOX.Processed` on a server whose personal namespace is `INBOX.`, `#shared/Factures`),
  is absolute: used as written.
- Any other name is relative to the personal namespace: its prefix goes in front, and each
  `/` in the name separates levels and becomes the server's delimiter. `Processed` is
  `INBOX.Processed` on Cyrus or Courier (prefix `INBOX.`, delimiter `.`), `Processed` on
  Dovecot, Gmail or Exchange (empty prefix); `Archive/Processed` is `INBOX.Archive.Processed`
  on the former.
"""

from __future__ import annotations

import imaplib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from imapclient.exceptions import IMAPClientError

from gateway.inbound.imap.connection import ImapProblem, MailboxClient

REFUSED_RETRY_FIRST_SECONDS = 1.0
REFUSED_RETRY_MAX_SECONDS = 30 * 60.0  # a refused move is retried at most this far apart


class FolderRefused(ImapProblem):
    """The server answered NO to CREATE, MOVE or COPY: it will not change by retrying now."""


@dataclass(frozen=True)
class Namespaces:
    """The personal namespace's prefix and delimiter, and every namespace prefix known."""

    prefix: str = ""
    delimiter: str = "/"
    prefixes: tuple[str, ...] = ()

    def resolve(self, name: str) -> str:
        """The server's name of a configured folder (see the module docstring)."""
        if name.upper() == "INBOX" or self.is_absolute(name):
            return name
        return self.prefix + self.delimiter.join(p for p in name.split("/") if p)

    def is_absolute(self, name: str) -> bool:
        return any(p and name.startswith(p) for p in self.prefixes)


def read_namespaces(client: MailboxClient) -> Namespaces:
    """NAMESPACE when offered, else the delimiter LIST gives for the top level."""
    found = None
    if client.has_capability("NAMESPACE"):
        try:
            found = client.namespace()
        except IMAPClientError as exc:
            if not is_refusal(exc):
                raise  # a dropped connection; a NO falls back to LIST
    if found is not None:
        personal = list(found.personal or ())
        every = [pair for kind in found for pair in (kind or ())]
        if personal:
            prefix, delimiter = personal[0]
            return Namespaces(
                prefix=_text(prefix),
                delimiter=_text(delimiter) or "/",
                prefixes=tuple(_text(p) for p, _ in every),
            )
    listed = client.list_folders("", "")  # RFC 3501: the delimiter, no folder
    delimiter = _text(listed[0][1]) if listed and listed[0][1] else "/"
    return Namespaces(prefix="", delimiter=delimiter, prefixes=("",))


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def server_words(exc: BaseException) -> str:
    """What the server said, without imaplib's wrapping (b'...', the command name)."""
    text = str(exc)
    for marker in ("failed: ", "error: "):
        if marker in text:
            text = text.split(marker, 1)[1]
    if text[:2] in ("b'", 'b"'):
        text = text[2:-1]
    return text.strip() or type(exc).__name__


def is_refusal(exc: BaseException) -> bool:
    """A tagged NO/BAD (imaplib.IMAP4.error) rather than a dropped connection (abort)."""
    return isinstance(exc, IMAPClientError) and not isinstance(exc, imaplib.IMAP4.abort)


class FolderMover:
    """Moves messages into the processed and rejected folders, creating them when missing;
    a NO from the server is raised as `FolderRefused` with its words, and the next moves
    wait (`waiting`), longer after each refusal: a NO does not go away by retrying at once."""

    def __init__(self, mailbox: str) -> None:
        self.mailbox = mailbox
        self._seen: set[str] = set()
        self._refusals: dict[str, FolderRefused] = {}  # target -> until a move there works
        self._retry_at = 0.0  # monotonic
        self._retry_delay = REFUSED_RETRY_FIRST_SECONDS

    @property
    def refused(self) -> FolderRefused | None:
        return next(iter(self._refusals.values()), None)

    @property
    def waiting(self) -> bool:
        return time.monotonic() < self._retry_at

    def move(self, client: MailboxClient, uids: Sequence[int], target: str) -> bool:
        """Move `uids` to `target`; False when the server has no UIDPLUS (copied and
        flagged \\Deleted, not expunged)."""
        try:
            done = self._move(client, uids, target)
        except FolderRefused as exc:
            self._refusals[target] = exc
            self._retry_at = time.monotonic() + self._retry_delay
            self._retry_delay = min(self._retry_delay * 4, REFUSED_RETRY_MAX_SECONDS)
            raise
        self._refusals.pop(target, None)
        if not self._refusals:
            self._retry_delay = REFUSED_RETRY_FIRST_SECONDS
        return done

    def _move(self, client: MailboxClient, uids: Sequence[int], target: str) -> bool:
        if target not in self._seen:
            if not client.folder_exists(target):
                self._command(f"create the folder {target!r}", client.create_folder, target)
            self._seen.add(target)
        if client.has_capability("MOVE"):
            self._command(f"move messages to {target!r}", client.move, uids, target)
            return True
        # RFC 6851 fallback: copy, then remove exactly these UIDs (UIDPLUS), never others.
        self._command(f"copy messages to {target!r}", client.copy, uids, target)
        client.add_flags(uids, [r"\Deleted"], silent=True)
        if client.has_capability("UIDPLUS"):
            client.expunge(uids)
            return True
        return False

    def _command(self, what: str, command: Any, *args: Any) -> None:
        try:
            command(*args)
        except IMAPClientError as exc:
            if not is_refusal(exc):
                raise
            self._seen.discard(args[-1])
            raise FolderRefused(
                f"the server refused to {what} in {self.mailbox}: {server_words(exc)}"
            ) from exc

"""OAuth2 logins to hosted mailboxes: the access token a source logs in with, kept fresh,
and the SASL exchange (XOAUTH2, OAUTHBEARER) that presents it.

- `AccessTokens` holds one source's token, shared by the pollers of its folders. It asks the
  provider (`TokenClient`, gateway/inbound/imap/providers.py) for a new one ahead of expiry
  (`REFRESH_AHEAD_SECONDS`, or a fifth of the token's life when shorter), never on every
  login: Microsoft and Google throttle token requests as they do logins.
- `OAuthConnector` connects as `connection.open_client` does, then authenticates with the
  token. A token the server refuses, when it came from the cache, is dropped and a fresh one
  tried once on the same connection (it may have been revoked); a fresh token refused is the
  server's final word (the mailbox is not granted to the app, IMAP is off for the account).
- A provider's refusal is a `TokenRefused` carrying the provider's words and error code
  (`AADSTS7000215`, `invalid_grant`): `imap test` prints it, the poller records it on the
  folder's checkpoint, where `imap status`, readiness and metrics show it. `permanent` says
  whether waiting can help (a revoked grant, a wrong secret: no; a provider's 5xx: yes).

Exchange Online ends an IMAP session when its token expires; the poller reconnects (as after
any dropped connection) and the cache gives it a token it refreshed meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from gateway.clock import Clock
from gateway.config import ImapSourceConfig
from gateway.errors import GatewayError

log = structlog.get_logger("gateway.imap")

REFRESH_AHEAD_SECONDS = 300.0
_AADSTS = re.compile(r"\bAADSTS\d+\b")


class TokenRefused(GatewayError):
    """The provider gave no access token; says what it said, for the mail admin."""

    def __init__(self, text: str, *, code: str | None = None, permanent: bool = True) -> None:
        super().__init__(text)
        self.code = code
        self.permanent = permanent


def error_code(error: str | None, description: str | None) -> str | None:
    """The most precise code in a provider's error: Entra's AADSTS number, else the OAuth
    `error` (invalid_grant, invalid_client…)."""
    found = _AADSTS.search(description or "")
    return found.group(0) if found else (error or None)


@dataclass(frozen=True)
class Grant:
    """What a token request gave: the access token and how long it lives."""

    access_token: str
    expires_in: float  # seconds from when it was asked for
    refresh_token: str | None = None  # a rotated refresh token, when the provider sent one


class TokenClient(Protocol):
    """One provider's way of getting an access token for a source (providers.py)."""

    @property
    def describe(self) -> str: ...  # "microsoft tenant T, app A", for messages

    def fetch(self) -> Grant: ...  # raises TokenRefused


@dataclass(frozen=True)
class AccessToken:
    value: str
    expires_at: datetime
    refresh_at: datetime  # from then on a new one is fetched


class AccessTokens:
    """One source's access token, fetched when missing or due (thread-safe)."""

    def __init__(self, client: TokenClient, clock: Clock) -> None:
        self.client = client
        self.clock = clock
        self._lock = threading.Lock()
        self._token: AccessToken | None = None

    @property
    def describe(self) -> str:
        return self.client.describe

    def get(self) -> tuple[AccessToken, bool]:
        """A token valid now, and whether it was fetched by this call."""
        with self._lock:
            now = self.clock.now()
            if self._token is not None and now < self._token.refresh_at:
                return self._token, False
            asked_at = now
            grant = self.client.fetch()
            life = max(0.0, grant.expires_in)
            ahead = min(REFRESH_AHEAD_SECONDS, life / 5)
            self._token = AccessToken(
                value=grant.access_token,
                expires_at=asked_at + timedelta(seconds=life),
                refresh_at=asked_at + timedelta(seconds=life - ahead),
            )
            log.info("imap_oauth_token", provider=self.describe, expires_in=round(life))
            return self._token, True

    def drop(self, token: AccessToken) -> None:
        """The server refused `token`: never offer it again."""
        with self._lock:
            if self._token == token:
                self._token = None


class OAuthConnector:
    """Opens a source's connection and logs in with its access token (see the module
    docstring). `last_login` says how the last login went, for `imap test`."""

    def __init__(
        self,
        tokens: AccessTokens,
        open_client: Callable[[ImapSourceConfig], IMAPClient],
    ) -> None:
        self.tokens = tokens
        self.open_client = open_client
        self.last_login = ""

    def __call__(self, source: ImapSourceConfig) -> IMAPClient:
        assert source.oauth2 is not None
        token, fresh = self.tokens.get()  # before connecting: a refused token costs no socket
        client = self.open_client(source)
        try:
            mechanism = choose_mechanism(client, source.oauth2.sasl)
            try:
                sasl_login(client, mechanism, source.user, token.value)
            except LoginError:
                self.tokens.drop(token)
                if fresh:
                    raise
                log.info("imap_oauth_token_refused_retrying", source=source.name)
                token, _ = self.tokens.get()
                sasl_login(client, mechanism, source.user, token.value)
        except BaseException:
            client.shutdown()
            raise
        until = token.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.last_login = (
            f"OAuth2 SASL {mechanism} with a token from {self.tokens.describe} "
            f"(valid until {until})"
        )
        return client


def choose_mechanism(client: IMAPClient, wanted: str) -> str:
    """The SASL mechanism to use: the configured one, or for `auto` OAUTHBEARER (RFC 7628)
    when offered, else XOAUTH2 (what Microsoft and Google both offer)."""
    offered = {
        c.decode().upper()[5:] for c in client.capabilities() if c.upper().startswith(b"AUTH=")
    }
    if wanted != "auto":
        mechanism = wanted.upper()
        if mechanism not in offered:
            raise LoginError(
                f"the server does not offer SASL {mechanism} (it offers "
                f"{', '.join(sorted(offered)) or 'no SASL mechanism'}); set sasl = 'auto'"
            )
        return mechanism
    for mechanism in ("OAUTHBEARER", "XOAUTH2"):
        if mechanism in offered:
            return mechanism
    raise LoginError(
        "the server offers neither XOAUTH2 nor OAUTHBEARER "
        f"(it offers {', '.join(sorted(offered)) or 'no SASL mechanism'}): it takes no OAuth2"
    )


def sasl_login(client: IMAPClient, mechanism: str, user: str, token: str) -> None:
    """AUTHENTICATE with the token; a refusal is a LoginError with the server's words and
    the error it sent in the exchange (a base64 JSON: status, scope)."""
    if mechanism == "XOAUTH2":
        first = f"user={user}\x01auth=Bearer {token}\x01\x01"
        ending = b""  # the reply to an error challenge (Google's and Microsoft's documents)
    else:
        authzid = user.replace("=", "=3D").replace(",", "=2C")
        first = f"n,a={authzid},\x01auth=Bearer {token}\x01\x01"
        ending = b"\x01"  # RFC 7628 §3.2.3: the client ends a failed exchange with %x01
    said: list[bytes] = []

    def respond(challenge: bytes) -> bytes:
        if not said:
            said.append(b"")
            return first.encode("utf-8")
        said.append(challenge)
        return ending

    try:
        client.sasl_login(mechanism, respond)
    except IMAPClientError as exc:
        detail = _challenge_text(said[1:])
        raise LoginError(f"{_words(exc)}{detail}") from exc


def _challenge_text(challenges: list[bytes]) -> str:
    for challenge in challenges:
        raw = challenge  # imaplib decodes the base64; some servers encode the JSON again
        with contextlib.suppress(binascii.Error, ValueError):
            raw = base64.b64decode(challenge, validate=True) or challenge
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        if isinstance(data, dict):
            shown = ", ".join(f"{k} {v}" for k, v in data.items())
            return f" (the server's SASL error: {shown})"
    return ""


def _words(exc: BaseException) -> str:
    text = str(exc)
    return text[2:-1] if text.startswith(("b'", 'b"')) else text

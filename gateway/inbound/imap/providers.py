"""Where an IMAP source's access token comes from: one `TokenClient` per provider, each
through the provider's own client library (OAuth has enough vendor detail that hand-written
requests would drift):

- `MicrosoftApp`: msal's ConfidentialClientApplication, client credentials (app-only) with a
  secret or a certificate.
- `GoogleServiceAccount`: google-auth's service-account credentials with domain-wide
  delegation (the JWT-bearer grant), acting as the source's user.
- `RefreshTokenGrant`: a user's refresh token (RFC 6749 §6), through google-auth's user
  credentials for Google and Authlib for any other token endpoint. A rotated refresh token is
  saved (`RefreshTokenStore`, sealed in the database) before it replaces the old one.

All three talk HTTPS through `requests`, so the standard `REQUESTS_CA_BUNDLE` and proxy
variables apply. Errors become `TokenRefused` with the provider's own words and code.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import msal
import requests
import structlog
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from google.auth.exceptions import GoogleAuthError, RefreshError, TransportError
from google.auth.transport.requests import Request as GoogleRequest
from google.oauth2 import credentials as google_user
from google.oauth2 import service_account

from gateway.config import ConfigError, ImapOAuth2Config, ImapSourceConfig
from gateway.config.imap_oauth import GOOGLE_TOKEN_URL
from gateway.inbound.imap.oauth import Grant, TokenClient, TokenRefused, error_code
from gateway.storage.sealed import SealBroken

log = structlog.get_logger("gateway.imap")

# OAuth errors that waiting does not cure: the admin must act (RFC 6749 §5.2).
PERMANENT_ERRORS = frozenset(
    {"invalid_client", "invalid_grant", "unauthorized_client", "invalid_scope", "access_denied"}
)


class RefreshTokenStore(Protocol):
    """Where a source's rotated refresh tokens are kept (gateway/storage/oauth_tokens.py)."""

    def current(self, seed: str) -> str: ...
    def save(self, seed: str, token: str) -> None: ...


def token_client(source: ImapSourceConfig, store: Callable[[], RefreshTokenStore]) -> TokenClient:
    """The token client `source`'s `[oauth2]` table describes; `store` gives the refresh
    token store, asked only by providers that use refresh tokens."""
    oauth = source.oauth2
    assert oauth is not None
    where = f"imap.sources.{source.name}.oauth2"
    if oauth.provider == "microsoft":
        return MicrosoftApp(oauth, where, source.timeout_seconds)
    if oauth.provider == "google" and oauth.service_account_file is not None:
        return GoogleServiceAccount(oauth, where, source.user)
    return RefreshTokenGrant(oauth, where, store(), source.timeout_seconds)


def _unreachable(describe: str, exc: BaseException) -> TokenRefused:
    return TokenRefused(
        f"cannot reach the token endpoint of {describe}: {exc}",
        code="unreachable",
        permanent=False,
    )


def _refused(
    describe: str, error: str | None, description: str | None, status: int | None
) -> TokenRefused:
    code = error_code(error, description)
    said = description or error or "no reason given"
    transient = error not in PERMANENT_ERRORS and (status is None or status >= 500)
    return TokenRefused(
        f"{describe} gave no access token: {said.strip()}"
        + (f" (error {error})" if error and error not in said else ""),
        code=code,
        permanent=not transient,
    )


# -- Microsoft: client credentials through msal ---------------------------------------------


class MicrosoftApp:
    """App-only access to Exchange Online: the app's own token, good for every mailbox the
    tenant's admin granted it (`IMAP.AccessAsApp` and an Exchange service principal)."""

    def __init__(self, oauth: ImapOAuth2Config, where: str, timeout: float) -> None:
        assert oauth.tenant and oauth.client_id
        self.oauth = oauth
        self.where = where
        self.timeout = timeout
        self.authority = f"{oauth.authority.rstrip('/')}/{oauth.tenant}"
        self.describe = f"microsoft tenant {oauth.tenant}, app {oauth.client_id}"
        self._app: msal.ConfidentialClientApplication | None = None
        self._credential_key = ""
        self._lock = threading.Lock()

    def fetch(self) -> Grant:
        with self._lock:
            app = self._application()
            try:
                result = app.acquire_token_for_client(scopes=self.oauth.scopes)
            except requests.RequestException as exc:
                raise _unreachable(self.describe, exc) from exc
        if "access_token" not in result:
            raise _refused(
                self.describe, result.get("error"), result.get("error_description"), None
            )
        return Grant(str(result["access_token"]), float(result.get("expires_in", 3600)))

    def _application(self) -> msal.ConfidentialClientApplication:
        credential = self._credential()
        key = hashlib.sha256(repr(credential).encode()).hexdigest()
        if self._app is not None and key == self._credential_key:
            return self._app
        # A sign-in host msal does not know (a test's, a proxy's) is taken as given: msal
        # would otherwise ask Microsoft's instance discovery about it.
        known = urlsplit(self.authority).hostname in msal.authority.WELL_KNOWN_AUTHORITY_HOSTS
        try:
            self._app = msal.ConfidentialClientApplication(
                self.oauth.client_id,
                client_credential=credential,
                authority=self.authority,
                validate_authority=known,
                instance_discovery=known,
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise _unreachable(self.describe, exc) from exc
        except ValueError as exc:  # tenant discovery failed: an unknown tenant, a bad host
            raise TokenRefused(
                f"{self.describe}: {self.authority} does not answer as a Microsoft sign-in "
                f"authority ({exc}); check tenant and authority",
                code="tenant_discovery",
                permanent=False,
            ) from exc
        self._credential_key = key
        return self._app

    def _credential(self) -> Any:
        secret = self.oauth.client_secret(self.where)
        if secret is not None:
            return secret
        assert self.oauth.certificate_file is not None
        return certificate_credential(self.oauth.certificate_file, f"{self.where}.certificate_file")


def certificate_credential(path: Path, where: str) -> dict[str, str]:
    """msal's certificate credential from one PEM file holding the key and its certificate."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror or exc}") from exc
    try:
        key = serialization.load_pem_private_key(pem, password=None)
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise ConfigError(
            f"{where}: {path} must hold the private key (unencrypted PEM) and its certificate "
            f"(PEM), as `openssl req -x509 -newkey rsa:2048 -nodes` writes them: {exc}"
        ) from exc
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {
        "private_key": key_pem.decode("ascii"),
        "thumbprint": certificate.fingerprint(hashes.SHA1()).hex(),
        "public_certificate": certificate.public_bytes(serialization.Encoding.PEM).decode(),
    }


# -- Google: a service account with domain-wide delegation -----------------------------------


class GoogleServiceAccount:
    """The service account acts as the mailbox's user (domain-wide delegation granted to its
    client id for https://mail.google.com/ in the Workspace admin console)."""

    def __init__(self, oauth: ImapOAuth2Config, where: str, user: str) -> None:
        assert oauth.service_account_file is not None
        self.oauth = oauth
        self.where = where
        self.user = user
        self.describe = f"google service account {oauth.service_account_file.name} as {user}"

    def fetch(self) -> Grant:
        path = self.oauth.service_account_file
        assert path is not None
        try:
            creds = service_account.Credentials.from_service_account_file(
                str(path), scopes=self.oauth.scopes, subject=self.user
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"{self.where}.service_account_file: {path} is not a service account's JSON "
                f"key ({exc})"
            ) from exc
        if self.oauth.token_url:
            creds = creds.with_token_uri(self.oauth.token_url)
        _google_refresh(creds, self.describe)
        return Grant(str(creds.token), _seconds_until(creds.expiry))


def _google_refresh(creds: Any, describe: str) -> None:
    try:
        creds.refresh(GoogleRequest())
    except TransportError as exc:
        raise _unreachable(describe, exc) from exc
    except RefreshError as exc:
        data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
        description = data.get("error_description") or str(exc.args[0] if exc.args else exc)
        raise _refused(describe, data.get("error"), description, 400) from exc
    except GoogleAuthError as exc:
        raise _refused(describe, None, str(exc), None) from exc


def _seconds_until(expiry: datetime | None) -> float:
    if expiry is None:
        return 3600.0
    return (expiry.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()


# -- a user's refresh token: Google's user credentials, or any token endpoint ---------------


class RefreshTokenGrant:
    """Access from a user's refresh token; a rotated one is saved before it is used."""

    def __init__(
        self, oauth: ImapOAuth2Config, where: str, store: RefreshTokenStore, timeout: float
    ) -> None:
        assert oauth.client_id
        self.oauth = oauth
        self.where = where
        self.store = store
        self.timeout = timeout
        self.google = oauth.provider == "google"
        self.token_url = oauth.token_url or (GOOGLE_TOKEN_URL if self.google else "")
        self.describe = f"{self.token_url} (client {oauth.client_id})"
        self._lock = threading.Lock()
        self._unsaved: str | None = None  # rotated but not yet saved (the database failed)

    def fetch(self) -> Grant:
        with self._lock:
            seed = self.oauth.first_refresh_token(self.where)
            try:
                current = self._unsaved or self.store.current(seed)
            except SealBroken as exc:  # another key: the admin's to fix, as a setting
                raise ConfigError(str(exc)) from exc
            grant = self._google(current) if self.google else self._endpoint(current)
            if grant.refresh_token and grant.refresh_token != current:
                self._keep(seed, grant.refresh_token)
            elif self._unsaved:
                self._keep(seed, self._unsaved)
            return grant

    def _keep(self, seed: str, token: str) -> None:
        """Save the rotated token before the old one is forgotten; if the database fails,
        hold it in memory (it is the valid one) and save it at the next fetch."""
        try:
            self.store.save(seed, token)
        except Exception as exc:
            self._unsaved = token
            log.error("imap_oauth_refresh_token_not_saved", provider=self.describe, error=str(exc))
            return
        self._unsaved = None
        log.info("imap_oauth_refresh_token_rotated", provider=self.describe)

    def _google(self, refresh_token: str) -> Grant:
        creds = google_user.Credentials(
            token=None,
            refresh_token=refresh_token,
            token_uri=self.token_url,
            client_id=self.oauth.client_id,
            client_secret=self.oauth.client_secret(self.where),
            scopes=self.oauth.scopes,
        )
        _google_refresh(creds, self.describe)
        return Grant(str(creds.token), _seconds_until(creds.expiry), creds.refresh_token)

    def _endpoint(self, refresh_token: str) -> Grant:
        secret = self.oauth.client_secret(self.where)
        session = OAuth2Session(
            client_id=self.oauth.client_id,
            client_secret=secret,
            token_endpoint_auth_method="client_secret_post" if secret else "none",
            scope=" ".join(self.oauth.scopes) or None,
            default_timeout=self.timeout,
        )
        try:
            with session:
                token = session.refresh_token(self.token_url, refresh_token=refresh_token)
        except OAuthError as exc:
            raise _refused(self.describe, exc.error, exc.description, 400) from exc
        except requests.RequestException as exc:
            raise _unreachable(self.describe, exc) from exc
        except ValueError as exc:  # not JSON: a proxy's page, a wrong URL
            raise _refused(self.describe, None, f"not an OAuth answer ({exc})", None) from exc
        if "access_token" not in token:
            raise _refused(self.describe, None, "the answer holds no access_token", None)
        return Grant(
            str(token["access_token"]),
            float(token.get("expires_in") or 3600),
            token.get("refresh_token"),
        )

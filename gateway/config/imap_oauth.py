"""`[imap.sources.NAME.oauth2]`: logging in to a hosted mailbox with OAuth2 instead of a
password (Exchange Online has refused IMAP passwords since 2022, Google Workspace since 2024).

Three providers, each through its vendor's client library:

- `microsoft`: app-only access (client credentials) through msal: `tenant`, `client_id`, and
  a client secret (`client_secret_env` / `client_secret_file`) or a certificate
  (`certificate_file`: PEM holding the private key and its certificate). The app is granted
  `IMAP.AccessAsApp` and the mailbox to it in Exchange Online.
- `google`: a service account with domain-wide delegation (`service_account_file`, the JSON
  key Google gives; it acts as the source's `user`), or an authorised user's refresh token
  (`client_id`, client secret, `refresh_token_env` / `refresh_token_file`), through
  google-auth.
- `token-endpoint`: any other provider: `token_url`, `client_id`, an optional client secret
  and a refresh token (RFC 6749 §6), through Authlib.

Secrets (client secret, certificate, service-account key, the first refresh token) come only
from the environment or files. A provider that rotates refresh tokens (Microsoft, many others)
gets each new one saved in the database, encrypted with `[gateway] secrets_key_*`, before the
old one is dropped; see gateway/inbound/imap/oauth.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.config import checks
from gateway.config.declare import ConfigError, in_folder, setting

Provider = Literal["microsoft", "google", "token-endpoint"]
Sasl = Literal["auto", "xoauth2", "oauthbearer"]

MICROSOFT_AUTHORITY = "https://login.microsoftonline.com"
MICROSOFT_SCOPE = "https://outlook.office365.com/.default"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
GOOGLE_SCOPE = "https://mail.google.com/"


@dataclass(frozen=True)
class ImapOAuth2Config:
    """How an IMAP source gets its access tokens (see the module docstring)."""

    provider: Provider = setting(
        "microsoft",
        "microsoft (app-only, msal), google (service account or refresh token, google-auth) "
        "or token-endpoint (any RFC 6749 token endpoint and a refresh token).",
        choices=("microsoft", "google", "token-endpoint"),
    )
    tenant: str | None = setting(
        None,
        "Microsoft: the directory (tenant) id or domain the app is registered in.",
        default_text="unset",
        example="cabinet.onmicrosoft.com",
        check=checks.stripped,
    )
    client_id: str | None = setting(
        None,
        "The application (client) id; not used with a Google service account.",
        default_text="unset",
        example="0f4c5d1e-9a7b-4a8e-b1c2-3d4e5f6a7b8c",
        check=checks.stripped,
    )
    client_secret_env: str | None = setting(
        None,
        "Environment variable holding the client secret.",
        default_text="unset",
        example="GATEWAY_IMAP_FACTURES_CLIENT_SECRET",
    )
    client_secret_file: Path | None = setting(
        None,
        "File holding the client secret, read at each token request.",
        resolve=in_folder,
        default_text="unset",
        example="/run/secrets/imap-factures-client-secret",
    )
    certificate_file: Path | None = setting(
        None,
        "Microsoft: PEM file with the app's certificate and its private key (instead of a secret).",
        resolve=in_folder,
        default_text="unset",
        example="/run/secrets/imap-factures.pem",
    )
    service_account_file: Path | None = setting(
        None,
        "Google: the service account's JSON key (domain-wide delegation; acts as `user`).",
        resolve=in_folder,
        default_text="unset",
        example="/run/secrets/imap-factures-sa.json",
    )
    refresh_token_env: str | None = setting(
        None,
        "Environment variable holding the first refresh token (google with a user's consent, "
        "token-endpoint); rotated ones are kept in the database.",
        default_text="unset",
        example="GATEWAY_IMAP_FACTURES_REFRESH_TOKEN",
    )
    refresh_token_file: Path | None = setting(
        None,
        "File holding the first refresh token (instead of refresh_token_env).",
        resolve=in_folder,
        default_text="unset",
        example="/run/secrets/imap-factures-refresh-token",
    )
    token_url: str | None = setting(
        None,
        "The token endpoint: required for token-endpoint; google's is used when unset.",
        default_text=f"unset ({GOOGLE_TOKEN_URL} for google)",
        example="https://id.example.net/oauth2/token",
        check=checks.stripped,
    )
    authority: str = setting(
        MICROSOFT_AUTHORITY,
        "Microsoft: the sign-in host (a national cloud's, e.g. https://login.microsoftonline.us).",
        check=checks.stripped,
    )
    scope: str | None = setting(
        None,
        "Scopes asked for, space-separated.",
        default_text=f"{MICROSOFT_SCOPE} (microsoft), {GOOGLE_SCOPE} (google), none otherwise",
        example="https://outlook.office365.com/IMAP.AccessAsUser.All offline_access",
    )
    sasl: Sasl = setting(
        "auto",
        "SASL mechanism: auto (OAUTHBEARER when the server offers it, else XOAUTH2), xoauth2 "
        "or oauthbearer.",
        choices=("auto", "xoauth2", "oauthbearer"),
    )

    @property
    def scopes(self) -> list[str]:
        if self.scope is not None:
            return self.scope.split()
        return {"microsoft": [MICROSOFT_SCOPE], "google": [GOOGLE_SCOPE]}.get(self.provider, [])

    @property
    def uses_refresh_token(self) -> bool:
        return self.refresh_token_env is not None or self.refresh_token_file is not None

    def check(self, where: str) -> None:
        """The rules tying keys together, per provider; `where` names the table."""

        def need(ok: bool, text: str) -> None:
            if not ok:
                raise ConfigError(f"{where}: {text}")

        def one_of(a: object, b: object, what: str) -> None:
            need((a is None) != (b is None), f"set exactly one of {what}")

        secret = self.client_secret_env is not None or self.client_secret_file is not None
        need(
            not (self.client_secret_env and self.client_secret_file),
            "set client_secret_env or client_secret_file, not both",
        )
        need(
            not (self.refresh_token_env and self.refresh_token_file),
            "set refresh_token_env or refresh_token_file, not both",
        )
        if self.provider == "microsoft":
            need(bool(self.tenant), "microsoft needs tenant (the directory id or domain)")
            need(bool(self.client_id), "microsoft needs client_id (the application id)")
            need(
                secret != (self.certificate_file is not None),
                "microsoft needs exactly one of a client secret (client_secret_env or "
                "client_secret_file) or certificate_file",
            )
            need(
                not self.uses_refresh_token and self.service_account_file is None,
                "microsoft here is app-only (client credentials): no refresh token or service "
                "account; for a user's refresh token use provider = 'token-endpoint'",
            )
            need(
                self.authority.startswith("https://"),
                f"authority must be an https:// address, got {self.authority!r}",
            )
        elif self.provider == "google":
            if self.service_account_file is not None:
                need(
                    not self.uses_refresh_token and not secret,
                    "google with service_account_file takes no client secret or refresh token",
                )
            else:
                need(
                    bool(self.client_id) and secret and self.uses_refresh_token,
                    "google needs service_account_file (domain-wide delegation), or client_id, "
                    "a client secret and a refresh token (refresh_token_env or "
                    "refresh_token_file)",
                )
        else:
            need(bool(self.token_url), "token-endpoint needs token_url")
            need(bool(self.client_id), "token-endpoint needs client_id")
            one_of(
                self.refresh_token_env,
                self.refresh_token_file,
                "refresh_token_env or "
                "refresh_token_file (token-endpoint renews access with a refresh token)",
            )
        if self.token_url is not None:
            need(
                self.token_url.startswith(("https://", "http://127.0.0.1", "http://localhost")),
                f"token_url must be an https:// address, got {self.token_url!r}",
            )
        need(
            self.certificate_file is None or self.provider == "microsoft",
            "certificate_file is for microsoft only",
        )

    def client_secret(self, where: str) -> str | None:
        """The client secret, read now (a rotated secret file is picked up at the next
        token request); None when none is configured."""
        return _secret(where, "client_secret", self.client_secret_env, self.client_secret_file)

    def first_refresh_token(self, where: str) -> str:
        token = _secret(where, "refresh_token", self.refresh_token_env, self.refresh_token_file)
        if token is None:
            raise ConfigError(f"{where}: no refresh token is configured")
        return token


def _secret(where: str, key: str, env: str | None, file: Path | None) -> str | None:
    if file is not None:
        try:
            value = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{where}.{key}_file: cannot read {file}: {exc.strerror or exc}"
            ) from exc
        if not value:
            raise ConfigError(f"{where}.{key}_file: {file} is empty")
        return value
    if env is None:
        return None
    value = os.environ.get(env, "").strip()
    if not value:
        raise ConfigError(
            f"{where}.{key}_env: the environment variable {env} is not set (export it before "
            "starting the gateway)"
        )
    return value

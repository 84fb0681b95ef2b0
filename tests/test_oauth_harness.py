"""The OAuth2 test harness itself: tests/oauth_provider.py as msal, google-auth and plain
requests see it, and a real Dovecot (tests/dovecot.py) that checks XOAUTH2/OAUTHBEARER
tokens against it. Gateway tests build on both; these fail when either is broken."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import google.auth.transport.requests
import msal
import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.oauth2 import service_account
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from tests.dovecot import Dovecot, running_dovecot
from tests.oauth_provider import OAuthProvider, running_oauth_provider
from tests.support import self_signed

USER = "alice@example.test"
PASSWORD = "alice-password"
OUTLOOK_SCOPE = ["https://outlook.office365.com/.default"]


@pytest.fixture
def provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OAuthProvider]:
    with running_oauth_provider(tmp_path) as provider:
        # requests (under msal and google-auth) trusts the provider's CA only through this.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(provider.ca_file))
        yield provider


@pytest.fixture
def dovecot(tmp_path: Path, provider: OAuthProvider) -> Iterator[Dovecot]:
    with running_dovecot(
        tmp_path, {USER: PASSWORD}, oauth2_introspection_url=provider.introspection_url
    ) as dovecot:
        yield dovecot


def msal_app(provider: OAuthProvider, client_id: str, credential: Any) -> Any:
    return msal.ConfidentialClientApplication(
        client_id,
        client_credential=credential,
        authority=provider.authority("tenant-a"),
        instance_discovery=False,
        validate_authority=False,
    )


def imap_login(dovecot: Dovecot, token: str, mech: str = "XOAUTH2") -> None:
    """Logs in with the token (raises LoginError when refused) and lists INBOX."""
    client = IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=10)
    try:
        if mech == "OAUTHBEARER":
            client.oauthbearer_login(USER, token)
        else:
            client.oauth2_login(USER, token)
        assert client.folder_exists("INBOX")
    except BaseException:
        client.shutdown()
        raise
    client.logout()


def app_token(provider: OAuthProvider) -> str:
    provider.register_app("app-1", secret="app-secret", mailbox=USER)
    result = msal_app(provider, "app-1", "app-secret").acquire_token_for_client(OUTLOOK_SCOPE)
    assert "access_token" in result, result
    return str(result["access_token"])


def refresh(provider: OAuthProvider, url: str, token: str, **extra: str) -> requests.Response:
    form = {"grant_type": "refresh_token", "refresh_token": token, **extra}
    return requests.post(url, data=form, timeout=10)


def test_msal_client_secret_token_logs_in_with_both_mechanisms(
    provider: OAuthProvider, dovecot: Dovecot
) -> None:
    token = app_token(provider)
    imap_login(dovecot, token, "XOAUTH2")
    imap_login(dovecot, token, "OAUTHBEARER")
    assert provider.grants == [
        {"grant_type": "client_credentials", "client_id": "app-1", "user": USER}
    ]
    assert provider.introspections == 2
    # The users' passwords still work, for PLAIN only: a password is no token.
    dovecot.client(USER).logout()
    with pytest.raises(LoginError):
        imap_login(dovecot, PASSWORD)


def test_revoked_unknown_and_other_users_tokens_are_refused(
    provider: OAuthProvider, dovecot: Dovecot
) -> None:
    token = app_token(provider)
    imap_login(dovecot, token)
    provider.revoke_access_tokens()
    for mech in ("XOAUTH2", "OAUTHBEARER"):
        with pytest.raises(LoginError):
            imap_login(dovecot, token, mech)
    with pytest.raises(LoginError):
        imap_login(dovecot, "at-never-issued")
    # A token for another mailbox does not open alice's.
    provider.register_app("app-bob", secret="s", mailbox="bob@example.test")
    other = msal_app(provider, "app-bob", "s").acquire_token_for_client(OUTLOOK_SCOPE)
    with pytest.raises(LoginError):
        imap_login(dovecot, other["access_token"])


def test_failed_xoauth2_gets_the_json_challenge(provider: OAuthProvider, dovecot: Dovecot) -> None:
    """Dovecot answers a bad token with `+ base64(JSON)` (as Gmail does); the client must
    send an empty line before the tagged NO."""
    initial = base64.b64encode(f"user={USER}\1auth=Bearer at-bogus\1\1".encode()).decode()
    with socket.create_connection((dovecot.host, dovecot.port), timeout=10) as sock:
        stream = sock.makefile("rwb")
        assert stream.readline().startswith(b"* OK")
        stream.write(f"a AUTHENTICATE XOAUTH2 {initial}\r\n".encode())
        stream.flush()
        challenge = stream.readline()
        assert challenge.startswith(b"+ "), challenge
        details = json.loads(base64.b64decode(challenge[2:].strip()))
        assert details["status"] == "401"
        assert "schemes" in details
        stream.write(b"\r\n")
        stream.flush()
        assert stream.readline().startswith(b"a NO [AUTHENTICATIONFAILED]")


def test_expired_token_is_refused(provider: OAuthProvider, dovecot: Dovecot) -> None:
    provider.token_lifetime = 1
    token = app_token(provider)
    time.sleep(1.5)
    assert requests.post(provider.introspection_url, data={"token": token}, timeout=10).json() == {
        "active": False
    }
    with pytest.raises(LoginError):
        imap_login(dovecot, token)


def test_wrong_and_rotated_secret_and_unknown_client(provider: OAuthProvider) -> None:
    provider.register_app("app-1", secret="old", mailbox=USER)
    result = msal_app(provider, "app-1", "wrong").acquire_token_for_client(OUTLOOK_SCOPE)
    assert result["error"] == "invalid_client"
    assert "AADSTS7000215" in result["error_description"]
    assert result["error_codes"] == [7000215]
    assert "access_token" in msal_app(provider, "app-1", "old").acquire_token_for_client(
        OUTLOOK_SCOPE
    )
    provider.set_client_secret("app-1", "new")
    old = msal_app(provider, "app-1", "old").acquire_token_for_client(OUTLOOK_SCOPE)
    assert old["error"] == "invalid_client"
    unknown = msal_app(provider, "nobody", "x").acquire_token_for_client(OUTLOOK_SCOPE)
    assert unknown["error"] == "invalid_client"
    assert "AADSTS700016" in unknown["error_description"]
    assert len(provider.grants) == 1


def test_refresh_tokens_rotate_and_revoke(provider: OAuthProvider, dovecot: Dovecot) -> None:
    entra_url = msal_app(provider, "native", None).authority.token_endpoint
    assert entra_url == f"{provider.https_url}/tenant-a/oauth2/v2.0/token"
    first = provider.issue_refresh_token("native", USER)
    answer = refresh(provider, entra_url, first, client_id="native")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["refresh_token"] != first
    imap_login(dovecot, body["access_token"])
    # The rotated-away token is refused, in Entra's words on the tenant endpoint ...
    stale = refresh(provider, entra_url, first, client_id="native")
    assert stale.status_code == 400
    assert stale.json()["error"] == "invalid_grant"
    assert stale.json()["error_codes"] == [70008]
    # ... and in Google's on /token, where the client may authenticate with HTTP Basic.
    provider.register_app("google-app", secret="gsecret")
    google = provider.issue_refresh_token("google-app", USER)
    ok = requests.post(
        provider.token_url,
        data={"grant_type": "refresh_token", "refresh_token": google},
        auth=("google-app", "gsecret"),
        timeout=10,
    )
    assert ok.status_code == 200, ok.text
    stale = refresh(
        provider, provider.token_url, google, client_id="google-app", client_secret="gsecret"
    )
    assert stale.json() == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }
    bad_secret = refresh(
        provider, provider.token_url, ok.json()["refresh_token"], client_id="google-app"
    )
    assert bad_secret.status_code == 401
    # Revoking the client's consent ends the current refresh token too.
    provider.revoke_refresh_tokens("native")
    revoked = refresh(provider, entra_url, body["refresh_token"], client_id="native")
    assert revoked.json()["error"] == "invalid_grant"
    # Without rotation the same refresh token keeps working.
    provider.rotate_refresh_tokens = False
    kept = provider.issue_refresh_token("native", USER)
    for _ in range(2):
        again = refresh(provider, entra_url, kept, client_id="native").json()
        assert again["refresh_token"] == kept
    assert [grant["grant_type"] for grant in provider.grants] == ["refresh_token"] * 4


def test_google_service_account_token_logs_in(
    provider: OAuthProvider, dovecot: Dovecot, tmp_path: Path
) -> None:
    email = "gateway@project.iam.gserviceaccount.com"
    key_file = provider.service_account_file(tmp_path / "sa.json", email)
    credentials = service_account.Credentials.from_service_account_file(
        str(key_file), scopes=["https://mail.google.com/"], subject=USER
    )
    credentials.refresh(google.auth.transport.requests.Request())
    assert credentials.valid
    imap_login(dovecot, credentials.token)
    assert provider.grants[-1] == {
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "client_id": email,
        "user": USER,
    }
    # A key the provider did not issue is refused.
    other = OAuthProvider(tmp_path / "other")
    try:
        forged = other.service_account_file(tmp_path / "forged.json", email)
    finally:
        other.close()
    bad = service_account.Credentials.from_service_account_file(
        str(forged), scopes=["https://mail.google.com/"], subject=USER
    ).with_token_uri(provider.token_url)
    with pytest.raises(google.auth.exceptions.RefreshError, match="invalid_grant"):
        bad.refresh(google.auth.transport.requests.Request())


def _certificate() -> tuple[str, str, str]:
    """(private key PEM, certificate PEM, SHA-1 thumbprint hex) of a self-signed app cert."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = self_signed(key, "gateway-app")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return key_pem, cert_pem, cert.fingerprint(hashes.SHA1()).hex()


@pytest.mark.parametrize("style", ["public_certificate (PS256, x5t#S256)", "thumbprint (RS256)"])
def test_msal_certificate_client_logs_in(
    provider: OAuthProvider, dovecot: Dovecot, style: str
) -> None:
    key_pem, cert_pem, sha1 = _certificate()
    provider.register_app("cert-app", certificate_pem=cert_pem.encode(), mailbox=USER)
    credential = {"private_key": key_pem}
    if style.startswith("thumbprint"):
        credential["thumbprint"] = sha1
    else:
        credential["public_certificate"] = cert_pem
    result = msal_app(provider, "cert-app", credential).acquire_token_for_client(OUTLOOK_SCOPE)
    assert "access_token" in result, result
    imap_login(dovecot, result["access_token"])
    # Another key with the same thumbprint claim fails the signature check.
    other_key, _, _ = _certificate()
    forged = msal_app(
        provider, "cert-app", {"private_key": other_key, "thumbprint": sha1}
    ).acquire_token_for_client(OUTLOOK_SCOPE)
    assert forged["error"] == "invalid_client"
    assert "AADSTS700027" in forged["error_description"]

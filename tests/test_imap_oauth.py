"""IMAP sources that log in with OAuth2: a real Dovecot whose `oauth2` passdb checks each
token against the stand-in provider (tests/oauth_provider.py), and the gateway getting its
tokens from that provider through msal, google-auth and Authlib, as in production (only the
authority / token URL and the CA bundle point here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from gateway.app import Gateway
from gateway.config import ConfigError, parse_config
from gateway.errors import GatewayError
from gateway.http.exposition import QueueCollector
from gateway.http.health import _imap_check
from gateway.inbound.imap import ImapProblem
from gateway.inbound.imap.oauth import OAuthConnector
from gateway.storage.listings.inbound import imap_folder_states
from gateway.storage.models import InboundMessage, OAuthRefreshToken
from gateway.storage.sealed import SecretBox
from tests.conftest import load, seeded_gateway, write_config
from tests.dovecot import Dovecot, running_dovecot
from tests.oauth_provider import OAuthProvider, running_oauth_provider
from tests.support import FixedClock
from tests.test_imap import USER, _count, _invoice, _sync
from tests.test_oauth_harness import _certificate

PASSWORD = "alice-password"
KEY = "k" * 8 + "-gateway-test-secrets-key-" + "0123456789"


@pytest.fixture
def provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OAuthProvider]:
    with running_oauth_provider(tmp_path) as provider:
        # The standard variable requests reads: the gateway's own code path trusts the CA.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(provider.ca_file))
        yield provider


@pytest.fixture
def dovecot(tmp_path: Path, provider: OAuthProvider) -> Iterator[Dovecot]:
    with running_dovecot(
        tmp_path / "dovecot", {USER: PASSWORD}, oauth2_introspection_url=provider.introspection_url
    ) as server:
        yield server


def _config(
    tmp_path: Path, database_url: str, dovecot: Dovecot, oauth2: dict[str, Any], **source: Any
) -> Path:
    key_file = tmp_path / "secrets-key"
    if not key_file.exists():
        key_file.write_text(KEY)
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": dovecot.port,
        "tls": "none",
        "user": USER,
        "batch_size": 5,
        "poll_seconds": 0.2,
        "oauth2": oauth2,
        **source,
    }
    return write_config(
        tmp_path,
        database_url,
        gateway={"secrets_key_file": str(key_file)},
        imap={"sources": {"box": values}},
    )


def _microsoft(tmp_path: Path, provider: OAuthProvider, **extra: Any) -> dict[str, Any]:
    secret = tmp_path / "client-secret"
    secret.write_text("app-secret")
    provider.register_app("app-1", secret="app-secret", mailbox=USER)
    return {
        "provider": "microsoft",
        "tenant": "tenant-a",
        "client_id": "app-1",
        "client_secret_file": str(secret),
        "authority": provider.https_url,
        **extra,
    }


def _endpoint(provider: OAuthProvider, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A public client with a user's refresh token in the environment."""
    monkeypatch.setenv("BOX_REFRESH_TOKEN", provider.issue_refresh_token("native-app", USER))
    return {
        "provider": "token-endpoint",
        "token_url": provider.token_url,
        "client_id": "native-app",
        "refresh_token_env": "BOX_REFRESH_TOKEN",
    }


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
    )


def _grants(provider: OAuthProvider, grant_type: str) -> list[dict[str, Any]]:
    return [g for g in provider.grants if grant_type in g["grant_type"]]


# -- Microsoft 365: app-only, through msal --------------------------------------------------


def test_microsoft_app_only_logs_in_files_and_imap_test_says_how(
    tmp_path: Path, database_url: str, clock: FixedClock, provider: OAuthProvider, dovecot: Dovecot
) -> None:
    path = _config(tmp_path, database_url, dovecot, _microsoft(tmp_path, provider))
    gw = seeded_gateway(path, clock)
    dovecot.append(USER, "INBOX", _invoice(1))

    result = _sync(gw)
    assert (result.taken, result.stored, result.settled) == (1, 1, 1)
    assert [g["client_id"] for g in _grants(provider, "client_credentials")] == ["app-1"]

    checked = _cli("imap", "test", "box", "-c", str(path))
    assert checked.returncode == 0, checked.stderr
    # Dovecot offers both; auto takes the standard one.
    assert "OAuth2 SASL OAUTHBEARER with a token from microsoft tenant tenant-a, app app-1" in (
        checked.stdout
    )
    assert "imap source box: ok" in checked.stdout


def test_xoauth2_when_configured(
    tmp_path: Path, database_url: str, clock: FixedClock, provider: OAuthProvider, dovecot: Dovecot
) -> None:
    oauth = _microsoft(tmp_path, provider, sasl="xoauth2")
    gw = seeded_gateway(_config(tmp_path, database_url, dovecot, oauth), clock)
    connector = gw.imap_connector(gw.config.imap_sources["box"])
    assert isinstance(connector, OAuthConnector)
    connector(gw.config.imap_sources["box"]).logout()
    assert connector.last_login.startswith("OAuth2 SASL XOAUTH2 ")


def test_a_token_is_reused_until_due_then_refreshed_and_a_refused_one_replaced(
    tmp_path: Path, database_url: str, clock: FixedClock, provider: OAuthProvider, dovecot: Dovecot
) -> None:
    provider.token_lifetime = 2
    gw = seeded_gateway(
        _config(tmp_path, database_url, dovecot, _microsoft(tmp_path, provider)), clock
    )
    source = gw.config.imap_sources["box"]
    connect = gw.imap_connector(source)

    connect(source).logout()
    connect(source).logout()
    assert len(_grants(provider, "client_credentials")) == 1  # the same token, not asked again

    # Due by our clock (a fifth of its life ahead of expiry): a new one before it expires.
    clock.advance(seconds=1.7)
    connect(source).logout()
    assert len(_grants(provider, "client_credentials")) == 2

    # Expired at the server while our clock says it is still good (a revoked token reads the
    # same): Dovecot refuses it, the connector drops it and logs in with a fresh one.
    time.sleep(2.2)
    connect(source).logout()
    assert len(_grants(provider, "client_credentials")) == 3
    provider.revoke_access_tokens()
    connect(source).logout()
    assert len(_grants(provider, "client_credentials")) == 4


def test_a_wrong_secret_says_the_providers_words_everywhere_and_marks_the_folder_failing(
    tmp_path: Path, database_url: str, clock: FixedClock, provider: OAuthProvider, dovecot: Dovecot
) -> None:
    path = _config(tmp_path, database_url, dovecot, _microsoft(tmp_path, provider))
    gw = seeded_gateway(path, clock)
    provider.set_client_secret("app-1", "rotated-in-the-portal")

    checked = _cli("imap", "test", "box", "-c", str(path))
    assert checked.returncode == 1
    assert "AADSTS7000215: Invalid client secret provided" in checked.stderr
    assert "microsoft tenant tenant-a, app app-1" in checked.stderr

    synced = _cli("imap", "sync", "box", "--once", "-c", str(path))
    assert synced.returncode == 1
    assert "AADSTS7000215" in synced.stderr

    for _ in range(2):  # three sessions in a row ended by the refusal: failing
        with pytest.raises(ImapProblem, match="AADSTS7000215"):
            _sync(gw)
    [row] = imap_folder_states(gw.db, gw.config.imap_folders)
    assert row.failing and row.failures == 3
    assert row.error_code == "AADSTS7000215"

    status = _cli("imap", "status", "--json", "-c", str(path))
    [shown] = json.loads(status.stdout)
    assert shown["state"].startswith("failing: 3 attempts in a row since ")
    assert shown["error_code"] == "AADSTS7000215"
    assert "Invalid client secret provided" in shown["last_error"]

    check = _imap_check(row, clock.now())
    assert not check.ok and "failing: 3 attempts" in check.detail
    assert "(AADSTS7000215)" in check.detail

    collector = QueueCollector(gw.db, clock, gw.config.imap_folders)
    families = {f.name: f for f in collector.collect()}
    [failing] = families["gateway_imap_failing"].samples
    assert failing.labels["error_code"] == "AADSTS7000215" and failing.value == 1
    assert families["gateway_imap_consecutive_failures"].samples[0].value == 3

    # The admin puts the new secret in the file: the next pass clears the failing state.
    (tmp_path / "client-secret").write_text("rotated-in-the-portal")
    dovecot.append(USER, "INBOX", _invoice(2))
    assert _sync(gw).stored == 1
    [row] = imap_folder_states(gw.db, gw.config.imap_folders)
    assert (row.failing, row.failures, row.error_code) == (False, 0, None)


def test_the_long_running_reader_backs_off_a_refused_token(
    tmp_path: Path, database_url: str, clock: FixedClock, provider: OAuthProvider, dovecot: Dovecot
) -> None:
    path = _config(tmp_path, database_url, dovecot, _microsoft(tmp_path, provider))
    gw = seeded_gateway(path, clock)
    provider.set_client_secret("app-1", "something-else")
    stop = threading.Event()
    [poller] = gw.imap_pollers(gw.config.imap_sources["box"], stop)
    reader = threading.Thread(target=poller.run, kwargs={"once": False})
    reader.start()
    time.sleep(2.0)
    stop.set()
    reader.join(10)
    assert not reader.is_alive()
    # One request, then a wait of a minute or more: no loop hammering the provider.
    assert len([r for r in provider.refusals if r["client_id"] == "app-1"]) == 1


# -- a user's refresh token: rotation, restart, revocation ----------------------------------


def test_a_rotated_refresh_token_is_sealed_and_survives_a_restart(
    tmp_path: Path,
    database_url: str,
    clock: FixedClock,
    provider: OAuthProvider,
    dovecot: Dovecot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = _config(tmp_path, database_url, dovecot, _endpoint(provider, monkeypatch))
    seed = os.environ["BOX_REFRESH_TOKEN"]
    gw = seeded_gateway(path, clock)
    dovecot.append(USER, "INBOX", _invoice(1))
    assert _sync(gw).stored == 1
    with gw.db.read() as s:
        [row] = s.execute(select(OAuthRefreshToken)).scalars().all()
    rotated = SecretBox(KEY).open(row.sealed, "imap source box")
    assert rotated.startswith("rt-") and rotated != seed
    assert rotated not in row.sealed and row.sealed.startswith("v1.")  # encrypted at rest

    # A restart: a new process knows only the configuration (the seed, now refused by the
    # provider) and the database.
    restarted = Gateway.from_config(load(path), clock)
    dovecot.append(USER, "INBOX", _invoice(2))
    assert _sync(restarted).stored == 1
    assert len(_grants(provider, "refresh_token")) == 2

    # Another node given another key cannot open it, and says which setting to fix: the
    # first sealed secret it needs (the VERP secret, for the addresses it resolves, or the
    # refresh token) stops it.
    (tmp_path / "secrets-key").write_text("another-key-of-enough-length-0123456789")
    other = Gateway.from_config(load(path), clock)
    with pytest.raises(GatewayError, match="every node needs the same key"):
        _sync(other)


def test_a_new_configured_refresh_token_wins_over_the_saved_one(
    tmp_path: Path,
    database_url: str,
    clock: FixedClock,
    provider: OAuthProvider,
    dovecot: Dovecot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = _config(tmp_path, database_url, dovecot, _endpoint(provider, monkeypatch))
    gw = seeded_gateway(path, clock)
    assert _sync(gw).taken == 0
    provider.revoke_refresh_tokens()  # the user withdrew consent ...

    failed = _cli("imap", "sync", "box", "--once", "-c", str(path))
    assert failed.returncode == 1
    assert "Token has been expired or revoked." in failed.stderr
    assert "invalid_grant" in failed.stderr

    # ... and gave it again: the admin configures the new first token.
    monkeypatch.setenv("BOX_REFRESH_TOKEN", provider.issue_refresh_token("native-app", USER))
    dovecot.append(USER, "INBOX", _invoice(1))
    assert _sync(Gateway.from_config(load(path), clock)).stored == 1


# -- Google: service account with delegation, or a user's refresh token ----------------------


def test_google_service_account_acts_as_the_mailbox(
    tmp_path: Path, database_url: str, clock: FixedClock, provider: OAuthProvider, dovecot: Dovecot
) -> None:
    key = provider.service_account_file(tmp_path / "sa.json", "gateway@cabinet.iam.test")
    oauth = {"provider": "google", "service_account_file": str(key)}
    gw = seeded_gateway(_config(tmp_path, database_url, dovecot, oauth), clock)
    dovecot.append(USER, "INBOX", _invoice(1))
    assert _sync(gw).stored == 1
    [grant] = _grants(provider, "jwt-bearer")
    assert grant["user"] == USER  # delegated to the source's user


def test_google_user_refresh_token(
    tmp_path: Path,
    database_url: str,
    clock: FixedClock,
    provider: OAuthProvider,
    dovecot: Dovecot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider.register_app("google-app", secret="google-secret")
    monkeypatch.setenv("BOX_SECRET", "google-secret")
    monkeypatch.setenv("BOX_REFRESH", provider.issue_refresh_token("google-app", USER))
    oauth = {
        "provider": "google",
        "client_id": "google-app",
        "client_secret_env": "BOX_SECRET",
        "refresh_token_env": "BOX_REFRESH",
        "token_url": provider.token_url,
    }
    gw = seeded_gateway(_config(tmp_path, database_url, dovecot, oauth), clock)
    dovecot.append(USER, "INBOX", _invoice(1))
    assert _sync(gw).stored == 1
    assert _count(gw, InboundMessage) == 1


def test_microsoft_certificate_credential(
    tmp_path: Path, database_url: str, clock: FixedClock, provider: OAuthProvider, dovecot: Dovecot
) -> None:
    key_pem, cert_pem, _ = _certificate()
    pem = tmp_path / "app.pem"
    pem.write_text(key_pem + cert_pem)  # one file: the key and its certificate
    provider.register_app("cert-app", certificate_pem=cert_pem.encode(), mailbox=USER)
    oauth = {
        "provider": "microsoft",
        "tenant": "tenant-a",
        "client_id": "cert-app",
        "certificate_file": str(pem),
        "authority": provider.https_url,
    }
    gw = seeded_gateway(_config(tmp_path, database_url, dovecot, oauth), clock)
    dovecot.append(USER, "INBOX", _invoice(1))
    assert _sync(gw).stored == 1


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("oauth2", "gateway", "says"),
    [
        (
            {"provider": "microsoft", "client_id": "a", "client_secret_env": "S"},
            {},
            "imap.sources.box.oauth2: microsoft needs tenant",
        ),
        (
            {"provider": "microsoft", "tenant": "t", "client_id": "a"},
            {},
            "microsoft needs exactly one of a client secret",
        ),
        (
            {"provider": "token-endpoint", "client_id": "a", "refresh_token_env": "R"},
            {},
            "token-endpoint needs token_url",
        ),
        (
            {
                "provider": "token-endpoint",
                "client_id": "a",
                "token_url": "https://id.example.net/token",
                "refresh_token_env": "R",
            },
            {},
            "set gateway.secrets_key_env or gateway.secrets_key_file",
        ),
        (
            {"provider": "google", "client_id": "a"},
            {},
            "google needs service_account_file",
        ),
    ],
)
def test_configuration_errors_name_the_key(
    tmp_path: Path, database_url: str, oauth2: dict[str, Any], gateway: dict[str, Any], says: str
) -> None:
    source = {"host": "imap.example.net", "user": USER, "oauth2": oauth2}
    path = write_config(tmp_path, database_url, imap={"sources": {"box": source}}, **gateway)
    with pytest.raises(ConfigError, match=says):
        load(path)


def test_a_password_and_oauth2_together_are_refused(tmp_path: Path, database_url: str) -> None:
    oauth2 = {"provider": "microsoft", "tenant": "t", "client_id": "a", "client_secret_env": "S"}
    source = {"host": "imap.example.net", "user": USER, "password_env": "P", "oauth2": oauth2}
    path = write_config(tmp_path, database_url, imap={"sources": {"box": source}})
    with pytest.raises(ConfigError, match="found password_env and an"):
        load(path)


def test_metrics_text_names_the_failing_folder(
    tmp_path: Path,
    database_url: str,
    clock: FixedClock,
    provider: OAuthProvider,
    dovecot: Dovecot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The exposition format as Prometheus scrapes it, with the error code as a label."""
    monkeypatch.setenv("BOX_REFRESH_TOKEN", provider.issue_refresh_token("native-app", USER))
    provider.revoke_refresh_tokens()
    oauth = {
        "provider": "token-endpoint",
        "token_url": provider.token_url,
        "client_id": "native-app",
        "refresh_token_env": "BOX_REFRESH_TOKEN",
    }
    gw = seeded_gateway(_config(tmp_path, database_url, dovecot, oauth), clock)
    for _ in range(3):
        with pytest.raises(ImapProblem, match="Token has been expired or revoked"):
            _sync(gw)
    registry = CollectorRegistry()
    registry.register(QueueCollector(gw.db, clock, gw.config.imap_folders))
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    [sample] = families["gateway_imap_failing"].samples
    assert sample.labels == {"source": "box", "folder": "INBOX", "error_code": "invalid_grant"}
    assert sample.value == 1


def test_the_readmes_oauth2_example_is_a_valid_configuration(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### OAuth2: Microsoft 365 and Google Workspace", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    data = tomllib.loads(example)
    data["gateway"]["domains"] = ["welyb.fr"]
    config = parse_config(data, base=tmp_path)
    assert {s.oauth2.provider for s in config.imap_sources.values() if s.oauth2} == {
        "microsoft",
        "google",
        "token-endpoint",
    }

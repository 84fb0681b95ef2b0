"""A stand-in OAuth2 identity provider for the tests: Microsoft Entra, Google and generic.

    with running_oauth_provider(tmp_path) as provider:
        provider.register_app("app-1", secret="s3cret", mailbox="alice@example.test")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(provider.ca_file))
        app = msal.ConfidentialClientApplication(
            "app-1", client_credential="s3cret", authority=provider.authority("tenant-a"),
            instance_discovery=False, validate_authority=False)

One threaded HTTP server holds the state (apps, refresh and access tokens) and answers on
two loopback ports: HTTPS for the clients (msal, google-auth, requests), with a CA made at
start (`ca_file`), and plain HTTP for Dovecot's token introspection (`introspection_url`),
so Dovecot needs no CA. Access tokens are opaque random strings, checked only by
introspection (RFC 7662). Errors have the shapes and texts Entra and Google send, so code
that tells "secret wrong" from "consent revoked" can be tested against them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import ipaddress
import json
import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socket import socket
from typing import Any
from urllib.parse import parse_qsl

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# Entra's texts by AADSTS code (cut where theirs go on with trace and correlation ids).
AADSTS = {
    7000215: "Invalid client secret provided. Ensure the secret being sent in the request is "
    "the client secret value, not the client secret ID, for a secret added to app '{app}'.",
    70008: "The provided authorization code or refresh token has expired due to inactivity. "
    "Send a new interactive authorization request for this user and resource.",
    700016: "Application with identifier '{app}' was not found in the directory. This can "
    "happen if the application has not been installed by the administrator of the tenant or "
    "consented to by any user in the tenant.",
    700027: "The certificate with identifier used to sign the client assertion is not "
    "registered on application, or the client assertion failed signature validation.",
    7000218: "The request body must contain the following parameter: 'client_assertion' or "
    "'client_secret'.",
}
GOOGLE_BAD_REFRESH = "Token has been expired or revoked."


class OAuthError(Exception):
    """A refusal, answered as `{"error": ..., "error_description": ...}`."""

    @classmethod
    def entra(cls, status: int, error: str, code: int, app: str = "") -> OAuthError:
        return cls(status, error, f"AADSTS{code}: " + AADSTS[code].format(app=app), code)

    def __init__(self, status: int, error: str, description: str, code: int | None = None):
        super().__init__(description)
        self.status = status
        self.body: dict[str, Any] = {"error": error, "error_description": description}
        if code is not None:
            self.body["error_codes"] = [code]


@dataclass
class _App:
    client_id: str
    secret: str | None = None
    public_key: PublicKeyTypes | None = None
    thumbprints: tuple[str, str] = ("", "")  # base64url (SHA-1, SHA-256), no padding
    mailbox: str | None = None


@dataclass
class _Access:
    user: str | None
    client_id: str
    expires_at: float


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _private_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """(ca, server cert, server key) PEM files: a CA and a cert for 127.0.0.1 and localhost,
    with the extensions a strict verifier (Python 3.13's VERIFY_X509_STRICT) wants."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway-test OAuth CA")])
    ca_public = ca_key.public_key()

    def builder(subject: x509.Name, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
        )

    ca = (
        builder(ca_name, ca_public)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_public), False)
        .sign(ca_key, hashes.SHA256())
    )
    san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = (
        builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), key.public_key())
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_private_pem(key))
    return paths


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    provider: OAuthProvider
    tls: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs in the request's thread, not in accept(): a client that
        # connects and stalls must not block everyone else.
        if self.tls is not None:
            assert isinstance(request, socket)
            request.settimeout(10)
            request = self.tls.wrap_socket(request, server_side=True)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up or failed the handshake: nothing for the test to see


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            self._send(200, self.server.provider.openid_configuration(parts[0]))
        else:
            self._send(404, {"error": "not_found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
        path = self.path.split("?")[0].strip("/")
        provider = self.server.provider
        try:
            if path == "introspect":
                self._send(200, provider.introspect(form.get("token", "")))
                return
            basic = self.headers.get("Authorization", "")
            if basic.lower().startswith("basic "):
                with contextlib.suppress(ValueError, binascii.Error):
                    user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
                    form.setdefault("client_id", user)
                    form.setdefault("client_secret", password)
            parts = path.split("/")
            if path == "token":
                self._send(200, provider.token(form, endpoint=provider.token_url, entra=False))
            elif len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
                endpoint = provider.tenant_token_url(parts[0])
                self._send(200, provider.token(form, endpoint=endpoint, entra=True))
            else:
                self._send(404, {"error": "not_found"})
        except OAuthError as exc:
            with provider._lock:
                provider.refusals.append(
                    {"client_id": form.get("client_id"), "error": exc.body.get("error")}
                )
            self._send(exc.status, exc.body)


class OAuthProvider:
    """The provider's state and its two listening servers; see the module docstring."""

    def __init__(self, base: Path, *, host: str = "127.0.0.1") -> None:
        self.root = Path(base) / "oauth-provider"
        self.ca_file, cert_file, key_file = _make_certificates(self.root)
        self.token_lifetime = 3600
        self.rotate_refresh_tokens = True
        self.grants: list[dict[str, Any]] = []
        self.refusals: list[dict[str, Any]] = []  # one per token request answered with an error
        self.introspections = 0
        self._apps: dict[str, _App] = {}
        self._refresh: dict[str, tuple[str, str]] = {}  # token: (client_id, user)
        self._access: dict[str, _Access] = {}
        self._service_accounts: dict[str, PublicKeyTypes] = {}  # client_email: its key
        self._lock = threading.Lock()
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert_file, key_file)
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        for context in (tls, None):
            server = _Server((host, 0), _Handler)
            server.provider = self
            server.tls = context
            self._servers.append(server)
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        self.https_url = f"https://{host}:{self._servers[0].server_address[1]}"
        self.http_url = f"http://{host}:{self._servers[1].server_address[1]}"
        self.introspection_url = self.http_url + "/introspect"
        self.token_url = self.https_url + "/token"

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(5)
        self._servers.clear()

    def __enter__(self) -> OAuthProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- set-up by tests ------------------------------------------------------------------

    def authority(self, tenant: str) -> str:
        return f"{self.https_url}/{tenant}"

    def tenant_token_url(self, tenant: str) -> str:
        return f"{self.https_url}/{tenant}/oauth2/v2.0/token"

    def register_app(
        self,
        client_id: str,
        *,
        secret: str | None = None,
        certificate_pem: bytes | None = None,
        mailbox: str | None = None,
    ) -> None:
        app = _App(client_id, secret=secret, mailbox=mailbox)
        if certificate_pem is not None:
            cert = x509.load_pem_x509_certificate(certificate_pem)
            app.public_key = cert.public_key()
            app.thumbprints = (
                _b64url(cert.fingerprint(hashes.SHA1())),  # x5t is SHA-1
                _b64url(cert.fingerprint(hashes.SHA256())),
            )
        with self._lock:
            self._apps[client_id] = app

    def set_client_secret(self, client_id: str, secret: str) -> None:
        with self._lock:
            self._apps[client_id].secret = secret

    def issue_refresh_token(self, client_id: str, user: str) -> str:
        """A refresh token as after the user consented; an unknown client becomes a public
        client (no secret), as a native app's registration is."""
        token = "rt-" + secrets.token_urlsafe(32)
        with self._lock:
            self._apps.setdefault(client_id, _App(client_id))
            self._refresh[token] = (client_id, user)
        return token

    def service_account_file(self, path: Path, client_email: str) -> Path:
        """A Google service-account key file, its public half kept to check assertions."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        info = {
            "type": "service_account",
            "project_id": "gateway-test",
            "private_key_id": secrets.token_hex(20),
            "private_key": _private_pem(key).decode(),
            "client_email": client_email,
            "client_id": str(secrets.randbelow(10**20)),
            "auth_uri": self.https_url + "/auth",
            "token_uri": self.token_url,
            "auth_provider_x509_cert_url": self.https_url + "/certs",
            "universe_domain": "googleapis.com",
        }
        Path(path).write_text(json.dumps(info, indent=2), encoding="utf-8")
        with self._lock:
            self._service_accounts[client_email] = key.public_key()
        return Path(path)

    def revoke_refresh_tokens(self, client_id: str | None = None) -> None:
        with self._lock:
            for token in [t for t, (c, _) in self._refresh.items() if client_id in (None, c)]:
                del self._refresh[token]

    def revoke_access_tokens(self) -> None:
        with self._lock:
            self._access.clear()

    # -- protocol ------------------------------------------------------------------------

    def openid_configuration(self, tenant: str) -> dict[str, Any]:
        """What Entra's v2.0 discovery document holds; msal reads authorization_endpoint
        and token_endpoint (required), device_authorization_endpoint and issuer."""
        base = f"{self.https_url}/{tenant}"
        return {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": self.tenant_token_url(tenant),
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "userinfo_endpoint": f"{self.https_url}/oidc/userinfo",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        }

    def introspect(self, token: str) -> dict[str, Any]:
        with self._lock:
            self.introspections += 1
            access = self._access.get(token)
            if access is None or access.expires_at <= time.time():
                return {"active": False}
            return {
                "active": True,
                "username": access.user,  # None (null) for an app token without a mailbox
                "client_id": access.client_id,
                "token_type": "Bearer",
                "exp": int(access.expires_at),
            }

    def token(self, form: dict[str, str], *, endpoint: str, entra: bool) -> dict[str, Any]:
        grant_type = form.get("grant_type", "")
        user: str | None
        with self._lock:
            if grant_type == JWT_BEARER and not entra:
                client_id, user = self._service_account(form.get("assertion", ""), endpoint)
            elif grant_type == "client_credentials":
                app = self._client(form, endpoint, entra)
                if app.secret is None and app.public_key is None:  # a public client
                    raise self._invalid_client(app.client_id, entra, unknown=True)
                client_id, user = app.client_id, app.mailbox
            elif grant_type == "refresh_token":
                app = self._client(form, endpoint, entra)
                client_id, user = app.client_id, self._use_refresh(form, app, entra)
            else:
                raise OAuthError(400, "unsupported_grant_type", repr(grant_type))
            answer = self._new_access(client_id, user, form.get("scope", ""))
            if grant_type == "refresh_token":
                old = form["refresh_token"]
                if self.rotate_refresh_tokens:
                    del self._refresh[old]
                    old = "rt-" + secrets.token_urlsafe(32)
                    self._refresh[old] = (client_id, user or "")
                answer["refresh_token"] = old
            self.grants.append({"grant_type": grant_type, "client_id": client_id, "user": user})
            return answer

    def _new_access(self, client_id: str, user: str | None, scope: str) -> dict[str, Any]:
        token = "at-" + secrets.token_urlsafe(32)
        lifetime = self.token_lifetime
        self._access[token] = _Access(user, client_id, time.time() + lifetime)
        return {
            "token_type": "Bearer",
            "scope": scope,
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }

    def _invalid_client(self, client_id: str, entra: bool, *, unknown: bool) -> OAuthError:
        if not entra:
            # Google's answers for an unknown client and for a wrong secret.
            text = "The OAuth client was not found." if unknown else "Unauthorized"
            return OAuthError(401, "invalid_client", text)
        if unknown:
            return OAuthError.entra(400, "invalid_client", 700016, client_id)
        return OAuthError.entra(401, "invalid_client", 7000215, client_id)

    def _client(self, form: dict[str, str], endpoint: str, entra: bool) -> _App:
        """The calling app, after checking its secret or its signed assertion."""
        assertion = form.get("client_assertion")
        client_id = form.get("client_id", "")
        if assertion and form.get("client_assertion_type") == CLIENT_ASSERTION_TYPE:
            with contextlib.suppress(jwt.PyJWTError):
                client_id = client_id or jwt.decode(
                    assertion, options={"verify_signature": False}
                ).get("iss", "")
        app = self._apps.get(client_id)
        if app is None:
            raise self._invalid_client(client_id, entra, unknown=True)
        if assertion:
            self._check_assertion(app, assertion, endpoint)
        elif app.secret is not None and form.get("client_secret") != app.secret:
            raise self._invalid_client(client_id, entra, unknown=False)
        elif app.secret is None and app.public_key is not None:
            raise OAuthError.entra(401, "invalid_client", 7000218)
        return app

    def _check_assertion(self, app: _App, assertion: str, endpoint: str) -> None:
        refused = OAuthError.entra(401, "invalid_client", 700027)
        if app.public_key is None:
            raise refused
        try:
            header = jwt.get_unverified_header(assertion)
            sha1, sha256 = app.thumbprints
            if header.get("x5t#S256", "").rstrip("=") != sha256 and (
                header.get("x5t", "").rstrip("=") != sha1
            ):
                raise refused
            jwt.decode(
                assertion,
                app.public_key,  # type: ignore[arg-type]
                algorithms=["RS256", "PS256"],
                audience=endpoint,
                issuer=app.client_id,
                options={"require": ["exp", "aud", "iss"]},
            )
        except jwt.PyJWTError:
            raise refused from None

    def _use_refresh(self, form: dict[str, str], app: _App, entra: bool) -> str:
        held = self._refresh.get(form.get("refresh_token", ""))
        if held is None or held[0] != app.client_id:
            if entra:
                raise OAuthError.entra(400, "invalid_grant", 70008)
            raise OAuthError(400, "invalid_grant", GOOGLE_BAD_REFRESH)
        return held[1]

    def _service_account(self, assertion: str, endpoint: str) -> tuple[str, str]:
        """(client_email, delegated user) from a service account's signed JWT."""
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
            email = str(claims.get("iss", ""))
            key = self._service_accounts.get(email)
            if key is None:
                raise OAuthError(400, "invalid_grant", "Invalid grant: account not found")
            claims = jwt.decode(
                assertion,
                key,  # type: ignore[arg-type]
                algorithms=["RS256"],
                # google-auth signs for Google's own token URL whatever the key file says.
                audience=[endpoint, GOOGLE_TOKEN_URL],
                options={"require": ["exp", "iat", "aud", "iss"]},
            )
        except jwt.PyJWTError:
            raise OAuthError(400, "invalid_grant", "Invalid JWT Signature.") from None
        return email, str(claims.get("sub") or email)


@contextlib.contextmanager
def running_oauth_provider(tmp_path: Path) -> Iterator[OAuthProvider]:
    """A started provider for one test, closed afterwards even if the test fails."""
    provider = OAuthProvider(tmp_path)
    try:
        yield provider
    finally:
        provider.close()

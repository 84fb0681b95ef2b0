"""Spam scoring by rspamd, over its HTTP protocol (`POST /checkv2`).

    scorer = Rspamd("http://127.0.0.1:11333", timeout=30.0)
    verdict = scorer.score(raw, SpamEnvelope("203.0.113.5", "mx.example", "a@example", ("b@x",)))
    if is_spam(verdict, DEFAULT_QUARANTINE_ACTIONS, None): ...

The client is synchronous: the filing worker that calls it runs in worker threads. Every way
of not getting a verdict (refused, timed out, an HTTP error status, a reply that is not
rspamd's JSON) raises `ScannerUnavailable("rspamd", …)`; an error never reads as "not spam".

HTTP is the standard library's `http.client`: one POST and one bounded read need nothing
more, and no dependency of the gateway brings an HTTP client in (httpx is not installed).
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import time
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard
from urllib.parse import urlsplit

from gateway.inbound.trust.scanning import ScannerUnavailable

SCANNER = "rspamd"
# A verdict is a few KB of JSON (every symbol with its options); anything far larger is not
# rspamd's reply, and is not read into memory.
MAX_REPLY_BYTES = 1024 * 1024
_CHUNK = 64 * 1024

DEFAULT_QUARANTINE_ACTIONS: frozenset[str] = frozenset(
    {"reject", "discard", "quarantine", "rewrite subject", "add header"}
)
"""The actions that mean "spam" to us.

rspamd picks "add header" from its first spam threshold (6 by default), "rewrite subject"
and "reject" above; "discard" and "quarantine" only come from rules that force them. All
say rspamd would not deliver the message as is. Left out: "no action" and "greylist"
(clean or nearly), and "soft reject" — greylisting or a rate limit asking the sender to
come back later, a statement about the delivery rather than the content, which our 250
has already answered.
"""


@dataclass(frozen=True)
class SpamEnvelope:
    """What rspamd is told about the SMTP transaction besides the message itself."""

    client_address: str | None
    helo: str | None
    mail_from: str  # "" for the null reverse-path
    recipients: tuple[str, ...]
    queue_id: str | None = None
    # The client's name as reverse DNS confirmed it. None sends no Hostname: rspamd then
    # looks the address up itself (RDNS_NONE when it has no name).
    client_hostname: str | None = None


@dataclass(frozen=True)
class SpamVerdict:
    """rspamd's answer: its action, the score against its reject threshold, the symbols."""

    action: str
    score: float
    required_score: float
    symbols: tuple[tuple[str, float], ...]  # by descending absolute score, then name

    def summary(self, limit: int = 8) -> str:
        """One line for a quarantine reason, e.g. "reject, score 15.0/15.0: GTUBE(0.0)"."""
        shown = " ".join(f"{name}({_points(score)})" for name, score in self.symbols[:limit])
        more = " …" if len(self.symbols) > limit else ""
        head = f"{self.action}, score {self.score:.1f}/{self.required_score:.1f}"
        return f"{head}: {shown}{more}" if shown else head


def _points(score: float) -> str:
    """At least one decimal, at most two: 0.0, 0.25, -2.0."""
    text = f"{score:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


class SpamScorer(Protocol):
    def score(self, raw: bytes, envelope: SpamEnvelope) -> SpamVerdict: ...

    def ping(self) -> None:
        """Returns when the scorer answers; raises ScannerUnavailable when it does not."""
        ...


def is_spam(
    verdict: SpamVerdict, quarantine_actions: frozenset[str], score_threshold: float | None
) -> bool:
    """Spam when rspamd's action is one of `quarantine_actions` (see
    DEFAULT_QUARANTINE_ACTIONS), or when the score reaches `score_threshold` if one is set."""
    if verdict.action in quarantine_actions:
        return True
    return score_threshold is not None and verdict.score >= score_threshold


class Rspamd:
    """A client of one rspamd normal worker (or controller, or proxy), e.g.
    "http://127.0.0.1:11333". `timeout` bounds the connect and each wait for the reply;
    `password` is sent as rspamd's `Password` header (the controller asks for it);
    `settings_id` as `Settings-ID`, to pick a settings profile rspamd has for us."""

    def __init__(
        self,
        url: str,
        timeout: float = 30.0,
        password: str | None = None,
        *,
        settings_id: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"rspamd URL must be http://host[:port]: {url!r}")
        if timeout <= 0 or not math.isfinite(timeout):
            raise ValueError(f"rspamd timeout must be positive: {timeout!r}")
        self.url = url
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._base = parts.path.rstrip("/")
        self._password = password
        self._settings_id = settings_id

    def score(self, raw: bytes, envelope: SpamEnvelope) -> SpamVerdict:
        return verdict_of(self.check(raw, envelope))

    def check(self, raw: bytes, envelope: SpamEnvelope) -> dict[str, Any]:
        """rspamd's whole /checkv2 reply (symbols with their options, messages, milter
        headers): what `score` reads its verdict from."""
        headers: list[tuple[str, str]] = []
        if envelope.client_address:
            headers.append(("IP", envelope.client_address))
        if envelope.helo:
            headers.append(("Helo", envelope.helo))
        if envelope.client_hostname:
            headers.append(("Hostname", envelope.client_hostname))
        headers.append(("From", envelope.mail_from or "<>"))
        headers.extend(("Rcpt", recipient) for recipient in envelope.recipients)
        if envelope.queue_id:
            headers.append(("Queue-Id", envelope.queue_id))
        if self._settings_id:
            headers.append(("Settings-ID", self._settings_id))
        status, body = self._request("POST", "/checkv2", headers, raw)
        if status != 200:
            raise ScannerUnavailable(SCANNER, f"HTTP {status} from {self.url}: {_excerpt(body)}")
        return load_reply(body)

    def ping(self) -> None:
        status, body = self._request("GET", "/ping", [], None)
        if status != 200 or not body.strip().startswith(b"pong"):
            raise ScannerUnavailable(
                SCANNER, f"{self.url}/ping answered HTTP {status}: {_excerpt(body)}"
            )

    def _request(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> tuple[int, bytes]:
        deadline = time.monotonic() + self.timeout
        connection_class = (
            http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        )
        connection = connection_class(self._host, self._port, timeout=self.timeout)
        try:
            connection.putrequest(method, self._base + path, skip_accept_encoding=True)
            if self._password:
                connection.putheader("Password", _header_value(self._password))
            for name, value in headers:
                connection.putheader(name, _header_value(value))
            connection.putheader("Content-Length", str(len(body or b"")))
            connection.endheaders(body)
            _wait_at_most(connection, deadline)
            response = connection.getresponse()
            return response.status, _read_bounded(connection, response, deadline)
        except (OSError, http.client.HTTPException) as exc:
            # Timeouts (TimeoutError), refusals and resets are OSErrors; a reply that is not
            # HTTP is an HTTPException.
            raise ScannerUnavailable(
                SCANNER, f"{method} {self.url}{path}: {_describe(exc)}"
            ) from exc
        finally:
            connection.close()


def load_reply(body: bytes) -> dict[str, Any]:
    """rspamd's /checkv2 JSON object; ScannerUnavailable when the body is not that."""
    try:
        reply = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ScannerUnavailable(SCANNER, f"reply is not JSON: {_excerpt(body)}") from exc
    if not isinstance(reply, dict):
        raise ScannerUnavailable(SCANNER, f"reply is not a JSON object: {_excerpt(body)}")
    if "error" in reply:
        raise ScannerUnavailable(SCANNER, f"rspamd reports an error: {reply['error']!r:.200}")
    return reply


def verdict_of(reply: dict[str, Any]) -> SpamVerdict:
    """The verdict in a /checkv2 reply; ScannerUnavailable when a part of it is missing."""
    action = reply.get("action")
    if not isinstance(action, str) or not action:
        raise ScannerUnavailable(SCANNER, f"reply has no action: {_shorten(reply)}")
    score = _number(reply, "score")
    required = _number(reply, "required_score")
    raw_symbols = reply.get("symbols", {})
    if not isinstance(raw_symbols, dict):
        raise ScannerUnavailable(SCANNER, f"reply's symbols are not an object: {_shorten(reply)}")
    symbols = []
    for name, detail in raw_symbols.items():
        symbol_score = _number(detail, "score") if isinstance(detail, dict) else None
        if symbol_score is None:
            raise ScannerUnavailable(SCANNER, f"symbol {name!r:.100} is not an object")
        symbols.append((str(name), symbol_score))
    symbols.sort(key=lambda item: (-abs(item[1]), item[0]))
    return SpamVerdict(action, score, required, tuple(symbols))


def _number(reply: dict[str, Any], key: str) -> float:
    value = reply.get(key)
    if not _is_number(value):
        raise ScannerUnavailable(SCANNER, f"no number for {key}: {_shorten(reply)}")
    return float(value)


def _is_number(value: object) -> TypeGuard[float]:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _header_value(value: str) -> bytes:
    # Envelope values come from SMTP, which has already refused line breaks; drop any that
    # got through rather than let them end the header. UTF-8 for SMTPUTF8 addresses.
    return value.replace("\r", "").replace("\n", "").replace("\0", "").encode("utf-8")


def _wait_at_most(connection: http.client.HTTPConnection, deadline: float) -> None:
    """Each later read waits no longer than what is left of the request's time."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("timed out")
    if connection.sock is not None:
        connection.sock.settimeout(remaining)


def _read_bounded(
    connection: http.client.HTTPConnection, response: http.client.HTTPResponse, deadline: float
) -> bytes:
    length = response.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > MAX_REPLY_BYTES:
        raise http.client.HTTPException(f"reply of {length} bytes is over {MAX_REPLY_BYTES}")
    chunks: list[bytes] = []
    size = 0
    while True:
        _wait_at_most(connection, deadline)
        # read1: one receive each, so a peer trickling bytes cannot stretch a read past the
        # deadline
        chunk = response.read1(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            raise http.client.HTTPException(f"reply is over {MAX_REPLY_BYTES} bytes")
        chunks.append(chunk)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _shorten(reply: dict[str, Any]) -> str:
    return _excerpt(json.dumps(reply).encode())


def _excerpt(body: bytes, limit: int = 200) -> str:
    text = body[:limit].decode("utf-8", "replace").strip()
    return repr(text + ("…" if len(body) > limit else ""))

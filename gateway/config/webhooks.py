"""`[webhooks.NAME]`: where events are pushed (issue 13), and which addresses a webhook may
never reach.

A webhook URL is the platform's; the gateway sits inside the firm's network, so a URL that
points back at the gateway's host or its private network (SSRF) is refused unless the admin
says `allow_private = true`: here, at start, when the host is written as an IP address; and
by the dispatcher (gateway/outbound/webhooks.py) at each send for a host name, after
resolving it, so that a name re-pointed later (DNS rebinding) is caught too.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gateway.config.declare import ConfigError, Invalid, in_folder, required, setting

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# The event types (gateway/storage/events.py TYPES: config sits below storage, so the list
# is repeated here, and tests/test_webhooks.py checks both say the same).
EVENT_TYPES = (
    "document.filed",
    "document.validated",
    "delivery.failed",
    "delivery.bounced",
    "delivery.skipped",
    "bot_mail.received",
    "message.quarantined",
    "message.rejected",
)
MIN_SECRET_LENGTH = 24


def address_refusal(address: str) -> str | None:
    """Why a webhook may not reach `address` (an IP address), or None: loopback, private,
    link-local, shared, reserved, multicast, unspecified — IPv4 and IPv6, an IPv4-mapped or
    NAT64 IPv6 address judged by the IPv4 address inside."""
    ip: IpAddress = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is None and ip in ipaddress.IPv6Network("64:ff9b::/96"):
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None:
            return address_refusal(str(inner))
    for kind, is_kind in (
        ("loopback", ip.is_loopback),
        ("unspecified", ip.is_unspecified),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("not globally routable", not ip.is_global),
    ):
        if is_kind:
            return f"{address} is a {kind} address"
    return None


def _url(value: str) -> str:
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(
            f"an http:// or https:// URL with a host, e.g. https://ged.example/hooks; got {value!r}"
        )
    if parts.username or parts.password:
        raise Invalid("no user or password in the URL: the requests are signed with the secret")
    return value


def _types(value: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    unknown = sorted(set(value) - set(EVENT_TYPES))
    if unknown:
        raise Invalid(
            f"unknown event type {', '.join(unknown)}; the types: {', '.join(EVENT_TYPES)}"
        )
    return tuple(value)


@dataclass(frozen=True)
class WebhookConfig:
    """A platform endpoint that receives events as signed POSTs (Standard Webhooks)."""

    name: str
    url: str = required(
        "Where events are POSTed (http or https).",
        missing="give the URL events are POSTed to",
        example="https://ged.example/hooks/gateway",
        check=_url,
    )
    secret_env: str | None = setting(
        None,
        "Environment variable holding the signing secret (24 characters or more; a "
        "`whsec_` base64 secret is used decoded); set this or secret_file.",
        default_text="unset",
        example="GATEWAY_WEBHOOK_GED_SECRET",
    )
    secret_file: Path | None = setting(
        None,
        "File holding the signing secret, read at start.",
        resolve=in_folder,
        default_text="unset",
        example="/run/secrets/webhook-ged",
    )
    cabinet: str | None = setting(
        None,
        "Only this cabinet's events (its slug); unset: every cabinet's, and those of no cabinet.",
        default_text="unset",
        example="aecconseil",
    )
    events: tuple[str, ...] = setting(
        (), 'The event types sent, e.g. ["document.validated"]; empty: every type.', check=_types
    )
    allow_private: bool = setting(
        False,
        "Allow a URL reaching loopback, private or link-local addresses (a receiver on the "
        "gateway's own network); refused otherwise, checked again at each send.",
    )
    timeout_seconds: float = setting(
        10.0, "Time allowed for connecting and for the answer.", low=1, high=120
    )
    retry_min_seconds: int = setting(
        5, "First wait after a failed send, doubling at each attempt.", low=1, high=3600
    )
    retry_max_seconds: int = setting(3600, "Longest wait between two attempts.", low=1, high=86400)
    lifetime_seconds: int = setting(
        172800,
        "Given up (failed, shown by `gateway webhooks status`) this long after the event.",
        low=60,
        high=30 * 86400,
    )

    def wants(self, event_type: str) -> bool:
        return not self.events or event_type in self.events

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    def check(self) -> None:
        """What can be checked at start: one secret source, and a literal address allowed."""
        where = f"webhooks.{self.name}"
        if (self.secret_env is None) == (self.secret_file is None):
            raise ConfigError(
                f"{where}: set exactly one of secret_env (an environment variable holding the "
                "signing secret) or secret_file (a file holding it); the secret itself never "
                "goes in this file"
            )
        if self.retry_max_seconds < self.retry_min_seconds:
            raise ConfigError(f"{where}.retry_max_seconds: must be at least retry_min_seconds")
        if not self.allow_private:
            try:
                refusal = address_refusal(self.host.strip("[]"))
            except ValueError:
                refusal = None  # a name: checked at each send, once resolved
            if refusal is not None:
                raise ConfigError(
                    f"{where}.url: {refusal}; a webhook may not reach the gateway's own "
                    "network unless allow_private = true"
                )

    def secret(self) -> bytes:
        """The signing key, read now; a ConfigError naming the setting when it is missing."""
        if self.secret_file is not None:
            try:
                text = self.secret_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"webhooks.{self.name}.secret_file: cannot read {self.secret_file}: "
                    f"{exc.strerror or exc}"
                ) from exc
            where = f"webhooks.{self.name}.secret_file"
        else:
            assert self.secret_env is not None
            text = os.environ.get(self.secret_env, "").strip()
            where = f"webhooks.{self.name}.secret_env ({self.secret_env})"
        if len(text) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"{where}: the secret must be at least {MIN_SECRET_LENGTH} characters "
                f"(got {len(text)}); make one with `openssl rand -base64 32`"
            )
        if text.startswith("whsec_"):
            try:
                return base64.b64decode(text.removeprefix("whsec_"), validate=True)
            except ValueError as exc:
                raise ConfigError(f"{where}: a whsec_ secret is base64 after the prefix") from exc
        return text.encode()

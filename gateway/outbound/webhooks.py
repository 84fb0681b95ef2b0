"""The webhook dispatcher: events pushed to the configured `[webhooks.NAME]` as signed POSTs
(`gateway webhooks run`, started by `gateway serve` when webhooks are configured).

Each pass (1) reads, per webhook, the events past its cursor that it wants (its cabinet,
its types) and queues one delivery each, moving the cursor in the same transaction
(gateway/storage/queues/webhook_deliveries.py); (2) claims the deliveries due, at most the
first pending one of each company (in order per company), with a lease; (3) POSTs each
and records the outcome. At least once: a dispatcher that dies between the POST and the
record leaves a `sending` row that is taken over when its lease runs out, and sent again —
the receiver de-duplicates on `webhook-id` (the event's id, the same at every attempt).

In order per company, repeats included: a repeat of an event is sent only before any later
event of its company (its ordering). A row is claimed only when no earlier row of its line
is pending, and each POST starts only once its lease is renewed (`queue.hold`): a row
whose lease ran out while the batch's earlier POSTs went (a stalled process, a heartbeat
lost) may have been taken over, sent, and its line moved on — it is dropped, not sent late.
A POST under way when its holder dies was sent before the takeover's repeat (30 s later):
a receiver that handles it later than that sees it out of order.

Standard Webhooks (https://www.standardwebhooks.com): headers `webhook-id`,
`webhook-timestamp` (Unix seconds) and `webhook-signature` = `v1,` + base64 of
HMAC-SHA256(secret, "{id}.{timestamp}.{body}"); the signed timestamp lets the receiver
refuse a replayed request (older than a few minutes). Any answer but 2xx, a timeout or a
refused connection is retried: `retry_min_seconds` doubling up to `retry_max_seconds`, given
up (`failed`, shown by `gateway webhooks status`) `lifetime_seconds` after queueing.

SSRF: a host name is resolved at each send and every address checked
(`gateway.config.address_refusal`) unless `allow_private`; the request then goes to the
address checked, not to the name again (a second lookup could answer otherwise: DNS
rebinding), with the name as Host and, for https, as TLS server name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import httpx
import structlog
from sqlalchemy import select

from gateway.clock import Clock, as_utc
from gateway.config import WebhookConfig, address_refusal
from gateway.runner import Backoff
from gateway.storage import events
from gateway.storage.db import Database
from gateway.storage.models import WebhookDelivery
from gateway.storage.queues import webhook_deliveries as queue
from gateway.storage.queues.webhook_deliveries import Outcome, TransitionError
from gateway.storage.tenancy import ALL, Tenant

log = structlog.get_logger("gateway.webhooks")

READ_BATCH = 500  # events read past a cursor per pass
CLAIM_BATCH = 20
Resolver = Callable[[str, int], list[str]]  # (host, port) -> IP addresses


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` has (the system resolver)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def sign(secret: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header's value (Standard Webhooks, v1)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class Refused(Exception):
    """The webhook's host resolves to an address it may not reach."""


@dataclass(frozen=True)
class Hook:
    """A configured webhook, ready: its secret read and its cabinet's id found."""

    config: WebhookConfig
    secret: bytes
    tenant: Tenant = ALL

    @property
    def name(self) -> str:
        return self.config.name

    def backoff(self) -> Backoff:
        c = self.config
        return Backoff(
            first=timedelta(seconds=c.retry_min_seconds),
            maximum=timedelta(seconds=c.retry_max_seconds),
            lifetime=timedelta(seconds=c.lifetime_seconds),
        )


class Dispatcher:
    def __init__(
        self,
        db: Database,
        hooks: Sequence[Hook],
        clock: Clock,
        worker_name: str,
        transport: httpx.BaseTransport | None = None,
        resolver: Resolver = resolve,
    ) -> None:
        self.db = db
        self.hooks = {h.name: h for h in hooks}
        self.clock = clock
        self.worker_name = worker_name
        self.resolver = resolver
        self.client = httpx.Client(transport=transport, follow_redirects=False)

    def close(self) -> None:
        self.client.close()

    def run_once(self) -> int:
        """One pass: queue new events, send what is due; how many items it took."""
        queued = self.fan_out()
        return queued + self.send_due()

    def fan_out(self) -> int:
        """Queue a delivery for each new event each webhook wants; how many events read."""
        read = 0
        for hook in self.hooks.values():
            with self.db.write() as s:
                after = queue.cursor(s, hook.name)
                found = events.read_after(s, after, READ_BATCH, hook.tenant, None)
                if not found:
                    continue
                wanted = [
                    (e.id, queue.ordering_of(e.cabinet_id, e.company_id))
                    for e in found
                    if hook.config.wants(e.type)
                ]
                queue.enqueue(s, hook.name, wanted, found[-1].id, self.clock.now())
                read += len(found)
        return read

    def send_due(self) -> int:
        """Claim the deliveries due (first in line per company), POST each, record it."""
        now = self.clock.now()
        with self.db.write() as s:
            ids = queue.claim_due(s, list(self.hooks), self.worker_name, now, CLAIM_BATCH)
        if not ids:
            return 0
        with self.db.read() as s:
            rows = s.execute(select(WebhookDelivery).where(WebhookDelivery.id.in_(ids))).scalars()
            claimed = sorted(rows, key=lambda r: r.event_id)
            s.expunge_all()
            found = events.by_id(s, [r.event_id for r in claimed])
        for row in claimed:
            self._send(row, found[row.event_id])
        return len(ids)

    def _send(self, row: WebhookDelivery, event: events.EventRow) -> None:
        hook = self.hooks[row.webhook]
        with self.db.write() as s:
            held = queue.hold(s, self.worker_name, row.id, self.clock.now())
        if not held:  # taken over (or about to be): its new holder sends it, in its line
            log.warning("webhook_lease_lost", webhook=hook.name, delivery_id=row.id)
            return
        body = json.dumps(
            {"type": event.type, "timestamp": _iso(event.created_at), "data": event.to_json()},
            separators=(",", ":"),
        ).encode()
        try:
            delivered, reason = self.post(hook, str(event.id), body)
        except Refused as exc:
            delivered, reason = False, f"refused: {exc}"
        now = self.clock.now()
        retry_at = None
        if not delivered:
            retry_at = hook.backoff().next_try(row.attempts, as_utc(row.created_at), now)
            log.warning("webhook_not_delivered", webhook=hook.name, event_id=event.id, why=reason)
            if retry_at is None:
                reason = f"gave up after {row.attempts} attempts; last: {reason}"
        try:
            with self.db.write() as s:
                queue.record(s, self.worker_name, Outcome(row.id, delivered, reason, retry_at), now)
        except TransitionError as exc:  # our lease was taken over: the new holder decides
            log.error("transition_refused", webhook=hook.name, delivery_id=row.id, why=str(exc))

    def post(self, hook: Hook, message_id: str, body: bytes) -> tuple[bool, str]:
        """POST `body` to the webhook, signed; (delivered, what happened)."""
        url, headers, extensions = self._target(hook)
        timestamp = int(self.clock.now().timestamp())
        headers.update(
            {
                "content-type": "application/json",
                "webhook-id": message_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(hook.secret, message_id, timestamp, body),
                "user-agent": "welyb-gateway-webhooks",
            }
        )
        try:
            response = self.client.post(
                url,
                content=body,
                headers=headers,
                extensions=extensions,
                timeout=hook.config.timeout_seconds,
            )
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        said = f"{response.status_code} {response.reason_phrase}".strip()
        return response.is_success, said

    def _target(self, hook: Hook) -> tuple[str, dict[str, str], dict[str, object]]:
        """The URL to connect to (the checked address in place of a name), with its Host
        header and TLS server name."""
        parts = urlsplit(hook.config.url)
        host = parts.hostname or ""
        if hook.config.allow_private:
            return hook.config.url, {}, {}
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = [host] if _is_ip(host) else self.resolver(host, port)
        except OSError as exc:
            raise Refused(f"{host} does not resolve: {exc}") from exc
        for address in addresses:
            if (why := address_refusal(address)) is not None:
                raise Refused(f"{host}: {why} (allow_private = false)")
        if not addresses:
            raise Refused(f"{host} has no address")
        pinned = addresses[0]
        literal = f"[{pinned}]" if ":" in pinned else pinned
        netloc = literal if parts.port is None else f"{literal}:{parts.port}"
        url = urlunsplit(parts._replace(netloc=netloc))
        extensions: dict[str, object] = {"sni_hostname": host} if parts.scheme == "https" else {}
        return url, {"host": parts.netloc.rsplit("@", 1)[-1]}, extensions


def _is_ip(host: str) -> bool:
    try:
        address_refusal(host)
    except ValueError:
        return False
    return True


def _iso(moment: datetime) -> str:
    return as_utc(moment).isoformat().replace("+00:00", "Z")

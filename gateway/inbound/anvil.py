"""Per-client bookkeeping of the SMTP server, after Postfix's `anvil`: sessions open at once
(in all and per client address), and connections and messages per client over a window.

One instance serves the whole listener, on its event loop (no locking). Time comes from an
injected monotonic clock, so tests move it by hand. Each rate counts in a fixed window per
client that starts at the client's first event, as anvil does (`anvil_rate_time_unit`);
clients with no session open and an expired window are forgotten, so the table holds at most
the clients of one window.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.config import SmtpConfig
from gateway.replies import Reply


@dataclass
class _Client:
    window_start: float
    sessions: int = 0
    connections: int = 0  # opened in the current window
    messages: int = 0  # MAIL FROM in the current window
    errors: int = 0  # 4xx/5xx replies in the current window, over all its sessions


class Anvil:
    def __init__(
        self,
        *,
        session_limit: int,
        connection_count_limit: int,
        connection_rate_limit: int,
        message_rate_limit: int,
        error_rate_limit: int,
        window_seconds: float,
        exempt_networks: Sequence[str],
        monotonic: Callable[[], float],
    ) -> None:
        self.session_limit = session_limit
        self.connection_count_limit = connection_count_limit
        self.connection_rate_limit = connection_rate_limit
        self.message_rate_limit = message_rate_limit
        self.error_rate_limit = error_rate_limit
        self.window_seconds = window_seconds
        self.exempt = [ipaddress.ip_network(n, strict=False) for n in exempt_networks]
        self.monotonic = monotonic
        self.sessions = 0
        self.clients: dict[str, _Client] = {}
        self.pruned_at = monotonic()

    @classmethod
    def for_config(cls, config: SmtpConfig, monotonic: Callable[[], float]) -> Anvil:
        return cls(
            session_limit=config.session_limit,
            connection_count_limit=config.client_connection_count_limit,
            connection_rate_limit=config.client_connection_rate_limit,
            message_rate_limit=config.client_message_rate_limit,
            error_rate_limit=config.client_error_rate_limit,
            window_seconds=config.client_rate_window_seconds,
            exempt_networks=config.limit_exempt_networks,
            monotonic=monotonic,
        )

    def refusal(self, client: str | None) -> Reply | None:
        """Why a new session of `client` would be refused (None: it would be admitted);
        counts nothing."""
        if self.sessions >= self.session_limit:
            return Reply.TOO_MANY_SESSIONS
        if client is None or self.is_exempt(client):
            return None
        entry = self.current(client)
        if self.connection_count_limit and entry.sessions >= self.connection_count_limit:
            return Reply.TOO_MANY_CONNECTIONS
        if self.connection_rate_limit and entry.connections >= self.connection_rate_limit:
            return Reply.CONNECTION_RATE_EXCEEDED
        if self.error_rate_limit and entry.errors >= self.error_rate_limit:
            return Reply.TOO_MANY_ERRORS
        return None

    def open_session(self, client: str | None) -> Reply | None:
        """Count a new session of `client`, or say why it is refused (then nothing is
        counted and `close_session` must not be called)."""
        if (refused := self.refusal(client)) is not None:
            return refused
        self.sessions += 1
        if client is not None and not self.is_exempt(client):
            entry = self.current(client)
            entry.connections += 1
            entry.sessions += 1
        return None

    def close_session(self, client: str | None) -> None:
        self.sessions -= 1
        entry = self.clients.get(client) if client is not None else None
        if entry is not None:
            entry.sessions -= 1

    def new_message(self, client: str | None) -> Reply | None:
        """Count a MAIL FROM of `client`, or say why it is refused."""
        if not self.message_rate_limit or client is None or self.is_exempt(client):
            return None
        entry = self.current(client)
        if entry.messages >= self.message_rate_limit:
            return Reply.MESSAGE_RATE_EXCEEDED
        entry.messages += 1
        return None

    def new_error(self, client: str | None) -> bool:
        """Count an error of `client`; True when it has made too many in this window (its
        sessions then end, and new ones are refused until the window is over)."""
        if not self.error_rate_limit or client is None or self.is_exempt(client):
            return False
        entry = self.current(client)
        entry.errors += 1
        return entry.errors >= self.error_rate_limit

    def is_exempt(self, client: str) -> bool:
        if not self.exempt:
            return False
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.exempt)

    def current(self, client: str) -> _Client:
        """The client's entry, its window restarted if it has passed."""
        now = self.monotonic()
        if now - self.pruned_at >= self.window_seconds:
            self.prune(now)
        entry = self.clients.get(client)
        if entry is None:
            entry = self.clients[client] = _Client(window_start=now)
        elif now - entry.window_start >= self.window_seconds:
            entry.window_start, entry.connections, entry.messages, entry.errors = now, 0, 0, 0
        return entry

    def prune(self, now: float) -> None:
        self.pruned_at = now
        expired = [
            client
            for client, entry in self.clients.items()
            if entry.sessions == 0 and now - entry.window_start >= self.window_seconds
        ]
        for client in expired:
            del self.clients[client]

"""The checks a message passes in the filing stage, before anything of it is filed: who sent
it (SPF, DKIM, DMARC, ARC), malware (clamd) and spam (rspamd). The sender policy, which
needs the directory, is the filing stage's own last step (gateway/inbound/filing.py).

Each check ends in one of three ways: passed; a reason to quarantine the message; or a
reason to wait and try again later (`Wait`), which is never read as a pass or a failure: a
temporary DNS error is retried once (`trust.temperror_retry_seconds`), then the second result
stands; a scanner that cannot answer makes the message wait as long as it takes
(`trust.scanner_retry_seconds`), unless the admin chose that scanner's `fail_open`.
No notice goes back to the sender of a quarantined message: its From is what is in doubt,
and a notice to it would be backscatter to whoever was forged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from gateway.config import ClamavConfig, RspamdConfig, TrustConfig
from gateway.dns import DnsLookup
from gateway.inbound.trust.authentication import (
    AuthEnvelope,
    authenticate,
    with_results,
    without_our_results,
)
from gateway.inbound.trust.clamav import MalwareScanner, scan_all
from gateway.inbound.trust.results import AuthenticationResults
from gateway.inbound.trust.rspamd import SpamEnvelope, SpamScorer, is_spam
from gateway.inbound.trust.scanning import ScannerUnavailable

log = structlog.get_logger("gateway.trust")


@dataclass(frozen=True)
class Envelope:
    """What the SMTP session (or the IMAP source) told us about a message."""

    client_address: str | None  # None for mail taken from an IMAP mailbox
    helo: str | None
    mail_from: str  # "" for the null sender
    recipients: tuple[str, ...]
    queue_id: str


@dataclass(frozen=True)
class Wait:
    """The checks cannot conclude now: try again in `seconds`."""

    reason: str
    seconds: int
    authentication: AuthenticationResults | None = None


@dataclass(frozen=True)
class Authenticated:
    """The results, and the message as kept: our Authentication-Results first, any header
    claiming our authserv-id from outside removed."""

    results: AuthenticationResults
    stamped: bytes


class Screen:
    """The checks of issue 11, with their outside dependencies passed in: the DNS lookup,
    clamd and rspamd (None when switched off)."""

    def __init__(
        self,
        trust: TrustConfig,
        lookup: DnsLookup,
        malware: MalwareScanner | None = None,
        clamav: ClamavConfig | None = None,
        spam: SpamScorer | None = None,
        rspamd: RspamdConfig | None = None,
    ) -> None:
        self.trust = trust
        self.lookup = lookup
        self.malware = malware
        self.clamav = clamav or ClamavConfig()
        self.spam = spam
        self.rspamd = rspamd or RspamdConfig()

    def authenticate(
        self, raw: bytes, envelope: Envelope, *, checked_before: bool
    ) -> Authenticated | Wait:
        """SPF, DKIM, DMARC and ARC; a temporary DNS error the first time is a `Wait`."""
        results = authenticate(
            raw,
            AuthEnvelope(envelope.client_address, envelope.helo, envelope.mail_from),
            self.lookup,
            deadline_seconds=self.trust.deadline_seconds,
        )
        if results.temporary and not checked_before:
            return Wait(
                f"authentication met a temporary DNS error ({results.summary()}); "
                f"checked once more in {self.trust.temperror_retry_seconds} s",
                self.trust.temperror_retry_seconds,
                results,
            )
        return Authenticated(results, self.stamp(raw, results))

    def stamp(self, raw: bytes, results: AuthenticationResults) -> bytes:
        authserv_id = self.trust.authserv_id
        return with_results(without_our_results(raw, authserv_id), results.to_header(authserv_id))

    def scan(
        self,
        raw: bytes,
        stamped: bytes,
        documents: Sequence[tuple[str, bytes]],
        envelope: Envelope,
    ) -> str | Wait | None:
        """Malware, then spam: a reason to quarantine, a `Wait`, or None (clean)."""
        if self.malware is not None:
            try:
                found = scan_all(self.malware, [("the message", raw), *documents])
            except ScannerUnavailable as exc:
                if not self.clamav.fail_open:
                    return self._wait_for("clamd", exc)
                log.warning("filed_unscanned", queue_id=envelope.queue_id, why=str(exc))
            else:
                if found is not None:
                    where, signature = found
                    return f"malware: clamd found {signature} in {where}"
        if self.spam is not None:
            try:
                verdict = self.spam.score(
                    stamped,
                    SpamEnvelope(
                        envelope.client_address,
                        envelope.helo,
                        envelope.mail_from,
                        envelope.recipients,
                        envelope.queue_id,
                    ),
                )
            except ScannerUnavailable as exc:
                if not self.rspamd.fail_open:
                    return self._wait_for("rspamd", exc)
                log.warning("filed_unscored", queue_id=envelope.queue_id, why=str(exc))
            else:
                threshold = self.rspamd.score_threshold or None
                if is_spam(verdict, frozenset(self.rspamd.actions), threshold):
                    return f"spam: rspamd {verdict.summary()}"
        return None

    def _wait_for(self, scanner: str, error: ScannerUnavailable) -> Wait:
        seconds = self.trust.scanner_retry_seconds
        return Wait(f"waiting for {scanner}: {error.detail}; tried again in {seconds} s", seconds)

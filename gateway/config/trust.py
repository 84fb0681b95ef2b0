"""The settings of issue 11's checks: [trust] (authentication and quarantine), [clamav] and
[rspamd]. Declared as in settings.py (whose TABLES lists them); kept apart only so that
settings.py does not grow past reading length.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from gateway.config import checks
from gateway.config.declare import computed, setting

# rspamd's actions that quarantine by default: what its own thresholds call spam. "greylist"
# and "soft reject" ask the sending server to retry, which our 250 has already answered.
SPAM_ACTIONS = ("reject", "discard", "quarantine", "rewrite subject", "add header")


@dataclass(frozen=True)
class TrustConfig:
    """Who really sent a message, and what happens to mail that fails a check."""

    authserv_id: str = computed(
        socket.getfqdn,
        "The authserv-id of our Authentication-Results header (RFC 8601); such headers "
        "arriving from outside with this id are removed. Usually the MX name.",
        default_text="this host's fully qualified name",
        example="mx.welyb.fr",
        check=checks.stripped,
    )
    nameservers: tuple[str, ...] = setting(
        (),
        "DNS servers asked for SPF, DKIM and DMARC (addresses); empty: the system's resolver.",
        check=checks.ip_addresses,
    )
    dns_port: int = setting(53, "Port of those servers.", low=1, high=65535)
    dns_timeout_seconds: float = setting(
        5.0, "Longest wait for one DNS answer.", check=checks.positive
    )
    deadline_seconds: float = setting(
        20.0,
        "Longest time the authentication of one message may take in all; what is left is "
        "recorded as temperror.",
        check=checks.positive,
    )
    temperror_retry_seconds: int = setting(
        300,
        "A message whose authentication met a temporary DNS error is checked once more after "
        "this long (never read as a failure); the second result stands.",
        low=1,
        high=86400,
    )
    scanner_retry_seconds: int = setting(
        60,
        "A message waits this long when a scanner (clamd, rspamd) cannot answer, then is "
        "tried again, as often as needed: nothing is filed unscanned.",
        low=1,
        high=3600,
    )
    quarantine_retention_days: int = setting(
        30,
        "Quarantined mail is purged after this many days; its record (reason, results, "
        "history) stays.",
        low=1,
        high=3650,
    )


@dataclass(frozen=True)
class ClamavConfig:
    """Malware scanning of every document and the raw message by clamd (ClamAV's daemon)."""

    enabled: bool = setting(False, "Scan with clamd (true) or not.")
    address: str = setting(
        "/run/clamav/clamd.ctl",
        "clamd's socket: a path (its LocalSocket; Debian's default here) or host:port "
        "(its TCPSocket).",
    )
    timeout_seconds: float = setting(
        60.0, "Longest time one scan may take, in all.", check=checks.positive
    )
    fail_open: bool = setting(
        False,
        "When clamd cannot answer: false, the message waits and is retried (nothing is filed "
        "unscanned); true, it is filed unscanned and the log says so.",
    )


@dataclass(frozen=True)
class RspamdConfig:
    """Spam scoring by rspamd over its HTTP protocol (its normal worker)."""

    enabled: bool = setting(False, "Score with rspamd (true) or not.")
    url: str = setting("http://127.0.0.1:11333", "rspamd's normal worker.")
    timeout_seconds: float = setting(
        30.0, "Longest time one scan may take, in all.", check=checks.positive
    )
    actions: tuple[str, ...] = setting(
        SPAM_ACTIONS,
        "rspamd actions that quarantine a message as spam.",
        check=checks.lower_words,
    )
    score_threshold: float = setting(
        0.0, "A score at or above this quarantines too; 0: rspamd's actions only."
    )
    fail_open: bool = setting(
        False,
        "When rspamd cannot answer: false, the message waits and is retried; true, it is "
        "filed unscored and the log says so.",
    )

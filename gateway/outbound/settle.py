"""What a send's result means for the row that was sent: the one mapping from a transport's
outcome to the next state, shared by deliveries and bot-mail forwards (R17).

    accepted  -> sent (R13: validated for that connection); never sent again
    permanent -> failed, with the remote server's words
    temporary -> deferred, due again after back-off (`retry_min_seconds` doubling up to
                 `retry_max_seconds`, as Postfix), or failed once the first queueing is
                 older than `lifetime_seconds` (given up)
    None      -> our own problem before sending (no DKIM key…): retried like a temporary
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from gateway.config import OutboundConfig
from gateway.outbound.transport import SendOutcome
from gateway.runner import Backoff

Target = Literal["sent", "failed", "deferred"]  # the same words in both queues' states


@dataclass(frozen=True)
class Settlement:
    target: Target
    reason: str  # recorded on the row and in its history
    retry_at: datetime | None = None  # for `deferred`


def settle(
    config: OutboundConfig,
    outcome: SendOutcome | None,
    reply: str,
    attempts: int,
    created_at: datetime,
    now: datetime,
) -> Settlement:
    if outcome is SendOutcome.ACCEPTED:
        return Settlement("sent", reply)
    if outcome is SendOutcome.PERMANENT:
        return Settlement("failed", reply)
    retry_at = backoff(config).next_try(attempts, created_at, now)
    if retry_at is None:
        return Settlement("failed", gave_up(created_at, now, reply))
    return Settlement("deferred", reply, retry_at)


def backoff(config: OutboundConfig) -> Backoff:
    """Postfix's: `retry_min_seconds` doubling up to `retry_max_seconds`, given up after
    `lifetime_seconds` from the first queueing."""
    return Backoff(
        first=timedelta(seconds=config.retry_min_seconds),
        maximum=timedelta(seconds=config.retry_max_seconds),
        lifetime=timedelta(seconds=config.lifetime_seconds),
    )


def gave_up(created_at: datetime, now: datetime, reply: str) -> str:
    """The reason recorded when the back-off says to give up."""
    return f"gave up after {(now - created_at).days} days; last reply: {reply}"

"""The one loop every stage runs in, and the one back-off rule (Mailman 3's `Runner` is the
model).

A stage (filing, sending deliveries, forwarding bot mail) supplies only what is its own: a
*pass* — claim a batch from its queue, process it, record the outcomes through the queue's
module — that returns how many items it took. The `Runner` does the rest, the same way for
all of them: passes again at once while there is work, waits `idle_seconds` once every
queue came back empty, stops between passes when asked, and survives a pass that fails
(the database away): logged, then a pause that doubles up to a minute, so a broken
dependency is not hammered.

What happens to one item that fails is the stage's queue's business, with one rule for all:
`Backoff` says when to try again, or None — move it aside (filing: `held`; sending:
`failed`, "gave up") — after too many attempts or once it has waited too long.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

log = structlog.get_logger("gateway.runner")

Pass = Callable[[], Awaitable[int]]  # one pass of a stage; how many items it took
MAX_ERROR_PAUSE = 60.0  # seconds between passes while passes keep failing
MAX_DOUBLINGS = 24  # 2**24 times the first wait: more than half a year from 1 s


def in_thread(work: Callable[[], int]) -> Pass:
    """A synchronous pass (the filer's), run in a thread so the loop stays free for
    signals."""

    async def run() -> int:
        return await asyncio.to_thread(work)

    return run


@dataclass(frozen=True)
class Backoff:
    """When an item that failed is tried again: `first` doubling with each attempt up to
    `maximum`; None (move it aside) once it has had `max_attempts` attempts or was first
    queued more than `lifetime` ago."""

    first: timedelta
    maximum: timedelta | None = None
    max_attempts: int | None = None
    lifetime: timedelta | None = None

    def next_try(self, attempts: int, first_queued: datetime, now: datetime) -> datetime | None:
        if self.max_attempts is not None and attempts >= self.max_attempts:
            return None
        if self.lifetime is not None and now - first_queued >= self.lifetime:
            return None
        # The exponent is capped: past ~40 attempts `first * 2**n` overflows timedelta (the
        # `maximum` is reached long before anyway).
        delay = self.first * 2 ** min(max(attempts - 1, 0), MAX_DOUBLINGS)
        if self.maximum is not None:
            delay = min(delay, self.maximum)
        retry_at: datetime = now + delay
        return retry_at


class Runner:
    """Runs the passes of one or more stages, in turn, until stopped."""

    def __init__(
        self,
        name: str,
        passes: Sequence[Pass],
        idle_seconds: float,
        recover: Callable[[], None] | None = None,
    ) -> None:
        """`recover`, after a failed pass and before the next one (in a thread, tried again
        until it succeeds): undo what a pass left half-done — the process's claims are
        released, so a batch whose commit failed waits for no lease once the database
        answers again."""
        self.name = name
        self.passes = list(passes)
        self.idle_seconds = idle_seconds
        self.recover = recover

    async def drain(self, stop: asyncio.Event | None = None) -> int:
        """Each stage in turn until it has nothing left, or until `stop` is set (checked
        between two passes, so that a stop does not wait for a backlog); how many items
        were taken (what `--once` does)."""
        total = 0
        for one_pass in self.passes:
            while not (stop is not None and stop.is_set()) and (n := await one_pass()) > 0:
                total += n
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Pass after pass until `stop` is set; returns between two passes."""
        failures = 0
        while not stop.is_set():
            try:
                if failures and self.recover is not None:
                    await asyncio.to_thread(self.recover)
                await self.drain(stop)  # until every queue came back empty
                failures = 0
                pause = self.idle_seconds
            except Exception:
                failures += 1
                log.exception("runner_pass_failed", runner=self.name, failures=failures)
                pause = min(self.idle_seconds * 2 ** (failures - 1), MAX_ERROR_PAUSE)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)

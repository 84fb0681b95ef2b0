"""The one runner loop and the one back-off rule (gateway/runner.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from gateway.runner import Backoff, Runner, in_thread

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def test_backoff_doubles_up_to_its_maximum_and_gives_up_after_its_lifetime():
    postfix = Backoff(
        first=timedelta(seconds=300), maximum=timedelta(seconds=4000), lifetime=timedelta(days=5)
    )
    delays = [(postfix.next_try(n, T0, T0) - T0).total_seconds() for n in range(1, 7)]
    assert delays == [300, 600, 1200, 2400, 4000, 4000]
    assert postfix.next_try(3, T0, T0 + timedelta(days=5)) is None
    # Found by trying (a webhook retried hourly for two days): the 45th attempt's doubling
    # overflowed timedelta and crashed the pass instead of waiting `maximum`.
    assert postfix.next_try(120, T0, T0) == T0 + timedelta(seconds=4000)


def test_backoff_moves_an_item_aside_after_max_attempts():
    filing = Backoff(first=timedelta(seconds=30), max_attempts=3)
    assert filing.next_try(1, T0, T0) == T0 + timedelta(seconds=30)
    assert filing.next_try(2, T0, T0) == T0 + timedelta(seconds=60)
    assert filing.next_try(3, T0, T0) is None


def test_drain_runs_each_stage_until_it_is_empty_in_turn():
    calls: list[str] = []
    work = {"a": [3, 2, 0], "b": [1, 0]}

    def stage(name: str):
        async def one_pass() -> int:
            calls.append(name)
            return work[name].pop(0)

        return one_pass

    taken = asyncio.run(Runner("test", [stage("a"), stage("b")], 1.0).drain())
    assert taken == 6
    assert calls == ["a", "a", "a", "b", "b"]


def test_run_survives_a_failing_pass_and_stops_when_asked():
    outcomes: list[object] = [RuntimeError("database away"), 2, 0]
    seen: list[object] = []

    def one_pass() -> int:  # synchronous, like the filer's: run in a thread
        outcome = outcomes.pop(0) if outcomes else 0
        seen.append(outcome)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome  # type: ignore[return-value]

    async def main() -> None:
        stop = asyncio.Event()
        runner = Runner("test", [in_thread(one_pass)], idle_seconds=0.01)
        task = asyncio.create_task(runner.run(stop))
        while len(seen) < 4:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 2)

    asyncio.run(main())
    assert isinstance(seen[0], RuntimeError) and seen[1:4] == [2, 0, 0]


def test_run_stops_between_two_passes_even_with_a_backlog():
    """A stop must not wait until the queue is empty: a busy worker would otherwise keep
    `serve` (and Docker's stop timeout) waiting for its whole backlog."""
    passes: list[int] = []

    async def busy_pass() -> int:  # a queue that never empties
        passes.append(1)
        await asyncio.sleep(0.01)
        return 20

    async def main() -> int:
        stop = asyncio.Event()
        task = asyncio.create_task(Runner("test", [busy_pass], idle_seconds=1.0).run(stop))
        while len(passes) < 3:
            await asyncio.sleep(0.005)
        stop.set()
        await asyncio.wait_for(task, 2)
        return len(passes)

    seen_at_stop = asyncio.run(main())
    assert 3 <= seen_at_stop <= 4  # at most the pass under way when the stop came

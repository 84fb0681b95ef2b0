"""What every queue module has in common: its state table, the one-statement claim, and the
guarded move that fails loudly.

A queue is a table of work rows with a `status` column. Its module (one per queue, beside
this one) is the only code that writes that column: it declares the allowed transitions as
a `StateTable`, claims rows for a worker in ONE statement, and moves rows with an UPDATE
guarded by the expected status and, for a worker's own moves, by the claimant — a worker
whose lease was taken over changes nothing, and is told so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

import structlog
from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Executable,
    Select,
    Update,
    case,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from gateway.errors import GatewayError

log = structlog.get_logger("gateway.queues")

# How long a claim lasts unless renewed. A live process renews the leases of everything it
# holds with its heartbeat (`gateway.storage.processes.HEARTBEAT`, 10 s), however long the
# work takes; a process that dies or hangs stops renewing, and what it held can be taken
# over by any other worker 30 s later at most (plus that worker's poll interval).
LEASE = timedelta(seconds=30)


class TransitionError(GatewayError, RuntimeError):
    """A row was not in a state the transition may start from, or no longer held by the
    worker that asked: nothing was changed."""


class StateTable:
    """The allowed transitions of one queue: `{from: {to, …}}`. `kind` names the rows in
    error messages ("no forward transition …"); the ledger's say just "no transition …"."""

    def __init__(
        self, kind: str, allowed: Mapping[StrEnum, Iterable[StrEnum]], noun: str = ""
    ) -> None:
        self.kind = kind
        self.noun = noun or kind  # a row, in messages: "forward 12 is sent, …"
        self.allowed = {source: frozenset(targets) for source, targets in allowed.items()}

    def check(self, sources: Iterable[StrEnum], target: StrEnum) -> None:
        """Raise `TransitionError` unless `target` may follow every one of `sources`."""
        illegal = sorted(s.value for s in sources if target not in self.allowed[s])
        if illegal:
            kind = f"{self.kind} " if self.kind else ""
            raise TransitionError(f"no {kind}transition {', '.join(illegal)} -> {target}")


def claim(
    s: Session,
    model: Any,
    candidates: Select[Any],
    claimable: ColumnElement[bool],
    **values: Any,
) -> list[tuple[int, str | None]]:
    """Take the rows `candidates` selects (ids, in its order and limit) in ONE statement,
    setting `values`; returns their ids, sorted, each with the process that held it before
    (a lease that ran out: a takeover) or None.

    PostgreSQL: `WITH picked AS MATERIALIZED (SELECT … FOR UPDATE SKIP LOCKED) UPDATE … FROM
    picked WHERE id = picked.id AND claimable RETURNING id`. SKIP LOCKED makes concurrent
    workers take different rows instead of all reaching for the lowest ids and all but one
    coming back empty; MATERIALIZED makes the pick run once (a LIMIT sub-select inside
    `IN (…)` may be re-scanned, and each re-scan, skipping the rows this very statement
    has just changed, would take `limit` more); the CTE carries each row's holder before.
    SQLite has one writer at a time, so inside the write transaction a SELECT of the
    candidates and their holders, then `UPDATE … WHERE id IN (…) AND claimable`, is as
    good as one statement.
    """
    held_before = _holder(model)
    if s.get_bind().dialect.name == "postgresql":
        picked = (
            candidates.add_columns(held_before.label("held_before"))
            .with_for_update(skip_locked=True, of=model)
            .cte("picked")
            .prefix_with("MATERIALIZED")
        )
        claimed: list[tuple[Any, Any]] = [
            (row[0], row[1])
            for row in s.execute(
                update(model)
                .where(model.id == picked.c.id, claimable)
                .values(**values)
                .returning(model.id, picked.c.held_before)
                .execution_options(synchronize_session=False)
            )
        ]
    else:
        # RETURNING gives new values only: read the holders first, inside the write
        # transaction (SQLite's one writer: nothing changes in between).
        before: dict[Any, Any] = dict(
            s.execute(
                select(model.id, held_before).where(model.id.in_(candidates.scalar_subquery()))
            ).all()
        )
        chosen = s.execute(
            update(model)
            .where(model.id.in_(list(before)), claimable)
            .values(**values)
            .returning(model.id)
            .execution_options(synchronize_session=False)
        ).scalars()
        claimed = [(i, before[i]) for i in chosen]
    return sorted((int(i), holder) for i, holder in claimed)


def _holder(model: Any) -> ColumnElement[Any]:
    """The row's holder while it was held (a claimant with a lease), else NULL: a queued
    row keeps no holder, one released after a failure keeps none either."""
    return case((model.lease_until.is_not(None), model.claimed_by), else_=None)


def held_by(model: Any, holder: str) -> ColumnElement[bool]:
    """Rows `holder` (a process) claimed: its own name, or one of its parts (an IMAP poller
    writes `<process>:<source>`)."""
    return or_(
        model.claimed_by == holder, model.claimed_by.startswith(holder + ":", autoescape=True)
    )


@dataclass(frozen=True)
class Leases:
    """The leases of one queue's claimed rows (`held`: the rows a claim leaves held, e.g.
    `status = 'filing'`), as a process's heartbeat renews them and its end releases them.
    Lease writes, not status writes: a row keeps its status and its holder's name (so the
    worker that takes it over can say from whom)."""

    model: Any
    held: ColumnElement[bool] | None = None  # None: every claimed row (IMAP checkpoints)

    def renew(self, s: Session, holder: str, now: datetime) -> int:
        """Extend by `LEASE` the leases `holder` still has; an expired one is not revived
        (it may be taken over at any moment, or released already)."""
        return rows_changed(s, self._held(holder, now).values(lease_until=now + LEASE))

    def release(self, s: Session, holder: str, now: datetime) -> int:
        """End `holder`'s leases now: any worker may take the rows at once."""
        return rows_changed(s, self._held(holder, now).values(lease_until=now))

    def _held(self, holder: str, now: datetime) -> Update:
        m = self.model
        update_held = update(m).where(held_by(m, holder), m.lease_until > now)
        return update_held if self.held is None else update_held.where(self.held)


def rows_changed(s: Session, statement: Executable) -> int:
    """Run an UPDATE and say how many rows it changed (the guard of a single-row move)."""
    return cast(CursorResult[Any], s.execute(statement)).rowcount


def move_one(
    s: Session,
    model: Any,
    states: StateTable,
    row_id: int,
    sources: Iterable[StrEnum],
    target: StrEnum,
    *,
    claimant: str | None = None,
    **values: Any,
) -> None:
    """Move one row from one of `sources` to `target` in one guarded UPDATE (and, with
    `claimant`, only if that worker still holds it), setting `values` too; or raise
    `TransitionError`, saying what the row is and who holds it, and change nothing."""
    sources = frozenset(sources)
    states.check(sources, target)
    # `=` rather than `IN (…)` for one source: an IN list is rendered at every execution.
    [only] = sources if len(sources) == 1 else (None,)
    status = model.status == only if only is not None else model.status.in_(sources)
    guard = [model.id == row_id, status]
    if claimant is not None:
        guard.append(model.claimed_by == claimant)
    if rows_changed(s, update(model).where(*guard).values(status=target, **values)) != 1:
        current = s.execute(
            select(model.status, model.claimed_by).where(model.id == row_id)
        ).first()
        state = f"{current[0]} (held by {current[1]})" if current else "missing"
        raise TransitionError(
            f"{states.noun} {row_id} is {state}, not {' or '.join(sorted(sources))}"
            + (f" held by {claimant}" if claimant else "")
            + f": cannot move it to {target}"
        )


# One line of a queue's history: (row id, from status or None, to status, detail).
Event = tuple[int, str | None, str, str | None]


@dataclass(frozen=True)
class History:
    """A queue's history table: its model and the column naming the queue's row."""

    model: Any
    key: str

    def record(self, s: Session, events: Iterable[Event], now: datetime) -> None:
        """Append `events`, in one INSERT."""
        rows = [
            {self.key: i, "at": now, "from_status": source, "to_status": target, "detail": detail}
            for i, source, target, detail in events
        ]
        if rows:
            s.execute(insert(self.model), rows)

    def read(self, s: Session, row_id: int) -> list[Any]:
        """One row's history, oldest first."""
        column = getattr(self.model, self.key)
        query = select(self.model).where(column == row_id).order_by(self.model.id)
        return list(s.execute(query).scalars())


def claim_for_worker(
    s: Session,
    model: Any,
    history: History | None,
    candidates: Select[Any],
    claimable: ColumnElement[bool],
    target: StrEnum,
    worker: str,
    now: datetime,
) -> list[int]:
    """A worker's claim (`claim`): the rows move to `target`, held by `worker` for `LEASE`,
    one more attempt each, and the claim goes into the queue's history — a takeover (a row
    whose holder stopped renewing its lease) with the previous holder, and logged (a queue
    without a history table: logged only)."""
    claimed = claim(
        s,
        model,
        candidates,
        claimable,
        status=target,
        claimed_by=worker,
        lease_until=now + LEASE,
        attempts=model.attempts + 1,
    )
    if history is not None:
        history.record(
            s,
            [
                (i, None, target, f"taken over from {held} by {worker}")
                if held and held != worker
                else (i, None, target, f"claimed by {worker}")
                for i, held in claimed
            ],
            now,
        )
    log_takeovers(model.__tablename__, claimed, worker)
    return [i for i, _ in claimed]


def log_takeovers(queue: str, claimed: Iterable[tuple[int, str | None]], worker: str) -> None:
    """One warning per previous holder whose rows `worker` took over."""
    taken: dict[str, list[int]] = {}
    for i, held in claimed:
        if held and held != worker:
            taken.setdefault(held, []).append(i)
    for held, ids in taken.items():
        log.warning("takeover", queue=queue, previous_holder=held, by=worker, ids=ids)

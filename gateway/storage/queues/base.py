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

from sqlalchemy import ColumnElement, CursorResult, Executable, Select, insert, select, update
from sqlalchemy.orm import Session

from gateway.errors import GatewayError

# How long a worker holds what it claimed before another may take it over: long enough for a
# batch (a claim is a few seconds of work), short enough that a dead worker's rows wait little.
LEASE = timedelta(minutes=5)


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
) -> list[int]:
    """Take the rows `candidates` selects (ids, in its order and limit) in ONE statement,
    setting `values`; returns their ids, sorted.

    PostgreSQL: `WITH picked AS MATERIALIZED (SELECT … FOR UPDATE SKIP LOCKED) UPDATE … FROM
    picked WHERE id = picked.id AND claimable RETURNING id`. SKIP LOCKED makes concurrent
    workers take different rows instead of all reaching for the lowest ids and all but one
    coming back empty; MATERIALIZED makes the pick run once (a LIMIT sub-select inside
    `IN (…)` may be re-scanned, and each re-scan, skipping the rows this very statement
    has just changed, would take `limit` more). SQLite has one writer at a time, so the
    guarded `UPDATE … WHERE id IN (SELECT …) AND claimable` is atomic as it stands.
    """
    if s.get_bind().dialect.name == "postgresql":
        picked = (
            candidates.with_for_update(skip_locked=True, of=model)
            .cte("picked")
            .prefix_with("MATERIALIZED")
        )
        chosen = model.id == picked.c.id
    else:
        chosen = model.id.in_(candidates.scalar_subquery())
    claimed = s.execute(
        update(model)
        .where(chosen, claimable)
        .values(**values)
        .returning(model.id)
        .execution_options(synchronize_session=False)
    ).scalars()
    return sorted(claimed)


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
    history: History,
    candidates: Select[Any],
    claimable: ColumnElement[bool],
    target: StrEnum,
    worker: str,
    now: datetime,
) -> list[int]:
    """A worker's claim (`claim`): the rows move to `target`, held by `worker` for `LEASE`,
    one more attempt each, and the claim goes into the queue's history."""
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
    history.record(s, [(i, None, target, f"claimed by {worker}") for i in claimed], now)
    return claimed

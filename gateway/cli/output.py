"""Printing listings: a table of chosen columns for people, or every field as JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import click

from gateway.clock import as_utc


def emit(rows: Sequence[Mapping[str, Any]], as_json: bool, columns: Iterable[str]) -> None:
    """`columns` of each row as a table, or (`as_json`) every key of each row."""
    if as_json:
        print_json(rows)
        return
    columns = list(columns)
    if not rows:
        click.echo("(none)")
        return
    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [min(60, max(len(c), *(len(row[i]) for row in cells))) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        click.echo("  ".join(v[:w].ljust(w) for v, w in zip(row, widths, strict=True)))


def print_json(data: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> None:
    """Rows, or one document (`status`, `messages show`), as JSON; times in UTC ISO 8601."""
    click.echo(json.dumps(_jsonable(data), ensure_ascii=False, indent=2))


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def cell(value: Any) -> str:
    """One value as a table shows it: '-' for none, times in UTC, lists joined."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return as_utc(value).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)

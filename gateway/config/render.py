"""What the declarations are shown as: `gateway init`'s commented TOML and the README's table.

Both list every key of `settings.TABLES` with its default and its help text; a key whose
default is in words (computed on this machine, unset, required) is written commented out
(`#key = example`), as is every key of a table that is absent unless configured
(`#[outbound.smarthost]`). tests/test_settings.py checks the README against these.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.config.declare import Declared
from gateway.config.environment import shown_variable
from gateway.config.settings import TABLES, Table

WIDTH = 92

_HEADER = """\
# Mail gateway configuration, written by `gateway init`. Relative paths are relative to
# this file. Every key is listed with its default and what it means; a key written
# `#key = value` has no fixed default (or its table is off): remove the '#' to set it.
"""

_BYTES = (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))


def toml_value(value: Any) -> Any:
    """A default as TOML holds it (tuples are lists, paths are strings)."""
    if isinstance(value, tuple | list):
        return [toml_value(v) for v in value]
    if isinstance(value, Mapping):
        return {k: toml_value(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def toml_literal(value: Any) -> str:
    """A value written as TOML."""
    value = toml_value(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_literal(v)}" for k, v in value.items()) + " }"
    return json.dumps(value, ensure_ascii=False)  # a TOML basic string escapes alike


def _amount(n: int, unit: str) -> str:
    if unit == "bytes":
        for name, size in _BYTES:
            if n >= size and n % size == 0:
                return f"{n // size} {name}"
    return str(n)


def allowed(d: Declared) -> str:
    """The bounds or the allowed values, in words ("" when any value of the type goes)."""
    s = d.setting
    if s.choices:
        return f"One of {', '.join(s.choices)}."
    if s.low is not None and s.high is not None:
        return f"From {_amount(s.low, s.unit)} to {_amount(s.high, s.unit)}."
    return ""


def meaning(d: Declared) -> str:
    """The help text and what is allowed: one sentence or two."""
    return " ".join(part for part in (d.setting.help, allowed(d)) if part)


def default_toml(directory: Path) -> str:
    """The file `gateway init` writes in `directory`: SQLite and a local folder beside it."""
    del directory  # the file's paths are relative to it, whatever it is
    blocks = [_HEADER] + [_table(t) for t in TABLES]
    return "\n".join(blocks)


def _comment(text: str) -> list[str]:
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent="# ",
        subsequent_indent="# ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _table(table: Table) -> str:
    off = "#" if table.optional else ""
    # The help beside the header: the benchmarks insert tables just before "\n[extraction]".
    lines = [f"{off}[{table.header}]  # {table.help}"]
    tables: list[Declared] = []  # a mapping is a sub-table, after every plain key
    for d in table.settings:
        if d.is_table:
            tables.append(d)
            continue
        words = _default_words(d)
        lines += _comment(meaning(d) + words)
        commented = off or ("" if d.literal else "#")
        shown = d.default if d.literal else d.setting.example
        lines.append(f"{commented}{d.key} = {toml_literal(shown)}")
    for d in tables:
        lines += _comment(meaning(d))
        lines.append(f"{off}[{table.header}.{d.key}]")
        lines += [f"{off}{k} = {toml_literal(v)}" for k, v in d.default.items()]
    return "\n".join(lines) + "\n"


def _default_words(d: Declared) -> str:
    if d.setting.required:
        return " Required."
    return "" if d.literal else f" Default: {d.setting.default_text}."


def readme_default(d: Declared) -> str:
    """The README's default cell: the TOML value, or the default in words."""
    return f"`{toml_literal(d.default)}`" if d.literal else d.setting.default_text


def settings_table() -> str:
    """The README's "Settings" table: one row per key, with the variable overriding it."""
    rows = [
        "| table | key | environment variable | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for table in TABLES:
        for d in table.settings:
            variable = f"`{shown_variable(table, d)}`"
            cells = (f"`[{table.name}]`", f"`{d.key}`", variable, readme_default(d), meaning(d))
            rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"

"""Settings from the environment: every key of gateway.toml has a variable that overrides it.

The variable is `GATEWAY_`, then the table's path and the key, upper-cased, with `_` for `.`
and `-`: `smtp.port` is `GATEWAY_SMTP_PORT`, `outbound.smarthost.host` is
`GATEWAY_OUTBOUND_SMARTHOST_HOST`, `imap.sources.factures.user` is
`GATEWAY_IMAP_SOURCES_FACTURES_USER`. The keys of `[gateway]` leave out the table, which
would say GATEWAY twice: `GATEWAY_NODE_NAME`, `GATEWAY_DOMAINS`. The names come from the
declarations (`settings.TABLES`), so a new setting has its variable without a line here.

A variable's value goes where the file's would, and through the same checks: a string
setting takes the text as written; any other is a TOML value (`8025`, `true`, `0.5`,
`["welyb.fr", "welyb.com"]`, `{ compta = "Achats" }`). An empty value is a value (it unsets
an optional key, and fails where the file's `""` would): a variable that is set is never
ignored, so a `GATEWAY_DATABASE_URL` that came out empty stops the gateway rather than leave
it on the SQLite default. For the same reason a variable under a table's prefix that names
no setting (`GATEWAY_DATABASE_ULR`) is refused, unless the configuration names it as one that
holds a password (`password_env`).
"""

from __future__ import annotations

import copy
import difflib
import functools
import tomllib
from collections.abc import Mapping
from typing import Any

from gateway.config.declare import ConfigError, Declared
from gateway.config.settings import TABLES, Table

PREFIX = "GATEWAY_"
NAME = "NAME"  # in a table's name, the part the admin picks (`imap.sources.NAME`)

# (table path, declaration) of a setting found in the environment
Found = tuple[tuple[str, ...], Declared]


def variable(table: str, key: str) -> str:
    """The variable that overrides `key` of `table` ("smtp", "imap.sources.factures")."""
    path = "" if table == "gateway" else f"{table}."
    return PREFIX + f"{path}{key}".upper().replace(".", "_").replace("-", "_")


def shown_variable(table: Table, d: Declared) -> str:
    """The variable as the README shows it: `GATEWAY_IMAP_SOURCES_<NAME>_HOST`."""
    return variable(table.name.replace(NAME, f"<{NAME}>"), d.key)


def _prefix(table: Table) -> str:
    """What every variable of `table` starts with (of a named table: up to the name)."""
    return variable(table.name.split(f".{NAME}")[0], "")


def lay_over(
    data: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The file's tables with the environment's settings laid over them, and where each of
    those came from ("smtp.port" -> "GATEWAY_SMTP_PORT") for the messages that name them."""
    merged: dict[str, Any] = copy.deepcopy(dict(data))
    origins: dict[str, str] = {}
    unknown: list[str] = []
    for name in sorted(n for n in environ if n.startswith(PREFIX)):
        found = _find(name)
        if found is None:
            unknown.append(name)
            continue
        path, d = found
        _table_at(merged, path)[d.key] = _value(environ[name], d)
        origins[".".join((*path, d.key))] = name
    passwords = _named_variables(merged)
    for name in unknown:
        if name not in passwords:
            _refuse_if_meant(name)
    return merged, origins


@functools.cache
def _fixed() -> dict[str, Found]:
    """Every variable of the tables whose name is fixed."""
    return {
        variable(t.name, d.key): (tuple(t.name.split(".")), d)
        for t in TABLES
        if NAME not in t.name
        for d in t.settings
    }


def _find(name: str) -> Found | None:
    """The setting `name` overrides, if any; in a named table, the longest key that ends
    the variable wins, and what comes before it is the name (`_` read back as `-`)."""
    if fixed := _fixed().get(name):
        return fixed
    found: list[tuple[int, Found]] = []
    for t in TABLES:
        rest = name.removeprefix(_prefix(t))
        if NAME not in t.name or rest == name:
            continue
        head, tail = t.name.split(NAME)  # "imap.sources.", "" or ".oauth2"
        inner = tail.upper().replace(".", "_")  # the parts of the table after the name
        for d in t.settings:
            suffix = f"{inner}_{d.key.upper()}"
            if rest.endswith(suffix) and len(rest) > len(suffix):
                picked = rest[: -len(suffix)].lower().replace("_", "-")
                path = (*head.strip(".").split("."), picked, *tail.strip(".").split("."))
                found.append((len(suffix), (tuple(p for p in path if p), d)))
    return max(found, key=lambda f: f[0])[1] if found else None


def _refuse_if_meant(name: str) -> None:
    """A variable under a table's prefix that names none of its settings: a typo."""
    tables = [t for t in TABLES if t.name != "gateway" and name.startswith(_prefix(t))]
    if not tables:
        return  # not a setting's name at all (GATEWAY_CONFIG, a password variable)
    known = [shown_variable(t, d) for t in TABLES for d in t.settings]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]}?" if close else "see README, Settings"
    raise ConfigError(f"{name}: no setting has this environment variable ({hint})")


def _named_variables(data: Mapping[str, Any]) -> set[str]:
    """The variables the configuration names as holding a secret (`password_env`)."""
    found: set[str] = set()
    for key, value in data.items():
        if isinstance(value, Mapping):
            found |= _named_variables(value)
        elif key.endswith("_env") and isinstance(value, str):
            found.add(value)
    return found


def _table_at(data: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    table = data
    for i, part in enumerate(path):
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{'.'.join(path[: i + 1])}] must be a table")
    return table


def _value(text: str, d: Declared) -> Any:
    """A string setting's text as it is; any other's as a TOML value. What does not parse
    stays text, which the reader refuses by the variable's name, as it would in the file."""
    if str in d.setting.kind:
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text

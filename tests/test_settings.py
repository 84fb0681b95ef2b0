"""Each setting is declared once: the parser, `gateway init`'s TOML and the README agree.

When the README test fails after a declaration changed, regenerate the table with
`.venv/bin/python -c "from gateway.config import settings_table; print(settings_table())"`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.config import TABLES, ConfigError, default_toml, parse_config, settings_table
from gateway.config.declare import Declared
from gateway.config.render import toml_value
from gateway.config.settings import Table

README = Path(__file__).resolve().parent.parent / "README.md"

EVERY_SETTING = [(t, d) for t in TABLES for d in t.settings]


CASES = {f"{t.name}.{d.key}": (t, d) for t, d in EVERY_SETTING}
BOUNDED = [pytest.param(*c, id=i) for i, c in CASES.items() if c[1].setting.low is not None]
CHOICES = [pytest.param(*c, id=i) for i, c in CASES.items() if c[1].setting.choices]


def _data(table: Table, key: str, value: Any) -> dict[str, Any]:
    """The smallest file that sets `key` of `table` to `value`."""
    if table.name == "imap.sources.NAME":
        source = {"host": "127.0.0.1", "user": "u", "password_env": "PW", key: value}
        return {"imap": {"sources": {"box": source}}}
    if table.name == "outbound.smarthost":
        return {"outbound": {"smarthost": {"host": "relay.example.net", key: value}}}
    if table.name == "outbound":  # wide retry bounds, so that either may take any value
        return {"outbound": {"retry_min_seconds": 1, "retry_max_seconds": 86400, key: value}}
    return {table.name: {key: value}}


def test_generated_toml_loads_back_to_the_defaults(tmp_path: Path) -> None:
    data = tomllib.loads(default_toml(tmp_path))
    assert parse_config(data, base=tmp_path) == parse_config({}, base=tmp_path)


def _toml_entries(text: str) -> dict[tuple[str, str], tuple[bool, Any]]:
    """(table, key) -> (commented out, value) for every `key = value` line, with or without '#'.

    Help comments start with "# "; a key or table commented out starts with "#" and no space.
    """
    entries: dict[tuple[str, str], tuple[bool, Any]] = {}
    table = ""
    for line in text.splitlines():
        if header := re.fullmatch(r"#?\[([\w.]+)\](  # .*)?", line):
            table = header[1]
        elif entry := re.fullmatch(r"(#?)(\w+) = (.*)", line):
            assert (table, entry[2]) not in entries, f"{table}.{entry[2]} written twice"
            value = tomllib.loads(f"v = {entry[3]}")["v"]
            entries[table, entry[2]] = (bool(entry[1]), value)
    return entries


def test_generated_toml_has_every_key_with_its_default(tmp_path: Path) -> None:
    text = default_toml(tmp_path)
    assert max(len(line) for line in text.splitlines()) <= 100
    entries = _toml_entries(text)
    expected: dict[tuple[str, str], tuple[bool, Any]] = {}
    for table, d in EVERY_SETTING:
        default = d.default
        if isinstance(default, Mapping):  # a sub-table: one line per entry
            for k, v in default.items():
                expected[f"{table.header}.{d.key}", k] = (table.optional, v)
            continue
        shown = default if d.literal else d.setting.example
        expected[table.header, d.key] = (table.optional or not d.literal, toml_value(shown))
    assert entries == expected
    # The two keys `gateway init` once left out (issue 8).
    assert entries["filing", "max_attempts"] == (False, 5)
    assert entries["outbound", "workers"] == (False, 1)


def _readme_rows() -> dict[tuple[str, str], str]:
    text = README.read_text(encoding="utf-8")
    assert "\n## Settings\n" in text, "README.md has no Settings section"
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[tuple[str, str], str] = {}
    for line in section.splitlines():
        if cell := re.fullmatch(r"\| `\[([\w.]+)\]` \| `(\w+)` \| (.*?) \| .* \|", line):
            rows[cell[1], cell[2]] = cell[3]
    return rows


def test_readme_settings_table_has_every_key_with_its_default() -> None:
    rows = _readme_rows()
    declared = {(t.name, d.key): d for t, d in EVERY_SETTING}
    assert sorted(rows) == sorted(declared), "keys missing from or extra in the README table"
    for where, cell in rows.items():
        d = declared[where]
        if d.literal:
            assert cell.startswith("`") and cell.endswith("`"), where
            assert tomllib.loads(f"v = {cell[1:-1]}")["v"] == toml_value(d.default), where
        else:
            assert cell == d.setting.default_text, where


def test_readme_settings_table_is_the_generated_one() -> None:
    # Also catches a help text or a bound changed in the declarations only.
    assert settings_table() in README.read_text(encoding="utf-8")


@pytest.mark.parametrize(("table", "d"), BOUNDED)
def test_every_bound_is_enforced_and_named(tmp_path: Path, table: Table, d: Declared) -> None:
    s = d.setting
    assert s.low is not None and s.high is not None
    parse_config(_data(table, d.key, s.low), base=tmp_path)
    parse_config(_data(table, d.key, s.high), base=tmp_path)
    shown = table.name.replace("NAME", "box")
    for wrong in (s.low - 1, s.high + 1):
        message = f"{shown}.{d.key}: must be between {s.low} and {s.high}, got {wrong}"
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_config(_data(table, d.key, wrong), base=tmp_path)


@pytest.mark.parametrize(("table", "d"), CHOICES)
def test_every_choice_is_enforced_and_named(tmp_path: Path, table: Table, d: Declared) -> None:
    for choice in d.setting.choices:
        parse_config(_data(table, d.key, choice), base=tmp_path)
    shown = table.name.replace("NAME", "box")
    with pytest.raises(ConfigError, match=re.escape(f"{shown}.{d.key}: ")) as error:
        parse_config(_data(table, d.key, "bogus"), base=tmp_path)
    assert "got 'bogus'" in str(error.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"smtp": {"port": -1}}, "smtp.port: must be between 0 and 65535, got -1"),
        ({"smtp": {"port": True}}, "smtp.port: expected an integer, got True"),
        ({"filing": {"poll_seconds": "fast"}}, "filing.poll_seconds: expected an integer or"),
        ({"logging": {"level": "loud"}}, "logging.level: one of debug, info, warning, error"),
        ({"imap": {"sources": {"box": {"after": "delete"}}}}, "imap.sources.box.host: give"),
        ({"outbound": {"smarthost": {"port": 25}}}, "outbound.smarthost.host: give the relay"),
        ({"outbound": {"sender": "nobody"}}, "outbound.sender: 'nobody' is not an address"),
        ({"filing": {"journals": {"compta": "a/b"}}}, "filing.journals.compta: folder must"),
        ({"gateway": {"domains": []}}, "gateway.domains: list at least one mail domain"),
        ({"extraction": {"max_zip_ratio": 1}}, "extraction.max_zip_ratio: must be between 2"),
        ({"storage": {"path": 3}}, "storage.path: expected a string, got 3"),
        ({"stroage": {}}, "[top level]: unknown key 'stroage'"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(data, base=tmp_path)


def test_values_are_normalised_and_resolved(tmp_path: Path) -> None:
    config = parse_config(
        {
            "gateway": {"domains": ["Welyb.FR"]},
            "database": {"url": "postgresql://u@h/db"},
            "storage": {"path": "data"},
            "filing": {"journals": {}, "poll_seconds": 1},
            "logging": {"level": "DEBUG"},
            "outbound": {"sender": ""},
            "imap": {"sources": {"box": {"host": " h ", "user": "u", "password_env": "P"}}},
        },
        base=tmp_path,
    )
    assert config.domains == ("welyb.fr",)
    assert config.database_url == "postgresql+psycopg://u@h/db"
    assert config.storage_path == tmp_path / "data"
    assert config.filing.journals == parse_config({}, base=tmp_path).filing.journals
    assert config.filing.poll_seconds == 1.0 and isinstance(config.filing.poll_seconds, float)
    assert config.logging.level == "debug"
    assert config.outbound.sender is None
    assert config.imap_sources["box"].host == "h"
    starttls = {"host": "h", "user": "u", "password_env": "P", "tls": "starttls"}
    other = parse_config({"imap": {"sources": {"box": starttls}}}, base=tmp_path)
    assert other.imap_sources["box"].port == 143

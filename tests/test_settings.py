"""Each setting is declared once: the parser, `gateway init`'s TOML, the README and the
environment variables that override the file agree.

When the README test fails after a declaration changed, regenerate the table with
`.venv/bin/python -c "from gateway.config import settings_table; print(settings_table())"`.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.config import (
    TABLES,
    ConfigError,
    default_toml,
    load_config,
    parse_config,
    settings_table,
)
from gateway.config.declare import Declared
from gateway.config.environment import lay_over, variable
from gateway.config.render import toml_literal, toml_value
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
    if table.name == "imap.sources.NAME.oauth2":
        # The least each provider needs, so that every choice of `provider` is valid.
        oauth: dict[str, Any] = {
            "microsoft": {"tenant": "t", "client_id": "app", "client_secret_env": "CS"},
            "google": {"client_id": "app", "client_secret_env": "CS", "refresh_token_env": "RT"},
        }.get(value if key == "provider" else "", {})
        oauth = oauth or {
            "provider": "token-endpoint",
            "client_id": "app",
            "token_url": "https://id.example.net/token",
            "refresh_token_env": "RT",
        }
        source = {"host": "127.0.0.1", "user": "u", "oauth2": {**oauth, key: value}}
        return {"gateway": {"secrets_key_env": "KEY"}, "imap": {"sources": {"box": source}}}
    if table.name == "webhooks.NAME":
        hook = {"url": "https://ged.example/hooks", "secret_env": "WS", key: value}
        if key == "secret_file":
            del hook["secret_env"]
        if key in ("retry_min_seconds", "retry_max_seconds"):  # either may take any value
            hook = {"retry_min_seconds": 1, "retry_max_seconds": 86400, **hook}
        return {"webhooks": {"box": hook}}
    if table.name == "outbound.smarthost":
        return {"outbound": {"smarthost": {"host": "relay.example.net", key: value}}}
    if table.name == "storage.s3" or (key, value) == ("backend", "s3"):
        s3 = {"endpoint": "http://127.0.0.1:9000", "bucket": "docs"}
        s3 |= {key: value} if table.name == "storage.s3" else {}
        keyed = {"secrets_key_env": "GATEWAY_SECRETS_KEY"}  # what a stateless node needs
        return {"storage": {"backend": "s3", "s3": s3}, "gateway": keyed}
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
        row = r"\| `\[([\w.]+)\]` \| `(\w+)` \| `[\w<>]+` \| (.*?) \| .* \|"
        if cell := re.fullmatch(row, line):
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


# -- the environment's variables (gateway/config/environment.py) ------------------------------


def _without(data: dict[str, Any], table: Table, key: str) -> dict[str, Any]:
    """`data` less `key` of `table` (the file that leaves that key to the environment)."""
    data = copy.deepcopy(data)
    place = data
    for part in table.name.replace("NAME", "box").split("."):
        place = place[part]
    del place[key]
    return data


def _by_key(message: str, name: str) -> str:
    """An error about a variable as it reads about the file's key: `GATEWAY_X (x): …` -> `x: …`."""
    return re.sub(rf"{name} \(([\w.]+)\)", r"\1", message)


def _parsed(data: dict[str, Any], base: Path, environ: dict[str, str]) -> Any:
    try:
        return parse_config(data, base=base, environ=environ)
    except ConfigError as exc:
        return _by_key(str(exc), *environ) if environ else str(exc)


@pytest.mark.parametrize(("table", "d"), [pytest.param(*c, id=i) for i, c in CASES.items()])
def test_every_setting_has_a_variable_read_as_the_file_is(
    tmp_path: Path, table: Table, d: Declared
) -> None:
    value = toml_value(d.default if d.literal else d.setting.example)
    name = variable(table.name.replace("NAME", "box"), d.key)
    text = value if isinstance(value, str) else toml_literal(value)
    in_file = _data(table, d.key, value)
    left_out = _without(in_file, table, d.key)
    # The variable lands on its key, and says so for the messages ...
    merged, origins = lay_over(left_out, {name: text})
    assert merged == in_file
    assert origins == {f"{table.name.replace('NAME', 'box')}.{d.key}": name}
    # ... where it goes through the file's checks: the same settings, or the same error.
    assert _parsed(left_out, tmp_path, {name: text}) == _parsed(in_file, tmp_path, {})


def test_every_variable_is_one_settings_own() -> None:
    names = [variable(t.name, d.key) for t, d in EVERY_SETTING if "NAME" not in t.name]
    assert len(set(names)) == len(names)
    assert "GATEWAY_CONFIG" not in names
    assert {"GATEWAY_DATABASE_URL", "GATEWAY_NODE_NAME", "GATEWAY_SMTP_PORT"} <= set(names)


def test_the_environment_overrides_strings_ints_bools_and_nested_tables(tmp_path: Path) -> None:
    data = {"gateway": {"node_name": "from-file"}, "smtp": {"port": 25}}
    config = parse_config(
        data,
        base=tmp_path,
        environ={
            "GATEWAY_NODE_NAME": "mx2",
            "GATEWAY_SMTP_PORT": "2600",
            "GATEWAY_FILING_POLL_SECONDS": "0.5",
            "GATEWAY_DOMAINS": '["Example.FR"]',
            "GATEWAY_OUTBOUND_SMARTHOST_HOST": "relay.example.net",
            "GATEWAY_OUTBOUND_SMARTHOST_STARTTLS": "false",
            "GATEWAY_FILING_JOURNALS": '{ compta = "Comptabilité" }',
            "GATEWAY_IMAP_SOURCES_BOITE_ACHATS_HOST": "127.0.0.1",
            "GATEWAY_IMAP_SOURCES_BOITE_ACHATS_USER": "achats",
            "GATEWAY_IMAP_SOURCES_BOITE_ACHATS_PASSWORD_ENV": "ACHATS_PASSWORD",
            "GATEWAY_IMAP_SOURCES_BOITE_ACHATS_TLS": "none",
            "GATEWAY_CONFIG": "/elsewhere/gateway.toml",  # not a setting: left alone
            "GATEWAY_TEST_REQUIRE_POSTGRES": "1",
        },
    )
    assert config.node_name == "mx2"
    assert config.smtp.port == 2600
    assert config.filing.poll_seconds == 0.5
    assert config.domains == ("example.fr",)  # normalised as the file's would be
    assert config.outbound.smarthost is not None
    assert config.outbound.smarthost.host == "relay.example.net"
    assert config.outbound.smarthost.starttls is False
    assert config.filing.journals == {"compta": "Comptabilité"}
    source = config.imap_sources["boite-achats"]
    assert (source.host, source.user, source.port) == ("127.0.0.1", "achats", 143)


def test_gateway_database_url_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[database]\nurl = "sqlite:///gateway.db"\n', encoding="utf-8")
    url = "postgresql+psycopg://gateway:secret@db.internal:5432/gateway"
    assert load_config(path, {}).database_url == f"sqlite:///{tmp_path / 'gateway.db'}"
    assert load_config(path, {"GATEWAY_DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"GATEWAY_SMTP_PORT": "70000"}, "GATEWAY_SMTP_PORT (smtp.port): must be between 0"),
        ({"GATEWAY_SMTP_PORT": "twenty"}, "GATEWAY_SMTP_PORT (smtp.port): expected an integer"),
        ({"GATEWAY_SMTP_PORT": ""}, "GATEWAY_SMTP_PORT (smtp.port): expected an integer"),
        ({"GATEWAY_DOMAINS": "welyb.fr"}, "GATEWAY_DOMAINS (gateway.domains): expected a list"),
        ({"GATEWAY_NODE_NAME": " "}, "GATEWAY_NODE_NAME (gateway.node_name): must not be empty"),
        ({"GATEWAY_DATABASE_URL": ""}, "GATEWAY_DATABASE_URL (database.url): is empty"),
        (
            {"GATEWAY_DATABASE_URL": "postgresql://gateway:secret@db:port/gateway"},
            "GATEWAY_DATABASE_URL (database.url): 'postgresql+psycopg://gateway:***@db:port/",
        ),
        ({"GATEWAY_DATABASE_ULR": "x"}, "GATEWAY_DATABASE_ULR: no setting has this environment"),
        ({"GATEWAY_LOGGING_LEVEL": "loud"}, "GATEWAY_LOGGING_LEVEL (logging.level): one of"),
        (
            {
                "GATEWAY_OUTBOUND_SMARTHOST_HOST": "relay",
                "GATEWAY_OUTBOUND_SMARTHOST_STARTTLS": "1",
            },
            "GATEWAY_OUTBOUND_SMARTHOST_STARTTLS (outbound.smarthost.starttls): expected true",
        ),
        (
            {"GATEWAY_FILING_JOURNALS": '{ compta = "a/b" }'},
            "GATEWAY_FILING_JOURNALS (filing.journals.compta): folder must",
        ),
    ],
)
def test_a_bad_value_names_the_variable(
    tmp_path: Path, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        parse_config({}, base=tmp_path, environ=environ)
    assert "secret" not in str(error.value)


def test_a_variable_named_as_a_password_is_not_taken_for_a_typo(tmp_path: Path) -> None:
    relay = {"host": "relay.example.net", "password_env": "GATEWAY_OUTBOUND_SMARTHOST_SECRET"}
    environ = {"GATEWAY_OUTBOUND_SMARTHOST_SECRET": "s3cret"}
    config = parse_config({"outbound": {"smarthost": relay}}, base=tmp_path, environ=environ)
    assert config.outbound.smarthost is not None
    with pytest.raises(ConfigError, match="GATEWAY_OUTBOUND_SMARTHOST_SECRET: no setting"):
        parse_config({}, base=tmp_path, environ=environ)


def test_the_command_line_reads_its_environment(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "messages", "list", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GATEWAY_SMTP_PORT": "70000"},
    )
    assert result.returncode == 1
    assert result.stderr == (
        "gateway: GATEWAY_SMTP_PORT (smtp.port): must be between 0 and 65535, got 70000\n"
    )

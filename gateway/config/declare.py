"""How a setting is declared, and the reader that applies the declarations to one TOML table.

A table of the file is a frozen dataclass; each field that is a setting is made by `setting`,
`computed` or `required`, which keep a `Setting` in the field's metadata: its help text, its
bounds, its allowed values and its check sit beside its default. The parser (`parse.py`),
`gateway init`'s commented TOML and the README's table (`render.py`) all read these
declarations, so a default or a bound is written in one place only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError

SETTING = "setting"  # the metadata key of a declared field


class ConfigError(GatewayError):
    """The configuration is wrong; the message says which key and how to fix it."""


class Invalid(GatewayError):
    """Raised by a setting's check: what would be right. The reader adds the key's name."""

    def __init__(self, text: str, subkey: str = "") -> None:
        super().__init__(text)
        self.text = text
        self.subkey = subkey  # e.g. the journal whose folder is wrong in filing.journals


@dataclass(frozen=True)
class Setting:
    """One key of the file: everything but its default, which is the field's."""

    help: str
    kind: tuple[type, ...]  # the TOML types accepted
    low: int | None = None
    high: int | None = None
    choices: tuple[str, ...] = ()
    # Normalises a value (strip, lower-case, list -> tuple) or raises Invalid; runs before
    # the bounds and the choices are checked.
    check: Callable[[Any], Any] | None = None
    # Turns the checked value into the one used, given the configuration file's folder.
    resolve: Callable[[Any, Path], Any] | None = None
    unit: str = ""  # "bytes" shows the bounds as KiB/MiB/GiB
    default_text: str = ""  # the default in words, when it is computed or unset
    example: Any = None  # shown commented out when the default is in words
    missing: str = ""  # a required key: what to say when it is absent or empty
    table: str = ""  # the TOML table when it is not the one of the class declaring it
    key: str = ""  # the TOML key when it is not the attribute's name

    @property
    def required(self) -> bool:
        return bool(self.missing)


def _kind(default: Any) -> tuple[type, ...]:
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, int):
        return (int,)
    if isinstance(default, float):
        return (int, float)  # `poll_seconds = 1` is as good as 1.0
    if isinstance(default, tuple | list):
        return (list,)
    if isinstance(default, Mapping):
        return (dict,)
    return (str,)  # strings, paths, and unset or computed names


def setting(
    default: Any,
    help: str,
    *,
    low: int | None = None,
    high: int | None = None,
    choices: tuple[str, ...] = (),
    check: Callable[[Any], Any] | None = None,
    resolve: Callable[[Any, Path], Any] | None = None,
    unit: str = "",
    default_text: str = "",
    example: Any = None,
    table: str = "",
    key: str = "",
) -> Any:
    """A key with a fixed default (None: unset, then `default_text` and `example` say more)."""
    if default is None and not (default_text and example is not None):
        raise TypeError(f"{key or help!r}: an unset default needs default_text and example")
    meta = Setting(
        help=help,
        kind=_kind(default),
        low=low,
        high=high,
        choices=choices,
        check=check,
        resolve=resolve,
        unit=unit,
        default_text=default_text,
        example=example,
        table=table,
        key=key,
    )
    if isinstance(default, Mapping):
        return field(default_factory=partial(dict, default), metadata={SETTING: meta})
    return field(default=default, metadata={SETTING: meta})


def computed(
    factory: Callable[[], Any],
    help: str,
    *,
    default_text: str,
    example: Any,
    table: str = "",
    check: Callable[[Any], Any] | None = None,
) -> Any:
    """A key whose default is worked out on this machine (a host name): shown in words."""
    meta = Setting(
        help, (str,), check=check, default_text=default_text, example=example, table=table
    )
    return field(default_factory=factory, metadata={SETTING: meta})


def required(
    help: str,
    *,
    missing: str,
    example: Any,
    check: Callable[[Any], Any] | None = None,
) -> Any:
    """A key with no default: absent or empty, the reader says `missing`."""
    meta = Setting(
        help, (str,), check=check, default_text="required", example=example, missing=missing
    )
    return field(metadata={SETTING: meta})


@dataclass(frozen=True)
class Declared:
    """A setting where it stands: its table, its key, the attribute that holds its value."""

    attribute: str
    table: str
    key: str
    setting: Setting
    field: dataclasses.Field[Any]

    @property
    def default(self) -> Any:
        """The default value (None when unset or required, a fresh copy of a mapping)."""
        if self.field.default is not MISSING:
            return self.field.default
        if self.field.default_factory is not MISSING:
            return self.field.default_factory()
        return None

    @property
    def is_table(self) -> bool:
        """Whether the value is a table of its own (`[filing.journals]`)."""
        return self.setting.kind == (dict,)

    @property
    def literal(self) -> bool:
        """Whether the default is a value to write in the file rather than words."""
        return not self.setting.default_text


def declared(cls: type, table: str) -> list[Declared]:
    """The settings of `cls` that live in `table`, in the order they are declared."""
    found = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(SETTING)
        if isinstance(meta, Setting) and (meta.table or table) == table:
            found.append(Declared(f.name, table, meta.key or f.name, meta, f))
    return found


class TableReader:
    """Reads one table, checking types, and complains about keys nobody reads."""

    def __init__(self, data: Any, name: str, origins: Mapping[str, str] | None = None) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"[{name}] must be a table")
        self.data: Mapping[str, Any] = data
        self.name = name
        self.read: set[str] = set()
        # "smtp.port" -> "GATEWAY_SMTP_PORT": the keys an environment variable set
        # (environment.py), which messages name by that variable.
        self.origins: Mapping[str, str] = origins or {}

    def key(self, key: str) -> str:
        return key if self.name == "top level" else f"{self.name}.{key}"

    def where(self, key: str, subkey: str = "") -> str:
        """A key as a message names it: `smtp.port`, or `GATEWAY_SMTP_PORT (smtp.port)` when
        the environment set it."""
        full = self.key(key) + (f".{subkey}" if subkey else "")
        variable = self.origins.get(self.key(key))
        return f"{variable} ({full})" if variable else full

    def table(self, key: str) -> TableReader:
        self.read.add(key)
        return TableReader(self.data.get(key, {}), self.key(key), self.origins)

    def get(self, key: str, kinds: tuple[type, ...], default: Any) -> Any:
        self.read.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        # bool is an int in Python; a port of `true` is a mistake worth naming.
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            hint = ", written as in TOML" if self.key(key) in self.origins else ""
            raise ConfigError(
                f"{self.where(key)}: expected {_kind_name(kinds)}{hint}, got {value!r}"
            )
        return value

    def value(self, d: Declared, base: Path) -> Any:
        """One setting's value: the file's or the default, checked, bounded and resolved."""
        s = d.setting
        raw = self.get(d.key, s.kind, None)  # a TOML value is never None: None is absent
        if raw is None:
            raw = d.default
            if raw is None and not s.required:
                return None
        elif raw == "" and d.field.default is None:
            return None  # an empty string unsets an optional key
        where = self.where(d.key)
        value = float(raw) if float in s.kind else raw
        try:
            value = s.check(value) if s.check and value is not None else value
        except Invalid as exc:
            raise ConfigError(f"{self.where(d.key, exc.subkey)}: {exc.text}") from exc
        if s.required and not value:
            raise ConfigError(f"{where}: {s.missing}")
        if s.choices and value not in s.choices:
            raise ConfigError(f"{where}: {choices_text(s.choices)}; got {value!r}")
        if s.low is not None and s.high is not None and not s.low <= value <= s.high:
            raise ConfigError(f"{where}: must be between {s.low} and {s.high}, got {value}")
        return s.resolve(value, base) if s.resolve else value

    def values(self, cls: type, base: Path, table: str | None = None) -> dict[str, Any]:
        """Every setting `cls` declares for this table, by attribute name."""
        found = declared(cls, self.name if table is None else table)
        return {d.attribute: self.value(d, base) for d in found}

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            raise ConfigError(
                f"[{self.name}]: unknown key {', '.join(repr(k) for k in unknown)} "
                f"(known: {', '.join(sorted(self.read))})"
            )


def choices_text(choices: tuple[str, ...]) -> str:
    if len(choices) == 2:
        return f"{choices[0]!r} or {choices[1]!r}"
    return f"one of {', '.join(choices)}"


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def in_folder(value: str | Path, base: Path) -> Path:
    """A path as written in the file: relative ones are relative to the file's folder."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p

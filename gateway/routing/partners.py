"""The partner registry (gateway/routing/partners.toml, shipped with the package; an edited
copy named by `gateway.partner_registry` overrides it) and the small engine that reads it.

A partner is data: the local-part patterns of its bot identity and of the aliases a cabinet
may enter, the destination each alias stands for, and its sending rules. Adding a partner is
a few lines of TOML, not code.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError
from gateway.routing.sender_policy import SenderPolicyError, parse_allow_entries
from gateway.routing.slugs import SLUG_RE


class RegistryError(GatewayError):
    """The partner registry file is wrong; the message names the partner and the key."""


# Placeholder types. Local parts are matched lower-cased (R1), so `code` normalises upward.
_FIELD_TYPES: dict[str, str] = {
    "slug": SLUG_RE.pattern,
    "digits": r"[0-9]{1,12}",
    "code": r"[a-z]{1,12}",
    "word": r"[a-z0-9._-]{1,64}",
}
_PLACEHOLDER = re.compile(r"\{([a-z_]+)(?::([a-z]+))?\}")


@dataclass(frozen=True)
class LocalPattern:
    """A local-part pattern such as `meg+achats+{name:slug}`, compiled to a regex."""

    source: str
    regex: re.Pattern[str]
    fields: tuple[tuple[str, str], ...]

    @classmethod
    def compile(cls, source: str, where: str) -> LocalPattern:
        parts: list[str] = []
        fields: list[tuple[str, str]] = []
        pos = 0
        for m in _PLACEHOLDER.finditer(source):
            parts.append(re.escape(source[pos : m.start()]))
            name, kind = m.group(1), m.group(2) or "slug"
            if kind not in _FIELD_TYPES:
                raise RegistryError(
                    f"{where}: placeholder {{{name}:{kind}}} has unknown type {kind!r} "
                    f"(known: {', '.join(_FIELD_TYPES)})"
                )
            if any(name == f for f, _ in fields):
                raise RegistryError(f"{where}: placeholder {name!r} appears twice")
            parts.append(f"(?P<{name}>{_FIELD_TYPES[kind]})")
            fields.append((name, kind))
            pos = m.end()
        parts.append(re.escape(source[pos:]))
        if not fields:
            raise RegistryError(f"{where}: pattern {source!r} has no placeholder")
        return cls(source, re.compile("".join(parts)), tuple(fields))

    @property
    def prefix(self) -> str:
        """The literal text before the first placeholder: `meg+achats+`."""
        return self.source.split("{", 1)[0]

    def match(self, local: str) -> dict[str, str] | None:
        m = self.regex.fullmatch(local)
        if m is None:
            return None
        values = m.groupdict()
        for name, kind in self.fields:
            if kind == "code":
                values[name] = values[name].upper()
        return values

    def render(self, values: Mapping[str, str]) -> str:
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.source)


@dataclass(frozen=True)
class AliasForm:
    pattern: LocalPattern
    destination: str  # a template over the pattern's fields: "{name}@factures-meg.fr"


@dataclass(frozen=True)
class Partner:
    name: str
    display_name: str
    sender: str  # "bot" or "gateway"
    schedule_minutes: int
    bot_identity: LocalPattern | None = None
    bot_scope: str | None = None  # "cabinet" | "company"
    aliases: tuple[AliasForm, ...] = ()
    external: bool = False
    max_document_bytes: int | None = None
    refused_types: frozenset[str] = field(default_factory=frozenset)
    journal: str | None = None
    # Domains the partner sends from when it pushes mail in (MEG's sales invoices, R5):
    # allow-list entries (sender_policy.py) for every company connected to it.
    sending_domains: tuple[str, ...] = ()

    def next_run(self, after: datetime) -> datetime:
        """The partner's first run strictly after `after` (R12): runs fall on multiples of
        `schedule_minutes` counted from midnight UTC (hourly: :00; every 15 min: :00, :15…),
        so sending is never instantaneous and a due document goes out on the next run."""
        period = self.schedule_minutes * 60
        seconds = int(after.astimezone(UTC).timestamp())
        return datetime.fromtimestamp((seconds // period + 1) * period, UTC)

    def limit_problem(self, size: int, media_type: str) -> str | None:
        """Why a document may not go to this partner (R14), or None."""
        if media_type in self.refused_types:
            return f"{self.display_name} does not take {media_type} documents"
        limit = self.max_document_bytes
        if limit is not None and size > limit:
            # The exact byte figure: "10 Mo" could be read as 10,000,000 or 10 × 1024².
            mib = f" ({limit // 1024**2} MiB)" if limit % 1024**2 == 0 else ""
            return (
                f"{self.display_name} takes documents up to {limit:,} bytes{mib}; "
                f"this one is {size:,} bytes"
            )
        return None

    @property
    def prefixes(self) -> set[str]:
        """First labels of the local parts this partner owns on our domains (`meg`)."""
        found = {a.pattern.prefix.split("+", 1)[0] for a in self.aliases}
        if self.bot_identity is not None:
            found.add(self.bot_identity.prefix.split("+", 1)[0])
        return found


@dataclass(frozen=True)
class PartnerRegistry:
    partners: tuple[Partner, ...]

    def get(self, name: str) -> Partner | None:
        name = name.lower()
        return next((p for p in self.partners if p.name == name), None)

    def owning_prefix(self, first_label: str) -> Partner | None:
        return next((p for p in self.partners if first_label in p.prefixes), None)


def load_registry(path: Path) -> PartnerRegistry:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RegistryError(f"{path}: partner registry not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{path}: not valid TOML: {exc}") from exc
    return parse_registry(data.get("partner", {}), str(path))


def parse_registry(table: Mapping[str, Any], where: str = "registry") -> PartnerRegistry:
    partners = [_partner(name, spec, f"{where}: partner.{name}") for name, spec in table.items()]
    _check_prefixes_disjoint(partners, where)
    return PartnerRegistry(tuple(partners))


def _partner(name: str, spec: Mapping[str, Any], where: str) -> Partner:
    if not SLUG_RE.fullmatch(name):
        raise RegistryError(f"{where}: partner name must be a slug")
    known = {
        "display_name",
        "bot_identity",
        "bot_scope",
        "aliases",
        "external",
        "sender",
        "schedule_minutes",
        "max_document_bytes",
        "refused_types",
        "journal",
        "sending_domains",
    }
    unknown = set(spec) - known
    if unknown:
        raise RegistryError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    bot = spec.get("bot_identity")
    bot_pattern = LocalPattern.compile(bot, f"{where}.bot_identity") if bot else None
    scope = spec.get("bot_scope")
    if bot_pattern is not None:
        if scope not in {"cabinet", "company"}:
            raise RegistryError(f"{where}.bot_scope: 'cabinet' or 'company' for a bot identity")
        if scope not in dict(bot_pattern.fields):
            raise RegistryError(f"{where}.bot_identity: must contain {{{scope}:slug}}")
    aliases = tuple(
        _alias(a, f"{where}.aliases[{i}]") for i, a in enumerate(spec.get("aliases", []))
    )
    external = bool(spec.get("external", False))
    if not aliases and not external:
        raise RegistryError(f"{where}: give `aliases`, or `external = true`")
    sender = spec.get("sender", "gateway")
    if sender not in {"bot", "gateway"}:
        raise RegistryError(f"{where}.sender: 'bot' or 'gateway', got {sender!r}")
    if sender == "bot" and bot_pattern is None:
        raise RegistryError(f"{where}.sender: 'bot' needs a bot_identity")
    minutes = spec.get("schedule_minutes", 15)
    if not isinstance(minutes, int) or isinstance(minutes, bool) or not 1 <= minutes <= 24 * 60:
        raise RegistryError(f"{where}.schedule_minutes: an integer from 1 to 1440")
    limit = spec.get("max_document_bytes")
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise RegistryError(f"{where}.max_document_bytes: a positive integer")
    return Partner(
        name=name,
        display_name=str(spec.get("display_name", name)),
        sender=sender,
        schedule_minutes=minutes,
        bot_identity=bot_pattern,
        bot_scope=scope if bot_pattern else None,
        aliases=aliases,
        external=external,
        max_document_bytes=limit,
        refused_types=frozenset(spec.get("refused_types", [])),
        journal=spec.get("journal"),
        sending_domains=_sending_domains(spec.get("sending_domains", []), where),
    )


def _sending_domains(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(d, str) and "@" not in d for d in value):
        raise RegistryError(f'{where}.sending_domains: a list of domains, e.g. ["factures-meg.fr"]')
    try:
        return parse_allow_entries(value)
    except SenderPolicyError as exc:
        raise RegistryError(f"{where}.sending_domains: {exc}") from exc


def _alias(spec: Any, where: str) -> AliasForm:
    if not isinstance(spec, Mapping) or set(spec) != {"pattern", "destination"}:
        raise RegistryError(f"{where}: expected {{ pattern = ..., destination = ... }}")
    pattern = LocalPattern.compile(spec["pattern"], where)
    names = {n for n, _ in pattern.fields}
    used = {m.group(1) for m in _PLACEHOLDER.finditer(spec["destination"])}
    if not used <= names:
        raise RegistryError(
            f"{where}.destination uses {sorted(used - names)}, "
            f"not in the pattern {pattern.source!r}"
        )
    return AliasForm(pattern, spec["destination"])


def _check_prefixes_disjoint(partners: Iterable[Partner], where: str) -> None:
    owner: dict[str, str] = {}
    for p in partners:
        for prefix in p.prefixes:
            if prefix in owner:
                raise RegistryError(
                    f"{where}: prefix {prefix!r} is used by both {owner[prefix]} and {p.name}"
                )
            owner[prefix] = p.name

"""Checks of one setting's value: each returns the value to use or raises Invalid.

The reader (`declare.TableReader`) adds the key's name to the message, so a message here
says only what is wrong and what would be right.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from gateway.config.declare import Invalid
from gateway.routing.addresses import split_address
from gateway.routing.sender_policy import SenderPolicyError, parse_allow_entries
from gateway.routing.slugs import DOMAIN_RE, SLUG_RE

DEFAULT_JOURNALS: dict[str, str] = {
    "compta": "Achats",
    "achats": "Achats",
    "ventes": "Ventes",
    "social": "Social",
    "banque": "Banque",
}


def domains(value: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise Invalid("list at least one mail domain to serve")
    for d in value:
        if not isinstance(d, str) or not DOMAIN_RE.fullmatch(d.lower()):
            raise Invalid(f"{d!r} is not a domain name (e.g. 'welyb.fr')")
    return tuple(d.lower() for d in value)


def database_scheme(url: str) -> str:
    if not url.strip():
        raise Invalid("is empty; use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")
    for bare in ("postgresql:", "postgres:"):
        if url.startswith(bare):
            # psycopg 3 is what we install; SQLAlchemy's bare scheme means psycopg2, and
            # it does not know postgres: (the form many hosting services hand out).
            url = "postgresql+psycopg:" + url[len(bare) :]
    if not url.startswith(("sqlite:", "postgresql+psycopg:")):
        raise Invalid(
            f"{_without_password(url)!r} is not supported; use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST/DB"
        )
    try:
        make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise Invalid(
            f"{_without_password(url)!r} is not a valid URL ({exc}); "
            "e.g. postgresql+psycopg://USER:PASSWORD@HOST:5432/DB"
        ) from exc
    return url


def _without_password(url: str) -> str:
    """The URL as an error may show it: a password in it becomes ***."""
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)


def sqlite_in_folder(url: str, base: Path) -> str:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rest = url[len("sqlite:///") :]
        if rest and rest != ":memory:":
            return "sqlite:///" + str(base / rest)
    return url


def folder_template(template: str) -> str:
    try:
        template.format(fiscal_year="2026", journal_folder="Achats", month="01", journal="achats")
    except (KeyError, IndexError, ValueError) as exc:
        raise Invalid(
            f"{template!r} uses an unknown placeholder ({exc}); "
            "known: {fiscal_year}, {journal_folder}, {journal}, {month}"
        ) from exc
    return template


def time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise Invalid(f"unknown time zone {name!r} (e.g. 'Europe/Paris')") from exc
    return name


def journals(value: Mapping[str, Any]) -> dict[str, str]:
    journals: dict[str, str] = {}
    for name, folder in (value or DEFAULT_JOURNALS).items():
        if not SLUG_RE.fullmatch(name):
            raise Invalid(
                f"{name!r} is not a valid journal name (lower-case letters, digits and hyphens)"
            )
        if not isinstance(folder, str) or not folder.strip() or "/" in folder:
            raise Invalid("folder must be a non-empty name without '/'", subkey=name)
        journals[name] = folder.strip()
    return journals


def address(value: str) -> str:
    if split_address(value) is None:
        raise Invalid(f"{value!r} is not an address (e.g. documents@welyb.fr)")
    return value


def folders(value: list[Any] | tuple[Any, ...]) -> tuple[str, ...]:
    if not value or not all(isinstance(f, str) and f.strip() for f in value):
        raise Invalid('list the folders to read, e.g. ["INBOX"]')
    if len(set(value)) != len(value):
        raise Invalid("a folder is listed twice")
    return tuple(f.strip() for f in value)


def imap_keyword(flag: str) -> str:
    if not flag or any(c in flag for c in ' ()"{%*]\\') or not flag.isascii():
        raise Invalid(f"an IMAP keyword such as '$Filed'; got {flag!r}")
    return flag


def positive(value: float) -> float:
    if value <= 0:
        raise Invalid("must be positive")
    return value


def node_name(value: str) -> str:
    # An empty name would make every node's claims look alike (GATEWAY_NODE_NAME="").
    if not value.strip():
        raise Invalid("must not be empty (e.g. 'mx1'); leave it out to use this host's name")
    return value.strip()


def stripped(value: str) -> str:
    return value.strip()


def lower(value: str) -> str:
    return value.lower()


def networks(value: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """CIDR networks (`10.0.0.0/8`, `::1/128`, or a bare address for one host)."""
    for n in value:
        try:
            ipaddress.ip_network(n, strict=False)
        except (TypeError, ValueError):
            raise Invalid(f"{n!r} is not a network (e.g. '10.0.0.0/8' or '::1')") from None
    return tuple(value)


def allow_entries(value: list[Any] | tuple[Any, ...]) -> tuple[str, ...]:
    """Sender-policy allow-list entries, normalised (lower case, IDNA)."""
    if not all(isinstance(e, str) for e in value):
        raise Invalid('a list of entries, e.g. ["billing@supplier.fr", "*.supplier.fr"]')
    try:
        return parse_allow_entries(value)
    except SenderPolicyError as exc:
        raise Invalid(str(exc)) from exc


def ip_addresses(value: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Addresses of servers (DNS), not names: a resolver is needed to find a name."""
    for a in value:
        try:
            ipaddress.ip_address(a)
        except (TypeError, ValueError):
            raise Invalid(f"{a!r} is not an IP address (e.g. '127.0.0.1' or '::1')") from None
    return tuple(value)


def lower_words(value: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    return tuple(str(v).strip().lower() for v in value)

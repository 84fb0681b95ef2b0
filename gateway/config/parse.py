"""Reading gateway.toml: finding the file, then every table through its declarations.

Each table is read by `TableReader.values` from the dataclass that declares it
(`settings.py`), once the environment's variables are laid over the file's tables
(`environment.py`; an error then names the variable). What is left here are the rules that
tie several keys together, and the two shapes that are not one table per dataclass:
`[outbound.smarthost]` (present or not) and `[imap.sources.NAME]` (a table of tables, one
per mailbox, whose `route` is checked against the domains served).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from gateway.config.api import ApiConfig
from gateway.config.declare import ConfigError, TableReader
from gateway.config.einvoice import EinvoiceConfig
from gateway.config.environment import lay_over
from gateway.config.imap_oauth import ImapOAuth2Config
from gateway.config.settings import (
    LOOPBACK_HOSTS,
    ExtractionConfig,
    FilingConfig,
    GatewayConfig,
    HttpConfig,
    ImapSourceConfig,
    LoggingConfig,
    OutboundConfig,
    SenderPolicyConfig,
    SmarthostConfig,
    SmtpConfig,
)
from gateway.config.storage import S3Config
from gateway.config.trust import ClamavConfig, RspamdConfig, TrustConfig
from gateway.config.webhooks import WebhookConfig
from gateway.routing.addresses import split_address
from gateway.routing.einvoice_filing import RulesError, load_rules
from gateway.routing.slugs import SLUG_RE

CONFIG_ENV = "GATEWAY_CONFIG"
DEFAULT_CONFIG_NAME = "gateway.toml"

T = TypeVar("T")
NO_ENVIRONMENT: Mapping[str, str] = MappingProxyType({})


def resolve_config_path(
    explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]
) -> Path:
    if explicit:
        return Path(explicit)
    env = environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return Path.cwd() / DEFAULT_CONFIG_NAME


def load_config(path: Path, environ: Mapping[str, str]) -> GatewayConfig:
    """The file at `path`, with the settings `environ` (the process's environment, passed
    in by the command line) overrides."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path}: no such configuration file (create one with `gateway init DIR`, "
            f"or pass -c FILE / set ${CONFIG_ENV})"
        ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(data, base=path.resolve().parent, path=path, environ=environ)


def parse_config(
    data: Mapping[str, Any],
    base: Path,
    path: Path | None = None,
    environ: Mapping[str, str] = NO_ENVIRONMENT,
) -> GatewayConfig:
    merged, origins = lay_over(data, environ)
    root = TableReader(merged, "top level", origins)
    top: dict[str, Any] = {}
    for name in ("gateway", "database", "storage"):
        table = root.table(name)
        top.update(table.values(GatewayConfig, base))
        if name == "storage":
            top["storage_s3"] = _s3(table, top["storage_backend"], base)
        table.finish()
    keyless = top["secrets_key_env"] is None and top["secrets_key_file"] is None
    if top["storage_backend"] == "s3" and keyless:
        # A stateless node keeps nothing of its own: the VERP secret and the DKIM keys must
        # be where every node reads them, sealed in the database.
        raise ConfigError(
            'storage.backend = "s3": nodes keep nothing of their own, so the VERP secret and '
            "the DKIM keys are kept encrypted in the database: set gateway.secrets_key_env or "
            "gateway.secrets_key_file (a key of 32 characters or more, e.g. from "
            "`openssl rand -base64 32`, the same on every node)"
        )
    smtp = _smtp(root.table("smtp"), base)
    filing = _read(root.table("filing"), FilingConfig, base)
    extraction = _read(root.table("extraction"), ExtractionConfig, base)
    einvoice = _read(root.table("einvoice"), EinvoiceConfig, base)
    try:  # checked now, against the journals: a wrong file is one line at start
        load_rules(einvoice.rules, filing.journals)
    except RulesError as exc:
        raise ConfigError(f"einvoice.rules: {exc}") from exc
    outbound = _outbound(root.table("outbound"), base)
    imap_sources = _imap(root.table("imap"), base, top["domains"])
    for source in imap_sources.values():
        if source.oauth2 is not None and source.oauth2.uses_refresh_token and keyless:
            raise ConfigError(
                f"imap.sources.{source.name}.oauth2: a refresh token is rotated and kept "
                "encrypted in the database: set gateway.secrets_key_env or "
                "gateway.secrets_key_file (a key of 32 characters or more, e.g. from "
                "`openssl rand -base64 32`, the same on every node)"
            )
    webhooks = _webhooks(root.table("webhooks"), base)
    logging = _read(root.table("logging"), LoggingConfig, base)
    http = _read(root.table("http"), HttpConfig, base)
    api = _read(root.table("api"), ApiConfig, base)
    trust = _read(root.table("trust"), TrustConfig, base)
    clamav = _read(root.table("clamav"), ClamavConfig, base)
    rspamd = _read(root.table("rspamd"), RspamdConfig, base)
    sender_policy = _read(root.table("sender_policy"), SenderPolicyConfig, base)
    root.finish()
    return GatewayConfig(
        path=path,
        smtp=smtp,
        filing=filing,
        extraction=extraction,
        einvoice=einvoice,
        logging=logging,
        http=http,
        api=api,
        trust=trust,
        clamav=clamav,
        rspamd=rspamd,
        outbound=outbound,
        sender_policy=sender_policy,
        imap_sources=imap_sources,
        webhooks=webhooks,
        **top,
    )


def _read(table: TableReader, cls: type[T], base: Path) -> T:
    """A table that is exactly its dataclass's settings."""
    config = cls(**table.values(cls, base))
    table.finish()
    return config


def _s3(storage: TableReader, backend: str, base: Path) -> S3Config | None:
    """[storage.s3]: read when backend = "s3" (its required keys then say so); present
    with the local backend, it would be silently ignored, so it is refused."""
    table = storage.table("s3")
    if backend != "s3":
        if table.data:
            raise ConfigError(
                'storage.s3: set, but storage.backend is "local"; set backend = "s3" to use '
                "it, or remove the table"
            )
        return None
    return _read(table, S3Config, base)


def _smtp(table: TableReader, base: Path) -> SmtpConfig:
    values = table.values(SmtpConfig, base)
    cert, key = values["tls_certificate"], values["tls_key"]
    if (cert is None) != (key is None):
        raise ConfigError("smtp.tls_certificate and smtp.tls_key: set both or neither")
    for name, p in (("tls_certificate", cert), ("tls_key", key)):
        if p is not None and not p.is_file():
            raise ConfigError(f"{table.where(name)}: {p} does not exist or is not a file")
    table.finish()
    return SmtpConfig(**values)


def _outbound(table: TableReader, base: Path) -> OutboundConfig:
    values = table.values(OutboundConfig, base)
    relay = table.table("smarthost")
    if relay.data:
        values["smarthost"] = smarthost = _read(relay, SmarthostConfig, base)
        if smarthost.username and not smarthost.password_env:
            raise ConfigError(
                "outbound.smarthost.password_env: name the environment variable that holds "
                "the password (it is never written in the TOML)"
            )
    if values["retry_max_seconds"] < values["retry_min_seconds"]:
        raise ConfigError("outbound.retry_max_seconds: must be at least retry_min_seconds")
    table.finish()
    return OutboundConfig(**values)


def _imap(table: TableReader, base: Path, domains: tuple[str, ...]) -> dict[str, ImapSourceConfig]:
    sources_table = table.table("sources")
    table.finish()
    sources: dict[str, ImapSourceConfig] = {}
    for name in sources_table.data:
        if not SLUG_RE.fullmatch(name):
            raise ConfigError(
                f"imap.sources.{name}: a source name is lower-case letters, digits and hyphens"
            )
        sources[name] = _imap_source(sources_table.table(name), name, base, domains)
    return sources


def _webhooks(table: TableReader, base: Path) -> dict[str, WebhookConfig]:
    hooks: dict[str, WebhookConfig] = {}
    for name in table.data:
        if not SLUG_RE.fullmatch(name):
            raise ConfigError(
                f"webhooks.{name}: a webhook name is lower-case letters, digits and hyphens"
            )
        hook_table = table.table(name)
        hooks[name] = hook = WebhookConfig(
            name=name, **hook_table.values(WebhookConfig, base, "webhooks.NAME")
        )
        hook_table.finish()
        hook.check()
    table.finish()
    return hooks


def _imap_source(
    table: TableReader, name: str, base: Path, domains: tuple[str, ...]
) -> ImapSourceConfig:
    v = table.values(ImapSourceConfig, base, "imap.sources.NAME")
    if v["tls"] == "none" and v["host"].lower() not in LOOPBACK_HOSTS:
        # A password in clear over the network is refused, not warned about.
        raise ConfigError(
            f"{table.where('tls')}: 'none' sends the password in clear and is only allowed for "
            f"a loopback host (127.0.0.1, ::1, localhost); use implicit or starttls for "
            f"{v['host']}"
        )
    if "port" not in table.data and v["tls"] != "implicit":
        v["port"] = 143
    oauth = table.table("oauth2")
    if oauth.data:
        v["oauth2"] = oauth2 = _read(oauth, ImapOAuth2Config, base)
        oauth2.check(oauth.name)
    logins = [k for k in ("password_env", "password_file") if v[k] is not None]
    logins += ["an [imap.sources.NAME.oauth2] table"] if oauth.data else []
    if len(logins) != 1:
        raise ConfigError(
            f"imap.sources.{name}: set exactly one of password_env (an environment variable "
            "holding the password), password_file (a file holding it) or an "
            f"[imap.sources.{name}.oauth2] table (Microsoft 365, Google Workspace); the "
            "password itself never goes in this file"
            + (f"; found {' and '.join(logins)}" if logins else "")
        )
    route = v["route"]
    if route != "recipient":
        parts = split_address(route)
        if parts is None or parts[1] not in domains:
            raise ConfigError(
                f"{table.where('route')}: 'recipient' or one of our collection addresses "
                f"(@{' / @'.join(domains)}), e.g. 'compta+dupont-maconnerie@{domains[0]}'; "
                f"got {route!r}"
            )
    processed, rejected = v["processed_folder"], v["rejected_folder"]
    named = processed and rejected and not {processed, rejected} & set(v["folders"])
    if v["after"] == "move" and not named:
        raise ConfigError(
            f"imap.sources.{name}: processed_folder and rejected_folder must be named and "
            "differ from the folders read (or mail would be read again)"
        )
    table.finish()
    return ImapSourceConfig(name=name, **v)

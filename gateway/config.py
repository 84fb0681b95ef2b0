"""Gateway configuration: one TOML file, validated at start-up.

Every error names the key that is wrong and what would be right, so a mail admin can fix the
file without reading code. Relative paths in the file are relative to the file's folder.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.errors import GatewayError
from gateway.routing.addresses import split_address
from gateway.routing.slugs import DOMAIN_RE, SLUG_RE

CONFIG_ENV = "GATEWAY_CONFIG"
DEFAULT_CONFIG_NAME = "gateway.toml"
SOURCE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARTNER_REGISTRY = SOURCE_ROOT / "config" / "partners.toml"

DEFAULT_JOURNALS: dict[str, str] = {
    "compta": "Achats",
    "achats": "Achats",
    "ventes": "Ventes",
    "social": "Social",
    "banque": "Banque",
}


class ConfigError(GatewayError):
    """The configuration is wrong; the message says which key and how to fix it."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 2525
    hostname: str = field(default_factory=socket.getfqdn)
    max_message_size: int = 25 * 1024 * 1024
    max_recipients: int = 50
    timeout_seconds: int = 300
    tls_certificate: Path | None = None
    tls_key: Path | None = None


@dataclass(frozen=True)
class FilingConfig:
    folder_template: str = "Dossier comptable annuel/{fiscal_year}/{journal_folder}/{month}"
    unsorted_folder: str = "A classer"
    timezone: str = "Europe/Paris"
    journals: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_JOURNALS))
    workers: int = 1
    poll_seconds: float = 0.2
    max_attempts: int = 5

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class ExtractionConfig:
    max_documents: int = 100
    max_zip_members: int = 200
    max_zip_total_bytes: int = 100 * 1024 * 1024
    max_zip_ratio: int = 100
    max_nesting_depth: int = 3


@dataclass(frozen=True)
class SmarthostConfig:
    host: str
    port: int = 587
    starttls: bool = True
    username: str | None = None
    password_env: str | None = None  # the password is read from this variable, never the TOML


@dataclass(frozen=True)
class OutboundConfig:
    """Sending documents to partners (R12–R17)."""

    sender: str | None = (
        None  # From for partners with sender = "gateway"; default documents@<first domain>
    )
    sender_name: str = "Welyb"
    smarthost: SmarthostConfig | None = None  # None: straight to the destination's MX
    timeout_seconds: int = 60
    retry_min_seconds: int = 300  # Postfix's minimal_backoff_time
    retry_max_seconds: int = 4000  # Postfix's maximal_backoff_time
    lifetime_seconds: int = 5 * 24 * 3600  # Postfix's maximal_queue_lifetime
    workers: int = 1  # sending workers beside `serve`
    signing_processes: int = 1  # compose+DKIM beside each sender's event loop; 0: a thread


ImapTls = Literal["implicit", "starttls", "none"]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


@dataclass(frozen=True)
class ImapSourceConfig:
    """An existing mailbox the gateway pulls mail from (issue: IMAP sources).

    `route` is "recipient" (each message goes where it was delivered: Delivered-To,
    X-Original-To, then To/Cc, matched against the address grammar) or one collection
    address that takes the whole mailbox. The password is read from `password_env` or
    `password_file`, never from the TOML.
    """

    name: str
    host: str
    user: str
    port: int = 993
    tls: ImapTls = "implicit"
    password_env: str | None = None
    password_file: Path | None = None
    folders: tuple[str, ...] = ("INBOX",)
    route: str = "recipient"
    after: Literal["move", "flag"] = "move"
    processed_folder: str = "Processed"
    rejected_folder: str = "Rejected"
    flag: str = "$Filed"
    idle: bool = True
    poll_seconds: float = 60.0
    batch_size: int = 50
    timeout_seconds: int = 60

    @property
    def routes_by_recipient(self) -> bool:
        return self.route == "recipient"

    def mailbox(self, folder: str) -> str:
        """How documents and messages name where they came from."""
        return f"imap://{self.user}@{self.host}/{folder}"

    def password(self) -> str:
        """The password, read now (a rotated secret file is picked up on reconnect)."""
        if self.password_file is not None:
            try:
                return self.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"imap.sources.{self.name}.password_file: cannot read "
                    f"{self.password_file}: {exc.strerror or exc}"
                ) from exc
        assert self.password_env is not None
        value = os.environ.get(self.password_env)
        if not value:
            raise ConfigError(
                f"imap.sources.{self.name}.password_env: the environment variable "
                f"{self.password_env} is not set (export it before starting the gateway)"
            )
        return value


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"
    format: str = "auto"  # auto: JSON when stderr is not a terminal, console otherwise


@dataclass(frozen=True)
class GatewayConfig:
    path: Path | None
    domains: tuple[str, ...]
    database_url: str
    storage_path: Path
    node_name: str
    smtp: SmtpConfig
    filing: FilingConfig
    extraction: ExtractionConfig
    logging: LoggingConfig
    partner_registry: Path
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    imap_sources: Mapping[str, ImapSourceConfig] = field(default_factory=dict)

    @property
    def spool_path(self) -> Path:
        return self.storage_path / "spool"

    @property
    def blobs_path(self) -> Path:
        return self.storage_path / "documents"

    @property
    def dkim_path(self) -> Path:
        return self.storage_path / "dkim"

    @property
    def gateway_sender(self) -> str:
        return self.outbound.sender or f"documents@{self.domains[0]}"


def default_toml(directory: Path) -> str:
    """The file `gateway init` writes: the embedded default (SQLite + a local folder)."""
    return f"""# Mail gateway configuration. Relative paths are relative to this file.

[gateway]
domains = ["welyb.fr", "welyb.com"]   # every local part means the same on each (R1)
# node_name = "mx1"                   # defaults to the host name; must differ between nodes

[database]
url = "sqlite:///gateway.db"          # or postgresql+psycopg://user@host/dbname

[storage]
path = "storage"                      # raw messages (spool) and filed documents

[smtp]
host = "127.0.0.1"
port = 2525
# hostname = "mx.welyb.fr"            # EHLO/banner name; defaults to the host's FQDN
max_message_size = {25 * 1024 * 1024}         # bytes; advertised in EHLO SIZE
max_recipients = 50
timeout_seconds = 300
# tls_certificate = "/etc/ssl/mx.pem" # STARTTLS is offered when both are set
# tls_key = "/etc/ssl/mx.key"

[filing]
folder_template = "Dossier comptable annuel/{{fiscal_year}}/{{journal_folder}}/{{month}}"
unsorted_folder = "A classer"         # bare <company>@ addresses file here (R2)
timezone = "Europe/Paris"             # the reception month is taken in this zone
workers = 1                           # filing worker processes beside `serve` (0: none here)

[filing.journals]                     # journal (local part before '+') -> folder (R2)
compta = "Achats"
achats = "Achats"
ventes = "Ventes"
social = "Social"
banque = "Banque"

[outbound]                            # documents sent to partner tools
# sender = "documents@welyb.fr"       # From when a partner expects no bot identity
sender_name = "Welyb"
timeout_seconds = 60
retry_min_seconds = 300               # back-off doubles from this ...
retry_max_seconds = 4000              # ... up to this,
lifetime_seconds = 432000             # and gives up after 5 days
signing_processes = 1                 # compose + DKIM-sign in a helper process (0: a thread)
# [outbound.smarthost]                # relay through a smarthost instead of the MX
# host = "smtp.example.net"
# port = 587
# starttls = true
# username = "gateway"
# password_env = "GATEWAY_SMARTHOST_PASSWORD"

# [imap.sources.factures]             # pull mail from an existing mailbox (IMAP)
# host = "imap.example.net"
# port = 993
# tls = "implicit"                    # implicit, starttls, or none (loopback only)
# user = "factures@cabinet.fr"
# password_env = "GATEWAY_IMAP_FACTURES_PASSWORD"   # or password_file = "/run/secrets/x"
# folders = ["INBOX"]
# route = "recipient"                 # or one address for the whole mailbox, e.g.
#                                     # "compta+dupont-maconnerie@welyb.fr"
# after = "move"                      # move to processed_folder / rejected_folder, or "flag"
# processed_folder = "Processed"
# rejected_folder = "Rejected"
# idle = true                         # IDLE when the server offers it, else poll
# poll_seconds = 60

[extraction]
max_documents = 100
max_zip_members = 200
max_zip_total_bytes = {100 * 1024 * 1024}
max_zip_ratio = 100
max_nesting_depth = 3

[logging]
level = "info"
format = "auto"                       # auto, json or console
"""


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return Path.cwd() / DEFAULT_CONFIG_NAME


def load_config(path: Path) -> GatewayConfig:
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
    return parse_config(data, base=path.resolve().parent, path=path)


class _Section:
    """Reads one table, checking types, and complains about keys nobody reads."""

    def __init__(self, data: Mapping[str, Any], name: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"[{name}] must be a table")
        self.data = data
        self.name = name
        self.read: set[str] = set()

    def key(self, key: str) -> str:
        return f"{self.name}.{key}"

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.read.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a port of `true` is a mistake worth naming.
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(f"{self.key(key)}: expected {_kind_name(kinds)}, got {value!r}")
        if not isinstance(value, kinds):
            raise ConfigError(f"{self.key(key)}: expected {_kind_name(kinds)}, got {value!r}")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.get(key, int, default)
        if not low <= value <= high:
            raise ConfigError(f"{self.key(key)}: must be between {low} and {high}, got {value}")
        return value

    def section(self, key: str) -> _Section:
        self.read.add(key)
        return _Section(self.data.get(key, {}), self.key(key))

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            raise ConfigError(
                f"[{self.name}]: unknown key {', '.join(repr(k) for k in unknown)} "
                f"(known: {', '.join(sorted(self.read))})"
            )


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


def parse_config(data: Mapping[str, Any], base: Path, path: Path | None = None) -> GatewayConfig:
    root = _Section(data, "")
    root.name = "top level"
    gw = root.section("gateway")
    gw.name = "gateway"
    domains_raw = gw.get("domains", list, ["welyb.fr", "welyb.com"])
    if not domains_raw:
        raise ConfigError("gateway.domains: list at least one mail domain to serve")
    domains: list[str] = []
    for d in domains_raw:
        if not isinstance(d, str) or not DOMAIN_RE.fullmatch(d.lower()):
            raise ConfigError(f"gateway.domains: {d!r} is not a domain name (e.g. 'welyb.fr')")
        domains.append(d.lower())
    node_name = gw.get("node_name", str, socket.gethostname())
    partner_registry = _path(base, gw.get("partner_registry", str, str(DEFAULT_PARTNER_REGISTRY)))
    gw.finish()

    db = root.section("database")
    db.name = "database"
    url = db.get("url", str, "sqlite:///gateway.db")
    db.finish()
    database_url = _database_url(url, base)

    st = root.section("storage")
    st.name = "storage"
    storage_path = _path(base, st.get("path", str, "storage"))
    st.finish()

    smtp = _smtp(root.section("smtp"), base)
    filing = _filing(root.section("filing"))
    ex = root.section("extraction")
    ex.name = "extraction"
    extraction = ExtractionConfig(
        max_documents=ex.integer("max_documents", 100, 1, 10_000),
        max_zip_members=ex.integer("max_zip_members", 200, 1, 100_000),
        max_zip_total_bytes=ex.integer("max_zip_total_bytes", 100 * 1024 * 1024, 1024, 2**40),
        max_zip_ratio=ex.integer("max_zip_ratio", 100, 2, 100_000),
        max_nesting_depth=ex.integer("max_nesting_depth", 3, 0, 10),
    )
    ex.finish()
    outbound = _outbound(root.section("outbound"))
    imap_sources = _imap(root.section("imap"), base, domains)
    lg = root.section("logging")
    lg.name = "logging"
    level = lg.get("level", str, "info").lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"logging.level: one of debug, info, warning, error; got {level!r}")
    fmt = lg.get("format", str, "auto")
    if fmt not in {"auto", "json", "console"}:
        raise ConfigError(f"logging.format: one of auto, json, console; got {fmt!r}")
    lg.finish()
    root.finish()
    return GatewayConfig(
        path=path,
        domains=tuple(domains),
        database_url=database_url,
        storage_path=storage_path,
        node_name=node_name,
        smtp=smtp,
        filing=filing,
        extraction=extraction,
        logging=LoggingConfig(level=level, format=fmt),
        partner_registry=partner_registry,
        outbound=outbound,
        imap_sources=imap_sources,
    )


def _path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _database_url(url: str, base: Path) -> str:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rest = url[len("sqlite:///") :]
        if rest and rest != ":memory:":
            return "sqlite:///" + str(base / rest)
        return url
    if url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
        if url.startswith("postgresql:"):
            # psycopg 3 is what we install; SQLAlchemy's bare scheme means psycopg2.
            return "postgresql+psycopg:" + url[len("postgresql:") :]
        return url
    raise ConfigError(
        f"database.url: {url!r} is not supported; use sqlite:///PATH or "
        "postgresql+psycopg://USER@HOST/DB"
    )


def _smtp(s: _Section, base: Path) -> SmtpConfig:
    s.name = "smtp"
    cert = s.get("tls_certificate", str, "")
    key = s.get("tls_key", str, "")
    if bool(cert) != bool(key):
        raise ConfigError("smtp.tls_certificate and smtp.tls_key: set both or neither")
    cert_path = _path(base, cert) if cert else None
    key_path = _path(base, key) if key else None
    for name, p in (("tls_certificate", cert_path), ("tls_key", key_path)):
        if p is not None and not p.is_file():
            raise ConfigError(f"smtp.{name}: {p} does not exist or is not a file")
    config = SmtpConfig(
        host=s.get("host", str, "127.0.0.1"),
        port=s.integer("port", 2525, 0, 65535),
        hostname=s.get("hostname", str, socket.getfqdn()),
        max_message_size=s.integer("max_message_size", 25 * 1024 * 1024, 1024, 2**31),
        max_recipients=s.integer("max_recipients", 50, 1, 1000),
        timeout_seconds=s.integer("timeout_seconds", 300, 5, 3600),
        tls_certificate=cert_path,
        tls_key=key_path,
    )
    s.finish()
    return config


def _filing(s: _Section) -> FilingConfig:
    s.name = "filing"
    template = s.get("folder_template", str, FilingConfig.folder_template)
    try:
        template.format(fiscal_year="2026", journal_folder="Achats", month="01", journal="achats")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"filing.folder_template: {template!r} uses an unknown placeholder ({exc}); "
            "known: {fiscal_year}, {journal_folder}, {journal}, {month}"
        ) from exc
    tz = s.get("timezone", str, "Europe/Paris")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"filing.timezone: unknown time zone {tz!r} (e.g. 'Europe/Paris')"
        ) from exc
    journals_section = s.section("journals")
    journals_raw = journals_section.data or DEFAULT_JOURNALS
    journals: dict[str, str] = {}
    for name, folder in journals_raw.items():
        if not SLUG_RE.fullmatch(name):
            raise ConfigError(
                f"filing.journals: {name!r} is not a valid journal name "
                "(lower-case letters, digits and hyphens)"
            )
        if not isinstance(folder, str) or not folder.strip() or "/" in folder:
            raise ConfigError(
                f"filing.journals.{name}: folder must be a non-empty name without '/'"
            )
        journals[name] = folder.strip()
    config = FilingConfig(
        folder_template=template,
        unsorted_folder=s.get("unsorted_folder", str, "A classer"),
        timezone=tz,
        journals=journals,
        workers=s.integer("workers", 1, 0, 16),
        poll_seconds=float(s.get("poll_seconds", (int, float), 0.2)),
        max_attempts=s.integer("max_attempts", 5, 1, 100),
    )
    s.finish()
    return config


def _outbound(s: _Section) -> OutboundConfig:
    s.name = "outbound"
    sender = s.get("sender", str, "") or None
    if sender is not None and split_address(sender) is None:
        raise ConfigError(
            f"outbound.sender: {sender!r} is not an address (e.g. documents@welyb.fr)"
        )
    relay = s.section("smarthost")
    smarthost = None
    if relay.data:
        host = relay.get("host", str, "")
        if not host:
            raise ConfigError("outbound.smarthost.host: give the relay's host name")
        smarthost = SmarthostConfig(
            host=host,
            port=relay.integer("port", 587, 1, 65535),
            starttls=relay.get("starttls", bool, True),
            username=relay.get("username", str, "") or None,
            password_env=relay.get("password_env", str, "") or None,
        )
        if smarthost.username and not smarthost.password_env:
            raise ConfigError(
                "outbound.smarthost.password_env: name the environment variable that holds "
                "the password (it is never written in the TOML)"
            )
        relay.finish()
    config = OutboundConfig(
        sender=sender,
        sender_name=s.get("sender_name", str, "Welyb"),
        smarthost=smarthost,
        timeout_seconds=s.integer("timeout_seconds", 60, 1, 3600),
        retry_min_seconds=s.integer("retry_min_seconds", 300, 1, 86400),
        retry_max_seconds=s.integer("retry_max_seconds", 4000, 1, 86400),
        lifetime_seconds=s.integer("lifetime_seconds", 5 * 24 * 3600, 60, 60 * 24 * 3600),
        workers=s.integer("workers", 1, 0, 16),
        signing_processes=s.integer("signing_processes", 1, 0, 16),
    )
    if config.retry_max_seconds < config.retry_min_seconds:
        raise ConfigError("outbound.retry_max_seconds: must be at least retry_min_seconds")
    s.finish()
    return config


def _imap(s: _Section, base: Path, domains: list[str]) -> dict[str, ImapSourceConfig]:
    s.name = "imap"
    sources_section = s.section("sources")
    s.finish()
    sources: dict[str, ImapSourceConfig] = {}
    for name in sources_section.data:
        if not SLUG_RE.fullmatch(name):
            raise ConfigError(
                f"imap.sources.{name}: a source name is lower-case letters, digits and hyphens"
            )
        sources[name] = _imap_source(sources_section.section(name), name, base, domains)
    return sources


def _imap_source(s: _Section, name: str, base: Path, domains: list[str]) -> ImapSourceConfig:
    host = s.get("host", str, "").strip()
    user = s.get("user", str, "")
    if not host:
        raise ConfigError(f"{s.key('host')}: give the IMAP server's host name")
    if not user:
        raise ConfigError(f"{s.key('user')}: give the login of the mailbox")
    tls = s.get("tls", str, "implicit")
    if tls not in ("implicit", "starttls", "none"):
        raise ConfigError(f"{s.key('tls')}: one of implicit, starttls, none; got {tls!r}")
    if tls == "none" and host.lower() not in LOOPBACK_HOSTS:
        # A password in clear over the network is refused, not warned about.
        raise ConfigError(
            f"{s.key('tls')}: 'none' sends the password in clear and is only allowed for "
            f"a loopback host (127.0.0.1, ::1, localhost); use implicit or starttls for {host}"
        )
    password_env = s.get("password_env", str, "") or None
    password_file_raw = s.get("password_file", str, "")
    password_file = _path(base, password_file_raw) if password_file_raw else None
    if (password_env is None) == (password_file is None):
        raise ConfigError(
            f"imap.sources.{name}: set exactly one of password_env (an environment variable "
            "holding the password) or password_file (a file holding it); the password itself "
            "never goes in this file"
        )
    folders = s.get("folders", list, ["INBOX"])
    if not folders or not all(isinstance(f, str) and f.strip() for f in folders):
        raise ConfigError(f'{s.key("folders")}: list the folders to read, e.g. ["INBOX"]')
    if len(set(folders)) != len(folders):
        raise ConfigError(f"{s.key('folders')}: a folder is listed twice")
    route = s.get("route", str, "recipient").strip()
    if route != "recipient":
        parts = split_address(route)
        if parts is None or parts[1] not in domains:
            raise ConfigError(
                f"{s.key('route')}: 'recipient' or one of our collection addresses "
                f"(@{' / @'.join(domains)}), e.g. 'compta+dupont-maconnerie@{domains[0]}'; "
                f"got {route!r}"
            )
    after = s.get("after", str, "move")
    if after not in ("move", "flag"):
        raise ConfigError(f"{s.key('after')}: 'move' or 'flag'; got {after!r}")
    processed = s.get("processed_folder", str, "Processed").strip()
    rejected = s.get("rejected_folder", str, "Rejected").strip()
    if after == "move" and (not processed or not rejected or {processed, rejected} & set(folders)):
        raise ConfigError(
            f"imap.sources.{name}: processed_folder and rejected_folder must be named and "
            "differ from the folders read (or mail would be read again)"
        )
    flag = s.get("flag", str, "$Filed")
    if not flag or any(c in flag for c in ' ()"{%*]\\') or not flag.isascii():
        raise ConfigError(f"{s.key('flag')}: an IMAP keyword such as '$Filed'; got {flag!r}")
    config = ImapSourceConfig(
        name=name,
        host=host,
        user=user,
        port=s.integer("port", 993 if tls == "implicit" else 143, 1, 65535),
        tls=cast(ImapTls, tls),
        password_env=password_env,
        password_file=password_file,
        folders=tuple(f.strip() for f in folders),
        route=route,
        after=cast(Literal["move", "flag"], after),
        processed_folder=processed,
        rejected_folder=rejected,
        flag=flag,
        idle=s.get("idle", bool, True),
        poll_seconds=float(s.get("poll_seconds", (int, float), 60.0)),
        batch_size=s.integer("batch_size", 50, 1, 1000),
        timeout_seconds=s.integer("timeout_seconds", 60, 1, 3600),
    )
    if config.poll_seconds <= 0:
        raise ConfigError(f"{s.key('poll_seconds')}: must be positive")
    s.finish()
    return config

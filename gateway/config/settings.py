"""Every setting of gateway.toml, declared once: its default, bounds, check and help text.

One frozen dataclass per table of the file; `TABLES` lists the tables in the order
`gateway init`'s TOML and the README show them. A declaration's check looks at one value
(`checks.py`); rules that tie several keys together (TLS certificate and key, retry bounds,
an IMAP source's password, folders and route) are in `parse.py`.

Why this module is long: it is the one place each setting is declared (README's table, the
parser and `gateway init` all come from it), and each declaration is a few lines of default,
bounds and help; splitting the tables over modules would scatter that one list.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from gateway.config import checks
from gateway.config.api import ApiConfig
from gateway.config.checks import DEFAULT_JOURNALS
from gateway.config.declare import (
    ConfigError,
    Declared,
    computed,
    declared,
    in_folder,
    required,
    setting,
)
from gateway.config.einvoice import EinvoiceConfig
from gateway.config.imap_oauth import ImapOAuth2Config
from gateway.config.storage import S3Config
from gateway.config.trust import ClamavConfig, RspamdConfig, TrustConfig
from gateway.config.webhooks import WebhookConfig
from gateway.mail.header_limits import HeaderLimits
from gateway.routing.sender_policy import PolicyKind, SenderPolicy

# The registry the gateway ships with, as package data (in the wheel too); an admin who
# changes partners points `partner_registry` at an edited copy.
DEFAULT_PARTNER_REGISTRY = Path(__file__).resolve().parents[1] / "routing" / "partners.toml"

ImapTls = Literal["implicit", "starttls", "none"]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
MIN_SECRETS_KEY_LENGTH = 32  # `openssl rand -base64 32` gives 44


# -- the tables ------------------------------------------------------------------------------
# `setting`, `computed` and `required` return a dataclasses.field, as field() does; ruff
# cannot see through them, hence the RUF009 exemptions where a type is not a builtin.


@dataclass(frozen=True)
class SmtpConfig:
    host: str = setting("127.0.0.1", "Address the SMTP server listens on.")
    port: int = setting(2525, "Port it listens on (0: any free port).", low=0, high=65535)
    hostname: str = computed(
        socket.getfqdn,
        "Name in the banner and the EHLO reply; the MX record names it.",
        default_text="this host's fully qualified name",
        example="mx.welyb.fr",
    )
    max_message_size: int = setting(
        25 * 1024 * 1024,
        "Largest message accepted, in bytes; advertised in EHLO SIZE, 552 5.3.4 beyond.",
        low=1024,
        high=2**31,
        unit="bytes",
    )
    max_recipients: int = setting(50, "Recipients per message; 452 4.5.3 beyond.", low=1, high=1000)
    timeout_seconds: int = setting(
        300,
        "Seconds a command line may take, from the previous reply (smtpd_timeout); 421 4.4.2 "
        "and close after.",
        low=1,
        high=3600,
    )
    drain_seconds: int = setting(
        8,
        "On stop: seconds a transaction in progress may take to finish (421 after); "
        "below Docker's 10 s stop timeout.",
        low=0,
        high=600,
    )
    tls_certificate: Path | None = setting(
        None,
        "PEM certificate (chain) for STARTTLS, offered when this and tls_key are both set.",
        resolve=in_folder,
        default_text="unset (no STARTTLS)",
        example="/etc/ssl/mx.pem",
    )
    tls_key: Path | None = setting(
        None,
        "PEM private key of tls_certificate.",
        resolve=in_folder,
        default_text="unset",
        example="/etc/ssl/mx.key",
    )
    # Header bounds (README "SMTP intake limits"): checked over the raw bytes before any
    # parsing; over one of them, 552 5.3.4 at the end of DATA (IMAP: stored rejected).
    header_size_limit: int = setting(
        102_400,
        "Bytes of one header field, continuation lines included (Postfix's "
        "header_size_limit); 552 5.3.4 beyond (Postfix cuts instead, see the README).",
        low=1000,
        high=16 * 1024 * 1024,
        unit="bytes",
    )
    header_section_limit: int = setting(
        1024 * 1024,
        "Bytes of the whole header section (Exim's header_maxsize; Postfix has none); "
        "552 5.3.4 beyond.",
        low=1000,
        high=64 * 1024 * 1024,
        unit="bytes",
    )
    header_line_limit: int = setting(
        10_000,
        "Lines of the header section (Postfix has no such limit); 552 5.3.4 beyond.",
        low=100,
        high=1_000_000,
    )

    @property
    def header_limits(self) -> HeaderLimits:
        return HeaderLimits(
            self.header_size_limit, self.header_section_limit, self.header_line_limit
        )

    # Memory (issue 10, item 3): DATA in memory is bounded for all sessions together.
    data_memory_budget: int = setting(
        256 * 1024 * 1024,
        "Bytes of DATA all sessions together may hold in memory; a message that would go "
        "beyond gets 451 4.3.2 after its data (Postfix streams to its queue file instead).",
        low=1024 * 1024,
        high=2**40,
        unit="bytes",
    )
    # -- limits per client and per session (README "SMTP intake limits"; Postfix's names) --
    session_limit: int = setting(
        1000,
        "Sessions open at once, all clients together; 421 4.7.0 beyond (Postfix: the "
        "smtpd process_limit, whose excess waits in the listen queue instead).",
        low=1,
        high=100_000,
    )
    client_connection_count_limit: int = setting(
        50,
        "Sessions open at once from one client address; 421 4.7.0 beyond, 0: no limit "
        "(smtpd_client_connection_count_limit).",
        low=0,
        high=100_000,
    )
    client_connection_rate_limit: int = setting(
        0,
        "Connections one client address may open per rate window; 421 4.7.0 beyond, 0: no "
        "limit (smtpd_client_connection_rate_limit).",
        low=0,
        high=1_000_000,
    )
    client_message_rate_limit: int = setting(
        0,
        "MAIL FROM commands one client address may send per rate window; 450 4.7.1 beyond, "
        "0: no limit (smtpd_client_message_rate_limit).",
        low=0,
        high=1_000_000,
    )
    client_rate_window_seconds: int = setting(
        60,
        "The window of the two rate limits (anvil_rate_time_unit).",
        low=1,
        high=86_400,
        unit="seconds",
    )
    limit_exempt_networks: tuple[str, ...] = setting(
        (),
        "Client networks (CIDR) the per-client limits do not apply to "
        "(smtpd_client_event_limit_exceptions); the session limit still does.",
        check=checks.networks,
    )
    data_min_rate: int = setting(
        10_000,
        "DATA must go at least this fast: each byte received extends its deadline by "
        "1/rate seconds, never beyond timeout_seconds ahead (smtpd_min_data_rate).",
        low=1,
        high=2**31,
        unit="bytes per second",
    )
    client_error_rate_limit: int = setting(
        100,
        "Errors one client address may make per rate window over all its sessions; then its "
        "sessions end and new ones get 421 4.7.0 until the window is over, 0: no limit "
        "(no Postfix equivalent).",
        low=0,
        high=1_000_000,
    )
    soft_error_limit: int = setting(
        10,
        "Errors (4xx/5xx replies) in a session after which each reply waits "
        "error_delay_seconds per error (smtpd_soft_error_limit).",
        low=1,
        high=1000,
    )
    hard_error_limit: int = setting(
        20,
        "Errors in a session after which it is closed with 421 4.7.0 (smtpd_hard_error_limit).",
        low=1,
        high=1000,
    )
    error_delay_seconds: float = setting(
        1.0,
        "Past soft_error_limit, each reply waits this long times the session's error count "
        "(Postfix: 1 s per error).",
        unit="seconds",
    )


@dataclass(frozen=True)
class FilingConfig:
    folder_template: str = setting(
        "Dossier comptable annuel/{fiscal_year}/{journal_folder}/{month}",
        "Where a journal's documents are filed in the company's folders; placeholders "
        "{fiscal_year}, {journal_folder}, {journal}, {month}.",
        check=checks.folder_template,
    )
    unsorted_folder: str = setting(
        "A classer", "Where mail to a bare company address (company@) is filed (R2)."
    )
    timezone: str = setting(
        "Europe/Paris", "The reception month is taken in this time zone.", check=checks.time_zone
    )
    journals: Mapping[str, str] = setting(
        DEFAULT_JOURNALS,
        "Journal (the local part before '+') -> its folder (R2); an empty table means these.",
        check=checks.journals,
    )
    workers: int = setting(
        2,
        "Filing worker processes `serve` starts beside it (0: none here); one per core "
        "(the default fits two cores).",
        low=0,
        high=16,
    )
    poll_seconds: float = setting(
        0.2, "Seconds an idle filing worker waits before it looks for new mail again."
    )
    max_attempts: int = setting(
        5,
        "Tries before a message that keeps failing is held (back-off 30 s, doubling).",
        low=1,
        high=100,
    )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class ExtractionConfig:
    max_documents: int = setting(
        100, "Documents kept from one message, after expansion.", low=1, high=10_000
    )
    max_zip_members: int = setting(
        200, "Files in one ZIP archive; more refuses the archive.", low=1, high=100_000
    )
    max_zip_total_bytes: int = setting(
        100 * 1024 * 1024,
        "Uncompressed bytes of one ZIP archive; more refuses the archive.",
        low=1024,
        high=2**40,
        unit="bytes",
    )
    max_zip_ratio: int = setting(
        100,
        "Uncompressed/compressed size of a member or an archive; more is a zip bomb.",
        low=2,
        high=100_000,
    )
    max_nesting_depth: int = setting(
        3, "Levels of ZIP, forwarded mail and TNEF opened inside each other.", low=0, high=10
    )
    cid_image_document_bytes: int = setting(
        200 * 1024,
        "An image shown in the HTML body (cid:) at least this big is a document "
        "(a photographed receipt); smaller ones are logos.",
        low=1024,
        high=2**40,
        unit="bytes",
    )
    # The budget of one message's extraction (gateway/inbound/sandbox.py): beyond it the
    # message is held with the reason, and the messages behind it are filed.
    timeout_seconds: float = setting(
        30.0,
        "Seconds one message's extraction may take (a watchdog kills it beyond: held).",
        low=1,
        high=3600,
    )
    memory_limit_mb: int = setting(
        1024,
        "Address space (RLIMIT_AS) of the process extracting one message (beyond: held), "
        "and of the one rendering its body as PDF, in MB.",
        low=256,
        high=1024 * 1024,
    )
    # A message with no document gets a PDF of its body beside its .eml (issue 12), rendered
    # in a child of its own under its own time and `memory_limit_mb`: beyond, the .eml alone.
    body_pdf: bool = setting(
        True, "File a PDF of the body (HTML or text) beside the .eml of a message with no document."
    )
    body_pdf_timeout_seconds: float = setting(
        15.0,
        "Seconds rendering one body as PDF may take; beyond, the .eml is filed without it.",
        low=1,
        high=600,
    )


@dataclass(frozen=True)
class SmarthostConfig:
    host: str = required(
        "The relay's host name.", missing="give the relay's host name", example="smtp.example.net"
    )
    port: int = setting(587, "The relay's port.", low=1, high=65535)
    starttls: bool = setting(True, "Use STARTTLS when the relay offers it.")
    username: str | None = setting(
        None,
        "Login on the relay (SMTP AUTH); needs password_env.",
        default_text="unset (no login)",
        example="gateway",
    )
    password_env: str | None = setting(
        None,
        "Environment variable holding the relay's password (never written in this file).",
        default_text="unset",
        example="GATEWAY_SMARTHOST_PASSWORD",
    )


@dataclass(frozen=True)
class OutboundConfig:
    """Sending documents to partners (R12–R17)."""

    sender: str | None = setting(
        None,
        "From of what the gateway sends as itself: documents to partners whose registry "
        'entry says sender = "gateway", and bot-mail forwards.',
        check=checks.address,
        default_text="documents@(first domain)",
        example="documents@welyb.fr",
    )
    sender_name: str = setting("Welyb", "Display name beside that From.")
    # [outbound.smarthost], read by parse.py; None: straight to the destination's MX.
    smarthost: SmarthostConfig | None = None
    timeout_seconds: int = setting(
        60, "Timeout of each step of an SMTP conversation.", low=1, high=3600
    )
    retry_min_seconds: int = setting(
        300,
        "First wait after a temporary failure; it doubles at each try (Postfix's "
        "minimal_backoff_time).",
        low=1,
        high=86400,
    )
    retry_max_seconds: int = setting(
        4000,
        "Longest wait between tries, at least retry_min_seconds (maximal_backoff_time).",
        low=1,
        high=86400,
    )
    lifetime_seconds: int = setting(
        5 * 24 * 3600,
        "A delivery still failing after this long is failed: 5 days (maximal_queue_lifetime).",
        low=60,
        high=60 * 24 * 3600,
    )
    workers: int = setting(
        1, "Sending workers `serve` starts beside it (0: none here).", low=0, high=16
    )
    signing_processes: int = setting(
        1,
        "Helper processes per sender that compose and DKIM-sign ahead (0: a thread).",
        low=0,
        high=16,
    )


@dataclass(frozen=True)
class ImapSourceConfig:
    """An existing mailbox the gateway pulls mail from (issue: IMAP sources).

    `route` is "recipient" (each message goes where it was delivered: Delivered-To,
    X-Original-To, then To/Cc, matched against the address grammar) or one collection
    address that takes the whole mailbox. The password is read from `password_env` or
    `password_file`, never from the TOML; a hosted mailbox logs in with OAuth2 instead
    (`[imap.sources.NAME.oauth2]`, `oauth2` here).
    """

    name: str
    host: str = required(
        "The IMAP server's host name.",
        missing="give the IMAP server's host name",
        example="imap.example.net",
        check=checks.stripped,
    )
    user: str = required(
        "The mailbox's login.",
        missing="give the login of the mailbox",
        example="factures@cabinet.fr",
    )
    port: int = setting(
        993,
        "The server's port.",
        low=1,
        high=65535,
        default_text="993; 143 when tls is starttls or none",
        example=993,
    )
    tls: ImapTls = setting(
        "implicit",
        "implicit (TLS from the first byte), starttls, or none (only to a loopback host).",
        choices=("implicit", "starttls", "none"),
    )
    password_env: str | None = setting(
        None,
        "Environment variable holding the password; set this, password_file or an oauth2 table.",
        default_text="unset",
        example="GATEWAY_IMAP_FACTURES_PASSWORD",
    )
    password_file: Path | None = setting(
        None,
        "File holding the password, read at each login; set this, password_env or an oauth2 table.",
        resolve=in_folder,
        default_text="unset",
        example="/run/secrets/imap-factures",
    )
    folders: tuple[str, ...] = setting(
        ("INBOX",),
        "Folders read, one connection each; names relative to the personal namespace unless "
        "INBOX or under a namespace prefix (see IMAP sources).",
        check=checks.folders,
    )
    route: str = setting(
        "recipient",
        "recipient: each message goes where it was delivered (Delivered-To, X-Original-To, "
        "then To/Cc); or one collection address taking the whole mailbox, e.g. "
        "compta+dupont-maconnerie@welyb.fr.",
        check=checks.stripped,
    )
    after: Literal["move", "flag"] = setting(
        "move",
        "What is done to a message once stored: moved to processed_folder (rejected_folder "
        "when no address of ours was found), or flagged; never deleted.",
        choices=("move", "flag"),
    )
    processed_folder: str = setting(
        "Processed",
        "Where stored messages are moved (after = move); `Processed` is `INBOX.Processed` on a "
        "server whose personal namespace is `INBOX.`.",
        check=checks.stripped,
    )
    rejected_folder: str = setting(
        "Rejected",
        "Where rejected messages are moved (after = move), placed as processed_folder.",
        check=checks.stripped,
    )
    flag: str = setting(
        "$Filed", "IMAP keyword set on stored messages (after = flag).", check=checks.imap_keyword
    )
    idle: bool = setting(True, "Wait with IDLE when the server offers it; poll otherwise.")
    poll_seconds: float = setting(
        60.0, "Seconds between polls when IDLE is not used.", check=checks.positive
    )
    batch_size: int = setting(50, "Messages fetched per command.", low=1, high=1000)
    timeout_seconds: int = setting(60, "Network timeout of the connection.", low=1, high=3600)
    # [imap.sources.NAME.oauth2], read by parse.py: set, the source logs in with a token.
    oauth2: ImapOAuth2Config | None = None

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
class HttpConfig:
    """The operations listener (gateway/http/): health checks and Prometheus metrics."""

    enabled: bool = setting(
        True, "Serve /healthz, /readyz and /metrics over HTTP beside SMTP (false: no listener)."
    )
    host: str = setting(
        "127.0.0.1",
        "Address it listens on; loopback by default (0.0.0.0 for a scraper on another host).",
    )
    port: int = setting(8025, "Port it listens on (0: any free port).", low=0, high=65535)


@dataclass(frozen=True)
class SenderPolicyConfig:
    """Who may file mail (issue 11): the global default under the cabinets' and companies'
    own policies (`gateway policy`; gateway/routing/sender_policy.py)."""

    default: str = setting(
        "open",
        "Sender policy of a company whose cabinet and itself set none: open (anyone), "
        "authenticated (DMARC pass, or an aligned SPF/DKIM pass without DMARC), allow-list "
        "(the From address is on an allow list: forgeable alone), or allow-list+authenticated.",
        choices=tuple(PolicyKind),
        check=checks.lower,
    )
    allow: tuple[str, ...] = setting(
        (),
        "Allow-list entries for every company, added to the cabinets' and companies' own: "
        "someone@supplier.fr, supplier.fr (that domain only) or *.supplier.fr (its subdomains).",
        check=checks.allow_entries,
    )

    @property
    def policy(self) -> SenderPolicy:
        return SenderPolicy(PolicyKind(self.default), self.allow)


@dataclass(frozen=True)
class LoggingConfig:
    level: str = setting(
        "info",
        "Least severe level logged.",
        choices=("debug", "info", "warning", "error"),
        check=checks.lower,
    )
    format: str = setting(
        "auto",
        "auto: JSON lines when stderr is not a terminal, readable lines otherwise.",
        choices=("auto", "json", "console"),
    )


@dataclass(frozen=True)
class GatewayConfig:
    """The whole file; the keys of [gateway], [database] and [storage] are declared here."""

    path: Path | None
    domains: tuple[str, ...] = setting(
        ("welyb.fr", "welyb.com"),
        "Mail domains served; every local part means the same on each (R1).",
        check=checks.domains,
        table="gateway",
    )
    database_url: str = setting(
        "sqlite:///gateway.db",
        "sqlite:///PATH (a relative PATH is in the configuration file's folder) or "
        "postgresql+psycopg://USER@HOST/DB.",
        check=checks.database_scheme,
        resolve=checks.sqlite_in_folder,
        table="database",
        key="url",
    )
    database_migrate: str = setting(
        "manual",
        "Who brings the schema up to date: manual (`gateway migrate`, as an upgrade step; other "
        "commands refuse a schema that is not theirs) or auto (any command, at start). The "
        "embedded SQLite default always migrates itself.",
        choices=("manual", "auto"),
        table="database",
        key="migrate",
    )
    storage_path: Path = setting(
        Path("storage"),
        "Raw messages (spool) and filed documents; shared by every node.",
        resolve=in_folder,
        table="storage",
        key="path",
    )
    storage_backend: Literal["local", "s3"] = setting(
        "local",
        "Where documents and raw mail go: local (the folder `path`, shared by every node) or "
        "s3 (the bucket of [storage.s3]; nodes then keep nothing of their own).",
        choices=("local", "s3"),
        table="storage",
        key="backend",
    )
    # [storage.s3], read by parse.py: set when backend = "s3".
    storage_s3: S3Config | None = None
    node_name: str = computed(
        socket.gethostname,
        "This node's name in spool files and claims; must differ between nodes.",
        default_text="this host's name",
        example="mx1",
        table="gateway",
        check=checks.node_name,
    )
    secrets_key_env: str | None = setting(
        None,
        "Environment variable holding the key that encrypts the secrets the gateway keeps in "
        "its database (rotated OAuth2 refresh tokens; with a key set, the VERP secret and the "
        "DKIM private keys too, instead of the storage folder); at least 32 characters, the "
        "same on every node.",
        default_text="unset",
        example="GATEWAY_SECRETS_KEY",
        table="gateway",
    )
    secrets_key_file: Path | None = setting(
        None,
        "File holding that key (instead of secrets_key_env).",
        resolve=in_folder,
        default_text="unset",
        example="/run/secrets/gateway-secrets-key",
        table="gateway",
    )
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    filing: FilingConfig = field(default_factory=FilingConfig)
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    einvoice: EinvoiceConfig = field(default_factory=EinvoiceConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    partner_registry: Path = setting(
        DEFAULT_PARTNER_REGISTRY,
        "The partner registry (bot identities, aliases, destinations, limits).",
        resolve=in_folder,
        default_text="the registry shipped with the gateway (gateway/routing/partners.toml)",
        example="/etc/gateway/partners.toml",
        table="gateway",
    )
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    clamav: ClamavConfig = field(default_factory=ClamavConfig)
    rspamd: RspamdConfig = field(default_factory=RspamdConfig)
    sender_policy: SenderPolicyConfig = field(default_factory=SenderPolicyConfig)
    # [imap.sources.NAME] tables, read by parse.py.
    imap_sources: Mapping[str, ImapSourceConfig] = field(default_factory=dict)
    # [webhooks.NAME] tables, read by parse.py.
    webhooks: Mapping[str, WebhookConfig] = field(default_factory=dict)

    @property
    def spool_path(self) -> Path:
        return self.storage_path / "spool"

    @property
    def blobs_path(self) -> Path:
        return self.storage_path / "documents"

    @property
    def imap_folders(self) -> list[tuple[str, str]]:
        """(source, folder) of every folder read, in the file's order."""
        return [(s.name, f) for s in self.imap_sources.values() for f in s.folders]

    @property
    def run_path(self) -> Path:
        """This node's own files of a running serve (the metrics of its processes): the
        storage folder is shared by every node, so each has a folder of its own."""
        return self.storage_path / "run" / self.node_name

    @property
    def dkim_path(self) -> Path:
        return self.storage_path / "dkim"

    @property
    def secrets_in_database(self) -> bool:
        """A secrets key is configured: the VERP secret and the DKIM keys live in the database
        (gateway/storage/shared_secrets.py), not in the storage folder."""
        return self.secrets_key_env is not None or self.secrets_key_file is not None

    def secrets_key(self) -> str:
        """The key that encrypts secrets kept in the database, read now; a ConfigError that
        names the setting when it is missing or too short."""
        if self.secrets_key_file is not None:
            try:
                key = self.secrets_key_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"gateway.secrets_key_file: cannot read {self.secrets_key_file}: "
                    f"{exc.strerror or exc}"
                ) from exc
            where = f"gateway.secrets_key_file ({self.secrets_key_file})"
        elif self.secrets_key_env is not None:
            key = os.environ.get(self.secrets_key_env, "").strip()
            where = f"gateway.secrets_key_env (the environment variable {self.secrets_key_env})"
        else:
            raise ConfigError(
                "gateway.secrets_key_env or gateway.secrets_key_file: a key is needed to keep "
                "rotated refresh tokens encrypted in the database; make one with "
                "`openssl rand -base64 32` and give it to every node"
            )
        if len(key) < MIN_SECRETS_KEY_LENGTH:
            raise ConfigError(
                f"{where}: the key must be at least {MIN_SECRETS_KEY_LENGTH} characters "
                f"(got {len(key)}); make one with `openssl rand -base64 32`"
            )
        return key

    @property
    def gateway_sender(self) -> str:
        return self.outbound.sender or f"documents@{self.domains[0]}"


@dataclass(frozen=True)
class Table:
    """A table of the file as the TOML and the README show it."""

    name: str  # as the README names it; NAME stands for a name the admin picks
    cls: type
    help: str
    example_name: str = ""  # what NAME becomes in `gateway init`'s commented example
    optional: bool = False  # absent unless configured: shown commented out

    @property
    def settings(self) -> list[Declared]:
        return declared(self.cls, self.name)

    @property
    def header(self) -> str:
        return self.name.replace("NAME", self.example_name) if self.example_name else self.name


TABLES: tuple[Table, ...] = (
    Table("gateway", GatewayConfig, "The mail domains served and this node."),
    Table("database", GatewayConfig, "Where the state lives."),
    Table("storage", GatewayConfig, "Where the bytes live."),
    Table(
        "storage.s3",
        S3Config,
        'S3-compatible object storage, when backend = "s3".',
        optional=True,
    ),
    Table("smtp", SmtpConfig, "The SMTP server mail arrives at."),
    Table("filing", FilingConfig, "Filing documents into the companies' folders."),
    Table("outbound", OutboundConfig, "Sending documents to partner tools (R12-R17)."),
    Table(
        "outbound.smarthost",
        SmarthostConfig,
        "Relay through a smarthost instead of each destination's MX.",
        optional=True,
    ),
    Table(
        "imap.sources.NAME",
        ImapSourceConfig,
        "A mailbox to pull mail from; NAME: a-z, 0-9 and -.",
        example_name="factures",
        optional=True,
    ),
    Table(
        "imap.sources.NAME.oauth2",
        ImapOAuth2Config,
        "OAuth2 instead of a password (Microsoft 365, Google Workspace…).",
        example_name="factures",
        optional=True,
    ),
    Table(
        "webhooks.NAME",
        WebhookConfig,
        "Events pushed to a platform as signed POSTs; NAME: a-z, 0-9 and -.",
        example_name="ged",
        optional=True,
    ),
    Table("sender_policy", SenderPolicyConfig, "Who may file mail: the global default."),
    Table("extraction", ExtractionConfig, "Limits on what one message may expand to."),
    Table("einvoice", EinvoiceConfig, "E-invoices read at filing (Factur-X, UBL, CII)."),
    Table("trust", TrustConfig, "Sender authentication and quarantine (after the 250)."),
    Table("clamav", ClamavConfig, "Malware scanning with clamd."),
    Table("rspamd", RspamdConfig, "Spam scoring with rspamd."),
    Table("logging", LoggingConfig, "Logs, on stderr."),
    Table("http", HttpConfig, "Health checks and Prometheus metrics over HTTP (gateway serve)."),
    Table("api", ApiConfig, "The platform's HTTP API (/api/v1) on that listener."),
)

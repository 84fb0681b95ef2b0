"""Wiring: builds the gateway's parts from a configuration. No globals: each process builds
one `Gateway` and passes its parts down."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import httpx
import structlog
from sqlalchemy.exc import OperationalError

from gateway.clock import Clock, SystemClock
from gateway.config import ConfigError, GatewayConfig, ImapSourceConfig
from gateway.dns import DnspythonLookup
from gateway.inbound.body_pdf import BodyPdfRenderer
from gateway.inbound.extraction import ExtractionLimits
from gateway.inbound.filing import Filer
from gateway.inbound.imap import Connector, MailboxPoller, connect
from gateway.inbound.imap.connection import open_client
from gateway.inbound.imap.oauth import AccessTokens, OAuthConnector
from gateway.inbound.imap.providers import token_client
from gateway.inbound.recipients import Recipients
from gateway.inbound.sandbox import ExtractionSandbox
from gateway.inbound.smtp import InboundHandler, InboundServer
from gateway.inbound.spool import Spool, SpoolWriter
from gateway.inbound.trust.checkpoint import Checkpoint
from gateway.inbound.trust.clamav import Clamd
from gateway.inbound.trust.policy import StoredSenderPolicies
from gateway.inbound.trust.rspamd import Rspamd
from gateway.inbound.trust.screen import Screen
from gateway.outbound.dispatch import Dispatcher, SigningPool
from gateway.outbound.dkim import DkimSigner, KeyStore
from gateway.outbound.dkim_keys import DatabaseKeyStore, DkimKeys, import_folder_keys
from gateway.outbound.forward import Forwarder
from gateway.outbound.transport import (
    DirectMxTransport,
    DnsMxResolver,
    SmarthostTransport,
    Transport,
)
from gateway.outbound.verp import BounceAddresses
from gateway.outbound.webhooks import Dispatcher as WebhookDispatcher
from gateway.outbound.webhooks import Hook, Resolver, resolve
from gateway.routing.addresses import AddressGrammar
from gateway.routing.einvoice_filing import EinvoiceFiling, load_rules
from gateway.routing.partners import PartnerRegistry, load_registry
from gateway.storage.accounts import NotFound
from gateway.storage.blobs import BlobStore, FolderBlobStore, ObjectBlobStore
from gateway.storage.db import Database, SchemaError, one_line, safe_url
from gateway.storage.directory import Directory
from gateway.storage.events import cabinet_tenant
from gateway.storage.oauth_tokens import StoredRefreshTokens
from gateway.storage.objects import ObjectStore, ObjectStoreUnavailable
from gateway.storage.processes import Heartbeat, process_name
from gateway.storage.processes import take_back as take_back_node
from gateway.storage.rawmail import FolderSegments, ObjectSegments, RawMail, Segments
from gateway.storage.s3 import S3Objects
from gateway.storage.sealed import SecretBox
from gateway.storage.shared_secrets import (
    SharedSecrets,
    verp_secret_in_database,
    verp_secret_in_folder,
)
from gateway.storage.tenancy import ALL

log = structlog.get_logger("gateway.app")

MAX_STORAGE_WAIT = 30.0  # seconds between two tries to reach the database at start


@dataclass
class Gateway:
    config: GatewayConfig
    clock: Clock
    durable_commits: bool = True  # False only in processes whose writes are idempotent

    @classmethod
    def from_config(
        cls, config: GatewayConfig, clock: Clock | None = None, *, durable_commits: bool = True
    ) -> Gateway:
        return cls(config, clock or SystemClock(), durable_commits)

    @cached_property
    def db(self) -> Database:
        return Database(self.config.database_url, durable_commits=self.durable_commits)

    @cached_property
    def process_name(self) -> str:
        """This process's name in the registry of processes and in the claims it makes."""
        return process_name(self.config.node_name)

    @contextmanager
    def running_as(self, role: str, *, take_back: bool = False) -> Iterator[Heartbeat]:
        """This process registered under `role` with its heartbeat beating (it keeps the
        leases of its claims alive and shows it alive in `gateway status`), until the block
        ends: then what it holds is released. `take_back` (serve): first take back what the
        earlier processes of this node held (`processes.take_back`)."""
        heartbeat = Heartbeat(self.db, self.clock, self.process_name, self.config.node_name, role)
        node, name = self.config.node_name, self.process_name
        heartbeat.start(
            (lambda s: take_back_node(s, node, name, self.clock.now())) if take_back else None
        )
        try:
            yield heartbeat
        finally:
            heartbeat.stop()

    @cached_property
    def registry(self) -> PartnerRegistry:
        return load_registry(self.config.partner_registry)

    @cached_property
    def grammar(self) -> AddressGrammar:
        return AddressGrammar(self.config.domains, self.config.filing.journals, self.registry)

    @cached_property
    def objects(self) -> ObjectStore | None:
        """The S3-compatible object store documents and raw mail go to (`[storage] backend =
        "s3"`); None on the local folder. Its credentials are read here: a ConfigError naming
        the setting when they are missing."""
        if self.config.storage_s3 is None:
            return None
        return S3Objects.from_config(self.config.storage_s3)

    @cached_property
    def blobs(self) -> BlobStore:
        if self.objects is not None:
            return ObjectBlobStore(self.objects)
        return FolderBlobStore(self.config.blobs_path)

    @cached_property
    def raw_mail(self) -> RawMail:
        """Where the spool's segments are read back from (filing, forwards, the API)."""
        return self.segments(self.config.node_name)

    def segments(self, writer_name: str) -> Segments:
        """A segment store for one spool writer; `writer_name` goes into its segments' names."""
        if self.objects is not None:
            return ObjectSegments(self.objects, writer_name)
        return FolderSegments(self.config.spool_path, writer_name)

    def recipients(self) -> Recipients:
        return Recipients(self.grammar, Directory(self.db), self.bounce_addresses())

    def prepare_storage(self) -> str | None:
        """Create what the gateway needs: folders and the schema (idempotent; `gateway init`
        and `gateway migrate`). Returns the schema's revision before (None: there was none)."""
        self._make_folders()
        return self.db.migrate()

    def open_storage(self) -> None:
        """What every other command does first: the folders, and a schema this code works
        with — brought up to date here on the embedded SQLite default or with
        `database.migrate = "auto"`; otherwise only checked (one query) and, when it is not
        the code's, refused in one line that says what to do (`SchemaError`)."""
        self._make_folders()
        problem = self.db.schema_problem()
        if problem is None:
            return
        if self.db.is_sqlite or self.config.database_migrate == "auto":
            self.db.migrate()  # refuses a schema newer than the code, in one line too
            return
        raise SchemaError(problem)

    def open_storage_when_available(self, wait: Callable[[float], bool]) -> bool:
        """`open_storage`, for a long-running process: while the database or the object
        store does not answer, say so in one line and try again after `wait(seconds)` — 1 s,
        doubling up to 30 s. False when `wait` says to stop first (a SIGTERM while waiting).
        An object store that refuses us (credentials, bucket) is an ObjectStoreMisconfigured
        raised at once: waiting would not mend it."""
        delay = 1.0
        while True:
            try:
                self.open_storage()
                if self.objects is not None:
                    self.objects.check()
                return True
            except OperationalError as e:
                log.warning(
                    "database_unavailable",
                    database=safe_url(self.config.database_url),
                    error=one_line(e),
                    retry_in=delay,
                )
            except ObjectStoreUnavailable as e:
                log.warning("object_store_unavailable", error=str(e), retry_in=delay)
            if wait(delay):
                return False
            delay = min(delay * 2, MAX_STORAGE_WAIT)

    def _make_folders(self) -> None:
        self.config.storage_path.mkdir(parents=True, exist_ok=True)
        if self.objects is None:  # else the bytes are objects; the folder is this node's own
            self.config.spool_path.mkdir(parents=True, exist_ok=True)
            self.config.blobs_path.mkdir(parents=True, exist_ok=True)

    def extraction_limits(self) -> ExtractionLimits:
        return ExtractionLimits.from_config(self.config.extraction)

    @cached_property
    def einvoice_rules(self) -> EinvoiceFiling | None:
        """Where e-invoices are filed by what they say; None: [einvoice] is off."""
        if not self.config.einvoice.enabled:
            return None
        return load_rules(self.config.einvoice.rules, self.config.filing.journals)

    def filer(self, worker_name: str | None = None) -> Filer:
        einvoice = self.config.einvoice
        return Filer(
            db=self.db,
            config=self.config.filing,
            sandbox=ExtractionSandbox(
                self.extraction_limits(),
                self.config.extraction.timeout_seconds,
                self.config.extraction.memory_limit_mb,
                einvoice.max_xml_bytes if einvoice.enabled else None,
            ),
            einvoice_rules=self.einvoice_rules,
            recipients=self.recipients(),
            registry=self.registry,
            blobs=self.blobs,
            raw_mail=self.raw_mail,
            clock=self.clock,
            worker_name=worker_name or self.process_name,
            checkpoint=Checkpoint(self.screen(), self.sender_policies()),
            body_pdf=self.body_pdf_renderer(),
        )

    def body_pdf_renderer(self) -> BodyPdfRenderer | None:
        extraction = self.config.extraction
        if not extraction.body_pdf:
            return None
        return BodyPdfRenderer(extraction.body_pdf_timeout_seconds, extraction.memory_limit_mb)

    def sender_policies(self) -> StoredSenderPolicies:
        """The firms' sender policies over [sender_policy]'s global default."""
        return StoredSenderPolicies(self.db, self.config.sender_policy.policy, self.registry)

    def screen(self) -> Screen:
        """Issue 11's checks with this configuration's DNS, clamd and rspamd."""
        trust, clamav, rspamd = self.config.trust, self.config.clamav, self.config.rspamd
        lookup = DnspythonLookup(trust.dns_timeout_seconds, trust.nameservers, trust.dns_port)
        return Screen(
            trust,
            lookup,
            Clamd(clamav.address, clamav.timeout_seconds) if clamav.enabled else None,
            clamav,
            Rspamd(rspamd.url, rspamd.timeout_seconds) if rspamd.enabled else None,
            rspamd,
        )

    def bounce_addresses(self) -> BounceAddresses:
        """VERP addresses on our first domain, keyed by a secret every node shares: in the
        database with a secrets key, else in the storage folder (gateway/storage/
        shared_secrets.py)."""
        if self.shared_secrets is None:
            secret = verp_secret_in_folder(self.config.storage_path)
        else:
            secret = verp_secret_in_database(self.shared_secrets, self.config.storage_path)
        return BounceAddresses(secret, self.config.domains[0])

    @cached_property
    def shared_secrets(self) -> SharedSecrets | None:
        """The database's shared secrets when a secrets key is configured, else None."""
        if not self.config.secrets_in_database:
            return None
        return SharedSecrets(self.db, self.secret_box, self.clock)

    @cached_property
    def dkim_keys(self) -> DkimKeys:
        """The DKIM keys: in the database with a secrets key (the storage folder's imported
        there the first time), else in the storage folder."""
        folder = KeyStore(self.config.dkim_path)
        if self.shared_secrets is None:
            return folder
        database = DatabaseKeyStore(self.shared_secrets)
        import_folder_keys(folder, database)
        return database

    def dispatcher(
        self, transport: Transport | None = None, worker_name: str | None = None
    ) -> Dispatcher:
        """The sending stage; the transport is the configured one unless one is passed in."""
        out = self.config.outbound
        if transport is None:
            transport = self.outbound_transport()
        signer = DkimSigner(self.dkim_keys.all())
        processes = out.signing_processes
        return Dispatcher(
            db=self.db,
            config=out,
            gateway_sender=self.config.gateway_sender,
            transport=transport,
            signer=signer,
            bounces=self.bounce_addresses(),
            blobs=self.blobs,
            clock=self.clock,
            worker_name=worker_name or self.process_name,
            registry=self.registry,
            signing_pool=SigningPool(signer, processes) if processes else None,
        )

    def outbound_transport(self) -> Transport:
        """The configured way out: the smarthost if there is one, else the recipient's MX."""
        out = self.config.outbound
        if out.smarthost is not None:
            return SmarthostTransport(out.smarthost, out.timeout_seconds, self.config.smtp.hostname)
        return DirectMxTransport(DnsMxResolver(), out.timeout_seconds, self.config.smtp.hostname)

    def forwarder(
        self, transport: Transport | None = None, worker_name: str | None = None
    ) -> Forwarder:
        """Bot mail forwards to cabinet contacts (R6); pass the dispatcher's transport to
        share its connections. The envelope sender is postmaster@<first domain>: see
        gateway/outbound/forward.py for why."""
        return Forwarder(
            db=self.db,
            config=self.config.outbound,
            gateway_sender=self.config.gateway_sender,
            envelope_sender=f"postmaster@{self.config.domains[0]}",
            transport=transport if transport is not None else self.outbound_transport(),
            signer=DkimSigner(self.dkim_keys.all()),
            raw_mail=self.raw_mail,
            clock=self.clock,
            worker_name=worker_name or self.process_name,
            partner_names={p.name: p.display_name for p in self.registry.partners},
            zone=self.config.filing.zone,
        )

    def webhook_hooks(self) -> list[Hook]:
        """The configured webhooks, secrets read and cabinets found; a ConfigError naming
        the setting otherwise."""
        hooks = []
        for config in self.config.webhooks.values():
            tenant = ALL
            if config.cabinet is not None:
                try:
                    tenant = cabinet_tenant(self.db, config.cabinet)
                except NotFound as exc:
                    raise ConfigError(f"webhooks.{config.name}.cabinet: {exc}") from exc
            hooks.append(Hook(config, config.secret(), tenant))
        return hooks

    def webhook_dispatcher(
        self,
        worker_name: str | None = None,
        transport: httpx.BaseTransport | None = None,
        resolver: Resolver = resolve,
    ) -> WebhookDispatcher:
        """Events pushed to the configured webhooks (gateway/outbound/webhooks.py)."""
        return WebhookDispatcher(
            self.db,
            self.webhook_hooks(),
            self.clock,
            worker_name or self.process_name,
            transport=transport,
            resolver=resolver,
        )

    def inbound_server(self) -> tuple[InboundServer, Spool]:
        """The SMTP server and its spool; call inside the event loop that will run them."""
        spool = Spool(SpoolWriter(self.db, self.segments(self.config.node_name)))
        handler = InboundHandler(
            recipients=self.recipients(),
            spool=spool,
            clock=self.clock,
            config=self.config.smtp,
        )
        return InboundServer(handler, self.config.smtp), spool

    def collection_addresses(self, company_slug: str) -> list[tuple[str, str]]:
        """A company's collection addresses and the folder each files into (R1, R2): one
        per journal, then the bare address whose mail is left to classify."""
        domain = self.config.domains[0]
        filing = self.config.filing
        return [
            *(
                (f"{journal}+{company_slug}@{domain}", folder)
                for journal, folder in filing.journals.items()
            ),
            (f"{company_slug}@{domain}", filing.unsorted_folder),
        ]

    def imap_source(self, name: str) -> ImapSourceConfig:
        try:
            return self.config.imap_sources[name]
        except KeyError:
            known = ", ".join(sorted(self.config.imap_sources)) or "none configured"
            raise ConfigError(
                f"no IMAP source {name!r} in {self.config.path} (sources: {known}; "
                "add one under [imap.sources.NAME])"
            ) from None

    def imap_connector(self, source: ImapSourceConfig) -> Connector:
        """How `source` connects and logs in: its password, or an OAuth2 token from its
        provider (one token cache per source, shared by its folders' pollers)."""
        if source.oauth2 is None:
            return connect
        if source.name not in self._imap_connectors:
            tokens = AccessTokens(
                token_client(source, lambda: self._refresh_tokens(source.name)), self.clock
            )
            self._imap_connectors[source.name] = OAuthConnector(tokens, open_client)
        return self._imap_connectors[source.name]

    def _refresh_tokens(self, source: str) -> StoredRefreshTokens:
        return StoredRefreshTokens(self.db, self.secret_box, self.clock, source)

    @cached_property
    def secret_box(self) -> SecretBox:
        """Seals the secrets kept in the database with this node's `[gateway] secrets_key`."""
        return SecretBox(self.config.secrets_key())

    @cached_property
    def _imap_connectors(self) -> dict[str, OAuthConnector]:
        return {}

    def imap_pollers(
        self,
        source: ImapSourceConfig,
        stop: threading.Event,
        connector: Connector | None = None,
    ) -> list[MailboxPoller]:
        """One poller per folder of `source`; they share one spool writer (one segment)."""
        connector = connector or self.imap_connector(source)
        writer = SpoolWriter(self.db, self.segments(f"{self.config.node_name}-imap"))
        recipients = self.recipients()
        return [
            MailboxPoller(
                source=source,
                folder=folder,
                db=self.db,
                spool=writer,
                recipients=recipients,
                clock=self.clock,
                worker_name=f"{self.process_name}:{source.name}",
                max_message_size=self.config.smtp.max_message_size,
                header_limits=self.config.smtp.header_limits,
                connector=connector,
                stop=stop,
            )
            for folder in source.folders
        ]

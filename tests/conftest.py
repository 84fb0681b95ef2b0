"""Fixtures. Database tests run on SQLite and on PostgreSQL (R8 and friends hold on both).

PostgreSQL comes from $GATEWAY_TEST_POSTGRES_URL (default: the local server, database
`gateway_test`): each run creates its own databases beside it (`gateway_test_<unique>_…`,
one per test) and drops them, so two runs on one server never interfere. Where it cannot be
reached the PostgreSQL variants are skipped, unless $GATEWAY_TEST_REQUIRE_POSTGRES=1 (as in
.ci/run), where that is an error.
"""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dkim
import pytest
from sqlalchemy import URL, create_engine, make_url, text

from gateway.app import Gateway
from gateway.config import GatewayConfig, parse_config
from gateway.outbound.dkim import KeyStore, dns_record_name, dns_txt_value, generate_key
from gateway.storage.accounts import add_cabinet, add_company
from gateway.storage.db import Database
from tests.clamd import ClamdDaemon, running_clamd
from tests.dns_server import DnsServer
from tests.rspamd import RspamdServer, running_rspamd, shared_hs_cache
from tests.s3_server import S3Server, running_s3
from tests.support import DEFAULT_NOW, CaptureServer, FixedClock, RunningServer

BASE_POSTGRES_URL = make_url(
    os.environ.get(
        "GATEWAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/gateway_test"
    )
)
# This run's databases are named after the base name, the process id and a random part.
RUN_PREFIX = f"{BASE_POSTGRES_URL.database}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
REQUIRE_POSTGRES = os.environ.get("GATEWAY_TEST_REQUIRE_POSTGRES") == "1"


class PostgresDatabases:
    """This run's databases on the PostgreSQL server: one per test, dropped after it, made
    empty or copied (`CREATE DATABASE … TEMPLATE`) from a template migrated once per run —
    a copy takes a fraction of the time of running every migration again."""

    def __init__(self, base: URL, prefix: str) -> None:
        self.base = base
        self.prefix = prefix
        self.admin = create_engine(
            base.set(database="postgres"), isolation_level="AUTOCOMMIT", pool_pre_ping=True
        )
        self._numbers = itertools.count(1)
        self._template: str | None = None

    def _run(self, statement: str) -> list[Any]:
        with self.admin.connect() as conn:
            result = conn.execute(text(statement))
            return list(result) if result.returns_rows else []

    def _url(self, name: str) -> str:
        return self.base.set(database=name).render_as_string(hide_password=False)

    def create(self, *, migrated: bool) -> str:
        name = f"{self.prefix}_{next(self._numbers)}"
        source = f' TEMPLATE "{self._migrated_template()}"' if migrated else ""
        self._run(f'CREATE DATABASE "{name}"{source}')
        return self._url(name)

    def _migrated_template(self) -> str:
        if self._template is None:
            name = f"{self.prefix}_template"
            self._run(f'DROP DATABASE IF EXISTS "{name}"')
            self._run(f'CREATE DATABASE "{name}"')
            database = Database(self._url(name))
            try:
                database.migrate()  # as `gateway migrate` does it
            finally:
                database.dispose()
            # A session on the template would make every copy of it fail.
            self._run(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            self._template = name
        return self._template

    def drop(self, url: str) -> None:
        # FORCE: a process the test started may still hold a session.
        self._run(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')

    def drop_all(self) -> None:
        """This run's databases, the template and any a test left behind."""
        pattern = self.prefix.replace("_", "\\_") + "\\_%"
        for (name,) in self._run(f"SELECT datname FROM pg_database WHERE datname LIKE '{pattern}'"):
            self._run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases | Exception]:
    """This run's databases on the server (dropped at the end); an exception instead when
    the server cannot be reached."""
    databases = PostgresDatabases(BASE_POSTGRES_URL, RUN_PREFIX)
    try:
        databases._run("SELECT 1")
    except Exception as exc:
        databases.admin.dispose()
        yield exc
        return
    try:
        yield databases
    finally:
        databases.drop_all()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated once per run, which tests copy."""
    path = tmp_path_factory.mktemp("sqlite-template") / "gateway.db"
    database = Database(f"sqlite:///{path}")
    try:
        database.migrate()
    finally:
        database.dispose()  # the last connection out checkpoints the WAL into the file
    assert not path.with_name(path.name + "-wal").exists(), "the template's WAL was not merged"
    return path


def _test_database(
    request: pytest.FixtureRequest, tmp_path: Path, *, migrated: bool
) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "gateway.db"
        if migrated:
            shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    databases = request.getfixturevalue("postgres_databases")
    try:
        if isinstance(databases, Exception):
            raise databases
        url = databases.create(migrated=migrated)
    except Exception as exc:
        if REQUIRE_POSTGRES:
            raise
        pytest.skip(f"PostgreSQL not reachable at {BASE_POSTGRES_URL!r}: {exc}")
    yield url
    databases.drop(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The test's own database, already at this code's schema (a copy of a template
    migrated once per run). Tests of migrating, or of `gateway migrate`/`init` as an admin
    runs them, take `empty_database_url`."""
    yield from _test_database(request, tmp_path, migrated=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The test's own database with no schema at all (SQLite: no file yet)."""
    yield from _test_database(request, tmp_path, migrated=False)


_QUIET_DNS: list[DnsServer] = []


def quiet_dns_port() -> int:
    """A real DNS server on loopback that publishes nothing (every name: NXDOMAIN), shared by
    the run: what the filing stage's authentication asks unless a test gives its own zone,
    so that no test depends on this machine's resolver."""
    if not _QUIET_DNS:
        _QUIET_DNS.append(DnsServer().start())
    return _QUIET_DNS[0].port


def write_config(tmp_path: Path, database_url: str, **sections: dict[str, Any]) -> Path:
    """A gateway.toml in tmp_path: the defaults, with `sections` merged in."""
    data: dict[str, dict[str, Any]] = {
        "trust": {"nameservers": ["127.0.0.1"], "dns_port": quiet_dns_port()},
        "gateway": {"domains": ["welyb.fr", "welyb.com"], "node_name": "test"},
        "database": {"url": database_url},
        "storage": {"path": str(tmp_path / "storage")},
        "smtp": {"host": "127.0.0.1", "port": 0, "hostname": "mx.welyb.test"},
        "http": {"port": 0},  # any free port: never the fixed default
        "logging": {"format": "json", "level": "warning"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    lines: list[str] = []
    for name, values in data.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml(value)}")
        lines.append("")
    path = tmp_path / "gateway.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml(v)}' for k, v in value.items()) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def load(path: Path) -> GatewayConfig:
    import tomllib

    return parse_config(tomllib.loads(path.read_text()), base=path.parent, path=path)


@pytest.fixture(scope="session")
def clamd_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdDaemon]:
    """One real clamd for the whole run (tests/clamd.py); a test that stops it uses
    `clamd_daemon.stopped()`, which brings it back."""
    with running_clamd(tmp_path_factory.mktemp("clamd")) as daemon:
        yield daemon


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(DEFAULT_NOW)


@pytest.fixture
def config_path(tmp_path: Path, database_url: str) -> Path:
    return write_config(tmp_path, database_url)


def seeded_gateway(config_path: Path, clock: FixedClock) -> Gateway:
    """A prepared gateway with one cabinet and two companies."""
    gateway = Gateway.from_config(load(config_path), clock)
    gateway.prepare_storage()
    add_cabinet(gateway.db, "aecconseil", "AEC Conseil", "contact@aecconseil.fr", clock.now())
    add_company(
        gateway.db,
        gateway.grammar,
        "dupont-maconnerie",
        "aecconseil",
        "Dupont Maçonnerie",
        "12-31",
        clock.now(),
    )
    add_company(
        gateway.db,
        gateway.grammar,
        "boulangerie-martin",
        "aecconseil",
        "Boulangerie Martin",
        "06-30",
        clock.now(),
    )
    return gateway


@contextmanager
def relaying_gateway(
    tmp_path: Path, database_url: str, clock: FixedClock, relay_port: int
) -> Iterator[Gateway]:
    """A seeded gateway sending through a smarthost on `relay_port` (a CaptureServer), with
    a DKIM key for each domain; `dkim_verifies(gateway, data)` checks what it signed."""
    relay = {"host": "127.0.0.1", "port": relay_port, "starttls": False}
    gateway = seeded_gateway(
        write_config(tmp_path, database_url, outbound={"smarthost": relay}), clock
    )
    store = KeyStore(gateway.config.dkim_path)
    gateway.dkim_records = {}  # type: ignore[attr-defined]
    for domain in gateway.config.domains:
        key = generate_key(domain, "s2026")
        store.save(key)
        gateway.dkim_records[dns_record_name(key)] = dns_txt_value(key)  # type: ignore[attr-defined]
    try:
        yield gateway
    finally:
        gateway.db.dispose()


@pytest.fixture
def partner_inbox() -> Iterator[CaptureServer]:
    """A capture server on a free port playing the partner's inbox (smarthost mode)."""
    with CaptureServer() as capture:
        yield capture


@pytest.fixture
def out_gw(
    tmp_path: Path, database_url: str, clock: FixedClock, partner_inbox: CaptureServer
) -> Iterator[Gateway]:
    """A gateway relaying through the capture server, with DKIM keys for both domains."""
    with relaying_gateway(tmp_path, database_url, clock, partner_inbox.port) as gateway:
        yield gateway


def dkim_verifies(gateway: Gateway, data: bytes) -> bool:
    """dkimpy's verdict on `data`, with the keys of a `relaying_gateway` as the DNS."""
    records = gateway.dkim_records  # type: ignore[attr-defined]

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.decode().rstrip("."), "").encode()

    return bool(dkim.verify(data, dnsfunc=dnsfunc))


@contextmanager
def custom_server(
    tmp_path: Path, database_url: str, clock: FixedClock, **sections: dict[str, Any]
) -> Iterator[tuple[Gateway, RunningServer]]:
    """A seeded gateway with configuration `sections`, its SMTP server running."""
    gateway = seeded_gateway(write_config(tmp_path, database_url, **sections), clock)
    running = RunningServer(gateway).start()
    try:
        yield gateway, running
    finally:
        running.stop()
        gateway.db.dispose()


@pytest.fixture
def gw(config_path: Path, clock: FixedClock) -> Iterator[Gateway]:
    gateway = seeded_gateway(config_path, clock)
    yield gateway
    gateway.db.dispose()


@pytest.fixture
def server(gw: Gateway) -> Iterator[RunningServer]:
    running = RunningServer(gw).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def rspamd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RspamdServer]:
    """One real rspamd for the whole run (tests/rspamd.py): a first start on a machine
    compiles its Hyperscan databases for ~20 s, later ones take under a second."""
    with running_rspamd(
        tmp_path_factory.mktemp("rspamd"), hs_cache_dir=shared_hs_cache()
    ) as server:
        yield server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One real S3 server (`rclone serve s3`, tests/s3_server.py) for the whole run; a test
    that stops it uses `s3_server.stopped()`, which brings it back on the same port."""
    with running_s3(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket on that server, for this test alone."""
    return s3_server.make_bucket(f"test-{uuid.uuid4().hex[:16]}")

"""Database access: one engine per process, SQLite or PostgreSQL.

SQLite runs in WAL mode with `synchronous=FULL`, because a 250 promises the row survives a
power cut. Write transactions on SQLite start with `BEGIN IMMEDIATE`: a deferred transaction
that reads, then writes after another process committed fails at once with "database is
locked" instead of waiting; taking the write lock up front makes it wait (busy_timeout).
"""

from __future__ import annotations

import fcntl
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from gateway.errors import GatewayError
from gateway.logs import one_line as one_line  # a database error as one line, for callers here

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The PostgreSQL advisory lock every `migrate` takes: one migration at a time across nodes.
MIGRATION_LOCK = 0x6761_7465  # "gate"


class SchemaError(GatewayError):
    """The database's schema is not the one this code works with; the message says why and
    what to do."""


def _alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection_url"] = url
    return cfg


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_alembic_config(""))


def head_revision() -> str:
    """The newest revision this code knows."""
    head = _scripts().get_current_head()
    assert head is not None
    return head


def known_revisions() -> frozenset[str]:
    return frozenset(s.revision for s in _scripts().walk_revisions())


def _newer_than_code(current: str | None) -> str | None:
    """Why a schema at `current` is beyond this code, or None when the code knows it."""
    if current is None or current in known_revisions():
        return None
    return (
        f"the database schema is at revision {current}, newer than this gateway knows "
        f"(its newest is {head_revision()}): run the release that migrated it, or newer"
    )


def _revision_to_migrate(connection: Connection) -> str | None:
    """The revision a migration starts from, read under its lock; `SchemaError` (the
    transaction rolls back) for a schema newer than this code."""
    found = MigrationContext.configure(connection).get_current_revision()
    newer = _newer_than_code(found)
    if newer:
        raise SchemaError(newer)
    return found


class Database:
    """`durable_commits=False` is for stages whose work is idempotent (the filing worker):
    on SQLite their commits skip the WAL fsync (`synchronous=NORMAL`), so they hold the
    single write lock for microseconds, not the milliseconds of an fsync the SMTP server
    would wait behind. A power cut can lose such a commit; the work is then redone once.
    Nothing changes for PostgreSQL."""

    def __init__(self, url: str, *, echo: bool = False, durable_commits: bool = True) -> None:
        self.url = url
        self.durable_commits = durable_commits
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=10)
        self.engine: Engine = create_engine(url, **kwargs)
        self._lock_path: str | None = None
        if self.is_sqlite:
            _configure_sqlite(self.engine, "FULL" if durable_commits else "NORMAL")
            database = self.engine.url.database
            if database and database != ":memory:":
                self._lock_path = database + "-writelock"
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(
            self.engine.execution_options(sqlite_immediate=True), expire_on_commit=False
        )

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any exception."""
        with self._sqlite_write_turn(), self._writer() as session, session.begin():
            yield session

    @contextmanager
    def _sqlite_write_turn(self) -> Iterator[None]:
        """Wait for our turn to write, in the kernel, before SQLite's own lock.

        SQLite lets one writer in at a time and makes the others poll with sleeps of 1, 2,
        5, 10 ms…; the SMTP server's commit would sleep behind a filing worker's few
        microseconds of work. An flock on a side file queues writers of every process and
        thread instead, and wakes the next one the moment the lock is free.
        """
        if self._lock_path is None:
            yield
            return
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def migrate(self, revision: str = "head") -> str | None:
        """Bring the schema to `revision`: the newest one unless told (Alembic). Safe to run
        from several processes or nodes at once: on PostgreSQL the first takes an advisory
        lock and the others wait, then find nothing left to do; on SQLite the write turn
        serialises them. A schema newer than this code is refused (`SchemaError`). Returns
        the revision found once the lock was taken (None: there was no schema)."""
        cfg = _alembic_config(self.url)
        with self._sqlite_write_turn(), self.engine.connect() as connection:
            cfg.attributes["connection"] = connection
            if not self.is_sqlite:
                with connection.begin():
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
                    found = _revision_to_migrate(connection)
                    command.upgrade(cfg, revision)
                return found
            # SQLite changes a constraint by rebuilding the table (Alembic's batch mode),
            # which drops the old one: foreign keys pointing at it would refuse that. They
            # are off for the migration (a pragma that cannot change inside a transaction,
            # hence on the driver's connection before BEGIN), checked after, then on again.
            driver = connection.connection.driver_connection
            assert driver is not None
            driver.execute("PRAGMA foreign_keys=OFF")
            try:
                with connection.begin():
                    found = _revision_to_migrate(connection)
                    command.upgrade(cfg, revision)
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"migration broke foreign keys: {broken[:5]}")
            finally:
                driver.execute("PRAGMA foreign_keys=ON")
            return found

    def revision(self) -> str | None:
        """The schema's revision in the database (None: no schema yet): one small query."""
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def schema_problem(self) -> str | None:
        """Why this code cannot work on the database's schema as it is, in one line, saying
        what to do; None when the schema is the code's own."""
        current, head = self.revision(), head_revision()
        if current == head:
            return None
        newer = _newer_than_code(current)
        if newer:
            return newer
        if current is None:
            return "the database has no schema yet: run `gateway migrate`"
        return (
            f"the database schema is at revision {current} and this gateway needs {head}: "
            "run `gateway migrate`"
        )

    def dispose(self) -> None:
        self.engine.dispose()


def safe_url(url: str) -> str:
    """A database URL without its password, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def upsert_insert(session: Session) -> Any:
    """The dialect's INSERT, which has `on_conflict_do_nothing` (SQLite and PostgreSQL)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

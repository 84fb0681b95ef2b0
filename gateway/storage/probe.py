"""Does the database answer? The readiness check's question, asked on a connection of its own.

Each probe opens a fresh connection (no pool): it tells whether the gateway could start a
transaction now, not whether a pooled connection from a minute ago still looks open. On
PostgreSQL the connection and the query each have a timeout; on SQLite the file is opened
read-write without being created (a missing file is an answer, not a new empty database),
and the query reads the schema's revision, so an unreadable or replaced file fails too.
A probe blocks (a network round trip, a disk read): call it from a thread.
"""

from __future__ import annotations

import sqlite3
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from gateway.storage.db import one_line

QUERY = text("SELECT count(*) FROM alembic_version")


class DatabaseProbe:
    def __init__(self, url: str, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        self.engine = _engine(url, timeout_seconds)

    def problem(self) -> str | None:
        """None when the database answered; otherwise what went wrong, in one line."""
        try:
            with self.engine.connect() as connection:
                connection.execute(QUERY).scalar_one()
        except Exception as exc:
            return one_line(exc)
        return None

    def dispose(self) -> None:
        self.engine.dispose()


def _engine(url: str, timeout: float) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""

        def connect() -> sqlite3.Connection:
            uri = f"file:{quote(path)}?mode=rw"
            return sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)

        return create_engine("sqlite://", creator=connect, poolclass=NullPool)
    seconds = max(2, round(timeout))  # libpq's smallest connect_timeout
    options = f"-c statement_timeout={int(timeout * 1000)}"
    return create_engine(
        parsed, poolclass=NullPool, connect_args={"connect_timeout": seconds, "options": options}
    )

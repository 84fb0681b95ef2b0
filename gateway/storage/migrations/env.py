"""Alembic environment: run by `Database.migrate()` with a connection handed in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from gateway.storage.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # `alembic` CLI use: the URL is given on the command line
        url = config.attributes.get("connection_url") or config.get_main_option("sqlalchemy.url")
        if not url:
            raise SystemExit("alembic: give the database URL (-x or sqlalchemy.url)")
        with create_engine(url).connect() as conn:
            context.configure(
                connection=conn, target_metadata=target_metadata, render_as_batch=True
            )
            with context.begin_transaction():
                context.run_migrations()
        return
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations()

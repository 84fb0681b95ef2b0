"""Migrations applied to a database that already holds rows, as an upgrade meets it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import func, inspect, select, text, update
from sqlalchemy.exc import IntegrityError

from gateway.app import Gateway
from gateway.storage import events
from gateway.storage.accounts import add_cabinet
from gateway.storage.db import head_revision
from gateway.storage.folders import ensure_folder
from gateway.storage.models import (
    Base,
    BotMailForward,
    Company,
    Connection,
    Delivery,
    DeliveryEvent,
    Document,
    InboundMessage,
    Switch,
)
from tests.conftest import load, write_config
from tests.test_queues import _forward


@pytest.fixture
def config_path(tmp_path, empty_database_url):
    """Every test here starts from a database with no schema: migrating is what it tests."""
    return write_config(tmp_path, empty_database_url)


def _counts(gw: Gateway) -> dict[str, int]:
    """Rows per table, for the tables the database has."""
    present = set(inspect(gw.db.engine).get_table_names())
    with gw.db.read() as s:
        return {
            table.name: s.execute(select(func.count()).select_from(table)).scalar_one()
            for table in Base.metadata.sorted_tables
            if table.name in present
        }


def test_status_checks_are_added_to_a_database_that_has_rows(
    config_path, clock, tmp_path, monkeypatch
):
    """Migration 0005 on a 0004 database with every kind of row: on SQLite the tables are
    rebuilt (foreign keys point at them), on PostgreSQL altered; nothing is lost."""
    gw = Gateway.from_config(load(config_path), clock)
    # Rows written as a 0004 gateway wrote them: it had no outbox (migration 0014) yet.
    monkeypatch.setattr(events, "emit_many", lambda *args: None)
    try:
        gw.db.migrate("0004")
        add_cabinet(gw.db, "aecconseil", "AEC Conseil", "contact@aecconseil.fr", clock.now())
        with gw.db.write() as s:  # its columns of 0004 (SIREN and the rest came in 0016)
            s.execute(
                text(
                    "INSERT INTO companies (slug, cabinet_id, name, fiscal_year_end, created_at)"
                    " SELECT 'dupont-maconnerie', id, 'Dupont', '12-31', :now FROM cabinets"
                ),
                {"now": clock.now()},
            )
        _outbound_rows_at_0004(gw, clock)
        _forward(gw, clock)  # an inbound message, its bot mail and a queued forward
        before = _counts(gw)
        monkeypatch.undo()
        assert before["deliveries"] == 1 and before["delivery_events"] == 1

        gw.db.migrate()

        after = _counts(gw)
        assert {name: after[name] for name in before} == before
        assert after["inbound_message_events"] == after["bot_mail_forward_events"] == 0
        for model in (Delivery, InboundMessage, BotMailForward):
            with pytest.raises(IntegrityError, match="ck_"), gw.db.write() as s:
                s.execute(update(model).values(status="lost"))
    finally:
        gw.db.dispose()


def _outbound_rows_at_0004(gw: Gateway, clock) -> None:
    """A connection, a switch, a document and its queued delivery, written as the 0004
    schema holds them (Core inserts: today's models have columns added since)."""
    now = clock.now()
    with gw.db.write() as s:
        company_id = s.execute(select(Company.id)).scalar_one()
        folder_id = ensure_folder(s, company_id, "A classer", now)

        def insert(model, **values) -> int:
            table = model.__table__
            return s.execute(table.insert().values(**values).returning(table.c.id)).scalar_one()

        connection_id = insert(
            Connection,
            company_id=company_id,
            partner="meg",
            entered_address="meg+macon-dupont@welyb.fr",
            destination="macon-dupont@factures-meg.fr",
            created_at=now,
        )
        insert(
            Switch, connection_id=connection_id, folder_id=folder_id, is_on=True, turned_on_at=now
        )
        document_id = insert(
            Document,
            company_id=company_id,
            folder_id=folder_id,
            filename="f.pdf",
            media_type="application/pdf",
            size=16,
            sha256="0" * 64,
            source="upload",
            origin="upload",
            placed_at=now,
        )
        delivery_id = insert(
            Delivery,
            document_id=document_id,
            connection_id=connection_id,
            status="queued",
            due_at=now,
            attempts=0,
            created_at=now,
        )
        insert(DeliveryEvent, delivery_id=delivery_id, at=now, to_status="queued")


def _gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=120
    )


def test_two_migrations_at_once_on_an_empty_database_both_succeed(config_path):
    """Two nodes started together: one migrates, the other waits (advisory lock on
    PostgreSQL, the write turn on SQLite) and finds nothing left to do."""
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "gateway", "migrate", "-c", str(config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(r.wait(timeout=120), r.communicate()) for r in runs]
    assert [code for code, _ in results] == [0, 0], [err for _, (_, err) in results]
    said = sorted(out for _, (out, _) in results)
    assert said[0].startswith("schema at revision ") and "up to date" in said[0]
    assert said[1].startswith("schema migrated from revision (none) to ")


def test_a_schema_behind_the_code_is_refused_in_one_line_unless_migration_is_automatic(
    tmp_path, empty_database_url, clock
):
    config = write_config(tmp_path, empty_database_url)
    listing = _gateway("messages", "list", "-c", str(config))
    if empty_database_url.startswith("sqlite"):  # the embedded default migrates itself
        assert listing.returncode == 0, listing.stderr
        return
    assert listing.returncode == 1
    assert listing.stderr.strip().splitlines() == [
        "gateway: the database has no schema yet: run `gateway migrate`"
    ]
    auto = write_config(tmp_path, empty_database_url, database={"migrate": "auto"})
    assert _gateway("messages", "list", "-c", str(auto)).returncode == 0
    assert _gateway("messages", "list", "-c", str(config)).returncode == 0


def test_a_schema_newer_than_the_code_is_named_with_both_revisions(config_path, clock):
    gw = Gateway.from_config(load(config_path), clock)
    try:
        gw.prepare_storage()
        with gw.db.write() as s:
            s.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        gw.db.dispose()
    for verb in (["messages", "list"], ["migrate"]):
        result = _gateway(*verb, "-c", str(config_path))
        assert result.returncode == 1
        [line] = result.stderr.strip().splitlines()
        assert "revision 9999, newer than this gateway" in line
        assert f"(its newest is {head_revision()})" in line

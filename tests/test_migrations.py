"""Migrations applied to a database that already holds rows, as an upgrade meets it."""

from __future__ import annotations

import pytest
from sqlalchemy import func, inspect, select, update
from sqlalchemy.exc import IntegrityError

from gateway.app import Gateway
from gateway.storage.accounts import add_cabinet, add_company
from gateway.storage.connections import add_connection, add_document, set_switch
from gateway.storage.models import (
    Base,
    BotMail,
    BotMailForward,
    Delivery,
    ForwardStatus,
    InboundMessage,
)
from tests.conftest import load
from tests.test_filing import arrive


def _counts(gw: Gateway) -> dict[str, int]:
    """Rows per table, for the tables the database has."""
    present = set(inspect(gw.db.engine).get_table_names())
    with gw.db.read() as s:
        return {
            table.name: s.execute(select(func.count()).select_from(table)).scalar_one()
            for table in Base.metadata.sorted_tables
            if table.name in present
        }


def test_status_checks_are_added_to_a_database_that_has_rows(config_path, clock, tmp_path):
    """Migration 0005 on a 0004 database with every kind of row: on SQLite the tables are
    rebuilt (foreign keys point at them), on PostgreSQL altered; nothing is lost."""
    gw = Gateway.from_config(load(config_path), clock)
    try:
        gw.db.migrate("0004")
        add_cabinet(gw.db, "aecconseil", "AEC Conseil", "contact@aecconseil.fr", clock.now())
        add_company(
            gw.db, gw.grammar, "dupont-maconnerie", "aecconseil", "Dupont", "12-31", clock.now()
        )
        add_connection(
            gw.db, gw.grammar, "dupont-maconnerie", "meg", "meg+macon-dupont@welyb.fr", clock.now()
        )
        set_switch(gw.db, "dupont-maconnerie", "A classer", "meg", True, clock.now())
        clock.advance(minutes=1)
        path = tmp_path / "f.pdf"
        path.write_bytes(b"%PDF-1.4 facture")
        add_document(
            gw.db, gw.grammar, gw.blobs, "dupont-maconnerie", "A classer", path, clock.now()
        )
        message = arrive(gw, ["myunisoft+aecconseil@welyb.fr"], b"Subject: x\r\n\r\nx\r\n", clock)
        with gw.db.write() as s:
            mail = BotMail(
                inbound_message_id=message,
                recipient="myunisoft+aecconseil@welyb.fr",
                mail_from="x@example.org",
                received_at=clock.now(),
            )
            s.add(mail)
            s.flush()
            s.add(
                BotMailForward(
                    bot_mail_id=mail.id,
                    to_address="contact@aecconseil.fr",
                    status=ForwardStatus.QUEUED,
                    due_at=clock.now(),
                    created_at=clock.now(),
                )
            )
        before = _counts(gw)
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

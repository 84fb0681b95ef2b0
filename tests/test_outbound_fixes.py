"""Issue 13's "fix on the way" (found by trying the CLI as a firm would), and the service
functions for connections, switches and deliveries that the CLI and the HTTP API share."""

from __future__ import annotations

import io
import json
import zipfile
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from gateway.cli import cli
from gateway.errors import GatewayError
from gateway.storage.accounts import AccountError, Conflict, NotFound, add_cabinet, add_company
from gateway.storage.connections import (
    add_connection,
    delete_connection,
    get_connection,
    set_switch,
    update_connection,
)
from gateway.storage.ledger import delivery_events, retry_delivery
from gateway.storage.listings.outbound import list_deliveries, list_switches
from gateway.storage.models import Cabinet, Delivery, Folder
from gateway.storage.queues import deliveries as ledger_queue
from gateway.storage.tenancy import Tenant
from tests.support import pdf
from tests.test_outbound import ACHATS, delivery, place, run

COMPANY = "dupont-maconnerie"


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.pdf", pdf("in zip"))
    return buf.getvalue()


def cli_run(config, *args: str):
    """The command as `gateway` runs it: exit 1 and the message for our errors."""
    result = CliRunner().invoke(cli, [*args, "-c", str(config)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert isinstance(result.exception, GatewayError), result.exception
        return SimpleNamespace(exit_code=1, output=result.output + str(result.exception))
    return result


def _meg_switched(config) -> None:
    assert (
        cli_run(
            config,
            "connection",
            "add",
            "--company",
            COMPANY,
            "--partner",
            "meg",
            "--address",
            "meg+macon-dupont@welyb.fr",
        ).exit_code
        == 0
    )
    on = cli_run(
        config,
        "switch",
        "on",
        "--company",
        COMPANY,
        "--partner",
        "meg",
        "--folder",
        ACHATS,
        "--create-folder",
    )
    assert on.exit_code == 0, on.output


def _add(config, tmp_path, name: str, content: bytes, folder: str = ACHATS):
    """`documents add` of one file."""
    (tmp_path / name).write_bytes(content)
    return cli_run(config, "documents", "add", "--company", COMPANY, "--folder", folder,
                   str(tmp_path / name))  # fmt: skip


def _ledger(config) -> list[dict]:
    return json.loads(cli_run(config, "deliveries", "list", "--json").output)


def test_documents_add_reports_skipped_deliveries_with_the_reason(gw, config_path, tmp_path):
    """Was: "1 delivery(ies) queued" for a ZIP MEG never takes."""
    _meg_switched(config_path)
    files = {
        "archive.zip": _zip(),
        "huge.pdf": pdf("big") + b"\0" * (10 * 1024 * 1024),
        "ok.pdf": pdf("ok"),
    }
    out = {
        name: _add(config_path, tmp_path, name, data, ACHATS + "/11")
        for name, data in files.items()
    }
    assert all(r.exit_code == 0 for r in out.values())
    assert "queued" not in out["archive.zip"].output
    assert "1 delivery(ies) skipped (MEG Achats does not take application/zip" in (
        out["archive.zip"].output
    )
    assert "up to 10,485,760 bytes (10 MiB); this one is 10,486,344 bytes" in out["huge.pdf"].output
    assert "1 delivery(ies) queued" in out["ok.pdf"].output
    assert "skipped" not in out["ok.pdf"].output


def test_retry_of_a_skipped_delivery_that_still_breaks_the_limits_is_refused(
    gw, config_path, tmp_path
):
    """Was: `deliveries retry` queued it again and the sender sent the ZIP."""
    _meg_switched(config_path)
    _add(config_path, tmp_path, "archive.zip", _zip())
    [d] = _ledger(config_path)
    result = cli_run(config_path, "deliveries", "retry", str(d["id"]))
    assert result.exit_code == 1
    assert f"delivery #{d['id']} cannot be sent: MEG Achats does not take application/zip" in (
        result.output
    )
    assert _ledger(config_path)[0]["status"] == "skipped"
    with pytest.raises(Conflict) as refused:
        retry_delivery(gw.db, gw.registry, d["id"], gw.clock.now())
    assert refused.value.field == "delivery_id"


def test_the_sender_checks_the_limits_again(out_gw, clock, partner_inbox, tmp_path):
    """R14 at send time: a skipped delivery queued again by other means is still not sent."""
    add_connection(
        out_gw.db, out_gw.grammar, COMPANY, "meg", "meg+macon-dupont@welyb.fr", clock.now()
    )
    set_switch(out_gw.db, COMPANY, ACHATS, "meg", True, clock.now(), create_folder=True)
    clock.advance(minutes=1)
    (tmp_path / "a.zip").write_bytes(_zip())
    from gateway.storage.connections import add_document

    add_document(
        out_gw.db, out_gw.grammar, out_gw.blobs, COMPANY, ACHATS, tmp_path / "a.zip", clock.now()
    )
    d = delivery(out_gw)
    with out_gw.db.write() as s:
        ledger_queue.retry(s, d.id, clock.now())  # the queue's own move, with no rule asked
    assert run(out_gw, flush=True) == 0
    assert partner_inbox.accepted == []
    d = delivery(out_gw)
    assert d.status == "skipped" and "does not take application/zip" in d.reason


def test_a_document_moved_out_before_the_run_is_not_sent(out_gw, clock, partner_inbox, tmp_path):
    """Was: sent anyway. The move skips the waiting delivery, visible in the ledger."""
    add_connection(
        out_gw.db, out_gw.grammar, COMPANY, "meg", "meg+macon-dupont@welyb.fr", clock.now()
    )
    set_switch(out_gw.db, COMPANY, ACHATS, "meg", True, clock.now(), create_folder=True)
    clock.advance(minutes=1)
    place(out_gw, clock, tmp_path, "misfiled.pdf")
    d = delivery(out_gw)
    assert d.status == "queued"
    config = out_gw.config_path if hasattr(out_gw, "config_path") else tmp_path / "gateway.toml"
    moved = cli_run(config, "documents", "move", str(d.document_id), "--folder", "Ventes/11")
    assert moved.exit_code == 0, moved.output
    assert run(out_gw, flush=True) == 0 and partner_inbox.accepted == []
    d = delivery(out_gw)
    assert d.status == "skipped"
    assert d.reason == "moved out of the switched folder before the run (now in Ventes/11)"
    ledger = delivery_events(out_gw.db, d.id)
    assert [(e.from_status, e.to_status) for e in ledger.events] == [
        (None, "queued"),
        ("queued", "skipped"),
    ]
    assert ledger.events[-1].detail == d.reason and ledger.delivery.status == "skipped"
    # Moved back: retrying is allowed again, and it goes.
    cli_run(config, "documents", "move", str(d.document_id), "--folder", ACHATS + "/11")
    assert retry_delivery(out_gw.db, out_gw.registry, d.id, clock.now()).status == "queued"
    assert run(out_gw, flush=True) == 1 and len(partner_inbox.accepted) == 1


def test_a_switch_turned_off_before_the_run_stops_the_sending(
    out_gw, clock, partner_inbox, tmp_path
):
    """Checked by the sender itself: the delivery was claimed, then found unsendable."""
    add_connection(
        out_gw.db, out_gw.grammar, COMPANY, "meg", "meg+macon-dupont@welyb.fr", clock.now()
    )
    set_switch(out_gw.db, COMPANY, ACHATS, "meg", True, clock.now(), create_folder=True)
    clock.advance(minutes=1)
    place(out_gw, clock, tmp_path, "f.pdf")
    set_switch(out_gw.db, COMPANY, ACHATS, "meg", False, clock.now())
    assert run(out_gw, flush=True) == 0 and partner_inbox.accepted == []
    d = delivery(out_gw)
    assert d.status == "skipped" and d.reason == "MEG Achats switched off before the run"
    events = delivery_events(out_gw.db, d.id).events
    assert [e.to_status for e in events] == ["queued", "sending", "skipped"]
    assert events[-1].from_status == "sending"


def test_switch_on_refuses_an_unknown_folder_unless_asked_to_create_it(gw, config_path, clock):
    """Was: a mistyped folder was created silently (and nothing was ever sent)."""
    add_connection(gw.db, gw.grammar, COMPANY, "meg", "meg+macon-dupont@welyb.fr", clock.now())
    set_switch(gw.db, COMPANY, ACHATS, "meg", True, clock.now(), create_folder=True)
    typo = "Dossier comptable annuel/2026/Achat"
    result = cli_run(
        config_path, "switch", "on", "--company", COMPANY, "--partner", "meg", "--folder", typo
    )
    assert result.exit_code == 1
    assert f"no folder '{typo}'; did you mean '{ACHATS}'" in result.output
    with gw.db.read() as s:
        assert s.execute(select(Folder.id).where(Folder.path == typo)).first() is None
    with pytest.raises(AccountError) as refused:
        set_switch(gw.db, COMPANY, typo, "meg", True, clock.now())
    assert refused.value.field == "folder"
    row = set_switch(gw.db, COMPANY, typo, "meg", True, clock.now(), create_folder=True)
    assert row.on and row.folder == typo and row.turned_on_at is not None
    assert {s.folder for s in list_switches(gw.db)} == {ACHATS, typo}


def test_connection_update_corrects_a_typo_and_refuses_a_bad_address(gw, config_path, clock):
    add_connection(gw.db, gw.grammar, COMPANY, "meg", "meg+macon-dupon@welyb.fr", clock.now())
    result = cli_run(
        config_path,
        "connection",
        "update",
        "--company",
        COMPANY,
        "--partner",
        "meg",
        "--address",
        "meg+macon-dupont@welyb.fr",
    )
    assert result.exit_code == 0, result.output
    assert "macon-dupont@factures-meg.fr" in result.output
    assert get_connection(gw.db, COMPANY, "meg").destination == "macon-dupont@factures-meg.fr"
    with pytest.raises(AccountError) as bad:
        update_connection(gw.db, gw.grammar, COMPANY, "meg", "meg+macon dupont@welyb.fr")
    assert bad.value.field == "address" and "for example meg+" in str(bad.value)
    assert get_connection(gw.db, COMPANY, "meg").entered_address == "meg+macon-dupont@welyb.fr"
    with pytest.raises(AccountError) as unknown:
        add_connection(gw.db, gw.grammar, COMPANY, "megg", "meg+x@welyb.fr", clock.now())
    assert unknown.value.field == "partner"
    with pytest.raises(Conflict):
        add_connection(gw.db, gw.grammar, COMPANY, "meg", "meg+x@welyb.fr", clock.now())
    refused = cli_run(
        config_path,
        "connection",
        "update",
        "--company",
        COMPANY,
        "--partner",
        "meg",
        "--address",
        "macon-dupont@factures-meg.fr",
    )
    assert refused.exit_code == 1 and "meg+" in refused.output


def test_deleting_a_connection_removes_its_switches_and_skips_what_waits(gw, config_path, tmp_path):
    _meg_switched(config_path)
    _add(config_path, tmp_path, "f.pdf", pdf("f"))
    result = cli_run(config_path, "connection", "delete", "--company", COMPANY, "--partner", "meg")
    assert result.exit_code == 0, result.output
    assert "1 waiting delivery(ies) skipped" in result.output
    [d] = _ledger(config_path)
    assert d["status"] == "skipped" and d["reason"] == "the connection was deleted before the run"
    assert list_switches(gw.db) == []
    assert json.loads(cli_run(config_path, "connection", "list", "--json").output) == []
    with pytest.raises(NotFound):
        get_connection(gw.db, COMPANY, "meg")
    with pytest.raises(Conflict, match="connection was deleted"):
        retry_delivery(gw.db, gw.registry, d["id"], gw.clock.now())
    # Added again: the same row comes back, with no switch (R10 counts from the new one).
    again = add_connection(
        gw.db, gw.grammar, COMPANY, "meg", "meg+achats+macon@welyb.fr", gw.clock.now()
    )
    assert again.destination == "macon@achats.factures-meg.fr" and list_switches(gw.db) == []


def test_another_cabinet_sees_none_of_it(gw, config_path, clock, tmp_path):
    _meg_switched(config_path)
    _add(config_path, tmp_path, "f.pdf", pdf("f"))
    add_cabinet(gw.db, "autre", "Autre", None, clock.now())
    add_company(gw.db, gw.grammar, "autre-sarl", "autre", None, "12-31", clock.now())
    with gw.db.read() as s:
        ids = dict(s.execute(select(Cabinet.slug, Cabinet.id)).all())
    other, own = Tenant(ids["autre"]), Tenant(ids["aecconseil"])
    [d] = list_deliveries(gw.db, tenant=own)
    assert list_deliveries(gw.db, tenant=other) == [] and list_switches(gw.db, other) == []
    assert len(list_switches(gw.db, own)) == 1
    for call in (
        lambda: get_connection(gw.db, COMPANY, "meg", other),
        lambda: update_connection(gw.db, gw.grammar, COMPANY, "meg", "meg+x@welyb.fr", other),
        lambda: delete_connection(gw.db, gw.grammar, COMPANY, "meg", clock.now(), other),
        lambda: set_switch(gw.db, COMPANY, ACHATS, "meg", False, clock.now(), tenant=other),
        lambda: retry_delivery(gw.db, gw.registry, d.id, clock.now(), other),
        lambda: delivery_events(gw.db, d.id, other),
    ):
        with pytest.raises(NotFound):
            call()
    assert delivery_events(gw.db, d.id, own).delivery.id == d.id
    with gw.db.read() as s:
        assert s.get(Delivery, d.id).status == "queued"

"""`gateway status` and `gateway messages show`, as an admin reads them: the queues, the
claims, the IMAP folders; one message's envelope, history and what was made of it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from gateway.app import Gateway
from gateway.cli import cli
from gateway.clock import as_utc
from gateway.storage import processes
from gateway.storage.models import DeliveryStatus
from gateway.storage.queues import imap_checkpoints
from gateway.storage.queues.base import LEASE
from gateway.storage.queues.imap_checkpoints import Claimant
from tests.conftest import custom_server
from tests.support import FixedClock, file_all, message, pdf
from tests.test_operations import IMAP_SOURCE
from tests.test_smtp import send


def gateway_says(config: Path, *args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "-c", str(config)])
    assert result.exit_code == 0, result.output
    return result.output


def when(text: str) -> datetime:
    return as_utc(datetime.fromisoformat(text))


def test_status_counts_each_queue_and_names_who_holds_what(tmp_path, database_url, clock):
    sections = {"imap": {"sources": {"factures": IMAP_SOURCE}}}
    with custom_server(tmp_path, database_url, clock, **sections) as (gw, server):
        config = gw.config.path
        assert config is not None
        received = []
        for i in range(3):  # one minute apart: the oldest is known
            received.append(clock.now())
            pdf_part = (f"f{i}.pdf", "application/pdf", pdf(f"status {i}"))
            send(server, "compta+dupont-maconnerie@welyb.fr", message(attachments=[pdf_part]))
            clock.advance(minutes=1)
        assert gw.filer("node-a:100").run_once(limit=1) == 1  # the first is filed
        assert gw.filer("node-b:4242").claim(limit=1)  # the second is being filed
        real_now = datetime.now(UTC)  # the command's clock: heartbeats are judged by it
        with gw.db.write() as s:
            processes.register(s, "node-a:100:a1", "node-a", "filing", real_now)
            processes.register(s, "node-b:4242:b2", "node-b", "sender", real_now - 5 * LEASE)
        reader = Claimant("factures", "INBOX", "node-a:101:factures")
        with gw.db.write() as s:
            imap_checkpoints.claim(s, reader, clock.now())
            imap_checkpoints.advance(s, reader, 17, clock.now())
        report = json.loads(gateway_says(config, "status", "--json"))
        text = gateway_says(config, "status")

    inbound = next(q for q in report["queues"] if q["queue"] == "inbound_messages")
    assert {k: v for k, v in inbound["states"].items() if v} == {
        "received": 1,
        "filing": 1,
        "filed": 1,
    }
    assert inbound["waiting"] == 2
    assert when(inbound["oldest_waiting_at"]) == received[1]  # the first no longer waits
    assert inbound["oldest_waiting_seconds"] > 0
    others = [q for q in report["queues"] if q["queue"] != "inbound_messages"]
    assert [(q["queue"], q["waiting"], q["oldest_waiting_at"]) for q in others] == [
        ("deliveries", 0, None),
        ("bot_mail_forwards", 0, None),
    ]
    assert set(others[0]["states"]) == {s.value for s in DeliveryStatus}  # 0 or not
    [claim] = report["claims"]
    assert claim["queue"] == "inbound_messages" and claim["claimed_by"] == "node-b:4242"
    assert claim["items"] == 1 and when(claim["lease_until"]) == clock.now() + LEASE
    assert [(p["node"], p["role"], p["alive"]) for p in report["processes"]] == [
        ("node-a", "filing", True),
        ("node-b", "sender", False),  # silent for longer than a lease
    ]
    [folder] = report["imap"]
    assert (folder["source"], folder["folder"], folder["last_uid"]) == ("factures", "INBOX", 17)
    assert folder["reader"] == "node-a:101:factures"
    assert when(folder["last_sync_at"]) == clock.now() and folder["last_error"] is None

    lines = text.splitlines()
    row = next(line for line in lines if line.startswith("inbound_messages"))
    assert row.split()[1] == "2" and "received 1, filing 1, filed 1" in row
    assert (
        next(line for line in lines if line.startswith("deliveries")).rstrip().endswith("(empty)")
    )
    assert any("node-b:4242" in line for line in lines)
    assert any("node-a:101:factures" in line for line in lines)
    process_rows = [line.split() for line in lines if line.startswith(("node-a ", "node-b "))]
    assert [(row[0], row[1], row[3]) for row in process_rows] == [
        ("node-a", "filing", "True"),
        ("node-b", "sender", "False"),
    ]


def _queue_ids(gw: Gateway) -> list[str]:
    from gateway.storage.listings.inbound import list_messages

    return [m.queue_id for m in reversed(list_messages(gw.db))]


def test_messages_show_tells_a_message_s_story(gw: Gateway, server, clock: FixedClock):
    config = gw.config.path
    assert config is not None
    invoice = ("facture.pdf", "application/pdf", pdf("show"))
    send(server, "compta+dupont-maconnerie@welyb.fr", message(attachments=[invoice]))
    clock.advance(minutes=1)
    again = message(subject="Relance", attachments=[invoice])  # the same bytes again
    send(server, ["compta+dupont-maconnerie@welyb.fr", "myunisoft+aecconseil@welyb.fr"], again)
    file_all(gw)
    first, second = _queue_ids(gw)

    shown = json.loads(gateway_says(config, "messages", "show", first.lower(), "--json"))
    assert shown["message"]["queue_id"] == first
    assert shown["message"]["status"] == "filed"
    assert shown["message"]["mail_from"] == "fournisseur@example.org"
    assert shown["message"]["rcpt_tos"] == ["compta+dupont-maconnerie@welyb.fr"]
    assert shown["message"]["reason"].startswith("filed 1: facture.pdf -> dupont-maconnerie:")
    assert [(h["from_status"], h["to_status"]) for h in shown["history"]] == [
        (None, "received"),
        (None, "filing"),
        ("filing", "filed"),
    ]
    assert shown["history"][2]["detail"] == "filed by test-filer"
    [document] = shown["made"]
    assert document["kind"] == "document" and document["filename"] == "facture.pdf"
    assert document["where"] == "dupont-maconnerie:Dossier comptable annuel/2026/Achats/11"

    other = json.loads(gateway_says(config, "messages", "show", second, "--json"))
    assert other["message"]["status"] == "duplicate"
    made = {m["kind"]: m for m in other["made"]}
    assert set(made) == {"duplicate", "bot_mail"}
    assert made["duplicate"]["id"] == document["id"]
    assert made["bot_mail"]["where"] == "myunisoft+aecconseil@welyb.fr"

    text = gateway_says(config, "messages", "show", first)
    assert f"message:     {first}" in text and "status:      filed" in text
    assert "filed by test-filer" in text and "facture.pdf" in text
    missing = CliRunner().invoke(cli, ["messages", "show", "NOSUCHID", "-c", str(config)])
    assert missing.exit_code == 1
    assert "no message NOSUCHID" in missing.output

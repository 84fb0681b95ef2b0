"""The API's mail resources: a cabinet's bot mailbox (list, read, forwarding), the inbound
log and the quarantine (admin), against the real listener, with mail that came in by SMTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.app import Gateway
from tests.api_server import RunningApi, running_api
from tests.conftest import seeded_gateway, write_config
from tests.support import FixedClock, RunningServer, file_all, message, pdf

BOT = "myunisoft+aecconseil@welyb.fr"


@pytest.fixture
def api(tmp_path: Path, database_url: str, clock: FixedClock) -> Iterator[RunningApi]:
    gw = seeded_gateway(write_config(tmp_path, database_url), clock)
    with running_api(gw) as running:
        yield running


def _receive(gw: Gateway, to: str, data: bytes) -> None:
    server = RunningServer(gw).start()
    try:
        with server.client() as smtp:
            smtp.sendmail("partenaire@myunisoft.fr", [to], data)
    finally:
        server.stop()
    file_all(gw)


def test_bot_mail_list_read_and_forwarding_per_cabinet(api: RunningApi) -> None:
    admin = api.token("admin")
    api.post("/cabinets", admin, json={"slug": "autre-cabinet"})
    _receive(api.gw, BOT, message(to=BOT, subject="Relevé MyUnisoft", body="Bonjour\n"))
    mine, other = api.token("read", "aecconseil"), api.token("write", "autre-cabinet")

    [mail] = api.get("/bot-mail", mine).json()
    assert (mail["cabinet"], mail["recipient"], mail["subject"]) == (
        "aecconseil",
        BOT,
        "Relevé MyUnisoft",
    )
    assert api.get("/bot-mail", other).json() == []
    read = api.get(f"/bot-mail/{mail['id']}/message", mine)
    assert read.status_code == 200 and read.headers["content-type"] == "message/rfc822"
    assert read.content.startswith(b"Received: from client.example.org")
    assert read.content.endswith(b"\r\n\r\nBonjour\r\n")
    assert api.get(f"/bot-mail/{mail['id']}/message", other).status_code == 404

    assert api.get("/cabinets/aecconseil/forwarding", mine).json() == {
        "on": False,
        "contact": "contact@aecconseil.fr",
    }
    assert api.put("/cabinets/aecconseil/forwarding", mine, json={"on": True}).status_code == 403
    assert api.put("/cabinets/aecconseil/forwarding", other, json={"on": True}).status_code == 404
    writer = api.token("write", "aecconseil")
    looped = api.put(
        "/cabinets/aecconseil/forwarding", writer, json={"on": True, "contact": "x@welyb.fr"}
    )
    assert looped.status_code == 422 and "would come back here" in looped.json()["error"]
    on = api.put("/cabinets/aecconseil/forwarding", writer, json={"on": True})
    assert on.json() == {"on": True, "contact": "contact@aecconseil.fr"}


def test_messages_and_quarantine_need_an_admin_token(api: RunningApi) -> None:
    _receive(
        api.gw,
        "compta+dupont-maconnerie@welyb.fr",
        message(attachments=[("facture.pdf", "application/pdf", pdf("F1"))]),
    )
    admin, cabinet = api.token("admin"), api.token("write", "aecconseil")
    assert api.get("/messages", cabinet).status_code == 403
    [filed] = api.get("/messages", admin).json()
    assert filed["status"] == "filed"
    assert api.get(f"/messages/{filed['queue_id']}", admin).json() == filed
    assert api.get("/messages?status=filed", admin).json() == [filed]
    assert api.get("/messages?status=nonsense", admin).status_code == 422
    assert api.get("/messages/NOPE", admin).status_code == 404

    # Retrying a message that is not held is the queue's refusal: 409, nothing changed.
    refused = api.post(f"/messages/{filed['queue_id']}/retry", admin)
    assert refused.status_code == 409, refused.text
    assert api.get(f"/messages/{filed['queue_id']}", admin).json()["status"] == "filed"
    assert api.get("/quarantine", admin).json() == []
    assert api.post(f"/quarantine/{filed['queue_id']}/release", admin).status_code == 409

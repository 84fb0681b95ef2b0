"""The API's connection form, switches, delivery ledger and events against the real
listener: every bad vector of the partner spec refused with 422 naming the field (nothing
saved), corrections, tenant isolation, and the events a platform polls."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api_server import RunningApi, running_api
from tests.conftest import seeded_gateway, write_config
from tests.support import FixedClock, pdf

COMPANY = "dupont-maconnerie"

# partners.md's refusals (tests/test_connections_parse.py checks the parser's words).
BAD_VECTORS = [
    ("meg", "foo+x@welyb.fr"),
    ("meg", "meg+Macon_Dupont@welyb.fr"),
    ("meg", "meg+achats+macon dupont@welyb.com"),
    ("meg", "meg+macon--dupont@welyb.fr"),
    ("myunisoft", "myunisoft+aecconseil@welyb.fr"),
    ("myunisoft", "myunisoft+aecconseil+ab-45-ACH@welyb.fr"),
    ("myunisoft", "myunisoft+aecconseil+67-x5-ACH@welyb.fr"),
    ("myunisoft", "myunisoft+aecconseil+67-45-A1@welyb.fr"),
    ("myunisoft", "myunisoft+aecconseil+67--ACH@welyb.fr"),
    ("myunisoft", "myunisoft+aecconseil+67-45@welyb.fr"),
    ("myunisoft", "myunisoft+aec conseil+67-45-ACH@welyb.fr"),
    ("quickbooks", "quickbooks+Dupont Maconnerie@welyb.com"),
    ("quickbooks", "quickbooks+dupont.maconnerie@welyb.fr"),
    ("jefacture", "compta+dupont-maconnerie@welyb.fr"),
    ("upflow", "postmaster@welyb.com"),
    ("meg", "not an address"),
    ("meg", "meg+macon-dupont@example.org\r\nRCPT TO:<x@evil.test>"),
]


@pytest.fixture
def api(tmp_path: Path, database_url: str, clock: FixedClock) -> Iterator[RunningApi]:
    path = write_config(tmp_path, database_url, api={"rate_per_second": 1000, "rate_burst": 1000})
    with running_api(seeded_gateway(path, clock)) as running:
        yield running


@pytest.mark.parametrize(("partner", "address"), BAD_VECTORS)
def test_the_form_refuses_every_bad_vector_and_saves_nothing(
    api: RunningApi, partner: str, address: str
) -> None:
    token = api.token("write", "aecconseil")
    body = {"company": COMPANY, "partner": partner, "address": address}
    refused = api.post("/connections", token, json=body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "address"
    assert refused.json()["error"].strip()
    assert api.get("/connections", token).json() == []


def test_an_unknown_partner_names_the_partner_field(api: RunningApi) -> None:
    body = {"company": COMPANY, "partner": "sage", "address": "meg+macon-dupont@welyb.fr"}
    refused = api.post("/connections", api.token("write"), json=body)
    assert refused.status_code == 422 and refused.json()["field"] == "partner"
    assert "myunisoft" in refused.json()["error"]


def test_create_correct_and_delete_a_connection(api: RunningApi) -> None:
    token = api.token("write", "aecconseil")
    body = {"company": COMPANY, "partner": "meg", "address": "meg+macon-dupon@welyb.fr"}
    made = api.post("/connections", token, json=body)
    assert made.status_code == 201, made.text
    assert made.json()["entered"] == "meg+macon-dupon@welyb.fr"
    assert api.post("/connections", token, json=body).status_code == 409

    path = f"/companies/{COMPANY}/connections/meg"
    wrong = api.put(path, token, json={"address": "meg+Macon Dupont@welyb.fr"})
    assert wrong.status_code == 422 and wrong.json()["field"] == "address"
    assert api.get(path, token).json()["entered"] == "meg+macon-dupon@welyb.fr"  # unchanged
    fixed = api.put(path, token, json={"address": "meg+macon-dupont@welyb.fr"})
    assert fixed.status_code == 200 and fixed.json()["entered"] == "meg+macon-dupont@welyb.fr"

    gone = api.delete(path, token)
    assert gone.status_code == 200 and gone.json() == {
        "company": COMPANY,
        "partner": "meg",
        "skipped": [],
    }
    assert api.get(path, token).status_code == 404


def test_switch_deliveries_ledger_and_events(api: RunningApi) -> None:
    token = api.token("write", "aecconseil")
    body = {"company": COMPANY, "partner": "meg", "address": "meg+macon-dupont@welyb.fr"}
    assert api.post("/connections", token, json=body).status_code == 201
    switch = f"/companies/{COMPANY}/switches"
    typo = api.put(switch, token, json={"partner": "meg", "folder": "Achts", "on": True})
    assert typo.status_code == 422 and typo.json()["field"] == "folder"
    on = api.put(
        switch,
        token,
        json={"partner": "meg", "folder": "Achats", "on": True, "create_folder": True},
    )
    assert on.status_code == 200 and on.json()["on"] is True
    assert on.json()["turned_on_at"].endswith("Z") or "+00:00" in on.json()["turned_on_at"]
    api.gw.clock.advance(minutes=1)  # type: ignore[attr-defined]

    files = {"file": ("facture.pdf", pdf("F1"))}
    placed = api.post(
        "/documents", token, data={"company": COMPANY, "folder": "Achats"}, files=files
    ).json()
    [delivery_id] = placed["deliveries"]
    [row] = api.get("/deliveries", token).json()
    assert (row["id"], row["status"], row["partner"]) == (delivery_id, "queued", "meg")
    ledger = api.get(f"/deliveries/{delivery_id}", token).json()
    assert ledger["events"][0]["to_status"] == "queued"
    not_failed = api.post(f"/deliveries/{delivery_id}/retry", token)
    assert not_failed.status_code == 409

    events = api.get("/events", token).json()
    assert [e["type"] for e in events["items"]] == ["document.filed"]
    assert events["next_after"] == events["items"][-1]["id"]
    assert api.get("/events", token, params={"after": events["next_after"]}).json()["items"] == []
    bad = api.get("/events", token, params={"types": "document.eaten"})
    assert bad.status_code == 422 and bad.json()["field"] == "types"


def test_another_cabinet_sees_none_of_it(api: RunningApi) -> None:
    admin = api.token("admin")
    assert api.post("/cabinets", admin, json={"slug": "autre-cabinet"}).status_code == 201
    mine, other = api.token("write", "aecconseil"), api.token("write", "autre-cabinet")
    body = {"company": COMPANY, "partner": "meg", "address": "meg+macon-dupont@welyb.fr"}
    assert api.post("/connections", other, json=body).status_code == 404
    assert api.post("/connections", mine, json=body).status_code == 201
    path = f"/companies/{COMPANY}/connections/meg"
    assert api.get(path, other).status_code == 404
    assert api.put(path, other, json={"address": "meg+x@welyb.fr"}).status_code == 404
    assert api.delete(path, other).status_code == 404
    assert api.get("/connections", other).json() == []
    switch = {"partner": "meg", "folder": "Achats", "on": True, "create_folder": True}
    assert api.put(f"/companies/{COMPANY}/switches", other, json=switch).status_code == 404
    assert api.get("/deliveries", other).json() == []
    assert api.get("/events", other).json()["items"] == []

"""The API's documents against the real listener: multipart upload, keyset pages, download,
move, folder trees, and what another cabinet's token sees (nothing)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api_server import RunningApi, running_api
from tests.conftest import seeded_gateway, write_config
from tests.support import FixedClock, pdf


@pytest.fixture
def api(tmp_path: Path, database_url: str, clock: FixedClock) -> Iterator[RunningApi]:
    path = write_config(tmp_path, database_url, api={"max_upload_bytes": 200_000})
    with running_api(seeded_gateway(path, clock)) as running:
        yield running


def _upload(api: RunningApi, token: str, name: str, content: bytes, **form: str) -> object:
    data = {"company": "dupont-maconnerie", "folder": "Achats", **form}
    return api.post("/documents", token, data=data, files={"file": (name, content)})


def test_upload_list_download_and_move(api: RunningApi) -> None:
    token = api.token("write", "aecconseil")
    placed = _upload(api, token, "../../etc/facture-1.pdf", pdf("F1"))
    assert placed.status_code == 201, placed.text
    doc = placed.json()
    assert (doc["filename"], doc["media_type"], doc["folder"], doc["source"]) == (
        "facture-1.pdf",
        "application/pdf",
        "Achats",
        "upload",
    )
    again = _upload(api, token, "copie.pdf", pdf("F1"))
    assert again.status_code == 409 and again.json()["field"] == "file"

    for n in range(2, 6):
        assert _upload(api, token, f"facture-{n}.pdf", pdf(f"F{n}")).status_code == 201
    seen, after = [], None
    while True:
        params = {"company": "dupont-maconnerie", "limit": 2, **({"after": after} if after else {})}
        page = api.get("/documents", token, params=params).json()
        seen += [d["filename"] for d in page["items"]]
        after = page["next_cursor"]
        if after is None:
            break
    assert seen == [f"facture-{n}.pdf" for n in range(1, 6)]
    bad = api.get("/documents", token, params={"after": "not-a-cursor"})
    assert bad.status_code == 422 and bad.json()["field"] == "cursor"

    got = api.get(f"/documents/{doc['id']}/content", token)
    assert got.status_code == 200 and got.content == pdf("F1")
    assert got.headers["content-type"] == "application/pdf"
    assert 'filename="facture-1.pdf"' in got.headers["content-disposition"]

    moved = api.post(f"/documents/{doc['id']}/move", token, json={"folder": "Ventes/2026-11"})
    assert moved.status_code == 200 and moved.json()["folder"] == "Ventes/2026-11"
    detail = api.get(f"/documents/{doc['id']}", token).json()
    assert detail["folder"] == "Ventes/2026-11" and detail["deliveries"] == []
    tree = {
        f["path"]: f["documents"]
        for f in api.get("/companies/dupont-maconnerie/folders", token).json()
    }
    assert tree["Achats"] == 4 and tree["Ventes/2026-11"] == 1


def test_another_cabinets_token_sees_nothing(api: RunningApi) -> None:
    admin = api.token("admin")
    assert api.post("/cabinets", admin, json={"slug": "autre-cabinet"}).status_code == 201
    doc = _upload(api, api.token("write", "aecconseil"), "f.pdf", pdf("F1")).json()
    other = api.token("write", "autre-cabinet")
    assert api.get(f"/documents/{doc['id']}", other).status_code == 404
    assert api.get(f"/documents/{doc['id']}/content", other).status_code == 404
    assert api.post(f"/documents/{doc['id']}/move", other, json={"folder": "X"}).status_code == 404
    assert api.get("/documents", other).json() == {"items": [], "next_cursor": None}
    assert api.get("/companies/dupont-maconnerie/folders", other).status_code == 404
    refused = _upload(api, other, "g.pdf", pdf("G"))
    assert refused.status_code == 404 and refused.json()["field"] == "company"
    assert api.get("/documents", admin).json()["items"][0]["id"] == doc["id"]


def test_bad_uploads(api: RunningApi) -> None:
    token = api.token("write")
    missing = api.post("/documents", token, data={"company": "dupont-maconnerie", "folder": "A"})
    assert missing.status_code == 422 and missing.json()["field"] == "file"
    huge = _upload(api, token, "big.pdf", b"%PDF-1.4\n" + b"0" * 300_000)
    assert huge.status_code == 413
    assert api.get("/documents", token).json()["items"] == []  # nothing half-written
    traversal = _upload(api, token, "f.pdf", pdf("T"), folder="../../etc")
    assert traversal.status_code == 422 and traversal.json()["field"] == "folder"

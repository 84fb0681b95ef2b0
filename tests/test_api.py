"""The platform API (/api/v1) against the real listener on a free port, driven by httpx:
tokens and scopes, tenancy, refusals, limits, the audit log and the OpenAPI document."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.storage.api_tokens import audit_log, revoke_token
from gateway.storage.models import ApiToken
from tests.api_server import RunningApi, running_api
from tests.conftest import seeded_gateway, write_config
from tests.support import FixedClock


@pytest.fixture
def api(tmp_path: Path, database_url: str, clock: FixedClock) -> Iterator[RunningApi]:
    path = write_config(tmp_path, database_url, api={"rate_per_second": 1000, "rate_burst": 1000})
    gw = seeded_gateway(path, clock)
    with running_api(gw) as running:
        yield running


def _another_cabinet(api: RunningApi, admin: str) -> None:
    """Besides the seeded aecconseil (dupont-maconnerie, boulangerie-martin)."""
    assert api.post("/cabinets", admin, json={"slug": "autre-cabinet"}).status_code == 201
    made = api.post("/companies", admin, json={"slug": "mercier-sarl", "cabinet": "autre-cabinet"})
    assert made.status_code == 201, made.text


def test_the_openapi_document_is_served_and_names_every_resource(api: RunningApi) -> None:
    doc = api.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert {"/cabinets", "/cabinets/{slug}", "/companies", "/companies/{slug}", "/status"} <= set(
        doc["paths"]
    )
    assert doc["servers"] == [{"url": "/api/v1"}]


def test_no_token_a_wrong_one_a_revoked_one_and_an_expired_one_are_401(
    api: RunningApi, clock: FixedClock
) -> None:
    missing = api.get("/cabinets")
    assert missing.status_code == 401
    assert "gateway token create" in missing.json()["error"]
    assert api.get("/cabinets", "gw_000000000000_" + "x" * 43).status_code == 401
    assert api.get("/cabinets", "not-even-a-token").status_code == 401

    token = api.token("read")
    assert api.get("/cabinets", token).status_code == 200
    with api.gw.db.read() as s:
        token_id = s.execute(select(ApiToken.id).order_by(ApiToken.id.desc())).scalar_one()
    revoke_token(api.gw.db, token_id, clock.now())
    assert api.get("/cabinets", token).status_code == 401

    short = api.token("read", expires_in=timedelta(hours=1))
    assert api.get("/cabinets", short).status_code == 200
    clock.advance(seconds=3601)
    refused = api.get("/cabinets", short)
    assert refused.status_code == 401
    assert "unknown, revoked or expired" in refused.json()["error"]


def test_scopes(api: RunningApi) -> None:
    admin, write, read = api.token("admin"), api.token("write"), api.token("read")
    assert api.post("/cabinets", read, json={"slug": "cabinet-neuf"}).status_code == 403
    refused = api.post("/cabinets", write, json={"slug": "cabinet-neuf"})
    assert refused.status_code == 403
    assert refused.json()["error"] == "this token's scope is write; this needs admin"
    assert api.post("/cabinets", admin, json={"slug": "cabinet-neuf"}).status_code == 201
    body = {"slug": "nouvelle-sarl", "cabinet": "cabinet-neuf"}
    assert api.post("/companies", read, json=body).status_code == 403
    made = api.post("/companies", write, json=body)
    assert made.status_code == 201
    assert {"address": "ventes+nouvelle-sarl@welyb.fr", "folder": "Ventes"} in made.json()[
        "collection_addresses"
    ]
    assert api.get("/status", write).status_code == 403
    assert api.get("/status", admin).status_code == 200


def test_a_cabinet_token_sees_its_cabinet_only(api: RunningApi) -> None:
    admin = api.token("admin")
    _another_cabinet(api, admin)
    mine = api.token("write", "aecconseil")
    assert [c["slug"] for c in api.get("/cabinets", mine).json()] == ["aecconseil"]
    seeded = ["boulangerie-martin", "dupont-maconnerie"]
    assert [c["slug"] for c in api.get("/companies", mine).json()] == seeded
    # Another cabinet's company reads as absent, not as forbidden.
    other = api.get("/companies/mercier-sarl", mine)
    assert other.status_code == 404
    assert api.get("/cabinets/autre-cabinet", mine).status_code == 404
    into_other = api.post("/companies", mine, json={"slug": "x-sarl", "cabinet": "autre-cabinet"})
    assert into_other.status_code == 404 and into_other.json()["field"] == "cabinet"
    into_mine = api.post("/companies", mine, json={"slug": "x-sarl", "cabinet": "aecconseil"})
    assert into_mine.status_code == 201
    assert [c["slug"] for c in api.get("/companies", mine).json()] == [*seeded, "x-sarl"]
    assert len(api.get("/companies", admin).json()) == 4


@pytest.mark.parametrize(
    ("body", "status", "field", "says"),
    [
        ({"slug": "Bad Slug"}, 422, "slug", "cabinet"),
        ({"slug": "neuf", "colour": "blue"}, 422, "colour", "colour: unknown field"),
        ({"slug": 42}, 422, "slug", "slug: Input should be a valid string"),
        ({}, 422, "slug", "slug: required"),
        ({"slug": "x", "contact": "not an address"}, 422, "contact", "not an email address"),
    ],
)
def test_bad_bodies_are_422_naming_the_field(
    api: RunningApi, body: dict[str, object], status: int, field: str, says: str
) -> None:
    answer = api.post("/cabinets", api.token("admin"), json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["field"] == field
    assert says in answer.json()["error"]


def test_malformed_json_a_duplicate_and_nothing_half_written(api: RunningApi) -> None:
    admin = api.token("admin")
    broken = api.post(
        "/cabinets", admin, content=b'{"slug": "aec', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 422 and "not valid JSON" in broken.json()["error"]
    assert api.post("/cabinets", admin, json={"slug": "cabinet-neuf"}).status_code == 201
    again = api.post("/cabinets", admin, json={"slug": "cabinet-neuf"})
    assert again.status_code == 409 and again.json()["field"] == "slug"
    assert [c["slug"] for c in api.get("/cabinets", admin).json()] == ["aecconseil", "cabinet-neuf"]


def test_a_huge_body_is_413_with_or_without_a_length(api: RunningApi) -> None:
    admin = api.token("admin")
    huge = b'{"slug": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    declared = api.post(
        "/cabinets", admin, content=huge, headers={"Content-Type": "application/json"}
    )
    assert declared.status_code == 413
    # Chunked, no Content-Length: counted as it arrives.
    chunked = api.post(
        "/cabinets",
        admin,
        content=iter([huge[i : i + 65536] for i in range(0, len(huge), 65536)]),
        headers={"Content-Type": "application/json"},
    )
    assert chunked.status_code == 413
    assert "larger than 1048576 bytes" in chunked.json()["error"]


def test_rate_limit_per_token(tmp_path: Path, database_url: str, clock: FixedClock) -> None:
    path = write_config(tmp_path, database_url, api={"rate_per_second": 0.5, "rate_burst": 3})
    with running_api(seeded_gateway(path, clock)) as api:
        token, other = api.token("read"), api.token("read")
        codes = [api.get("/cabinets", token).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = api.get("/cabinets", token)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert api.get("/cabinets", other).status_code == 200  # per token


def test_every_write_is_in_the_audit_log(api: RunningApi) -> None:
    admin, read = api.token("admin"), api.token("read")
    api.post("/cabinets", admin, json={"slug": "cabinet-neuf"})
    api.post("/cabinets", read, json={"slug": "refused"})
    api.get("/cabinets", admin)  # a read: not logged
    entries = audit_log(api.gw.db)
    assert [(e.action, e.object, e.status) for e in entries] == [
        ("POST /cabinets", "/api/v1/cabinets", 403),
        ("POST /cabinets", "/api/v1/cabinets", 201),
    ]
    assert entries[0].token_id != entries[1].token_id


def test_token_create_shows_the_token_once_and_keeps_only_its_hash(
    tmp_path: Path, database_url: str, clock: FixedClock
) -> None:
    path = write_config(tmp_path, database_url)
    gw = seeded_gateway(path, clock)
    made = subprocess.run(
        [sys.executable, "-m", "gateway", "token", "create", "--scope", "read", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("gw_") and "shown this once" in made.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "gateway", "token", "list", "--json", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert secret not in listed.stdout
    [row] = json.loads(listed.stdout)
    assert row["scope"] == "read" and row["cabinet"] is None
    with gw.db.read() as s:
        stored = s.execute(select(ApiToken)).scalar_one()
    assert secret not in (stored.sha256, stored.key)
    with running_api(gw) as api:
        assert api.get("/cabinets", secret).status_code == 200

    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "token",
            "create",
            "--scope",
            "admin",
            "--cabinet",
            "aecconseil",
            "-c",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "admin token sees every cabinet" in refused.stderr


def test_the_database_away_is_503_not_500(tmp_path: Path, clock: FixedClock) -> None:
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'gateway.db'}")
    gw = seeded_gateway(path, clock)
    token = None
    with running_api(gw) as api:
        token = api.token("read")
        gw.db.engine.dispose()
        (tmp_path / "gateway.db").rename(tmp_path / "gone.db")
        (tmp_path / "gateway.db").mkdir()  # sqlite cannot open a folder: OperationalError
        answer = api.get("/cabinets", token)
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "5"
    assert "the database does not answer" in answer.json()["error"]

"""A company's identity for e-invoices (issue 15): SIREN (Luhn), SIRET, intra-EU VAT number,
checked and consistent, on `company add`, `company set` and the API's /companies; every error
says what is wrong and names the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import cli
from gateway.einvoice.identifiers import CompanyIdentity, IdentifierError
from tests.api_server import RunningApi, running_api
from tests.conftest import seeded_gateway, write_config
from tests.support import FixedClock
from tests.test_cli import run

SIREN, SIRET, VAT = "732829320", "73282932000074", "FR44732829320"
OTHER_SIREN = "552100554"


@pytest.mark.parametrize(
    ("siren", "siret", "vat", "field", "says"),
    [
        ("732829321", None, None, "siren", "check digit is wrong"),
        ("73282932", None, None, "siren", "9 digits"),
        ("73282932A", None, None, "siren", "digits"),
        (None, "73282932000075", None, "siret", "check digit is wrong"),
        (OTHER_SIREN, SIRET, None, "siret", f"not an establishment of SIREN {OTHER_SIREN}"),
        (None, None, "FR45732829320", "vat_number", "check digit is wrong"),
        (None, None, "732829320", "vat_number", "country code"),
        (None, None, "XX123456789", "vat_number", "not an EU member state"),
        (OTHER_SIREN, None, VAT, "vat_number", f"SIREN {SIREN}'s, not {OTHER_SIREN}'s"),
    ],
)
def test_wrong_identifiers_say_what_is_wrong(
    siren: str | None, siret: str | None, vat: str | None, field: str, says: str
) -> None:
    with pytest.raises(IdentifierError, match=says) as raised:
        CompanyIdentity.checked(siren, siret, vat)
    assert raised.value.field == field


def test_identifiers_are_kept_compact_and_a_siret_gives_its_siren() -> None:
    assert CompanyIdentity.checked("732 829 320", None, "fr 44 732 829 320") == CompanyIdentity(
        SIREN, None, VAT
    )
    assert CompanyIdentity.checked(None, "732 829 320 00074", None) == CompanyIdentity(
        SIREN, SIRET, None
    )
    # Another member state's VAT number says nothing about the SIREN.
    assert CompanyIdentity.checked(SIREN, None, "DE136695976").vat_number == "DE136695976"


def test_company_add_and_set_on_the_command_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'g.db'}")
    c = ["-c", str(config)]
    runner = CliRunner()
    assert runner.invoke(cli, ["cabinet", "add", "aecconseil", *c]).exit_code == 0
    added = runner.invoke(
        cli,
        ["company", "add", "dupont-maconnerie", "--cabinet", "aecconseil", "--siret", SIRET, *c],
    )
    assert added.exit_code == 0, added.output
    listed = json.loads(runner.invoke(cli, ["company", "list", "--json", *c]).output)
    assert (listed[0]["siren"], listed[0]["siret"], listed[0]["vat_number"]) == (
        SIREN,
        SIRET,
        None,
    )
    changed = runner.invoke(cli, ["company", "set", "dupont-maconnerie", "--vat", VAT, *c])
    assert changed.exit_code == 0, changed.output
    assert f"VAT number {VAT}" in changed.output
    # A new SIREN must take the old SIRET and VAT number along, or clear them.
    refused = run("company", "set", "dupont-maconnerie", "--siren", OTHER_SIREN, *c)
    assert refused.returncode == 1
    assert f"SIRET {SIRET} is not an establishment of SIREN {OTHER_SIREN}" in refused.stderr
    cleared = runner.invoke(
        cli,
        [
            "company", "set", "dupont-maconnerie",
            "--siren", OTHER_SIREN, "--siret", "", "--vat", "", *c,
        ],
    )  # fmt: skip
    assert cleared.exit_code == 0, cleared.output
    listed = json.loads(runner.invoke(cli, ["company", "list", "--json", *c]).output)
    assert (listed[0]["siren"], listed[0]["siret"], listed[0]["vat_number"]) == (
        OTHER_SIREN,
        None,
        None,
    )
    bad = run("company", "add", "boulangerie", "--cabinet", "aecconseil", "--siren", "123", *c)
    assert bad.returncode == 1 and "SIREN '123' is not valid: it must have 9 digits" in bad.stderr
    assert "boulangerie" not in runner.invoke(cli, ["company", "list", *c]).output


def test_the_api_takes_and_changes_the_identity_and_names_the_wrong_field(
    tmp_path: Path, database_url: str, clock: FixedClock
) -> None:
    with running_api(seeded_gateway(write_config(tmp_path, database_url), clock)) as api:
        _identity_through_the_api(api)


def _identity_through_the_api(api: RunningApi) -> None:
    write = api.token("write")
    made = api.post(
        "/companies",
        write,
        json={"slug": "mercier-sarl", "cabinet": "aecconseil", "siren": SIREN, "vat_number": VAT},
    )
    assert made.status_code == 201, made.text
    assert (made.json()["siren"], made.json()["vat_number"]) == (SIREN, VAT)
    wrong = api.request("PATCH", "/companies/mercier-sarl", write, json={"siret": "1234"})
    assert wrong.status_code == 422
    assert wrong.json()["field"] == "siret" and "14 digits" in wrong.json()["error"]
    changed = api.request("PATCH", "/companies/mercier-sarl", write, json={"siret": SIRET})
    assert changed.status_code == 200, changed.text
    assert api.get("/companies/mercier-sarl", write).json()["siret"] == SIRET

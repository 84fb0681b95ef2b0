"""The one address grammar (R1, R2, R6, R7) and the partner registry it reads."""

from __future__ import annotations

import pytest

from gateway.config import DEFAULT_JOURNALS, DEFAULT_PARTNER_REGISTRY
from gateway.routing.addresses import AddressGrammar, AddressKind, split_address
from gateway.routing.partners import RegistryError, load_registry, parse_registry


@pytest.fixture(scope="module")
def grammar() -> AddressGrammar:
    return AddressGrammar(
        ("welyb.fr", "welyb.com"), DEFAULT_JOURNALS, load_registry(DEFAULT_PARTNER_REGISTRY)
    )


@pytest.mark.parametrize(
    ("address", "journal", "company"),
    [
        ("ventes+dupont-maconnerie@welyb.fr", "ventes", "dupont-maconnerie"),
        ("compta+dupont-maconnerie@welyb.com", "compta", "dupont-maconnerie"),
        ("achats+x1@welyb.fr", "achats", "x1"),
        ("social+dupont-maconnerie@welyb.fr", "social", "dupont-maconnerie"),
        ("banque+dupont-maconnerie@welyb.fr", "banque", "dupont-maconnerie"),
        ("<Ventes+Dupont-Maconnerie@WELYB.FR>", "ventes", "dupont-maconnerie"),
    ],
)
def test_collection_addresses_on_every_domain_any_case(grammar, address, journal, company):
    """R1, R2: <journal>+<company>@ on each served domain, case-insensitively."""
    parsed = grammar.parse(address)
    assert parsed.kind is AddressKind.COLLECTION
    assert (parsed.journal, parsed.company) == (journal, company)
    assert parsed.files_into_ged


def test_bare_company_address_files_unsorted(grammar):
    """R2: a bare <company>@ address is a collection address without a journal."""
    parsed = grammar.parse("dupont-maconnerie@welyb.com")
    assert parsed.kind is AddressKind.COMPANY
    assert parsed.company == "dupont-maconnerie" and parsed.journal is None


@pytest.mark.parametrize(
    ("address", "partner", "cabinet", "company"),
    [
        ("myunisoft+aecconseil@welyb.fr", "myunisoft", "aecconseil", None),
        ("MyUnisoft+AecConseil@welyb.com", "myunisoft", "aecconseil", None),
        ("quickbooks+dupont-maconnerie@welyb.com", "quickbooks", None, "dupont-maconnerie"),
    ],
)
def test_bot_identities(grammar, address, partner, cabinet, company):
    """R6: bot identities go to a bot mailbox, not the GED."""
    parsed = grammar.parse(address)
    assert parsed.kind is AddressKind.BOT
    assert (parsed.partner, parsed.cabinet, parsed.company) == (partner, cabinet, company)
    assert parsed.goes_to_bot_mailbox and not parsed.files_into_ged


@pytest.mark.parametrize(
    ("address", "partner", "fields"),
    [
        (
            "myunisoft+aecconseil+67-45-ACH@welyb.fr",
            "myunisoft",
            {"cabinet": "aecconseil", "schema": "67", "company": "45", "journal": "ACH"},
        ),
        ("meg+macon-dupont@welyb.fr", "meg", {"name": "macon-dupont"}),
        ("meg+achats+macon-dupont@welyb.fr", "meg", {"name": "macon-dupont"}),
    ],
)
def test_partner_aliases(grammar, address, partner, fields):
    parsed = grammar.parse(address)
    assert parsed.kind is AddressKind.PARTNER_ALIAS
    assert parsed.partner == partner
    assert dict(parsed.fields) == fields


@pytest.mark.parametrize(
    "address",
    [
        "ventes+dupont maconnerie@welyb.fr",
        "ventes+Dupont_Maconnerie@welyb.fr",
        "ventes+a+b@welyb.fr",
        "ventes@welyb.fr",
        "myunisoft+aecconseil+67-ACH@welyb.fr",
        "myunisoft+aecconseil+ab-cd-ACH@welyb.fr",
        "nobody+x@welyb.fr",
        "a_b@welyb.fr",
    ],
)
def test_unknown_local_parts_on_our_domain(grammar, address):
    """R7: our domain, but no meaning: refused with a reason."""
    parsed = grammar.parse(address)
    assert parsed.kind in (AddressKind.UNKNOWN, AddressKind.INVALID)
    assert parsed.problem


def test_myunisoft_alias_problem_names_expected_form(grammar):
    parsed = grammar.parse("myunisoft+aecconseil+67-45@welyb.fr")
    assert parsed.kind is AddressKind.UNKNOWN
    assert "{schema:digits}-{company:digits}-{journal:code}" in (parsed.problem or "")


@pytest.mark.parametrize(
    "address", ["ventes+dupont-maconnerie@gmail.com", "someone@welyb.fr.evil.com", "a@welyb.org"]
)
def test_foreign_domains(grammar, address):
    """R7: the gateway serves its domains only."""
    assert grammar.parse(address).kind is AddressKind.FOREIGN


@pytest.mark.parametrize(
    "address",
    [
        "no-at-sign",
        "a@b@",
        "x\r\nRCPT TO:<y>@welyb.fr",
        '"quoted"@welyb.fr',
        "a..b@welyb.fr",
        "@welyb.fr",
    ],
)
def test_invalid_addresses(address):
    assert split_address(address) is None


def test_postmaster_is_always_accepted(grammar):
    assert grammar.parse("Postmaster@welyb.fr").kind is AddressKind.POSTMASTER


def test_reserved_company_slugs(grammar):
    assert grammar.reserved_slug_problem("compta")
    assert grammar.reserved_slug_problem("meg")
    assert grammar.reserved_slug_problem("postmaster")
    assert grammar.reserved_slug_problem("dupont-maconnerie") is None


def test_registry_ships_the_five_partners():
    registry = load_registry(DEFAULT_PARTNER_REGISTRY)
    assert {p.name for p in registry.partners} == {
        "myunisoft",
        "meg",
        "quickbooks",
        "jefacture",
        "upflow",
    }
    assert registry.get("meg").max_document_bytes == 10 * 1024 * 1024
    assert "application/zip" in registry.get("meg").refused_types
    assert registry.get("myunisoft").schedule_minutes == 60


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"x": {"aliases": [{"pattern": "x+{a:blob}", "destination": "{a}@x"}]}}, "unknown type"),
        ({"x": {"aliases": [{"pattern": "x+{a}", "destination": "{b}@x"}]}}, "not in the pattern"),
        ({"x": {"sender": "bot", "external": True}}, "needs a bot_identity"),
        ({"x": {}}, "aliases"),
        ({"x": {"external": True, "colour": "red"}}, "unknown key"),
        (
            {
                "x": {"aliases": [{"pattern": "p+{a}", "destination": "{a}@x"}]},
                "y": {"aliases": [{"pattern": "p+{b}+z", "destination": "{b}@y"}]},
            },
            "used by both",
        ),
    ],
)
def test_registry_errors_say_what_is_wrong(table, message):
    with pytest.raises(RegistryError, match=message):
        parse_registry(table)

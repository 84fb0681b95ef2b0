"""The connection-form parser (partners.md): what a cabinet enters → destination and sender."""

from __future__ import annotations

import pytest

from gateway.config import DEFAULT_JOURNALS, DEFAULT_PARTNER_REGISTRY
from gateway.routing.addresses import AddressGrammar
from gateway.routing.connections import (
    ConnectionAddressError,
    ConnectionTarget,
    parse_connection_address,
)
from gateway.routing.partners import load_registry


@pytest.fixture(scope="module")
def grammar() -> AddressGrammar:
    return AddressGrammar(
        ("welyb.fr", "welyb.com"), DEFAULT_JOURNALS, load_registry(DEFAULT_PARTNER_REGISTRY)
    )


def refused(grammar: AddressGrammar, address: str, partner: str) -> str:
    """The refusal message, lower-cased so assertions read as plain words."""
    with pytest.raises(ConnectionAddressError) as info:
        parse_connection_address(address, partner, grammar)
    message = str(info.value)
    assert message.strip(), "a refusal must say something"
    return message.lower()


# --- partners.md test vectors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("partner", "entered", "destination", "sender", "fields"),
    [
        (
            "myunisoft",
            "myunisoft+aecconseil+67-45-ACH@welyb.fr",
            "67-45-ACH@connecteur.myunisoft.fr",
            "myunisoft+aecconseil@welyb.fr",
            {"cabinet": "aecconseil", "schema": "67", "company": "45", "journal": "ACH"},
        ),
        (
            "meg",
            "meg+macon-dupont@welyb.fr",
            "macon-dupont@factures-meg.fr",
            None,
            {"name": "macon-dupont"},
        ),
        (
            "meg",
            "meg+achats+macon-dupont@welyb.fr",
            "macon-dupont@achats.factures-meg.fr",
            None,
            {"name": "macon-dupont"},
        ),
        (
            "quickbooks",
            "quickbooks+dupont-maconnerie@welyb.com",
            "dupont-maconnerie@qbodocs.com",
            "quickbooks+dupont-maconnerie@welyb.com",
            {"company": "dupont-maconnerie"},
        ),
        ("jefacture", "factures-xyz@jefacture.com", "factures-xyz@jefacture.com", None, {}),
    ],
)
def test_partners_md_vectors(grammar, partner, entered, destination, sender, fields):
    """partners.md vectors: entered → destination and From (None = configured sender)."""
    target = parse_connection_address(entered, partner, grammar)
    assert isinstance(target, ConnectionTarget)
    assert target.partner == partner
    assert target.destination == destination
    assert target.sender == sender
    assert dict(target.fields) == fields


def test_myunisoft_destination_is_the_registry_template(grammar):
    """partners.md: MyUnisoft's destination is the registry template filled from the parts."""
    partner = grammar.partners.get("myunisoft")
    assert partner is not None
    template = partner.aliases[0].destination
    target = parse_connection_address(
        "myunisoft+aecconseil+67-45-ACH@welyb.fr", "myunisoft", grammar
    )
    assert target.destination == template.format(schema="67", company="45", journal="ACH")


def test_entered_address_is_normalised(grammar):
    """R1: on our domains the whole address is lower-cased; the journal code stays upper."""
    target = parse_connection_address(
        "MyUnisoft+AECConseil+67-45-ach@WELYB.FR", "myunisoft", grammar
    )
    assert target.entered == "myunisoft+aecconseil+67-45-ach@welyb.fr"
    assert target.destination == "67-45-ACH@connecteur.myunisoft.fr"
    assert target.fields["journal"] == "ACH"


@pytest.mark.parametrize("partner", ["jefacture", "upflow"])
def test_external_partner_keeps_local_part_case(grammar, partner):
    """partners.md: an external partner's address is used as entered (domain lower-cased)."""
    target = parse_connection_address("  Factures-XYZ@JeFacture.COM ", partner, grammar)
    assert target.entered == target.destination == "Factures-XYZ@jefacture.com"
    assert target.sender is None
    assert dict(target.fields) == {}


def test_partner_name_is_case_insensitive(grammar):
    """The partner is chosen by name in the form; 'MEG' and 'meg' are the same partner."""
    target = parse_connection_address("meg+macon-dupont@welyb.fr", "MEG", grammar)
    assert target.partner == "meg"


def test_target_is_immutable_and_hashable(grammar):
    """A parsed target is a value: it can be compared, hashed and not changed by accident."""
    target = parse_connection_address("meg+macon-dupont@welyb.fr", "meg", grammar)
    again = parse_connection_address("MEG+Macon-Dupont@welyb.fr", "meg", grammar)
    assert target == again and hash(target) == hash(again)
    with pytest.raises(TypeError):
        target.fields["name"] = "other"  # type: ignore[index]


# --- R1: case variants and both served domains ---------------------------------------------


@pytest.mark.parametrize(
    ("partner", "entered", "destination", "sender"),
    [
        (
            "myunisoft",
            "MYUNISOFT+AECCONSEIL+67-45-ACH@WELYB.FR",
            "67-45-ACH@connecteur.myunisoft.fr",
            "myunisoft+aecconseil@welyb.fr",
        ),
        (
            "myunisoft",
            "myunisoft+aecconseil+67-45-ach@welyb.com",
            "67-45-ACH@connecteur.myunisoft.fr",
            "myunisoft+aecconseil@welyb.com",
        ),
        (
            "myunisoft",
            "MyUnisoft+AecConseil+67-45-Ach@Welyb.Com",
            "67-45-ACH@connecteur.myunisoft.fr",
            "myunisoft+aecconseil@welyb.com",
        ),
        ("meg", "MEG+Macon-Dupont@Welyb.Com", "macon-dupont@factures-meg.fr", None),
        ("meg", "meg+achats+macon-dupont@welyb.com", "macon-dupont@achats.factures-meg.fr", None),
        ("meg", "Meg+Achats+MACON-DUPONT@WELYB.FR", "macon-dupont@achats.factures-meg.fr", None),
        (
            "quickbooks",
            "quickbooks+dupont-maconnerie@welyb.fr",
            "dupont-maconnerie@qbodocs.com",
            "quickbooks+dupont-maconnerie@welyb.fr",
        ),
        (
            "quickbooks",
            "QuickBooks+Dupont-Maconnerie@WELYB.COM",
            "dupont-maconnerie@qbodocs.com",
            "quickbooks+dupont-maconnerie@welyb.com",
        ),
        ("meg", "<meg+macon-dupont@welyb.fr>", "macon-dupont@factures-meg.fr", None),
        ("meg", "meg+macon-dupont@welyb.fr.", "macon-dupont@factures-meg.fr", None),
    ],
)
def test_case_and_domain_variants(grammar, partner, entered, destination, sender):
    """R1: domain and local part match case-insensitively, on every served domain."""
    target = parse_connection_address(entered, partner, grammar)
    assert target.destination == destination
    assert target.sender == sender
    assert target.entered == target.entered.lower()


@pytest.mark.parametrize(
    ("partner", "entered", "sender"),
    [
        (
            "myunisoft",
            "myunisoft+aecconseil+67-45-ACH@welyb.fr",
            "myunisoft+aecconseil@welyb.fr",
        ),
        (
            "myunisoft",
            "myunisoft+aecconseil+1-2-VTE@welyb.com",
            "myunisoft+aecconseil@welyb.com",
        ),
        ("quickbooks", "quickbooks+x1@welyb.fr", "quickbooks+x1@welyb.fr"),
        ("meg", "meg+macon-dupont@welyb.fr", None),
    ],
)
def test_sender_is_the_bot_on_the_entered_domain(grammar, partner, entered, sender):
    """R16: sender identity is the bot for MyUnisoft and QuickBooks, on the entered domain."""
    assert parse_connection_address(entered, partner, grammar).sender == sender


# --- refusals (partners.md "bad input") ----------------------------------------------------


def test_unknown_partner_name_lists_known_ones(grammar):
    """The partner is chosen by the cabinet: an unknown one is refused with the known list."""
    message = refused(grammar, "meg+macon-dupont@welyb.fr", "sage")
    assert "unknown partner" in message and "sage" in message
    for name in ("myunisoft", "meg", "quickbooks", "jefacture", "upflow"):
        assert name in message


@pytest.mark.parametrize("domain", ["welyb.fr", "welyb.com"])
def test_unknown_prefix_on_our_domain(grammar, domain):
    """partners.md: an unknown partner prefix on our domain is not a MEG alias; show the form."""
    message = refused(grammar, f"foo+x@{domain}", "meg")
    assert "not a meg" in message and "alias" in message
    assert f"meg+<name>@{domain}" in message
    assert f"meg+achats+<name>@{domain}" in message
    assert "for example meg+macon-dupont@" in message


@pytest.mark.parametrize(
    "address", ["myunisoft+aecconseil@welyb.fr", "MyUnisoft+AecConseil@WELYB.COM"]
)
def test_myunisoft_bot_identity_is_not_a_connection_alias(grammar, address):
    """partners.md: a MyUnisoft alias without <schema>-<company>-<journal> is the bot."""
    message = refused(grammar, address, "myunisoft")
    assert "bot identity" in message and "not a connection alias" in message
    assert "myunisoft+<cabinet>+<schema>-<company>-<journal>" in message
    assert "myunisoft+aecconseil+67-45-ach@" in message


@pytest.mark.parametrize(
    ("address", "bad"),
    [
        ("myunisoft+aecconseil+ab-45-ACH@welyb.fr", "schema id 'ab'"),
        ("myunisoft+aecconseil+67-x5-ACH@welyb.fr", "company id 'x5'"),
        ("myunisoft+aecconseil+６７-45-ACH@welyb.fr", "schema id"),
    ],
)
def test_myunisoft_ids_must_be_numbers(grammar, address, bad):
    """partners.md: non-numeric schema or company ids are refused, saying they are numbers."""
    message = refused(grammar, address, "myunisoft")
    assert bad in message
    assert "not a number" in message
    assert "schema and company ids are numbers" in message
    assert "67-45-ach" in message  # the example


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("myunisoft+aecconseil+67-45-A1@welyb.fr", "letters only"),
        ("myunisoft+aecconseil+67--ACH@welyb.fr", "company part is missing"),
        ("myunisoft+aecconseil+1234567890123-45-ACH@welyb.fr", "too long"),
    ],
)
def test_myunisoft_other_malformed_parts(grammar, address, problem):
    """partners.md: each malformed part of the MyUnisoft alias is named."""
    assert problem in refused(grammar, address, "myunisoft")


@pytest.mark.parametrize(
    "address", ["myunisoft+aecconseil+67-45@welyb.fr", "myunisoft+aecconseil+6745ACH@welyb.fr"]
)
def test_myunisoft_alias_with_wrong_shape(grammar, address):
    """partners.md: a MyUnisoft alias of the wrong shape shows the expected form."""
    message = refused(grammar, address, "myunisoft")
    assert "not a myunisoft connection alias" in message
    assert "myunisoft+<cabinet>+<schema>-<company>-<journal>" in message


@pytest.mark.parametrize(
    ("partner", "address", "part"),
    [
        ("myunisoft", "myunisoft+aec conseil+67-45-ACH@welyb.fr", "cabinet"),
        ("myunisoft", "myunisoft+aec_conseil+67-45-ACH@welyb.com", "cabinet"),
        ("myunisoft", "myunisoft+aécconseil+67-45-ACH@welyb.fr", "cabinet"),
        ("meg", "meg+Macon_Dupont@welyb.fr", "name"),
        ("meg", "meg+achats+macon dupont@welyb.com", "name"),
        ("meg", "meg+macon--dupont@welyb.fr", "name"),
        ("quickbooks", "quickbooks+Dupont Maconnerie@welyb.com", "company"),
        ("quickbooks", "quickbooks+dupont.maconnerie@welyb.fr", "company"),
    ],
)
def test_bad_slugs_name_the_part(grammar, partner, address, part):
    """partners.md: a slug with spaces or special characters is refused, naming the part."""
    message = refused(grammar, address, partner)
    assert f"the {part} slug" in message
    assert "only lower-case letters, digits and single hyphens" in message
    assert "for example" in message


@pytest.mark.parametrize(
    ("address", "partner"),
    [
        ("compta+dupont-maconnerie@welyb.fr", "jefacture"),
        ("Compta+Dupont-Maconnerie@WELYB.COM", "upflow"),
        ("dupont-maconnerie@welyb.fr", "jefacture"),
        ("meg+macon-dupont@welyb.fr", "jefacture"),
        ("postmaster@welyb.com", "upflow"),
        ("anything@welyb.fr", "jefacture"),
    ],
)
def test_our_own_domain_loops_back_for_external_partners(grammar, address, partner):
    """partners.md: an address on the gateway's own domain would loop back into the gateway."""
    message = refused(grammar, address, partner)
    assert "loop back into the gateway" in message
    assert "settings" in message  # where to find the right address


@pytest.mark.parametrize("partner", ["meg", "myunisoft", "quickbooks"])
def test_collection_address_is_no_partner_alias(grammar, partner):
    """partners.md: an own-domain address that is no partner alias loops back, for any partner."""
    message = refused(grammar, "compta+dupont-maconnerie@welyb.fr", partner)
    assert "collection address" in message and "loop back into the gateway" in message
    assert f"{partner}+" in message  # the expected form


@pytest.mark.parametrize(
    ("address", "partner", "owner", "what"),
    [
        ("meg+x@welyb.fr", "myunisoft", "meg", "alias"),
        ("meg+achats+x@welyb.com", "quickbooks", "meg", "alias"),
        ("quickbooks+dupont-maconnerie@welyb.fr", "meg", "quickbooks", "bot identity"),
        ("myunisoft+aecconseil+67-45-ACH@welyb.fr", "meg", "myunisoft", "alias"),
        ("myunisoft+aecconseil@welyb.fr", "quickbooks", "myunisoft", "bot identity"),
        ("myunisoft+x+y@welyb.fr", "meg", "myunisoft", "reserved for"),
    ],
)
def test_alias_of_another_partner(grammar, address, partner, owner, what):
    """partners.md: another partner's alias is refused, naming that partner."""
    message = refused(grammar, address, partner)
    owner_display = grammar.partners.get(owner).display_name.lower()
    assert f"{owner_display}" in message and what in message
    assert f"not a {grammar.partners.get(partner).display_name.lower()} alias" in message
    assert "choose that partner" in message


def test_meg_alias_entered_for_myunisoft_says_meg(grammar):
    """partners.md: `meg+x@welyb.fr` entered for MyUnisoft says it is a MEG alias."""
    message = refused(grammar, "meg+x@welyb.fr", "myunisoft")
    assert "is a meg achats alias" in message
    assert "myunisoft+<cabinet>+<schema>-<company>-<journal>@welyb.fr" in message


@pytest.mark.parametrize(
    ("address", "partner"),
    [
        ("meg+macon-dupont@factures-meg.fr", "meg"),
        ("MEG+Macon-Dupont@gmail.com", "meg"),
        ("myunisoft+aecconseil+67-45-ACH@welyb.net", "myunisoft"),
        ("dupont-maconnerie@qbodocs.com", "quickbooks"),
    ],
)
def test_alias_partners_need_our_domain(grammar, address, partner):
    """partners.md: MyUnisoft, MEG and QuickBooks take an alias on the gateway's domains."""
    message = refused(grammar, address, partner)
    assert "not on the gateway's domains" in message
    assert "welyb.com" in message and "welyb.fr" in message
    assert "for example" in message


@pytest.mark.parametrize(
    ("address", "partner", "words"),
    [
        ("", "meg", "no address"),
        ("   ", "jefacture", "no address"),
        ("macon-dupont", "meg", "no @"),
        ("factures-xyz at jefacture.com", "jefacture", "no @"),
        ("@welyb.fr", "meg", "nothing before the @"),
        ("meg+macon-dupont@", "meg", "nothing after the @"),
        ("meg+macon-dupont@welyb", "meg", "not a domain"),
        ("factures@jefacture", "jefacture", "not a domain"),
        ("factures@jefacture..com", "jefacture", "not a domain"),
        ("a@b.fr, c@d.fr", "jefacture", "several addresses"),
        ('"factures xyz"@jefacture.com', "jefacture", "not a valid email address"),
        ("facturés@jefacture.com", "jefacture", "not a valid email address"),
        ("a..b@jefacture.com", "jefacture", "two in a row"),
        (".ab@jefacture.com", "upflow", "start or end with a dot"),
        ("x" * 65 + "@jefacture.com", "jefacture", "longer than 64"),
        ("meg+achats+" + "a" * 60 + "@welyb.fr", "meg", "too long"),
    ],
)
def test_not_an_address_at_all(grammar, address, partner, words):
    """partners.md: what is not a plain address is refused, with a right example."""
    message = refused(grammar, address, partner)
    assert words in message
    assert "for example" in message or "settings" in message


@pytest.mark.parametrize(
    ("address", "partner"),
    [
        ("meg+macon-dupont@welyb.fr\r\nBcc: victim@example.com", "meg"),
        ("meg+macon-dupont@welyb.fr\nRCPT TO:<x@example.com>", "meg"),
        ("factures-xyz@jefacture.com\rDATA", "jefacture"),
        ("factures-xyz\n@jefacture.com", "jefacture"),
        ("meg+macon\x00-dupont@welyb.fr", "meg"),
        ("meg+macon-dupont\t@welyb.fr", "meg"),
        ("factures-xyz@jefacture.com\u2028x", "jefacture"),
        ("meg+macon\u200b-dupont@welyb.fr", "meg"),
    ],
)
def test_line_breaks_and_control_characters_are_refused(grammar, address, partner):
    """Header/SMTP injection: CR, LF and other control characters inside are refused."""
    message = refused(grammar, address, partner)
    assert "line break" in message or "control character" in message
    assert "victim" not in message and "rcpt" not in message  # never echoed back


@pytest.mark.parametrize(
    ("address", "partner"),
    [
        ("factures xyz@jefacture.com", "jefacture"),
        ("factures-xyz @jefacture.com", "upflow"),
        ("meg +macon-dupont@welyb.fr", "meg"),
        ("compta +dupont@welyb.fr", "meg"),
        ("meg+macon-dupont\u00a0@welyb.fr", "meg"),
    ],
)
def test_spaces_inside_are_refused(grammar, address, partner):
    """Header/SMTP injection: a space inside an address is refused, saying so."""
    message = refused(grammar, address, partner)
    assert "space" in message


def test_surrounding_whitespace_is_trimmed(grammar):
    """A web form often adds spaces or a newline around a pasted value; they are not inside."""
    target = parse_connection_address(" meg+macon-dupont@welyb.fr\r\n", "meg", grammar)
    assert target.entered == "meg+macon-dupont@welyb.fr"
    assert "\n" not in target.destination


def test_refusals_are_value_errors(grammar):
    """ConnectionAddressError is a ValueError, so form validators can catch either."""
    with pytest.raises(ValueError):
        parse_connection_address("foo+x@welyb.fr", "meg", grammar)

"""The e-invoice filing rules (gateway/routing/einvoice_filing.py and the shipped .toml):
where the bare address and a journal address file an invoice by the company's role, and a
wrong rule file refused at start with the file and the key named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config import ConfigError, parse_config
from gateway.routing.einvoice_filing import DEFAULT_RULES, Decision, RulesError, load_rules

JOURNALS = ("compta", "achats", "ventes", "social", "banque")


def test_the_shipped_rules() -> None:
    rules = load_rules(DEFAULT_RULES, JOURNALS)
    assert rules.decide(None, "buyer") == Decision("achats")
    assert rules.decide(None, "seller") == Decision("ventes")
    assert rules.decide(None, None) == Decision(None)  # "A classer"
    assert rules.decide("compta", "buyer") == Decision("compta")
    assert rules.decide("banque", "seller") == Decision("banque")  # neither kind: unchecked
    seller_on_purchases = rules.decide("achats", "seller")
    assert seller_on_purchases.journal == "achats"
    assert seller_on_purchases.note is not None
    assert seller_on_purchases.note.startswith("journal mismatch: the company is the seller")
    buyer_on_sales = rules.decide("ventes", "buyer")
    assert buyer_on_sales.journal == "ventes" and "is the buyer" in str(buyer_on_sales.note)


def test_the_shipped_rules_fit_the_configured_journals(tmp_path: Path) -> None:
    config = parse_config({"filing": {"journals": {"compta": "Achats"}}}, base=tmp_path)
    rules = load_rules(config.einvoice.rules, config.filing.journals)
    assert rules.decide(None, "buyer") == Decision(None)  # no achats journal here
    assert "journal mismatch" in str(rules.decide("compta", "seller").note)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[journals]\npurchases = ['achat']\n", "journals.purchases: 'achat' is not a journal"),
        ("[bare_address]\nbuyer = 'facture'\n", "bare_address.buyer: 'facture' is not a journal"),
        ("[journal_address]\ntrust_invoice = 'yes'\n", "trust_invoice must be true or false"),
        ("[journals]\npurchases = ['ventes']\nsales = ['ventes']\n", "purchases and sales"),
        ("[bare]\nbuyer = 'achats'\n", "unknown key 'bare'"),
        ("[journals\n", "not valid TOML"),
    ],
)
def test_a_wrong_rule_file_is_refused_at_start_naming_the_key(
    tmp_path: Path, text: str, says: str
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(text)
    with pytest.raises(ConfigError, match=r"einvoice\.rules") as raised:
        parse_config({"einvoice": {"rules": str(rules)}}, base=tmp_path)
    assert says in str(raised.value) and str(rules) in str(raised.value)
    with pytest.raises(RulesError, match=re.escape(says)):
        load_rules(rules, JOURNALS)

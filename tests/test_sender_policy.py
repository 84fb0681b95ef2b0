"""Sender policy (issue 11, part 2): the rules, the levels as stored (on SQLite and
PostgreSQL), partner sending domains, the configuration and the `gateway policy` verbs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError

from gateway.app import Gateway
from gateway.cli import cli
from gateway.config import ConfigError, parse_config
from gateway.config.environment import lay_over
from gateway.routing.partners import RegistryError, parse_registry
from gateway.routing.sender_policy import (
    GLOBAL_DEFAULT,
    PolicyKind,
    SenderPolicy,
    SenderPolicyError,
    decide,
    parse_allow_entry,
)
from gateway.storage.connections import add_connection
from gateway.storage.models import Company, SenderPolicySetting
from gateway.storage.sender_policies import allow, disallow, effective_policy, set_policy

DMARC_FAIL = "dmarc=fail (p=reject) header.from=supplier.fr"

# -- the rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "entry"),
    [
        ("Billing@Supplier.FR", "billing@supplier.fr"),
        (" supplier.fr ", "supplier.fr"),
        ("supplier.fr.", "supplier.fr"),
        ("*.Supplier.fr", "*.supplier.fr"),
        ("école.fr", "xn--cole-9oa.fr"),
        ("*.ÉCOLE.fr", "*.xn--cole-9oa.fr"),
        ("compta@école.fr", "compta@xn--cole-9oa.fr"),
        ("xn--cole-9oa.fr", "xn--cole-9oa.fr"),
        ("example.co.uk", "example.co.uk"),
    ],
)
def test_allow_entries_are_normalised(text, entry):
    assert parse_allow_entry(text) == entry


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty or has spaces"),
        ("billing @supplier.fr", "empty or has spaces"),
        ("@supplier.fr", "write the domain alone (supplier.fr)"),
        ("*@supplier.fr", "write the domain alone (supplier.fr)"),
        ("<billing@supplier.fr>", "without <> or *"),
        ("bill*@supplier.fr", "without <> or *"),
        ("*.*.supplier.fr", "'*' only as the first label"),
        ("sup*plier.fr", "'*' only as the first label"),
        ("billing@fr", "'fr' is not a domain name"),
        ("-supplier.fr", "is not a domain name"),
        ("supplier..fr", "is not a domain name"),
        ("sup_plier.fr", "is not a domain name"),
        ("192.0.2.1", "is not a domain name"),
        ("fr", "fr is a public suffix"),
        ("*.fr", "fr is a public suffix"),
        ("*.co.uk", "co.uk is a public suffix"),
        ("gouv.fr", "gouv.fr is a public suffix"),
    ],
)
def test_bad_allow_entries_are_refused_with_what_a_right_one_looks_like(text, says):
    with pytest.raises(SenderPolicyError) as caught:
        parse_allow_entry(text)
    assert says in str(caught.value)
    assert str(caught.value).startswith(f"allow-list entry {text!r}")


LIST = SenderPolicy(
    PolicyKind.ALLOW_LIST,
    tuple(
        parse_allow_entry(e) for e in ("billing@supplier.fr", "partner.fr", "*.wild.fr", "école.fr")
    ),
)


@pytest.mark.parametrize(
    ("sender", "entry"),
    [
        ("billing@supplier.fr", "billing@supplier.fr"),
        ("Billing@SUPPLIER.fr", "billing@supplier.fr"),
        ("<billing@supplier.fr>", "billing@supplier.fr"),
        ("other@supplier.fr", None),  # an address entry admits that address only
        ("billing@mail.supplier.fr", None),
        ("anyone@partner.fr", "partner.fr"),  # a domain entry: that domain...
        ("anyone@mail.partner.fr", None),  # ...not its subdomains
        ("x@mail.wild.fr", "*.wild.fr"),  # a wildcard: any subdomain, at any depth...
        ("x@a.b.wild.fr", "*.wild.fr"),
        ("x@wild.fr", None),  # ...not the domain itself
        ("x@notwild.fr", None),
        ("x@école.fr", "xn--cole-9oa.fr"),  # IDNA: the same domain either way
        ("x@XN--COLE-9OA.fr", "xn--cole-9oa.fr"),
        ("x@ecole.fr", None),
        (None, None),
        ("", None),
        ("no address", None),
        ("billing@", None),
        ("@supplier.fr", None),
    ],
)
def test_allow_list_matching(sender, entry):
    assert LIST.match(sender) == entry
    assert LIST.allows(sender) is (entry is not None)


@pytest.mark.parametrize("kind", list(PolicyKind))
@pytest.mark.parametrize("authenticated", [True, False])
@pytest.mark.parametrize("listed", [True, False])
def test_every_kind_decides_on_its_checks_and_says_which(kind, authenticated, listed):
    policy = SenderPolicy(kind, ("supplier.fr",))
    sender = "billing@supplier.fr" if listed else "billing@evil.example"
    decision = decide(policy, sender, authenticated, DMARC_FAIL)
    expected = {
        PolicyKind.OPEN: True,
        PolicyKind.AUTHENTICATED: authenticated,
        PolicyKind.ALLOW_LIST: listed,
        PolicyKind.ALLOW_LIST_AUTHENTICATED: authenticated and listed,
    }[kind]
    assert decision.passed is expected
    assert decision.reason.startswith(f"sender policy {kind.value}: ")
    if kind.needs_authentication:
        said = "authenticated" if authenticated else "not authenticated"
        assert f"{said} ({DMARC_FAIL})" in decision.reason
    if kind.needs_list:
        said = "is on the allow list (supplier.fr)" if listed else "is not on the allow list"
        assert f"{sender} {said}" in decision.reason


def test_reasons_read_as_sentences():
    assert decide(SenderPolicy(PolicyKind.ALLOW_LIST), "billing@evil.example", True, "").reason == (
        "sender policy allow-list: billing@evil.example is not on the allow list"
    )
    assert decide(SenderPolicy(PolicyKind.AUTHENTICATED), "a@b.fr", False, DMARC_FAIL).reason == (
        f"sender policy authenticated: not authenticated ({DMARC_FAIL})"
    )
    both = SenderPolicy(PolicyKind.ALLOW_LIST_AUTHENTICATED, ("supplier.fr",))
    assert decide(both, "billing@supplier.fr", False, DMARC_FAIL).reason == (
        "sender policy allow-list+authenticated: billing@supplier.fr is on the allow list "
        f"(supplier.fr) but not authenticated ({DMARC_FAIL})"
    )
    assert decide(SenderPolicy(PolicyKind.ALLOW_LIST, ("a.fr",)), None, True, "").reason == (
        "sender policy allow-list: (no From address) is not on the allow list"
    )


def test_a_hostile_from_is_quoted_printable_and_bounded():
    reason = decide(SenderPolicy(PolicyKind.ALLOW_LIST), "a\r\nX: y" + "z" * 5000, True, "").reason
    assert "\r" not in reason and "\n" not in reason and "a??X: y" in reason
    assert len(reason) < 400 and reason.endswith("… is not on the allow list")


# -- partner sending domains in the registry ---------------------------------------------------


def _partner(**extra: Any) -> dict[str, Any]:
    return {"p": {"external": True, **extra}}


def test_partner_sending_domains_are_parsed_as_allow_entries(gw):
    assert gw.registry.get("meg").sending_domains == ("factures-meg.fr",)
    parsed = parse_registry(_partner(sending_domains=["Factures.EXAMPLE", "*.école.fr"]))
    assert parsed.partners[0].sending_domains == ("factures.example", "*.xn--cole-9oa.fr")


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("factures.example", "a list of domains"),
        (["billing@factures.example"], "a list of domains"),
        (["*.com"], "com is a public suffix"),
    ],
)
def test_bad_partner_sending_domains_name_the_partner_and_key(value, says):
    with pytest.raises(RegistryError) as caught:
        parse_registry(_partner(sending_domains=value))
    assert "partner.p.sending_domains: " in str(caught.value) and says in str(caught.value)


# -- the levels, stored ------------------------------------------------------------------------


def _ids(gw: Gateway, slug: str) -> tuple[int, int]:
    with gw.db.read() as s:
        row = s.execute(select(Company.id, Company.cabinet_id).where(Company.slug == slug)).one()
    return row.id, row.cabinet_id


@contextmanager
def _counted(gw: Gateway) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(gw.db.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(gw.db.engine, "before_cursor_execute", count)


def _effective(gw: Gateway, company_id: int | None, cabinet_id: int, default: SenderPolicy):
    with gw.db.read() as s:
        return effective_policy(s, company_id, cabinet_id, default, gw.registry)


def test_company_over_cabinet_over_global_default(gw, clock):
    dupont, cabinet = _ids(gw, "dupont-maconnerie")
    martin, _ = _ids(gw, "boulangerie-martin")
    default = SenderPolicy(PolicyKind.OPEN, ("staff.example",))
    assert _effective(gw, dupont, cabinet, default) == (default, GLOBAL_DEFAULT)

    with gw.db.write() as s:
        set_policy(
            s, cabinet_id=cabinet, company_id=None, kind=PolicyKind.AUTHENTICATED, now=clock.now()
        )
        allow(s, cabinet_id=cabinet, company_id=None, entries=["aecconseil.fr"], now=clock.now())
        set_policy(
            s, cabinet_id=None, company_id=dupont, kind=PolicyKind.ALLOW_LIST, now=clock.now()
        )
        allow(
            s, cabinet_id=None, company_id=dupont, entries=["Billing@Supplier.fr"], now=clock.now()
        )
    everything = ("staff.example", "aecconseil.fr", "billing@supplier.fr")
    assert _effective(gw, dupont, cabinet, default) == (
        SenderPolicy(PolicyKind.ALLOW_LIST, everything),
        "company dupont-maconnerie",
    )
    # The other company and the cabinet's own bots: the cabinet's kind, without dupont's entries.
    cabinet_only = SenderPolicy(PolicyKind.AUTHENTICATED, ("staff.example", "aecconseil.fr"))
    assert _effective(gw, martin, cabinet, default) == (cabinet_only, "cabinet aecconseil")
    assert _effective(gw, None, cabinet, default) == (cabinet_only, "cabinet aecconseil")

    # `inherit` takes the company's own kind away; its entries stay and still add up.
    with gw.db.write() as s:
        set_policy(s, cabinet_id=None, company_id=dupont, kind=None, now=clock.now())
    assert _effective(gw, dupont, cabinet, default) == (
        SenderPolicy(PolicyKind.AUTHENTICATED, everything),
        "cabinet aecconseil",
    )
    with gw.db.write() as s:
        set_policy(s, cabinet_id=cabinet, company_id=None, kind=None, now=clock.now())
    assert _effective(gw, dupont, cabinet, default)[1] == GLOBAL_DEFAULT

    # A level with neither a kind nor an entry keeps no row.
    with gw.db.write() as s:
        assert (
            disallow(
                s,
                cabinet_id=None,
                company_id=dupont,
                entries=["billing@SUPPLIER.fr"],
                now=clock.now(),
            )
            == ()
        )
        disallow(s, cabinet_id=cabinet, company_id=None, entries=["aecconseil.fr"], now=clock.now())
    with gw.db.read() as s:
        assert s.execute(select(SenderPolicySetting)).all() == []


def test_partner_sending_domains_reach_connected_companies_only(gw, clock):
    dupont, cabinet = _ids(gw, "dupont-maconnerie")
    martin, _ = _ids(gw, "boulangerie-martin")
    add_connection(
        gw.db, gw.grammar, "dupont-maconnerie", "meg", "meg+macon-dupont@welyb.fr", clock.now()
    )
    add_connection(
        gw.db,
        gw.grammar,
        "boulangerie-martin",
        "quickbooks",
        "quickbooks+boulangerie-martin@welyb.fr",
        clock.now(),
    )
    default = SenderPolicy(PolicyKind.ALLOW_LIST)
    policy, _ = _effective(gw, dupont, cabinet, default)
    assert policy.allowed == ("factures-meg.fr",)
    assert decide(policy, "ventes@factures-meg.fr", False, "").passed
    assert _effective(gw, martin, cabinet, default)[0].allowed == ()  # QuickBooks names none
    assert _effective(gw, None, cabinet, default)[0].allowed == ()


def test_effective_policy_takes_two_queries(gw, clock):
    """Filing asks for every message: one query for the levels, one for the partners."""
    dupont, cabinet = _ids(gw, "dupont-maconnerie")
    add_connection(
        gw.db, gw.grammar, "dupont-maconnerie", "meg", "meg+macon-dupont@welyb.fr", clock.now()
    )
    with gw.db.write() as s:
        set_policy(
            s, cabinet_id=cabinet, company_id=None, kind=PolicyKind.ALLOW_LIST, now=clock.now()
        )
        allow(s, cabinet_id=None, company_id=dupont, entries=["a.fr"], now=clock.now())
    with gw.db.read() as s:
        s.connection()  # the transaction's own statements (SQLite's BEGIN) are not counted
        with _counted(gw) as statements:
            policy, source = effective_policy(
                s, dupont, cabinet, SenderPolicy(PolicyKind.OPEN), gw.registry
            )
    assert (policy.allowed, source) == (("a.fr", "factures-meg.fr"), "cabinet aecconseil")
    assert len(statements) == 2, statements


def test_a_filing_batch_reads_each_policy_once(gw, clock):
    """Filing reads the policies once per batch (written in one transaction, so read as of
    one moment); the next batch sees a change, and outside a batch every question reads."""
    dupont, _ = _ids(gw, "dupont-maconnerie")
    recipients = gw.recipients()
    to_dupont = recipients.resolve("compta+dupont-maconnerie@welyb.fr")
    to_both = [to_dupont, recipients.resolve("achats+boulangerie-martin@welyb.fr")]
    policies = gw.sender_policies()
    batch = policies.for_batch()
    with _counted(gw) as statements:
        assert batch.requires_authentication([to_dupont]) is False
        first = len(statements)
        assert batch.refusal([to_dupont], "x@nowhere.example", None) is None
        assert len(statements) == first  # the same policy: not read again
        batch.in_force(to_both)
        second = len(statements)
        assert second > first  # the other company's policy: read once
        batch.in_force(to_both)
        assert len(statements) == second
    with gw.db.write() as s:
        set_policy(
            s, cabinet_id=None, company_id=dupont, kind=PolicyKind.ALLOW_LIST, now=clock.now()
        )
    assert batch.in_force([to_dupont]) == [(gw.config.sender_policy.policy, GLOBAL_DEFAULT)]
    assert policies.for_batch().in_force([to_dupont])[0] == (
        SenderPolicy(PolicyKind.ALLOW_LIST, gw.config.sender_policy.policy.allowed),
        "company dupont-maconnerie",
    )
    assert policies.refusal([to_dupont], "x@nowhere.example", None) is not None


def test_wrong_changes_change_nothing(gw, clock):
    dupont, cabinet = _ids(gw, "dupont-maconnerie")
    with gw.db.write() as s:
        allow(s, cabinet_id=None, company_id=dupont, entries=["a.fr"], now=clock.now())
    with pytest.raises(SenderPolicyError, match=r"\*\.fr"), gw.db.write() as s:
        allow(s, cabinet_id=None, company_id=dupont, entries=["b.fr", "*.fr"], now=clock.now())
    with pytest.raises(SenderPolicyError, match=r"b\.fr: not on this list"), gw.db.write() as s:
        disallow(s, cabinet_id=None, company_id=dupont, entries=["a.fr", "b.fr"], now=clock.now())
    with pytest.raises(ValueError, match="give one id"), gw.db.write() as s:
        set_policy(s, cabinet_id=cabinet, company_id=dupont, kind=PolicyKind.OPEN, now=clock.now())
    assert _effective(gw, dupont, cabinet, SenderPolicy(PolicyKind.OPEN))[0].allowed == ("a.fr",)


def test_the_database_refuses_a_row_of_no_level_or_an_unknown_kind(gw, clock):
    dupont, cabinet = _ids(gw, "dupont-maconnerie")
    for values in (
        {"cabinet_id": None, "company_id": None, "kind": "open"},
        {"cabinet_id": cabinet, "company_id": dupont, "kind": "open"},
        {"cabinet_id": None, "company_id": dupont, "kind": "closed"},
    ):
        with pytest.raises(IntegrityError, match="ck_sender_policies"), gw.db.write() as s:
            s.add(SenderPolicySetting(**values, allowed=[], updated_at=clock.now()))


# -- configuration -----------------------------------------------------------------------------


def test_the_global_default_comes_from_the_configuration(tmp_path):
    config = parse_config(
        {"sender_policy": {"default": "Allow-List+Authenticated", "allow": ["*.Staff.fr"]}},
        base=tmp_path,
    )
    assert config.sender_policy.policy == SenderPolicy(
        PolicyKind.ALLOW_LIST_AUTHENTICATED, ("*.staff.fr",)
    )
    assert parse_config({}, base=tmp_path).sender_policy.policy == SenderPolicy(PolicyKind.OPEN)
    merged, _ = lay_over({}, {"GATEWAY_SENDER_POLICY_DEFAULT": "authenticated"})
    assert parse_config(merged, base=tmp_path).sender_policy.default == "authenticated"


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"default": "closed"}, "sender_policy.default: one of open, authenticated, allow-list"),
        ({"allow": ["*.fr"]}, "sender_policy.allow: allow-list entry '*.fr': fr is a public"),
        ({"allow": "supplier.fr"}, "sender_policy.allow: expected a list"),
        ({"allow": [1]}, "sender_policy.allow: a list of entries"),
    ],
)
def test_bad_sender_policy_configuration_names_the_key(tmp_path, table, says):
    with pytest.raises(ConfigError) as caught:
        parse_config({"sender_policy": table}, base=tmp_path)
    assert says in str(caught.value)


# -- the verbs ---------------------------------------------------------------------------------


def _gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60
    )


def test_policy_verbs_end_to_end(gw, config_path, clock):
    add_connection(
        gw.db, gw.grammar, "dupont-maconnerie", "meg", "meg+macon-dupont@welyb.fr", clock.now()
    )
    runner = CliRunner()
    c = ["-c", str(config_path)]

    def policy(*args: str) -> str:
        result = runner.invoke(cli, ["policy", *args, *c])
        assert result.exit_code == 0, result.output
        return result.output

    def shown(*args: str) -> dict[str, Any]:
        return json.loads(policy("show", "--json", *args))

    assert "company dupont-maconnerie: sender policy open (from global default)" in policy(
        "show", "--company", "dupont-maconnerie"
    )
    said = policy("set", "--cabinet", "aecconseil", "allow-list")
    assert "cabinet aecconseil: sender policy allow-list (from cabinet aecconseil)" in said
    assert "allow list: empty; every message will be quarantined" in said
    said = policy("allow", "--company", "dupont-maconnerie", "Billing@Supplier.fr", "*.école.fr")
    assert "its own allow list: billing@supplier.fr, *.xn--cole-9oa.fr" in said
    policy("allow", "--cabinet", "aecconseil", "aecconseil.fr")
    dupont = shown("--company", "dupont-maconnerie")
    assert (dupont["kind"], dupont["from"]) == ("allow-list", "cabinet aecconseil")
    assert [(a["entry"], a["from"]) for a in dupont["allowed"]] == [
        ("aecconseil.fr", "cabinet aecconseil"),
        ("billing@supplier.fr", "company dupont-maconnerie"),
        ("*.xn--cole-9oa.fr", "company dupont-maconnerie"),
        ("factures-meg.fr", "partner meg"),
    ]
    text = policy("show", "--company", "dupont-maconnerie")
    assert "factures-meg.fr      (partner meg)" in text

    policy("set", "--company", "dupont-maconnerie", "allow-list+authenticated")
    assert shown("--company", "dupont-maconnerie")["from"] == "company dupont-maconnerie"
    martin = shown("--company", "boulangerie-martin")
    assert martin["kind"] == "allow-list"
    assert [a["entry"] for a in martin["allowed"]] == ["aecconseil.fr"]
    overview = json.loads(policy("show", "--json"))
    assert [(r["level"], r["kind"]) for r in overview] == [
        ("global default", "open"),
        ("cabinet aecconseil", "allow-list"),
        ("company dupont-maconnerie", "allow-list+authenticated"),
    ]

    policy("disallow", "--company", "dupont-maconnerie", "billing@supplier.fr")
    policy("set", "--company", "dupont-maconnerie", "inherit")
    dupont = shown("--company", "dupont-maconnerie")
    assert (dupont["kind"], dupont["from"]) == ("allow-list", "cabinet aecconseil")
    assert [a["entry"] for a in dupont["allowed"]] == [
        "aecconseil.fr",
        "*.xn--cole-9oa.fr",
        "factures-meg.fr",
    ]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["show", "--company", "nobody"], "no company 'nobody'"),
        (["set", "--cabinet", "nobody", "open"], "no cabinet 'nobody'"),
        (["set", "--company", "dupont-maconnerie", "closed"], "'closed' is not one of"),
        (["allow", "--company", "dupont-maconnerie", "*.fr"], "fr is a public suffix"),
        (["disallow", "--cabinet", "aecconseil", "a.fr"], "a.fr: not on this list"),
        (["allow", "a.fr"], "name a company (--company SLUG) or a cabinet (--cabinet SLUG)"),
        (
            ["show", "--company", "dupont-maconnerie", "--cabinet", "aecconseil"],
            "name a company (--company SLUG) or a cabinet",
        ),
    ],
)
def test_policy_verbs_refuse_in_one_line(gw, config_path, args, says):
    result = _gateway("policy", *args, "-c", str(config_path))
    assert result.returncode in (1, 2)
    assert says in result.stderr and result.stdout == ""
    if result.returncode == 1:
        assert result.stderr.startswith("gateway: ") and result.stderr.count("\n") == 1

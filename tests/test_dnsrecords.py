"""`gateway dns records` / `dns check`: the records to publish, and how DNS answers compare.

The checks run against a fake `DnsLookup` (no network here); `DnspythonLookup` is tested
against the tests' DNS server on the loopback interface (tests/dns_server.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import cli
from gateway.cli.dns import _dns_check
from gateway.config import GatewayConfig
from gateway.outbound.dkim import (
    ED25519_SHA256,
    DkimKey,
    KeyStore,
    dns_txt_value,
    generate_key,
)
from gateway.outbound.dnsrecords import (
    DnsLookupError,
    DnspythonLookup,
    DnsRecord,
    LookupFailure,
    RecordCheck,
    Status,
    check_records,
    expected_records,
)
from tests.conftest import load, write_config
from tests.dns_server import DnsServer

HOST = "mx.welyb.fr"


@pytest.fixture(scope="module")
def rsa_key() -> DkimKey:
    return generate_key("welyb.fr", "s2026")  # RSA generation is slow-ish: once per module


@pytest.fixture
def config_file(tmp_path: Path, rsa_key: DkimKey) -> Path:
    """welyb.fr (with a DKIM key) and welyb.com (without), MX host mx.welyb.fr."""
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", smtp={"hostname": HOST})
    KeyStore(load(path).dkim_path).save(rsa_key)
    return path


@pytest.fixture
def config(config_file: Path) -> GatewayConfig:
    return load(config_file)


@pytest.fixture
def expected(config: GatewayConfig) -> list[DnsRecord]:
    return expected_records(config, KeyStore(config.dkim_path))


class FakeLookup:
    """Answers from dicts; a name absent from both is NXDOMAIN. Counts the questions."""

    def __init__(
        self,
        mx: dict[str, list[tuple[int, str]] | DnsLookupError] | None = None,
        txt: dict[str, list[str] | DnsLookupError] | None = None,
    ) -> None:
        self.mx_answers = mx or {}
        self.txt_answers = txt or {}
        self.asked: list[tuple[str, str]] = []
        self._lock = threading.Lock()  # check_records asks from several threads

    def _answer(self, rdtype: str, name: str, answers: dict) -> list:
        with self._lock:
            self.asked.append((rdtype, name))
        if name not in self.mx_answers and name not in self.txt_answers:
            raise DnsLookupError(LookupFailure.NXDOMAIN, name, rdtype)
        answer = answers.get(name)
        if answer is None:
            raise DnsLookupError(LookupFailure.NO_ANSWER, name, rdtype)
        if isinstance(answer, DnsLookupError):
            raise answer
        return answer

    def mx(self, name: str) -> list[tuple[int, str]]:
        return self._answer("MX", name, self.mx_answers)

    def txt(self, name: str) -> list[str]:
        return self._answer("TXT", name, self.txt_answers)


def published(key: DkimKey, **overrides: list[str] | list[tuple[int, str]]) -> FakeLookup:
    """A zone for welyb.fr holding exactly what `dns records` suggests; `overrides` replace
    the answers of one name (keys: mx, spf, dkim, dmarc)."""
    mx: dict = {"welyb.fr": [(10, f"{HOST}.")]}
    txt: dict = {
        "welyb.fr": ["google-site-verification=abc", f"v=spf1 a:{HOST} -all"],
        "s2026._domainkey.welyb.fr": [dns_txt_value(key)],
        "_dmarc.welyb.fr": ["v=DMARC1; p=quarantine; rua=mailto:postmaster@welyb.fr"],
    }
    names = {
        "spf": "welyb.fr",
        "dkim": "s2026._domainkey.welyb.fr",
        "dmarc": "_dmarc.welyb.fr",
    }
    for what, answer in overrides.items():
        if what == "mx":
            mx["welyb.fr"] = answer
        else:
            txt[names[what]] = answer
    return FakeLookup(mx, txt)


def by_purpose(checks: list[RecordCheck], domain: str = "welyb.fr") -> dict[str, RecordCheck]:
    return {c.record.purpose: c for c in checks if c.record.domain == domain}


# --- expected records -----------------------------------------------------------------------


def test_expected_records_for_two_domains_one_with_a_key(expected, rsa_key):
    assert [(r.domain, r.name, r.type, r.purpose, r.placeholder) for r in expected] == [
        ("welyb.fr", "welyb.fr", "MX", "mx", False),
        ("welyb.fr", "welyb.fr", "TXT", "spf", False),
        ("welyb.fr", "s2026._domainkey.welyb.fr", "TXT", "dkim", False),
        ("welyb.fr", "_dmarc.welyb.fr", "TXT", "dmarc", False),
        ("welyb.com", "welyb.com", "MX", "mx", False),
        ("welyb.com", "welyb.com", "TXT", "spf", False),
        ("welyb.com", "<selector>._domainkey.welyb.com", "TXT", "dkim", True),
        ("welyb.com", "_dmarc.welyb.com", "TXT", "dmarc", False),
    ]
    values = {(r.domain, r.purpose): r.value for r in expected}
    assert values[("welyb.fr", "mx")] == f"10 {HOST}."
    assert values[("welyb.com", "spf")] == f"v=spf1 a:{HOST} -all"
    assert values[("welyb.fr", "dkim")] == dns_txt_value(rsa_key)
    assert values[("welyb.fr", "dmarc")] == "v=DMARC1; p=quarantine; rua=mailto:postmaster@welyb.fr"
    assert "gateway dkim keygen --domain welyb.com" in values[("welyb.com", "dkim")]


def test_expected_records_list_every_key_of_a_domain(config):
    keys = KeyStore(config.dkim_path)
    keys.save(generate_key("welyb.fr", "ed2026", ED25519_SHA256))
    dkim = [r for r in expected_records(config, keys) if r.purpose == "dkim"]
    assert [r.name for r in dkim if r.domain == "welyb.fr"] == [
        "s2026._domainkey.welyb.fr",  # RSA first, as KeyStore lists them
        "ed2026._domainkey.welyb.fr",
    ]
    assert dkim[1].value.startswith("v=DKIM1; k=ed25519; p=")


def test_dns_records_command_prints_the_expected_records(config_file, expected):
    result = CliRunner().invoke(cli, ["dns", "records", "--json", "-c", str(config_file)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {"domain": r.domain, "name": r.name, "type": r.type, "value": r.value} for r in expected
    ]


# --- checks with a fake lookup --------------------------------------------------------------


def test_published_as_suggested_is_ok_and_a_domain_without_key_says_keygen(expected, rsa_key):
    checks = check_records(expected, published(rsa_key))
    fr = by_purpose(checks)
    assert {p: c.status for p, c in fr.items()} == dict.fromkeys(
        ("mx", "spf", "dkim", "dmarc"), Status.OK
    )
    assert fr["spf"].found == (f"v=spf1 a:{HOST} -all",)  # the SPF record only
    com = by_purpose(checks, "welyb.com")
    assert com["dkim"].status is Status.MISSING
    assert com["dkim"].detail.startswith("missing key: run gateway dkim keygen --domain welyb.com")
    # Nothing is published for welyb.com in this zone.
    assert {com[p].status for p in ("mx", "spf", "dmarc")} == {Status.MISSING}
    assert "no such name" in com["mx"].detail
    assert [c.record for c in checks] == expected  # one check per record, same order


def test_each_name_is_asked_once_and_placeholders_not_at_all(expected, rsa_key):
    lookup = published(rsa_key)
    check_records(expected, lookup)
    assert sorted(lookup.asked) == sorted(set(lookup.asked))  # the SPF check reuses MX
    assert ("MX", "welyb.fr") in lookup.asked
    assert not any("<selector>" in name for _, name in lookup.asked)


def test_no_records_of_the_type_is_missing(expected, rsa_key):
    lookup = published(rsa_key, spf=["google-site-verification=abc"], dmarc=[])
    fr = by_purpose(check_records(expected, lookup))
    assert fr["spf"].status is Status.MISSING and "v=spf1" in fr["spf"].detail
    assert fr["dmarc"].status is Status.MISSING
    lookup.mx_answers.pop("welyb.fr")  # TXT still there: no MX is "no answer", not NXDOMAIN
    fr = by_purpose(check_records(expected, lookup))
    assert fr["mx"].status is Status.MISSING and "no record of this type" in fr["mx"].detail


@pytest.mark.parametrize(
    "answer",
    [
        [(10, "MX.Welyb.FR.")],  # case and trailing dot do not matter
        [(10, "backup.example.net"), (20, "mx.welyb.fr")],  # nor the preference
    ],
)
def test_mx_ok_when_our_host_is_among_the_targets(expected, rsa_key, answer):
    fr = by_purpose(check_records(expected, published(rsa_key, mx=answer)))
    assert fr["mx"].status is Status.OK, fr["mx"].detail


def test_mx_of_another_host_is_different_and_says_what_dns_has(expected, rsa_key):
    lookup = published(rsa_key, mx=[(10, "mail.example.net."), (5, "mx2.example.net.")])
    fr = by_purpose(check_records(expected, lookup))
    assert fr["mx"].status is Status.DIFFERENT
    assert fr["mx"].found == ("5 mx2.example.net.", "10 mail.example.net.")
    assert "mail.example.net" in fr["mx"].detail
    null = by_purpose(check_records(expected, published(rsa_key, mx=[(0, ".")])))
    assert null["mx"].status is Status.DIFFERENT and "null MX" in null["mx"].detail


@pytest.mark.parametrize(
    "spf",
    [
        f"v=spf1 a:{HOST} -all",
        "V=SPF1 A:MX.WELYB.FR. ~all",
        f"v=spf1 ip4:192.0.2.1 a:{HOST}/24 -all",
        "v=spf1 mx -all",  # mx.welyb.fr is the domain's MX
        "v=spf1 +mx:welyb.fr -all",
    ],
)
def test_spf_naming_our_host_is_ok(expected, rsa_key, spf):
    fr = by_purpose(check_records(expected, published(rsa_key, spf=[spf])))
    assert fr["spf"].status is Status.OK, fr["spf"].detail
    assert HOST in fr["spf"].detail


@pytest.mark.parametrize(
    ("spf", "said"),
    [
        ("v=spf1 include:_spf.google.com ~all", "include:_spf.google.com"),
        ("v=spf1 redirect=_spf.welyb.fr", "redirect=_spf.welyb.fr"),
        ("v=spf1 ip4:192.0.2.1 a:other.example -all", "ip4:192.0.2.1 a:other.example"),
        ("v=spf1 -all", "does not authorise mx.welyb.fr"),
        (f"v=spf1 -all a:{HOST}", "does not authorise"),  # nothing after `all` counts
        (f"v=spf1 ~a:{HOST} -all", "softfail"),
        ("v=spf1 +all", "any host"),
        ("v=spf1 a:mx.welyb.fr bogus -all", "permerror"),
    ],
)
def test_spf_not_naming_our_host_is_different_and_says_why(expected, rsa_key, spf, said):
    fr = by_purpose(check_records(expected, published(rsa_key, spf=[spf])))
    assert fr["spf"].status is Status.DIFFERENT
    assert said in fr["spf"].detail
    assert fr["spf"].found == (spf,)


def test_spf_redirect_is_ignored_when_there_is_an_all(expected, rsa_key):
    spf = "v=spf1 redirect=_spf.welyb.fr -all"
    fr = by_purpose(check_records(expected, published(rsa_key, spf=[spf])))
    assert fr["spf"].status is Status.DIFFERENT
    assert "redirect" not in fr["spf"].detail


def test_two_spf_records_are_reported(expected, rsa_key):
    both = [f"v=spf1 a:{HOST} -all", "v=spf1 include:_spf.google.com ~all"]
    fr = by_purpose(check_records(expected, published(rsa_key, spf=both)))
    assert fr["spf"].status is Status.DIFFERENT
    assert "2 SPF records" in fr["spf"].detail and "permerror" in fr["spf"].detail
    assert fr["spf"].found == tuple(both)


def test_spf_mx_cannot_be_judged_when_the_mx_lookup_failed(expected, rsa_key):
    lookup = published(rsa_key, spf=["v=spf1 mx -all"])
    lookup.mx_answers["welyb.fr"] = DnsLookupError(
        LookupFailure.FAILURE, "welyb.fr", "MX", "SERVFAIL"
    )
    fr = by_purpose(check_records(expected, lookup))
    assert fr["mx"].status is Status.ERROR and "SERVFAIL" in fr["mx"].detail
    assert fr["spf"].status is Status.DIFFERENT and "not followed" in fr["spf"].detail


def test_dkim_key_split_with_whitespace_is_the_same_key(expected, rsa_key):
    value = dns_txt_value(rsa_key)
    head, key = value.split("p=")
    spaced = head + "p=" + " ".join(key[i : i + 60] for i in range(0, len(key), 60))
    fr = by_purpose(check_records(expected, published(rsa_key, dkim=[spaced])))
    assert fr["dkim"].status is Status.OK, fr["dkim"].detail


def test_dkim_different_key_or_kind_is_different(expected, rsa_key):
    other = dns_txt_value(generate_key("welyb.fr", "s2026", ED25519_SHA256))
    fr = by_purpose(check_records(expected, published(rsa_key, dkim=[other])))
    assert fr["dkim"].status is Status.DIFFERENT and "another key" in fr["dkim"].detail
    same_key_wrong_k = dns_txt_value(rsa_key).replace("k=rsa", "k=ed25519")
    fr = by_purpose(check_records(expected, published(rsa_key, dkim=[same_key_wrong_k])))
    assert fr["dkim"].status is Status.DIFFERENT and "k=ed25519" in fr["dkim"].detail
    fr = by_purpose(check_records(expected, published(rsa_key, dkim=["v=DKIM1; k=rsa; p="])))
    assert fr["dkim"].status is Status.DIFFERENT and "revoked" in fr["dkim"].detail
    twice = [dns_txt_value(rsa_key), other]
    fr = by_purpose(check_records(expected, published(rsa_key, dkim=twice)))
    assert fr["dkim"].status is Status.DIFFERENT and "2 TXT records" in fr["dkim"].detail


@pytest.mark.parametrize(
    ("dmarc", "status", "said"),
    [
        (["v=DMARC1; p=reject"], Status.OK, "p=reject"),
        (["v=DMARC1;p=none; rua=mailto:d@welyb.fr"], Status.OK, "p=none: reports only"),
        (["v=DMARC1; rua=mailto:d@welyb.fr"], Status.DIFFERENT, "no p= tag"),
        (["v=DMARC1; p=quarantine", "v=DMARC1; p=none"], Status.DIFFERENT, "2 DMARC records"),
        (["some other text"], Status.MISSING, "no v=DMARC1"),
    ],
)
def test_dmarc(expected, rsa_key, dmarc, status, said):
    fr = by_purpose(check_records(expected, published(rsa_key, dmarc=dmarc)))
    assert fr["dmarc"].status is status
    assert said in fr["dmarc"].detail


def test_timeout_is_an_error_not_a_missing_record(expected, rsa_key):
    lookup = published(rsa_key)
    timeout = DnsLookupError(LookupFailure.TIMEOUT, "_dmarc.welyb.fr", "TXT", "no answer within 5s")
    lookup.txt_answers["_dmarc.welyb.fr"] = timeout
    fr = by_purpose(check_records(expected, lookup))
    assert fr["dmarc"].status is Status.ERROR
    assert fr["dmarc"].detail == "lookup failed: TXT _dmarc.welyb.fr: timeout (no answer within 5s)"
    assert fr["dkim"].status is Status.OK  # one failure does not spoil the others


# --- the command ----------------------------------------------------------------------------


def test_dns_check_exit_code_and_lines(config_file, config, rsa_key, capsys):
    # A key for welyb.com too and both domains published: everything ok, exit 0.
    com_key = generate_key("welyb.com", "s2026", ED25519_SHA256)
    KeyStore(config.dkim_path).save(com_key)
    lookup = published(rsa_key)
    lookup.mx_answers["welyb.com"] = [(10, HOST)]
    lookup.txt_answers["welyb.com"] = [f"v=spf1 a:{HOST} -all"]
    lookup.txt_answers["s2026._domainkey.welyb.com"] = [dns_txt_value(com_key)]
    lookup.txt_answers["_dmarc.welyb.com"] = ["v=DMARC1; p=reject"]
    assert _dns_check(str(config_file), False, lambda: lookup) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "STATUS", "DETAIL"]
    assert len(lines) == 1 + 8 and all(line.split()[2] == "ok" for line in lines[1:])

    lookup.txt_answers["_dmarc.welyb.com"] = []  # one problem is enough for exit 1
    assert _dns_check(str(config_file), True, lambda: lookup) == 1
    rows = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in rows].count("ok") == 7
    dmarc = next(r for r in rows if r["name"] == "_dmarc.welyb.com")
    assert dmarc["status"] == "missing" and dmarc["expected"].startswith("v=DMARC1")


def test_dns_check_command_exits_1_when_lookups_fail(config_file):
    # Nothing answers DNS on 127.0.0.1:53 here: every lookup times out (never the network).
    args = ["dns", "check", "--json", "--nameserver", "127.0.0.1", "--timeout", "0.5"]
    result = CliRunner().invoke(cli, [*args, "-c", str(config_file)])
    assert result.exit_code == 1, result.output
    rows = json.loads(result.output)
    assert {r["status"] for r in rows if not r["name"].startswith("<")} == {"error"}
    assert all("lookup failed" in r["detail"] for r in rows if r["status"] == "error")


def test_dns_check_refuses_a_nameserver_that_is_not_an_address(config_file):
    args = ["dns", "check", "--nameserver", "dns.example", "-c", str(config_file)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "not an IP address" in result.output


# --- dnspython against a loopback server ----------------------------------------------------


ZONE = {
    ("welyb.fr.", "MX"): ["20 backup.example.net.", "10 mx.welyb.fr."],
    # Two character-strings in one record: joined without separator, as DNS means it.
    ("s1._domainkey.welyb.fr.", "TXT"): [("v=DKIM1; k=rsa; ", "p=ABCD")],
    ("welyb.fr.", "TXT"): ["v=spf1 a:mx.welyb.fr -all", "other"],
}


@pytest.fixture
def dns_server() -> Iterator[int]:
    """The shared test DNS server answering from ZONE, `silent.welyb.fr` never; its port."""
    with DnsServer(ZONE) as server:
        server.slow[server.hook("silent.welyb.fr")] = None
        yield server.port


def test_dnspython_lookup_reads_mx_and_joins_txt_strings(dns_server):
    lookup = DnspythonLookup(timeout=2, nameservers=["127.0.0.1"], port=dns_server)
    assert sorted(lookup.mx("welyb.fr")) == [(10, "mx.welyb.fr."), (20, "backup.example.net.")]
    assert lookup.txt("s1._domainkey.welyb.fr") == ["v=DKIM1; k=rsa; p=ABCD"]
    assert sorted(lookup.txt("welyb.fr")) == ["other", "v=spf1 a:mx.welyb.fr -all"]


@pytest.mark.parametrize(
    ("name", "rdtype", "outcome"),
    [
        ("nowhere.welyb.fr", "txt", LookupFailure.NXDOMAIN),
        ("s1._domainkey.welyb.fr", "mx", LookupFailure.NO_ANSWER),
        ("silent.welyb.fr", "txt", LookupFailure.TIMEOUT),
    ],
)
def test_dnspython_lookup_outcomes(dns_server, name, rdtype, outcome):
    lookup = DnspythonLookup(timeout=0.3, nameservers=["127.0.0.1"], port=dns_server)
    with pytest.raises(DnsLookupError) as raised:
        getattr(lookup, rdtype)(name)
    assert raised.value.outcome is outcome
    assert raised.value.not_published is (outcome is not LookupFailure.TIMEOUT)

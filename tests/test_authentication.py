"""SPF, DKIM, DMARC and ARC of received mail (gateway/inbound/trust/authentication.py),
against the tests' real DNS server on the loopback interface, with messages signed here by
dkimpy with keys generated here."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator

import authres
import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

from gateway.dns import DnspythonLookup
from gateway.inbound.trust.authentication import (
    MAX_SIGNATURES,
    AuthEnvelope,
    authenticate,
    with_results,
    without_our_results,
)
from gateway.inbound.trust.dmarc import header_block, organisational_domain
from gateway.inbound.trust.results import AuthenticationResults
from tests.authmail import Key, ed25519_key, message, rsa_key, sign
from tests.dns_server import DnsServer

AUTHSERV_ID = "mx.cabinet.example"
CLIENT = "192.0.2.5"  # inside example.com's SPF
STRANGER = "198.51.100.7"  # outside every SPF record below


@pytest.fixture(scope="module")
def rsa() -> Key:
    return rsa_key()


@pytest.fixture(scope="module")
def ed() -> Key:
    return ed25519_key()


def zone(rsa: Key, ed: Key) -> dict[tuple[str, str], list]:
    many = " ".join(f"a:h{i}.many.example" for i in range(11))
    records: dict[tuple[str, str], list] = {
        ("example.com", "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all", "unrelated=1"],
        ("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject; sp=quarantine"],
        ("s1._domainkey.example.com", "TXT"): [rsa.record],
        ("ed._domainkey.example.com", "TXT"): [ed.record],
        ("s1._domainkey.mail.example.com", "TXT"): [rsa.record],
        ("soft.example", "TXT"): ["v=spf1 ~all"],
        ("neutral.example", "TXT"): ["v=spf1 ?all"],
        ("nospf.example", "A"): ["192.0.2.99"],
        ("loop.example", "TXT"): ["v=spf1 include:loop2.example -all"],
        ("loop2.example", "TXT"): ["v=spf1 include:loop.example -all"],
        ("many.example", "TXT"): [f"v=spf1 {many} -all"],
        ("syntax.example", "TXT"): ["v=spf1 ip4:192.0.2.300 -all"],
        ("mx.relay.example", "TXT"): ["v=spf1 ip4:192.0.2.5 -all"],
        ("attacker.example", "TXT"): ["v=spf1 ip4:198.51.100.0/24 -all"],
        ("s1._domainkey.attacker.example", "TXT"): [rsa.record],
        ("example.co.uk", "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all"],
        ("_dmarc.example.co.uk", "TXT"): ["v=DMARC1; p=none; sp=reject"],
        ("broken._domainkey.example.com", "TXT"): ["v=DKIM1; k=rsa; p=bm90IGEga2V5"],
        ("revoked._domainkey.example.com", "TXT"): ["v=DKIM1; k=rsa; p="],
    }
    for i in range(11):
        records[(f"h{i}.many.example", "A")] = ["203.0.113.1"]
    return records


@pytest.fixture
def server(rsa: Key, ed: Key) -> Iterator[DnsServer]:
    with DnsServer(zone(rsa, ed)) as server:
        yield server


@pytest.fixture
def lookup(server: DnsServer) -> DnspythonLookup:
    return DnspythonLookup(timeout=0.5, nameservers=["127.0.0.1"], port=server.port)


def envelope(
    mail_from: str = "alice@example.com", client: str = CLIENT, helo: str = "mx.relay.example"
) -> AuthEnvelope:
    return AuthEnvelope(client_address=client, helo=helo, mail_from=mail_from)


def parsed(results: AuthenticationResults) -> authres.AuthenticationResultsHeader:
    """The header through an independent RFC 8601 parser: its syntax holds."""
    header = results.to_header(AUTHSERV_ID)
    assert all(len(line) <= 998 for line in header.split("\r\n"))  # RFC 5322 §2.1.1
    return authres.AuthenticationResultsHeader.parse(header)


def methods(results: AuthenticationResults) -> list[tuple[str, str]]:
    return [(r.method, r.result) for r in parsed(results).results]


# --- SPF ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mail_from", "client", "expected"),
    [
        ("alice@example.com", CLIENT, "pass"),
        ("alice@example.com", STRANGER, "fail"),
        ("bob@soft.example", STRANGER, "softfail"),
        ("bob@neutral.example", STRANGER, "neutral"),
        ("bob@nospf.example", STRANGER, "none"),
        ("bob@nowhere.example", STRANGER, "none"),
    ],
)
def test_spf_results(lookup, mail_from, client, expected):
    results = authenticate(message(), envelope(mail_from, client), lookup)
    assert results.spf.result == expected
    assert results.spf.identity == "mailfrom"
    assert results.spf.domain == mail_from.split("@")[1]
    spf = parsed(results).results[0]
    assert (spf.method, spf.result) == ("spf", expected)
    assert [(p.type, p.name, p.value) for p in spf.properties] == [
        ("smtp", "mailfrom", mail_from.split("@")[1])
    ]


def test_spf_checks_the_helo_name_for_the_null_sender(lookup):
    results = authenticate(message(), envelope("", CLIENT, "mx.relay.example"), lookup)
    assert (results.spf.result, results.spf.identity, results.spf.domain) == (
        "pass",
        "helo",
        "mx.relay.example",
    )
    assert "smtp.helo=mx.relay.example" in results.to_header(AUTHSERV_ID)


@pytest.mark.parametrize("hook", ["servfail", "slow", "malformed"])
def test_spf_temporary_dns_failure_is_temperror_not_fail(server, lookup, hook):
    name = server.hook("example.com")
    if hook == "slow":
        server.slow[name] = None  # never answers: the lookup times out
    else:
        getattr(server, hook).add(name)
    results = authenticate(message(), envelope(), lookup)
    assert results.spf.result == "temperror"
    assert results.temporary
    assert not results.authenticated or results.dmarc.dkim_aligned


@pytest.mark.parametrize(
    ("domain", "why"),
    [
        ("loop.example", "Too many DNS lookups"),  # include loop: stopped by the limit
        ("many.example", "Too many DNS lookups"),  # 11 a: mechanisms
        ("syntax.example", "Invalid IP4 address: ip4:192.0.2.300"),
    ],
)
def test_spf_permerror(server, lookup, domain, why):
    results = authenticate(message(), envelope(f"bob@{domain}", STRANGER), lookup)
    assert (results.spf.result, results.spf.reason) == (
        "permerror",
        f"SPF Permanent Error: {why}",
    )
    assert not results.temporary
    assert server.asked("h10.many.example") == 0  # never asked past the limit
    assert server.asked("loop.example", "TXT") == (1 if domain == "loop.example" else 0)


# --- DKIM -----------------------------------------------------------------------------------


def test_dkim_pass_for_rsa_and_ed25519_signatures(lookup, rsa, ed):
    raw = sign(sign(message(), rsa, "example.com", "s1"), ed, "example.com", "ed")
    results = authenticate(raw, envelope(client=STRANGER), lookup)
    assert [(d.result, d.domain, d.selector, d.algorithm) for d in results.dkim] == [
        ("pass", "example.com", "ed", "ed25519-sha256"),
        ("pass", "example.com", "s1", "rsa-sha256"),
    ]
    dkims = [r for r in parsed(results).results if r.method == "dkim"]
    assert [{(p.type, p.name): p.value for p in r.properties}[("header", "s")] for r in dkims] == [
        "ed",
        "s1",
    ]


def test_dkim_fails_when_the_body_was_altered(lookup, rsa):
    raw = sign(message(), rsa, "example.com", "s1").replace(b"2026-117 est", b"2026-118 est")
    results = authenticate(raw, envelope(client=STRANGER), lookup)
    assert [(d.result, d.reason) for d in results.dkim] == [("fail", "body hash mismatch")]
    assert ("dkim", "fail") in methods(results)
    assert parsed(results).results[1].reason == "body hash mismatch"


def test_no_signature_is_dkim_none(lookup):
    results = authenticate(message(), envelope(), lookup)
    assert results.dkim == ()
    assert ("dkim", "none") in methods(results)


def test_dkim_key_lookup_failure_is_temperror(server, lookup, rsa):
    server.servfail.add(server.hook("s1._domainkey.example.com"))
    raw = sign(message(), rsa, "example.com", "s1")
    results = authenticate(raw, envelope(client=STRANGER), lookup)
    assert results.dkim[0].result == "temperror"
    # SPF fails, the only DKIM signature could not be checked: DMARC must not say fail.
    assert results.dmarc.result == "temperror"
    assert results.temporary and not results.authenticated


def huge_key_record(bits: int = 16384, exponent: int = 65537) -> str:
    """A well-formed RSA public key of `bits` bits (any odd modulus does for a public key)."""
    modulus = random.Random(bits).getrandbits(bits) | (1 << (bits - 1)) | 1
    public = RSAPublicNumbers(exponent, modulus).public_key()
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode()}"


@pytest.mark.parametrize(
    ("selector", "reason"),
    [
        ("broken", "unusable key"),
        ("revoked", "unusable key"),
        ("absent", "no key published"),
        ("huge", "key of 16384 bits"),
        ("exponent", "RSA public exponent over 64 bits"),
        ("oversized", "answer too large"),
    ],
)
def test_dkim_bad_keys_are_permerror(server, lookup, rsa, selector, reason):
    server.publish("huge._domainkey.example.com", "TXT", huge_key_record())
    server.publish("exponent._domainkey.example.com", "TXT", huge_key_record(2048, 2**2000 + 1))
    server.publish(
        "oversized._domainkey.example.com", "TXT", *(f"{i:03}" + "x" * 500 for i in range(40))
    )
    raw = sign(message(), rsa, "example.com", selector)
    results = authenticate(raw, envelope(client=STRANGER), lookup)
    assert results.dkim[0].result == "permerror"
    assert results.dkim[0].reason.startswith(reason)
    assert results.dmarc.result == "fail"  # a broken key is no excuse: not temporary
    if selector in ("huge", "oversized"):  # past UDP's payload: fetched whole over TCP
        assert (f"{selector}._domainkey.example.com.", "TXT", "tcp") in server.queries


def test_fifty_signatures_only_the_first_ones_are_verified(server, lookup, rsa):
    raw = message()
    for _ in range(50):
        raw = sign(raw, rsa, "example.com", "s1")
    results = authenticate(raw, envelope(client=STRANGER), lookup)
    assert len(results.dkim) == 50
    assert [d.result for d in results.dkim] == ["pass"] * MAX_SIGNATURES + ["policy"] * 40
    assert results.dkim[-1].reason.startswith("not verified")
    assert server.asked("s1._domainkey.example.com") == 1
    assert len(parsed(results).results) == 50 + 3


def test_a_signature_that_is_no_tag_list_is_permerror(lookup):
    raw = b"DKIM-Signature: this is ; not = ; a tag list\r\n" + message()
    results = authenticate(raw, envelope(), lookup)
    assert [d.result for d in results.dkim] == ["permerror"]


# --- DMARC ----------------------------------------------------------------------------------


def test_dmarc_pass_by_dkim_of_a_subdomain_relaxed(lookup, rsa):
    raw = sign(message(), rsa, "mail.example.com", "s1")
    results = authenticate(raw, envelope("bounce@attacker.example", STRANGER), lookup)
    assert results.spf.result == "pass"  # attacker.example's own SPF: not aligned
    d = results.dmarc
    assert (d.result, d.from_domain, d.organisational_domain) == (
        "pass",
        "example.com",
        "example.com",
    )
    assert (d.dkim_aligned, d.spf_aligned, d.policy) == (True, False, "reject")
    assert results.authenticated
    assert ("dmarc", "pass") in methods(results)


def test_dmarc_fails_with_reject_for_a_forged_from(lookup, rsa):
    raw = sign(message("CEO <ceo@example.com>"), rsa, "attacker.example", "s1")
    results = authenticate(raw, envelope("ceo@attacker.example", STRANGER), lookup)
    assert results.spf.result == "pass" and results.dkim[0].result == "pass"
    assert (results.dmarc.result, results.dmarc.policy) == ("fail", "reject")
    assert not results.authenticated and not results.temporary
    header = results.to_header(AUTHSERV_ID)
    assert "dmarc=fail (p=reject sp=quarantine) header.from=example.com" in header


def test_dmarc_none_then_an_aligned_pass_authenticates(lookup):
    raw = message("Bob <bob@soft.example>")
    results = authenticate(raw, envelope("bob@soft.example", STRANGER), lookup)
    assert results.dmarc.result == "none" and not results.authenticated  # softfail
    raw = message("Relay <postmaster@mx.relay.example>")
    results = authenticate(raw, envelope("postmaster@mx.relay.example"), lookup)
    assert (results.dmarc.result, results.dmarc.spf_aligned) == ("none", True)
    assert results.authenticated


def test_an_smtputf8_from_domain_is_read_as_utf8(lookup):
    raw = "From: Zoé <zoé@société.example>\r\n\r\nBonjour\r\n".encode()
    results = authenticate(raw, envelope(), lookup)
    assert results.from_domain == "xn--socit-esab.example"


def test_a_reverse_path_without_domain_is_checked_at_the_helo_name(lookup):
    results = authenticate(message(), envelope("postmaster", CLIENT, "mx.relay.example"), lookup)
    assert (results.spf.result, results.spf.domain) == ("pass", "mx.relay.example")


def test_organisational_domain_by_the_public_suffix_list():
    assert organisational_domain("mail.example.co.uk") == "example.co.uk"
    assert organisational_domain("a.b.example.com") == "example.com"
    assert organisational_domain("co.uk") == "co.uk"


@pytest.mark.parametrize(
    ("raw", "header"),
    [
        (b"From: a@b.example\r\n\r\nbody\n\nmore\r\n", b"From: a@b.example\r\n"),
        (b"From: a@b.example\n\nbody\r\n\r\nmore", b"From: a@b.example\n\n"),
        (b"From: a@b.example\r\nX: y\n\nbody\r\n\r\n", b"From: a@b.example\r\nX: y\n\n"),
        (b"From: a@b.example\r\n", b"From: a@b.example\r\n"),  # no body: all header
    ],
)
def test_the_header_block_ends_at_the_first_blank_line_of_either_kind(raw, header):
    assert header_block(raw) == header


def test_dmarc_of_a_subdomain_uses_the_organisational_record_and_sp(lookup):
    raw = message("Compta <compta@mail.example.co.uk>")
    results = authenticate(raw, envelope("compta@example.co.uk", STRANGER), lookup)
    d = results.dmarc
    assert (d.result, d.organisational_domain, d.p, d.sp, d.policy) == (
        "fail",
        "example.co.uk",
        "none",
        "reject",
        "reject",
    )


@pytest.mark.parametrize(
    "raw",
    [
        message("Undisclosed recipients:;"),
        b"From: a@example.com\r\nFrom: b@example.org\r\n\r\nbody\r\n",
        b"\x00\xff garbage without a header\r\n",
    ],
)
def test_no_single_from_domain_is_dmarc_permerror(lookup, raw):
    results = authenticate(raw, envelope(), lookup)
    assert results.dmarc.result == "permerror" and results.from_domain is None
    assert not results.authenticated
    parsed(results)


# --- ARC ------------------------------------------------------------------------------------


def test_arc_chain_pass(lookup, rsa):
    raw = sign(message(), rsa, "example.com", "s1")
    raw = b"Authentication-Results: relay.example.com; dkim=pass header.d=example.com\r\n" + raw
    seal = dkim.arc_sign(raw, b"s1", b"example.com", rsa.private, b"relay.example.com")
    results = authenticate(b"".join(seal) + raw, envelope(), lookup)
    assert (results.arc.result, results.arc.chain_length) == ("pass", 1)
    assert ("arc", "pass") in methods(results)


def test_arc_chain_broken_by_an_altered_body_fails(lookup, rsa):
    raw = b"Authentication-Results: relay.example.com; none\r\n" + message()
    seal = dkim.arc_sign(raw, b"s1", b"example.com", rsa.private, b"relay.example.com")
    altered = (b"".join(seal) + raw).replace(b"2026-117 est", b"2026-666 est")
    results = authenticate(altered, envelope(), lookup)
    assert results.arc.result == "fail"


def test_arc_key_lookup_failure_is_temperror(server, lookup, rsa):
    raw = b"Authentication-Results: relay.example.com; none\r\n" + message()
    seal = dkim.arc_sign(raw, b"s1", b"example.com", rsa.private, b"relay.example.com")
    server.servfail.add(server.hook("s1._domainkey.example.com"))
    results = authenticate(b"".join(seal) + raw, envelope(), lookup)
    assert (results.arc.result, results.arc.chain_length) == ("temperror", 1)
    assert results.temporary


def test_no_arc_is_none(lookup):
    assert authenticate(message(), envelope(), lookup).arc.result == "none"


# --- the header, storage, bounded time ------------------------------------------------------


def test_header_syntax_and_content(lookup, rsa):
    raw = sign(message(), rsa, "example.com", "s1")
    results = authenticate(raw, envelope(), lookup)
    header = parsed(results)
    assert all(len(line) <= 78 for line in results.to_header(AUTHSERV_ID).split("\r\n"))
    assert header.authserv_id == AUTHSERV_ID
    assert [(r.method, r.result) for r in header.results] == [
        ("spf", "pass"),
        ("dkim", "pass"),
        ("dmarc", "pass"),
        ("arc", "none"),
    ]
    props = {(p.type, p.name): p.value for r in header.results for p in r.properties}
    assert props[("header", "from")] == "example.com"
    assert props[("header", "d")] == "example.com"
    assert props[("header", "a")] == "rsa-sha256"


def test_hostile_values_cannot_write_header_syntax(lookup):
    raw = (
        b'DKIM-Signature: v=1; d=evil";x=1;(; s=a\r\n\tb; a=rsa-sha256; b=x; bh=y; h=from\r\n'
        + message()
    )
    results = authenticate(raw, envelope(), lookup)
    header = parsed(results)
    dkims = [r for r in header.results if r.method == "dkim"]
    assert len(dkims) == 1 and dkims[0].result == "permerror"
    assert len(header.results) == 4


def test_json_round_trip(lookup, rsa):
    raw = sign(message(), rsa, "example.com", "s1")
    results = authenticate(raw, envelope(), lookup)
    stored = json.loads(json.dumps(results.to_json()))
    assert AuthenticationResults.from_json(stored) == results


def test_deadline_gives_temperror_without_asking_dns(server, lookup, rsa):
    raw = sign(message(), rsa, "example.com", "s1")
    results = authenticate(raw, envelope(), lookup, deadline_seconds=0)
    assert results.spf.result == "temperror" and results.dkim[0].result == "temperror"
    assert results.dmarc.result == "temperror" and results.temporary
    assert server.queries == []


def test_huge_answer_comes_over_tcp_and_is_used(server, lookup):
    filler = [f"verification-{i}={'v' * 200}" for i in range(20)]  # ~4 KB: past UDP's 1232
    server.publish("example.com", "TXT", *filler)
    results = authenticate(message(), envelope(), lookup)
    assert results.spf.result == "pass"
    assert ("example.com.", "TXT", "tcp") in server.queries


# --- the header in the stored message -------------------------------------------------------


def test_our_results_are_removed_others_kept():
    raw = (
        b"Received: from x by y\r\n"
        b"Authentication-Results: MX.Cabinet.Example; spf=pass\r\n"
        b"Authentication-Results: (forged) mx.cabinet.example;\r\n\tdkim=pass\r\n"
        b"Authentication-Results: (a (nested) \\) comment)\r\n mx.cabinet.example; dkim=pass\r\n"
        b'Authentication-Results: "mx.cabinet.example" 1; dmarc=pass\r\n'
        b"Authentication-Results: relay.example.com; spf=fail\r\n"
        b"Authentication-Results: mx.cabinet.example.other; spf=pass\r\n"
        b"Subject: Authentication-Results: mx.cabinet.example;\r\n"
        b"\r\n"
        b"Authentication-Results: mx.cabinet.example; in the body stays\r\n"
    )
    assert without_our_results(raw, AUTHSERV_ID) == (
        b"Received: from x by y\r\n"
        b"Authentication-Results: relay.example.com; spf=fail\r\n"
        b"Authentication-Results: mx.cabinet.example.other; spf=pass\r\n"
        b"Subject: Authentication-Results: mx.cabinet.example;\r\n"
        b"\r\n"
        b"Authentication-Results: mx.cabinet.example; in the body stays\r\n"
    )
    untouched = message()
    assert without_our_results(untouched, AUTHSERV_ID) is not None
    assert without_our_results(untouched, AUTHSERV_ID) == untouched


def test_with_results_prepends_in_the_message_line_endings(lookup):
    results = authenticate(message(), envelope(), lookup)
    header = results.to_header(AUTHSERV_ID)
    crlf = with_results(message(), header)
    assert crlf.startswith(b"Authentication-Results: mx.cabinet.example;\r\n\t")
    assert crlf.endswith(message())
    lf_message = message().replace(b"\r\n", b"\n")
    lf = with_results(lf_message, header)
    assert b"\r" not in lf and lf.endswith(lf_message)

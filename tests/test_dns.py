"""`DnspythonLookup` (gateway/dns.py) against the tests' DNS server: each record type, and
each way an answer can fail told apart (not published, temporary, too large), and answers
remembered for their TTL (counted at the server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.dns import (
    MAX_RECORDS,
    AnswerCache,
    DnsLookupError,
    DnspythonLookup,
    LookupFailure,
)
from tests.dns_server import DnsServer

ZONE = {
    ("mx.welyb.fr", "A"): ["192.0.2.25"],
    ("mx.welyb.fr", "AAAA"): ["2001:db8::25"],
    ("25.2.0.192.in-addr.arpa", "PTR"): ["mx.welyb.fr."],
    ("welyb.fr", "MX"): ["10 mx.welyb.fr."],
    ("many.welyb.fr", "A"): [f"198.51.100.{i}" for i in range(MAX_RECORDS + 1)],
}


@pytest.fixture
def server() -> Iterator[DnsServer]:
    with DnsServer(ZONE) as server:
        yield server


@pytest.fixture
def lookup(server: DnsServer) -> DnspythonLookup:
    return DnspythonLookup(timeout=0.5, nameservers=["127.0.0.1"], port=server.port)


def test_each_record_type(lookup):
    assert lookup.a("mx.welyb.fr") == ["192.0.2.25"]
    assert lookup.aaaa("mx.welyb.fr") == ["2001:db8::25"]
    assert lookup.ptr("25.2.0.192.in-addr.arpa") == ["mx.welyb.fr"]
    assert lookup.mx("welyb.fr") == [(10, "mx.welyb.fr.")]


@pytest.mark.parametrize(
    ("hook", "outcome"),
    [
        ("servfail", LookupFailure.FAILURE),
        ("malformed", None),  # dnspython drops it and waits, or reports it: temporary
        ("slow", LookupFailure.TIMEOUT),
    ],
)
def test_temporary_failures(server, lookup, hook, outcome):
    name = server.hook("mx.welyb.fr")
    if hook == "slow":
        server.slow[name] = None
    else:
        getattr(server, hook).add(name)
    with pytest.raises(DnsLookupError) as raised:
        lookup.a("mx.welyb.fr")
    assert raised.value.temporary and not raised.value.not_published
    if outcome is not None:
        assert raised.value.outcome is outcome


def test_a_late_answer_within_the_timeout_is_used(server, lookup):
    server.slow[server.hook("mx.welyb.fr")] = 0.05
    assert lookup.a("mx.welyb.fr") == ["192.0.2.25"]


@pytest.mark.parametrize(
    ("name", "outcome"),
    [
        ("nowhere.welyb.fr", LookupFailure.NXDOMAIN),
        ("welyb.fr", LookupFailure.NO_ANSWER),  # has MX, no A
        ("x" * 64 + ".welyb.fr", LookupFailure.NXDOMAIN),  # no such name can exist
        ("a..welyb.fr", LookupFailure.NXDOMAIN),
    ],
)
def test_not_published(lookup, name, outcome):
    with pytest.raises(DnsLookupError) as raised:
        lookup.a(name)
    assert raised.value.outcome is outcome
    assert raised.value.not_published and not raised.value.temporary


def test_too_many_records_are_refused(lookup):
    with pytest.raises(DnsLookupError) as raised:
        lookup.a("many.welyb.fr")
    assert raised.value.outcome is LookupFailure.OVERSIZED
    assert not raised.value.temporary and not raised.value.not_published


class Ticking:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


SENDER = {
    ("example.org", "SOA"): ["ns.example.org. hostmaster.example.org. 1 7200 900 1209600 60"],
    ("example.org", "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all"],
    ("_dmarc.example.org", "TXT"): ["v=DMARC1; p=reject"],
}


@pytest.fixture
def sender_zone() -> Iterator[DnsServer]:
    with DnsServer(SENDER, ttl=300) as server:
        yield server


def cached_lookup(server: DnsServer, clock: Ticking) -> DnspythonLookup:
    cache = AnswerCache(monotonic=clock)
    return DnspythonLookup(timeout=0.5, nameservers=["127.0.0.1"], port=server.port, cache=cache)


def test_an_answer_is_remembered_for_its_ttl(sender_zone):
    clock = Ticking()
    lookup = cached_lookup(sender_zone, clock)
    assert lookup.txt("example.org") == ["v=spf1 ip4:192.0.2.0/24 -all"]
    clock.now += 299
    assert lookup.txt("Example.ORG.") == ["v=spf1 ip4:192.0.2.0/24 -all"]
    assert sender_zone.asked("example.org", "TXT") == 1
    # Changed at the source: seen once the TTL has run out.
    sender_zone.replace("example.org", "TXT", "v=spf1 -all")
    clock.now += 1
    assert lookup.txt("example.org") == ["v=spf1 -all"]
    assert sender_zone.asked("example.org", "TXT") == 2
    assert sender_zone.asked("_dmarc.example.org") == 0  # one name's answer, not another's


def test_not_published_is_remembered_for_the_soa_minimum(sender_zone):
    clock = Ticking()
    lookup = cached_lookup(sender_zone, clock)
    for _ in range(2):
        with pytest.raises(DnsLookupError) as nxdomain:
            lookup.txt("_dmarc.mail.example.org")
        assert nxdomain.value.outcome is LookupFailure.NXDOMAIN
        with pytest.raises(DnsLookupError) as no_answer:
            lookup.mx("example.org")
        assert no_answer.value.outcome is LookupFailure.NO_ANSWER
    assert sender_zone.asked("_dmarc.mail.example.org") == 1
    assert sender_zone.asked("example.org", "MX") == 1
    clock.now += 60  # the SOA's minimum, shorter than its TTL of 300
    sender_zone.publish("example.org", "MX", "10 mx.example.org.")
    assert lookup.mx("example.org") == [(10, "mx.example.org.")]
    with pytest.raises(DnsLookupError):
        lookup.txt("_dmarc.mail.example.org")
    assert sender_zone.asked("_dmarc.mail.example.org") == 2


def test_without_an_soa_or_after_a_failure_dns_is_asked_again(server):
    lookup = cached_lookup(server, Ticking())
    for _ in range(2):
        with pytest.raises(DnsLookupError):
            lookup.a("nowhere.welyb.fr")  # NXDOMAIN without an SOA: nothing to count on
    assert server.asked("nowhere.welyb.fr") == 2
    server.servfail.add(server.hook("mx.welyb.fr"))
    with pytest.raises(DnsLookupError) as failed:
        lookup.a("mx.welyb.fr")
    assert failed.value.temporary
    server.servfail.clear()
    assert lookup.a("mx.welyb.fr") == ["192.0.2.25"]


def test_the_cache_keeps_the_most_recently_used(sender_zone):
    clock = Ticking()
    cache = AnswerCache(entries=1, monotonic=clock)
    lookup = DnspythonLookup(
        timeout=0.5, nameservers=["127.0.0.1"], port=sender_zone.port, cache=cache
    )
    lookup.txt("example.org")
    lookup.txt("_dmarc.example.org")
    lookup.txt("example.org")
    assert sender_zone.asked("example.org", "TXT") == 2

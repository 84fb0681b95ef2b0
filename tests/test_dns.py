"""`DnspythonLookup` (gateway/dns.py) against the tests' DNS server: each record type, and
each way an answer can fail told apart (not published, temporary, too large)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.dns import MAX_RECORDS, DnsLookupError, DnspythonLookup, LookupFailure
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

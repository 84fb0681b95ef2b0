"""DNS as the gateway asks it: a small `DnsLookup` Protocol, passed in wherever DNS is needed
(the outbound record check, SPF/DKIM/DMARC/ARC of inbound mail), and its dnspython
implementation with a timeout per lookup and bounded answers.

Every method raises `DnsLookupError` when there is no usable answer; its `outcome` tells
"not published" (NXDOMAIN, no record of the type) from a temporary failure (timeout,
SERVFAIL, malformed answer, no server reachable) and from an answer too large to use. The
three must never be confused: a timeout read as "no SPF record" would turn a DNS hiccup into
a verdict.

Answers are remembered for their TTL, as an MTA's resolver does (`AnswerCache`): the same
sender's SPF and DMARC records are asked for every message it sends, and asking costs the
filing stage more CPU than anything else it does per message. A "not published" answer is
remembered for its zone's SOA minimum (RFC 2308) when the server gave an SOA, else not at
all; a temporary failure is never remembered.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from gateway.errors import GatewayError

if TYPE_CHECKING:
    import dns.resolver

# An answer past these is refused as OVERSIZED: no record the gateway reads (SPF, a DKIM key
# of 8192 bits, DMARC, MX) comes near, and a hostile zone must not make us hold megabytes.
MAX_RECORDS = 64
MAX_ANSWER_CHARS = 16_384
# TTLs are cut as resolvers cut them (unbound's cache-max-ttl, cache-max-negative-ttl): a
# record changed at its source is seen within a day, one just published within an hour.
MAX_TTL = 86_400
MAX_NEGATIVE_TTL = 3_600
CACHE_ENTRIES = 10_000  # names and types remembered at most, least recently used dropped

T = TypeVar("T")


class LookupFailure(StrEnum):
    """Why a lookup gave no records. The first two mean "not published", TIMEOUT and
    FAILURE that DNS could not be asked now (temporary), OVERSIZED an answer refused for its
    size (permanent: asking again gives the same)."""

    NXDOMAIN = "no such name"
    NO_ANSWER = "no record of this type"
    TIMEOUT = "timeout"
    FAILURE = "server failure"  # SERVFAIL, REFUSED, malformed answer, no server reachable
    OVERSIZED = "answer too large"


class DnsLookupError(GatewayError):
    def __init__(self, outcome: LookupFailure, name: str, rdtype: str, detail: str = "") -> None:
        self.outcome = outcome
        self.name = name
        self.rdtype = rdtype
        self.detail = detail
        super().__init__(f"{rdtype} {name}: {outcome}" + (f" ({detail})" if detail else ""))

    @property
    def not_published(self) -> bool:
        return self.outcome in (LookupFailure.NXDOMAIN, LookupFailure.NO_ANSWER)

    @property
    def temporary(self) -> bool:
        """Asking again later may give an answer (SPF/DKIM/DMARC `temperror`)."""
        return self.outcome in (LookupFailure.TIMEOUT, LookupFailure.FAILURE)


class DnsLookup(Protocol):
    """What the gateway asks of DNS. Every method raises `DnsLookupError` when there is no
    answer; an empty list is never returned for "no records" (that is NO_ANSWER)."""

    def mx(self, name: str) -> list[tuple[int, str]]:
        """(preference, exchange) pairs, the exchange with its trailing dot."""
        ...

    def txt(self, name: str) -> list[str]:
        """One string per TXT record, its character-strings joined without separator."""
        ...

    def a(self, name: str) -> list[str]:
        """IPv4 addresses, dotted."""
        ...

    def aaaa(self, name: str) -> list[str]:
        """IPv6 addresses, compressed form."""
        ...

    def ptr(self, name: str) -> list[str]:
        """Names (no trailing dot) at a reverse name such as `4.3.2.1.in-addr.arpa`."""
        ...


@dataclass(frozen=True)
class _NotPublished:
    outcome: LookupFailure
    detail: str


class AnswerCache:
    """Answers by (name, type) until their TTL runs out, bounded in entries; shared by the
    threads of one process. `monotonic` is the clock the TTLs are counted on."""

    def __init__(
        self, entries: int = CACHE_ENTRIES, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries = entries
        self._monotonic = monotonic
        self._answers: OrderedDict[tuple[str, str], tuple[float, list[Any] | _NotPublished]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, name: str, rdtype: str) -> list[Any] | _NotPublished | None:
        key = (name.lower().rstrip("."), rdtype)
        with self._lock:
            hit = self._answers.get(key)
            if hit is None:
                return None
            if self._monotonic() >= hit[0]:
                del self._answers[key]
                return None
            self._answers.move_to_end(key)
            return hit[1]

    def put(self, name: str, rdtype: str, answer: list[Any] | _NotPublished, ttl: float) -> None:
        if ttl <= 0:
            return
        key = (name.lower().rstrip("."), rdtype)
        with self._lock:
            self._answers[key] = (self._monotonic() + ttl, answer)
            self._answers.move_to_end(key)
            while len(self._answers) > self._entries:
                self._answers.popitem(last=False)


class DnspythonLookup:
    """`DnsLookup` through dnspython: the system's resolver, or the given name servers;
    answers remembered in `cache` (a fresh one unless given)."""

    def __init__(
        self,
        timeout: float = 5.0,
        nameservers: Sequence[str] = (),
        port: int = 53,
        cache: AnswerCache | None = None,
    ) -> None:
        import dns.resolver

        self._cache = cache if cache is not None else AnswerCache()

        try:
            self._resolver = dns.resolver.Resolver(configure=not nameservers)
        except dns.resolver.NoResolverConfiguration as exc:
            raise DnsLookupError(
                LookupFailure.FAILURE, "-", "-", f"no system resolver ({exc}); pass a name server"
            ) from None
        if nameservers:
            self._resolver.port = port  # read when the name servers are set, so first
            self._resolver.nameservers = list(nameservers)
        # `lifetime` bounds one lookup in all; `timeout` one try of one server, so that a
        # second server is still tried when the first does not answer.
        self._resolver.lifetime = timeout
        self._resolver.timeout = min(timeout, 2.0)
        # EDNS with the 2020 flag day's payload: a 2048-bit DKIM key with the other TXT
        # records of a domain often exceeds 512 bytes, and TCP fallback costs a round trip.
        self._resolver.use_edns(0, 0, 1232)

    def _resolve(self, name: str, rdtype: str) -> dns.resolver.Answer:
        import dns.exception
        import dns.name
        import dns.resolver

        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:  # too long, empty label, bad IDNA...
            # No such name can exist: as permanent as NXDOMAIN (a hostile d= must not read
            # as a temporary error, retried for nothing).
            raise DnsLookupError(LookupFailure.NXDOMAIN, name, rdtype, str(exc)) from None
        try:
            answer = self._resolver.resolve(qname, rdtype, search=False)
        except dns.resolver.NXDOMAIN as exc:
            self._remember_absence(
                name, rdtype, LookupFailure.NXDOMAIN, exc.kwargs.get("responses", {})
            )
            raise DnsLookupError(LookupFailure.NXDOMAIN, name, rdtype) from None
        except dns.resolver.NoAnswer as exc:
            response = exc.kwargs.get("response")
            self._remember_absence(name, rdtype, LookupFailure.NO_ANSWER, {qname: response})
            raise DnsLookupError(LookupFailure.NO_ANSWER, name, rdtype) from None
        except dns.exception.Timeout:
            raise DnsLookupError(
                LookupFailure.TIMEOUT,
                name,
                rdtype,
                f"no answer within {self._resolver.lifetime:g}s",
            ) from None
        except dns.exception.DNSException as exc:  # NoNameservers: SERVFAIL, refused, ...
            raise DnsLookupError(LookupFailure.FAILURE, name, rdtype, str(exc)) from None
        if len(answer) > MAX_RECORDS:
            raise DnsLookupError(
                LookupFailure.OVERSIZED, name, rdtype, f"{len(answer)} records"
            ) from None
        return answer

    def _remember_absence(
        self, name: str, rdtype: str, outcome: LookupFailure, responses: dict[Any, Any]
    ) -> None:
        """Remember "not published" for the SOA's negative TTL, if the answer had an SOA."""
        import dns.rdatatype

        for response in responses.values():
            for rrset in getattr(response, "authority", ()):
                if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                    ttl = min(rrset.ttl, rrset[0].minimum, MAX_NEGATIVE_TTL)
                    self._cache.put(name, rdtype, _NotPublished(outcome, ""), ttl)
                    return

    def _lookup(
        self, name: str, rdtype: str, records: Callable[[dns.resolver.Answer], list[T]]
    ) -> list[T]:
        """The records, from the cache while their TTL lasts, else asked and remembered."""
        cached = self._cache.get(name, rdtype)
        if isinstance(cached, _NotPublished):
            raise DnsLookupError(cached.outcome, name, rdtype, cached.detail)
        if cached is not None:
            return list(cached)
        answer = self._resolve(name, rdtype)
        result = records(answer)  # an answer refused here (OVERSIZED) is not remembered
        # The least TTL on the way (a CNAME's included), as dnspython's own cache counts it.
        ttl = min((rrset.ttl for rrset in answer.response.answer), default=0)
        self._cache.put(name, rdtype, list(result), min(ttl, MAX_TTL))
        return result

    def mx(self, name: str) -> list[tuple[int, str]]:
        return self._lookup(
            name, "MX", lambda answer: [(int(r.preference), r.exchange.to_text()) for r in answer]
        )

    def txt(self, name: str) -> list[str]:
        def records(answer: dns.resolver.Answer) -> list[str]:
            joined = [b"".join(r.strings) for r in answer]
            size = sum(len(record) for record in joined)
            if size > MAX_ANSWER_CHARS:
                raise DnsLookupError(LookupFailure.OVERSIZED, name, "TXT", f"{size} bytes")
            return [record.decode("utf-8", "replace") for record in joined]

        return self._lookup(name, "TXT", records)

    def a(self, name: str) -> list[str]:
        return self._lookup(name, "A", lambda answer: [str(r.address) for r in answer])

    def aaaa(self, name: str) -> list[str]:
        return self._lookup(name, "AAAA", lambda answer: [str(r.address) for r in answer])

    def ptr(self, name: str) -> list[str]:
        return self._lookup(
            name, "PTR", lambda answer: [r.target.to_text(omit_final_dot=True) for r in answer]
        )

"""DNS as the gateway asks it: a small `DnsLookup` Protocol, passed in wherever DNS is needed
(the outbound record check, SPF/DKIM/DMARC/ARC of inbound mail), and its dnspython
implementation with a timeout per lookup and bounded answers.

Every method raises `DnsLookupError` when there is no usable answer; its `outcome` tells
"not published" (NXDOMAIN, no record of the type) from a temporary failure (timeout,
SERVFAIL, malformed answer, no server reachable) and from an answer too large to use. The
three must never be confused: a timeout read as "no SPF record" would turn a DNS hiccup into
a verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from gateway.errors import GatewayError

if TYPE_CHECKING:
    import dns.resolver

# An answer past these is refused as OVERSIZED: no record the gateway reads (SPF, a DKIM key
# of 8192 bits, DMARC, MX) comes near, and a hostile zone must not make us hold megabytes.
MAX_RECORDS = 64
MAX_ANSWER_CHARS = 16_384


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


class DnspythonLookup:
    """`DnsLookup` through dnspython: the system's resolver, or the given name servers."""

    def __init__(
        self, timeout: float = 5.0, nameservers: Sequence[str] = (), port: int = 53
    ) -> None:
        import dns.resolver

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
        except dns.resolver.NXDOMAIN:
            raise DnsLookupError(LookupFailure.NXDOMAIN, name, rdtype) from None
        except dns.resolver.NoAnswer:
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

    def mx(self, name: str) -> list[tuple[int, str]]:
        return [(int(r.preference), r.exchange.to_text()) for r in self._resolve(name, "MX")]

    def txt(self, name: str) -> list[str]:
        records = [b"".join(r.strings) for r in self._resolve(name, "TXT")]
        size = sum(len(record) for record in records)
        if size > MAX_ANSWER_CHARS:
            raise DnsLookupError(LookupFailure.OVERSIZED, name, "TXT", f"{size} bytes")
        return [record.decode("utf-8", "replace") for record in records]

    def a(self, name: str) -> list[str]:
        return [str(r.address) for r in self._resolve(name, "A")]

    def aaaa(self, name: str) -> list[str]:
        return [str(r.address) for r in self._resolve(name, "AAAA")]

    def ptr(self, name: str) -> list[str]:
        return [r.target.to_text(omit_final_dot=True) for r in self._resolve(name, "PTR")]

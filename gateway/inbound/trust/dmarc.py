"""DMARC (RFC 7489) for one message: the From domain, its organisational domain by the
public suffix list, the published record and whether an SPF or DKIM pass aligns with it.

A small evaluator of our own over the parsed record, not a library: the Python DMARC
packages either fetch DNS themselves (no injectable resolver, no timeout of ours) or align
domains by name suffix alone (then `d=co.uk` would align with `example.co.uk`). What a
library must do here, it does: the public suffix list comes from `publicsuffixlist`, which
ships the list in its wheel (nothing is downloaded at run time).
"""

from __future__ import annotations

import email.utils
import functools
import re
from collections.abc import Sequence

from gateway.dns import DnsLookup, DnsLookupError
from gateway.inbound.trust.results import DkimResult, DmarcOutcome, DmarcResult, SpfResult
from gateway.routing.sender_policy import public_suffixes

_VERSION = re.compile(r"v\s*=\s*DMARC1\s*(?:;|$)")  # RFC 7489 §6.4: first tag, exact
_POLICIES = ("none", "quarantine", "reject")


# Remembered: a firm's mail comes from the same few hundred domains, and the list lookup
# was a tenth of the filing worker's CPU (py-spy on benchmarks/pipeline.py).
@functools.lru_cache(maxsize=4096)
def organisational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix plus one label (`mail.example.co.uk` →
    `example.co.uk`); a name that is itself a public suffix is its own."""
    domain = domain.lower().rstrip(".")
    return public_suffixes().privatesuffix(domain) or domain


def aligned(domain: str, from_domain: str, *, strict: bool) -> bool:
    domain, from_domain = domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    if strict:
        return domain == from_domain
    return organisational_domain(domain) == organisational_domain(from_domain)


def header_block(raw: bytes) -> bytes:
    """The message's header, up to its first empty line: the email parser reads every line
    it is given even for the header alone, and a body can be megabytes."""
    end = raw.find(b"\r\n\r\n")
    # A bare-LF blank line counts only before the CRLF one: not a scan of the whole body.
    bare = raw.find(b"\n\n", 0, len(raw) if end < 0 else end)
    if bare >= 0:
        end = bare
    return raw if end < 0 else raw[: end + 2]


def header_fields(raw: bytes, name: bytes) -> list[str]:
    """The values of the header fields called `name` (any case), unfolded, as UTF-8 text
    (an SMTPUTF8 message's header is UTF-8; anything else decodes with replacements)."""
    values: list[bytes] = []
    current: bytes | None = None
    for line in header_block(raw).splitlines():
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current += line
            continue
        if current is not None:
            values.append(current)
        field, colon, value = line.partition(b":")
        current = value if colon and field.strip().lower() == name else None
    if current is not None:
        values.append(current)
    return [value.strip().decode("utf-8", "replace") for value in values]


def from_domain(raw: bytes) -> tuple[str | None, str]:
    """The RFC 5322.From domain, or None with the reason there is not exactly one."""
    values = header_fields(raw, b"from")
    if not values:
        return None, "no From header"
    if len(values) > 1:
        return None, "several From headers"
    domains = {
        address.rpartition("@")[2].strip().lower().rstrip(".")
        for _, address in email.utils.getaddresses([values[0]])
        if "@" in address
    }
    if len(domains) != 1:
        return None, "no From address" if not domains else "several From domains"
    domain = domains.pop()
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None, "From domain is no domain name"
    if not re.fullmatch(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)+", ascii_domain):
        return None, "From domain is no domain name"
    return ascii_domain, ""


def _tags(record: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), value.strip().lower())
    return tags


def _records(name: str, lookup: DnsLookup) -> list[str]:
    """The v=DMARC1 records at `name`; [] when none is published. Raises DnsLookupError
    for a temporary failure or an unusable answer."""
    try:
        found = lookup.txt(name)
    except DnsLookupError as exc:
        if exc.not_published:
            return []
        raise
    return [txt for txt in found if _VERSION.match(txt.strip())]


def evaluate(
    raw: bytes, spf: SpfResult, dkim: Sequence[DkimResult], lookup: DnsLookup
) -> DmarcResult:
    domain, why = from_domain(raw)
    if domain is None:
        return DmarcResult("permerror", None, None, reason=why)
    org = organisational_domain(domain)

    def alignment(adkim: str, aspf: str) -> tuple[bool, bool]:
        spf_ok = bool(
            spf.result == "pass" and spf.domain and aligned(spf.domain, domain, strict=aspf == "s")
        )
        dkim_ok = any(
            d.result == "pass" and d.domain and aligned(d.domain, domain, strict=adkim == "s")
            for d in dkim
        )
        return spf_ok, dkim_ok

    # Policy discovery (§6.6.3): the From domain, then its organisational domain.
    try:
        records, at_org = _records(f"_dmarc.{domain}", lookup), False
        if not records and org != domain:
            records, at_org = _records(f"_dmarc.{org}", lookup), True
    except DnsLookupError as exc:
        spf_ok, dkim_ok = alignment("r", "r")
        outcome: DmarcOutcome = "temperror" if exc.temporary else "permerror"
        return DmarcResult(outcome, domain, org, None, None, None, spf_ok, dkim_ok, str(exc))
    if len(records) != 1:
        spf_ok, dkim_ok = alignment("r", "r")
        why = "several DMARC records" if records else ""
        return DmarcResult("none", domain, org, None, None, None, spf_ok, dkim_ok, why)

    tags = _tags(records[0])
    p = tags.get("p")
    sp = tags.get("sp") if tags.get("sp") in _POLICIES else None
    spf_ok, dkim_ok = alignment(tags.get("adkim", "r"), tags.get("aspf", "r"))
    if p not in _POLICIES:
        why = f"record has no valid p= ({p})" if p else "record has no p="
        return DmarcResult("permerror", domain, org, None, None, sp, spf_ok, dkim_ok, why)
    policy = sp if at_org and sp else p
    if spf_ok or dkim_ok:
        return DmarcResult("pass", domain, org, policy, p, sp, spf_ok, dkim_ok)
    # An SPF or DKIM result we could not get now might have aligned: not a failure yet.
    if spf.result == "temperror" or any(d.result == "temperror" for d in dkim):
        why = "SPF or DKIM had a temporary error"
        return DmarcResult("temperror", domain, org, policy, p, sp, False, False, why)
    return DmarcResult("fail", domain, org, policy, p, sp, False, False)

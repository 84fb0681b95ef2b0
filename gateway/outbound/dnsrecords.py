"""The DNS records the gateway needs (R18), and how they compare with what DNS answers.

`expected_records` lists, for every served domain, the MX, SPF, DKIM (one per stored key)
and DMARC records to publish; `gateway dns records` prints them. `check_records` asks DNS
for each and says, per record, `ok`, `missing`, `different` (with what DNS has) or `error`
(the lookup itself failed: timeout, SERVFAIL, unreachable server).

"ok" is what a receiving mail server would accept, not byte equality with our suggestion:

- MX: ok when our host is among the domain's MX targets (case and trailing dot ignored,
  preference free: the admin may keep a backup MX in front).
- SPF: exactly one `v=spf1` record at the domain (two or more is a permerror, RFC 7208
  §4.5: receivers then ignore SPF altogether, reported as `different`). It is ok when it
  names our host, read left to right as a receiver would: `a:HOST`, or `mx` / `mx:DOMAIN`
  with HOST among the domain's MX, with a pass qualifier, before any `all`. Mechanisms that
  match by address or by another domain's policy (`include:`, `redirect=`, `ip4:`, `ip6:`,
  `a` of another name, `exists:`, `ptr`, macros) are *not followed*: whether they cover our
  host depends on records and addresses this check does not resolve. Such a record is
  reported `different`, naming the mechanisms that may cover the host, rather than `ok`: a
  check that says ok must mean receivers will accept our mail, and an admin who relies on
  `include:` can read the note and decide (or add `a:HOST`, which is always unambiguous).
  `+all` authorises every host on the Internet and is reported `different` too, as is a
  syntax error anywhere in the record (a permerror, §4.6). `mx` is not followed either when
  the domain's MX lookup itself failed. The hosts to look for are the `a:` terms of our own
  suggested record (today: `a:<smtp.hostname>`).
- DKIM: the single TXT record at `<selector>._domainkey.<domain>` carries the same `p=`
  (whitespace ignored: zone files split long keys) and the same `k=` (default rsa). Several
  records at one selector make the result undefined (RFC 6376 §3.6.2.2): `different`.
- DMARC: exactly one `v=DMARC1` record at `_dmarc.<domain>` with a valid `p=` (RFC 7489
  §6.6.3: several records mean no DMARC at all). Any policy is ok; `p=none` gets a note,
  since receivers then act on nothing.

A domain without a DKIM key yet has a placeholder record; its check is `missing` and says
which `gateway dkim keygen` to run, without asking DNS.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from gateway.config import GatewayConfig

# The DNS interface lives in gateway.dns (inbound authentication uses it too); re-exported
# here for the CLI's `dns check`.
from gateway.dns import DnsLookup as DnsLookup
from gateway.dns import DnsLookupError as DnsLookupError
from gateway.dns import DnspythonLookup as DnspythonLookup
from gateway.dns import LookupFailure as LookupFailure
from gateway.outbound.dkim import dns_record_name, dns_txt_value
from gateway.outbound.dkim_keys import DkimKeys

Purpose = Literal["mx", "spf", "dkim", "dmarc"]


@dataclass(frozen=True)
class DnsRecord:
    """One record to publish: `value` as it goes in the zone (TXT strings joined)."""

    domain: str
    name: str
    type: str  # "MX" or "TXT"
    value: str
    purpose: Purpose
    placeholder: bool = False  # DKIM row of a domain without a key: `value` says what to do


def expected_records(config: GatewayConfig, keys: DkimKeys) -> list[DnsRecord]:
    """MX, SPF, DKIM (per stored key, or a placeholder) and DMARC of every served domain."""
    mx = config.smtp.hostname
    records: list[DnsRecord] = []
    for domain in config.domains:
        records.append(DnsRecord(domain, domain, "MX", f"10 {mx}.", "mx"))
        records.append(DnsRecord(domain, domain, "TXT", f"v=spf1 a:{mx} -all", "spf"))
        domain_keys = keys.keys_for(domain)
        for key in domain_keys:
            records.append(
                DnsRecord(domain, dns_record_name(key), "TXT", dns_txt_value(key), "dkim")
            )
        if not domain_keys:
            records.append(
                DnsRecord(
                    domain,
                    f"<selector>._domainkey.{domain}",
                    "TXT",
                    f"(no key yet: gateway dkim keygen --domain {domain} --selector <selector>)",
                    "dkim",
                    placeholder=True,
                )
            )
        records.append(
            DnsRecord(
                domain,
                f"_dmarc.{domain}",
                "TXT",
                f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}",
                "dmarc",
            )
        )
    return records


# --- looking up -----------------------------------------------------------------------------


class _Answers:
    """Each (type, name) asked once, the independent ones in parallel: the SPF check reuses
    the MX answer, and a check of two domains with DNS down takes one timeout, not eight."""

    def __init__(self, lookup: DnsLookup) -> None:
        self._lookup = lookup
        self._done: dict[tuple[str, str], list[Any] | DnsLookupError] = {}

    def _ask(self, query: tuple[str, str]) -> list[Any] | DnsLookupError:
        rdtype, name = query
        try:
            if rdtype == "MX":
                return list(self._lookup.mx(name))
            return list(self._lookup.txt(name))
        except DnsLookupError as exc:
            return exc

    def prefetch(self, queries: Iterable[tuple[str, str]], workers: int) -> None:
        pending = [q for q in dict.fromkeys(queries) if q not in self._done]
        if not pending:
            return
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(pending)))) as pool:
            for query, result in zip(pending, pool.map(self._ask, pending), strict=True):
                self._done[query] = result

    def get(self, rdtype: str, name: str) -> list[Any]:
        """The records; raises `DnsLookupError`, with [] counted as "no answer"."""
        query = (rdtype, name)
        if query not in self._done:
            self._done[query] = self._ask(query)
        result = self._done[query]
        if isinstance(result, DnsLookupError):
            raise result
        if not result:
            raise DnsLookupError(LookupFailure.NO_ANSWER, name, rdtype)
        return result


# --- checking -------------------------------------------------------------------------------


class Status(StrEnum):
    OK = "ok"
    MISSING = "missing"
    DIFFERENT = "different"
    ERROR = "error"


@dataclass(frozen=True)
class RecordCheck:
    record: DnsRecord
    status: Status
    detail: str
    found: tuple[str, ...] = ()  # what DNS answered at the name (MX as "PREF HOST")

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def as_dict(self) -> dict[str, Any]:
        return {
            "domain": self.record.domain,
            "name": self.record.name,
            "type": self.record.type,
            "status": str(self.status),
            "detail": self.detail,
            "expected": self.record.value,
            "found": list(self.found),
        }


def check_records(
    expected: Sequence[DnsRecord], lookup: DnsLookup, *, workers: int = 8
) -> list[RecordCheck]:
    """One `RecordCheck` per expected record, in the same order (rules: module docstring)."""
    answers = _Answers(lookup)
    queries: list[tuple[str, str]] = []
    for record in expected:
        if record.placeholder:
            continue
        queries.append((record.type, record.name))
        if record.purpose == "spf":
            queries.append(("MX", record.domain))  # for an `mx` mechanism
    answers.prefetch(queries, workers)
    return [_check(record, answers) for record in expected]


def _check(record: DnsRecord, answers: _Answers) -> RecordCheck:
    if record.placeholder:
        return RecordCheck(
            record,
            Status.MISSING,
            f"missing key: run gateway dkim keygen --domain {record.domain} --selector NAME",
        )
    try:
        found = answers.get(record.type, record.name)
    except DnsLookupError as exc:
        if exc.not_published:
            return RecordCheck(record, Status.MISSING, f"{exc.outcome} at {record.name}")
        return RecordCheck(record, Status.ERROR, f"lookup failed: {exc}")
    if record.purpose == "mx":
        return _check_mx(record, found)
    if record.purpose == "spf":
        return _check_spf(record, found, answers)
    if record.purpose == "dkim":
        return _check_dkim(record, found)
    return _check_dmarc(record, found)


def _host(name: str) -> str:
    """Host names compare case-insensitively, with or without the root's trailing dot."""
    return name.strip().rstrip(".").lower()


def _check_mx(record: DnsRecord, found: list[tuple[int, str]]) -> RecordCheck:
    host = _host(record.value.split()[-1])
    shown = tuple(f"{pref} {exchange}" for pref, exchange in sorted(found))
    targets = {_host(exchange): pref for pref, exchange in found}
    if host in targets:
        return RecordCheck(
            record, Status.OK, f"{host} is an MX (preference {targets[host]})", shown
        )
    if set(targets) == {""}:
        return RecordCheck(
            record, Status.DIFFERENT, "null MX (RFC 7505): the domain takes no mail", shown
        )
    return RecordCheck(record, Status.DIFFERENT, f"{host} is not an MX: {', '.join(shown)}", shown)


_SPF_VERSION = re.compile(r"v=spf1(?:\s|$)", re.IGNORECASE)  # RFC 7208 §4.5
_SPF_MECHANISM = re.compile(
    r"(?P<q>[-+~?]?)(?P<m>all|include|a|mx|ptr|ip4|ip6|exists)(?::(?P<arg>[^/]*))?(?P<cidr>/.*)?$",
    re.IGNORECASE,
)
_SPF_MODIFIER = re.compile(r"[a-z][a-z0-9_.-]*=", re.IGNORECASE)
_QUALIFIER_RESULT = {"-": "fail", "~": "softfail", "?": "neutral"}


def _check_spf(record: DnsRecord, found: list[str], answers: _Answers) -> RecordCheck:
    spf = [txt for txt in found if _SPF_VERSION.match(txt)]
    shown = tuple(spf)
    if not spf:
        return RecordCheck(record, Status.MISSING, "no v=spf1 record among the TXT", ())
    if len(spf) > 1:
        return RecordCheck(
            record,
            Status.DIFFERENT,
            f"{len(spf)} SPF records: RFC 7208 permerror, merge into one",
            shown,
        )
    # Our own record says which hosts must be authorised (today: `a:<smtp.hostname>`).
    hosts = [_host(term[2:]) for term in record.value.split() if term.lower().startswith("a:")]
    notes = []
    for host in hosts:
        authorised, note = _spf_authorises(spf[0], host, record.domain, answers)
        if not authorised:
            return RecordCheck(record, Status.DIFFERENT, note, shown)
        notes.append(note)
    return RecordCheck(record, Status.OK, "; ".join(notes), shown)


def _spf_authorises(spf: str, host: str, domain: str, answers: _Answers) -> tuple[bool, str]:
    """Whether the record gives `host` a pass, as far as can be told by name: terms are read
    left to right as a receiver evaluates them; what is not followed is in the docstring."""
    terms = spf.split()[1:]
    # RFC 7208 §4.6: the whole record is parsed first, a syntax error anywhere voids it.
    for term in terms:
        if not (_SPF_MECHANISM.match(term) or _SPF_MODIFIER.match(term)):
            return False, f"invalid SPF term {term!r} (RFC 7208 permerror)"
    not_followed: list[str] = []
    redirect: str | None = None
    for term in terms:
        mechanism = _SPF_MECHANISM.match(term)
        if mechanism is None:
            if term.lower().startswith("redirect="):
                redirect = term
            continue  # exp= and unknown modifiers do not change the result
        qualifier = mechanism["q"] or "+"
        name = mechanism["m"].lower()
        arg = _host(mechanism["arg"] or domain)
        matches: bool | None = None  # None: cannot tell by name (include:, ip4:, a:other...)
        if name == "all":
            if qualifier == "+":
                return False, "+all lets any host on the Internet send as the domain"
            redirect = None  # RFC 7208 §6.1: redirect= is ignored when there is an `all`
            break  # nothing after `all` is evaluated
        if "%" in arg:
            pass  # a macro expands per message: cannot be read here
        elif name == "a" and arg == host:
            matches = True
        elif name == "mx" and arg == domain:
            mx_hosts = _mx_hosts(answers, domain)
            matches = None if mx_hosts is None else host in mx_hosts
        if matches is None:
            not_followed.append(term)
        elif matches:
            if qualifier == "+":
                return True, f"authorises {host} ({term})"
            return False, f"{term} gives {host} {_QUALIFIER_RESULT[qualifier]}, not pass"
        # else: `mx` whose MX hosts are not ours. The MX row says so; read on.
    if redirect is not None:
        not_followed.append(redirect)
    if not_followed:
        # Short: the table shows 60 characters of the detail; `found` has the whole record.
        return False, "not named; may cover it, not followed: " + " ".join(not_followed)
    return False, f"does not authorise {host} (add a:{host})"


def _mx_hosts(answers: _Answers, domain: str) -> set[str] | None:
    """The domain's MX hosts; None when DNS could not say (then `mx` is not followed)."""
    try:
        return {_host(exchange) for _, exchange in answers.get("MX", domain)}
    except DnsLookupError as exc:
        return set() if exc.not_published else None


def _tags(value: str) -> dict[str, str]:
    """`k=v; k=v` tag lists (RFC 6376 §3.2, RFC 7489 §6.4): names lower-cased, trimmed."""
    tags: dict[str, str] = {}
    for part in value.split(";"):
        name, sep, tag_value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), tag_value.strip())
    return tags


def _check_dkim(record: DnsRecord, found: list[str]) -> RecordCheck:
    shown = tuple(found)
    if len(found) > 1:
        return RecordCheck(
            record,
            Status.DIFFERENT,
            f"{len(found)} TXT records at one selector: receivers pick any (RFC 6376)",
            shown,
        )
    ours, theirs = _tags(record.value), _tags(found[0])
    if "v" in theirs and theirs["v"] != "DKIM1":
        return RecordCheck(record, Status.DIFFERENT, f"v={theirs['v']}, not DKIM1", shown)
    if "p" not in theirs:
        return RecordCheck(record, Status.DIFFERENT, "no p= tag: not a DKIM key record", shown)
    # Zone files split a long key into several strings, some tools with spaces between.
    key = re.sub(r"\s+", "", theirs["p"])
    if not key:
        return RecordCheck(record, Status.DIFFERENT, "key revoked (empty p=)", shown)
    if key != re.sub(r"\s+", "", ours["p"]):
        return RecordCheck(record, Status.DIFFERENT, "p= is another key than the stored one", shown)
    their_kind = theirs.get("k", "rsa").lower()  # RFC 6376 §3.6.1: rsa when absent
    if their_kind != ours.get("k", "rsa"):
        return RecordCheck(
            record, Status.DIFFERENT, f"k={their_kind}, the stored key is k={ours['k']}", shown
        )
    return RecordCheck(record, Status.OK, "matches the stored key", shown)


_DMARC_VERSION = re.compile(r"v\s*=\s*DMARC1\s*(?:;|$)")  # RFC 7489 §6.4: first tag, exact


def _check_dmarc(record: DnsRecord, found: list[str]) -> RecordCheck:
    dmarc = [txt for txt in found if _DMARC_VERSION.match(txt.strip())]
    shown = tuple(dmarc or found)
    if not dmarc:
        return RecordCheck(record, Status.MISSING, "no v=DMARC1 record among the TXT", shown)
    if len(dmarc) > 1:
        return RecordCheck(
            record,
            Status.DIFFERENT,
            f"{len(dmarc)} DMARC records: receivers then apply none (RFC 7489)",
            shown,
        )
    policy = _tags(dmarc[0]).get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        shown_policy = f"p={policy}" if policy else "no p= tag"
        return RecordCheck(record, Status.DIFFERENT, f"{shown_policy}: no valid policy", shown)
    if policy == "none":
        return RecordCheck(record, Status.OK, "p=none: reports only, nothing is enforced", shown)
    return RecordCheck(record, Status.OK, f"p={policy}", shown)

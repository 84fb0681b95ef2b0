"""Who really sent a message: SPF, every DKIM signature, DMARC and the ARC chain, computed in
the filing stage (after the 250) and kept with the message (issue 11).

    results = authenticate(raw, AuthEnvelope(client_ip, helo, mail_from), lookup)
    stored = with_results(without_our_results(raw, authserv_id), results.to_header(authserv_id))

(`with_results` and `without_our_results` live in header_edits.py.)

Libraries: dkimpy verifies DKIM signatures and ARC chains (its `dnsfunc` hook takes our
resolver), pyspf evaluates SPF (a subclass of its `query` whose `dns()` asks our resolver:
no global patching); DMARC is a small evaluator of ours (gateway/inbound/trust/dmarc.py).

Bad input gives a recorded result, never an exception, in bounded time:
- DNS goes through the injected `DnsLookup` (its own per-lookup timeout) behind a budget:
  each (type, name) asked once per message, and nothing asked after `deadline_seconds`
  (a lookup then fails as a timeout), so a message takes at most the deadline plus one
  lookup's timeout plus the CPU of one step. A temporary DNS failure is `temperror`
  (`AuthenticationResults.temporary`: the caller authenticates again later), never `fail`.
- SPF's limits are pyspf's (RFC 7208 §4.6.4: 10 lookups, 2 void lookups, 10 MX/PTR names):
  an include loop or a long chain is a permerror.
- DKIM: only the first MAX_SIGNATURES signatures (topmost first) are verified; the others
  are recorded as `policy` with the reason. Keys over MAX_KEY_BITS or with a public
  exponent over 64 bits are refused (permerror) before any arithmetic: verification cost
  grows with both, and no signer needs them.
- The libraries run on hostile input; an exception one of them raises on it is recorded as
  a permerror of that check (with the exception's type), not propagated.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dkim
import spf

from gateway.dns import DnsLookup, DnsLookupError, LookupFailure
from gateway.inbound.trust import dmarc

# The header edits of the stored message, importable from here with the rest of the API.
from gateway.inbound.trust.header_edits import with_results as with_results
from gateway.inbound.trust.header_edits import without_our_results as without_our_results
from gateway.inbound.trust.results import (
    ArcResult,
    AuthenticationResults,
    DkimResult,
    SpfResult,
)

MAX_SIGNATURES = 10
MAX_KEY_BITS = 8192
MAX_ARC_SETS = 50  # RFC 8617 §4.2.1: i= runs from 1 to 50
_REASON = 100  # characters of a library's error kept as the reason


@dataclass(frozen=True)
class AuthEnvelope:
    """What the SMTP session said: the client's address, its HELO name and the reverse path
    ("" for the null sender)."""

    client_address: str | None
    helo: str | None
    mail_from: str


class _Budget:
    """The injected lookup, each question asked once per message and none after the
    deadline. Implements `DnsLookup`."""

    def __init__(self, lookup: DnsLookup, deadline: float) -> None:
        self._lookup = lookup
        self.deadline = deadline
        self._answers: dict[tuple[str, str], list[Any] | DnsLookupError] = {}

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def _ask(self, rdtype: str, name: str, ask: Callable[[str], list[Any]]) -> list[Any]:
        key = (rdtype, name.lower().rstrip("."))
        if key not in self._answers:
            if self.expired:
                raise DnsLookupError(LookupFailure.TIMEOUT, name, rdtype, "time limit reached")
            try:
                self._answers[key] = ask(name)
            except DnsLookupError as exc:
                self._answers[key] = exc
        answer = self._answers[key]
        if isinstance(answer, DnsLookupError):
            raise answer
        return answer

    def mx(self, name: str) -> list[tuple[int, str]]:
        return self._ask("MX", name, self._lookup.mx)

    def txt(self, name: str) -> list[str]:
        return self._ask("TXT", name, self._lookup.txt)

    def a(self, name: str) -> list[str]:
        return self._ask("A", name, self._lookup.a)

    def aaaa(self, name: str) -> list[str]:
        return self._ask("AAAA", name, self._lookup.aaaa)

    def ptr(self, name: str) -> list[str]:
        return self._ask("PTR", name, self._lookup.ptr)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= _REASON else text[: _REASON - 3] + "..."


# --- SPF --------------------------------------------------------------------------------


class _SpfQuery(spf.query):  # type: ignore[misc]  # pyspf has no type information
    """pyspf's evaluation with DNS through our lookup; its limits (lookups, void lookups,
    MX and PTR names) stay as pyspf enforces them around `dns()`."""

    def __init__(self, lookup: DnsLookup, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)
        self._lookup = lookup

    def dns(
        self, name: str, qtype: str, cnames: Any = None, ignore_void: bool = False
    ) -> list[Any]:
        name = str(name).rstrip(".").lower()
        if not name or not all(0 < len(label) < 64 for label in name.split(".")):
            return []  # not a DNS name: pyspf treats it as no data
        try:
            if qtype == "TXT":
                # pyspf joins each record's character-strings itself, as bytes.
                result: list[Any] = [(t.encode(),) for t in self._lookup.txt(name)]
            elif qtype == "A":
                result = self._lookup.a(name)
            elif qtype == "AAAA":
                result = self._lookup.aaaa(name)
            elif qtype == "MX":
                result = [(pref, host.rstrip(".")) for pref, host in self._lookup.mx(name)]
            elif qtype == "PTR":
                result = self._lookup.ptr(name)
            else:
                result = []  # type SPF (99): only asked in pyspf's "harsh" mode, not used
        except DnsLookupError as exc:
            if exc.temporary:
                raise spf.TempError(f"DNS {exc}") from None
            if not exc.not_published:
                raise spf.PermError(f"DNS {exc}") from None
            result = []
        if not result and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return result


def check_spf(envelope: AuthEnvelope, lookup: DnsLookup) -> SpfResult:
    """SPF of MAIL FROM, or of the HELO name for the null sender (RFC 7208 §2.4)."""
    helo = (envelope.helo or "").strip()
    if envelope.mail_from:
        identity: Any = "mailfrom"
        local, at, sender_domain = envelope.mail_from.rpartition("@")
        if not at:  # no domain at all (RFC 5321 forbids it): checked as postmaster@HELO
            local, sender_domain = "postmaster", helo
        # pyspf splits at the first "@": a quoted local part holding one goes as postmaster.
        sender = f"{'postmaster' if not local or '@' in local else local}@{sender_domain}"
        domain = sender_domain.lower().rstrip(".") or None
    else:
        identity = "helo"
        domain = None if helo.startswith("[") else helo.lower().rstrip(".") or None
        sender = ""
    if domain is None:
        return SpfResult("none", identity, None, f"no {identity} domain")
    if not envelope.client_address:
        return SpfResult("none", identity, domain, "no client address")
    try:
        query = _SpfQuery(lookup, i=envelope.client_address, s=sender, h=helo)
        result, _code, explanation = query.check()
    except Exception as exc:  # pyspf on hostile input: see the module docstring
        return SpfResult("permerror", identity, domain, f"{type(exc).__name__}: {_short(exc)}")
    if result not in ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"):
        return SpfResult("permerror", identity, domain, f"unexpected SPF result {result}")
    reason = _short(Exception(explanation)) if result in ("temperror", "permerror") else ""
    return SpfResult(result, identity, domain, reason)


# --- DKIM -------------------------------------------------------------------------------


def _key_problem(name: str, record: str) -> str:
    """Why a published key is unusable ("" when it is fine), read before dkimpy does the
    arithmetic: a huge modulus or exponent costs time, and no signer needs one."""
    try:
        pk, keysize, ktag, _tlsrpt = dkim.evaluate_pk(name.encode(), record.encode())
    except Exception as exc:  # dkimpy parsing a hostile record: see the module docstring
        return f"unusable key: {_short(exc)}"
    if ktag == b"rsa":
        if keysize > MAX_KEY_BITS:
            return f"key of {keysize} bits, over {MAX_KEY_BITS}"
        if int(pk["publicExponent"]).bit_length() > 64:
            return "RSA public exponent over 64 bits"
    return ""


def _signature_tags(value: bytes) -> dict[bytes, bytes] | None:
    try:
        tags: dict[bytes, bytes] = dkim.util.parse_tag_value(re.sub(rb"\r?\n[ \t]", b" ", value))
    except dkim.util.InvalidTagValueList:
        return None
    return tags


def _text(tags: dict[bytes, bytes], name: bytes, limit: int = 255) -> str | None:
    value = tags.get(name)
    if value is None:
        return None
    return re.sub(rb"\s+", b"", value).decode("ascii", "replace")[:limit] or None


def _verify_one(
    verifier: dkim.DKIM, idx: int, tags: dict[bytes, bytes], lookup: DnsLookup
) -> tuple[Any, str]:
    domain, selector = _text(tags, b"d"), _text(tags, b"s")
    if not domain or not selector:
        return "permerror", "signature lacks d= or s="
    name = f"{selector}._domainkey.{domain}"
    try:
        records = lookup.txt(name)
    except DnsLookupError as exc:
        if exc.temporary:
            return "temperror", f"key lookup: {exc.outcome}"
        return "permerror", "no key published" if exc.not_published else str(exc.outcome)
    problem = _key_problem(name, records[0])
    if problem:
        return "permerror", problem

    def dnsfunc(_name: bytes, timeout: float = 5) -> bytes:
        return records[0].encode()  # the record already fetched and checked above

    try:
        valid = verifier.verify(idx=idx, dnsfunc=dnsfunc)
    except dkim.ValidationError as exc:
        if "body hash mismatch" in str(exc):
            return "fail", "body hash mismatch"
        return "permerror", _short(exc)
    except Exception as exc:  # dkimpy on hostile input: see the module docstring
        return "permerror", f"{type(exc).__name__}: {_short(exc)}"
    return ("pass", "") if valid else ("fail", "signature did not verify")


def check_dkim(raw: bytes, lookup: _Budget) -> tuple[DkimResult, ...]:
    """One result per DKIM-Signature (topmost first); () when there is none."""
    if not re.search(rb"(?im)^dkim-signature[ \t]*:", dmarc.header_block(raw)):
        return ()  # unsigned: not worth dkimpy's split of the whole message into lines
    try:
        verifier = dkim.DKIM(raw, minkey=1024)
    except Exception as exc:  # a message dkimpy cannot split into header and body
        return (DkimResult("permerror", None, None, None, None, f"message: {_short(exc)}"),)
    signatures = [v for k, v in verifier.headers if k.lower() == b"dkim-signature"]
    results = []
    for idx, value in enumerate(signatures):
        tags = _signature_tags(value)
        if tags is None:
            results.append(DkimResult("permerror", None, None, None, None, "malformed signature"))
            continue
        outcome: Any
        if idx >= MAX_SIGNATURES:
            outcome, reason = "policy", f"not verified: only the first {MAX_SIGNATURES} are"
        elif lookup.expired:
            outcome, reason = "temperror", "time limit reached"
        else:
            outcome, reason = _verify_one(verifier, idx, tags, lookup)
        results.append(
            DkimResult(
                outcome,
                _text(tags, b"d"),
                _text(tags, b"s"),
                _text(tags, b"a", 32),
                _text(tags, b"b", 12),
                reason,
            )
        )
    return tuple(results)


# --- ARC --------------------------------------------------------------------------------


def check_arc(raw: bytes, lookup: DnsLookup) -> ArcResult:
    """The ARC chain's validation (RFC 8617 §5.2) by dkimpy; `none` without ARC sets."""
    seals = re.findall(rb"(?im)^arc-seal[ \t]*:", dmarc.header_block(raw))
    if not seals:
        return ArcResult("none")
    if len(seals) > MAX_ARC_SETS:
        return ArcResult("fail", len(seals), f"more than {MAX_ARC_SETS} ARC sets")
    temporary: list[DnsLookupError] = []

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace").rstrip(".")
        try:
            records = lookup.txt(text)
        except DnsLookupError as exc:
            if exc.temporary:
                temporary.append(exc)
                raise dkim.DnsTimeoutError(str(exc)) from None
            return None
        return None if _key_problem(text, records[0]) else records[0].encode()

    try:
        cv, sets, reason = dkim.ARC(raw, minkey=1024).verify(dnsfunc=dnsfunc)
    except Exception as exc:  # dkimpy on hostile input: see the module docstring
        return ArcResult("fail", len(seals), f"{type(exc).__name__}: {_short(exc)}")
    length = len(sets) or len(seals)
    if cv == dkim.CV_Pass:
        return ArcResult("pass", length)
    if cv == dkim.CV_None:
        return ArcResult("none")
    if temporary:
        return ArcResult("temperror", length, f"key lookup: {temporary[0].outcome}")
    return ArcResult("fail", length, _short(Exception(reason)))


# --- all of it --------------------------------------------------------------------------


def authenticate(
    raw: bytes, envelope: AuthEnvelope, lookup: DnsLookup, *, deadline_seconds: float = 20.0
) -> AuthenticationResults:
    """SPF, DKIM, DMARC and ARC of one received message (rules: module docstring)."""
    budget = _Budget(lookup, time.monotonic() + deadline_seconds)
    spf_result = check_spf(envelope, budget)
    dkim_results = check_dkim(raw, budget)
    dmarc_result = dmarc.evaluate(raw, spf_result, dkim_results, budget)
    arc_result = check_arc(raw, budget)
    return AuthenticationResults(spf_result, dkim_results, dmarc_result, arc_result)

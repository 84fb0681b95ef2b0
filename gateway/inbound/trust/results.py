"""What authenticating a message found (SPF, each DKIM signature, DMARC, ARC), as values that
are stored with the message (`to_json` / `from_json`) and shown in it as one RFC 8601
`Authentication-Results:` header (`to_header`).

Every text that came from the message or from DNS (a d= domain, a reason quoting a library's
error) is put in the header as a token when it is one, else as a quoted-string with anything
outside printable ASCII replaced, and cut to a bounded length: a hostile signature must not
be able to write header syntax of its own into our header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

SpfOutcome = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]
DkimOutcome = Literal["pass", "fail", "policy", "neutral", "none", "temperror", "permerror"]
DmarcOutcome = Literal["pass", "fail", "none", "temperror", "permerror"]
# RFC 8617 defines none/pass/fail for `arc`; temperror is ours: a key that could not be
# fetched now must be retried, not read as a broken chain.
ArcOutcome = Literal["none", "pass", "fail", "temperror"]

JSON_VERSION = 1
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~]+")  # RFC 2045 token (RFC 8601 `value`)
_MAX_VALUE = 120  # characters of one property value in the header
_MAX_REASON = 60  # of a reason (the stored JSON keeps it whole): lines stay near 78
_LINE = 76  # fold before this column


@dataclass(frozen=True)
class SpfResult:
    result: SpfOutcome
    identity: Literal["mailfrom", "helo"]  # which SMTP identity was checked
    domain: str | None  # the domain checked; None when there was none to check
    reason: str = ""


@dataclass(frozen=True)
class DkimResult:
    """One DKIM-Signature, in the order of the message's header (topmost first)."""

    result: DkimOutcome
    domain: str | None  # d=
    selector: str | None  # s=
    algorithm: str | None  # a=
    signature: str | None = None  # the first characters of b= (RFC 6008 header.b)
    reason: str = ""


@dataclass(frozen=True)
class DmarcResult:
    result: DmarcOutcome
    from_domain: str | None  # the RFC 5322.From domain
    organisational_domain: str | None
    policy: str | None = None  # the policy that applies: p=, or sp= for a subdomain
    p: str | None = None
    sp: str | None = None
    spf_aligned: bool = False  # an SPF pass aligned with the From domain
    dkim_aligned: bool = False  # a DKIM pass aligned with the From domain
    reason: str = ""


@dataclass(frozen=True)
class ArcResult:
    result: ArcOutcome
    chain_length: int = 0
    reason: str = ""


@dataclass(frozen=True)
class AuthenticationResults:
    spf: SpfResult
    dkim: tuple[DkimResult, ...]
    dmarc: DmarcResult
    arc: ArcResult = field(default_factory=lambda: ArcResult("none"))

    @property
    def from_domain(self) -> str | None:
        return self.dmarc.from_domain

    @property
    def temporary(self) -> bool:
        """A DNS answer (or the time) was missing: the caller authenticates again later."""
        return "temperror" in (
            self.spf.result,
            self.dmarc.result,
            self.arc.result,
            *(d.result for d in self.dkim),
        )

    @property
    def authenticated(self) -> bool:
        """The From domain is proven: DMARC pass; or, when the domain publishes no usable
        DMARC record, an SPF or DKIM pass aligned with it (relaxed, by organisational
        domain). A permerror record counts as unpublished: it names no policy, and an
        aligned pass proves the domain all the same."""
        if self.dmarc.result == "pass":
            return True
        if self.dmarc.result in ("none", "permerror") and self.dmarc.from_domain:
            return self.dmarc.spf_aligned or self.dmarc.dkim_aligned
        return False

    def summary(self) -> str:
        """One line for a reason or a listing: each method's result, DMARC's policy and the
        From domain (e.g. "spf=pass dkim=fail dmarc=fail (p=reject) header.from=x.fr")."""
        dkim = ",".join(f"{d.result}({d.domain})" if d.domain else d.result for d in self.dkim)
        words = [f"spf={self.spf.result}", f"dkim={dkim or 'none'}", f"dmarc={self.dmarc.result}"]
        if self.dmarc.policy:
            words.append(f"(p={self.dmarc.policy})")
        if self.arc.result != "none":
            words.append(f"arc={self.arc.result}")
        if self.dmarc.from_domain:
            words.append(f"header.from={self.dmarc.from_domain}")
        return " ".join(words)

    # --- storage ------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        # Every field is a str, bool, int or None: a copy of each result's fields is what
        # dataclasses.asdict gives, without its deep copies (a third of a ms a message).
        return {
            "version": JSON_VERSION,
            "spf": dict(vars(self.spf)),
            "dkim": [dict(vars(d)) for d in self.dkim],
            "dmarc": dict(vars(self.dmarc)),
            "arc": dict(vars(self.arc)),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuthenticationResults:
        if data.get("version") != JSON_VERSION:
            raise ValueError(f"unknown authentication results version {data.get('version')!r}")
        return cls(
            spf=SpfResult(**data["spf"]),
            dkim=tuple(DkimResult(**d) for d in data["dkim"]),
            dmarc=DmarcResult(**data["dmarc"]),
            arc=ArcResult(**data["arc"]),
        )

    # --- the header ---------------------------------------------------------------------

    def to_header(self, authserv_id: str) -> str:
        """`Authentication-Results: <authserv-id>; spf=…; dkim=…; dmarc=…; arc=…`, one result
        per line, folded with CRLF and a tab (RFC 8601 §2.2); no line ending at the end."""
        results = [self._spf_tokens(), *self._dkim_tokens(), self._dmarc_tokens()]
        results.append(self._arc_tokens())
        lines = [f"Authentication-Results: {_value(authserv_id)};"]
        for index, tokens in enumerate(results):
            last = index == len(results) - 1
            lines.extend(_fold(tokens, "" if last else ";"))
        return "\r\n\t".join(lines)

    def _spf_tokens(self) -> list[str]:
        tokens = [f"spf={self.spf.result}", *_reason(self.spf.reason)]
        if self.spf.domain:
            tokens.append(f"smtp.{self.spf.identity}={_value(self.spf.domain)}")
        return tokens

    def _dkim_tokens(self) -> list[list[str]]:
        if not self.dkim:
            return [["dkim=none"]]
        entries = []
        for sig in self.dkim:
            tokens = [f"dkim={sig.result}", *_reason(sig.reason)]
            for prop, value in (
                ("header.d", sig.domain),
                ("header.s", sig.selector),
                ("header.a", sig.algorithm),
                ("header.b", sig.signature),
            ):
                if value:
                    tokens.append(f"{prop}={_value(value)}")
            entries.append(tokens)
        return entries

    def _dmarc_tokens(self) -> list[str]:
        d = self.dmarc
        tokens = [f"dmarc={d.result}", *_reason(d.reason)]
        policy = " ".join(f"{k}={v}" for k, v in (("p", d.p), ("sp", d.sp)) if v)
        if policy:
            tokens.append(f"({_comment(policy)})")
        if d.from_domain:
            tokens.append(f"header.from={_value(d.from_domain)}")
        return tokens

    def _arc_tokens(self) -> list[str]:
        tokens = [f"arc={self.arc.result}", *_reason(self.arc.reason)]
        if self.arc.chain_length:
            tokens.append(f"(chain of {self.arc.chain_length})")
        return tokens


def _clean(text: str, limit: int = _MAX_VALUE) -> str:
    printable = "".join(c if " " <= c <= "~" else "?" for c in text)
    return printable if len(printable) <= limit else printable[: limit - 3] + "..."


def _value(text: str, limit: int = _MAX_VALUE) -> str:
    """A property value or authserv-id: a token as is, anything else quoted."""
    cleaned = _clean(text, limit)
    if _TOKEN.fullmatch(cleaned):
        return cleaned
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> str:
    return re.sub(r"[()\\]", "", _clean(text))


def _reason(reason: str) -> list[str]:
    return [f"reason={_value(reason, _MAX_REASON)}"] if reason else []


def _fold(tokens: Sequence[str], end: str) -> list[str]:
    """The tokens of one result on lines of at most ~_LINE columns (a longer token alone)."""
    lines: list[str] = []
    current = ""
    for token in tokens:
        if current and len(current) + 1 + len(token) > _LINE - 8:
            lines.append(current)
            current = " " + token  # continuation of the same result: one more space in
        else:
            current = f"{current} {token}" if current else token
    lines.append(current + end)
    return lines

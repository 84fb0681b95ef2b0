"""Sender policy (issue 11, part 2): who may put documents into a company's folders.

Four kinds, set per company, with a cabinet default and a global default:

- `open`: anyone (the default; the gateway's behaviour before issue 11);
- `authenticated`: the From domain is authenticated: DMARC pass, or an SPF or DKIM pass
  aligned with it when the domain publishes no DMARC record (the caller works that out and
  passes a bool);
- `allow-list`: the From address is on the allow list;
- `allow-list+authenticated`: both.

What is matched is the address of the From header: it is what DMARC aligns on and what a
person reading the message sees. Plain `allow-list` trusts that header as written, and
anyone can write any From: a forger who knows a supplier's address passes it.
`allow-list+authenticated` closes that hole, since the From domain must then authenticate.

An allow-list entry is one of
- an address, `someone@supplier.fr`: that address only;
- a domain, `supplier.fr`: addresses at that domain, not at its subdomains;
- a wildcard, `*.supplier.fr`: addresses at any subdomain of it (`mail.supplier.fr`,
  `eu.mail.supplier.fr`), NOT at supplier.fr itself (as in DNS and TLS certificates; list
  both `supplier.fr` and `*.supplier.fr` to admit both).
Matching ignores case; domains are compared in their ASCII (IDNA) form, so `école.fr` and
`xn--cole-9oa.fr` are the same entry. A domain that is a public suffix (`fr`, `co.uk`,
`gouv.fr`) is refused: it would admit every domain under it.

The levels (global, cabinet, company, and the partners a company is connected to) combine
in `combine_levels`: the kind comes from the most specific level that sets one; the allow
lists add up.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import idna

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList

GLOBAL_DEFAULT = "global default"
_EXAMPLES = "e.g. someone@supplier.fr, supplier.fr or *.supplier.fr"


class PolicyKind(StrEnum):
    OPEN = "open"
    AUTHENTICATED = "authenticated"
    ALLOW_LIST = "allow-list"
    ALLOW_LIST_AUTHENTICATED = "allow-list+authenticated"

    @property
    def needs_list(self) -> bool:
        return self in (PolicyKind.ALLOW_LIST, PolicyKind.ALLOW_LIST_AUTHENTICATED)

    @property
    def needs_authentication(self) -> bool:
        return self in (PolicyKind.AUTHENTICATED, PolicyKind.ALLOW_LIST_AUTHENTICATED)


class SenderPolicyError(GatewayError, ValueError):
    """A policy kind or an allow-list entry a person must correct; the message says how."""


def parse_kind(text: str) -> PolicyKind:
    try:
        return PolicyKind(text.strip().lower())
    except ValueError:
        known = ", ".join(k.value for k in PolicyKind)
        raise SenderPolicyError(f"unknown sender policy {text!r}; one of {known}") from None


@functools.cache
def public_suffixes() -> PublicSuffixList:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()  # the list shipped in the package, parsed once per process


def _ascii_domain(text: str) -> str | None:
    """`text` as a lower-case ASCII domain name (IDNA 2008, UTS #46 mapping), or None."""
    text = text.strip().rstrip(".")
    try:
        ascii_name = idna.encode(text, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError):
        return None
    if ascii_name.rpartition(".")[2].isdigit() or len(ascii_name) > 253:
        return None  # an IP address
    return ascii_name


def _domain_entry(text: str, entry: str) -> str:
    domain = _ascii_domain(text)
    if domain is None or "." not in domain:
        raise SenderPolicyError(f"allow-list entry {entry!r}: {text!r} is not a domain name")
    return domain


def parse_allow_entry(text: str) -> str:
    """The entry as stored and matched: `Someone@Supplier.FR` → `someone@supplier.fr`,
    `*.École.fr` → `*.xn--cole-9oa.fr`; SenderPolicyError (a GatewayError) otherwise."""
    entry = text.strip()
    if not entry or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in entry):
        raise SenderPolicyError(
            f"allow-list entry {text!r} is empty or has spaces; an address, a domain or "
            f"*.domain, {_EXAMPLES}"
        )
    if "@" in entry:
        local, _, domain_text = entry.rpartition("@")
        if local in {"", "*"}:
            raise SenderPolicyError(
                f"allow-list entry {text!r}: to admit a whole domain write the domain alone "
                f"({domain_text or 'supplier.fr'}), without '@'"
            )
        if local.startswith("<") or domain_text.endswith(">") or "*" in entry:
            raise SenderPolicyError(
                f"allow-list entry {text!r}: an address is written plain, without <> or *; "
                f"{_EXAMPLES}"
            )
        domain = _domain_entry(domain_text, text)
        return f"{local.lower()}@{domain}"
    wildcard = entry.startswith("*.")
    name = entry[2:] if wildcard else entry
    if "*" in name:
        raise SenderPolicyError(
            f"allow-list entry {text!r}: '*' only as the first label of a domain, {_EXAMPLES}"
        )
    ascii_name = _ascii_domain(name)
    if ascii_name is not None and public_suffixes().is_public(ascii_name):
        raise SenderPolicyError(
            f"allow-list entry {text!r}: {ascii_name} is a public suffix, under which anyone "
            "registers domains; name the sender's own domain (e.g. supplier.fr)"
        )
    domain = _domain_entry(name, text)
    return f"*.{domain}" if wildcard else domain


def parse_allow_entries(entries: Iterable[str]) -> tuple[str, ...]:
    """Each entry parsed, in order, without repeats."""
    return tuple(dict.fromkeys(parse_allow_entry(e) for e in entries))


def normalise_from(from_address: str | None) -> tuple[str, str] | None:
    """The From address as matched: (local part lower-cased, ASCII domain), or None."""
    if not from_address:
        return None
    text = from_address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    local, at, domain_text = text.rpartition("@")
    if not at or not local or any(c.isspace() for c in text):
        return None
    domain = _ascii_domain(domain_text)
    return None if domain is None or "." not in domain else (local.lower(), domain)


@dataclass(frozen=True)
class SenderPolicy:
    """A policy in force: its kind and its allow list (entries as `parse_allow_entry`
    returns them). The From address matched can be forged: see the module's docstring."""

    kind: PolicyKind
    allowed: tuple[str, ...] = ()

    def match(self, from_address: str | None) -> str | None:
        """The allow-list entry `from_address` matches, or None."""
        parts = normalise_from(from_address)
        if parts is None:
            return None
        local, domain = parts
        wanted = {f"{local}@{domain}", domain}
        labels = domain.split(".")
        wanted.update("*." + ".".join(labels[i:]) for i in range(1, len(labels) - 1))
        return next((entry for entry in self.allowed if entry in wanted), None)

    def allows(self, from_address: str | None) -> bool:
        return self.match(from_address) is not None


def _shown(text: str, limit: int = 254) -> str:
    """An address from the message as a reason may quote it: printable, bounded."""
    printable = "".join(c if c.isprintable() else "?" for c in text)
    return printable if len(printable) <= limit else printable[: limit - 1] + "…"


@dataclass(frozen=True)
class PolicyDecision:
    passed: bool
    reason: str  # which check, what result: shown with a quarantined message


def decide(
    policy: SenderPolicy, from_address: str | None, authenticated: bool, authentication: str
) -> PolicyDecision:
    """Whether a message passes `policy`. `authenticated`: DMARC pass, or an aligned SPF or
    DKIM pass where the From domain publishes no DMARC; `authentication`: the results in
    short ("dmarc=fail (p=reject) header.from=example.com"), quoted in the reason."""
    head = f"sender policy {policy.kind}"
    if policy.kind is PolicyKind.OPEN:
        return PolicyDecision(True, f"{head}: every sender is accepted")
    auth = f"authenticated ({authentication})" if authentication else "authenticated"
    sender = _shown(from_address) if from_address else "(no From address)"
    entry = policy.match(from_address) if policy.kind.needs_list else None
    listed = f"{sender} is on the allow list ({entry})"
    unlisted = f"{sender} is not on the allow list"
    if policy.kind is PolicyKind.AUTHENTICATED:
        return PolicyDecision(authenticated, f"{head}: {'' if authenticated else 'not '}{auth}")
    if policy.kind is PolicyKind.ALLOW_LIST:
        return PolicyDecision(entry is not None, f"{head}: {listed if entry else unlisted}")
    if entry is None:
        both = f"{unlisted}; it is {'' if authenticated else 'not '}{auth}"
        return PolicyDecision(False, f"{head}: {both}")
    verdict = f"{listed} {'and' if authenticated else 'but not'} {auth}"
    return PolicyDecision(authenticated, f"{head}: {verdict}")


@dataclass(frozen=True)
class PolicyLevel:
    """One level's own setting: `source` names it ("company dupont-maconnerie", "cabinet
    aecconseil", "partner meg", "global default"); `kind` None: it inherits the kind."""

    source: str
    kind: PolicyKind | None
    allowed: tuple[str, ...] = ()


def combine_levels(levels: Sequence[PolicyLevel]) -> tuple[SenderPolicy, str]:
    """The policy in force over `levels`, most specific last (global default first): the
    kind of the last level that sets one, and where it comes from; every level's entries."""
    source, kind = next(
        ((lv.source, lv.kind) for lv in reversed(levels) if lv.kind is not None),
        (GLOBAL_DEFAULT, PolicyKind.OPEN),
    )
    allowed = dict.fromkeys(entry for lv in levels for entry in lv.allowed)
    return SenderPolicy(kind, tuple(allowed)), source

"""The one address grammar (R1, R2, R6, R7).

Every part of the gateway that asks "what is this address?" asks here: RCPT checks, filing,
the bot mailbox, and (later) the outbound relay. Parsing is syntactic; whether the company
or cabinet exists is a question for the directory (`gateway.storage.directory`).

Grammar of a local part on a served domain, matched case-insensitively:

    postmaster | abuse                 -> the postmaster mailbox (RFC 5321 4.5.1 requires it)
    Postmaster (no domain at all)      -> the postmaster mailbox too (RFC 5321 4.5.1)
    <journal>+<company>                -> collection address: files into the journal folder
    <company>                          -> bare company address: files into "A classer"
    <partner bot identity>             -> e.g. myunisoft+<cabinet>, quickbooks+<company> (R6)
    <partner alias>                    -> e.g. myunisoft+<cabinet>+67-45-ach, meg+<name>
    bounce+<delivery>-<tag>            -> a bounce of one of our deliveries (VERP, R17)
    anything else                      -> unknown
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from gateway.routing.partners import Partner, PartnerRegistry
from gateway.routing.slugs import DOMAIN_RE, is_slug

POSTMASTER_LOCAL_PARTS = frozenset({"postmaster", "abuse"})
BARE_POSTMASTER = "postmaster"  # RCPT TO:<Postmaster>, case-insensitive (RFC 5321 4.5.1)
BOUNCE_PREFIX = "bounce"  # the VERP envelope senders of outbound deliveries
# Printable ASCII dot-atom characters of RFC 5322, no quoting: nobody needs a quoted local
# part to reach a collection address, and refusing them removes a class of injection.
_LOCAL_RE = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}")


class AddressKind(StrEnum):
    COLLECTION = "collection"
    COMPANY = "company"
    BOT = "bot"
    PARTNER_ALIAS = "partner_alias"
    POSTMASTER = "postmaster"
    BOUNCE = "bounce"  # bounce+<delivery>-<tag>: where partners' bounces come back (R17)
    FOREIGN = "foreign"
    UNKNOWN = "unknown"
    INVALID = "invalid"


@dataclass(frozen=True)
class Address:
    kind: AddressKind
    address: str  # normalised: lower-case, no angle brackets
    local: str = ""
    domain: str = ""
    journal: str | None = None
    company: str | None = None
    cabinet: str | None = None
    partner: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    problem: str | None = None  # why it is unknown/invalid, in words for the sender

    @property
    def files_into_ged(self) -> bool:
        return self.kind in (AddressKind.COLLECTION, AddressKind.COMPANY)

    @property
    def is_bounce(self) -> bool:
        return self.kind is AddressKind.BOUNCE

    @property
    def goes_to_bot_mailbox(self) -> bool:
        return self.kind in (AddressKind.BOT, AddressKind.PARTNER_ALIAS, AddressKind.POSTMASTER)


def split_address(address: str) -> tuple[str, str] | None:
    """`Local@Domain` → (local, domain) lower-cased; None when it is not a plain address."""
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if "@" not in text or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        return None
    local, _, domain = text.rpartition("@")
    local, domain = local.lower(), domain.lower().rstrip(".")
    if not _LOCAL_RE.fullmatch(local) or local.startswith(".") or local.endswith("."):
        return None
    if ".." in local or not DOMAIN_RE.fullmatch(domain):
        return None
    return local, domain


def _is_bare_postmaster(address: str) -> bool:
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text.lower() == BARE_POSTMASTER


class AddressGrammar:
    def __init__(
        self,
        served_domains: tuple[str, ...] | list[str],
        journals: Mapping[str, str],
        partners: PartnerRegistry,
    ) -> None:
        self.served_domains = frozenset(d.lower() for d in served_domains)
        self.journals = {j.lower(): folder for j, folder in journals.items()}
        self.partners = partners

    def is_served(self, domain: str) -> bool:
        return domain.lower().rstrip(".") in self.served_domains

    def reserved_slug_problem(self, slug: str) -> str | None:
        """A company slug must not shadow a journal, a partner or the postmaster."""
        if slug in self.journals:
            return f"{slug!r} is a journal name; a company with that slug would be unreachable"
        if slug in POSTMASTER_LOCAL_PARTS or slug == BOUNCE_PREFIX:
            return f"{slug!r} is reserved for the gateway's own mail"
        if self.partners.owning_prefix(slug) is not None:
            return f"{slug!r} is a partner prefix"
        return None

    def parse(self, address: str) -> Address:
        parts = split_address(address)
        if parts is None and _is_bare_postmaster(address):
            # RFC 5321 4.5.1: "<Postmaster>" with no domain must be accepted; it reaches
            # the same mailbox as postmaster@ any domain of ours.
            return Address(AddressKind.POSTMASTER, BARE_POSTMASTER, BARE_POSTMASTER)
        if parts is None:
            return Address(AddressKind.INVALID, address.strip(), problem="not a valid address")
        local, domain = parts
        normalised = f"{local}@{domain}"
        if domain not in self.served_domains:
            return Address(AddressKind.FOREIGN, normalised, local, domain)
        if local in POSTMASTER_LOCAL_PARTS:
            return Address(AddressKind.POSTMASTER, normalised, local, domain)
        labels = local.split("+")
        head = labels[0]
        if head == BOUNCE_PREFIX and len(labels) == 2:
            # Whether the tag is genuine is for the bounce addresses' HMAC to say.
            return Address(AddressKind.BOUNCE, normalised, local, domain)
        if head in self.journals:
            if len(labels) == 2 and is_slug(labels[1]):
                return Address(
                    AddressKind.COLLECTION,
                    normalised,
                    local,
                    domain,
                    journal=head,
                    company=labels[1],
                )
            return Address(
                AddressKind.UNKNOWN,
                normalised,
                local,
                domain,
                problem=f"expected {head}+<company>@{domain}",
            )
        partner = self.partners.owning_prefix(head)
        if partner is not None:
            return self._partner_address(partner, normalised, local, domain)
        if len(labels) == 1 and is_slug(local):
            return Address(AddressKind.COMPANY, normalised, local, domain, company=local)
        return Address(AddressKind.UNKNOWN, normalised, local, domain, problem="no such address")

    def _partner_address(
        self, partner: Partner, normalised: str, local: str, domain: str
    ) -> Address:
        if partner.bot_identity is not None:
            values = partner.bot_identity.match(local)
            if values is not None:
                return Address(
                    AddressKind.BOT,
                    normalised,
                    local,
                    domain,
                    company=values.get("company"),
                    cabinet=values.get("cabinet"),
                    partner=partner.name,
                    fields=values,
                )
        for form in partner.aliases:
            values = form.pattern.match(local)
            if values is not None:
                return Address(
                    AddressKind.PARTNER_ALIAS,
                    normalised,
                    local,
                    domain,
                    cabinet=values.get("cabinet"),
                    partner=partner.name,
                    fields=values,
                )
        expected = [f.pattern.source for f in partner.aliases]
        if partner.bot_identity is not None:
            expected.insert(0, partner.bot_identity.source)
        return Address(
            AddressKind.UNKNOWN,
            normalised,
            local,
            domain,
            partner=partner.name,
            problem=f"not a {partner.display_name} address; expected "
            + " or ".join(f"{e}@{domain}" for e in expected),
        )

"""Parsing what a cabinet types into the "connection" form (spec: partners.md).

When a cabinet connects one of its companies to a partner tool, it enters one address. For a
partner with aliases (MyUnisoft, MEG, QuickBooks) that is an alias on one of the gateway's own
domains, which stands for the partner's real inbox (a registry template) and, for bot
partners, for the identity the documents are sent from (R16). For an external partner
(JeFacture, Upflow) it is the partner's own address, used as is.

The form must not save anything this parser refuses, so every refusal is a
`ConnectionAddressError` whose message an accountant can act on: what is wrong, and an example
of a right address. Matching is case-insensitive on our domains (R1).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gateway.errors import GatewayError
from gateway.routing.addresses import AddressGrammar, AddressKind, split_address
from gateway.routing.partners import AliasForm, LocalPattern, Partner, RegistryError
from gateway.routing.slugs import DOMAIN_RE, slug_problem

# Lenient stand-ins for each placeholder type, used only to find which part of a near-miss
# alias is wrong; hyphen-separated types (digits, code) must not swallow the hyphens.
_LAX_FIELD_TYPES: dict[str, str] = {
    "slug": r"[^+@]*",
    "word": r"[^+@]*",
    "digits": r"[^+@-]*",
    "code": r"[^+@-]*",
}
_MARK = "\x00"  # cannot occur in a registry pattern: splits a rendered pattern into its parts

# Values used to show an example of a right address; by (field, type), then by type.
_EXAMPLE_BY_FIELD: dict[tuple[str, str], str] = {
    ("cabinet", "slug"): "aecconseil",
    ("company", "slug"): "dupont-maconnerie",
    ("name", "slug"): "macon-dupont",
    ("schema", "digits"): "67",
    ("company", "digits"): "45",
}
_EXAMPLE_BY_TYPE: dict[str, str] = {
    "slug": "dupont-maconnerie",
    "digits": "45",
    "code": "ACH",
    "word": "factures",
}
# Control characters (CR, LF, NUL, tab…), invisible format characters and the Unicode line
# and paragraph separators: nothing a person types into an address field on purpose.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
_MAX_LOCAL_LENGTH = 64  # RFC 5321 4.5.3.1.1


class ConnectionAddressError(GatewayError, ValueError):
    """Refused input; the message says what is wrong and what would be right, in plain words."""


@dataclass(frozen=True)
class ConnectionTarget:
    """Where a connection's documents go and whom they come from.

    `sender` is None when the gateway's configured sender is used ([outbound] sender).
    """

    partner: str
    entered: str
    destination: str
    sender: str | None
    fields: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)


def parse_connection_address(
    address: str, partner_name: str, grammar: AddressGrammar
) -> ConnectionTarget:
    """Turn the address a cabinet entered for `partner_name` into a `ConnectionTarget`.

    Raises `ConnectionAddressError` for anything the form must not save.
    """
    partner = _partner(partner_name, grammar)
    how = _how_to(partner, grammar)
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if any(unicodedata.category(c) in _INVISIBLE_CATEGORIES for c in text):
        # Header/SMTP injection: refuse, and never echo the text back.
        raise ConnectionAddressError(
            "The address contains a line break or another invisible control character; "
            f"it must be a single address on one line. {how}"
        )
    if not text:
        raise ConnectionAddressError(f"No address was entered. {how}")
    if "@" not in text:
        raise ConnectionAddressError(f"{text!r} is not an email address (there is no @). {how}")
    if any(sep in text for sep in ",;"):
        raise ConnectionAddressError(f"{text!r} looks like several addresses; enter one. {how}")
    local, _, domain = text.rpartition("@")
    domain = domain.lower().rstrip(".")
    if not local or not domain or not DOMAIN_RE.fullmatch(domain):
        if not local:
            what = "there is nothing before the @"
        elif not domain:
            what = "there is nothing after the @"
        else:
            what = f"{domain!r} is not a domain"
        raise ConnectionAddressError(f"{text!r} is not a valid email address: {what}. {how}")
    if grammar.is_served(domain):
        if not partner.aliases:
            raise _loops_back(text, partner, grammar)
        return _parse_alias(text, local.lower(), domain, partner, grammar)
    if partner.aliases:
        raise ConnectionAddressError(
            f"{text!r} is not on the gateway's domains ({_served_list(grammar)}). {how} "
            f"The gateway works out the {partner.display_name} address from that alias."
        )
    return _parse_external(text, local, domain, partner, grammar)


def _partner(partner_name: str, grammar: AddressGrammar) -> Partner:
    """The chosen partner; an unknown name is refused with the list of known ones."""
    partner = grammar.partners.get(partner_name.strip())
    if partner is None:
        known = ", ".join(f"{p.name} ({p.display_name})" for p in grammar.partners.partners)
        raise ConnectionAddressError(f"Unknown partner {partner_name!r}. Known partners: {known}.")
    return partner


def _parse_external(
    text: str, local: str, domain: str, partner: Partner, grammar: AddressGrammar
) -> ConnectionTarget:
    """External partners: the entered address is the destination, once proven a plain one.

    The local part keeps its case: only the domain is case-insensitive off our domains.
    """
    if split_address(text) is None:
        if any(c.isspace() for c in text):
            problem = "it contains a space (an email address has none)"
        elif local.startswith(".") or local.endswith(".") or ".." in local:
            problem = "the part before the @ may not start or end with a dot, or have two in a row"
        elif len(local) > _MAX_LOCAL_LENGTH:
            problem = f"the part before the @ is longer than {_MAX_LOCAL_LENGTH} characters"
        else:
            problem = "it contains characters an email address cannot have (accents, quotes…)"
        raise ConnectionAddressError(
            f"{text!r} is not a valid email address: {problem}. {_external_hint(partner, grammar)}"
        )
    entered = f"{local}@{domain}"
    return ConnectionTarget(partner.name, entered, entered, None, MappingProxyType({}))


def _parse_alias(
    text: str, local: str, domain: str, partner: Partner, grammar: AddressGrammar
) -> ConnectionTarget:
    """Partners with aliases: match the entered local part (lower-cased, R1) to an alias."""
    head = local.split("+", 1)[0]
    owner = grammar.partners.owning_prefix(head)
    expected = _expected_forms(partner, domain)
    example = _example_address(partner, grammar, domain)
    if owner is None or owner.name != partner.name:
        if any(c.isspace() for c in local):
            raise _space_error(text, expected, example)
        raise _not_this_partner(text, local, domain, owner, partner, grammar, expected, example)
    for form in partner.aliases:
        values = form.pattern.match(local)
        if values is not None:
            return _target(text, local, domain, partner, form, values, grammar, example)
    if partner.bot_identity is not None and partner.bot_identity.match(local) is not None:
        raise ConnectionAddressError(
            f"{text!r} is the {partner.display_name} bot identity (the sender of the documents), "
            f"not a connection alias. Expected {expected}, for example {example}."
        )
    for form in partner.aliases:
        problem = _field_problem(form.pattern, local)
        if problem is not None:
            raise ConnectionAddressError(
                f"{text!r} is not a valid {partner.display_name} connection alias: {problem}. "
                f"Expected {expected}, for example {example}."
            )
    if any(c.isspace() for c in local):
        raise _space_error(text, expected, example)
    raise ConnectionAddressError(
        f"{text!r} is not a {partner.display_name} connection alias. "
        f"Expected {expected}, for example {example}."
    )


def _target(
    text: str,
    local: str,
    domain: str,
    partner: Partner,
    form: AliasForm,
    values: dict[str, str],
    grammar: AddressGrammar,
    example: str,
) -> ConnectionTarget:
    """Build the target of a matched alias, refusing what SMTP would refuse anyway."""
    if len(local) > _MAX_LOCAL_LENGTH:
        raise ConnectionAddressError(
            f"{text!r} is too long: the part before the @ may have at most "
            f"{_MAX_LOCAL_LENGTH} characters. Use a shorter name, for example {example}."
        )
    try:
        destination = form.destination.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise RegistryError(
            f"partner.{partner.name}: destination {form.destination!r} cannot be filled: {exc}"
        ) from exc
    parts = split_address(destination)
    if parts is None or grammar.is_served(parts[1]):
        # A registry mistake, not the cabinet's: a served destination would loop back.
        raise RegistryError(
            f"partner.{partner.name}: destination {destination!r} is not a valid outside address"
        )
    sender: str | None = None
    if partner.sender == "bot":
        if partner.bot_identity is None:
            raise RegistryError(f"partner.{partner.name}: sender = 'bot' needs a bot_identity")
        try:
            sender = f"{partner.bot_identity.render(values)}@{domain}"
        except KeyError as exc:
            raise RegistryError(
                f"partner.{partner.name}: bot_identity {partner.bot_identity.source!r} uses "
                f"{exc}, which alias {form.pattern.source!r} does not give"
            ) from exc
    return ConnectionTarget(
        partner=partner.name,
        entered=f"{local}@{domain}",
        destination=destination,
        sender=sender,
        fields=MappingProxyType(dict(values)),
    )


def _field_problem(pattern: LocalPattern, local: str) -> str | None:
    """Which part of a near-miss alias is wrong, in words; None if it is not a near miss."""
    lax = _lax_regex(pattern).fullmatch(local)
    if lax is None:
        return None
    digit_fields = [name for name, kind in pattern.fields if kind == "digits"]
    for name, kind in pattern.fields:
        value = lax.group(name)
        if kind == "slug":
            problem = slug_problem(value, name)
            if problem is not None:
                return problem
            continue
        if _single_field(name, kind).match(value) is not None:
            continue
        if not value:
            return f"the {name} part is missing"
        if kind == "digits":
            if value.isascii() and value.isdigit():
                return f"the {name} id {value!r} is too long (at most 12 digits)"
            return (
                f"the {name} id {value!r} is not a number; the {_join(digit_fields)} "
                f"{'ids are numbers' if len(digit_fields) > 1 else 'id is a number'} "
                "(digits only)"
            )
        if kind == "code":
            return f"the {name} code {value.upper()!r} must be letters only (at most 12), e.g. ACH"
        return (
            f"the {name} part {value!r} may contain only lower-case letters, digits, dots, "
            "hyphens and underscores"
        )
    return None


def _lax_regex(pattern: LocalPattern) -> re.Pattern[str]:
    """The pattern with each placeholder loosened, to locate a wrong part by its position."""
    marked = pattern.render({name: f"{_MARK}{name}{_MARK}" for name, _ in pattern.fields})
    kinds = dict(pattern.fields)
    pieces = marked.split(_MARK)  # literal, field, literal, field, …, literal
    regex = "".join(
        f"(?P<{piece}>{_LAX_FIELD_TYPES[kinds[piece]]})" if i % 2 else re.escape(piece)
        for i, piece in enumerate(pieces)
    )
    return re.compile(regex)


def _single_field(name: str, kind: str) -> LocalPattern:
    """The registry's own check for one placeholder type, so both agree on what is valid."""
    return LocalPattern.compile(f"{{{name}:{kind}}}", "connection form")


def _not_this_partner(
    text: str,
    local: str,
    domain: str,
    owner: Partner | None,
    partner: Partner,
    grammar: AddressGrammar,
    expected: str,
    example: str,
) -> ConnectionAddressError:
    """Refusal for an address on our domain that is not one of this partner's aliases."""
    hint = f"To connect {partner.display_name}, enter {expected}, for example {example}."
    if owner is not None:
        if owner.bot_identity is not None and owner.bot_identity.match(local) is not None:
            what = f"the {owner.display_name} bot identity"
        elif any(f.pattern.match(local) is not None for f in owner.aliases):
            what = f"a {owner.display_name} alias"
        else:
            what = f"an address reserved for {owner.display_name}"
        return ConnectionAddressError(
            f"{text!r} is {what}, not a {partner.display_name} alias. {hint} "
            f"(If you meant to connect {owner.display_name}, choose that partner instead.)"
        )
    own = _describe_own(f"{local}@{domain}", grammar)
    if own is not None:
        return ConnectionAddressError(
            f"{text!r} is not a {partner.display_name} alias: it is {own}, so documents sent "
            f"there would loop back into the gateway. {hint}"
        )
    return ConnectionAddressError(f"{text!r} is not a {partner.display_name} alias. {hint}")


def _loops_back(text: str, partner: Partner, grammar: AddressGrammar) -> ConnectionAddressError:
    """Refusal for an external partner given one of our own addresses (R7: no loops)."""
    own = _describe_own(text.lower(), grammar) or "an address of the gateway"
    return ConnectionAddressError(
        f"{text!r} is on the gateway's own domain ({own}): documents sent there would loop "
        f"back into the gateway instead of reaching {partner.display_name}. "
        f"{_external_hint(partner, grammar)}"
    )


def _describe_own(address: str, grammar: AddressGrammar) -> str | None:
    """What an address on our domain is, in words; None when it is nothing in particular."""
    parsed = grammar.parse(address)
    owner = grammar.partners.get(parsed.partner) if parsed.partner else None
    owner_name = owner.display_name if owner is not None else parsed.partner
    descriptions: dict[AddressKind, str] = {
        AddressKind.COLLECTION: "a collection address of the gateway",
        AddressKind.COMPANY: "a collection address of the gateway",
        AddressKind.POSTMASTER: "the gateway's postmaster address",
        AddressKind.BOT: f"the {owner_name} bot identity",
        AddressKind.PARTNER_ALIAS: f"a {owner_name} alias",
    }
    return descriptions.get(parsed.kind)


def _space_error(text: str, expected: str, example: str) -> ConnectionAddressError:
    return ConnectionAddressError(
        f"{text!r} contains a space; an email address has none. "
        f"Expected {expected}, for example {example}."
    )


def _external_hint(partner: Partner, grammar: AddressGrammar) -> str:
    """External partners: the right address is theirs, so say where to copy it from."""
    return (
        f"Copy the collection address shown in {partner.display_name}'s settings: an address on "
        f"{partner.display_name}'s own domain, not on {_served_list(grammar)} (for JeFacture.com "
        "it looks like factures-xyz@jefacture.com)."
    )


def _how_to(partner: Partner, grammar: AddressGrammar) -> str:
    """What a right address looks like for this partner, as a sentence ending each refusal."""
    if not partner.aliases:
        return _external_hint(partner, grammar)
    domain = _example_domain(grammar)
    return (
        f"For {partner.display_name}, enter {_expected_forms(partner, domain)}, for example "
        f"{_example_address(partner, grammar)}."
    )


def _expected_forms(partner: Partner, domain: str) -> str:
    """The alias forms of a partner, as `meg+<name>@welyb.fr or meg+achats+<name>@…`."""
    forms = [
        f"{form.pattern.render({n: f'<{n}>' for n, _ in form.pattern.fields})}@{domain}"
        for form in partner.aliases
    ]
    return " or ".join(forms)


def _example_address(partner: Partner, grammar: AddressGrammar, domain: str | None = None) -> str:
    """A right alias for this partner, shown in every refusal.

    The last alias form is the plainest: the registry lists specific forms first.
    """
    form = partner.aliases[-1]
    values: dict[str, str] = {}
    for name, kind in form.pattern.fields:
        if kind == "code" and partner.journal:
            values[name] = partner.journal
        else:
            values[name] = _EXAMPLE_BY_FIELD.get((name, kind), _EXAMPLE_BY_TYPE[kind])
    return f"{form.pattern.render(values)}@{domain or _example_domain(grammar)}"


def _example_domain(grammar: AddressGrammar) -> str:
    return min(grammar.served_domains) if grammar.served_domains else "example.fr"


def _served_list(grammar: AddressGrammar) -> str:
    return _join(sorted(grammar.served_domains), "or")


def _join(words: list[str], conjunction: str = "and") -> str:
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} {conjunction} {words[-1]}"

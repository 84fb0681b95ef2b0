"""The grammar of a sender's address (MAIL FROM's reverse path): RFC 5321 4.1.2, with the
UTF-8 of RFC 6531 when the client asked for SMTPUTF8.

It is deliberately wider than the grammar of our own addresses (`gateway.routing.addresses`):
a sender we refuse bounces its mail, so every valid reverse path is taken, as Postfix takes
it — local parts over 64 octets (bulk senders' bounce addresses embed whole addresses),
quoted local parts, address literals, underscores in domain labels (Postfix accepts them;
they are common in real host names). The one bound is the 256-octet path (RFC 5321
4.5.3.1.3). Control characters are never part of an address.
"""

from __future__ import annotations

import ipaddress
import re

PATH_MAX_OCTETS = 256  # "<" mailbox ">" (RFC 5321 4.5.3.1.3)
DOMAIN_MAX_OCTETS = 255  # RFC 5321 4.5.3.1.2
LABEL_MAX_OCTETS = 63

# RFC 5322 atext; with SMTPUTF8 also any non-ASCII character (RFC 6531 3.3).
_ATEXT = r"\-A-Za-z0-9!#$%&'*+/=?^_`{|}~"  # the hyphen escaped: classes are built on it
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_DOT_STRING_UTF8 = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+(?:\.[{_ATEXT}\u0080-\U0010ffff]+)*")
# qtextSMTP (%d32-33 / %d35-91 / %d93-126) or quoted-pairSMTP (backslash %d32-126).
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"')
_QUOTED_UTF8 = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"')
# A label: letters, digits, hyphens and underscores, not starting or ending with a hyphen.
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?")
_LABEL_UTF8 = re.compile(r"[\w\u0080-\U0010ffff](?:[\w\u0080-\U0010ffff-]*[\w\u0080-\U0010ffff])?")
# General-address-literal: Standardized-tag ":" 1*dcontent (%d33-90 / %d94-126).
_GENERAL_LITERAL = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control_characters(text: str) -> bool:
    """NUL, CR, LF, the other C0 controls or DEL: never in a command's argument."""
    return _CONTROL.search(text) is not None


def is_reverse_path(address: str, utf8: bool = False) -> bool:
    """Whether `address` (without its angle brackets; "" is the null sender) is a valid
    reverse path. `utf8`: the client asked for SMTPUTF8 on a server that offers it."""
    if address == "":
        return True  # the null sender of bounces (RFC 5321 4.5.5)
    if has_control_characters(address) or len(address.encode()) + 2 > PATH_MAX_OCTETS:
        return False
    if not utf8 and not address.isascii():
        return False
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return False
    return _is_local_part(local, utf8) and (_is_domain(domain, utf8) or _is_literal(domain))


def _is_local_part(local: str, utf8: bool) -> bool:
    dot_string, quoted = (_DOT_STRING_UTF8, _QUOTED_UTF8) if utf8 else (_DOT_STRING, _QUOTED)
    return dot_string.fullmatch(local) is not None or quoted.fullmatch(local) is not None


def _is_domain(domain: str, utf8: bool) -> bool:
    domain = domain.removesuffix(".")  # a trailing root dot, which some clients send
    if not domain or len(domain.encode()) > DOMAIN_MAX_OCTETS:
        return False
    label = _LABEL_UTF8 if utf8 else _LABEL
    return all(
        len(part.encode()) <= LABEL_MAX_OCTETS and label.fullmatch(part) is not None
        for part in domain.split(".")
    )


def _is_literal(domain: str) -> bool:
    if not (domain.startswith("[") and domain.endswith("]")):
        return False
    inside = domain[1:-1]
    if inside[:5].lower() == "ipv6:":
        return _is_ip(inside[5:], ipaddress.IPv6Address)
    if _is_ip(inside, ipaddress.IPv4Address):
        return True
    return _GENERAL_LITERAL.fullmatch(inside) is not None  # another tag (RFC 5321 4.1.3)


def _is_ip(text: str, kind: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True

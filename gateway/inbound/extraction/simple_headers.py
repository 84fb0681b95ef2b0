"""Headers in their plainest form, read without the email package's RFC 5322 parser.

Parsing one header with `email.headerregistry` costs 40 µs (a subject) to 150 µs (a From),
and nearly every message brings four unique ones (From, Subject, and the Content-Type and
Content-Disposition that name its attachment): a quarter of extraction's CPU. Most are
plain: an address, a line of printable ASCII, `type/subtype; name="value"`. For a value that
matches one of the strict forms below, :func:`simple_header` builds what the header
registry would (the same string, parameters, addresses and no defect) by reading it with a
regular expression; anything else (encoded words, comments, RFC 2231 parameters, 8-bit
bytes, obsolete syntax) returns None and goes through the email package as before.
tests/test_simple_headers.py holds every attribute equal to the registry's on generated
values and on every header of the test corpus.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from email.headerregistry import Address, Group
from types import MappingProxyType
from typing import Final

# An RFC 2045 token, less "*" and "'" (which RFC 2231 gives a meaning in parameters).
_TOKEN: Final = r"[A-Za-z0-9!#$%&+.^_`|~-]+"
_QUOTED: Final = r'"[ !#-\[\]-~]+"'  # printable ASCII, no quote or backslash
_PARAMETERS: Final = rf"((?:; ?{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))*)"
_CONTENT_TYPE_RE: Final = re.compile(rf"({_TOKEN})/({_TOKEN}){_PARAMETERS}")
_DISPOSITION_RE: Final = re.compile(rf"({_TOKEN}){_PARAMETERS}")
_PARAMETER_RE: Final = re.compile(rf"; ?({_TOKEN})=({_TOKEN}|{_QUOTED})")
_UNSTRUCTURED_RE: Final = re.compile(r"[!-~]+(?: [!-~]+)*")
_ATOM: Final = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDRESS: Final = rf"({_ATOM}(?:\.{_ATOM})*)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)"
_MAILBOX_RE: Final = re.compile(
    rf"(?:{_ADDRESS}|(?:({_ATOM}(?: {_ATOM})*) |\"([ !#-\[\]-~]*[!#-\[\]-~][ !#-\[\]-~]*)\" )?"
    rf"<{_ADDRESS}>)"
)


class _Header(str):
    """What every registry header offers: its name and its defects (none here).

    (A str subclass cannot have __slots__ of its own: the attributes live in a __dict__.)
    """

    _name: str

    def __new__(cls, name: str, decoded: str) -> _Header:
        header = super().__new__(cls, decoded)
        header._name = name
        return header

    @property
    def name(self) -> str:
        return self._name

    @property
    def defects(self) -> tuple[object, ...]:
        return ()


class _UnstructuredHeader(_Header):
    """A subject on one line of printable ASCII."""


class _ParameterizedHeader(_Header):
    _params: dict[str, str]

    @property
    def params(self) -> Mapping[str, str]:
        return MappingProxyType(self._params)


class _ContentTypeHeader(_ParameterizedHeader):
    maintype: str
    subtype: str

    @property
    def content_type(self) -> str:
        return f"{self.maintype}/{self.subtype}"


class _ContentDispositionHeader(_ParameterizedHeader):
    content_disposition: str


class _AddressHeader(_Header):
    groups: tuple[Group, ...]

    @property
    def addresses(self) -> tuple[Address, ...]:
        return tuple(address for group in self.groups for address in group.addresses)


def _parameters(head: str, text: str) -> tuple[str, dict[str, str]] | None:
    """(the value as the registry writes it, the parameters by lower-cased name), None when
    a name repeats (the registry then notes a defect). The registry writes the parameters
    back as `; name="value"`, whatever the sender's spacing and quoting."""
    found: dict[str, str] = {}
    written: list[str] = []
    for match in _PARAMETER_RE.finditer(text):
        key, value = match.group(1), match.group(2)
        value = value[1:-1] if value.startswith('"') else value
        if key.lower() in found:
            return None
        found[key.lower()] = value
        written.append(f'{key}="{value}"')
    return (f"{head}; {'; '.join(written)}" if written else head), found


def _content_type(name: str, value: str) -> _Header | None:
    match = _CONTENT_TYPE_RE.fullmatch(value)
    read = match and _parameters(value[: match.end(2)], match.group(3))
    if not (match and read):
        return None
    header = _ContentTypeHeader(name, read[0])
    header.maintype = match.group(1).lower()
    header.subtype = match.group(2).lower()
    header._params = read[1]
    return header


def _content_disposition(name: str, value: str) -> _Header | None:
    match = _DISPOSITION_RE.fullmatch(value)
    read = match and _parameters(match.group(1), match.group(2))
    if not (match and read):
        return None
    header = _ContentDispositionHeader(name, read[0])
    header.content_disposition = match.group(1).lower()
    header._params = read[1]
    return header


def _unstructured(name: str, value: str) -> _Header | None:
    if _UNSTRUCTURED_RE.fullmatch(value) is None:
        return None
    return _UnstructuredHeader(name, value)


def _mailbox(name: str, value: str) -> _Header | None:
    match = _MAILBOX_RE.fullmatch(value)
    if match is None:
        return None
    plain_user, plain_domain, phrase, quoted, user, domain = match.groups()
    if plain_user is not None:
        address = Address(username=plain_user, domain=plain_domain)
    else:
        display = phrase if phrase is not None else (quoted or "")
        address = Address(display_name=display, username=user, domain=domain)
    group = Group(None, [address])
    header = _AddressHeader(name, str(group))
    header.groups = (group,)
    return header


_READERS: Final[Mapping[str, Callable[[str, str], _Header | None]]] = MappingProxyType(
    {
        "content-type": _content_type,
        "content-disposition": _content_disposition,
        "subject": _unstructured,
        "from": _mailbox,
        "sender": _mailbox,
        "reply-to": _mailbox,
        "to": _mailbox,
    }
)


def simple_header(name: str, value: str) -> _Header | None:
    """The header the registry would build from this unfolded value, when it is plain."""
    reader = _READERS.get(name.lower())
    if reader is None or "=?" in value:  # an encoded word, even in quotes, is decoded
        return None
    return reader(name, value)

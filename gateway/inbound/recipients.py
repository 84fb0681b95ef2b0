"""Where a recipient address leads: a company's folders, a bot mailbox, or a refusal.

Shared by the RCPT check (async, cached directory) and the filing stage (sync directory),
so that what the server accepts and what the filer does with it cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.replies import Reply
from gateway.routing.addresses import Address, AddressGrammar, AddressKind
from gateway.storage.directory import CabinetRef, CachedDirectory, CompanyRef, Directory


@dataclass(frozen=True)
class Lookup:
    kind: str  # "company" | "cabinet" | "alias" | "bounce"
    slug: str  # for an alias: the local part; for a bounce: the whole address


@dataclass(frozen=True)
class Destination:
    address: Address
    company: CompanyRef | None = None  # filing target (GED), or the bot's company
    cabinet_id: int | None = None  # bot mailbox owner
    delivery_id: int | None = None  # the outbound delivery a bounce address stands for
    refusal: str | None = None  # the SMTP reply when the address is refused
    # Why an address is unknown (which of company, journal, alias was missing): for the
    # log only. The reply says "recipient unknown" whatever it was, so that probing
    # addresses does not tell which companies exist.
    reason: str | None = None

    @property
    def accepted(self) -> bool:
        return self.refusal is None


class BounceCheck(Protocol):
    def delivery_of(self, address: str) -> int | None: ...


class Recipients:
    """Resolves recipient addresses: the grammar, then the directory or the bounce check.

    `resolve` is for the filing stage (blocking lookups); `resolve_async` for the SMTP
    server, where the directory answers from memory on the event loop when it can.
    """

    def __init__(self, grammar: AddressGrammar, directory: Directory, bounces: BounceCheck) -> None:
        self.grammar = grammar
        self.directory = directory
        self.cached = CachedDirectory(directory)
        self.bounces = bounces

    def resolve(self, recipient: str) -> Destination:
        address = self.grammar.parse(recipient)
        need = lookup_needed(address)
        found: CompanyRef | CabinetRef | int | None = None
        if need is not None:
            if need.kind == "bounce":
                found = self.bounces.delivery_of(need.slug)
            elif need.kind == "company":
                found = self.directory.company(need.slug)
            elif need.kind == "alias":
                found = self.directory.alias_owner(need.slug)
            else:
                found = self.directory.cabinet(need.slug)
        return decide(address, found)

    async def resolve_async(self, recipient: str) -> Destination:
        address = self.grammar.parse(recipient)
        need = lookup_needed(address)
        found: CompanyRef | CabinetRef | int | None = None
        if need is not None:
            if need.kind == "bounce":
                found = self.bounces.delivery_of(need.slug)  # an HMAC: no I/O
            elif need.kind == "company":
                found = await self.cached.company(need.slug)
            elif need.kind == "alias":
                found = await self.cached.alias_owner(need.slug)
            else:
                found = await self.cached.cabinet(need.slug)
        return decide(address, found)


def lookup_needed(address: Address) -> Lookup | None:
    if address.kind is AddressKind.BOUNCE:
        return Lookup("bounce", address.address)
    if address.company is not None and address.kind in (
        AddressKind.COLLECTION,
        AddressKind.COMPANY,
        AddressKind.BOT,
    ):
        return Lookup("company", address.company)
    if address.cabinet is not None and address.kind in (AddressKind.BOT, AddressKind.PARTNER_ALIAS):
        return Lookup("cabinet", address.cabinet)
    if address.kind is AddressKind.PARTNER_ALIAS:  # meg+<name>: known only by its connection
        return Lookup("alias", address.local.lower())
    return None


def decide(address: Address, found: CompanyRef | CabinetRef | int | None) -> Destination:
    """The destination of `address`, given what the directory returned for `lookup_needed`."""
    kind = address.kind
    if kind is AddressKind.INVALID:
        return Destination(
            address, refusal=Reply.BAD_RECIPIENT_SYNTAX.format(address=address.address)
        )
    if kind is AddressKind.FOREIGN:
        # R7: never an open relay.
        return Destination(address, refusal=Reply.RELAY_DENIED.format(address=address.address))
    if kind is AddressKind.POSTMASTER:
        return Destination(address)
    if kind is AddressKind.BOUNCE:
        if isinstance(found, int):
            return Destination(address, delivery_id=found)
        return _unknown(address, "not a bounce address of ours")
    if kind is AddressKind.UNKNOWN:
        return _unknown(address, address.problem or "no such address")
    if kind in (AddressKind.COLLECTION, AddressKind.COMPANY):
        if not isinstance(found, CompanyRef):
            return _unknown(address, f"no company {address.company!r} here")
        return Destination(address, company=found)
    if isinstance(found, CompanyRef):  # a company-scoped bot identity (quickbooks+<company>)
        return Destination(address, company=found, cabinet_id=found.cabinet_id)
    if isinstance(found, CabinetRef):
        return Destination(address, cabinet_id=found.id)
    if address.cabinet or address.company:
        what = "cabinet" if address.cabinet else "company"
        return _unknown(address, f"no {what} {address.cabinet or address.company!r} here")
    return _unknown(address, "no connection uses this partner alias")


def _unknown(address: Address, why: str) -> Destination:
    return Destination(
        address, refusal=Reply.UNKNOWN_RECIPIENT.format(address=address.address), reason=why
    )

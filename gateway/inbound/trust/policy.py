"""The sender policies of the companies and cabinets a message is addressed to, read from the
database for the filing stage (the rules: gateway/routing/sender_policy.py; the settings:
gateway/storage/sender_policies.py).

A message addressed to several companies passes only if it passes the policy of each (the
strictest decides): quarantine holds the whole message, so that one company's stricter
policy is never bypassed by copying another company on the mail. Mail to a bot mailbox
passes the policy of the bot's company, or its cabinet's for a cabinet-wide bot.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from gateway.inbound.recipients import Destination
from gateway.inbound.trust.results import AuthenticationResults
from gateway.routing.partners import PartnerRegistry
from gateway.routing.sender_policy import SenderPolicy, decide
from gateway.storage.db import Database
from gateway.storage.sender_policies import effective_policy

Owner = tuple[int | None, int]  # (company id or None for a cabinet's bots, cabinet id)


class StoredSenderPolicies:
    """`SenderPolicies` (gateway/inbound/filing.py) over the stored settings: read each time,
    or, from `for_batch`, once per company or cabinet."""

    def __init__(
        self,
        db: Database,
        default: SenderPolicy,
        registry: PartnerRegistry,
        read: dict[Owner, tuple[SenderPolicy, str]] | None = None,
    ) -> None:
        self.db = db
        self.default = default
        self.registry = registry
        self._read = read  # what this batch has read already; None: no batch
        # The batch's threads take turns to read: the first reads, the others find it read
        # (before, each thread that met a company first read its policy again).
        self._reading = threading.Lock()

    def for_batch(self) -> StoredSenderPolicies:
        """The same policies, each read at most once: a batch's messages are written in one
        transaction, so their policies are read as of one moment (2 to 3 queries a message
        otherwise, benchmarks/filing.py). Shared by the batch's threads, which take turns."""
        return StoredSenderPolicies(self.db, self.default, self.registry, {})

    def in_force(self, destinations: Sequence[Destination]) -> list[tuple[SenderPolicy, str]]:
        """(policy, where it comes from) for each company or cabinet reached, once each."""
        owners: dict[Owner, None] = {}
        for d in destinations:
            if d.address.files_into_ged and d.company is not None:
                owners[(d.company.id, d.company.cabinet_id)] = None
            elif d.address.goes_to_bot_mailbox and d.cabinet_id is not None:
                owners[(d.company.id if d.company else None, d.cabinet_id)] = None
        read = {} if self._read is None else self._read
        with self._reading:
            missing = [owner for owner in owners if owner not in read]
            if missing:
                with self.db.read() as s:
                    for company_id, cabinet_id in missing:
                        read[(company_id, cabinet_id)] = effective_policy(
                            s, company_id, cabinet_id, self.default, self.registry
                        )
            return [read[owner] for owner in owners]

    def requires_authentication(self, destinations: Sequence[Destination]) -> bool:
        return any(p.kind.needs_authentication for p, _ in self.in_force(destinations))

    def refusal(
        self,
        destinations: Sequence[Destination],
        from_address: str | None,
        results: AuthenticationResults | None,
    ) -> str | None:
        authenticated = results.authenticated if results is not None else False
        summary = results.summary() if results is not None else "not checked"
        for policy, source in self.in_force(destinations):
            decision = decide(policy, from_address, authenticated, summary)
            if not decision.passed:
                return f"{decision.reason} (policy of {source})"
        return None

"""The filing stage's checkpoint: a message's checks in the order filing needs them, and what
it tells filing — the results and the message as kept, a reason to quarantine, or
`WaitForChecks` (try again later, not a failure). The checks themselves: screen.py; the
policies: policy.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.inbound.recipients import Destination
from gateway.inbound.trust.results import AuthenticationResults
from gateway.inbound.trust.screen import Authenticated, Envelope, Screen, Wait
from gateway.storage.models import InboundMessage


class SenderPolicies(Protocol):
    """The sender policy of each company (or cabinet, for its bot mailbox) a message is
    addressed to (implemented over the database by `policy.StoredSenderPolicies`)."""

    def requires_authentication(self, destinations: Sequence[Destination]) -> bool:
        """Whether a policy there needs the sender authenticated: only then is a message
        whose authentication met a temporary DNS error held back to be checked again."""
        ...

    def refusal(
        self,
        destinations: Sequence[Destination],
        from_address: str | None,
        results: AuthenticationResults | None,
    ) -> str | None:
        """The first policy's refusal, or None when every policy lets the message in."""
        ...

    def for_batch(self) -> SenderPolicies:
        """The same policies, each read at most once, for the messages of one batch."""
        ...


class WaitForChecks(Exception):
    """The checks cannot conclude yet (see `Wait`): not a failure of filing."""

    def __init__(self, wait: Wait) -> None:
        super().__init__(wait.reason)
        self.wait = wait


class Checkpoint:
    def __init__(self, screen: Screen, policies: SenderPolicies) -> None:
        self.screen = screen
        self.policies = policies

    def for_batch(self) -> Checkpoint:
        """This checkpoint with the sender policies read once for a batch of messages."""
        return Checkpoint(self.screen, self.policies.for_batch())

    def authenticate(
        self, message: InboundMessage, raw: bytes, destinations: Sequence[Destination]
    ) -> tuple[AuthenticationResults | None, bytes]:
        """The results and the message as kept (our Authentication-Results on top). A
        message released from quarantine keeps the results it was quarantined with. A
        temporary DNS error is checked once more later only where a policy needs the
        answer: under `open` the message is filed now, its temperror shown."""
        if message.checks_waived:
            if message.authentication is None:
                return None, raw
            results = AuthenticationResults.from_json(message.authentication)
            return results, self.screen.stamp(raw, results)
        checked_before = message.authentication is not None
        step = self.screen.authenticate(raw, envelope_of(message), checked_before=checked_before)
        if isinstance(step, Wait):
            # The policies are asked only now: most messages meet no temporary error, and
            # each question is a database read (~2 ms per message, benchmarks/trust.py).
            if self.policies.requires_authentication([d for d in destinations if d.accepted]):
                raise WaitForChecks(step)
            assert step.authentication is not None
            return step.authentication, self.screen.stamp(raw, step.authentication)
        assert isinstance(step, Authenticated)
        return step.results, step.stamped

    def quarantine_reason(
        self,
        message: InboundMessage,
        raw: bytes,
        stamped: bytes,
        documents: Sequence[tuple[str, bytes]],
        from_address: str | None,
        destinations: Sequence[Destination],
        results: AuthenticationResults | None,
    ) -> str | None:
        """Malware, spam, then the sender policy: why to quarantine, or None (a released
        message: None at once)."""
        if message.checks_waived:
            return None
        verdict = self.screen.scan(raw, stamped, documents, envelope_of(message))
        if isinstance(verdict, Wait):
            raise WaitForChecks(Wait(verdict.reason, verdict.seconds, results))
        if verdict is not None:
            return verdict
        accepted = [d for d in destinations if d.accepted]
        return self.policies.refusal(accepted, from_address, results)


def envelope_of(message: InboundMessage) -> Envelope:
    return Envelope(
        client_address=message.peer if message.source == "smtp" else None,
        helo=message.helo,
        mail_from="" if message.mail_from in ("", "<>") else message.mail_from,
        recipients=tuple(message.rcpt_tos),
        queue_id=message.queue_id,
    )

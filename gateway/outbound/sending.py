"""The sending worker (`gateway sender`): what it runs, round after round — due deliveries
to partners (R12), then bot mail forwards to cabinet contacts (R6). The loop itself is the
one every stage runs in (`gateway.runner.Runner`)."""

from __future__ import annotations

from collections.abc import Callable

from gateway.outbound.dispatch import Dispatcher
from gateway.outbound.forward import Forwarder
from gateway.runner import Runner


def sending_runner(
    dispatcher: Dispatcher,
    forwarder: Forwarder,
    interval: float,
    recover: Callable[[], None] | None = None,
) -> Runner:
    """Deliveries first, then forwards, each until its queue is empty; then `interval`
    seconds of rest. Pass a forwarder on the dispatcher's transport: one connection pool
    for both; `recover`: see `Runner`."""
    return Runner("sending", [dispatcher.run_once, forwarder.run_once], interval, recover)

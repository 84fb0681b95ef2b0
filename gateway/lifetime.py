"""Worker processes never outlive the `gateway serve` that started them.

`serve` starts its workers (`gateway worker`, `gateway sender`, `gateway imap run`) with
`GATEWAY_SUPERVISOR_PID` set to its own pid. A worker so started asks the kernel, first
thing, for SIGTERM when its parent dies (Linux `prctl(PR_SET_PDEATHSIG)`): even a SIGKILLed
`serve` (the OOM killer, kill -9) takes its workers with it, and they stop as on any SIGTERM,
between two passes, instead of living on with parent 1 beside a restarted serve's. If the
parent is gone already (it died between fork and this call), the worker exits at once.

A worker that dies while `serve` lives is restarted, after a pause (`RestartBackoff`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

SUPERVISOR_ENV = "GATEWAY_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def supervised_environment() -> dict[str, str]:
    """The environment for a worker this process starts and supervises."""
    return {**os.environ, SUPERVISOR_ENV: str(os.getpid())}


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """Ask the kernel for `sig` when this process's parent dies (Linux; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def follow_supervisor() -> None:
    """In a process started by `serve`: die (SIGTERM) with it. Does nothing otherwise."""
    supervisor = os.environ.pop(SUPERVISOR_ENV, None)
    if not supervisor:
        return
    die_with_parent()
    if os.getppid() != int(supervisor):
        sys.exit("gateway: the serve process that started this worker is gone")


class RestartBackoff:
    """How long `serve` waits before it restarts a worker that died: `first` seconds, doubling
    with each death up to `maximum`, and `first` again once the worker had run for
    `settled_after` seconds — so a worker that dies now and then comes back at once, and one
    that dies on start (a broken configuration, the database refusing it) is restarted a
    few times a minute, not in a tight loop."""

    def __init__(
        self, first: float = 1.0, maximum: float = 60.0, settled_after: float = 60.0
    ) -> None:
        self.first = first
        self.maximum = maximum
        self.settled_after = settled_after
        self._next = first

    def delay_after(self, ran_for: float) -> float:
        """The pause before the next start of a worker that has just died after running
        `ran_for` seconds."""
        if ran_for >= self.settled_after:
            self._next = self.first
        delay = self._next
        self._next = min(delay * 2, self.maximum)
        return delay

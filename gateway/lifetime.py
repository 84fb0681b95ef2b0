"""Worker processes never outlive the `gateway serve` that started them.

`serve` starts its workers (`gateway worker`, `gateway sender`, `gateway imap run`) with
`GATEWAY_SUPERVISOR_PID` set to its own pid. A worker so started asks the kernel, first
thing, for SIGTERM when its parent dies (Linux `prctl(PR_SET_PDEATHSIG)`): even a SIGKILLed
`serve` (the OOM killer, kill -9) takes its workers with it, and they stop as on any SIGTERM,
between two passes, instead of living on with parent 1 beside a restarted serve's. If the
parent is gone already (it died between fork and this call), the worker exits at once.
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


def follow_supervisor() -> None:
    """In a process started by `serve`: die (SIGTERM) with it. Does nothing otherwise."""
    supervisor = os.environ.pop(SUPERVISOR_ENV, None)
    if not supervisor:
        return
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != int(supervisor):
        sys.exit("gateway: the serve process that started this worker is gone")

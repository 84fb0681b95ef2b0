"""CPU priority for background work that must never delay the event loops serving SMTP."""

from __future__ import annotations

import contextlib
import os


def run_at_idle_priority() -> None:
    """Put this process in the idle scheduling class: it runs on CPU nobody else wants.

    SCHED_IDLE, not just nice 19: a niced task still delays a waking event loop by the
    scheduler's wake-up granularity (milliseconds, on every message); an idle-class task is
    preempted at once. Used by the filing worker (acknowledging mail comes before filing
    it) and the signing processes (the sender's SMTP conversation comes before composing
    the next messages, which are prepared in the gaps while it waits for replies).
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux: the next best thing
        with contextlib.suppress(OSError):
            os.nice(19)

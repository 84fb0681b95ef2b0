"""Work on hostile input under a time and memory budget: one message never delays the others.

Extraction parses whatever a sender sent (MIME, ZIP, TNEF, forwarded mail) with libraries
that can take minutes or gigabytes on a crafted input inside every declared limit (a 100 KB
Content-Type costs Python's header parser ~10 s); rendering a body to PDF lays out whatever
HTML the sender wrote. So each runs in a child process, one message at a time, with an
address-space rlimit (RLIMIT_AS) and a wall-clock watchdog. The child persists across
messages (a process per message would cost its start-up, ~100 ms, on every message); when a
message blows the budget the child is killed and started again for the next one, and the
failure is the message's own, since the child works on one message at a time.
"""

from __future__ import annotations

import functools
import resource
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from gateway import metrics
from gateway.inbound.extraction import Extraction, ExtractionLimits, extract_documents
from gateway.inbound.extraction.run import brief
from gateway.lifetime import die_with_parent

START_SECONDS = 30  # for a child to start: imports on a loaded machine

# What a child does with one message's bytes (module-level, so that it can be pickled to
# the fork server); MemoryError says the budget, any other exception the input, is at fault.
Work = Callable[[bytes], object]


class OverBudget(Exception):
    """A message's work took longer or more memory than its budget."""


@dataclass(frozen=True)
class Budget:
    """A sandbox's limits, and the words its failures are told in."""

    what: str  # "extraction"
    timeout_seconds: float
    memory_limit_mb: int
    timeout_setting: str  # "extraction.timeout_seconds"
    memory_setting: str
    consequence: str  # what becomes of the message: "held, the message may be hostile"


class Sandbox:
    """`run(raw)` is `work(raw)`, in a watched child process."""

    def __init__(
        self,
        work: Work,
        budget: Budget,
        warm_up: Callable[[], None] | None = None,
        observe: Callable[[float], None] | None = None,
    ):
        self.work = work
        self.budget = budget
        self.warm_up = warm_up  # run in the child before it is given a message
        self.observe = observe  # told each message's seconds, from its turn (a histogram's)
        self._child: BaseProcess | None = None
        self._connection: Connection | None = None
        # The child works on one message at a time: the filer's threads take turns, and a
        # message's time budget starts when its turn does.
        self._turn = threading.Lock()

    def run(self, raw: bytes) -> object:
        with self._turn:
            started = time.perf_counter()
            try:
                return self._run(raw)
            finally:
                if self.observe is not None:
                    self.observe(time.perf_counter() - started)

    def _run(self, raw: bytes) -> object:
        budget = self.budget
        connection = self._send(raw)
        if not connection.poll(budget.timeout_seconds):
            self.close()
            raise OverBudget(
                f"{budget.what} took longer than {budget.timeout_seconds:g} s "
                f"({budget.timeout_setting}): {budget.consequence}"
            )
        try:
            kind, value = connection.recv()
        except (EOFError, OSError):
            kind, value = "memory", None
        if kind == "ok":
            return value
        self.close()
        if kind == "memory":
            raise OverBudget(
                f"{budget.what} needed more than {budget.memory_limit_mb} MB "
                f"({budget.memory_setting}): {budget.consequence}"
            )
        raise RuntimeError(f"{budget.what} failed: {value}")

    def _send(self, raw: bytes) -> Connection:
        """Hand the bytes to the child, starting it when there is none or it has died."""
        if self._connection is not None:
            try:
                self._connection.send_bytes(raw)
                return self._connection
            except OSError:
                self.close()  # it died between two messages
        self._start()
        assert self._connection is not None
        self._connection.send_bytes(raw)
        return self._connection

    def _start(self) -> None:
        # Forked from a fork server that imported only this module (not from this process:
        # a child forked from here would inherit its database connections); after the
        # first, a child starts in milliseconds instead of a fresh interpreter's ~0.6 s.
        context = get_context("forkserver")
        context.set_forkserver_preload(["gateway.inbound.sandbox_server", __name__])
        ours, theirs = context.Pipe()
        child = context.Process(
            target=_serve,
            args=(theirs, self.work, self.warm_up, self.budget.memory_limit_mb * 1024 * 1024),
            name=f"gateway-{self.budget.what.replace(' ', '-')}",
            daemon=True,
        )
        child.start()
        theirs.close()
        self._child, self._connection = child, ours
        # Ready before any message is given: a child that cannot start is our failure
        # (retried), never blamed on the message.
        try:
            ready = ours.poll(START_SECONDS) and ours.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.close()
            raise RuntimeError(f"the {self.budget.what} process did not start")

    def close(self) -> None:
        """Stop the child (killed: it may be stuck in a parse); the next message starts one."""
        if self._connection is not None:
            self._connection.close()
        if self._child is not None:
            self._child.kill()
            self._child.join(5)
            self._child.close()
        self._child = self._connection = None


class ExtractionSandbox(Sandbox):
    """`extract(raw)` as `extract_documents` does, in a watched child process; a message
    over its budget is held."""

    def __init__(self, limits: ExtractionLimits, timeout_seconds: float, memory_limit_mb: int):
        self.limits = limits
        budget = Budget(
            "extraction",
            timeout_seconds,
            memory_limit_mb,
            "extraction.timeout_seconds",
            "extraction.memory_limit_mb",
            "held, the message may be hostile",
        )
        observe = metrics.EXTRACTION_SECONDS.observe
        super().__init__(functools.partial(_extract, limits), budget, observe=observe)

    def extract(self, raw: bytes) -> Extraction:
        extraction = self.run(raw)
        assert isinstance(extraction, Extraction)
        return extraction


def _serve(
    connection: Connection, work: Work, warm_up: Callable[[], None] | None, memory_bytes: int
) -> None:
    """The child: work on each message it is given, until its parent closes the pipe."""
    # Its parent is the fork server, which ends with the filing worker: a child busy in a
    # long parse would otherwise see the closed pipe only once the parse is over.
    die_with_parent(signal.SIGKILL)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    if warm_up is not None:
        warm_up()
    connection.send("ready")
    while True:
        try:
            raw = connection.recv_bytes()
        except EOFError:
            return
        try:
            result: tuple[str, object] = ("ok", work(raw))
        except MemoryError:
            result = ("memory", None)
        except Exception as exc:
            result = ("error", brief(exc))
        del raw
        connection.send(result)
        if result[0] == "memory":
            return  # a fresh process for the next message, not a fragmented heap


def _extract(limits: ExtractionLimits, raw: bytes) -> Extraction:
    extraction = extract_documents(raw, limits)
    if _ran_out_of_memory(extraction):
        raise MemoryError
    return extraction


def _ran_out_of_memory(extraction: Extraction) -> bool:
    """Extraction keeps going past a part that fails (the part is kept as it came, the
    reason noted): one that failed for want of memory is the budget's, not the part's."""
    said = [*extraction.defects, *(r.reason for r in extraction.refused)]
    return any("MemoryError" in text for text in said)

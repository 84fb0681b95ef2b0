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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from gateway import metrics
from gateway.inbound.extraction import Extraction, ExtractionLimits, extract_documents
from gateway.inbound.extraction.run import brief
from gateway.inbound.invoices import read_invoices
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
        """`work(raw)` in the child; OverBudget (or RuntimeError) when it fails there."""
        [result] = self.run_many([raw])
        if isinstance(result, Exception):
            raise result
        return result

    def run_many(self, raws: Sequence[bytes]) -> list[object | Exception]:
        """`run` for each message, back to back in the child: each result, or the exception
        `run` would have raised. The child is handed every message at once (a feeder thread
        writes while results are read, so that neither side waits on a full pipe); it works
        on them without waiting for the parent in between, which costs it a third less CPU
        than one at a time between the parent's other work (cold caches: benchmarks/
        filing.py). Each message's budget starts when the previous result arrives; one
        that fails is the only one to fail, and the rest go to a fresh child."""
        results: list[object | Exception] = []
        with self._turn:
            while len(results) < len(raws):
                results.extend(self._run_stream(raws[len(results) :]))
        return results

    def _run_stream(self, raws: Sequence[bytes]) -> list[object | Exception]:
        """Results of a prefix of `raws`: all of them, or up to the first failure (whose
        child is then gone)."""
        connection = self._connected()
        feeder = threading.Thread(target=_feed, args=(connection, raws), daemon=True)
        feeder.start()
        results: list[object | Exception] = []
        try:
            for _ in raws:
                started = time.perf_counter()
                try:
                    results.append(self._result(connection))
                except (OverBudget, RuntimeError) as exc:
                    results.append(exc)
                    break
                finally:
                    if self.observe is not None:
                        self.observe(time.perf_counter() - started)
        finally:
            failed = len(results) < len(raws) or isinstance(results[-1], Exception)
            if failed:
                self._stop_child()  # the feeder's next write fails on the dead peer
            feeder.join()
            if failed:
                self.close()  # only now: the feeder can no longer write to the descriptor
        return results

    def _result(self, connection: Connection) -> object:
        """The child's answer for the message it works on; OverBudget or RuntimeError (and
        the child stopped) when there is none."""
        budget = self.budget
        if not connection.poll(budget.timeout_seconds):
            self._stop_child()
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
        self._stop_child()
        if kind == "memory":
            raise OverBudget(
                f"{budget.what} needed more than {budget.memory_limit_mb} MB "
                f"({budget.memory_setting}): {budget.consequence}"
            )
        raise RuntimeError(f"{budget.what} failed: {value}")

    def _connected(self) -> Connection:
        """The pipe to the child, starting one when there is none or it has died between
        two batches (killed by the kernel's OOM killer, or by hand): its death is not the
        next message's fault."""
        if self._connection is None or self._child is None or not self._child.is_alive():
            self.close()
            self._start()
        assert self._connection is not None
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
        self._stop_child()
        if self._connection is not None:
            self._connection.close()
        self._connection = None

    def _stop_child(self) -> None:
        if self._child is not None:
            self._child.kill()
            self._child.join(5)
            self._child.close()
        self._child = None


class ExtractionSandbox(Sandbox):
    """`extract(raw)` as `extract_documents` does, in a watched child process; a message
    over its budget is held."""

    def __init__(
        self,
        limits: ExtractionLimits,
        timeout_seconds: float,
        memory_limit_mb: int,
        einvoice_max_xml_bytes: int | None = None,
    ):
        """`einvoice_max_xml_bytes`: e-invoices are read too, beside the documents (under
        the same budget: they are untrusted XML and PDF); None: they are not."""
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
        work = functools.partial(_extract, limits, einvoice_max_xml_bytes)
        super().__init__(work, budget, observe=observe)

    def extract(self, raw: bytes) -> Extraction:
        extraction = self.run(raw)
        assert isinstance(extraction, Extraction)
        return extraction

    def extract_many(self, raws: Sequence[bytes]) -> list[Extraction | Exception]:
        """`extract` for each message, back to back (`Sandbox.run_many`)."""
        results = self.run_many(raws)
        assert all(isinstance(r, Extraction | Exception) for r in results)
        return results  # type: ignore[return-value]


def _feed(connection: Connection, raws: Sequence[bytes]) -> None:
    """Write each message to the child, until one cannot be (the child was stopped)."""
    for raw in raws:
        try:
            connection.send_bytes(raw)
        except (OSError, ValueError):  # a dead peer; ValueError: the pipe already closed
            return


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


def _extract(
    limits: ExtractionLimits, einvoice_max_xml_bytes: int | None, raw: bytes
) -> Extraction:
    extraction = extract_documents(raw, limits)
    if _ran_out_of_memory(extraction):
        raise MemoryError
    if einvoice_max_xml_bytes is not None:
        extraction = read_invoices(extraction, einvoice_max_xml_bytes)
    return extraction


def _ran_out_of_memory(extraction: Extraction) -> bool:
    """Extraction keeps going past a part that fails (the part is kept as it came, the
    reason noted): one that failed for want of memory is the budget's, not the part's."""
    said = [*extraction.defects, *(r.reason for r in extraction.refused)]
    return any("MemoryError" in text for text in said)

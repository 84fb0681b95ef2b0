"""Extraction under a time and memory budget: one hostile message never delays the others.

Extraction parses whatever a sender sent (MIME, ZIP, TNEF, forwarded mail) with libraries
that can take minutes or gigabytes on a crafted input inside every declared limit (a 100 KB
Content-Type costs Python's header parser ~10 s). So it runs in a child process, one message
at a time, with an address-space rlimit (`extraction.memory_limit_mb`, RLIMIT_AS) and a
wall-clock watchdog (`extraction.timeout_seconds`). The child persists across messages (a
process per message would cost its start-up, ~100 ms, on every message); when a message
blows the budget the child is killed and started again for the next one, and the failure is
the message's own, since the child works on one message at a time.
"""

from __future__ import annotations

import resource
import signal
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from gateway.inbound.extraction import Extraction, ExtractionLimits, extract_documents
from gateway.inbound.extraction.run import brief
from gateway.lifetime import die_with_parent

START_SECONDS = 30  # for a child to start: imports on a loaded machine


class OverBudget(Exception):
    """A message's extraction took longer or more memory than its budget: it is held."""


class ExtractionSandbox:
    """`extract(raw)` as `extract_documents` does, in a watched child process."""

    def __init__(self, limits: ExtractionLimits, timeout_seconds: float, memory_limit_mb: int):
        self.limits = limits
        self.timeout_seconds = timeout_seconds
        self.memory_limit_mb = memory_limit_mb
        self._child: BaseProcess | None = None
        self._connection: Connection | None = None

    def extract(self, raw: bytes) -> Extraction:
        connection = self._send(raw)
        if not connection.poll(self.timeout_seconds):
            self.close()
            raise OverBudget(
                f"extraction took longer than {self.timeout_seconds:g} s "
                "(extraction.timeout_seconds): held, the message may be hostile"
            )
        try:
            kind, value = connection.recv()
        except (EOFError, OSError):
            kind, value = "memory", None
        if kind == "ok":
            assert isinstance(value, Extraction)
            return value
        self.close()
        if kind == "memory":
            raise OverBudget(
                f"extraction needed more than {self.memory_limit_mb} MB "
                "(extraction.memory_limit_mb): held, the message may be hostile"
            )
        raise RuntimeError(f"extraction failed: {value}")

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
        # Forked from a fork server that imported only extraction (not from this process:
        # a child forked from here would inherit its database connections); after the
        # first, a child starts in milliseconds instead of a fresh interpreter's ~0.6 s.
        context = get_context("forkserver")
        context.set_forkserver_preload(["gateway.inbound.sandbox_server", __name__])
        ours, theirs = context.Pipe()
        child = context.Process(
            target=_serve,
            args=(theirs, self.limits, self.memory_limit_mb * 1024 * 1024),
            name="gateway-extraction",
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
            raise RuntimeError("the extraction process did not start")

    def close(self) -> None:
        """Stop the child (killed: it may be stuck in a parse); the next message starts one."""
        if self._connection is not None:
            self._connection.close()
        if self._child is not None:
            self._child.kill()
            self._child.join(5)
            self._child.close()
        self._child = self._connection = None


def _serve(connection: Connection, limits: ExtractionLimits, memory_bytes: int) -> None:
    """The child: extract each message it is given, until its parent closes the pipe."""
    # Its parent is the fork server, which ends with the filing worker: a child busy in a
    # long parse would otherwise see the closed pipe only once the parse is over.
    die_with_parent(signal.SIGKILL)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    connection.send("ready")
    while True:
        try:
            raw = connection.recv_bytes()
        except EOFError:
            return
        try:
            extraction = extract_documents(raw, limits)
            result: tuple[str, object] = (
                "memory" if _ran_out_of_memory(extraction) else "ok",
                extraction,
            )
        except MemoryError:
            result = ("memory", None)
        except Exception as exc:
            result = ("error", brief(exc))
        del raw
        connection.send(result)
        if result[0] == "memory":
            return  # a fresh process for the next message, not a fragmented heap


def _ran_out_of_memory(extraction: Extraction) -> bool:
    """Extraction keeps going past a part that fails (the part is kept as it came, the
    reason noted): one that failed for want of memory is the budget's, not the part's."""
    said = [*extraction.defects, *(r.reason for r in extraction.refused)]
    return any("MemoryError" in text for text in said)

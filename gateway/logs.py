"""Structured logs (structlog): JSON lines when stderr is not a terminal, readable otherwise.

Every line names the node (`gateway.node_name`) and the role of the process that wrote it —
`smtp` (the SMTP server in `serve`), `serve` (its supervision of the workers), `filing`,
`sender`, `imap`, `cli` — so that the lines of several nodes and processes can be mixed in
one place and still be told apart; the pid tells workers of one role apart. They are added
by a processor rather than bound as structlog contextvars: the IMAP pollers and the spool
writer log from threads, which start with an empty context.

An error is one line, `error="Type: message"`. Its whole traceback comes with it at most once
a minute for each distinct error (its type and the place it was raised): during an outage
(the database away, a relay down) the same failure repeats every few seconds, and a
traceback each time buried everything else (8.8 KB a line, 300 lines in 12 s). The lines of
the standard library's loggers (aiosmtpd's, asyncio's) go through the same processors.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

TRACEBACK_INTERVAL = 60.0  # seconds: at most one traceback per distinct error in this time
MAX_ERROR_CHARS = 500
_HANDLER_NAME = "gateway"

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class OneLineErrors:
    """The processor that turns `exc_info` (from `log.exception`, or `exc_info=`) into
    `error="Type: message"`, and keeps the traceback only when that error (type and where it
    was raised) has not had one in the last `interval` seconds of `clock`."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, interval: float = TRACEBACK_INTERVAL
    ) -> None:
        self.clock = clock
        self.interval = interval
        self._last_traceback: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()  # lines are logged from threads too

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        exc_info = _exc_info(event_dict.pop("exc_info", None))
        if exc_info is None:
            return event_dict
        error = exc_info[1]
        event_dict.setdefault("error", one_line(error))
        if self._traceback_due((type(error).__qualname__, _raised_at(exc_info[2]))):
            event_dict["exc_info"] = exc_info  # rendered by format_exc_info, next
        return event_dict

    def _traceback_due(self, signature: tuple[str, str]) -> bool:
        now = self.clock()
        with self._lock:
            last = self._last_traceback.get(signature)
            if last is not None and now - last < self.interval:
                return False
            self._last_traceback[signature] = now
            if len(self._last_traceback) > 1000:  # forget the old ones; memory stays bounded
                self._last_traceback = {
                    s: t for s, t in self._last_traceback.items() if now - t < self.interval
                }
            return True


def one_line(error: BaseException) -> str:
    """`Type: message`, the message's first line, cut at MAX_ERROR_CHARS. A database error
    is the driver's (SQLAlchemy's wrapper adds the statement, its parameters and a link)."""
    original = getattr(error, "orig", None) or error
    message = (str(original).strip().splitlines() or [""])[0].strip()
    text = f"{type(original).__name__}: {message}" if message else type(original).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _exc_info(value: Any) -> ExcInfo | None:
    if value is True:
        value = sys.exc_info()
    if isinstance(value, BaseException):
        return type(value), value, value.__traceback__
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], BaseException):
        return value
    return None


def _raised_at(tb: TracebackType | None) -> str:
    """Where the error was raised: the innermost frame of its traceback."""
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"


def identity(node: str, role: str, pid: int) -> Processor:
    """The processor that puts node, role and pid on every line (a logger bound with its own
    role, as `serve`'s supervision is, keeps it)."""

    def add(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("node", node)
        event_dict.setdefault("role", role)
        event_dict.setdefault("pid", pid)
        return event_dict

    return add


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    *,
    node: str,
    role: str,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        identity(node, role, os.getpid()),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        OneLineErrors(clock),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # The standard library's loggers, in the same format and through the same processors.
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)  # configured before in this process (tests)
    root.addHandler(handler)
    # aiosmtpd logs every command at INFO: far too chatty for a busy MX, and it costs time
    # on the event loop. Our own lines carry what matters.
    root.setLevel(logging.WARNING)

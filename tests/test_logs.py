"""Log lines (gateway/logs.py): one line per error, a traceback at most once a minute for
each distinct error, and every line naming its node and role."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import structlog
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from gateway.logs import MAX_ERROR_CHARS, OneLineErrors, configure_logging, one_line
from tests.conftest import write_config
from tests.test_serve import gateway_cli


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fail(message: str = "port 5432 refused") -> None:
    raise ConnectionRefusedError(message)  # one place: the "location" of this error


def _other_failure() -> None:
    raise ValueError("bad value")


def _logged(processor: OneLineErrors, failing: Callable[[], None] = _fail) -> dict[str, Any]:
    """What `log.exception("runner_pass_failed")` hands the processor when `failing` fails."""
    try:
        failing()
    except Exception:
        return processor(None, "error", {"event": "runner_pass_failed", "exc_info": True})
    raise AssertionError("did not fail")


def test_a_repeated_error_has_one_traceback_then_one_liners_until_a_minute_has_passed():
    clock = Clock()
    errors = OneLineErrors(clock)
    first = _logged(errors)
    assert first["error"] == "ConnectionRefusedError: port 5432 refused"
    assert first["exc_info"][0] is ConnectionRefusedError  # the traceback, this once
    for _ in range(5):
        clock.now += 10
        again = _logged(errors)
        assert again["error"] == "ConnectionRefusedError: port 5432 refused"
        assert "exc_info" not in again
    clock.now += 10.5  # 60.5 s after the first traceback
    assert "exc_info" in _logged(errors)
    clock.now += 1
    assert "exc_info" not in _logged(errors)


def test_another_error_gets_its_own_traceback():
    clock = Clock()
    errors = OneLineErrors(clock)
    assert "exc_info" in _logged(errors)
    other = _logged(errors, _other_failure)
    assert other["error"] == "ValueError: bad value" and "exc_info" in other
    assert "exc_info" not in _logged(errors, _other_failure)
    # The same type with another message, raised at the same place, is the same error.
    assert "exc_info" not in _logged(errors, lambda: _fail("port 5433 refused"))


def test_lines_without_an_exception_pass_unchanged():
    errors = OneLineErrors(Clock())
    assert errors(None, "info", {"event": "received", "queue_id": "Q1"}) == {
        "event": "received",
        "queue_id": "Q1",
    }
    assert errors(None, "error", {"event": "x", "exc_info": False}) == {"event": "x"}


def test_an_exception_instance_counts_as_exc_info_and_a_given_error_field_stays():
    errors = OneLineErrors(Clock())
    try:
        _other_failure()
    except ValueError as exc:
        error = exc
    line = errors(None, "error", {"event": "session_error", "exc_info": error})
    assert line["error"] == "ValueError: bad value" and line["exc_info"][1] is error
    line = errors(None, "warning", {"event": "x", "error": "ours", "exc_info": error})
    assert line["error"] == "ours"


def test_one_line_keeps_the_first_line_of_the_drivers_message_and_cuts_a_long_one():
    assert one_line(RuntimeError("connection failed\n\tIs the server running?")) == (
        "RuntimeError: connection failed"
    )
    wrapped = OperationalError("SELECT 1", {}, ConnectionRefusedError("port 5432 refused"))
    assert one_line(wrapped) == "ConnectionRefusedError: port 5432 refused"  # no SQL, no link
    assert one_line(TimeoutError()) == "TimeoutError"
    long = one_line(ValueError("x" * 10_000))
    assert len(long) == MAX_ERROR_CHARS and long.endswith("…")


@pytest.fixture
def restore_logging():
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "gateway"]:
        root.removeHandler(handler)


def test_every_line_carries_node_and_role_from_threads_and_stdlib_loggers_too(
    capsys, restore_logging
):
    configure_logging("info", "json", node="mx1", role="imap")
    log = structlog.get_logger("test")
    log.info("in_main_thread")
    thread = threading.Thread(target=lambda: log.warning("in_a_thread"))
    thread.start()
    thread.join()
    structlog.get_logger("test", role="serve").info("supervisor_line")
    logging.getLogger("mail.log").warning("from aiosmtpd")
    try:
        _fail("refused")
    except ConnectionRefusedError:
        logging.getLogger("asyncio").exception("from the standard library")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(x["event"], x["node"], x["role"]) for x in lines] == [
        ("in_main_thread", "mx1", "imap"),
        ("in_a_thread", "mx1", "imap"),
        ("supervisor_line", "mx1", "serve"),
        ("from aiosmtpd", "mx1", "imap"),
        ("from the standard library", "mx1", "imap"),
    ]
    assert lines[-1]["error"] == "ConnectionRefusedError: refused"
    assert "Traceback" in lines[-1]["exception"]


class TcpProxy:
    """A TCP relay to the database that a test can cut: the outage a process sees when its
    database server goes away (without stopping the server every other test uses)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # cut
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        # New connections are refused from now on (shutdown wakes the blocked accept()).
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)
def test_a_worker_whose_database_goes_away_logs_a_bounded_number_of_one_line_errors(
    tmp_path, empty_database_url
):
    url = make_url(empty_database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    through_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    config = write_config(tmp_path, through_proxy)
    assert gateway_cli(config, "migrate").returncode == 0
    worker = subprocess.Popen(
        [sys.executable, "-m", "gateway", "worker", "-c", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # It runs passes: the database is there.
        assert _registered(empty_database_url, worker.pid, 30)
        time.sleep(0.5)
        proxy.cut()
        time.sleep(5)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=15)
    assert worker.returncode == 0
    lines = [json.loads(line) for line in err.splitlines()]  # every line is one JSON object
    failures = [x for x in lines if x["event"] == "runner_pass_failed"]
    assert failures, err
    assert {(x["node"], x["role"]) for x in lines} == {("test", "filing")}
    assert all(x["error"].startswith("OperationalError: ") for x in failures)
    # The outage repeats the same error or two: a traceback for each, then one-liners, and
    # the runner's back-off (0.2 s doubling) keeps the count small.
    assert 3 <= len(failures) <= 10
    assert 1 <= sum("exception" in x for x in lines) <= 2


def _registered(database_url: str, pid: int, seconds: float) -> bool:
    """Whether the process `pid` appears in the registry of running processes in time."""
    engine = create_engine(database_url)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                query = text("SELECT count(*) FROM gateway_processes WHERE pid = :pid")
                if conn.execute(query, {"pid": pid}).scalar_one():
                    return True
            time.sleep(0.1)
        return False
    finally:
        engine.dispose()

"""Stopping and supervising `gateway serve`, as real processes: SIGTERM ends it at once when
no client is in a transaction and within smtp.drain_seconds otherwise; a client's EOF ends
its session; a worker that dies is restarted, with back-off."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import threading
import time
from datetime import datetime
from typing import Any

from gateway.lifetime import RestartBackoff
from tests.conftest import write_config
from tests.processes import connections_to, live_processes
from tests.support import message
from tests.test_serve import free_port, gateway_cli, serving


def _wait_for(condition: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while not (result := condition()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return result


def test_sigterm_after_50_connect_and_close_probes_exits_at_once_leaving_no_socket(
    tmp_path, empty_database_url
):
    port = free_port()
    config = write_config(
        tmp_path,
        empty_database_url,
        smtp={"port": port},
        filing={"workers": 1},
        outbound={"workers": 1},
    )
    assert gateway_cli(config, "migrate").returncode == 0
    with serving(config) as proc:
        assert _wait_for(lambda: len(live_processes(parent=proc.pid)) == 2, 30)
        # A client between two transactions: it is told 421 at once, not waited for.
        idle = smtplib.SMTP("127.0.0.1", port, timeout=10)
        idle.ehlo("lb.example.org")
        for _ in range(50):  # a load balancer's TCP checks, a port scan
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        # Each probe's session ends with its EOF: only the idle client's socket is left.
        assert _wait_for(lambda: connections_to(port) == ["01"], 5), connections_to(port)

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        took = time.monotonic() - started
        assert took < 2.0, f"SIGTERM took {took:.2f} s"
        assert idle.getreply()[0] == 421
        idle.close()
        # Nothing open is left (TIME-WAIT, "06", is the kernel's after the server's close).
        assert _wait_for(lambda: set(connections_to(port)) <= {"06"}, 2), connections_to(port)


def test_a_transaction_in_progress_may_finish_and_a_silent_one_gets_421_after_the_grace(
    tmp_path, empty_database_url
):
    port = free_port()
    grace = 3
    config = write_config(
        tmp_path,
        empty_database_url,
        smtp={"port": port, "drain_seconds": grace},
        filing={"workers": 0},
        outbound={"workers": 0},
    )
    assert gateway_cli(config, "migrate").returncode == 0
    with serving(config) as proc:
        finishing = smtplib.SMTP("127.0.0.1", port, timeout=10)
        finishing.ehlo("a.example.org")
        finishing.mail("a@example.org")
        finishing.rcpt("postmaster@welyb.fr")
        silent = smtplib.SMTP("127.0.0.1", port, timeout=10)
        silent.ehlo("b.example.org")
        silent.mail("b@example.org")
        silent.rcpt("postmaster@welyb.fr")  # ... and then nothing more

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None  # waiting for the transactions
        code, _ = finishing.data(message(to="postmaster@welyb.fr"))
        assert code == 250  # finished within the grace ...
        assert finishing.getreply()[0] == 421  # ... then told the server is going away
        assert silent.getreply()[0] == 421  # at the end of the grace
        told_at = time.monotonic() - started
        assert proc.wait(10) == 0
        took = time.monotonic() - started
    assert grace - 0.5 <= told_at <= took < grace + 2.0, (told_at, took)


def test_a_dead_worker_is_restarted_with_back_off_and_each_restart_is_logged(tmp_path):
    config = write_config(
        tmp_path,
        f"sqlite:///{tmp_path / 'gateway.db'}",
        smtp={"port": free_port()},
        filing={"workers": 1},
        outbound={"workers": 0},
        logging={"level": "info"},
    )
    with serving(config) as proc:
        lines: list[dict[str, Any]] = []
        assert proc.stderr is not None
        reader = threading.Thread(target=_read_json_lines, args=(proc.stderr, lines), daemon=True)
        reader.start()

        def deaths() -> list[dict[str, Any]]:
            return [x for x in list(lines) if x.get("event") == "worker_died"]

        [first] = _wait_for(lambda: live_processes(parent=proc.pid), 30)
        os.kill(first, signal.SIGKILL)
        [second] = _wait_for(lambda: [p for p in live_processes(parent=proc.pid) if p != first], 10)
        # From now on every worker fails at start: it reads a configuration that is broken.
        config.write_text("[gateway\n")
        os.kill(second, signal.SIGKILL)
        assert len(_wait_for(lambda: len(deaths()) >= 3 and deaths(), 20)) >= 3
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        reader.join(5)

    died = deaths()
    assert [(d["verb"], d["code"], d["restart_in"]) for d in died[:3]] == [
        ("worker", -9, 1.0),
        ("worker", -9, 2.0),
        ("worker", 1, 4.0),  # dies at start each time: the pause keeps doubling
    ]
    assert [d["worker_pid"] for d in died[:2]] == [first, second]
    # The restart after the second death waited its 2 s: no tight loop.
    assert _seconds(died[2]["timestamp"]) - _seconds(died[1]["timestamp"]) >= 2.0
    started = [x["worker_pid"] for x in lines if x.get("event") == "worker_started"]
    assert started[:2] == [first, second] and len(started) <= len(died) + 1
    assert {(x["node"], x["role"], x["pid"]) for x in died} == {("test", "serve", proc.pid)}


def _read_json_lines(stream: Any, into: list[dict[str, Any]]) -> None:
    """The log lines of `stream` as they come (the workers' one-line errors are not JSON)."""
    for line in stream:
        if line.startswith("{"):
            into.append(json.loads(line))


def _seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


def test_restart_back_off_doubles_to_a_minute_and_starts_again_after_a_good_run():
    backoff = RestartBackoff()
    assert [backoff.delay_after(ran_for=0.5) for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff.delay_after(ran_for=61) == 1  # it had run a minute: a new incident
    assert backoff.delay_after(ran_for=3) == 2

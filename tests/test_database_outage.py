"""PostgreSQL away, at start and under load (issue 9), with a PostgreSQL server of the
test's own that it stops and starts: `serve` waits for it saying so in one line; during the
outage senders get 4xx, never 5xx; nothing acknowledged is lost, and all of it is filed
within a minute of the database's return."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import postgres_server
from tests.conftest import write_config
from tests.load import SmtpLoad, assert_filed_once, wait_until_filed
from tests.test_serve import free_port, gateway_cli

pytestmark = pytest.mark.skipif(
    not postgres_server.available(), reason="PostgreSQL's server binaries are not installed"
)


def _lines(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8", errors="replace").splitlines()


def _wait_for_line(log: Path, needle: str, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = _lines(log)
        if any(needle in line for line in lines):
            return lines
        time.sleep(0.1)
    raise AssertionError(f"no {needle!r} in the log of serve:\n" + "\n".join(_lines(log)[-20:]))


def test_serve_waits_for_the_database_then_rides_out_an_outage_under_load(tmp_path):
    port = free_port()
    with postgres_server.own_postgres(free_port()) as pg:
        config = write_config(
            tmp_path,
            pg.url,
            smtp={"port": port},
            filing={"workers": 1},
            outbound={"workers": 0},
        )
        assert gateway_cli(config, "migrate").returncode == 0
        assert gateway_cli(config, "cabinet", "add", "aecconseil").returncode == 0
        added = gateway_cli(
            config, "company", "add", "dupont-maconnerie", "--cabinet", "aecconseil"
        )
        assert added.returncode == 0, added.stderr
        pg.stop()

        # Started while the database is down: it says so, one line per try, and waits.
        log = tmp_path / "serve.log"
        with log.open("w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "-c", str(config)],
                stderr=stderr,
                start_new_session=True,
            )
        try:
            lines = _wait_for_line(log, "database_unavailable", 30)
            time.sleep(2)
            assert proc.poll() is None  # waiting, not dead
            lines = _lines(log)
            assert "listening" not in log.read_text()
            # Log lines are JSON; serve's announcements (`gateway: health and metrics on …`,
            # up while it waits) are plain.
            waiting = [json.loads(line) for line in lines if not line.startswith("gateway: ")]
            assert {e["event"] for e in waiting} == {"database_unavailable"}
            assert all("Traceback" not in line for line in lines)
            assert waiting[0]["error"].startswith("OperationalError: ")
            pg.start()
            _wait_for_line(log, "listening on smtp://", 30)

            # Under load: the database goes away, then comes back.
            load = SmtpLoad(port).start()
            load.wait_for(40)
            pg.stop()
            stopped_with = len(load.acknowledged)
            time.sleep(4)
            during = dict(load.replies)
            pg.start()
            returned = time.monotonic()
            load.wait_for(stopped_with + 40, timeout=60)  # acknowledging again
            load.stop()
            acknowledged = list(load.acknowledged)
            seen, _ = wait_until_filed(config, acknowledged, timeout=60)
            seconds = time.monotonic() - returned
            assert proc.poll() is None
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
    print(
        f"\n{len(acknowledged)} acknowledged; replies during the outage {during}; "
        f"all filed {seconds:.1f} s after the database returned"
    )
    assert during and all(400 <= code < 500 for code in during), during
    assert all(code < 500 for code in load.replies), load.replies
    assert_filed_once(seen, acknowledged)
    assert seconds < 60

"""`gateway serve` as a process: it says where it listens, stops cleanly on SIGTERM, and a
crash after the 250 loses nothing and files nothing twice (R8)."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import func, select

from gateway.app import Gateway
from gateway.storage.models import Document, InboundMessage
from tests.conftest import load, write_config
from tests.processes import free_port, live_processes
from tests.support import message, pdf


def gateway_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextmanager
def serving(
    config: Path,
    preexec_fn: Callable[[], None] | None = None,
    startup: list[str] | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """`gateway serve` until it listens; the lines it wrote until then go to `startup`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "-c", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=preexec_fn,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        written = [] if startup is None else startup
        line = ""
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            written.append(line)
            if "listening on smtp://" in line or not line:
                break
        if "listening on smtp://" not in line:
            ended = proc.poll()
            raise AssertionError(
                f"serve never said it listens (exit code {ended}); it wrote:\n"
                + "".join(written)
                + ("" if ended is None else proc.stderr.read())
            )
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def counts(config: Path) -> tuple[dict[str, int], int]:
    gw = Gateway.from_config(load(config))
    try:
        with gw.db.read() as s:
            statuses = dict(
                s.execute(
                    select(InboundMessage.status, func.count()).group_by(InboundMessage.status)
                ).all()
            )
            docs = s.execute(select(func.count()).select_from(Document)).scalar_one()
    finally:
        gw.db.dispose()
    return statuses, docs


def test_crash_after_250_files_every_message_once_after_restart(tmp_path, empty_database_url):
    port = free_port()
    config = write_config(tmp_path, empty_database_url, smtp={"port": port}, filing={"workers": 0})
    assert gateway_cli(config, "migrate").returncode == 0  # as an admin installs it
    assert gateway_cli(config, "cabinet", "add", "aecconseil").returncode == 0
    assert (
        gateway_cli(
            config, "company", "add", "dupont-maconnerie", "--cabinet", "aecconseil"
        ).returncode
        == 0
    )
    with serving(config) as proc:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            for i in range(5):
                smtp.sendmail(
                    "a@example.org",
                    ["compta+dupont-maconnerie@welyb.fr"],
                    message(
                        subject=f"n{i}", attachments=[(f"f{i}.pdf", "application/pdf", pdf(str(i)))]
                    ),
                )
        os.killpg(proc.pid, signal.SIGKILL)  # the crash: after five 250s, before any filing
        proc.wait(10)
    assert counts(config) == ({"received": 5}, 0)

    config = write_config(tmp_path, empty_database_url, smtp={"port": port}, filing={"workers": 1})
    with serving(config) as proc:
        deadline = time.monotonic() + 30
        while counts(config) != ({"filed": 5}, 5) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert counts(config) == ({"filed": 5}, 5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    # Restarting once more files nothing twice.
    assert "processed 0" in gateway_cli(config, "worker", "--once").stdout
    assert counts(config) == ({"filed": 5}, 5)


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z"


def test_workers_die_with_serve_even_when_it_is_killed(tmp_path):
    """SIGKILL of `serve` (OOM killer, kill -9): its filing and sending workers must not
    live on with parent 1, nor pile up beside a restarted serve's."""
    config = write_config(
        tmp_path,
        f"sqlite:///{tmp_path / 'gateway.db'}",
        smtp={"port": free_port()},
        filing={"workers": 1},
        outbound={"workers": 1},
    )
    with serving(config) as proc:
        deadline = time.monotonic() + 30
        while len(workers := live_processes(parent=proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(workers) == 2
        proc.kill()  # the serve process alone, not its group: as the OOM killer does
        proc.wait(10)
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in workers if _alive(pid)] == []

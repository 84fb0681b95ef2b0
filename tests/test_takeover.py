"""A dead process's work is taken over within a minute (issue 9), with real processes under
real SMTP load: `serve` killed with its workers and restarted; one of two nodes killed and
not restarted. Every acknowledged message ends filed exactly once."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.app import Gateway
from gateway.storage.models import InboundMessage, InboundMessageEvent
from gateway.storage.queues.inbound import LEASE
from tests.conftest import load, write_config
from tests.load import SmtpLoad, assert_filed_once, wait_until_filed
from tests.processes import live_processes
from tests.test_serve import free_port, gateway_cli, serving


def _install(config: Path) -> None:
    assert gateway_cli(config, "migrate").returncode == 0
    assert gateway_cli(config, "cabinet", "add", "aecconseil").returncode == 0
    added = gateway_cli(config, "company", "add", "dupont-maconnerie", "--cabinet", "aecconseil")
    assert added.returncode == 0, added.stderr


def _node(tmp_path: Path, database_url: str, name: str, storage: Path, port: int) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return write_config(
        folder,
        database_url,
        gateway={"domains": ["welyb.fr"], "node_name": name},
        storage={"path": str(storage)},
        smtp={"port": port},
        filing={"workers": 1},
        outbound={"workers": 0},
    )


def _kill_node_holding_claims(config: Path, serve_pid: int, node: str) -> int:
    """The node dies — serve and its workers at once (a power cut, an OOM-killed
    container) — while its filing worker holds a claimed batch: the worker is frozen until
    it is caught holding one, then the whole group is killed. Returns how many it held."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        workers = live_processes(parent=serve_pid)
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        held = _claimed_by(config, node)
        if held:
            os.killpg(serve_pid, signal.SIGKILL)
            return held
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError(f"{node}'s filing worker was never caught holding a claim")


def _claimed_by(config: Path, node: str) -> int:
    gw = Gateway.from_config(load(config))
    try:
        with gw.db.read() as s:
            return s.execute(
                select(func.count()).where(
                    InboundMessage.status == "filing",
                    InboundMessage.claimed_by.startswith(f"{node}:"),
                )
            ).scalar_one()
    finally:
        gw.db.dispose()


def _taken_over(config: Path, detail: str) -> int:
    """How many claims' history lines contain `detail`."""
    gw = Gateway.from_config(load(config))
    try:
        with gw.db.read() as s:
            return s.execute(
                select(func.count()).where(InboundMessageEvent.detail.contains(detail))
            ).scalar_one()
    finally:
        gw.db.dispose()


def test_kill_9_under_load_then_restart_files_everything_once_within_a_minute(
    tmp_path, empty_database_url
):
    port = free_port()
    config = _node(tmp_path, empty_database_url, "n1", tmp_path / "storage", port)
    _install(config)
    load = SmtpLoad(port)
    with serving(config) as proc:
        load.start()
        load.wait_for(60)
        orphaned = _kill_node_holding_claims(config, proc.pid, "n1")
        proc.wait(10)
    load.stop()
    acknowledged = list(load.acknowledged)
    with serving(config):
        seen, seconds = wait_until_filed(config, acknowledged, timeout=60)
    print(
        f"\n{len(acknowledged)} acknowledged, {orphaned} claimed by the killed worker; "
        f"all filed {seconds:.1f} s after the restart"
    )
    assert_filed_once(seen, acknowledged)
    # Taken back at once by the restarted node, not after the dead worker's lease.
    assert seconds < LEASE.total_seconds()
    assert _taken_over(config, "taken over from n1:") == orphaned


def test_one_of_two_nodes_killed_mid_load_the_other_files_its_mail(tmp_path, empty_database_url):
    if empty_database_url.startswith("sqlite"):
        pytest.skip("several nodes share one PostgreSQL database")
    storage = tmp_path / "shared-storage"  # the storage every node shares (README)
    port_a, port_b = free_port(), free_port()
    config_a = _node(tmp_path, empty_database_url, "node-a", storage, port_a)
    config_b = _node(tmp_path, empty_database_url, "node-b", storage, port_b)
    _install(config_a)
    load = SmtpLoad(port_a)
    with serving(config_b) as node_b, serving(config_a) as node_a:
        load.start()
        load.wait_for(60)
        orphaned = _kill_node_holding_claims(config_a, node_a.pid, "node-a")
        node_a.wait(10)
        killed_at = time.monotonic()
        load.stop()
        acknowledged = list(load.acknowledged)
        seen, _ = wait_until_filed(config_b, acknowledged, timeout=90)
        seconds = time.monotonic() - killed_at
        node_b.send_signal(signal.SIGTERM)
        assert node_b.stderr is not None
        logged = [json.loads(line) for line in node_b.stderr.read().splitlines()]
    print(
        f"\n{len(acknowledged)} acknowledged by node-a, {orphaned} claimed by its worker; "
        f"all filed {seconds:.1f} s after it died"
    )
    assert_filed_once(seen, acknowledged)
    assert seconds < 90
    assert _taken_over(config_b, "taken over from node-a:") == orphaned
    takeovers = [e for e in logged if e["event"] == "takeover"]
    assert sum(len(e["ids"]) for e in takeovers) == orphaned
    assert all(e["previous_holder"].startswith("node-a:") for e in takeovers)
    assert all(e["by"].startswith("node-b:") for e in takeovers)

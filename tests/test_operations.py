"""The operations HTTP listener of a real `gateway serve`: /healthz, /readyz and /metrics,
fetched with urllib and, for /metrics, read by prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, make_url, text

from gateway.app import Gateway
from gateway.errors import GatewayError
from gateway.http import Child, Readiness, start_listener
from gateway.http.exposition import QueueCollector
from gateway.inbound.trust.clamav import Clamd
from gateway.storage.connections import add_connection, set_switch
from gateway.storage.probe import DatabaseProbe
from tests.conftest import load, seeded_gateway, write_config
from tests.support import FixedClock, message, pdf
from tests.test_serve import counts, free_port, serving

README = Path(__file__).resolve().parent.parent / "README.md"
# An IMAP source on this machine (give it a port), its password in the environment.
IMAP_SOURCE = {
    "host": "127.0.0.1",
    "tls": "none",
    "user": "factures",
    "password_env": "GATEWAY_TEST_IMAP_PASSWORD",
}


def documented_metrics() -> set[str]:
    """The metric names of the README's metrics table (its first column)."""
    section = README.read_text(encoding="utf-8").split("## Health checks and metrics", 1)[1]
    section = section.split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(gateway_\w+)`", section, re.MULTILINE))


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def until(condition: Callable[[], Any], seconds: float = 20.0) -> Any:
    """Poll `condition` until it returns something true; that, or the last false value."""
    deadline = time.monotonic() + seconds
    while not (result := condition()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return result


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed: (sample name, sorted labels) -> value; the families' names too,
    with the labels () and the value nan, so that an empty family is seen."""
    status, body = get(url + "/metrics")
    assert status == 200
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body):
        found[(family.name, ())] = float("nan")
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


# Sections for a serve with no worker process: nothing but serve touches the database.
NO_WORKERS: dict[str, dict[str, Any]] = {"filing": {"workers": 0}, "outbound": {"workers": 0}}


@contextmanager
def operated(
    tmp_path: Path, database_url: str, clock: FixedClock, **sections: dict[str, Any]
) -> Iterator[tuple[Path, int, str]]:
    """`serve` of a seeded gateway configured with `sections` running, its listener
    answering; yields its configuration, its SMTP port and the listener's URL. It must
    stop cleanly on SIGTERM."""
    smtp_port, http_port = free_port(), free_port()
    config = write_config(
        tmp_path, database_url, smtp={"port": smtp_port}, http={"port": http_port}, **sections
    )
    seeded_gateway(config, clock).db.dispose()
    url = f"http://127.0.0.1:{http_port}"
    with serving(config) as proc:
        assert until(lambda: _answers(url + "/healthz")), "the listener never answered"
        yield config, smtp_port, url
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def _answers(url: str) -> bool:
    try:
        return get(url)[0] == 200
    except OSError:
        return False


def test_metrics_health_and_readiness_of_a_serve_that_took_mail(tmp_path, database_url, clock):
    sent = 3
    with operated(tmp_path, database_url, clock) as (config, smtp_port, url):
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
            for i in range(sent):
                attachment = (f"f{i}.pdf", "application/pdf", pdf(f"metrics {i}"))
                smtp.sendmail(
                    "a@example.org",
                    ["compta+dupont-maconnerie@welyb.fr"],
                    message(subject=f"m{i}", attachments=[attachment]),
                )
        assert until(lambda: counts(config) == ({"filed": sent}, sent))
        status, body = get(url + "/healthz")
        assert (status, body) == (200, "ok\n")
        # The platform API is mounted on the same listener (gateway/http/api/).
        status, body = get(url + "/api/v1/openapi.json")
        assert status == 200 and "/documents" in json.loads(body)["paths"]
        status, body = get(url + "/readyz")
        ready = json.loads(body)
        assert status == 200 and ready["ready"] is True and ready["failing"] == []
        checks = {c["name"]: c for c in ready["checks"]}
        assert set(checks) == {"database", "storage", "workers"}
        assert re.search(r"worker \(pid \d+\), sender \(pid \d+\)", checks["workers"]["detail"])
        # The filing worker counts in its own process: the scrape may come just before it
        # wrote; its counts are there once they are.
        found = until(
            lambda: (
                (m := samples(url))
                and m.get(("gateway_filing_messages_total", (("status", "filed"),))) == sent
                and m
            )
        )
    assert found, "the filing worker's counts never showed"
    names = {name for name, labels in found if not labels}  # families, unlabelled samples
    documented = documented_metrics()
    assert len(documented) >= 13  # the table was found and read
    assert {n for n in documented if n.removesuffix("_total") not in names} == set()
    assert found[("gateway_smtp_connections_total", ())] >= 1
    assert found[("gateway_smtp_replies_total", (("code", "220"),))] >= 1
    assert found[("gateway_smtp_replies_total", (("code", "250"),))] >= sent
    assert found[("gateway_smtp_replies_total", (("code", "354"),))] == sent
    assert found[("gateway_smtp_acknowledgement_seconds_count", ())] == sent
    assert found[("gateway_smtp_acknowledgement_seconds_bucket", (("le", "+Inf"),))] == sent
    assert found[("gateway_filing_seconds_count", ())] == sent
    assert found[("gateway_extraction_seconds_count", ())] == sent
    assert found[("gateway_database_up", ())] == 1
    filed = ("gateway_queue_items", (("queue", "inbound_messages"), ("state", "filed")))
    waiting = ("gateway_queue_items", (("queue", "inbound_messages"), ("state", "received")))
    assert (found[filed], found[waiting]) == (sent, 0)
    oldest = ("gateway_queue_oldest_waiting_seconds", (("queue", "inbound_messages"),))
    assert found[oldest] == 0  # nothing waits any more


def _outage(database_url: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """How to make the database unreachable for the gateway, and bring it back: the SQLite
    file moved away (a fresh connection cannot open it), or the PostgreSQL database closed
    to connections and its sessions ended."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        away = path.with_name(path.name + ".away")
        return lambda: path.rename(away), lambda: away.rename(path)
    name = url.database

    def admin(*statements: str) -> None:
        engine = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                for statement in statements:
                    conn.execute(text(statement))
        finally:
            engine.dispose()

    def stop() -> None:
        admin(
            f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
        )

    return stop, lambda: admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_readyz_follows_the_database_going_and_coming_back(tmp_path, database_url, clock):
    stop_database, start_database = _outage(database_url)
    with operated(tmp_path, database_url, clock, **NO_WORKERS) as (_, _, url):
        assert get(url + "/readyz")[0] == 200
        stop_database()
        try:
            assert until(lambda: get(url + "/readyz")[0] == 503)
            status, body = get(url + "/readyz")
            failing = json.loads(body)["failing"]
            assert status == 503 and len(failing) == 1, failing
            assert failing[0].startswith("database: ")
            assert get(url + "/healthz") == (200, "ok\n")  # alive all the same
            if not database_url.startswith("sqlite"):  # SQLite's open file still reads
                assert samples(url)[("gateway_database_up", ())] == 0
        finally:
            start_database()
        assert until(lambda: get(url + "/readyz")[0] == 200)
        assert samples(url)[("gateway_database_up", ())] == 1


def test_readyz_names_an_imap_folder_no_poller_reads(tmp_path, database_url, clock, monkeypatch):
    """An IMAP server that refuses connections: the poller records the error and lets the
    mailbox go; /readyz says so, with the error, and /metrics lists the folder."""
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        imap_port = closed.getsockname()[1]
    monkeypatch.setenv("GATEWAY_TEST_IMAP_PASSWORD", "secret")
    source = {**IMAP_SOURCE, "port": imap_port}
    imap = {"sources": {"factures": source}}
    with operated(tmp_path, database_url, clock, imap=imap, **NO_WORKERS) as (_, _, url):

        def imap_failing() -> list[str]:
            status, body = get(url + "/readyz")
            failing = json.loads(body)["failing"]
            return [f for f in failing if "last error" in f] if status == 503 else []

        failing = until(imap_failing)
        assert len(failing) == 1, failing
        assert failing[0].startswith("imap factures/INBOX: no poller is reading it")
        assert "last success never" in failing[0] and "refused" in failing[0].lower()
        found = samples(url)
    taken = ("gateway_imap_messages_taken_total", (("folder", "INBOX"), ("source", "factures")))
    assert found[taken] == 0


class _Workers:
    def __init__(self, children: list[Child]) -> None:
        self.listed = children

    def children(self) -> list[Child]:
        return self.listed


def test_readiness_names_a_worker_that_is_not_running(gw: Gateway, clock: FixedClock):
    probe = DatabaseProbe(gw.config.database_url, 2.0)
    workers = _Workers([Child("worker", 41, True), Child("sender", None, False)])
    readiness = Readiness(gw.config, gw.db, probe, workers, clock)
    try:
        checks = {c.name: c for c in asyncio.run(readiness.checks())}
    finally:
        probe.dispose()
    assert checks["database"].ok and checks["storage"].ok
    assert not checks["workers"].ok and checks["workers"].detail == "not running: sender"
    workers.listed = [Child("worker", 41, True)]
    assert asyncio.run(readiness.checks())[2].ok


def test_readiness_names_a_scanner_that_does_not_answer(gw: Gateway, clock, clamd_daemon):
    """[clamav] on: /readyz says whether clamd answers (a real clamd, stopped then back):
    while it does not, every message waits, so the node cannot do its work."""
    probe = DatabaseProbe(gw.config.database_url, 2.0)
    scanners = [("clamd", Clamd(clamd_daemon.address, timeout=1).ping)]
    readiness = Readiness(gw.config, gw.db, probe, _Workers([]), clock, scanners)
    try:
        assert {c.name: c.ok for c in asyncio.run(readiness.checks())}["clamd"] is True
        with clamd_daemon.stopped():
            down = {c.name: c for c in asyncio.run(readiness.checks())}["clamd"]
        assert not down.ok and "clamd unavailable" in down.detail, down
    finally:
        probe.dispose()


def test_listener_off_or_on_a_busy_port(tmp_path, clock):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    off = Gateway.from_config(load(write_config(tmp_path, url, http={"enabled": False})), clock)
    assert asyncio.run(start_listener(off, _Workers([]), tmp_path)) is None
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        gw = Gateway.from_config(load(write_config(tmp_path, url, http={"port": port})), clock)
        with pytest.raises(GatewayError, match=rf"^http: cannot listen on 127.0.0.1:{port}: "):
            asyncio.run(start_listener(gw, _Workers([]), tmp_path))


def test_readyz_answers_while_serve_waits_for_the_database(tmp_path, clock):
    """serve started with its database away waits for it (one line a try); its listener is
    up meanwhile: alive, not ready, saying why."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"postgresql+psycopg://postgres@127.0.0.1:{closed.getsockname()[1]}/gateway"
    http_port = free_port()
    config = write_config(tmp_path, url, smtp={"port": free_port()}, http={"port": http_port})
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "-c", str(config)],
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{http_port}"
        assert until(lambda: _answers(base + "/healthz")), "the listener never answered"
        status, body = get(base + "/readyz")
        failing = json.loads(body)["failing"]
        assert status == 503
        assert failing[0].startswith("database: OperationalError: ")
        assert "workers: not running: worker, worker, sender" in failing  # filing.workers = 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_metrics_count_the_ledger_by_partner_and_the_oldest_waiting(gw, clock, tmp_path):
    """The database's part of /metrics, collected in this process: two documents placed in
    a switched folder are two deliveries queued for MEG, the first placed 10 minutes ago."""
    from tests.test_placement import ACHATS, upload

    add_connection(
        gw.db, gw.grammar, "dupont-maconnerie", "meg", "meg+macon-dupont@welyb.fr", clock.now()
    )
    set_switch(gw.db, "dupont-maconnerie", ACHATS, "meg", True, clock.now(), create_folder=True)
    clock.advance(minutes=1)
    upload(gw, clock, tmp_path, "a.pdf", pdf("ledger a"))
    clock.advance(minutes=10)
    upload(gw, clock, tmp_path, "b.pdf", pdf("ledger b"))
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in QueueCollector(gw.db, clock, [("factures", "INBOX")]).collect()
        for s in family.samples
    }
    assert found[("gateway_database_up", ())] == 1
    assert found[("gateway_deliveries", (("partner", "meg"), ("status", "queued")))] == 2
    depth = ("gateway_queue_items", (("queue", "deliveries"), ("state", "queued")))
    assert found[depth] == 2
    oldest = ("gateway_queue_oldest_waiting_seconds", (("queue", "deliveries"),))
    assert found[oldest] == 600
    taken = ("gateway_imap_messages_taken_total", (("folder", "INBOX"), ("source", "factures")))
    assert found[taken] == 0
    # Never read: no last success to show.
    assert "gateway_imap_last_success_timestamp_seconds" not in {name for name, _ in found}

"""Webhooks (issue 13, item 4): events pushed as signed POSTs to a real HTTP receiver on a
free port — signatures, retries, order per company, SSRF refusals, at least once across a
dispatcher killed mid-way."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from gateway.cli.main import cli
from gateway.clock import SystemClock
from gateway.config import ConfigError, address_refusal
from gateway.config.webhooks import EVENT_TYPES
from gateway.outbound.webhooks import resolve
from gateway.storage import events
from gateway.storage.models import WebhookDelivery
from gateway.storage.queues import webhook_deliveries
from tests.conftest import load, seeded_gateway, write_config
from tests.support import FixedClock

SECRET = "a-webhook-secret-of-some-length-1234"
DUPONT, MARTIN = 1, 2  # the seeded companies' ids


class Receiver:
    """A platform's endpoint: a threaded HTTP server on a free port that records every
    request and answers what `answer(body)` says (200 by default)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.answer: Callable[[dict[str, Any]], int] = lambda body: 200
        self.delay = 0.0
        self.in_flight = 0  # connections open (their requests recorded once handled)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                time.sleep(receiver.delay)
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                code = receiver.answer(json.loads(body))
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            # A connection is counted from its accepting (before its thread starts) to its
            # closing: a client's requests (kept alive) are all recorded by then.
            def process_request(self, request: Any, client_address: Any) -> None:
                with receiver.lock:
                    receiver.in_flight += 1
                super().process_request(request, client_address)

            def shutdown_request(self, request: Any) -> None:
                super().shutdown_request(request)
                with receiver.lock:
                    receiver.in_flight -= 1

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_idle(self, seconds: float = 10) -> None:
        """Until every connection is closed: each request on it recorded, none to come."""
        deadline = time.monotonic() + seconds
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not self.in_flight

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]

    def event_ids(self) -> list[int]:
        return [b["data"]["id"] for b in self.bodies()]


def verify(headers: dict[str, str], body: bytes, secret: bytes) -> bool:
    """What a receiver does (Standard Webhooks, written here from the spec)."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
    given = [
        s.split(",", 1)[1] for s in headers["webhook-signature"].split() if s.startswith("v1,")
    ]
    return any(hmac.compare_digest(expected, g) for g in given)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def hook_config(tmp_path: Path, url: str, **more: Any) -> dict[str, Any]:
    secret = tmp_path / "webhook-secret"
    secret.write_text(SECRET + "\n")
    return {"url": url, "secret_file": str(secret), **more}


@pytest.fixture
def hooked(tmp_path, database_url, clock, receiver):
    """A seeded gateway with one webhook to the receiver (a loopback address: allowed)."""
    url = f"http://127.0.0.1:{receiver.port}/hooks"
    path = write_config(
        tmp_path,
        database_url,
        webhooks={"ged": hook_config(tmp_path, url, allow_private=True)},
    )
    gateway = seeded_gateway(path, clock)
    yield gateway
    gateway.db.dispose()


def emit(gw, company_id: int | None, subject: int, kind: str = "document.filed") -> None:
    with gw.db.write() as s:
        events.emit(
            s,
            kind,
            cabinet_id=1,
            company_id=company_id,
            subject=subject,
            payload={"n": subject},
            now=gw.clock.now(),
        )


def drain(dispatcher) -> None:
    while dispatcher.run_once():
        pass


def statuses(gw) -> dict[int, str]:
    with gw.db.read() as s:
        return dict(s.execute(select(WebhookDelivery.event_id, WebhookDelivery.status)).all())


def test_the_event_types_are_the_same_in_the_settings_and_the_outbox():
    assert EVENT_TYPES == events.TYPES


def test_an_event_arrives_signed_and_replay_safe(hooked, receiver, clock):
    emit(hooked, DUPONT, 41)
    dispatcher = hooked.webhook_dispatcher("w1")
    drain(dispatcher)
    [(headers, body)] = receiver.received
    assert verify(headers, body, SECRET.encode())
    assert not verify(headers, body, b"another secret of the same length!!")
    # The timestamp is signed: changed, the signature no longer holds (a replay).
    assert not verify(
        {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 600)},
        body,
        SECRET.encode(),
    )
    assert headers["webhook-timestamp"] == str(int(clock.now().timestamp()))
    assert headers["content-type"] == "application/json"
    sent = json.loads(body)
    assert sent["type"] == "document.filed"
    assert sent["data"]["subject"] == 41 and sent["data"]["company_id"] == DUPONT
    assert sent["data"]["data"] == {"n": 41}
    assert headers["webhook-id"] == str(sent["data"]["id"])
    assert set(statuses(hooked).values()) == {"delivered"}
    assert dispatcher.run_once() == 0  # nothing sent twice


def test_a_500_is_retried_after_back_off_until_a_200(hooked, receiver, clock):
    answers = iter([500, 200])
    receiver.answer = lambda body: next(answers)
    emit(hooked, DUPONT, 1)
    dispatcher = hooked.webhook_dispatcher("w1")
    drain(dispatcher)
    assert len(receiver.received) == 1 and statuses(hooked) == {1: "deferred"}
    with hooked.db.read() as s:
        [row] = webhook_deliveries.rows(s)
    assert row.reason == "500 Internal Server Error"
    drain(dispatcher)
    assert len(receiver.received) == 1  # not before its time
    clock.advance(seconds=5)
    drain(dispatcher)
    assert len(receiver.received) == 2 and statuses(hooked) == {1: "delivered"}
    [first, second] = receiver.received
    assert first[0]["webhook-id"] == second[0]["webhook-id"]  # the receiver de-duplicates on it
    assert verify(*second, SECRET.encode())


def test_one_companys_failing_event_holds_back_only_that_company(hooked, receiver, clock):
    failing = {DUPONT}
    receiver.answer = lambda body: 500 if body["data"]["company_id"] in failing else 200
    emit(hooked, DUPONT, 1)
    emit(hooked, DUPONT, 2)
    emit(hooked, MARTIN, 3)
    emit(hooked, MARTIN, 4)
    dispatcher = hooked.webhook_dispatcher("w1")
    drain(dispatcher)
    # Martin's two went out in order; Dupont's first failed and its second waits.
    assert receiver.event_ids() == [1, 3, 4]
    assert statuses(hooked) == {1: "deferred", 2: "queued", 3: "delivered", 4: "delivered"}
    clock.advance(seconds=5)
    drain(dispatcher)
    assert receiver.event_ids() == [1, 3, 4, 1]
    failing.clear()
    clock.advance(seconds=10)
    drain(dispatcher)
    assert receiver.event_ids() == [1, 3, 4, 1, 1, 2]
    assert set(statuses(hooked).values()) == {"delivered"}


def test_given_up_after_its_lifetime_then_the_next_goes(hooked, receiver, clock):
    receiver.answer = lambda body: 503 if body["data"]["subject"] == 1 else 200
    emit(hooked, DUPONT, 1)
    emit(hooked, DUPONT, 2)
    dispatcher = hooked.webhook_dispatcher("w1")
    for _ in range(50):  # past the two days of [webhooks.ged] lifetime_seconds
        drain(dispatcher)
        clock.advance(hours=1)
    assert statuses(hooked) == {1: "failed", 2: "delivered"}
    with hooked.db.read() as s:
        [state] = webhook_deliveries.states(s, ["ged"])
    assert state.counts["failed"] == 1 and state.counts["delivered"] == 1
    assert state.last_failure is not None and "gave up" in state.last_failure
    # By hand: queued again, and sent.
    receiver.answer = lambda body: 200
    failed_id = next(r.id for r in webhook_deliveries_rows(hooked) if r.status == "failed")
    with hooked.db.write() as s:
        webhook_deliveries.retry(s, failed_id, clock.now())
    drain(dispatcher)
    assert statuses(hooked) == {1: "delivered", 2: "delivered"}


def webhook_deliveries_rows(gw):
    with gw.db.read() as s:
        return webhook_deliveries.rows(s)


def test_a_cabinet_scoped_webhook_with_a_type_filter(tmp_path, database_url, clock, receiver):
    url = f"http://127.0.0.1:{receiver.port}/"
    hook = hook_config(
        tmp_path, url, allow_private=True, cabinet="aecconseil", events=["delivery.failed"]
    )
    gw = seeded_gateway(write_config(tmp_path, database_url, webhooks={"ged": hook}), clock)
    try:
        emit(gw, DUPONT, 1)  # not a type it wants
        emit(gw, DUPONT, 2, "delivery.failed")
        with gw.db.write() as s:  # another cabinet's (none here): not seen
            events.emit(
                s,
                "delivery.failed",
                cabinet_id=None,
                company_id=None,
                subject=3,
                payload={},
                now=clock.now(),
            )
        drain(gw.webhook_dispatcher("w1"))
        assert [b["data"]["subject"] for b in receiver.bodies()] == [2]
    finally:
        gw.db.dispose()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hooks",
        "http://10.1.2.3/hooks",
        "https://192.168.0.10/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
    ],
)
def test_a_private_address_is_refused_at_start(tmp_path, url):
    path = write_config(tmp_path, "sqlite:///x.db", webhooks={"ged": hook_config(tmp_path, url)})
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert "webhooks.ged.url" in str(caught.value) and "allow_private" in str(caught.value)
    allowed = hook_config(tmp_path, url, allow_private=True)
    assert load(write_config(tmp_path, "sqlite:///x.db", webhooks={"ged": allowed})).webhooks


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("8.8.8.8", False),
        ("2001:4860:4860::8888", False),
        ("100.64.0.1", True),  # shared (carrier-grade NAT)
        ("64:ff9b::a00:1", True),  # NAT64 of 10.0.0.1
        ("2002:7f00:1::", True),  # 6to4 of 127.0.0.1
        ("fc00::1", True),
        ("224.0.0.1", True),
    ],
)
def test_address_refusals(address, refused):
    assert (address_refusal(address) is not None) == refused


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"url": "ftp://ged.example/"}, "http:// or https://"),
        ({"url": "https://u:p@ged.example/"}, "no user or password"),
        ({"url": "https://ged.example/", "events": ["document.eaten"]}, "unknown event type"),
        ({"url": "https://ged.example/"}, "exactly one of secret_env"),
    ],
)
def test_bad_webhook_settings_name_the_key(tmp_path, table, says):
    path = write_config(tmp_path, "sqlite:///x.db", webhooks={"ged": table})
    with pytest.raises(ConfigError, match=says):
        load(path)


def test_a_name_resolving_to_a_private_address_is_refused_at_send(
    tmp_path, database_url, clock, receiver
):
    """Checked at each send, after resolving (DNS rebinding): localhost is loopback, and a
    name that resolves to 10.0.0.5 today is refused though it passed at start."""
    hooks = {
        "local": hook_config(tmp_path, f"http://localhost:{receiver.port}/"),
        "rebound": hook_config(tmp_path, "https://rebound.example/hooks"),
    }
    gw = seeded_gateway(write_config(tmp_path, database_url, webhooks=hooks), clock)
    try:
        emit(gw, DUPONT, 1)

        def resolver(host: str, port: int) -> list[str]:
            return (
                ["93.184.215.14", "10.0.0.5"] if host == "rebound.example" else resolve(host, port)
            )

        drain(gw.webhook_dispatcher("w1", resolver=resolver))
        assert receiver.received == []
        reasons = {r.webhook: r.reason for r in webhook_deliveries_rows(gw)}
        assert "localhost" in reasons["local"] and "loopback" in reasons["local"]
        assert "10.0.0.5 is a private address" in reasons["rebound"]
        assert {r.status for r in webhook_deliveries_rows(gw)} == {"deferred"}
    finally:
        gw.db.dispose()


def test_at_least_once_across_a_dispatcher_killed_mid_way(hooked, receiver, tmp_path):
    """`gateway webhooks run` killed (SIGKILL) while sending; started again once its leases
    ran out: every event arrives (some twice, perhaps), none lost, each company in order."""
    for n in range(12):
        emit(hooked, DUPONT if n % 2 else MARTIN, n + 1)
    receiver.delay = 0.2
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    command = [sys.executable, "-m", "gateway", "webhooks", "run", "-c", str(hooked.config.path)]
    process = subprocess.Popen(command, env=env)
    try:
        deadline = time.monotonic() + 30
        while len(receiver.received) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(receiver.received) >= 3
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    # The dead process's last POST may still be inside the receiver (its `delay`), to be
    # recorded after it; the leases run out 30 s later, long after the receiver is done:
    # wait for that before faking those 30 s with the clock, or that POST would be recorded
    # after the new process's later ones (the receiver records at the end, not on arrival).
    receiver.wait_idle()
    got_before = len(receiver.received)
    assert got_before < 12  # killed mid-way
    # Started again later: a new process takes over what the dead one held.
    hooked.clock = FixedClock(SystemClock().now() + timedelta(seconds=31))
    receiver.delay = 0
    drain(hooked.webhook_dispatcher("w2"))
    ids = receiver.event_ids()
    assert set(ids) == set(range(1, 13))
    for company in (DUPONT, MARTIN):
        mine = [
            i
            for i, b in zip(ids, receiver.bodies(), strict=True)
            if b["data"]["company_id"] == company
        ]
        assert mine == sorted(mine)  # in order, a repeat right after its first sending
    assert set(statuses(hooked).values()) == {"delivered"}


def test_the_cli_lists_the_webhooks_and_says_where_each_stands(hooked, receiver):
    receiver.answer = lambda body: 500
    emit(hooked, DUPONT, 1)
    drain(hooked.webhook_dispatcher("w1"))
    runner = CliRunner()
    c = ["-c", str(hooked.config.path)]
    listed = runner.invoke(cli, ["webhooks", "list", "--json", *c])
    assert listed.exit_code == 0, listed.output
    [hook] = json.loads(listed.output)
    assert hook["name"] == "ged" and hook["url"].endswith("/hooks") and hook["events"] == "(all)"
    status = runner.invoke(cli, ["webhooks", "status", *c])
    assert status.exit_code == 0, status.output
    assert "500 Internal Server Error" in status.output
    [row] = webhook_deliveries_rows(hooked)
    refused = runner.invoke(cli, ["webhooks", "retry", str(row.id), *c])
    assert refused.exit_code == 1 and "deferred" in refused.output  # only a failed one


def test_a_row_whose_lease_ran_out_in_a_batch_is_not_sent_after_its_later_events(
    hooked, receiver, clock
):
    """w1 claims a row per company and POSTs them one after the other; while its first POST
    hangs past the leases, w2 takes over and sends DUPONT's 2 then 3. w1 then must not send
    its 2 (a repeat after a later event of its company): it checks its lease before each POST."""
    emit(hooked, MARTIN, 1)
    emit(hooked, DUPONT, 2)
    emit(hooked, DUPONT, 3)
    w1, w2 = hooked.webhook_dispatcher("w1"), hooked.webhook_dispatcher("w2")
    hung: list[int] = []

    def answer(body: dict[str, Any]) -> int:
        if not hung:  # w1's first POST: hangs past the leases, meanwhile w2 runs
            hung.append(body["data"]["id"])
            clock.advance(seconds=31)
            drain(w2)
        return 200

    receiver.answer = answer
    drain(w1)
    ids = receiver.event_ids()
    assert hung == [1] and set(ids) == {1, 2, 3}
    dupont = [i for i in ids if i != 1]
    assert dupont == [2, 3]
    assert set(statuses(hooked).values()) == {"delivered"}

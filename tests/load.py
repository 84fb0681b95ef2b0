"""For tests that kill or starve a running gateway: SMTP clients that keep sending while it
happens (each message with its own PDF, so a document filed twice shows), what they were
told, and what the database holds in the end."""

from __future__ import annotations

import smtplib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from gateway.app import Gateway
from gateway.storage.models import Document, InboundMessage
from tests.conftest import load
from tests.support import message, pdf


@dataclass
class SmtpLoad:
    """`clients` threads sending to `port` until `stop()`; a refused or dropped connection
    (the server killed) is retried after a pause. `acknowledged`: the queue ids of every
    250; `replies`: every other reply code seen."""

    port: int
    clients: int = 3
    acknowledged: list[str] = field(default_factory=list)
    replies: Counter[int] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> SmtpLoad:
        self._threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True)
            for n in range(self.clients)
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.acknowledged) >= count, (len(self.acknowledged), self.replies)

    def _client(self, n: int) -> None:
        sent = 0
        while not self._stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as smtp:
                    while not self._stop.is_set():
                        sent += 1
                        name = f"c{n}-{sent}-{time.monotonic_ns()}"
                        self._send(smtp, name)
            except (OSError, smtplib.SMTPException):
                time.sleep(0.1)  # the server is gone or turned us away: come back

    def _send(self, smtp: smtplib.SMTP, name: str) -> None:
        data = message(subject=name, attachments=[(f"{name}.pdf", "application/pdf", pdf(name))])
        smtp.ehlo_or_helo_if_needed()
        smtp.mail("fournisseur@example.org")
        code, _ = smtp.rcpt("compta+dupont-maconnerie@welyb.fr")
        if code != 250:
            self._note(code)
            smtp.rset()
            return
        code, reply = smtp.data(data)
        if code == 250:
            queue_id = reply.decode().rsplit(" ", 1)[-1]
            with self._lock:
                self.acknowledged.append(queue_id)
        else:
            self._note(code)

    def _note(self, code: int) -> None:
        with self._lock:
            self.replies[code] += 1


@dataclass(frozen=True)
class Outcome:
    """What the database says of the messages acknowledged."""

    statuses: Counter[str]  # of the acknowledged messages
    unfinished: int  # messages of any kind still received or filing
    documents: int  # documents filed from the acknowledged messages
    distinct_documents: int  # … counted by content


def outcome(config: Path, acknowledged: list[str]) -> Outcome:
    gw = Gateway.from_config(load(config))
    try:
        with gw.db.read() as s:
            rows = dict(
                s.execute(
                    select(InboundMessage.queue_id, InboundMessage.status).where(
                        InboundMessage.queue_id.in_(acknowledged)
                    )
                ).all()
            )
            unfinished = s.execute(
                select(func.count()).where(InboundMessage.status.in_(["received", "filing"]))
            ).scalar_one()
            docs = s.execute(
                select(func.count(), func.count(func.distinct(Document.sha256)))
                .select_from(Document)
                .join(InboundMessage, Document.inbound_message_id == InboundMessage.id)
                .where(InboundMessage.queue_id.in_(acknowledged))
            ).one()
    finally:
        gw.db.dispose()
    statuses = Counter(rows.get(q, "missing") for q in acknowledged)
    return Outcome(statuses, unfinished, docs[0], docs[1])


def wait_until_filed(
    config: Path, acknowledged: list[str], timeout: float
) -> tuple[Outcome, float]:
    """Poll until every acknowledged message is filed and nothing is left unfinished; the
    last outcome and the seconds it took."""
    started = time.monotonic()
    while True:
        seen = outcome(config, acknowledged)
        done = seen.statuses == Counter({"filed": len(acknowledged)}) and seen.unfinished == 0
        if done or time.monotonic() - started > timeout:
            return seen, time.monotonic() - started
        time.sleep(0.5)


def assert_filed_once(seen: Outcome, acknowledged: list[str]) -> None:
    """Every acknowledged message filed, each exactly once, and nothing left to file."""
    assert seen.statuses == Counter({"filed": len(acknowledged)}), seen
    assert seen.unfinished == 0, seen
    assert seen.documents == seen.distinct_documents == len(acknowledged), seen

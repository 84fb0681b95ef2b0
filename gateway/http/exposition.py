"""/metrics: what every process of this serve counted (gateway/metrics.py, summed over the
processes by `AllProcesses`) and what the database says at scrape time (`QueueCollector`).

The database's part is read when Prometheus scrapes, through the read-only listings
(gateway/storage/listings/queues.py, the same that `gateway status` prints): a few grouped
counts, one query per queue. When the database does not answer, that part is left out and
`gateway_database_up` says 0; what the processes counted is still there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry, Metric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.clock import Clock, as_utc
from gateway.metrics import AllProcesses
from gateway.storage.db import Database, one_line
from gateway.storage.listings.inbound import imap_folder_states
from gateway.storage.listings.queues import deliveries_by_partner, queue_summaries

log = structlog.get_logger("gateway.http")


class QueueCollector(Collector):
    def __init__(self, db: Database, clock: Clock, imap_folders: Sequence[tuple[str, str]]):
        self.db = db
        self.clock = clock
        self.imap_folders = list(imap_folders)

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "gateway_database_up", "1 when the database answered this scrape's queries, else 0."
        )
        try:
            queues = queue_summaries(self.db)
            partners = deliveries_by_partner(self.db)
            imap = imap_folder_states(self.db, self.imap_folders)
        except Exception as exc:
            log.warning("metrics_database_failed", error=one_line(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        now = self.clock.now()
        items = GaugeMetricFamily(
            "gateway_queue_items",
            "Items in each queue (inbound_messages, deliveries, bot_mail_forwards) by state.",
            labels=["queue", "state"],
        )
        oldest = GaugeMetricFamily(
            "gateway_queue_oldest_waiting_seconds",
            "Age of each queue's oldest item still waiting for work (0: none waiting).",
            labels=["queue"],
        )
        for q in queues:
            for state, count in q.states.items():
                items.add_metric([q.queue, state], count)
            age = (now - as_utc(q.oldest_waiting_at)).total_seconds() if q.oldest_waiting_at else 0
            oldest.add_metric([q.queue], max(0.0, age))
        deliveries = GaugeMetricFamily(
            "gateway_deliveries", "Deliveries by partner and status.", labels=["partner", "status"]
        )
        for row in partners:
            deliveries.add_metric([row.partner, row.status], row.count)
        last_success = GaugeMetricFamily(
            "gateway_imap_last_success_timestamp_seconds",
            "When each IMAP folder last had a batch taken (Unix time; absent: never).",
            labels=["source", "folder"],
        )
        taken = CounterMetricFamily(
            "gateway_imap_messages_taken",
            "Messages taken from each IMAP folder, under every UIDVALIDITY.",
            labels=["source", "folder"],
        )
        failures = GaugeMetricFamily(
            "gateway_imap_consecutive_failures",
            "Sessions of each IMAP folder that ended in an error since its last whole pass.",
            labels=["source", "folder"],
        )
        failing = GaugeMetricFamily(
            "gateway_imap_failing",
            "1 when an IMAP folder is failing (3 sessions or more in a row ended in an error), "
            "with the provider's error code (AADSTS…, invalid_grant) when there is one.",
            labels=["source", "folder", "error_code"],
        )
        for folder in imap:
            where = [folder.source, folder.folder]
            if folder.last_sync_at is not None:
                stamp = as_utc(folder.last_sync_at).timestamp()
                last_success.add_metric(where, stamp)
            taken.add_metric(where, folder.taken)
            failures.add_metric(where, folder.failures)
            failing.add_metric([*where, folder.error_code or ""], 1 if folder.failing else 0)
        yield from (items, oldest, deliveries, last_success, taken, failures, failing)


def metrics_registry(
    directory: Path, db: Database, clock: Clock, imap_folders: Sequence[tuple[str, str]]
) -> CollectorRegistry:
    """What /metrics shows: every process's counts, then the database's figures."""
    registry = CollectorRegistry()
    registry.register(AllProcesses(directory))
    registry.register(QueueCollector(db, clock, imap_folders))
    return registry

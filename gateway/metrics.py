"""The gateway's Prometheus metrics, every one defined here (the README lists them).

Stages count with them directly (`metrics.SMTP_REPLIES.labels("250").inc()`): the metric
objects are module-level, as prometheus_client's own idiom has it (its registry is the one
global), so counting needs no part of the HTTP listener. What is read from the database at
scrape time (queue depths, IMAP checkpoints) is not here: gateway/http/exposition.py asks
the database when /metrics is fetched.

Several processes, one scrape. `gateway serve` runs SMTP itself and files, sends and reads
IMAP in child processes, which count too. prometheus_client's multiprocess mode has each
process write its values to memory-mapped files in one directory, named by the environment
variable PROMETHEUS_MULTIPROC_DIR; which kind of value a process keeps is decided when
prometheus_client is first imported, from that variable. So:

- `serve` empties a directory of its own (`fresh_directory`, under the storage folder's
  `run/<node>/metrics`) and starts its workers with the variable naming it (`use_directory`
  sets it in serve's environment, which the children inherit): they write files from their
  first import on, and so do the DKIM signing helpers they spawn.
- `serve` itself imported prometheus_client (through the stages) before it read its
  configuration, so it keeps its own values in memory. `AllProcesses` adds them to the sums
  of the files when /metrics is read, skipping files of serve's own pid, so a serve started
  with the variable already set is not counted twice.
- A dead process's files stay (its counts still belong in the totals); `AllProcesses`
  passes its pid to `mark_process_dead` (which drops what only the living report: the
  "live" gauges) and the directory is emptied at the next start of serve.

Any other command (`gateway worker` run by hand, the CLI) counts in memory and exposes
nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import REGISTRY, Counter, Histogram, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

# prometheus_client's multiprocess module is not annotated: its two calls below say so.

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds: a group commit is milliseconds; a slow disk or database shows as the tail.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Seconds: extraction and filing of one message, from a plain PDF to a large ZIP archive.
WORK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# -- SMTP intake (the serve process) -----------------------------------------------------------
SMTP_CONNECTIONS = Counter(
    "gateway_smtp_connections", "SMTP connections accepted (refused ones while stopping too)."
)
SMTP_REPLIES = Counter(
    "gateway_smtp_replies", "SMTP replies sent, by reply code (greetings included).", ["code"]
)
SMTP_ACKNOWLEDGEMENT_SECONDS = Histogram(
    "gateway_smtp_acknowledgement_seconds",
    "From the end of a message's DATA to its 250 (stored durably, group commit included).",
    buckets=LATENCY_BUCKETS,
)

# -- filing (the `gateway worker` processes) ---------------------------------------------------
FILING_MESSAGES = Counter(
    "gateway_filing_messages",
    "Messages a filing worker finished, by final status (filed, partly_filed, duplicate, "
    "rejected, bot_mail, bounce, held).",
    ["status"],
)
FILING_SECONDS = Histogram(
    "gateway_filing_seconds",
    "Filing one message: reading it, extracting, storing its documents, and the batch's "
    "write transaction.",
    buckets=WORK_BUCKETS,
)
EXTRACTION_SECONDS = Histogram(
    "gateway_extraction_seconds",
    "Extracting one message's documents (MIME, archives, TNEF).",
    buckets=WORK_BUCKETS,
)
BODY_PDF_SECONDS = Histogram(
    "gateway_body_pdf_seconds",
    "Rendering the body of a message with no document as PDF (or finding it has one).",
    buckets=WORK_BUCKETS,
)

# -- sending (the `gateway sender` processes and their signing helpers) ------------------------
DKIM_SIGNATURES = Counter(
    "gateway_dkim_signatures",
    "DKIM signatures made, by signing domain and algorithm.",
    ["domain", "algorithm"],
)


def fresh_directory(path: Path) -> Path:
    """An empty directory at `path` for the multiprocess files (what an earlier serve left
    there is removed: its processes are gone)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def use_directory(path: Path) -> None:
    """Processes started from now on by this one write their metrics to `path`."""
    os.environ[MULTIPROCESS_ENV] = str(path)


class AllProcesses(Collector):
    """The metrics of this process (its registry) and of every process that wrote to
    `directory`, summed by name and labels: one family per metric, as Prometheus wants."""

    def __init__(self, directory: Path, own: Collector = REGISTRY) -> None:
        self.directory = directory
        self.own = own

    def collect(self) -> Iterable[Metric]:
        files = []
        for path in self.directory.glob("*.db"):
            pid = _pid_of(path)
            if pid == os.getpid():
                continue  # counted in memory, below
            if pid is not None and not _exists(pid):
                mark_process_dead(pid, str(self.directory))  # type: ignore[no-untyped-call]
                if not path.exists():
                    continue  # a live gauge of the dead, just removed
            files.append(str(path))
        merged = MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        others: dict[str, Metric] = {m.name: m for m in merged}
        for family in self.own.collect():
            yield _summed(family, others.pop(family.name, None))
        yield from others.values()


def _summed(mine: Metric, theirs: Metric | None) -> Metric:
    """`mine` with `theirs`'s samples added (same sample name and labels: summed). The
    `_created` samples go: in a sum of processes they mean nothing (and multiprocess mode
    has none)."""
    totals: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    samples = [*mine.samples, *(theirs.samples if theirs else ())]
    for sample in samples:
        if sample.name.endswith("_created"):
            continue
        key = (sample.name, tuple(sorted(sample.labels.items())))
        totals[key] = totals.get(key, 0.0) + sample.value
    merged = Metric(mine.name, mine.documentation, mine.type, mine.unit)
    for (name, labels), value in totals.items():
        merged.add_sample(name, dict(labels), value)
    return merged


def _pid_of(path: Path) -> int | None:
    """The pid in a multiprocess file's name (`counter_1234.db`, `gauge_livesum_1234.db`)."""
    tail = path.stem.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's: alive
    return True

"""The extraction sandbox's batch (`Sandbox.run_many`, gateway/inbound/sandbox.py): a filing
batch's messages go to the child back to back; one over its budget fails alone, in its place,
and the messages after it are extracted by a fresh child."""

from __future__ import annotations

import io
import os
import signal
import zipfile

from gateway.inbound.extraction import Extraction, ExtractionLimits
from gateway.inbound.sandbox import ExtractionSandbox, OverBudget
from tests.support import message, pdf
from tests.test_hostile_messages import _hostile


def invoice(i: int) -> bytes:
    return message(
        subject=f"Facture {i}",
        attachments=[(f"facture-{i}.pdf", "application/pdf", pdf(f"Facture {i}"))],
    )


def memory_hog() -> bytes:
    """A ZIP within every extraction limit whose 90 MB member does not fit 128 MB."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("scan.pdf", b"%PDF-1.4\n" + os.urandom(1_100_000) + b"\0" * 90_000_000)
    return message(attachments=[("scans.zip", "application/zip", archive.getvalue())])


def names(result: Extraction | Exception) -> list[str]:
    assert isinstance(result, Extraction), result
    return [d.filename for d in result.documents]


def test_a_batch_is_extracted_in_order_each_failure_in_its_place() -> None:
    sandbox = ExtractionSandbox(ExtractionLimits(), timeout_seconds=2, memory_limit_mb=128)
    try:
        batch = [invoice(0), _hostile(), invoice(1), memory_hog(), invoice(2)]
        results = sandbox.extract_many(batch)
        assert len(results) == 5
        assert names(results[0]) == ["facture-0.pdf"]
        assert isinstance(results[1], OverBudget)
        assert "extraction.timeout_seconds" in str(results[1])
        assert names(results[2]) == ["facture-1.pdf"]
        assert isinstance(results[3], OverBudget)
        assert "extraction.memory_limit_mb" in str(results[3])
        assert names(results[4]) == ["facture-2.pdf"]
        # The sandbox goes on after its batch, alone or in a batch.
        assert names(sandbox.extract(invoice(3))) == ["facture-3.pdf"]
        assert [names(r) for r in sandbox.extract_many([invoice(4), invoice(5)])] == [
            ["facture-4.pdf"],
            ["facture-5.pdf"],
        ]
    finally:
        sandbox.close()


def test_a_batch_larger_than_the_pipe_does_not_wedge() -> None:
    """Messages and results of several MB each: the child writes results while the parent
    still writes messages; neither may wait on the other's full pipe."""
    big = [
        message(attachments=[(f"scan-{i}.pdf", "application/pdf", pdf("x") + os.urandom(3 << 20))])
        for i in range(6)
    ]
    sandbox = ExtractionSandbox(ExtractionLimits(), timeout_seconds=20, memory_limit_mb=1024)
    try:
        results = sandbox.extract_many(big)
        assert [names(r) for r in results] == [[f"scan-{i}.pdf"] for i in range(6)]
    finally:
        sandbox.close()


def test_an_empty_batch_starts_nothing() -> None:
    sandbox = ExtractionSandbox(ExtractionLimits(), timeout_seconds=2, memory_limit_mb=128)
    assert sandbox.extract_many([]) == []
    assert sandbox._child is None


def test_a_child_killed_between_batches_is_not_the_next_messages_fault() -> None:
    """Killed by the OOM killer or by hand while idle: the next batch gets a fresh child, and
    its first message is extracted (not held as over its memory budget)."""
    sandbox = ExtractionSandbox(ExtractionLimits(), timeout_seconds=10, memory_limit_mb=512)
    try:
        assert names(sandbox.extract(invoice(0))) == ["facture-0.pdf"]
        child = sandbox._child
        assert child is not None and child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(5)
        results = sandbox.extract_many([invoice(1), invoice(2)])
        assert [names(r) for r in results] == [["facture-1.pdf"], ["facture-2.pdf"]]
        os.kill(sandbox._child.pid, signal.SIGKILL)  # type: ignore[union-attr]
        sandbox._child.join(5)  # type: ignore[union-attr]
        assert names(sandbox.extract(invoice(3))) == ["facture-3.pdf"]
    finally:
        sandbox.close()

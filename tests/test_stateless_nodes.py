"""Stateless nodes (issue 14): documents and raw mail in S3-compatible storage — a real one,
`rclone serve s3` (tests/s3_server.py) — so that a node keeps nothing another node needs.

In one process: mail taken over SMTP is filed with its bytes in the bucket and nothing in the
node's folder; the object store down is a 451 and a wait, never a loss. With real processes on
PostgreSQL: two nodes with folders of their own, one killed mid-load and its folder deleted,
the other files everything it acknowledged, exactly once."""

from __future__ import annotations

import asyncio
import shutil
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.app import Gateway
from gateway.http.health import Readiness
from gateway.storage.accounts import NotFound
from gateway.storage.listings.documents import document_content
from gateway.storage.models import Document, InboundMessage
from gateway.storage.probe import DatabaseProbe
from gateway.storage.rawmail import ObjectSegments
from tests.conftest import load, seeded_gateway, write_config
from tests.load import SmtpLoad, assert_filed_once, wait_until_filed
from tests.s3_server import S3Server, s3_storage
from tests.support import FixedClock, RunningServer, file_all, message, pdf
from tests.test_operations import _Workers
from tests.test_serve import free_port
from tests.test_takeover import _install, _kill_node_holding_claims, _taken_over, serving


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def _s3_gateway(
    tmp_path: Path, database_url: str, server: S3Server, bucket: str, clock: FixedClock
) -> Gateway:
    config = write_config(tmp_path, database_url, **s3_storage(server, bucket, tmp_path / "node"))
    return seeded_gateway(config, clock)


def test_mail_taken_by_smtp_is_filed_with_every_byte_in_the_bucket(
    tmp_path, database_url, s3_server, s3_bucket, clock
):
    gw = _s3_gateway(tmp_path, database_url, s3_server, s3_bucket, clock)
    invoice = pdf("Facture S3-1")
    server = RunningServer(gw).start()
    try:
        with server.client() as smtp:
            refused = smtp.sendmail(
                "fournisseur@example.org",
                ["compta+dupont-maconnerie@welyb.fr"],
                message(attachments=[("facture.pdf", "application/pdf", invoice)]),
            )
        assert refused == {}
    finally:
        server.stop()
    assert file_all(gw) == 1
    with gw.db.read() as s:
        row = s.execute(select(InboundMessage)).scalar_one()
        document = s.execute(select(Document)).scalar_one()
    assert row.status == "filed"
    # The raw message is an object of its own (one per group commit), read back by range.
    raw = ObjectSegments(gw.objects, "reader").read(row.spool_segment, row.spool_offset, row.size)  # type: ignore[arg-type]
    assert b"Subject: Facture 2026-117" in raw and len(raw) == row.size
    listed = {o.object_name for o in s3_server.client().list_objects(s3_bucket, recursive=True)}
    assert f"gateway/spool/{row.spool_segment}" in listed
    assert gw.blobs.where(document.sha256) == (
        f"s3://{s3_bucket}/gateway/documents/{document.sha256[:2]}/{document.sha256[2:4]}/"
        f"{document.sha256}"
    )
    _, chunks = document_content(gw.db, gw.blobs, document.id)
    assert b"".join(chunks) == invoice
    gw.blobs.delete(document.sha256)  # bytes gone from the bucket: said before any chunk
    with pytest.raises(NotFound, match="missing from the store"):
        document_content(gw.db, gw.blobs, document.id)
    # Nothing of the mail is in the node's own folder: it could be lost without loss.
    assert _files_under(gw.config.storage_path) == []


def test_object_store_down_is_451_and_a_wait_then_everything_is_filed(
    tmp_path, database_url, s3_server, s3_bucket, clock
):
    gw = _s3_gateway(tmp_path, database_url, s3_server, s3_bucket, clock)
    server = RunningServer(gw).start()
    before = message(
        subject="before", attachments=[("a.pdf", "application/pdf", pdf("before the outage"))]
    )
    during = message(
        subject="during", attachments=[("b.pdf", "application/pdf", pdf("during the outage"))]
    )
    try:
        with server.client() as smtp:
            smtp.sendmail("fournisseur@example.org", ["compta+dupont-maconnerie@welyb.fr"], before)
        with s3_server.stopped():
            with server.client() as smtp, pytest.raises(smtplib.SMTPDataError) as refused:
                smtp.sendmail(
                    "fournisseur@example.org", ["compta+dupont-maconnerie@welyb.fr"], during
                )
            # Acknowledged before the outage, filed during it: it waits, its tries kept.
            assert file_all(gw) == 1
            with gw.db.read() as s:
                waiting = s.execute(select(InboundMessage)).scalar_one()
            assert (waiting.status, waiting.attempts) == ("filing", 0)
            assert "waiting for the object store" in (waiting.reason or "")
        assert refused.value.smtp_code == 451, refused.value
        assert refused.value.smtp_error.startswith(b"4.3.0")
        # The store is back: the sender's retry is taken, and the waiting message filed.
        with server.client() as smtp:
            smtp.sendmail("fournisseur@example.org", ["compta+dupont-maconnerie@welyb.fr"], during)
    finally:
        server.stop()
    clock.advance(seconds=11)
    assert file_all(gw) == 2
    with gw.db.read() as s:
        statuses = s.execute(select(InboundMessage.subject, InboundMessage.status)).all()
        documents = s.execute(select(Document.filename)).scalars().all()
    assert sorted(statuses) == [("before", "filed"), ("during", "filed")]
    assert sorted(documents) == ["a.pdf", "b.pdf"]


@pytest.mark.parametrize("wrong", ["bucket", "keys"])
def test_wrong_keys_or_missing_bucket_stop_serve_in_one_line(
    tmp_path, database_url, s3_server, s3_bucket, wrong
):
    if database_url.startswith("postgresql"):
        pytest.skip("the start-up check does not depend on the database")
    sections = s3_storage(s3_server, "no-such-bucket" if wrong == "bucket" else s3_bucket, tmp_path)
    if wrong == "keys":
        (tmp_path / "s3-credentials").write_text(
            "[default]\naws_access_key_id = nobody\naws_secret_access_key = wrong\n"
        )
    config = write_config(tmp_path, database_url, **sections)
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    line = done.stderr.splitlines()[-1]  # the last word before it stopped
    assert line.startswith(f"gateway: S3 endpoint {s3_server.endpoint}"), line
    if wrong == "bucket":
        assert "'no-such-bucket': no such bucket" in line, line
    else:
        assert "storage.s3" in line and "key" in line, line


def test_one_of_two_stateless_nodes_killed_and_its_folder_lost_the_other_files_its_mail(
    tmp_path, database_url, s3_server, s3_bucket
):
    if database_url.startswith("sqlite"):
        pytest.skip("several nodes share one PostgreSQL database")
    port_a, port_b = free_port(), free_port()
    nodes = {}
    for name, port in (("node-a", port_a), ("node-b", port_b)):
        folder = tmp_path / name
        nodes[name] = write_config(
            folder,
            database_url,
            smtp={"port": port},
            filing={"workers": 1},
            outbound={"workers": 0},
            **s3_storage(s3_server, s3_bucket, folder, domains=["welyb.fr"], node_name=name),
        )
    config_a, config_b = nodes["node-a"], nodes["node-b"]
    _install(config_a)
    load_a = SmtpLoad(port_a)
    with serving(config_b) as node_b, serving(config_a) as node_a:
        load_a.start()
        load_a.wait_for(60)
        orphaned = _kill_node_holding_claims(config_a, node_a.pid, "node-a")
        node_a.wait(10)
        load_a.stop()
        # Its disk is gone with it: nothing node-b needs was there.
        shutil.rmtree(tmp_path / "node-a" / "storage")
        acknowledged = list(load_a.acknowledged)
        seen, seconds = wait_until_filed(config_b, acknowledged, timeout=90)
        node_b.terminate()
    print(
        f"\n{len(acknowledged)} acknowledged by node-a, {orphaned} claimed by its worker; "
        f"all filed by node-b {seconds:.1f} s after node-a died"
    )
    assert_filed_once(seen, acknowledged)
    assert _taken_over(config_b, "taken over from node-a:") == orphaned
    assert orphaned > 0  # so node-b filed mail node-a had acknowledged and started on
    gw = Gateway.from_config(load(config_b))
    try:
        with gw.db.read() as s:
            # (A message node-a stored but whose 250 the kill cut off is filed too.)
            shas = s.execute(select(Document.sha256)).scalars().all()
        # Every document's bytes are in the bucket, whoever filed it.
        assert len(shas) >= len(acknowledged) and all(gw.blobs.exists(sha) for sha in shas)
    finally:
        gw.db.dispose()


def test_readiness_says_whether_the_bucket_answers(
    tmp_path, database_url, s3_server, s3_bucket, clock
):
    gw = _s3_gateway(tmp_path, database_url, s3_server, s3_bucket, clock)
    probe = DatabaseProbe(gw.config.database_url, 2.0)
    readiness = Readiness(gw.config, gw.db, probe, _Workers([]), clock, (), gw.objects)
    try:
        up = {c.name: c for c in asyncio.run(readiness.checks())}["storage"]
        with s3_server.stopped():
            down = {c.name: c for c in asyncio.run(readiness.checks())}["storage"]
    finally:
        probe.dispose()
    assert up.ok and up.detail == f"s3://{s3_bucket}/gateway/ answers", up
    assert not down.ok and "unreachable" in down.detail and s3_server.endpoint in down.detail

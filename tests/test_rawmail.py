"""Raw mail as the spool keeps it (gateway/storage/rawmail.py), in a local folder and in S3
(a real S3 server, tests/s3_server.py): `read_many`, how filing reads a batch, gives each
message its own bytes, and a message whose bytes are not there fails alone. The spool
(gateway/inbound/spool.py) commits a group's rows only once its bytes are durable."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.app import Gateway
from gateway.inbound.spool import Arrival, SpoolWriter, new_queue_id
from gateway.storage import rawmail
from gateway.storage.models import InboundMessage
from gateway.storage.objects import ObjectStoreUnavailable
from gateway.storage.rawmail import FolderSegments, ObjectSegments, Segments
from tests.s3_server import S3Server
from tests.support import FixedClock, message
from tests.test_s3 import objects

DAY = datetime(2026, 11, 30, tzinfo=UTC)


def append(segments: Segments, day: datetime, group: list[bytes]) -> list[tuple[str, int]]:
    """Lay a group out and make it durable, as the spool does (without its rows)."""
    placed, make_durable = segments.lay_out(day, group)
    make_durable()
    return placed


@pytest.fixture(params=["folder", "s3"])
def segments(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Segments]:
    if request.param == "folder":
        store: Segments = FolderSegments(tmp_path / "spool", "node-a")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        store = ObjectSegments(objects(server, request.getfixturevalue("s3_bucket")), "node-a")
    yield store
    store.close()


def test_read_many_gives_each_message_its_bytes_across_groups(segments: Segments) -> None:
    groups = [[os.urandom(1000 + 37 * i + g) for i in range(5)] for g in range(3)]
    places = [
        (segment, offset, len(content))
        for group in groups
        for (segment, offset), content in zip(append(segments, DAY, group), group, strict=True)
    ]
    contents = [content for group in groups for content in group]
    # A batch takes some messages of each group, in any order.
    wanted = [7, 0, 14, 2, 9, 4, 12]
    got = segments.read_many([places[i] for i in wanted])
    assert got == [contents[i] for i in wanted]
    assert segments.read_many([]) == []


def test_a_message_whose_bytes_are_missing_fails_alone(segments: Segments) -> None:
    group = [os.urandom(500) for _ in range(3)]
    placed = append(segments, DAY, group)
    places = [(s, o, len(c)) for (s, o), c in zip(placed, group, strict=True)]
    missing = ("2026-11-30/gone.seg", 0, 10)
    short = (places[2][0], places[2][1], places[2][2] + 5000)  # past the segment's end
    got = segments.read_many([places[0], missing, places[1], short])
    assert got[0] == group[0]
    assert isinstance(got[1], OSError)
    assert got[2] == group[1]
    assert isinstance(got[3], OSError)


def test_the_store_away_fails_the_batch_as_unavailable(s3_server: S3Server, s3_bucket: str) -> None:
    segments = ObjectSegments(objects(s3_server, s3_bucket), "node-a")
    group = [os.urandom(500) for _ in range(2)]
    places = [(s, o, len(c)) for (s, o), c in zip(append(segments, DAY, group), group, strict=True)]
    with s3_server.stopped():
        got = segments.read_many(places)
    assert all(isinstance(r, ObjectStoreUnavailable) for r in got), got
    assert segments.read_many(places) == group


def test_a_group_that_fills_a_segment_makes_both_segments_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group ending one folder segment and starting the next fsyncs both (the one it
    ended used to be closed without an fsync)."""
    monkeypatch.setattr(rawmail, "SEGMENT_MAX_BYTES", 1000)
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(rawmail.os, "fsync", fsync)
    segments = FolderSegments(tmp_path / "spool", "node-a")
    group = [os.urandom(800) for _ in range(3)]
    placed, make_durable = segments.lay_out(DAY, group)
    names = sorted({segment for segment, _ in placed})
    assert len(names) == 2  # the third message went to a new segment
    make_durable()
    assert {str(tmp_path / "spool" / name) for name in names} <= set(synced)
    places = [(s, o, len(c)) for (s, o), c in zip(placed, group, strict=True)]
    assert segments.read_many(places) == group
    segments.close()


class _SlowToSync:
    """A segment store whose durable step waits for the test (or fails)."""

    def __init__(self, inner: Segments, fail: bool = False) -> None:
        self.inner = inner
        self.fail = fail
        self.syncing = threading.Event()
        self.release = threading.Event()
        self.abandoned = 0

    def lay_out(self, day: datetime, contents: Any) -> Any:
        placed, make_durable = self.inner.lay_out(day, contents)

        def slow() -> None:
            self.syncing.set()
            assert self.release.wait(10)
            if self.fail:
                raise OSError(28, "No space left on device")
            make_durable()

        return placed, slow

    def abandon(self) -> None:
        self.abandoned += 1
        self.inner.abandon()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _arrival(clock: FixedClock) -> Arrival:
    return Arrival(
        queue_id=new_queue_id(),
        source="smtp",
        received_at=clock.now(),
        mail_from="fournisseur@example.org",
        rcpt_tos=["compta+dupont-maconnerie@welyb.fr"],
        content=message(),
    )


def _rows(gw: Gateway) -> int:
    with gw.db.read() as s:
        return len(s.scalars(select(InboundMessage.id)).all())


@pytest.mark.parametrize("fail", [False, True], ids=["synced", "sync fails"])
def test_the_spool_commits_a_group_only_once_its_bytes_are_durable(
    gw: Gateway, clock: FixedClock, fail: bool
) -> None:
    """The rows are inserted while the bytes are made durable, and committed after: none
    is visible before, and none at all when making them durable fails."""
    segments = _SlowToSync(gw.segments("test"), fail=fail)
    writer = SpoolWriter(gw.db, segments)  # type: ignore[arg-type]
    outcome: list[Any] = []

    def store() -> None:
        try:
            outcome.append(writer.store_batch([_arrival(clock), _arrival(clock)]))
        except OSError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=store)
    thread.start()
    try:
        assert segments.syncing.wait(10)
        time.sleep(0.2)  # the insert has had time to run beside the sync
        assert _rows(gw) == 0
    finally:
        segments.release.set()
        thread.join(10)
    if fail:
        assert isinstance(outcome[0], OSError) and segments.abandoned == 1
        assert _rows(gw) == 0
        segments.fail = False  # the next group is stored as usual
        assert len(writer.store_batch([_arrival(clock)])) == 1
        assert _rows(gw) == 1
    else:
        assert len(outcome[0]) == 2 and _rows(gw) == 2
    writer.close()

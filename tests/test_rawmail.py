"""Raw mail as the spool keeps it (gateway/storage/rawmail.py), in a local folder and in S3
(a real S3 server, tests/s3_server.py): `read_many`, how filing reads a batch, gives each
message its own bytes, and a message whose bytes are not there fails alone."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.storage.objects import ObjectStoreUnavailable
from gateway.storage.rawmail import FolderSegments, ObjectSegments, Segments
from tests.s3_server import S3Server
from tests.test_s3 import objects

DAY = datetime(2026, 11, 30, tzinfo=UTC)


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
        for (segment, offset), content in zip(segments.append(DAY, group), group, strict=True)
    ]
    contents = [content for group in groups for content in group]
    # A batch takes some messages of each group, in any order.
    wanted = [7, 0, 14, 2, 9, 4, 12]
    got = segments.read_many([places[i] for i in wanted])
    assert got == [contents[i] for i in wanted]
    assert segments.read_many([]) == []


def test_a_message_whose_bytes_are_missing_fails_alone(segments: Segments) -> None:
    group = [os.urandom(500) for _ in range(3)]
    placed = segments.append(DAY, group)
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
    places = [(s, o, len(c)) for (s, o), c in zip(segments.append(DAY, group), group, strict=True)]
    with s3_server.stopped():
        got = segments.read_many(places)
    assert all(isinstance(r, ObjectStoreUnavailable) for r in got), got
    assert segments.read_many(places) == group

"""The document store's two backends (gateway/storage/blobs.py): the local folder and S3
(against a real S3 server, tests/s3_server.py). `put_many` is how filing stores a batch's
documents: all durable when it returns, once each, nothing left half-written."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.storage.blobs import BlobMissing, BlobStore, FolderBlobStore, ObjectBlobStore
from tests.s3_server import S3Server
from tests.test_s3 import objects


@pytest.fixture(params=["folder", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "folder":
        yield FolderBlobStore(tmp_path / "blobs")
        return
    server: S3Server = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    yield ObjectBlobStore(objects(server, bucket, timeout_seconds=5))


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def test_put_many_stores_each_once_readable_by_its_hash(blobs: BlobStore) -> None:
    contents = [os.urandom(20_000 + i) for i in range(7)]
    already = blobs.put(contents[0])
    blobs.put_many([*contents, contents[3], b""])  # twice the same bytes, an empty file
    for content in [*contents, b""]:
        assert blobs.exists(sha(content))
        assert blobs.get(sha(content)) == content
    assert already == sha(contents[0])
    with pytest.raises(BlobMissing):
        blobs.get(sha(b"never stored"))


def test_put_many_of_nothing_stores_nothing(blobs: BlobStore) -> None:
    blobs.put_many([])
    assert not blobs.exists(sha(b""))


def test_folder_put_many_leaves_no_temporary_file_and_keeps_existing_files(
    tmp_path: Path,
) -> None:
    store = FolderBlobStore(tmp_path / "blobs")
    first = os.urandom(1000)
    store.put(first)
    before = store.path(sha(first)).stat().st_ino
    second = os.urandom(1000)
    store.put_many([first, second, second])
    assert store.path(sha(first)).stat().st_ino == before  # not written again
    files = sorted(p.relative_to(store.root) for p in store.root.rglob("*") if p.is_file())
    assert files == sorted(Path(s[:2], s[2:4], s) for s in (sha(first), sha(second)))


def test_folder_put_many_that_fails_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = FolderBlobStore(tmp_path / "blobs")
    content = os.urandom(1000)
    # Where the file's directory should be, a file: the rename into place fails.
    s = sha(content)
    (store.root / s[:2]).mkdir(parents=True)
    (store.root / s[:2] / s[2:4]).write_bytes(b"in the way")
    with pytest.raises(OSError):
        store.put_many([os.urandom(10), content])
    assert not list(store.root.glob(".upload.*"))
    assert not store.exists(s)

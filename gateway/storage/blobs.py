"""The document store on disk: content-addressed by sha256, written durably."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20  # bytes read or written at a time: a large file never sits whole in memory
HEAD = 1 << 16  # bytes of a file kept to sniff its media type (gateway/mail/sniff.py reads 8 KiB)


@dataclass(frozen=True, slots=True)
class StoredBlob:
    sha256: str
    size: int
    head: bytes  # its first HEAD bytes


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, content: bytes) -> str:
        """Store `content` (once: same bytes, same file) and fsync it. Returns its sha256."""
        return self.put_stream([content]).sha256

    def put_file(self, file: Path | BinaryIO) -> StoredBlob:
        """Store a file (a path or an open binary file), copied a chunk at a time."""
        if isinstance(file, Path):
            with open(file, "rb") as f:
                return self.put_stream(_chunks(f))
        return self.put_stream(_chunks(file))

    def put_stream(self, chunks: Iterable[bytes]) -> StoredBlob:
        """Store the concatenated `chunks`, hashing while copying into a temporary file in
        the store, which is then fsynced and renamed into place (same bytes, same file)."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".upload.{secrets.token_hex(8)}.tmp"
        digest = hashlib.sha256()
        size = 0
        head = bytearray()
        try:
            with open(tmp, "wb") as f:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    if len(head) < HEAD:
                        head += chunk[: HEAD - len(head)]
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            sha = digest.hexdigest()
            final = self.path(sha)
            if final.exists():
                return StoredBlob(sha, size, bytes(head))
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)  # atomic: a reader never sees half a file
            fsync_dir(final.parent)
            return StoredBlob(sha, size, bytes(head))
        finally:
            tmp.unlink(missing_ok=True)

    def get(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def chunks(self, sha256: str) -> Iterator[bytes]:
        """A blob's bytes a chunk at a time (a download that never holds the whole file)."""
        with open(self.path(sha256), "rb") as f:
            yield from _chunks(f)

    def delete(self, sha256: str) -> None:
        """Remove a blob no row points at any more (a purged quarantined copy)."""
        self.path(sha256).unlink(missing_ok=True)


def _chunks(f: BinaryIO) -> Iterator[bytes]:
    while chunk := f.read(CHUNK):
        yield chunk


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

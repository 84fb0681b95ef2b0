"""The document store on disk: content-addressed by sha256, written durably."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, content: bytes) -> str:
        """Store `content` (once: same bytes, same file) and fsync it. Returns its sha256."""
        digest = hashlib.sha256(content).hexdigest()
        final = self.path(digest)
        if final.exists():
            return digest
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{digest}.{secrets.token_hex(4)}.tmp")
        with open(tmp, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)  # atomic: a reader never sees half a file
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return digest

    def get(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def delete(self, sha256: str) -> None:
        """Remove a blob no row points at any more (a purged quarantined copy)."""
        self.path(sha256).unlink(missing_ok=True)

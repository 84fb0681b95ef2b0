"""Bytes kept in S3-compatible object storage, behind one small interface.

The blob store (documents) and the spool (raw mail) of a node that keeps nothing of its own
write through an `ObjectStore`; the S3 implementation is `gateway/storage/s3.py`. Keys are
relative ("documents/ab/cd/<sha256>", "spool/2026-11-30/<segment>"); the store adds its
configured prefix.

Failures come in three kinds, because each is answered differently: `ObjectStoreUnavailable`
(the endpoint does not answer, times out or says 5xx/503 SlowDown: try again later — SMTP
answers 4xx, workers retry), `ObjectStoreMisconfigured` (wrong credentials, a missing bucket,
access denied: an admin must act — said in one line at start), `ObjectMissing` (no such key).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Protocol

from gateway.errors import GatewayError


class ObjectStoreError(GatewayError):
    """Something went wrong talking to the object store."""


class ObjectStoreUnavailable(ObjectStoreError):
    """The store does not answer now (unreachable, timeout, 5xx): retry later."""


class ObjectStoreMisconfigured(ObjectStoreError):
    """Wrong credentials, missing bucket, access denied: the message says which."""


class ObjectMissing(ObjectStoreError):
    """No object under that key."""


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key` (replacing what was there); durable when it returns."""
        ...

    def put_file(self, key: str, file: BinaryIO, size: int) -> None:
        """Store the `size` bytes of an open file from its current position, uploaded in
        parts when large (never read whole into memory)."""
        ...

    def get(self, key: str) -> bytes: ...

    def get_range(self, key: str, offset: int, size: int) -> bytes:
        """`size` bytes from `offset` (one ranged GET); ObjectStoreError if short."""
        ...

    def stream(self, key: str, chunk_size: int) -> Iterator[bytes]:
        """The object's bytes, `chunk_size` at a time."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object; no error when it is already gone."""
        ...

    def check(self) -> None:
        """At start: raise ObjectStoreMisconfigured or ObjectStoreUnavailable with one line
        that says which (bad credentials, no such bucket, endpoint unreachable)."""
        ...

    def describe(self, key: str) -> str:
        """Where an object is, for people: s3://bucket/prefix/key."""
        ...

"""Where raw messages live (R4: the raw message is always kept): spool segments.

The inbound spool (`gateway/inbound/spool.py`) stores each group commit's messages in a
segment; each `inbound_messages` row says where its bytes are (segment, offset, size). The
filing stage reads them to extract documents, the forwarder to attach the original to a bot
mail forward, the API to show a bot mail: so segments live here, below every stage.

Two backends, as for documents (gateway/storage/blobs.py):

- `FolderSegments` — the embedded default: append-only files
  `spool/<YYYY-MM-DD>/<node>-<pid>-<random>-<n>.seg` under the node's storage folder, fsynced
  before the rows commit; a segment grows across groups up to SEGMENT_MAX_BYTES.
- `ObjectSegments` — stateless nodes: each group commit is one object
  `spool/<YYYY-MM-DD>/<node>-<pid>-<random>-<n>.seg` in S3-compatible storage, PUT before the
  rows commit (an S3 PUT that returned is durable), read back with ranged GETs. Objects are
  immutable, so a segment cannot grow: one per group. Why an object per group and not the
  bytes in PostgreSQL: see benchmarks/rawmail_store.py and the README ("Stateless nodes").

Either way a row is committed only after the bytes it points at are durable, so a row never
points at missing data; bytes stored without a row (a crash between the write and the commit)
were never acknowledged and the sender retries.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from gateway.storage.blobs import fsync_dir
from gateway.storage.objects import ObjectMissing, ObjectStore, ObjectStoreUnavailable

SEGMENT_MAX_BYTES = 64 * 1024 * 1024


# Where one message's bytes are: (segment, offset, size).
Place = tuple[str, int, int]


class RawMail(Protocol):
    def read(self, segment: str, offset: int, size: int) -> bytes:
        """The `size` bytes at `offset` of `segment` (OSError when they are not all there)."""
        ...

    def read_many(self, places: Sequence[Place]) -> list[bytes | Exception]:
        """Each message's bytes, or the exception that says why not (for that message
        alone): a filing batch, read a segment at a time (opened, or fetched, once for all
        of its messages in the batch)."""
        ...


class Segments(RawMail, Protocol):
    """Where one writer (one spool) puts its groups; used from one thread at a time."""

    def lay_out(
        self, day: datetime, contents: Sequence[bytes]
    ) -> tuple[list[tuple[str, int]], Callable[[], None]]:
        """Place `contents`: (segment, offset) of each, in order, and the call that makes
        them durable (an fsync, a PUT). The spool runs that call while it inserts the rows
        that point at them, and commits the rows only once it has returned."""
        ...

    def abandon(self) -> None:
        """After a failed append: what was half-written is never referenced; the next group
        starts somewhere fresh rather than after unknown bytes."""
        ...

    def close(self) -> None: ...


def _make_durable(ended: list[BinaryIO], current: BinaryIO) -> None:
    """fsync a group's segments: those it ended (then closed, even when their fsync
    fails) and the one it goes on in."""
    for segment in ended:
        with segment:
            segment.flush()
            os.fsync(segment.fileno())
    os.fsync(current.fileno())


def segment_name(node_name: str, counter: int) -> str:
    return f"{node_name}-{os.getpid()}-{secrets.token_hex(4)}-{counter}.seg"


def safe_node_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


class FolderSegments:
    def __init__(self, directory: Path, node_name: str) -> None:
        self.directory = directory
        self.node_name = safe_node_name(node_name)
        self._file: BinaryIO | None = None
        self._segment = ""
        self._segment_day = ""
        self._counter = 0

    def read(self, segment: str, offset: int, size: int) -> bytes:
        return read_spooled(self.directory, segment, offset, size)

    def read_many(self, places: Sequence[Place]) -> list[bytes | Exception]:
        results: dict[int, bytes | Exception] = {}
        for segment, indexes in by_segment(places).items():
            try:
                with open(self.directory / segment, "rb") as f:
                    for i in indexes:
                        _, offset, size = places[i]
                        f.seek(offset)
                        results[i] = _whole(f.read(size), places[i])
            except OSError as exc:
                results.update((i, exc) for i in indexes if i not in results)
        return [results[i] for i in range(len(places))]

    def lay_out(
        self, day: datetime, contents: Sequence[bytes]
    ) -> tuple[list[tuple[str, int]], Callable[[], None]]:
        """Written here (to the page cache); durable once the returned call has fsynced
        every segment the group was written to (a group may end one and start the next)."""
        placed: list[tuple[str, int]] = []
        day_name = day.strftime("%Y-%m-%d")
        if self._file is not None and day_name != self._segment_day:
            self.close()  # yesterday's segment: durable since its last group
        f = self._file or self._open_next(day_name)
        ended: list[BinaryIO] = []
        for content in contents:
            if f.tell() > SEGMENT_MAX_BYTES:
                ended.append(f)
                f = self._open_next(day_name)
            placed.append((self._segment, f.tell()))
            f.write(content)
        f.flush()
        return placed, lambda: _make_durable(ended, f)

    def _open_next(self, day: str) -> BinaryIO:
        folder = self.directory / day
        new_folder = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        self._counter += 1
        name = segment_name(self.node_name, self._counter)
        self._file = open(folder / name, "ab")  # noqa: SIM115 - kept open across batches
        self._segment = f"{day}/{name}"
        self._segment_day = day
        # The new directory entries must be durable too, or a crash could lose the file.
        fsync_dir(folder)
        if new_folder:
            fsync_dir(self.directory)
        return self._file

    def abandon(self) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


class ObjectSegments:
    PREFIX = "spool/"

    def __init__(self, objects: ObjectStore, node_name: str) -> None:
        self.objects = objects
        self.node_name = safe_node_name(node_name)
        self._counter = 0

    def read(self, segment: str, offset: int, size: int) -> bytes:
        try:
            data = self.objects.get_range(self.PREFIX + segment, offset, size)
        except ObjectMissing as exc:
            raise OSError(f"spool segment {segment} is missing from the object store") from exc
        return _whole(data, (segment, offset, size))

    def read_many(self, places: Sequence[Place]) -> list[bytes | Exception]:
        """One ranged GET per segment, covering its messages in the batch (those of one
        SMTP group lie side by side); one GET each when they are scattered, or when the
        covering read fails (then only a message whose bytes are wrong fails)."""
        results: dict[int, bytes | Exception] = {}
        for segment, indexes in by_segment(places).items():
            start = min(places[i][1] for i in indexes)
            end = max(places[i][1] + places[i][2] for i in indexes)
            if len(indexes) > 1 and end - start <= 2 * sum(places[i][2] for i in indexes):
                try:
                    span = self.read(segment, start, end - start)
                except ObjectStoreUnavailable as exc:
                    results.update((i, exc) for i in indexes)
                    continue
                except Exception:  # read them one by one: each says why
                    pass
                else:
                    for i in indexes:
                        _, offset, size = places[i]
                        results[i] = span[offset - start : offset - start + size]
                    continue
            for i in indexes:
                try:
                    results[i] = self.read(*places[i])
                except Exception as exc:  # the store away, the segment missing or short
                    results[i] = exc
        return [results[i] for i in range(len(places))]

    def lay_out(
        self, day: datetime, contents: Sequence[bytes]
    ) -> tuple[list[tuple[str, int]], Callable[[], None]]:
        """One object for the group, durable once its PUT has returned."""
        self._counter += 1
        segment = f"{day.strftime('%Y-%m-%d')}/{segment_name(self.node_name, self._counter)}"
        placed = []
        offset = 0
        for content in contents:
            placed.append((segment, offset))
            offset += len(content)
        return placed, lambda: self.objects.put(self.PREFIX + segment, b"".join(contents))

    def abandon(self) -> None:
        pass  # nothing half-written is ever visible: a failed PUT stores nothing

    def close(self) -> None:
        pass


def read_spooled(directory: Path, segment: str, offset: int, size: int) -> bytes:
    """The `size` bytes at `offset` of spool segment `segment` under `directory`."""
    with open(directory / segment, "rb") as f:
        f.seek(offset)
        return _whole(f.read(size), (segment, offset, size))


def _whole(data: bytes, place: Place) -> bytes:
    segment, offset, size = place
    if len(data) != size:
        raise OSError(f"spool segment {segment} is short: wanted {size} bytes at {offset}")
    return data


def by_segment(places: Sequence[Place]) -> dict[str, list[int]]:
    """The indexes of `places`, by segment."""
    grouped: dict[str, list[int]] = {}
    for i, (segment, _, _) in enumerate(places):
        grouped.setdefault(segment, []).append(i)
    return grouped

"""Where raw mail goes on stateless nodes: the measurement behind the choice (issue 14).

A group commit makes its messages durable, then commits their rows; the 250s wait for it.
Three ways to do that on PostgreSQL, timed per group of G messages of ~20 KB:

  folder  today's embedded default: append to a local segment file, fsync, commit the rows
          (not stateless: the bytes are on this node's disk — the baseline);
  object  one S3 PUT of the group's bytes (an object per group), then commit the rows
          (gateway/storage/rawmail.py ObjectSegments, on the real S3Objects client);
  bytea   the bytes in PostgreSQL, inserted with the rows in the same transaction.

The S3 server is `rclone serve s3` on loopback (tests/s3_server.py), the database a fresh
one on the local PostgreSQL. Prints ms per group and messages/s of one writer.

    .venv/bin/python benchmarks/rawmail_store.py [--groups 200] [--postgres URL]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.storage.rawmail import FolderSegments, ObjectSegments  # noqa: E402
from gateway.storage.s3 import S3Objects  # noqa: E402
from tests.s3_server import S3Server  # noqa: E402

SIZE = 20_000
ROWS = """CREATE TABLE rows (id bigserial PRIMARY KEY, segment text, "offset" bigint,
size int, received_at timestamptz, content bytea)"""


@contextmanager
def scratch_database(base_url: str) -> Iterator[str]:
    name = f"bench_rawmail_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = base_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with psycopg.connect(base_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


Writer = Callable[[psycopg.Connection, list[bytes]], None]


def with_segments(segments: FolderSegments | ObjectSegments) -> Writer:
    def write(conn: psycopg.Connection, group: list[bytes]) -> None:
        now = datetime.now(UTC)
        placed, make_durable = segments.lay_out(now, group)
        make_durable()
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                'INSERT INTO rows (segment, "offset", size, received_at) VALUES (%s, %s, %s, %s)',
                [(seg, off, len(m), now) for (seg, off), m in zip(placed, group, strict=True)],
            )

    return write


def in_bytea(conn: psycopg.Connection, group: list[bytes]) -> None:
    now = datetime.now(UTC)
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO rows (size, received_at, content) VALUES (%s, %s, %s)",
            [(len(m), now, m) for m in group],
        )


def measure(url: str, write: Writer, group_size: int, groups: int) -> list[float]:
    with psycopg.connect(url) as conn:
        conn.execute("DROP TABLE IF EXISTS rows")
        conn.execute(ROWS)
        conn.commit()
        times = []
        for _ in range(groups):
            group = [os.urandom(SIZE) for _ in range(group_size)]
            started = time.perf_counter()
            write(conn, group)
            times.append(time.perf_counter() - started)
        size = conn.execute("SELECT pg_total_relation_size('rows')").fetchone()
        print(f"      table+toast after: {(size[0] if size else 0) / 1e6:.1f} MB", flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "GATEWAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ).replace("+psycopg", ""),
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, scratch_database(args.postgres) as url:
        server = S3Server(Path(tmp)).start()
        try:
            server.make_bucket("rawmail")
            objects = S3Objects(
                endpoint=server.endpoint,
                bucket="rawmail",
                access_key=server.access_key,
                secret_key=server.secret_key,
                region=server.region,
                timeout_seconds=10,
            )
            ways: dict[str, Writer] = {
                "folder": with_segments(FolderSegments(Path(tmp) / "spool", "bench")),
                "object": with_segments(ObjectSegments(objects, "bench")),
                "bytea": in_bytea,
            }
            print(f"{'group':>5} {'way':>7} {'ms/group p50':>13} {'p99':>7} {'msgs/s':>8}")
            for group_size in (1, 8, 32):
                for name, write in ways.items():
                    times = measure(url, write, group_size, args.groups)
                    p50 = statistics.median(times)
                    p99 = statistics.quantiles(times, n=100)[98]
                    rate = group_size * len(times) / sum(times)
                    print(
                        f"{group_size:>5} {name:>7} {p50 * 1000:>13.2f} {p99 * 1000:>7.2f} "
                        f"{rate:>8.0f}",
                        flush=True,
                    )
        finally:
            server.close()


if __name__ == "__main__":
    main()

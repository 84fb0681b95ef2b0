"""S3 client benchmark: boto3, obstore and minio against one real S3 server, in one run.

Starts `rclone serve s3` (tests/s3_server.py, loopback, a local folder) and runs each client
in a process of its own, so that its import time and peak RSS are its own:
  - import: seconds to import the client (a fresh interpreter each time);
  - PUT / GET of distinct 20 KB objects, ops/s, serially and from `--threads` threads
    sharing one client (as the gateway's workers would);
  - ranged GET: 4 KB from the middle of a 20 KB object, ops/s;
  - a 50 MB file streamed up (multipart, 8 MB parts) and down to a file, MB/s, and the
    process's peak RSS over its RSS before the transfer (a client that reads the file whole
    shows ~50 MB or more);
Then what each offers for robustness (read from its API, printed beside the figures).
rclone is the bottleneck for absolute rates; the comparison between clients in one run is
what counts.

    .venv/bin/python benchmarks/s3_clients.py [--seconds 2] [--threads 4] [--mb 50]

The clients are not dependencies of the gateway except the one chosen (gateway/storage/s3.py
says which and why): install the others to run this (`pip install obstore minio`).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: tests.s3_server is reached from the repo root

CLIENTS = ("boto3", "obstore", "minio")
SMALL = 20 * 1024
PART = 8 * 1024 * 1024

# What each client offers, from its documented API (checked while writing the adapters).
FEATURES = {
    "boto3": {
        "timeouts": "connect + read (botocore Config)",
        "retries": "standard/adaptive modes, max_attempts",
        "path-style": "yes (addressing_style)",
        "endpoint": "yes (endpoint_url)",
        "typed errors": "ClientError + error code; EndpointConnectionError, ReadTimeoutError",
        "multipart": "upload_fileobj / download_fileobj (threads, parts)",
        "thread-safe": "client yes (documented)",
    },
    "obstore": {
        "timeouts": "connect + request (client_options)",
        "retries": "max_retries, backoff, retry_timeout",
        "path-style": "yes (virtual_hosted_style_request=False)",
        "endpoint": "yes (endpoint)",
        "typed errors": "NotFoundError, GenericError (no S3 error code exposed)",
        "multipart": "put(file) multipart by chunk_size; get() streams",
        "thread-safe": "yes (Rust, releases the GIL)",
    },
    "minio": {
        "timeouts": "through a urllib3 PoolManager passed in",
        "retries": "urllib3 Retry passed in",
        "path-style": "yes (default for non-AWS hosts)",
        "endpoint": "yes (host:port, secure=False)",
        "typed errors": "S3Error with code (application/xml only); urllib3 errors raw",
        "multipart": "put_object(part_size) / fget/get_object streams",
        "thread-safe": "yes (documented)",
    },
}


# -- adapters: each client's way of doing the same five things -------------------------------


class Adapter:
    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def get_range(self, key: str, offset: int, size: int) -> bytes: ...
    def put_file(self, key: str, path: Path) -> None: ...
    def get_file(self, key: str, path: Path) -> None: ...


def make_adapter(name: str, server: dict[str, Any]) -> Adapter:
    if name == "boto3":
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=server["endpoint"],
            aws_access_key_id=server["key"],
            aws_secret_access_key=server["secret"],
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=5,
                read_timeout=30,
                retries={"mode": "standard", "max_attempts": 3},
                max_pool_connections=16,
                # A ranged GET against rclone carries the whole object's CRC: with
                # validation "when_supported" botocore fails it.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        transfer = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART)
        bucket = server["bucket"]

        class Boto(Adapter):
            def put(self, key: str, data: bytes) -> None:
                client.put_object(Bucket=bucket, Key=key, Body=data)

            def get(self, key: str) -> bytes:
                return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())

            def get_range(self, key: str, offset: int, size: int) -> bytes:
                r = f"bytes={offset}-{offset + size - 1}"
                return bytes(client.get_object(Bucket=bucket, Key=key, Range=r)["Body"].read())

            def put_file(self, key: str, path: Path) -> None:
                with path.open("rb") as f:
                    client.upload_fileobj(f, bucket, key, Config=transfer)

            def get_file(self, key: str, path: Path) -> None:
                with path.open("wb") as f:
                    client.download_fileobj(bucket, key, f, Config=transfer)

        return Boto()
    if name == "obstore":
        import obstore
        from obstore.store import S3Store

        store = S3Store(
            server["bucket"],
            endpoint=server["endpoint"],
            access_key_id=server["key"],
            secret_access_key=server["secret"],
            region="us-east-1",
            virtual_hosted_style_request=False,
            client_options={"allow_http": True, "timeout": "30s", "connect_timeout": "5s"},
            retry_config={"max_retries": 2, "retry_timeout": timedelta(seconds=10)},
        )

        class Obstore(Adapter):
            def put(self, key: str, data: bytes) -> None:
                obstore.put(store, key, data)

            def get(self, key: str) -> bytes:
                return bytes(obstore.get(store, key).bytes())

            def get_range(self, key: str, offset: int, size: int) -> bytes:
                return bytes(obstore.get_range(store, key, start=offset, length=size))

            def put_file(self, key: str, path: Path) -> None:
                with path.open("rb") as f:
                    obstore.put(store, key, f, chunk_size=PART)

            def get_file(self, key: str, path: Path) -> None:
                with path.open("wb") as f:
                    for chunk in obstore.get(store, key).stream(min_chunk_size=1024 * 1024):
                        f.write(chunk)

        return Obstore()
    if name == "minio":
        import urllib3
        from minio import Minio

        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=30),
            retries=urllib3.Retry(total=2, backoff_factor=0.2),
            maxsize=16,
        )
        client = Minio(
            server["endpoint"].removeprefix("http://"),
            access_key=server["key"],
            secret_key=server["secret"],
            secure=False,
            region="us-east-1",
            http_client=http,
        )
        bucket = server["bucket"]

        def read(response: Any) -> bytes:
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

        class MinioAdapter(Adapter):
            def put(self, key: str, data: bytes) -> None:
                client.put_object(bucket, key, io.BytesIO(data), len(data))

            def get(self, key: str) -> bytes:
                return read(client.get_object(bucket, key))

            def get_range(self, key: str, offset: int, size: int) -> bytes:
                return read(client.get_object(bucket, key, offset=offset, length=size))

            def put_file(self, key: str, path: Path) -> None:
                with path.open("rb") as f:
                    client.put_object(bucket, key, f, path.stat().st_size, part_size=PART)

            def get_file(self, key: str, path: Path) -> None:
                response = client.get_object(bucket, key)
                try:
                    with path.open("wb") as f:
                        for chunk in response.stream(1024 * 1024):
                            f.write(chunk)
                finally:
                    response.close()
                    response.release_conn()

        return MinioAdapter()
    raise ValueError(name)


# -- one client, in its own process ------------------------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def threaded_rate(work: Callable[[int], object], threads: int, seconds: float) -> float:
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def run(index: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            work(index * 1_000_000 + i)
            i += 1
        counts[index] = i

    start = time.perf_counter()
    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def measure(name: str, server: dict[str, Any], seconds: float, threads: int, mb: int) -> dict:
    began = time.perf_counter()
    adapter = make_adapter(name, server)
    results: dict[str, float] = {"setup_s": time.perf_counter() - began}
    payload = os.urandom(SMALL)
    results["put_serial"] = threaded_rate(lambda i: adapter.put(f"s/{i}", payload), 1, seconds)
    results["put_threads"] = threaded_rate(
        lambda i: adapter.put(f"t/{i}", payload), threads, seconds
    )
    assert adapter.get("s/0") == payload
    results["get_serial"] = threaded_rate(lambda i: adapter.get("s/0"), 1, seconds)
    results["get_threads"] = threaded_rate(lambda i: adapter.get("s/0"), threads, seconds)
    try:
        assert adapter.get_range("s/0", 8192, 4096) == payload[8192 : 8192 + 4096]
    except Exception as exc:  # obstore against rclone: "non-partial response"
        print(f"{name}: ranged GET fails: {str(exc).splitlines()[0]}", file=sys.stderr)
        results["range"] = float("nan")
    else:
        results["range"] = threaded_rate(lambda i: adapter.get_range("s/0", 8192, 4096), 1, seconds)
    with tempfile.TemporaryDirectory() as tmp:
        big, back = Path(tmp) / "big", Path(tmp) / "back"
        with big.open("wb") as f:
            for _ in range(mb):
                f.write(os.urandom(1024 * 1024))
        before = rss_mb()
        start = time.perf_counter()
        adapter.put_file("big", big)
        results["up_mb_s"] = mb / (time.perf_counter() - start)
        start = time.perf_counter()
        adapter.get_file("big", back)
        results["down_mb_s"] = mb / (time.perf_counter() - start)
        results["peak_rss_over_mb"] = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
        )
        assert digest(back) == digest(big)
    return results


def import_seconds(name: str, runs: int = 3) -> float:
    best = float("inf")
    module = {"boto3": "boto3", "obstore": "obstore.store", "minio": "minio"}[name]
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
        best = min(best, float(out.stdout))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child: one client, JSON out
    parser.add_argument("--server", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        server = json.loads(args.server)
        print(json.dumps(measure(args.one, server, args.seconds, args.threads, args.mb)))
        return

    from tests.s3_server import S3Server

    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, S3Server(Path(tmp)) as s3:
        buckets = {name: s3.make_bucket(f"bench-{name}") for name in CLIENTS}
        for name in CLIENTS:
            try:
                __import__(name)
            except ImportError:
                print(f"{name}: not installed, skipped", file=sys.stderr)
                continue
            server = {
                "endpoint": s3.endpoint,
                "key": s3.access_key,
                "secret": s3.secret_key,
                "bucket": buckets[name],
            }
            child = [sys.executable, __file__, "--one", name, "--server", json.dumps(server)]
            child += ["--seconds", str(args.seconds), "--threads", str(args.threads)]
            child += ["--mb", str(args.mb)]
            out = subprocess.run(child, capture_output=True, text=True)
            if out.stderr and out.returncode == 0:
                print(out.stderr.strip(), file=sys.stderr)
            if out.returncode != 0:
                print(f"{name}: failed\n{out.stderr}", file=sys.stderr)
                continue
            rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
            rows[name]["import_s"] = import_seconds(name)
    columns = [
        ("import_s", "import s", "{:.3f}"),
        ("put_serial", "PUT/s 1", "{:.0f}"),
        ("put_threads", f"PUT/s {args.threads}t", "{:.0f}"),
        ("get_serial", "GET/s 1", "{:.0f}"),
        ("get_threads", f"GET/s {args.threads}t", "{:.0f}"),
        ("range", "range/s", "{:.0f}"),
        ("up_mb_s", f"up {args.mb}MB MB/s", "{:.0f}"),
        ("down_mb_s", f"down {args.mb}MB MB/s", "{:.0f}"),
        ("peak_rss_over_mb", "peak RSS +MB", "{:.0f}"),
    ]
    print("| client | " + " | ".join(title for _, title, _ in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in rows.items():
        cells = [fmt.format(row[key]) for key, _, fmt in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    print("| client | " + " | ".join(FEATURES["boto3"]) + " |")
    print("|---" * (len(FEATURES["boto3"]) + 1) + "|")
    for name in rows:
        print(f"| {name} | " + " | ".join(FEATURES[name].values()) + " |")


if __name__ == "__main__":
    main()

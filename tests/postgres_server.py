"""A PostgreSQL server of the test's own (its own data directory and port), which the test
may stop and start: for outages that must not touch the machine's shared server.

PostgreSQL refuses to run as root; when the tests run as root, the server runs as the
`postgres` user (`runuser`), in a directory under /tmp that user can reach.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def available() -> bool:
    return _binaries() is not None


class OwnPostgres:
    def __init__(self, directory: Path, port: int) -> None:
        bin_dir = _binaries()
        assert bin_dir is not None
        self.bin = bin_dir
        self.directory = directory
        self.data = directory / "data"
        self.port = port
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.directory / "log"),
            "-w", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def answers(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0


@contextmanager
def own_postgres(port: int) -> Iterator[OwnPostgres]:
    directory = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
    directory.chmod(0o755)
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(directory, user.pw_uid, user.pw_gid)
    server = OwnPostgres(directory, port)
    try:
        server.init()
        server.start()
        yield server
    finally:
        if server.answers():
            server.stop()
        deadline = time.monotonic() + 10
        while server.answers() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(directory, ignore_errors=True)

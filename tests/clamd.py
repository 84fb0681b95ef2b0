"""A real clamd for the tests, run from a folder of its own, on a signature database it writes.

    with running_clamd(tmp_path) as daemon:
        verdict = Clamd(daemon.address).scan(EICAR)   # or daemon.tcp_address
        with daemon.stopped():
            ...                                       # clamd is down here, back after

Everything clamd uses (config, database, unix socket, pid file, log, temporary files) lives
under `<base>/clamd`; it also listens on a free loopback TCP port. freshclam cannot reach the
signature mirrors from here, so the database is ours (`gateway-test.hdb`, `.ndb`):

- the MD5 of the EICAR test file: found in a raw stream, inside a ZIP and in a mail
  attachment (ScanArchive and ScanMail are on, so clamd unpacks both);
- MARKER, a byte string found anywhere in a stream: a body signature, for e.g. the end of
  a 25 MB message.

clamd appends ".UNOFFICIAL" to the names of signatures outside ClamAV's own databases.
With this small database clamd starts in well under a second, so `stop()` then `start()`
is cheap. Run as root (as in CI), clamd stays root: it drops privileges only when the
config names a `User`, and the test folders are root's.

clamd is installed by scripts/setup-test-packages (Debian package clamav-daemon). Without
it, the fixtures skip, unless $GATEWAY_TEST_REQUIRE_CLAMD is set, where that is an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from gateway.inbound.trust.clamav import Clamd
from gateway.inbound.trust.scanning import ScannerUnavailable
from tests.processes import ForegroundDaemon, daemon_missing, find_daemon, free_port

REQUIRE_ENV = "GATEWAY_TEST_REQUIRE_CLAMD"
SETUP_HINT = "run scripts/setup-test-packages to install clamd (Debian package clamav-daemon)"

# The EICAR test file, in two halves so that no scanner flags this source file itself.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_SIGNATURE = "Gateway-Test-EICAR.UNOFFICIAL"
MARKER = b"gateway-test-malware-marker-" + b"f3b1c0de"
MARKER_SIGNATURE = "Gateway-Test-Marker.UNOFFICIAL"

# Unix socket paths are limited to 108 bytes.
_MAX_SOCKET_PATH = 100


class ClamdError(RuntimeError):
    """clamd could not be started; the message carries its output."""


def find_clamd() -> str | None:
    return find_daemon("clamd")


class ClamdDaemon(ForegroundDaemon):
    """One clamd under `<base>/clamd`, in the foreground as our child."""

    close_grace = 5.0  # clamd removes its socket on SIGTERM

    def __init__(
        self,
        base: Path,
        *,
        binary: str | None = None,
        stream_max_length: str = "64M",
        start_timeout: float = 30.0,
    ) -> None:
        binary = binary or find_clamd()
        if binary is None:
            raise ClamdError(f"clamd not found; {SETUP_HINT}")
        self.binary = binary
        self.stream_max_length = stream_max_length
        self.start_timeout = start_timeout
        self.root = Path(base).resolve() / "clamd"
        self.database = self.root / "db"
        self.config_path = self.root / "clamd.conf"
        self.log_path = self.root / "clamd.log"
        self.output_path = self.root / "clamd.out"
        self.socket_path = self.root / "clamd.sock"
        self._own_socket_dir: Path | None = None
        if len(str(self.socket_path)) > _MAX_SOCKET_PATH:
            self._own_socket_dir = Path(tempfile.mkdtemp(prefix="clamd-"))
            self.socket_path = self._own_socket_dir / "clamd.sock"
        self.port = free_port()
        self.startup_seconds: float | None = None  # of the last start, for the report
        super().__init__()
        self._write_files()

    @property
    def address(self) -> str:
        """The unix socket, as Clamd takes it."""
        return f"unix:{self.socket_path}"

    @property
    def tcp_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, timeout: float = 30.0) -> Clamd:
        return Clamd(self.address, timeout=timeout)

    def _write_files(self) -> None:
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        self.database.mkdir(exist_ok=True)
        eicar_md5 = hashlib.md5(EICAR).hexdigest()
        (self.database / "gateway-test.hdb").write_text(
            f"{eicar_md5}:{len(EICAR)}:{EICAR_SIGNATURE.removesuffix('.UNOFFICIAL')}\n"
        )
        # Name:TargetType(0 = any file):Offset(* = anywhere):hex body
        (self.database / "gateway-test.ndb").write_text(
            f"{MARKER_SIGNATURE.removesuffix('.UNOFFICIAL')}:0:*:{MARKER.hex()}\n"
        )

    def _config(self) -> str:
        return (
            "# Written by tests/clamd.py for the tests; not a system config.\n"
            "Foreground yes\n"
            f"LocalSocket {self.socket_path}\n"
            "LocalSocketMode 600\n"
            "FixStaleSocket yes\n"
            f"TCPSocket {self.port}\n"
            "TCPAddr 127.0.0.1\n"
            f"DatabaseDirectory {self.database}\n"
            f"TemporaryDirectory {self.root / 'tmp'}\n"
            f"LogFile {self.log_path}\n"
            "LogTime yes\n"
            # No database reloads mid-test: the files never change.
            "SelfCheck 0\n"
            "ScanArchive yes\n"
            "ScanMail yes\n"
            # A 25 MB message (the intake's limit) must fit, with all its parts.
            f"StreamMaxLength {self.stream_max_length}\n"
            "MaxFileSize 64M\n"
            "MaxScanSize 256M\n"
            "MaxThreads 4\n"
        )

    # -- process --------------------------------------------------------------------------

    def output(self) -> str:
        texts = []
        for path in (self.log_path, self.output_path):
            with contextlib.suppress(FileNotFoundError):
                texts.append(path.read_text(errors="replace"))
        return "\n".join(texts)

    def start(self) -> ClamdDaemon:
        """Start clamd (again: same socket, same port); returns once it answers PING."""
        with self._lock:
            if not self._must_start(ClamdError):
                return self
            self.config_path.write_text(self._config())
            began = time.monotonic()
            self._spawn([self.binary, "--config-file", str(self.config_path)], self.output_path)
            try:
                self._await(self._answers, self.start_timeout, ClamdError)
            except ClamdError as exc:
                self._terminate(grace=0.0)
                raise ClamdError(f"{exc}\n--- {self.root} ---\n{self.output()}") from None
            self.startup_seconds = time.monotonic() - began
            return self

    def _answers(self) -> bool:
        try:
            for address in (self.address, self.tcp_address):
                Clamd(address, timeout=2.0).ping()
        except ScannerUnavailable:
            return False
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait: clamd removes its socket and exits."""
        self._terminate(grace=timeout)

    def _cleanup(self) -> None:
        if self._own_socket_dir is not None:
            shutil.rmtree(self._own_socket_dir, ignore_errors=True)


@contextlib.contextmanager
def running_clamd(base: Path, *, stream_max_length: str = "64M") -> Iterator[ClamdDaemon]:
    """A started clamd, closed afterwards. Skips when clamd is not installed, unless
    $GATEWAY_TEST_REQUIRE_CLAMD is set (CI), where that fails the test."""
    binary = find_clamd()
    if binary is None:
        daemon_missing("clamd", REQUIRE_ENV, SETUP_HINT)
    with ClamdDaemon(base, binary=binary, stream_max_length=stream_max_length) as daemon:
        yield daemon

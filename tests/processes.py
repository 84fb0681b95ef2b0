"""Which processes are alive, and which connections open, read from /proc: for tests that
must see that nothing was left running (Dovecot's children after a kill, gateway workers
after their serve died) or open (sockets after a stop)."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn, Self

import pytest

# Daemons live in sbin, which a normal user's PATH often lacks.
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """A `preexec_fn`: the kernel sends SIGTERM to the child (a test daemon) if the test
    process dies without cleaning up (SIGKILL, crash), so no daemon outlives a run."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def start_daemon(argv: Sequence[str], output: Path) -> subprocess.Popen[bytes]:
    """A daemon kept in the foreground as our child, its output appended to `output`.

    Its own session, so a stop can reach all it forked by process group. The death signal
    belongs to the forking thread: it is tied only to the main thread, which lives as long
    as the test process.
    """
    with open(output, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent
            if threading.current_thread() is threading.main_thread()
            else None,
        )


def end_daemon(process: subprocess.Popen[bytes], grace: float) -> None:
    """End a daemon of `start_daemon` and all it forked: SIGTERM and up to `grace` seconds
    for a clean exit (none when 0), then SIGKILL to its whole process group."""
    pgid = process.pid  # start_new_session: the group is named after the daemon
    if process.poll() is None:
        if grace > 0:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(grace)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            process.wait()
    # Children the daemon did not reap (or all of them, after a kill) go too, so none
    # outlives it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    # SIGKILL is delivered, not yet acted on, when killpg returns: on a loaded machine a
    # child still runs for a moment. Return once the whole group is gone.
    deadline = time.monotonic() + 10
    while live_processes(group=pgid) and time.monotonic() < deadline:
        time.sleep(0.01)


def find_daemon(name: str) -> str | None:
    """A daemon's binary (dovecot, clamd), looked for on PATH and in the sbin folders."""
    found = shutil.which(name)
    if found:
        return found
    for folder in _SBIN_DIRS:
        candidate = Path(folder) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def daemon_missing(name: str, require_env: str, hint: str) -> NoReturn:
    """Skip the test for want of a daemon, or fail it where $`require_env` is set (CI)."""
    if os.environ.get(require_env):
        pytest.fail(f"{name} not found and ${require_env} is set; {hint}")
    pytest.skip(f"{name} not found; {hint}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now (a daemon binds it a moment later).

    Drawn below the kernel's ephemeral range (bind to port 0 would draw from it): the
    outgoing connections of the suite (database, S3, SMTP clients) take their local ports
    there, and one of them could take a port a test just picked before its daemon bound it.
    """
    low = _ephemeral_ports_from()
    for _ in range(200):
        port = random.randrange(_LISTEN_PORTS_FROM, low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue  # taken (a daemon of this or another run)
            return port
    raise RuntimeError(f"no free TCP port between {_LISTEN_PORTS_FROM} and {low} on {host}")


_LISTEN_PORTS_FROM = 20000


def _ephemeral_ports_from() -> int:
    """The first port of the kernel's ephemeral range."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def live_processes(*, parent: int | None = None, group: int | None = None) -> list[int]:
    """Pids of live processes with this parent and/or in this process group. Zombies do not
    count: where PID 1 does not reap (a container), the dead stay listed as such."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, ppid, pgid = fields[0], int(fields[1]), int(fields[2])
        if state == "Z" or (parent is not None and ppid != parent):
            continue
        if group is None or pgid == group:
            found.append(int(stat.parent.name))
    return found


def connections_to(port: int) -> list[str]:
    """The states (/proc/net/tcp's hex codes: 01 established, 08 close-wait, …) of this
    host's TCP sockets on the server side of local `port`, its listening socket left out."""
    states = []
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            if int(local.rsplit(":", 1)[1], 16) == port and state != "0A":
                states.append(state)
    return states


class ForegroundDaemon:
    """What the test daemons (tests/dovecot.py, tests/clamd.py) share: one process kept in
    the foreground as our child, ended with all it forked, and closed at exit if nobody did.

    Starting and ending hold `_lock`: a start may come from a timer thread (a restart
    mid-test) while the test thread stops or closes.
    """

    # Seconds for a clean exit at close(); 0 kills at once.
    close_grace = 0.0

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._closed = False
        self._lock = threading.RLock()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, up to `timeout` seconds for a clean exit, then SIGKILL."""
        self._terminate(grace=timeout)

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """The daemon is down inside the block and answering again after it, even on
        failure (an outage in the middle of a test)."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def _must_start(self, error: Callable[[str], Exception]) -> bool:
        """For start(), under `_lock`: False when running already, `error` once closed; a
        daemon that died on its own is reaped first."""
        if self._closed:
            raise error(f"this {type(self).__name__} was closed")
        if self.running:
            return False
        self._terminate(grace=0.0)
        return True

    def _spawn(self, argv: Sequence[str], output: Path) -> subprocess.Popen[bytes]:
        self._process = start_daemon(argv, output)
        _live.add(self)
        return self._process

    def _await(
        self, ready: Callable[[], bool], timeout: float, error: Callable[[str], Exception]
    ) -> None:
        """Poll `ready()` until it holds; `error(why)` if the daemon exits or time is up."""
        process = self._process
        assert process is not None
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise error(f"{process.args[0]} exited with status {process.returncode}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise error(f"{process.args[0]} was not ready within {timeout}s")
            time.sleep(0.02)

    def _terminate(self, grace: float) -> None:
        with self._lock:
            process, self._process = self._process, None
            if process is not None:
                _live.discard(self)
                end_daemon(process, grace)

    def _cleanup(self) -> None:
        """Remove what lives outside the daemon's folder; called once, at close()."""

    def close(self) -> None:
        """Stop for good; safe to call more than once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._terminate(grace=self.close_grace)
        self._cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


_live: weakref.WeakSet[ForegroundDaemon] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # Last resort for daemons nobody closed (an interrupted run): no orphans.
    for daemon in list(_live):
        daemon.close()

"""Which processes are alive, and which connections open, read from /proc: for tests that
must see that nothing was left running (Dovecot's children after a kill, gateway workers
after their serve died) or open (sockets after a stop)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
    """For `preexec_fn`: runs in the child before exec, so the kernel sends SIGTERM to a
    test daemon when the test process dies without cleaning up (SIGKILL, crash), and no
    daemon outlives a run."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def start_daemon(command: list[str], output: Path) -> subprocess.Popen[bytes]:
    """Start a test daemon in the foreground, as our child, its stdout and stderr appended
    to `output`. Its own session, so `end_process_group` reaches every process it forks."""
    with open(output, "ab") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # The death signal belongs to the forking thread: only tie it to the main
            # thread, which lives as long as the test process.
            preexec_fn=die_with_parent
            if threading.current_thread() is threading.main_thread()
            else None,
        )


def end_process_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """End a daemon started with `start_new_session=True` and every process it forked:
    SIGTERM and up to `grace` seconds to exit (none: SIGKILL at once), then SIGKILL to
    the group; returns once the whole group is gone."""
    pgid = process.pid  # start_new_session: the group is named after its leader
    if process.poll() is None:
        if grace > 0:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(grace)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            process.wait()
    # Children the daemon did not reap (or all of them, after a kill) go too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    # SIGKILL is delivered, not yet acted on, when killpg returns: on a loaded machine a
    # child still runs for a moment.
    deadline = time.monotonic() + 10
    while live_processes(group=pgid) and time.monotonic() < deadline:
        time.sleep(0.01)


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

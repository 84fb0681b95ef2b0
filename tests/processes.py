"""Which processes are alive, and which connections open, read from /proc: for tests that
must see that nothing was left running (Dovecot's children after a kill, gateway workers
after their serve died) or open (sockets after a stop)."""

from __future__ import annotations

from pathlib import Path


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

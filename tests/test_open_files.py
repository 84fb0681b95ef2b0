"""`gateway serve` raises its soft open-files limit at start to what its session limit needs
(issue 10, item 1): started as systemd would start it, with a low soft RLIMIT_NOFILE, the
running process has the limit it needs; when the hard limit is too low it serves anyway
and says so, with the numbers."""

from __future__ import annotations

import json
import resource
import smtplib
from collections.abc import Callable
from pathlib import Path

from gateway.serve import open_files_needed
from tests.conftest import write_config
from tests.test_serve import free_port, gateway_cli, serving

LOW_SOFT = 256


def open_files_limits(pid: int) -> tuple[int, int]:
    """The (soft, hard) "Max open files" of a running process, as the kernel holds them."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open-files limit for {pid}")


def started_with(soft: int, hard: int) -> Callable[[], None]:
    """A `preexec_fn`: the service starts with these limits (systemd's LimitNOFILE=)."""
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def prepared(tmp_path: Path, session_limit: int) -> tuple[Path, int]:
    port = free_port()
    config = write_config(
        tmp_path,
        f"sqlite:///{tmp_path / 'gateway.db'}",
        smtp={"port": port, "session_limit": session_limit},
        filing={"workers": 0},
        http={"enabled": False},
    )
    assert gateway_cli(config, "migrate").returncode == 0
    return config, port


def test_serve_raises_its_soft_open_files_limit_to_what_its_sessions_need(tmp_path):
    config, _ = prepared(tmp_path, session_limit=1500)
    needed = open_files_needed(1500)
    hard = needed + 1000
    with serving(config, preexec_fn=started_with(LOW_SOFT, hard)) as proc:
        assert open_files_limits(proc.pid) == (needed, hard)


def test_serve_starts_under_a_hard_limit_too_low_and_warns_with_the_numbers(tmp_path):
    config, port = prepared(tmp_path, session_limit=1000)
    needed = open_files_needed(1000)
    hard = 1024
    startup: list[str] = []
    with serving(config, preexec_fn=started_with(LOW_SOFT, hard), startup=startup) as proc:
        assert open_files_limits(proc.pid) == (hard, hard)  # as far as it could
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            assert smtp.noop()[0] == 250  # it serves
    warnings = [json.loads(line) for line in startup if "open_files_limit_low" in line]
    assert [(w["level"], w["soft"], w["hard"], w["needed"]) for w in warnings] == [
        ("warning", hard, hard, needed)
    ]

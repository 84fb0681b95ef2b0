"""A real rspamd for the tests, run in the foreground from a folder of its own.

    with running_rspamd(tmp_path) as rspamd:
        verdict = Rspamd(rspamd.url).score(raw, envelope)

Configuration, pid file, databases and log live under `<base>/rspamd`; the normal worker
(scans) and the controller (scans too, behind a password) listen on free loopback ports.
The stock rules of /etc/rspamd are used as shipped, except that nothing may reach the
network: the modules that query DNS lists, fuzzy storages or remote maps are off, and the
resolver points at a loopback port where nothing answers, with a 20 ms timeout, so a lookup
left (the client's reverse name, when the scan gives no Hostname) fails within ~50 ms
instead of stalling a scan. The maps rspamd would fetch over HTTPS (MIME types, message-id
and redirector lists) are read from the copies the package ships in /etc/rspamd/maps.d;
their fetches end at that failed lookup. No Redis: the modules that need one switch
themselves off.

A probe rule, GATEWAY_TEST_ENVELOPE (score 0), lists what rspamd received of the SMTP
envelope as its options ("ip=…", "helo=…", "from=…", "rcpt=…", "queue_id=…"), so tests
can see that the client's headers arrived. A settings profile, STRICT_SETTINGS_ID, rejects
from a score of 0.5, for a scan that names it in its Settings-ID header.

rspamd compiles its Hyperscan databases (~20 s on two cores, the URL suffix list most of
it) at its first start and caches them in `hs_cache_dir`: the session fixture keeps that
cache in var/, so only the first run on a machine pays.

rspamd is installed by scripts/setup-test-packages. Without it, `running_rspamd` skips the
test, unless $GATEWAY_TEST_REQUIRE_RSPAMD is set, where that is an error. As root (CI
here), `-i` lets its workers run as root: everything they touch is the test's own folder.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import end_daemon, free_port, start_daemon

REQUIRE_ENV = "GATEWAY_TEST_REQUIRE_RSPAMD"
SETUP_HINT = "run scripts/setup-test-packages to install rspamd (Debian package rspamd)"
STOCK_CONFDIR = Path("/etc/rspamd")
ENVELOPE_SYMBOL = "GATEWAY_TEST_ENVELOPE"
# Unix socket paths are limited to 108 bytes: the control socket's folder moves to a short
# temporary one when the test's is longer than this.
_MAX_RUN_DIR = 90

# Modules that would go to the network on each scan (DNS block lists, SPF/DKIM/DMARC/ARC
# lookups, ASN, helo and hostname resolution, fuzzy storages) or fetch remote maps whose
# rules mean nothing without them (freemail lists, SPF/DKIM whitelists).
NETWORK_MODULES = (
    "arc",
    "asn",
    "dkim",
    "dmarc",
    "emails",
    "fuzzy_check",
    "hfilter",
    "multimap",
    "rbl",
    "spf",
    "whitelist",
)

_ENVELOPE_RULE = f"""-- Written by tests/rspamd.py: echoes the SMTP envelope rspamd received.
local lua_util = require "lua_util"
rspamd_config:register_symbol{{
  name = '{ENVELOPE_SYMBOL}',
  score = 0.0,
  type = 'prefilter',
  group = 'gateway_test',
  -- Before the stock rule that strips +tags from the recipients: what arrived, as is.
  priority = lua_util.symbols_priorities.top + 2,
  description = 'The SMTP envelope as rspamd received it (test probe)',
  callback = function(task)
    local seen = {{}}
    local ip = task:get_from_ip()
    if ip and ip:is_valid() then table.insert(seen, 'ip=' .. ip:to_string()) end
    local helo = task:get_helo()
    if helo then table.insert(seen, 'helo=' .. helo) end
    local hostname = task:get_hostname()
    if hostname then table.insert(seen, 'hostname=' .. hostname) end
    local from = task:get_from('smtp')
    if from and from[1] then table.insert(seen, 'from=' .. from[1].raw) end
    for _, rcpt in ipairs(task:get_recipients('smtp') or {{}}) do
      table.insert(seen, 'rcpt=' .. rcpt.raw)
    end
    local queue_id = task:get_queue_id()
    if queue_id then table.insert(seen, 'queue_id=' .. queue_id) end
    task:insert_result('{ENVELOPE_SYMBOL}', 1.0, seen)
  end
}}
"""

# A settings profile a scan picks by its Settings-ID header: rejects from a score of 0.5.
STRICT_SETTINGS_ID = "gateway_test_strict"
_SETTINGS = f"""# Written by tests/rspamd.py.
{STRICT_SETTINGS_ID} {{
  id = "{STRICT_SETTINGS_ID}";
  apply {{
    actions {{ reject = 0.5; "add header" = null; "rewrite subject" = null; greylist = null; }}
  }}
}}
"""

_running: weakref.WeakSet[RspamdServer] = weakref.WeakSet()


class RspamdError(RuntimeError):
    """rspamd could not be set up or started; the message carries its log."""


def find_rspamd() -> str | None:
    found = shutil.which("rspamd")
    if found:
        return found
    candidate = Path("/usr/bin/rspamd")
    return str(candidate) if os.access(candidate, os.X_OK) else None


def _silent_udp_port() -> int:
    """A loopback UDP port nobody listens on: a query sent there is refused by the kernel."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RspamdServer:
    """One rspamd instance under `<base>/rspamd`."""

    def __init__(
        self,
        base: Path,
        *,
        binary: str | None = None,
        workers: int = 1,
        hs_cache_dir: Path | None = None,
        start_timeout: float = 180.0,
    ) -> None:
        binary = binary or find_rspamd()
        if binary is None:
            raise RspamdError(f"rspamd not found; {SETUP_HINT}")
        self.binary = binary
        self.workers = workers
        self.start_timeout = start_timeout
        self.root = Path(base).resolve() / "rspamd"
        self.conf_dir = self.root / "conf"
        self.db_dir = self.root / "db"
        self.run_dir = self.root / "run"
        self._own_run_dir = False
        if len(str(self.run_dir)) > _MAX_RUN_DIR:
            self.run_dir = Path(tempfile.mkdtemp(prefix="rspamd-run-"))
            self._own_run_dir = True
        self.log_path = self.root / "rspamd.log"
        self.hs_cache_dir = hs_cache_dir or self.db_dir
        self.host = "127.0.0.1"
        self.port = 0
        self.controller_port = 0
        self.password = secrets.token_hex(8)
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The normal worker: scans, no password."""
        return f"http://{self.host}:{self.port}"

    @property
    def controller_url(self) -> str:
        """The controller: scans only with `password`."""
        return f"http://{self.host}:{self.controller_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _write_config(self) -> Path:
        for folder in (self.conf_dir / "local.d", self.db_dir, self.run_dir, self.hs_cache_dir):
            folder.mkdir(parents=True, exist_ok=True)
        local = self.conf_dir / "local.d"
        for module in NETWORK_MODULES:
            (local / f"{module}.conf").write_text("enabled = false;\n", encoding="utf-8")
        (local / "options.inc").write_text(
            "# Nothing answers there: a lookup fails soon, none waits on a real resolver.\n"
            f'dns {{ nameserver = ["127.0.0.1:{_silent_udp_port()}"]; '
            "timeout = 0.02s; retransmits = 1; }\n"
            f'hs_cache_dir = "{self.hs_cache_dir}";\n'
            f'control_socket = "{self.run_dir}/rspamd.sock mode=0600";\n',
            encoding="utf-8",
        )
        (local / "settings.conf").write_text(_SETTINGS, encoding="utf-8")
        (self.conf_dir / "rspamd.local.lua").write_text(_ENVELOPE_RULE, encoding="utf-8")
        config = self.conf_dir / "rspamd.conf"
        # The stock file, with our own workers, paths and log: the rules and scores are
        # rspamd's (common.conf), the local.d above is read instead of /etc/rspamd/local.d.
        config.write_text(
            "# Written by tests/rspamd.py for one test run; not a system config.\n"
            '.include "$CONFDIR/common.conf"\n'
            "options {\n"
            '  pidfile = "$RUNDIR/rspamd.pid";\n'
            '  .include "$CONFDIR/options.inc"\n'
            '  .include(priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"\n'
            "}\n"
            "logging {\n"
            '  type = "file";\n'
            f'  filename = "{self.log_path}";\n'
            '  .include "$CONFDIR/logging.inc"\n'
            "}\n"
            'worker "normal" {\n'
            f'  bind_socket = "{self.host}:{self.port}";\n'
            '  .include "$CONFDIR/worker-normal.inc"\n'
            f"  count = {self.workers};\n"
            "}\n"
            'worker "controller" {\n'
            f'  bind_socket = "{self.host}:{self.controller_port}";\n'
            "  count = 1;\n"
            # No secure_ip: loopback gets no pass, so the password is what lets a scan in.
            f'  password = "{self.password}";\n'
            '  static_dir = "${WWWDIR}";\n'
            "}\n",
            encoding="utf-8",
        )
        return config

    def start(self) -> RspamdServer:
        """Start rspamd; returns once its normal worker answers /ping."""
        with self._lock:
            if self.running:
                return self
            for attempt in range(3):
                self.port = free_port(self.host)
                self.controller_port = free_port(self.host)
                try:
                    self._launch()
                    return self
                except RspamdError as exc:
                    if "Address already in use" not in str(exc) or attempt == 2:
                        raise
            return self

    def _launch(self) -> None:
        config = self._write_config()
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        command = [self.binary, "-f", "-c", str(config)]
        if os.geteuid() == 0:
            command.append("-i")  # workers as root: they touch only this folder
        for name, value in (
            ("CONFDIR", STOCK_CONFDIR),
            ("LOCAL_CONFDIR", self.conf_dir),
            ("DBDIR", self.db_dir),
            ("RUNDIR", self.run_dir),
            ("LOGDIR", self.root),
        ):
            command.append(f"--var={name}={value}")
        started = time.monotonic()
        self._process = start_daemon(command, self.root / "rspamd.out")
        _running.add(self)
        try:
            self._wait_for_ping()
        except RspamdError as exc:
            self._end(grace=0.0)
            log = self.log_text()[log_start:]
            out_text = (self.root / "rspamd.out").read_text(errors="replace")
            raise RspamdError(
                f"{exc}\n--- {self.log_path} ---\n{log[-5000:]}\n--- stdout ---\n{out_text[-2000:]}"
            ) from None
        self.startup_seconds = time.monotonic() - started

    def _wait_for_ping(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._process.poll() is not None:
                raise RspamdError(f"rspamd exited with status {self._process.returncode}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.url}/ping", timeout=2) as reply,
            ):
                if reply.read().strip() == b"pong":
                    return
            if time.monotonic() > deadline:
                raise RspamdError(f"rspamd did not answer /ping within {self.start_timeout}s")
            time.sleep(0.1)

    def _end(self, grace: float) -> None:
        process, self._process = self._process, None
        if process is not None:
            _running.discard(self)
            end_daemon(process, grace)

    def close(self) -> None:
        """Stop rspamd and all its workers; safe to call more than once."""
        with self._lock:
            self._end(grace=5.0)
        if self._own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> RspamdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def require_rspamd() -> str:
    """The rspamd binary; skips the test without it, or fails it under $REQUIRE_ENV."""
    binary = find_rspamd()
    if binary is None:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"rspamd not found and ${REQUIRE_ENV} is set; {SETUP_HINT}")
        pytest.skip(f"rspamd not found; {SETUP_HINT}")
    return binary


@contextlib.contextmanager
def running_rspamd(
    base: Path, *, workers: int = 1, hs_cache_dir: Path | None = None
) -> Iterator[RspamdServer]:
    """A started rspamd, closed afterwards even if the caller fails."""
    server = RspamdServer(base, binary=require_rspamd(), workers=workers, hs_cache_dir=hs_cache_dir)
    try:
        server.start()
        yield server
    finally:
        server.close()


def shared_hs_cache() -> Path:
    """Where compiled Hyperscan databases are kept between runs: var/ of this checkout
    (git-ignored). rspamd checks each file against its own build and CPU before use."""
    return Path(__file__).resolve().parents[1] / "var" / "rspamd-hs-cache"


@atexit.register
def _close_all() -> None:
    # Last resort for instances nobody closed (an interrupted run): no orphan daemons.
    for server in list(_running):
        server.close()

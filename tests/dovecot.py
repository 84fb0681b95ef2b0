"""A real Dovecot IMAP server for the tests, run from a folder of its own.

    with running_dovecot(tmp_path, {"alice@example.test": "secret"}) as dovecot:
        uid = dovecot.append("alice@example.test", "INBOX", raw)
        client = dovecot.client("alice@example.test")  # an IMAPClient, logged in

With `oauth2_introspection_url` (see tests/oauth_provider.py) it also takes XOAUTH2 and
OAUTHBEARER logins, each token checked by a POST to that URL (RFC 7662 introspection).

Everything Dovecot writes (config, passwd-file, maildirs, sockets, state, log) lives under
`<base>/dovecot`; it listens on 127.0.0.1 only, plain IMAP (no TLS), imap protocol only.
`stop()` then `start()` brings the same server back on the same port with the same mail.

Dovecot is installed by scripts/setup-test-packages. Without it, `running_dovecot` skips
the test, unless $GATEWAY_TEST_REQUIRE_DOVECOT is set, where that is an error.

Run as a normal user, every Dovecot process runs as that user and the mailboxes are that
user's. Run as root (as in CI here), Dovecot refuses to touch mail as root, so the mail
processes run as `nobody`, chrooted into `<base>/dovecot/home` (the test's tmp_path has
0700 parents that `nobody` could not walk through); the tests only reach the mail over
IMAP, so who owns the files does not matter to them.
"""

from __future__ import annotations

import contextlib
import functools
import grp
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path

from imapclient import IMAPClient

from tests.processes import ForegroundDaemon, daemon_missing, find_daemon, free_port

REQUIRE_ENV = "GATEWAY_TEST_REQUIRE_DOVECOT"
SETUP_HINT = "run scripts/setup-test-packages to install Dovecot (Debian package dovecot-imapd)"

# Unix socket paths are limited to 108 bytes; the longest name Dovecot puts under
# base_dir is ~25 characters, so a longer base_dir moves to a short temporary one.
_MAX_BASE_DIR = 80
# Names that must not break the passwd-file (':'-separated) or escape the home folder.
_USER_RE = re.compile(r"^[A-Za-z0-9._+@-]+$")
_APPENDUID_RE = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")


class DovecotError(RuntimeError):
    """Dovecot could not be set up or started; the message carries its log."""


class _PortTaken(DovecotError):
    """Something else holds the port Dovecot was to listen on."""


def find_dovecot() -> str | None:
    """The dovecot binary, looked for on PATH and in the sbin folders."""
    return find_daemon("dovecot")


@functools.cache
def dovecot_version(binary: str) -> tuple[int, ...]:
    """`dovecot --version` as numbers, e.g. (2, 3, 19, 1) for "2.3.19.1 (9b53102964)"."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    match = re.match(r"\s*(\d+(?:\.\d+)*)", out)
    if not match:
        raise DovecotError(f"cannot read the version in `{binary} --version`: {out!r}")
    return tuple(int(part) for part in match.group(1).split("."))


class Dovecot(ForegroundDaemon):
    """One Dovecot instance under `<base>/dovecot`, for the given users and passwords.

    close() kills rather than stops: a graceful Dovecot shutdown waits a fixed second for
    its log process, and nothing of this instance is kept.
    """

    def __init__(
        self,
        base: Path,
        users: Mapping[str, str],
        *,
        binary: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        start_timeout: float = 10.0,
        namespace: tuple[str, str] = ("", "/"),
        oauth2_introspection_url: str | None = None,
    ) -> None:
        binary = binary or find_dovecot()
        if binary is None:
            raise DovecotError(f"dovecot not found; {SETUP_HINT}")
        if not users:
            raise ValueError("Dovecot needs at least one user")
        for user, password in users.items():
            if not _USER_RE.match(user) or user.startswith("."):
                raise ValueError(f"user name not usable in a passwd-file: {user!r}")
            if any(ch in password for ch in ":\r\n"):
                raise ValueError(f"password of {user!r} has ':' or a line break")
        self.binary = binary
        self.version = dovecot_version(binary)
        self.users = dict(users)
        self.host = host
        self.port = port
        self.start_timeout = start_timeout
        # The personal namespace's (prefix, separator): ("INBOX.", ".") as Cyrus and Courier.
        self.namespace = namespace
        # Where the oauth2 passdb checks XOAUTH2/OAUTHBEARER tokens (RFC 7662, POST).
        self.oauth2_introspection_url = oauth2_introspection_url
        if oauth2_introspection_url and re.search(r'[\s"#]', oauth2_introspection_url):
            raise ValueError(f"Dovecot's config cannot hold this URL: {oauth2_introspection_url}")
        self.root = Path(base).resolve() / "dovecot"
        if re.search(r'[\s"#]', str(self.root)):
            raise ValueError(f"Dovecot's config cannot hold this path: {self.root}")
        self.config_path = self.root / "dovecot.conf"
        self.passwd_path = self.root / "passwd"
        self.oauth2_path = self.root / "dovecot-oauth2.conf.ext"
        self.log_path = self.root / "dovecot.log"
        self.home_root = self.root / "home"
        self.state_dir = self.root / "state"
        self.base_dir = self.root / "run"
        self._own_base_dir = False
        if len(str(self.base_dir)) > _MAX_BASE_DIR:
            self.base_dir = Path(tempfile.mkdtemp(prefix="dovecot-run-"))
            self._own_base_dir = True
        # Each start greets with this text, so a foreign server on the port is never mistaken
        # for ours.
        self.greeting = f"gateway-test-{secrets.token_hex(4)} ready."
        super().__init__()
        self._write_files()

    # -- files ----------------------------------------------------------------------------

    def _mail_owner(self) -> tuple[int, int, bool]:
        """(uid, gid, chroot) of the mail processes: see the module docstring for root."""
        if os.geteuid() != 0:
            return os.geteuid(), os.getegid(), False
        try:
            nobody = pwd.getpwnam("nobody")
            return nobody.pw_uid, nobody.pw_gid, True
        except KeyError:
            return 65534, 65534, True

    def _write_files(self) -> None:
        uid, gid, chroot = self._mail_owner()
        for folder in (self.root, self.state_dir, self.base_dir):
            folder.mkdir(parents=True, exist_ok=True)
        # The chroot's "/" must be walkable by the mail user; each home is that user's.
        self.home_root.mkdir(mode=0o755, exist_ok=True)
        self.home_root.chmod(0o755)
        lines = []
        for user, password in self.users.items():
            home = self.home_root / user
            home.mkdir(mode=0o700, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(home, uid, gid)
            # "/./" marks the chroot: Dovecot chroots to the part before it.
            home_field = f"{self.home_root}/./{user}" if chroot else str(home)
            # user:password:uid:gid:gecos:home:shell: uid/gid come from mail_uid/mail_gid,
            # as passwd-file refuses UID 0 and the ids are the same for all users.
            lines.append(f"{user}:{{PLAIN}}{password}::::{home_field}::\n")
        self.passwd_path.write_text("".join(lines), encoding="utf-8")
        self.passwd_path.chmod(0o600)

    def _config(self) -> str:
        uid, gid, chroot = self._mail_owner()
        me = pwd.getpwuid(os.geteuid()).pw_name
        my_group = grp.getgrgid(os.getegid()).gr_name
        if os.geteuid() == 0:
            # Login processes may not run as root; dovenull is the Debian package's user for
            # them, chrooted into base_dir/login (the default) so the 0700 parents don't matter.
            try:
                pwd.getpwnam("dovenull")
                login_user = "dovenull"
            except KeyError:
                login_user = "nobody"
            chroot_off = ""
        else:
            # Unprivileged: every service runs as us, and nothing can chroot.
            login_user = me
            chroot_off = "  chroot =\n"
        new_syntax = self.version >= (2, 4)
        oauth2 = self._oauth2_passdb(new_syntax)
        # With OAuth2, the passwords are for PLAIN/LOGIN only: a token never meets them.
        only_passwords = ""
        if oauth2:
            only_passwords = f"  mechanisms{'_filter' if new_syntax else ''} = plain login\n"
        if new_syntax:
            head = "dovecot_config_version = 2.4.0\ndovecot_storage_version = 2.4.0\n"
            auth = (
                "auth_allow_cleartext = yes\n"
                f"passdb passwd-file {{\n  passwd_file_path = {self.passwd_path}\n"
                f"{only_passwords}}}\n{oauth2}"
                f"userdb passwd-file {{\n  passwd_file_path = {self.passwd_path}\n}}\n"
            )
            mail = "mail_driver = maildir\nmail_path = ~/Maildir\nmailbox_list_layout = fs\n"
        else:
            head = ""
            auth = (
                "disable_plaintext_auth = no\n"
                f"passdb {{\n  driver = passwd-file\n  args = {self.passwd_path}\n"
                f"{only_passwords}}}\n{oauth2}"
                f"userdb {{\n  driver = passwd-file\n  args = {self.passwd_path}\n}}\n"
            )
            # LAYOUT=fs: folders are real directories with "/" as separator, so folder
            # names may hold dots.
            mail = "mail_location = maildir:~/Maildir:LAYOUT=fs\n"
        chroot_line = f"valid_chroot_dirs = {self.home_root}\n" if chroot else ""
        return (
            f"{head}"
            "# Written by tests/dovecot.py for one test; not a system config.\n"
            f"base_dir = {self.base_dir}\n"
            f"state_dir = {self.state_dir}\n"
            f"log_path = {self.log_path}\n"
            "protocols = imap\n"
            f"listen = {self.host}\n"
            "ssl = no\n"
            f"login_greeting = {self.greeting}\n"
            f"auth_mechanisms = plain login{' xoauth2 oauthbearer' if oauth2 else ''}\n"
            "auth_verbose = yes\n"
            # A wrong password is refused within Dovecot's 0.5s flush tick, not after 2s.
            "auth_failure_delay = 0\n"
            f"default_internal_user = {me}\n"
            f"default_internal_group = {my_group}\n"
            f"default_login_user = {login_user}\n"
            f"mail_uid = {uid}\n"
            f"mail_gid = {gid}\n"
            f"first_valid_uid = {uid}\n"
            f"first_valid_gid = {gid}\n"
            f"{chroot_line}"
            # Test data need not survive a power cut; fsync only slows the suite.
            "mail_fsync = never\n"
            f"{mail}"
            f"{auth}"
            f"{self._namespace_block()}"
            "service imap-login {\n"
            f"{chroot_off}"
            f"  inet_listener imap {{\n    port = {self.port}\n  }}\n"
            "  inet_listener imaps {\n    port = 0\n  }\n"
            "}\n"
            f"service imap-urlauth-login {{\n{chroot_off}}}\n"
            "service anvil {\n"
            f"{chroot_off}"
            # Without this socket auth skips its per-IP penalty, which would otherwise
            # delay every login from 127.0.0.1 by up to 15s after a few wrong passwords.
            "  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n"
            "}\n"
        )

    def _oauth2_passdb(self, new_syntax: bool) -> str:
        """The oauth2 passdb block (its settings in their own file for 2.3), or "".

        Each login asks the provider anew: nothing caches a token's answer (auth_cache_size
        is 0 by default), so a token revoked mid-test is refused at the next login.
        """
        url = self.oauth2_introspection_url
        if not url:
            return ""
        settings = {
            "introspection_mode": "post",
            "introspection_url": url,
            "username_attribute": "username",
            "active_attribute": "active",
            "active_value": "true",
        }
        if new_syntax:
            # 2.4 (best effort, untested here): the mechanisms check tokens themselves with
            # the settings of the oauth2 filter; no passdb is involved.
            inline = "".join(f"  {key} = {value}\n" for key, value in settings.items())
            return f"oauth2 {{\n{inline}}}\n"
        self.oauth2_path.write_text(
            "".join(f"{key} = {value}\n" for key, value in settings.items()), encoding="utf-8"
        )
        return (
            "passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
            f"  args = {self.oauth2_path}\n}}\n"
        )

    def _namespace_block(self) -> str:
        prefix, separator = self.namespace
        if any(ch in prefix + separator for ch in '"\n{}'):
            raise ValueError(f"namespace not writable in Dovecot's config: {self.namespace}")
        prefix_line = f"  prefix = {prefix}\n" if prefix else ""
        return f"namespace inbox {{\n  inbox = yes\n{prefix_line}  separator = {separator}\n}}\n"

    # -- process --------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The master process, also the id of the process group of all Dovecot's processes."""
        return self._process.pid if self.running and self._process else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> Dovecot:
        """Start Dovecot (again: same port, same mail); returns once it greets clients.

        Safe to call from another thread (e.g. a timer restarting it mid-test).
        """
        with self._lock:
            if not self._must_start(DovecotError):
                return self
            # A port picked here could be taken before Dovecot binds it: a fresh pick then
            # helps. A port this instance already served on stays, as a restart needs.
            pick = self.port == 0
            for attempt in range(3 if pick else 1):
                if pick:
                    self.port = free_port(self.host)
                try:
                    self._launch()
                    return self
                except _PortTaken:
                    if not pick or attempt == 2:
                        raise
            return self

    def _launch(self) -> None:
        self.config_path.write_text(self._config(), encoding="utf-8")
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        # -F: stay in the foreground, our child.
        argv = [self.binary, "-F", "-c", str(self.config_path)]
        self._spawn(argv, self.log_path)
        try:
            self._wait_for_greeting()
        except DovecotError as exc:
            self._terminate(grace=0.0)
            log = self.log_text()[log_start:]
            kind = (
                _PortTaken
                if isinstance(exc, _PortTaken) or "Address already in use" in log
                else DovecotError
            )
            raise kind(f"{exc}\n--- {self.log_path} ---\n{log}") from None

    def _wait_for_greeting(self) -> None:
        self._await(self._greets, self.start_timeout, DovecotError)

    def _greets(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                greeting = sock.recv(1024)
        except (ConnectionRefusedError, ConnectionResetError, TimeoutError):
            return False
        if greeting.startswith(b"* OK") and self.greeting.encode() in greeting:
            return True
        raise _PortTaken(f"another server answers on port {self.port}: {greeting!r}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM and wait: Dovecot shuts down and ends its children."""
        self._terminate(grace=timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group at once, as a crash would."""
        self._terminate(grace=0.0)

    def _cleanup(self) -> None:
        if self._own_base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- IMAP helpers for tests -----------------------------------------------------------

    def client(self, user: str, *, timeout: float = 10.0) -> IMAPClient:
        """A new IMAPClient logged in as `user`; the caller logs out."""
        client = IMAPClient(self.host, self.port, ssl=False, timeout=timeout)
        try:
            client.login(user, self.users[user])
        except BaseException:
            client.shutdown()
            raise
        return client

    @contextlib.contextmanager
    def session(self, user: str) -> Iterator[IMAPClient]:
        client = self.client(user)
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def append(
        self,
        user: str,
        folder: str,
        raw: bytes,
        flags: Iterable[str | bytes] = (),
        msg_time: datetime | None = None,
    ) -> int:
        """Append a message as-is; returns its UID."""
        with self.session(user) as client:
            response = client.append(folder, raw, flags=tuple(flags), msg_time=msg_time)
            match = _APPENDUID_RE.search(response if isinstance(response, bytes) else b"")
            if match:
                return int(match.group(2))
            # No UIDPLUS: the newest message in the folder is the one just added.
            client.select_folder(folder, readonly=True)
            return max(client.search("ALL"))

    def create_folder(self, user: str, folder: str) -> None:
        with self.session(user) as client:
            client.create_folder(folder)

    def delete_folder(self, user: str, folder: str) -> None:
        with self.session(user) as client:
            client.delete_folder(folder)

    def folder_uids(self, user: str, folder: str) -> list[int]:
        with self.session(user) as client:
            client.select_folder(folder, readonly=True)
            return sorted(client.search("ALL"))

    def uidvalidity(self, user: str, folder: str) -> int:
        with self.session(user) as client:
            return int(client.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])


@contextlib.contextmanager
def running_dovecot(
    tmp_path: Path,
    users: Mapping[str, str],
    *,
    binary: str | None = None,
    port: int = 0,
    start_timeout: float = 10.0,
    namespace: tuple[str, str] = ("", "/"),
    oauth2_introspection_url: str | None = None,
) -> Iterator[Dovecot]:
    """A started Dovecot for one test, closed afterwards even if the test fails.

    Skips the test when Dovecot is not installed, unless $GATEWAY_TEST_REQUIRE_DOVECOT is
    set (CI), where that fails it.
    """
    binary = binary or find_dovecot()
    if binary is None:
        daemon_missing("dovecot", REQUIRE_ENV, SETUP_HINT)
    dovecot = Dovecot(
        tmp_path,
        users,
        binary=binary,
        port=port,
        start_timeout=start_timeout,
        namespace=namespace,
        oauth2_introspection_url=oauth2_introspection_url,
    )
    try:
        dovecot.start()
        yield dovecot
    finally:
        dovecot.close()

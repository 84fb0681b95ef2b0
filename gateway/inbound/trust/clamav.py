"""Malware scanning with ClamAV: a client for clamd's socket protocol.

The content goes to clamd by INSTREAM (length-prefixed chunks on the socket), so the daemon
needs no access to our files and may run on another host. Commands use the `z` form
(NUL-terminated command and reply), so a reply cut short by a dying peer is told apart
from a whole one.

Every failure to get a verdict raises `ScannerUnavailable("clamd", detail)`: unreachable,
refused, too slow (one deadline for the whole exchange, not per chunk), too large for
clamd's StreamMaxLength, an ERROR reply or a reply we cannot read. None of these is ever
taken for "clean".

Why our own client: see README.md, dependencies.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from gateway.inbound.trust.scanning import ScannerUnavailable

SCANNER = "clamd"
# A verdict is one short line; more than this is not clamd talking.
_MAX_REPLY = 4096
_STREAM_PREFIX = "stream: "
_END = struct.pack("!L", 0)


class _BadReply(Exception):
    """clamd (or whatever answers) said something that is no verdict."""


@dataclass(frozen=True)
class ScanVerdict:
    """What the scanner said about one content: infected or not, and by which signature."""

    infected: bool
    signature: str | None


class MalwareScanner(Protocol):
    def scan(self, content: bytes) -> ScanVerdict:
        """The verdict on `content`; raises ScannerUnavailable when there is none."""
        ...

    def ping(self) -> None:
        """Returns when the scanner answers; raises ScannerUnavailable otherwise."""
        ...


def scan_all(scanner: MalwareScanner, items: Iterable[tuple[str, bytes]]) -> tuple[str, str] | None:
    """(label, signature) of the first infected item, None when all are clean.

    Items are e.g. each extracted document and the raw message. clamd finds an attachment
    in a raw message only with ScanMail on, and in a ZIP only with ScanArchive on (both
    Debian's defaults; tests/test_clamav.py runs with both): documents scanned on their own
    do not depend on that, nor on how they were extracted (TNEF, a nested archive).
    ScannerUnavailable from any item propagates: a partial scan is no verdict.
    """
    for label, content in items:
        verdict = scanner.scan(content)
        if verdict.infected:
            return label, verdict.signature or "unnamed"
    return None


class _Deadline:
    """One time budget for a whole exchange with clamd."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        return self._end - time.monotonic()

    def arm(self, sock: socket.socket) -> None:
        """Give the next socket operation what is left of the budget."""
        left = self.left()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)


class Clamd:
    """A MalwareScanner speaking to clamd at `address`: "unix:/path", "/path" or "host:port".

    One connection per call (clamd closes an INSTREAM session after its reply). `timeout`
    bounds each whole call: connect, send and reply. `chunk_size` is the INSTREAM chunk.
    """

    def __init__(self, address: str, timeout: float = 30.0, chunk_size: int = 64 * 1024) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.address = address
        self.timeout = timeout
        self.chunk_size = chunk_size
        self._family, self._target = _parse_address(address)

    def __repr__(self) -> str:
        return f"Clamd({self.address!r}, timeout={self.timeout})"

    def ping(self) -> None:
        reply = self._exchange(b"zPING\0", None)
        if reply != "PONG":
            raise self._unavailable(f"unexpected reply to PING: {reply[:200]!r}")

    def scan(self, content: bytes) -> ScanVerdict:
        try:
            return _verdict(self._exchange(b"zINSTREAM\0", content))
        except _BadReply as exc:
            raise self._unavailable(str(exc)) from None

    def _exchange(self, command: bytes, content: bytes | None) -> str:
        """Send `command` (and `content` as an INSTREAM stream), return the reply."""
        deadline = _Deadline(self.timeout)
        try:
            sock = self._connect(deadline)
        except TimeoutError:
            raise self._unavailable(f"connect timed out after {self.timeout}s") from None
        except OSError as exc:
            raise self._unavailable(f"cannot connect: {_describe(exc)}") from None
        with sock:
            try:
                for frame in self._frames(command, content):
                    deadline.arm(sock)
                    sock.sendall(frame)
            except TimeoutError:
                raise self._unavailable(f"sending timed out after {self.timeout}s") from None
            except OSError as exc:
                # clamd stops reading and answers when the stream passes StreamMaxLength:
                # its reply says why better than our broken pipe does.
                reply = _reply_after_send_error(sock, deadline)
                if reply is not None:
                    return reply
                raise self._unavailable(
                    f"connection lost while sending: {_describe(exc)}"
                ) from None
            try:
                return _read_reply(sock, deadline)
            except _BadReply as exc:
                raise self._unavailable(str(exc)) from None
            except TimeoutError:
                raise self._unavailable(f"no reply within {self.timeout}s") from None
            except OSError as exc:
                raise self._unavailable(
                    f"connection lost while reading: {_describe(exc)}"
                ) from None

    def _connect(self, deadline: _Deadline) -> socket.socket:
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            deadline.arm(sock)
            sock.connect(self._target)
        except BaseException:
            sock.close()
            raise
        return sock

    def _frames(self, command: bytes, content: bytes | None) -> Iterator[bytes]:
        """The writes: the command, then each chunk after its length, the zero length that
        ends the stream with the last. Lengths never go alone: over TCP a lone small write
        after a large one can wait for an ACK (Nagle's algorithm meeting delayed ACKs)."""
        if content is None:
            yield command
            return
        head = command
        view = memoryview(content)
        for start in range(0, len(view), self.chunk_size):
            chunk = view[start : start + self.chunk_size]
            last = start + self.chunk_size >= len(view)
            yield b"".join((head, struct.pack("!L", len(chunk)), chunk, _END if last else b""))
            head = b""
        if not view:
            yield head + _END

    def _unavailable(self, detail: str) -> ScannerUnavailable:
        return ScannerUnavailable(SCANNER, f"{self.address}: {detail}")


def _parse_address(address: str) -> tuple[socket.AddressFamily, str | tuple[str, int]]:
    if address.startswith("unix:"):
        path = address[len("unix:") :]
        if path.startswith("//"):  # unix:///path
            path = path[2:]
        if not path:
            raise ValueError(f"clamd address has no socket path: {address!r}")
        return socket.AF_UNIX, path
    if address.startswith("/"):
        return socket.AF_UNIX, address
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"clamd address is neither a unix socket nor host:port: {address!r}")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:3310
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host, int(port))


def _read_reply(sock: socket.socket, deadline: _Deadline) -> str:
    """One NUL-terminated reply. EOF before the NUL is an error: a cut reply is no verdict."""
    data = b""
    while b"\0" not in data:
        if len(data) > _MAX_REPLY:
            raise _BadReply(f"reply too long: {data[:200]!r}")
        deadline.arm(sock)
        received = sock.recv(_MAX_REPLY)
        if not received:
            what = f"an incomplete reply {data[:200]!r}" if data else "no reply"
            raise _BadReply(f"connection closed with {what}")
        data += received
    reply, _, _ = data.partition(b"\0")
    try:
        return reply.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise _BadReply(f"reply is not text: {reply[:200]!r}") from None


def _reply_after_send_error(sock: socket.socket, deadline: _Deadline) -> str | None:
    try:
        # A short wait: a reply sent before the error is already in our buffer.
        return _read_reply(sock, _Deadline(min(1.0, deadline.left())))
    except (OSError, _BadReply):
        return None


def _verdict(reply: str) -> ScanVerdict:
    """clamd's INSTREAM reply: "stream: OK", "stream: <signature> FOUND", or "... ERROR"."""
    if reply.endswith(" ERROR") or reply == "ERROR":
        raise _BadReply(reply.removesuffix("ERROR").strip().rstrip(".") or "ERROR")
    if reply.startswith(_STREAM_PREFIX):
        result = reply[len(_STREAM_PREFIX) :]
        if result == "OK":
            return ScanVerdict(infected=False, signature=None)
        if result.endswith(" FOUND") and result[: -len(" FOUND")].strip():
            return ScanVerdict(infected=True, signature=result[: -len(" FOUND")].strip())
    raise _BadReply(f"unreadable reply: {reply[:200]!r}")


def _describe(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__

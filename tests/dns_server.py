"""A real DNS server for tests: UDP and TCP on one free loopback port, answering from a zone
given as a dict, with hooks for the bad answers the gateway must survive.

    with DnsServer({("welyb.fr", "MX"): ["10 mx.welyb.fr."]}) as server:
        DnspythonLookup(timeout=1, nameservers=["127.0.0.1"], port=server.port)

Zone keys are (name, type), the name with or without its trailing dot, any case. Values are
lists of records in zone-file text, except TXT: each record is a `str` (cut into
character-strings of 255 bytes, as a zone compiler does) or a tuple of character-strings.
Every record has the server's `ttl` (300 s unless given). A "no such name" or "no record of
this type" answer carries the SOA of the nearest enclosing name that publishes one, if any,
in its authority section, as an authoritative server does: its TTL, the lesser of the SOA's
own and its minimum field, is how long a resolver may remember the negative answer
(RFC 2308).

Hooks, by name (any type): `slow[name] = seconds` answers late (`None`: never),
`servfail` answers SERVFAIL, `malformed` answers bytes that are no DNS message beyond the
header. An answer larger than the client's UDP payload goes back truncated (TC), so the
client retries over TCP, where the whole answer (up to 64 KiB) is sent: a huge TXT set is
the "huge answer" case. `queries` records what was asked, as (name, type, "udp"/"tcp").
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import struct
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

ZoneValue = str | tuple[str, ...]
TTL = 300


def _key(name: str) -> str:
    return name.lower().rstrip(".") + "."


class DnsServer:
    def __init__(
        self, zone: Mapping[tuple[str, str], Iterable[ZoneValue]] | None = None, ttl: int = TTL
    ) -> None:
        self.ttl = ttl
        self.zone: dict[tuple[str, str], list[ZoneValue]] = {}
        for (name, rdtype), values in (zone or {}).items():
            self.publish(name, rdtype, *values)
        self.slow: dict[str, float | None] = {}
        self.servfail: set[str] = set()
        self.malformed: set[str] = set()
        self.queries: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []
        self.port = 0

    # --- the zone -----------------------------------------------------------------------

    def publish(self, name: str, rdtype: str, *values: ZoneValue) -> None:
        """Adds records (after any already at the name and type)."""
        self.zone.setdefault((_key(name), rdtype.upper()), []).extend(values)

    def replace(self, name: str, rdtype: str, *values: ZoneValue) -> None:
        self.zone[(_key(name), rdtype.upper())] = list(values)

    def hook(self, name: str) -> str:
        """The key the hook sets use: `server.servfail.add(server.hook("x.example"))`."""
        return _key(name)

    def asked(self, name: str, rdtype: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for n, t, _ in self.queries
                if n == _key(name) and (rdtype is None or t == rdtype.upper())
            )

    # --- answering ----------------------------------------------------------------------

    def _rrset(self, name: str, rdtype: str, values: list[ZoneValue]) -> dns.rrset.RRset:
        rrset = dns.rrset.RRset(
            dns.name.from_text(name), dns.rdataclass.IN, dns.rdatatype.from_text(rdtype)
        )
        for value in values:
            if rdtype == "TXT":
                if isinstance(value, str):
                    raw = value.encode()
                    strings: tuple[bytes, ...] = tuple(
                        raw[i : i + 255] for i in range(0, len(raw), 255)
                    ) or (b"",)
                else:
                    strings = tuple(s.encode() for s in value)
                rdata: dns.rdata.Rdata = dns.rdtypes.ANY.TXT.TXT(
                    dns.rdataclass.IN, dns.rdatatype.TXT, strings
                )
            else:
                assert isinstance(value, str)
                rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, value)
            rrset.add(rdata, self.ttl)
        return rrset

    def _soa(self, name: str) -> dns.rrset.RRset | None:
        """The SOA of the nearest enclosing name that has one, for a negative answer."""
        labels = name.split(".")
        for i in range(len(labels) - 1):
            owner = ".".join(labels[i:])
            values = self.zone.get((owner, "SOA"))
            if values:
                rrset = self._rrset(owner, "SOA", values[:1])
                minimum = rrset[0].minimum
                rrset.update_ttl(min(self.ttl, minimum))
                return rrset
        return None

    def answer(self, wire: bytes, protocol: str) -> bytes | None:
        """The bytes to send back for one query; None to stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if not query.question:
            return None
        question = query.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            self.queries.append((name, rdtype, protocol))
        if name in self.slow:
            delay = self.slow[name]
            self._stopping.wait(delay if delay is not None else 3600.0)
            if delay is None or self._stopping.is_set():
                return None
        if name in self.malformed:
            # The query's id and a response header announcing one answer, then junk: the
            # client cannot parse it past the header.
            header = struct.pack("!HHHHHH", query.id, 0x8180, 1, 1, 0, 0)
            return header + b"\x07garbage\xff\xff\x00"
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif (name, rdtype) in self.zone:
            response.answer.append(self._rrset(name, rdtype, self.zone[(name, rdtype)]))
        else:
            if not any(n == name for n, _ in self.zone):
                response.set_rcode(dns.rcode.NXDOMAIN)
            soa = self._soa(name)
            if soa is not None:
                response.authority.append(soa)
        udp_limit = query.payload if query.edns >= 0 else 512
        limit = 65535 if protocol == "tcp" else udp_limit
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.TC
            return truncated.to_wire()

    # --- running ------------------------------------------------------------------------

    def start(self) -> DnsServer:
        server = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = server.answer(data, "udp")
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                sock.settimeout(5)
                with contextlib.suppress(OSError):
                    while not server._stopping.is_set():
                        prefix = _read_exactly(sock, 2)
                        if prefix is None:
                            return
                        wire = _read_exactly(sock, struct.unpack("!H", prefix)[0])
                        if wire is None:
                            return
                        reply = server.answer(wire, "tcp")
                        if reply is None:
                            return
                        sock.sendall(struct.pack("!H", len(reply)) + reply)

        class UdpServer(socketserver.ThreadingUDPServer):
            daemon_threads = True

        class TcpServer(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        # One port for both: bind UDP on a free port, then TCP on the same number (retried
        # on another free port in the rare case someone holds its TCP side).
        for _ in range(20):
            udp = UdpServer(("127.0.0.1", 0), Udp)
            try:
                tcp = TcpServer(("127.0.0.1", udp.server_address[1]), Tcp)
            except OSError:
                udp.server_close()
                continue
            break
        else:
            raise RuntimeError("no free port for both UDP and TCP")
        self.port = udp.server_address[1]
        self._servers = [udp, tcp]
        for s in self._servers:
            thread = threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05})
            thread.daemon = True
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        for s in self._servers:
            s.shutdown()
            s.server_close()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data

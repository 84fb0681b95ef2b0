"""DKIM signing of outbound mail (R15) and the key pairs behind it (R18).

Every outbound message is signed for the domain of its From address, once per key that
domain has: RSA-2048 (what every receiver checks) and, when the domain also has one, an
Ed25519 key (RFC 8463) as a second signature. relaxed/relaxed canonicalization, `t=`
timestamp, From oversigned so that a second From cannot be added without breaking it.

Why the canonicalization is written here rather than borrowed from dkimpy:
dkimpy computes the RSA signature inside `DomainSigner.gen_header`, with its own
pure-Python RSA and no hook to hand it a different private-key operation; replacing only
that step would mean overriding a 50-line internal method (or patching the module global
`RSASSA_PKCS1_v1_5_sign`, which is process-wide), and its parser and regexes cost more
than the signature itself on a 48 KB message. RFC 6376's relaxed canonicalization
(§3.4.2 headers, §3.4.4 body) is a few lines of byte operations, so this module does it
itself on the message bytes as they are, and leaves the private-key operations to
`cryptography` (OpenSSL): RSASSA-PKCS1-v1_5 with SHA-256, and Ed25519 over the SHA-256 of
the header hash input, as RFC 8463 §3 says. dkimpy and OpenDKIM stay the verifiers in the
tests (plus a seeded comparison with dkimpy's canonicalizer), so a divergence shows there.
benchmarks/dkim_sign.py: ~2,100 RSA-2048 signatures/s against dkimpy's ~140 (48 KB).

Signing is CPU work and the last step before the wire: `DkimSigner.sign` is a plain
synchronous function over immutable state (keys loaded once, in `__init__`), safe to call
from several threads, and it only prepends headers: the message bytes are never re-folded
or re-encoded.

Keys live in `<root>/<domain>/<selector>.<rsa|ed25519>.pem` (PKCS#8, mode 0600);
`dns_record_name` / `dns_txt_value` say what to publish. A 2048-bit RSA `p=` is longer than
255 characters: in a zone file the TXT value must be split into several quoted strings,
which DNS joins back without separators.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from gateway import metrics
from gateway.clock import Clock, SystemClock
from gateway.errors import GatewayError

RSA_SHA256 = "rsa-sha256"
ED25519_SHA256 = "ed25519-sha256"
ALGORITHMS = (RSA_SHA256, ED25519_SHA256)
_FILE_KIND = {RSA_SHA256: "rsa", ED25519_SHA256: "ed25519"}
_KIND_ALGORITHM = {kind: algorithm for algorithm, kind in _FILE_KIND.items()}

#: Header fields signed when present (From always, and twice: see `DkimSigner`).
DEFAULT_SIGNED_HEADERS: tuple[str, ...] = (
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Reply-To",
    "In-Reply-To",
    "References",
)

MIN_RSA_BITS = 1024  # RFC 8301 §3.2: verifiers must accept 1024..4096; signers use >= 1024
_FOLD_AT = 78  # RFC 5322 §2.1.1 "SHOULD" line length, without the CRLF

# DNS labels (letters, digits, hyphen; underscore tolerated as in selectors), dot-separated.
_NAME_RE = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9_-]{1,63}(?<!-))*$")
_WSP_RUN = re.compile(rb"[ \t]+")
_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")


class DkimError(GatewayError):
    """Signing cannot happen as asked; the message says what to fix."""


def _keygen_hint(domain: str) -> str:
    return (
        f"run `gateway dkim keygen --domain {domain} --selector gw1` (any selector name will"
        " do) and publish the DNS TXT record it prints"
    )


def normalize_domain(domain: str) -> str:
    """Lower-case ASCII form (IDNA for internationalized names), no trailing dot."""
    name = domain.strip().rstrip(".").lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise DkimError(f"invalid DKIM domain {domain!r}: {exc}") from None
    if not _NAME_RE.match(name) or "." not in name:
        raise DkimError(f"invalid DKIM domain {domain!r}")
    return name


def _check_selector(selector: str) -> str:
    """Selectors become a DNS name and a file name: no slashes, no `..`, no spaces."""
    if not _NAME_RE.match(selector.lower()):
        raise DkimError(f"invalid DKIM selector {selector!r} (DNS labels separated by dots)")
    return selector


@dataclass(frozen=True)
class DkimKey:
    """One private key of a domain, as stored; `DkimSigner` loads it for signing."""

    domain: str  # lower-case
    selector: str
    algorithm: str  # "rsa-sha256" or "ed25519-sha256"
    private_key_pem: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "domain", normalize_domain(self.domain))
        _check_selector(self.selector)
        if self.algorithm not in ALGORITHMS:
            raise DkimError(
                f"unsupported DKIM algorithm {self.algorithm!r} (use one of {ALGORITHMS})"
            )

    def __repr__(self) -> str:  # keeps the private key out of logs and tracebacks
        return f"DkimKey(domain={self.domain!r}, selector={self.selector!r}, {self.algorithm})"


def generate_key(
    domain: str, selector: str, algorithm: str = RSA_SHA256, bits: int = 2048
) -> DkimKey:
    """A new key pair (R18); `bits` applies to RSA only. Publish `dns_txt_value` for it."""
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == RSA_SHA256:
        if bits < MIN_RSA_BITS:
            raise DkimError(f"RSA keys under {MIN_RSA_BITS} bits are refused (RFC 8301)")
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    elif algorithm == ED25519_SHA256:
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise DkimError(f"unsupported DKIM algorithm {algorithm!r} (use one of {ALGORITHMS})")
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return DkimKey(domain, selector, algorithm, pem)


def _load_private(key: DkimKey) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    """Parse the PEM once, checking it is the kind of key `algorithm` says."""
    where = f"DKIM key {key.selector} of {key.domain}"
    try:
        private = serialization.load_pem_private_key(key.private_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise DkimError(f"{where}: unreadable private key ({exc})") from None
    if key.algorithm == RSA_SHA256 and isinstance(private, rsa.RSAPrivateKey):
        if private.key_size < MIN_RSA_BITS:
            raise DkimError(f"{where}: {private.key_size}-bit RSA is too short (RFC 8301)")
        return private
    if key.algorithm == ED25519_SHA256 and isinstance(private, ed25519.Ed25519PrivateKey):
        return private
    raise DkimError(f"{where}: the PEM does not hold an {key.algorithm} key")


def dns_record_name(key: DkimKey) -> str:
    """Where the public key is published: `<selector>._domainkey.<domain>`."""
    return f"{key.selector}._domainkey.{key.domain}"


def dns_txt_value(key: DkimKey) -> str:
    """The TXT record content (RFC 6376 §3.6.1; RFC 8463 §4 for ed25519's raw 32 bytes)."""
    public = _load_private(key).public_key()
    if isinstance(public, rsa.RSAPublicKey):
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode('ascii')}"


def key_file_name(key: DkimKey) -> str:
    """`<selector>.<rsa|ed25519>.pem`: the key's name within its domain, in the folder and
    in the database (gateway/outbound/dkim_keys.py) alike."""
    return f"{key.selector}.{_FILE_KIND[key.algorithm]}.pem"


def parse_key_file_name(file_name: str) -> tuple[str, str] | None:
    """(selector, algorithm) of a name `key_file_name` made; None for any other name (a
    temporary file, something left there by hand)."""
    parts = file_name.rsplit(".", 2)
    if file_name.startswith(".") or len(parts) != 3 or parts[2] != "pem":
        return None
    algorithm = _KIND_ALGORITHM.get(parts[1])
    return None if algorithm is None else (parts[0], algorithm)


class KeyStore:
    """Keys on disk: <root>/<domain>/<selector>.<rsa|ed25519>.pem, mode 0600; where they
    live when no secrets key is configured (gateway/storage/shared_secrets.py)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, key: DkimKey) -> Path:
        return self.root / key.domain / key_file_name(key)

    def save(self, key: DkimKey, *, overwrite: bool = False) -> Path:
        """Write the key where `keys_for` finds it. Never replaces a key by accident: a
        published selector whose private key is lost stops verifying, so overwriting takes
        `overwrite=True`. The file appears whole (written aside, then linked or renamed)."""
        path = self.path_for(key)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.exists() and not overwrite:
            raise DkimError(
                f"{path} exists: a published key is never overwritten; choose another selector"
            )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)  # whatever the umask
                f.write(key.private_key_pem)
                f.flush()
                os.fsync(f.fileno())
            if overwrite:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)  # atomic "create if absent", unlike exists()+rename
                except FileExistsError:
                    raise DkimError(
                        f"{path} exists: refusing to overwrite DKIM key (overwrite=True)"
                    ) from None
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def keys_for(self, domain: str) -> list[DkimKey]:
        """All keys of `domain`, RSA first (then by selector); [] when it has none."""
        directory = self.root / normalize_domain(domain)
        if not directory.is_dir():
            return []
        keys = []
        for path in directory.iterdir():
            named = parse_key_file_name(path.name)
            if named is None or not path.is_file():
                continue
            try:
                keys.append(DkimKey(directory.name, *named, path.read_bytes()))
            except DkimError as exc:
                raise DkimError(f"{path}: {exc}") from None
        return sort_keys(keys)

    def all(self) -> list[DkimKey]:
        """Every key of every domain, domains in name order."""
        if not self.root.is_dir():
            return []
        return [
            key
            for directory in sorted(self.root.iterdir())
            if directory.is_dir() and not directory.name.startswith(".")
            for key in self.keys_for(directory.name)
        ]


def sort_keys(keys: list[DkimKey]) -> list[DkimKey]:
    """A domain's keys in signing order: RSA first, then by selector."""
    return sorted(keys, key=lambda k: (ALGORITHMS.index(k.algorithm), k.selector))


# --- canonicalization (RFC 6376 §3.4.2, §3.4.4) -------------------------------------------


def _relaxed_header(name: bytes, value: bytes) -> bytes:
    """`name:value` lower-cased name, unfolded, WSP runs to one SP, trimmed; no CRLF."""
    value = _WSP_RUN.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.lower() + b":" + value


def _relaxed_body(body: bytes) -> bytes:
    """WSP runs to one SP, trailing WSP of lines dropped, trailing empty lines dropped.

    Done with bytes.replace rather than a regex: the body is mostly base64, and a `[ \t]+`
    scan over 48 KB costs ~0.35 ms in `re`, more than the RSA signature itself; replace()
    is a C search. Tab -> SP first, then halve SP runs until none is left, so every WSP
    run ends as one SP; the one left before a CRLF goes. A last line without CRLF is
    canonicalized as the receiver will see it: SMTP's DATA always adds that CRLF."""
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    body = body.replace(b"\t", b" ")
    while b"  " in body:
        body = body.replace(b"  ", b" ")
    body = body.replace(b" \r\n", b"\r\n")
    end = len(body)
    while end >= 2 and body[end - 2 : end] == b"\r\n":
        end -= 2
    return body[:end] + b"\r\n" if end else b""


def _split_message(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Header fields as (name, raw value with its folding CRLFs) and the body, untouched."""
    if message.count(b"\n") != message.count(b"\r\n"):
        raise DkimError("message has bare LF line endings: sign the CRLF form sent on the wire")
    end = message.find(b"\r\n\r\n")
    if message.startswith(b"\r\n"):
        head, body = b"", message[2:]
    elif end == -1:
        head, body = message, b""
    else:
        head, body = message[: end + 2], message[end + 4 :]
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if not line:
            continue
        if line[0] in b" \t":
            if not fields:
                raise DkimError("message starts with a folded header line")
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
            continue
        match = _FIELD_NAME.match(line)
        if match is None:
            raise DkimError(f"malformed header line {line[:60]!r}")
        fields.append((match.group(1), line[match.end() :]))
    return fields, body


def _select(fields: list[tuple[bytes, bytes]], names: Sequence[bytes]) -> bytes:
    """The h= header hash input: each name takes its bottom-most unused instance
    (RFC 6376 §5.4.2); a name with none left contributes nothing."""
    used: dict[bytes, int] = {}
    out = []
    for name in names:
        i = used.get(name, len(fields))
        while i > 0:
            i -= 1
            if fields[i][0].lower() == name:
                out.append(_relaxed_header(*fields[i]) + b"\r\n")
                break
        used[name] = i
    return b"".join(out)


def _fold(atoms: Sequence[tuple[str, str]], first: str) -> list[str]:
    """Lay out (separator, text) atoms on lines of at most 78 characters."""
    lines = [first]
    for sep, text in atoms:
        if len(lines[-1]) + len(sep) + len(text) > _FOLD_AT:
            lines.append(" " + text)
        else:
            lines[-1] += sep + text
    return lines


@dataclass(frozen=True)
class _SigningKey:
    key: DkimKey
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    def sign(self, header_input: bytes) -> bytes:
        if isinstance(self.private, rsa.RSAPrivateKey):
            return self.private.sign(header_input, padding.PKCS1v15(), hashes.SHA256())
        return self.private.sign(hashlib.sha256(header_input).digest())  # RFC 8463 §3


class DkimSigner:
    """Signs outbound messages with the keys it was given, loaded once."""

    def __init__(
        self,
        keys: Sequence[DkimKey],
        signed_headers: Sequence[str] = DEFAULT_SIGNED_HEADERS,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._keys = tuple(keys)
        self._signed_headers = tuple(signed_headers)
        self._clock = clock or SystemClock()
        by_domain: dict[str, list[_SigningKey]] = {}
        for key in self._keys:
            by_domain.setdefault(key.domain, []).append(_SigningKey(key, _load_private(key)))
        self._by_domain: dict[str, tuple[_SigningKey, ...]] = {
            domain: tuple(sorted(found, key=lambda s: ALGORITHMS.index(s.key.algorithm)))
            for domain, found in by_domain.items()
        }
        names = [b"from"]  # RFC 6376 §5.4: From MUST be signed
        for name in signed_headers:
            encoded = name.strip().lower().encode("ascii")
            if encoded not in names:
                names.append(encoded)
        self._names: tuple[bytes, ...] = tuple(names)

    def __reduce__(self) -> tuple[Any, ...]:
        """Picklable (for a process pool): rebuilt from the PEMs on the other side."""
        return (_rebuild_signer, (self._keys, self._signed_headers, self._clock))

    def domains(self) -> list[str]:
        return sorted(self._by_domain)

    def sign(self, message: bytes, domain: str) -> bytes:
        """Return `message` with one DKIM-Signature header per key of `domain` prepended
        (RSA first, then ed25519). relaxed/relaxed, `t=` now, From oversigned. The message
        bytes follow unchanged (CRLF line endings expected). DkimError if the domain has
        no key, the message has no From, or it is not CRLF text."""
        wanted = normalize_domain(domain)
        signing_keys = self._by_domain.get(wanted)
        if not signing_keys:
            raise DkimError(f"no DKIM key for domain {wanted}: {_keygen_hint(wanted)}")
        fields, body = _split_message(message)
        present: dict[bytes, int] = {}
        for name, _ in fields:
            present[name.lower()] = present.get(name.lower(), 0) + 1
        if b"from" not in present:
            raise DkimError("message has no From header: nothing to sign for")
        h_names = [name for name in self._names for _ in range(present.get(name, 0))]
        h_names.append(b"from")  # one more than there are: a From added later breaks it
        header_input = _select(fields, h_names)
        body_hash = base64.b64encode(hashlib.sha256(_relaxed_body(body)).digest()).decode()
        timestamp = int(self._clock.now().timestamp())
        h_value = [name.decode("ascii") for name in h_names]
        return (
            b"".join(
                self._signature(k, header_input, h_value, body_hash, timestamp)
                for k in signing_keys
            )
            + message
        )

    @staticmethod
    def _signature(
        signing_key: _SigningKey,
        header_input: bytes,
        h_value: list[str],
        body_hash: str,
        timestamp: int,
    ) -> bytes:
        key = signing_key.key
        atoms = [
            (" ", "v=1;"),
            (" ", f"a={key.algorithm};"),
            (" ", "c=relaxed/relaxed;"),
            (" ", f"d={key.domain};"),
            (" ", f"s={key.selector};"),
            (" ", f"t={timestamp};"),
        ]
        # h= may fold after any colon (RFC 6376 §3.5 allows FWS around ":")
        h_atoms = [f"{name}:" for name in h_value[:-1]] + [f"{h_value[-1]};"]
        atoms += [(" ", "h=" + h_atoms[0])] + [("", atom) for atom in h_atoms[1:]]
        atoms += [(" ", f"bh={body_hash};"), (" ", "b=")]
        lines = _fold(atoms, "DKIM-Signature:")
        unsigned = "\r\n".join(lines).encode("ascii")
        name, value = unsigned.split(b":", 1)
        signature = signing_key.sign(header_input + _relaxed_header(name, value))
        b64 = base64.b64encode(signature).decode("ascii")
        room = max(_FOLD_AT - len(lines[-1]), 0)
        chunks = [b64[:room]] + [b64[i : i + 76] for i in range(room, len(b64), 76)]
        folded = "\r\n ".join(chunk for chunk in chunks if chunk)
        if not chunks[0]:
            folded = "\r\n " + folded
        metrics.DKIM_SIGNATURES.labels(key.domain, key.algorithm).inc()
        return unsigned + folded.encode("ascii") + b"\r\n"


def _rebuild_signer(
    keys: tuple[DkimKey, ...], signed_headers: tuple[str, ...], clock: Clock
) -> DkimSigner:
    return DkimSigner(keys, signed_headers, clock=clock)

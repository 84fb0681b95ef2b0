"""DKIM signing (R15, R18): our signatures must verify with two independent verifiers,
dkimpy and OpenDKIM, break when the message is tampered with, and leave the message bytes
exactly as they were. OpenDKIM comes from scripts/setup-test-packages; its absence is a
failure, not a skip, so that CI cannot pass without the second verifier."""

from __future__ import annotations

import base64
import pickle
import random
import re
import shutil
import stat
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.canonicalization import Relaxed
from prometheus_client import REGISTRY

from gateway.outbound.dkim import (
    DkimError,
    DkimKey,
    DkimSigner,
    KeyStore,
    _relaxed_body,
    _relaxed_header,
    dns_record_name,
    dns_txt_value,
    generate_key,
)
from tests.support import DEFAULT_NOW, FixedClock, pdf

DOMAIN = "cabinet-dupont.example"


@pytest.fixture(scope="module")
def rsa_key() -> DkimKey:
    return generate_key(DOMAIN, "gw2026")


@pytest.fixture(scope="module")
def ed_key() -> DkimKey:
    try:
        import nacl.signing  # noqa: F401  (dkimpy verifies ed25519 only through PyNaCl)
    except ImportError:
        pytest.fail(
            "PyNaCl is missing, so dkimpy cannot verify ed25519 signatures: install the test "
            "extras (`dkimpy[ed25519]`) with scripts/bootstrap"
        )
    return generate_key(DOMAIN, "gw2026e", "ed25519-sha256")


def outbound_message(body: str = "Bonjour,\n\nveuillez trouver la facture ci-jointe.\n") -> bytes:
    """What the gateway relays to a partner: text, HTML and a PDF, CRLF as on the wire."""
    msg = EmailMessage()
    msg["From"] = "Cabinet Dupont <documents@cabinet-dupont.example>"
    msg["To"] = "Pennylane <factures+dupont-maconnerie@partner.example>"
    msg["Cc"] = "compta@cabinet-dupont.example"
    msg["Subject"] = "Facture 2026-117 — Dupont Maçonnerie (relance n°2, pièce jointe incluse)"
    msg["Date"] = format_datetime(DEFAULT_NOW)
    msg["Message-ID"] = "<20261122103000.4f1c@cabinet-dupont.example>"
    msg["Reply-To"] = "compta@cabinet-dupont.example"
    msg.set_content(body)
    msg.add_alternative(f"<html><body><p>{body}</p></body></html>", subtype="html")
    msg.add_attachment(
        pdf("Facture 2026-117"), maintype="application", subtype="pdf", filename="facture.pdf"
    )
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def dnsfunc_for(*keys: DkimKey) -> Callable[..., bytes | None]:
    """A resolver for dkimpy that knows only the TXT records we would publish."""
    records = {dns_record_name(k): dns_txt_value(k).encode() for k in keys}

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return records.get(name.decode().rstrip("."))

    return dnsfunc


def dkimpy_results(signed: bytes, *keys: DkimKey) -> list[bool]:
    """dkimpy's verdict on each DKIM-Signature, top to bottom."""
    count = len(re.findall(rb"(?im)^dkim-signature:", signed.split(b"\r\n\r\n", 1)[0]))
    return [dkim.DKIM(signed).verify(idx=i, dnsfunc=dnsfunc_for(*keys)) for i in range(count)]


def signature_headers(signed: bytes, original: bytes) -> bytes:
    assert signed.endswith(original)
    return signed[: len(signed) - len(original)]


# --- dkimpy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["rsa", "ed25519"])
def test_single_key_signature_verifies_with_dkimpy(
    which: str, rsa_key: DkimKey, ed_key: DkimKey
) -> None:
    key = rsa_key if which == "rsa" else ed_key
    message = outbound_message()
    signed = DkimSigner([key]).sign(message, DOMAIN)
    assert dkim.verify(signed, dnsfunc=dnsfunc_for(key)) is True
    header = signature_headers(signed, message).decode()
    assert header.count("DKIM-Signature:") == 1
    assert f"a={key.algorithm};" in header
    assert "c=relaxed/relaxed;" in header
    assert f"d={DOMAIN};" in header and f"s={key.selector};" in header
    assert re.search(r"\bt=\d{10};", header)


def test_rsa_and_ed25519_keys_give_two_signatures_both_verify(
    rsa_key: DkimKey, ed_key: DkimKey
) -> None:
    message = outbound_message()
    signed = DkimSigner([ed_key, rsa_key]).sign(message, DOMAIN)
    header = signature_headers(signed, message).decode()
    assert header.count("DKIM-Signature:") == 2
    assert header.index("a=rsa-sha256") < header.index("a=ed25519-sha256")  # RSA first
    assert dkimpy_results(signed, rsa_key, ed_key) == [True, True]
    assert dkim.verify(signed, dnsfunc=dnsfunc_for(rsa_key, ed_key)) is True


def test_signer_prepends_headers_and_leaves_message_bytes_alone(
    rsa_key: DkimKey, ed_key: DkimKey
) -> None:
    message = outbound_message()
    signed = DkimSigner([rsa_key, ed_key]).sign(message, DOMAIN)
    assert signed.startswith(b"DKIM-Signature: ")
    prefix = signature_headers(signed, message)
    assert signed == prefix + message
    # the prefix is exactly two header fields, CRLF-terminated, folded lines under 79 chars
    fields = re.split(rb"\r\n(?=\S)", prefix.removesuffix(b"\r\n"))
    assert len(fields) == 2 and all(f.startswith(b"DKIM-Signature: ") for f in fields)
    assert all(len(line) <= 78 for line in prefix.split(b"\r\n"))
    assert prefix.count(b"\n") == prefix.count(b"\r\n")


def test_timestamp_comes_from_the_clock(rsa_key: DkimKey) -> None:
    signed = DkimSigner([rsa_key], clock=FixedClock(DEFAULT_NOW)).sign(outbound_message(), DOMAIN)
    assert f"t={int(DEFAULT_NOW.timestamp())};".encode() in signed.split(b"From:", 1)[0]


def test_signed_headers_list_present_ones_and_oversign_from(rsa_key: DkimKey) -> None:
    message = outbound_message()
    signed = DkimSigner([rsa_key]).sign(message, DOMAIN)
    header = re.sub(r"\s+", "", signature_headers(signed, message).decode())
    h_tag = re.search(r";h=([^;]+);", header)
    assert h_tag is not None
    assert h_tag.group(1).split(":") == [
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "reply-to",
        "from",
    ]
    # a second From added in transit breaks the signature
    forged = signed.replace(b"\r\nFrom:", b"\r\nFrom: attacker@evil.example\r\nFrom:", 1)
    assert dkim.verify(forged, dnsfunc=dnsfunc_for(rsa_key)) is False


def test_awkward_message_verifies(rsa_key: DkimKey, ed_key: DkimKey) -> None:
    """Folded headers, odd whitespace, trailing blank lines: canonicalization edge cases."""
    message = (
        b"Received: from a by b; Sun, 22 Nov 2026 10:30:00 +0000\r\n"
        b"from:  Cabinet \t Dupont\r\n\t <documents@cabinet-dupont.example>  \r\n"
        b"To: a@partner.example,\r\n  b@partner.example\r\n"
        b"SUBJECT:\tLong   subject\r\n continued \t here\r\n"
        b"Subject: a second one\r\n"
        b"\r\n"
        b"line with trailing space  \r\n"
        b"  indented\t\tline\r\n"
        b"\r\n"
        b"\r\n"
        b"\r\n"
    )
    signed = DkimSigner([rsa_key, ed_key]).sign(message, DOMAIN)
    assert signed.endswith(message)
    assert dkimpy_results(signed, rsa_key, ed_key) == [True, True]
    header = re.sub(r"\s+", "", signature_headers(signed, message).decode())
    assert ";h=from:to:subject:subject:from;" in header


def test_relaxed_canonicalization_matches_dkimpy() -> None:
    """Our byte-level canonicalization against dkimpy's, on seeded random WSP soup."""
    rng = random.Random(6376)
    atoms = [b"a", b"b", b" ", b"\t", b"  \t ", b"\r\n", b"\r\n "]
    for _ in range(20_000):
        text = b"".join(rng.choice(atoms) for _ in range(rng.randint(0, 14)))
        body = text if text.endswith(b"\r\n") or not text else text + b"\r\n"
        assert _relaxed_body(text) == Relaxed.canonicalize_body(body), text
        ((name, value),) = Relaxed.canonicalize_headers([(b"X-Test", text)])
        assert _relaxed_header(b"X-Test", text) + b"\r\n" == name + b":" + value, text


# The SMTP client adds the CRLF a message's last line lacks: verify what goes on the wire.
@pytest.mark.parametrize("body", [b"", b"\r\n\r\n", b"no final newline", b"x \r\n y \t"])
def test_empty_and_unterminated_bodies_verify(
    body: bytes, tmp_path: Path, rsa_key: DkimKey
) -> None:
    message = b"From: documents@cabinet-dupont.example\r\nSubject: x\r\n\r\n" + body
    signed = DkimSigner([rsa_key]).sign(message, DOMAIN)
    assert signed.endswith(message)
    wire = signed if signed.endswith(b"\r\n") else signed + b"\r\n"
    assert dkim.verify(wire, dnsfunc=dnsfunc_for(rsa_key)) is True
    output = opendkim_verify(tmp_path, wire, [rsa_key])
    assert opendkim_results(output) == {rsa_key.selector: "pass"}, output


# --- tampering -------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["rsa", "ed25519"])
def test_changed_body_byte_fails(which: str, rsa_key: DkimKey, ed_key: DkimKey) -> None:
    key = rsa_key if which == "rsa" else ed_key
    signed = DkimSigner([key]).sign(outbound_message(), DOMAIN)
    at = signed.index(b"veuillez")
    tampered = signed[:at] + b"V" + signed[at + 1 :]
    assert len(tampered) == len(signed) and tampered != signed
    assert dkim.verify(signed, dnsfunc=dnsfunc_for(key)) is True
    assert dkim.verify(tampered, dnsfunc=dnsfunc_for(key)) is False


@pytest.mark.parametrize("which", ["rsa", "ed25519"])
def test_changed_subject_fails(which: str, rsa_key: DkimKey, ed_key: DkimKey) -> None:
    key = rsa_key if which == "rsa" else ed_key
    signed = DkimSigner([key]).sign(outbound_message(), DOMAIN)
    tampered = signed.replace(b"Subject: Facture 2026-117", b"Subject: Facture 2026-118", 1)
    assert tampered != signed
    assert dkim.verify(tampered, dnsfunc=dnsfunc_for(key)) is False


# --- OpenDKIM --------------------------------------------------------------------------------


def opendkim_binary() -> str:
    found = shutil.which("opendkim") or shutil.which(
        "opendkim", path="/usr/sbin:/usr/local/sbin:/sbin"
    )
    if found is None:
        pytest.fail(
            "opendkim is not installed: run scripts/setup-test-packages "
            "(it installs the Debian packages opendkim and opendkim-tools)"
        )
    return found


def opendkim_verify(tmp_path: Path, signed: bytes, keys: Sequence[DkimKey]) -> str:
    """Run OpenDKIM in test mode, offline (TestDNSData), and return what it printed."""
    dns = tmp_path / "dns-data"
    dns.write_text("".join(f"{dns_record_name(k)} {dns_txt_value(k)}\n" for k in keys))
    conf = tmp_path / "opendkim.conf"
    conf.write_text(f"Mode v\nSyslog no\nTestDNSData file:{dns}\n")
    eml = tmp_path / "msg.eml"
    eml.write_bytes(signed)
    # -vv makes it print the Authentication-Results it would add: one result per signature
    done = subprocess.run(
        [opendkim_binary(), "-x", str(conf), "-vv", "-t", str(eml)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout + done.stderr


def opendkim_results(output: str) -> dict[str, str]:
    """selector -> pass / fail / ... from the Authentication-Results it printed."""
    return dict(
        (m.group(2), m.group(1))
        for m in re.finditer(r"dkim=(\w+)\b[^;]*?header\.s=(\S+?)[\s;]", output)
    )


def test_opendkim_verifies_both_signatures(
    tmp_path: Path, rsa_key: DkimKey, ed_key: DkimKey
) -> None:
    signed = DkimSigner([rsa_key, ed_key]).sign(outbound_message(), DOMAIN)
    output = opendkim_verify(tmp_path, signed, [rsa_key, ed_key])
    assert f"verification (s={rsa_key.selector}, d={DOMAIN}, 2048-bit key) succeeded" in output
    assert opendkim_results(output) == {rsa_key.selector: "pass", ed_key.selector: "pass"}, output


def test_opendkim_verifies_awkward_message(tmp_path: Path, rsa_key: DkimKey) -> None:
    message = (
        b"From:   documents@cabinet-dupont.example \r\n"
        b"Subject:\tWith\r\n \t folding  \r\n"
        b"\r\n"
        b"trailing   \t\r\n"
        b"\r\n"
    )
    signed = DkimSigner([rsa_key]).sign(message, DOMAIN)
    output = opendkim_verify(tmp_path, signed, [rsa_key])
    assert opendkim_results(output) == {rsa_key.selector: "pass"}, output


def test_opendkim_rejects_tampered_message(
    tmp_path: Path, rsa_key: DkimKey, ed_key: DkimKey
) -> None:
    """The same check must be able to fail, or its passing means nothing."""
    signed = DkimSigner([rsa_key, ed_key]).sign(outbound_message(), DOMAIN)
    tampered = signed.replace(b"Subject: Facture 2026-117", b"Subject: Facture 2026-118", 1)
    output = opendkim_verify(tmp_path, tampered, [rsa_key, ed_key])
    assert "succeeded" not in output
    assert opendkim_results(output) == {rsa_key.selector: "fail", ed_key.selector: "fail"}, output


# --- keys, DNS record, key store ------------------------------------------------------------


def test_dns_record_for_rsa_is_a_2048_bit_subject_public_key_info(rsa_key: DkimKey) -> None:
    assert dns_record_name(rsa_key) == f"gw2026._domainkey.{DOMAIN}"
    value = dns_txt_value(rsa_key)
    assert value.startswith("v=DKIM1; k=rsa; p=")
    public = serialization.load_der_public_key(base64.b64decode(value.split("p=", 1)[1]))
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == 2048


def test_dns_record_for_ed25519_is_the_raw_32_byte_key(ed_key: DkimKey) -> None:
    value = dns_txt_value(ed_key)
    assert value.startswith("v=DKIM1; k=ed25519; p=")
    assert len(base64.b64decode(value.split("p=", 1)[1])) == 32


def test_generate_key_normalizes_and_validates() -> None:
    key = generate_key("Cabinet-Dupont.Example.", "s1", "ed25519-sha256")
    assert key.domain == "cabinet-dupont.example"
    assert "PRIVATE KEY" not in repr(key)
    with pytest.raises(DkimError, match="unsupported"):
        generate_key(DOMAIN, "s1", "rsa-sha1")
    with pytest.raises(DkimError, match="1024"):
        generate_key(DOMAIN, "s1", bits=512)
    with pytest.raises(DkimError, match="selector"):
        generate_key(DOMAIN, "../etc", "ed25519-sha256")


def test_keystore_round_trip_mode_and_order(
    tmp_path: Path, rsa_key: DkimKey, ed_key: DkimKey
) -> None:
    store = KeyStore(tmp_path / "dkim")
    ed_path = store.save(ed_key)
    rsa_path = store.save(rsa_key)
    assert rsa_path == tmp_path / "dkim" / DOMAIN / "gw2026.rsa.pem"
    assert ed_path == tmp_path / "dkim" / DOMAIN / "gw2026e.ed25519.pem"
    for path in (rsa_path, ed_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.keys_for(DOMAIN.upper()) == [rsa_key, ed_key]  # RSA first
    other = generate_key("other.example", "s1", "ed25519-sha256")
    store.save(other)
    assert store.all() == [rsa_key, ed_key, other]
    assert [p.name for p in (tmp_path / "dkim" / DOMAIN).iterdir()].count(rsa_path.name) == 1
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "dkim").rglob("*"))


def test_keystore_refuses_to_overwrite(tmp_path: Path, rsa_key: DkimKey) -> None:
    store = KeyStore(tmp_path)
    path = store.save(rsa_key)
    replacement = DkimKey(DOMAIN, rsa_key.selector, "rsa-sha256", b"-----not this-----\n")
    with pytest.raises(DkimError, match="never overwritten"):
        store.save(replacement)
    assert path.read_bytes() == rsa_key.private_key_pem
    store.save(replacement, overwrite=True)
    assert path.read_bytes() == replacement.private_key_pem
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_unknown_domain_has_no_keys_and_signing_says_how_to_make_one(
    tmp_path: Path, rsa_key: DkimKey
) -> None:
    store = KeyStore(tmp_path)
    store.save(rsa_key)
    assert store.keys_for("unknown.example") == []
    assert KeyStore(tmp_path / "missing").all() == []
    signer = DkimSigner(store.all())
    with pytest.raises(DkimError) as caught:
        signer.sign(outbound_message(), "Unknown.Example")
    text = str(caught.value)
    assert "unknown.example" in text
    assert "gateway dkim keygen --domain unknown.example --selector" in text


def test_keys_loaded_from_store_sign_and_verify(
    tmp_path: Path, rsa_key: DkimKey, ed_key: DkimKey
) -> None:
    store = KeyStore(tmp_path)
    store.save(rsa_key)
    store.save(ed_key)
    signed = DkimSigner(store.keys_for(DOMAIN)).sign(outbound_message(), DOMAIN)
    assert dkimpy_results(signed, rsa_key, ed_key) == [True, True]


# --- misuse and concurrency ------------------------------------------------------------------


def test_bad_input_is_refused(rsa_key: DkimKey) -> None:
    signer = DkimSigner([rsa_key])
    with pytest.raises(DkimError, match="bare LF"):
        signer.sign(b"From: a@cabinet-dupont.example\nSubject: x\n\nhi\n", DOMAIN)
    with pytest.raises(DkimError, match="no From"):
        signer.sign(b"Subject: x\r\n\r\nhi\r\n", DOMAIN)
    with pytest.raises(DkimError, match="does not hold"):
        DkimSigner([DkimKey(DOMAIN, "x", "ed25519-sha256", rsa_key.private_key_pem)])


def test_signer_is_thread_safe_and_picklable(rsa_key: DkimKey, ed_key: DkimKey) -> None:
    signer = DkimSigner([rsa_key, ed_key])
    messages = [outbound_message(body=f"Message {i}\n") for i in range(24)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        signed = list(pool.map(lambda m: signer.sign(m, DOMAIN), messages))
    for original, result in zip(messages, signed, strict=True):
        assert result.endswith(original)
        assert dkimpy_results(result, rsa_key, ed_key) == [True, True]
    clone = pickle.loads(pickle.dumps(signer))
    assert dkimpy_results(clone.sign(messages[0], DOMAIN), rsa_key, ed_key) == [True, True]


def test_each_signature_is_counted_by_domain_and_algorithm(
    rsa_key: DkimKey, ed_key: DkimKey
) -> None:
    """gateway_dkim_signatures_total (here in this process's registry; under serve, summed
    over its processes by /metrics)."""

    def made(algorithm: str) -> float:
        labels = {"domain": DOMAIN, "algorithm": algorithm}
        return REGISTRY.get_sample_value("gateway_dkim_signatures_total", labels) or 0.0

    before = made("rsa-sha256"), made("ed25519-sha256")
    DkimSigner([rsa_key, ed_key]).sign(outbound_message(), DOMAIN)
    DkimSigner([rsa_key]).sign(outbound_message(), DOMAIN)
    assert (made("rsa-sha256"), made("ed25519-sha256")) == (before[0] + 2, before[1] + 1)

"""The outbound message of one delivery (gateway.outbound.compose).

R15: the bytes are final (CRLF, 7-bit, deterministic) so a DKIM signature over them holds;
R16: the From is the identity the partner expects; addresses never inject headers.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.outbound.compose import (
    OutboundDocument,
    compose,
    header_display_name,
    message_id_for,
    plain_address,
)

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
WHEN = datetime(2026, 3, 2, 9, 15, 3, tzinfo=UTC)
SENDER = "myunisoft+aecconseil@welyb.fr"
RECIPIENT = "depot-aec@partner.example"


def document(**changes: object) -> OutboundDocument:
    values: dict[str, object] = {
        "delivery_id": 42,
        "document_id": 117,
        "filename": "facture-117.pdf",
        "media_type": "application/pdf",
        "content": PDF,
        "sha256": hashlib.sha256(PDF).hexdigest(),
        "company_name": "Dupont Maçonnerie",
        "company_slug": "dupont-maconnerie",
        "partner_display_name": "MyUnisoft",
    }
    values.update(changes)
    return OutboundDocument(**values)  # type: ignore[arg-type]


def build(doc: OutboundDocument | None = None, **kwargs: object) -> bytes:
    args: dict[str, object] = {
        "sender": SENDER,
        "recipient": RECIPIENT,
        "message_id_domain": "welyb.fr",
        "date": WHEN,
    }
    args.update(kwargs)
    return compose(doc or document(), **args)  # type: ignore[arg-type]


def parse(data: bytes) -> EmailMessage:
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def attachments(message: EmailMessage) -> list[EmailMessage]:
    return list(message.iter_attachments())  # type: ignore[arg-type]


def test_headers_parse_back() -> None:
    message = parse(build())
    assert str(message["From"]) == SENDER
    assert str(message["To"]) == RECIPIENT
    assert str(message["Subject"]) == "Dupont Maçonnerie — facture-117.pdf"
    assert message["Date"].datetime == WHEN
    assert message["Message-ID"] == message_id_for(42, document().sha256, "welyb.fr")
    assert message["MIME-Version"] == "1.0"
    assert message.get_content_type() == "multipart/mixed"
    assert message.defects == []


def test_body_says_which_company_document_and_partner() -> None:
    body = parse(build()).get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    assert body.get_content_charset() == "utf-8"
    for expected in ("Dupont Maçonnerie", "facture-117.pdf", "MyUnisoft", "automatiquement"):
        assert expected in text


def test_attachment_bytes_come_back_identical() -> None:
    (part,) = attachments(parse(build()))
    assert part.get_content_type() == "application/pdf"
    assert part["Content-Transfer-Encoding"] == "base64"
    assert part.get_content_disposition() == "attachment"
    assert part.get_filename() == "facture-117.pdf"
    assert part.get_payload(decode=True) == PDF


def test_non_ascii_filename_round_trips_rfc2231() -> None:
    data = build(document(filename="Facture février.pdf"))
    assert b"filename*=utf-8''Facture%20f%C3%A9vrier.pdf" in data
    (part,) = attachments(parse(data))
    assert part.get_filename() == "Facture février.pdf"
    assert str(parse(data)["Subject"]) == "Dupont Maçonnerie — Facture février.pdf"


def test_long_non_ascii_filename_round_trips() -> None:
    name = "Relevé bancaire Société Générale " + "é" * 60 + " décembre 2025.pdf"
    data = build(document(filename=name))
    (part,) = attachments(parse(data))
    assert part.get_filename() == name
    assert max(len(line) for line in data.split(b"\r\n")) <= 78


def test_filename_made_safe() -> None:
    (part,) = attachments(parse(build(document(filename="../../etc/pass\x00wd\r\n.pdf"))))
    name = part.get_filename()
    assert name is not None
    assert "/" not in name and "\r" not in name and "\n" not in name and "\x00" not in name
    (part,) = attachments(parse(build(document(filename=""))))
    assert part.get_filename() == "document-117"


def test_same_inputs_same_bytes() -> None:
    assert build() == build()
    other = build(document(delivery_id=43))
    assert other != build()
    assert parse(other).get_boundary() != parse(build()).get_boundary()


def test_crlf_only_short_lines_seven_bit() -> None:
    big = bytes(range(256)) * 4096  # 1 MiB
    data = build(document(content=big, sha256=hashlib.sha256(big).hexdigest()))
    assert data.endswith(b"\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    lines = data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 78  # and so well under RFC 5322's 998
    assert data.isascii()  # nothing for a relay to downgrade from 8bit
    (part,) = attachments(parse(data))
    assert part.get_payload(decode=True) == big


def test_dkim_signature_over_the_bytes_verifies() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    data = build(document(filename="Facture février.pdf"), sender_name="Welyb Bot")
    signature = dkim.sign(data, b"gw", b"welyb.fr", private, canonicalize=(b"simple", b"simple"))
    signed = signature + data

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"gw._domainkey.welyb.fr." else b""

    assert dkim.verify(signed, dnsfunc=dns)


def test_sender_display_name() -> None:
    message = parse(build(sender_name="Welyb Bot"))
    assert str(message["From"]) == f"Welyb Bot <{SENDER}>"
    (address,) = message["From"].addresses
    assert address.display_name == "Welyb Bot"
    assert address.addr_spec == SENDER
    message = parse(build(sender_name='Cabinet "AEC", Conseil é'))
    (address,) = message["From"].addresses
    assert address.display_name == 'Cabinet "AEC", Conseil é'
    assert address.addr_spec == SENDER


def test_local_part_case_kept_angle_brackets_accepted() -> None:
    message = parse(build(recipient="<Depot-AEC@Partner.Example>"))
    assert str(message["To"]) == "Depot-AEC@partner.example"


@pytest.mark.parametrize(
    "bad",
    [
        "a@b.fr\r\nBcc: victim@example.com",
        "a@b.fr\nBcc: victim@example.com",
        "a@b.fr\r\n",
        "\r\na@b.fr",
        "a@b.fr>\r\nRCPT TO:<victim@example.com",
        "a@b.fr\rx",
        "a\x00@b.fr",
        "a@b.fr\u2028Bcc: victim@example.com",
        '"Welyb Bot" <a@b.fr>',
        "a@b.fr, victim@example.com",
        "a b@c.fr",
        "not an address",
        "",
        "@b.fr",
        "a@",
        "a@b.fr (comment)",
    ],
)
def test_unsafe_addresses_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        build(sender=bad)
    with pytest.raises(ValueError):
        build(recipient=bad)


@pytest.mark.parametrize("bad", ["Bot\r\nBcc: victim@example.com", "Bot\n", "\x07", "  ", ""])
def test_unsafe_display_names_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        build(sender_name=bad)
    with pytest.raises(ValueError):
        header_display_name(bad)


def test_user_text_cannot_add_headers() -> None:
    data = build(
        document(
            company_name="Dupont\r\nBcc: victim@example.com",
            filename="a.pdf\r\nX-Evil: 1",
            partner_display_name="P\r\nX-Evil: 2",
        )
    )
    message = parse(data)
    assert message["Bcc"] is None and message["X-Evil"] is None
    assert "victim@example.com" in str(message["Subject"])  # shown as text, not a header
    for part in message.walk():
        assert part["X-Evil"] is None


def test_message_id_stable() -> None:
    digest = "0123456789ABCDEF" + "0" * 48
    assert message_id_for(7, digest, "Welyb.FR") == "<d7.0123456789abcdef@welyb.fr>"
    assert message_id_for(7, digest, "welyb.fr") == message_id_for(7, digest, "welyb.fr")
    for bad_domain in ("welyb.fr>\r\nX: y", "", "no_domain"):
        with pytest.raises(ValueError):
            message_id_for(7, digest, bad_domain)
    with pytest.raises(ValueError):
        message_id_for(7, "not-hex-at-all-xyz", "welyb.fr")
    with pytest.raises(ValueError):
        message_id_for(-1, digest, "welyb.fr")


def test_media_types() -> None:
    (part,) = attachments(parse(build(document(media_type="image/JPEG"))))
    assert part.get_content_type() == "image/jpeg"
    for odd in ("message/rfc822", "multipart/mixed", "nonsense", "", "a/b\r\nX: y"):
        (part,) = attachments(parse(build(document(media_type=odd))))
        assert part.get_content_type() == "application/octet-stream"
        assert part.get_payload(decode=True) == PDF


def test_dates() -> None:
    paris = timezone(timedelta(hours=1))
    message = parse(build(date=datetime(2026, 3, 2, 10, 15, 3, tzinfo=paris)))
    assert message["Date"] == "Mon, 02 Mar 2026 10:15:03 +0100"
    naive = parse(build(date=datetime(2026, 3, 2, 9, 15, 3)))
    assert naive["Date"].datetime == WHEN


def test_plain_address_helper() -> None:
    assert plain_address(" a+b@Example.COM ", "sender") == "a+b@example.com"
    with pytest.raises(ValueError, match="sender"):
        plain_address("a@b.fr\r\n", "sender")


@pytest.mark.parametrize("name", ["A" * 2000, "Ç" * 2000, "Société " * 200])
def test_long_user_text_still_folds(name: str) -> None:
    data = build(document(company_name=name, filename="B" * 150 + ".pdf"))
    assert max(len(line) for line in data.split(b"\r\n")) <= 78
    message = parse(data)
    assert str(message["Subject"]).startswith(" ".join(name.split()))

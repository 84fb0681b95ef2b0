"""The outbound message of one delivery (gateway.outbound.compose).

R15: the bytes are final (CRLF, 7-bit, deterministic) so a DKIM signature over them holds;
R16: the From is the identity the partner expects; addresses never inject headers.

`compose` writes the MIME bytes itself; the stdlib parser reads them back here, and the
implementation it replaced (EmailMessage + as_bytes) is kept below as an oracle: for the same
inputs a reader must see the same message from both.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

import dkim
import pytest

from gateway.mail.names import sanitize_filename
from gateway.outbound.compose import (
    OutboundDocument,
    _body,
    _header_text,
    _media_type,
    compose,
    header_display_name,
    message_id_for,
    plain_address,
)
from gateway.outbound.dkim import DkimKey, DkimSigner, dns_txt_value, generate_key
from tests.authmail import rsa_key

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
    key = rsa_key()
    private, record = key.private, key.record.encode()
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


def test_long_media_type_folds_after_the_colon() -> None:
    pptx = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
    data = build(document(media_type=pptx, filename="présentation annuelle.pptx"))
    assert max(len(line) for line in data.split(b"\r\n")) <= 78
    (part,) = attachments(parse(data))
    assert part.get_content_type() == pptx
    assert part.get_filename() == "présentation annuelle.pptx"


def test_non_ascii_addresses_refused() -> None:
    # KELVIN SIGN lower-cases to "k", so the syntax check alone would let it through
    for bad in ("\u212a@b.fr", "é@b.fr", "a@bé.fr"):
        with pytest.raises(ValueError):
            plain_address(bad, "sender")
        with pytest.raises(ValueError):
            build(recipient=bad)


def test_surrogates_cleaned_from_user_text_refused_in_display_name() -> None:
    message = parse(
        build(document(company_name="Dupont\udcff Fils", partner_display_name="P\ud800"))
    )
    assert str(message["Subject"]) == "Dupont Fils — facture-117.pdf"
    with pytest.raises(ValueError):
        build(sender_name="Bot \udcff")


def test_slug_fallback_is_cleaned_like_the_name() -> None:
    message = parse(build(document(company_name=" \r\n", company_slug="dupont\r\nBcc: v@x.fr")))
    assert message["Bcc"] is None
    assert str(message["Subject"]) == "dupont Bcc: v@x.fr — facture-117.pdf"
    message = parse(build(document(company_name="", company_slug="")))
    assert str(message["Subject"]) == "société — facture-117.pdf"


def test_boundary_moves_when_a_part_holds_it() -> None:
    first = parse(build()).get_boundary()
    assert first is not None and first.endswith(".0")
    data = build(document(filename=f"--{first}.pdf"))
    message = parse(data)
    assert message.get_boundary() == first[:-1] + "1"
    (part,) = attachments(message)
    assert part.get_filename() == f"--{first}.pdf"
    assert part.get_payload(decode=True) == PDF
    assert data.count(b"\r\n--" + first[:-1].encode() + b"1") == 3


# --- the stdlib parser reads back what compose writes -----------------------------------------


def test_non_ascii_subject_and_display_name_decode() -> None:
    message = parse(
        build(
            document(company_name="Société Générale 🏦 日本", filename="Reçu n°3 — 😀.pdf"),
            sender_name='Cabinet «Durand», "AEC"; Conseil & Associés',
        )
    )
    assert str(message["Subject"]) == "Société Générale 🏦 日本 — Reçu n°3 — 😀.pdf"
    (address,) = message["From"].addresses
    assert address.display_name == 'Cabinet «Durand», "AEC"; Conseil & Associés'
    assert address.addr_spec == SENDER
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    assert "Société : Société Générale 🏦 日本\r\n" in body.get_content()  # CRLF kept by QP
    (part,) = attachments(message)
    assert part.get_filename() == "Reçu n°3 — 😀.pdf"
    assert all_header_defects(message) == []


@pytest.mark.parametrize(
    "display",
    [
        'Cabinet "AEC", Conseil',  # quoted-string, escapes
        "Dupont & Fils; Experts-Comptables (Lyon)",
        "O'Brien",
        "J. R. R. Tolkien",
        "back\\slash",
        "=?utf-8?q?Admin?=",  # must show literally, not decoded as an encoded word
        "A" * 200,
        ('"' * 99 + " ") * 2,
        "Æ" * 200,
        "👍🏽" * 50,
    ],
)
def test_display_names_round_trip(display: str) -> None:
    data = build(sender_name=display)
    check_wire_form(data)
    message = parse(data)
    assert display_name_of(message) == header_display_name(display)
    assert message["From"].addresses[0].addr_spec == SENDER
    assert all_header_defects(message) == []


@pytest.mark.parametrize(
    "raw",
    [
        "facture.pdf",
        "a;b\"c'd=e (f).pdf",
        "x=?utf-8?q?evil?=.pdf",
        "name*=utf-8''x.pdf",
        "100% ok; really.pdf",
        "tab\there.pdf",
        "日本語のファイル名.pdf",
        "😀" * 80 + ".pdf",
        "é" * 300 + ".pdf",
        "A" * 300 + ".pdf",
        "a b c " * 40 + ".pdf",
        "\u202ecod.exe",
        "  ..leading dots and spaces..  ",
    ],
)
def test_hostile_and_long_filenames_round_trip(raw: str) -> None:
    data = build(document(filename=raw))
    check_wire_form(data)
    message = parse(data)
    expected = sanitize_filename(raw, "document-117")
    (part,) = attachments(message)
    assert part.get_filename() == expected
    assert part.get_param("name") == expected  # the Content-Type copy, for older clients
    assert part.get_payload(decode=True) == PDF
    assert str(message["Subject"]) == f"Dupont Maçonnerie — {expected}"
    assert all_header_defects(message) == []


# Pieces random text is made of: quoting and parameter syntax, encoded-word look-alikes,
# line breaks and controls, accents, CJK, RTL, emoji (with modifiers and ZWJ), combining marks.
PIECES = [
    *"abcXYZ019 .-_",
    *"\"'`;:,=?%*\\()<>@[]{}|/!#$&+^~",
    "=?",
    "?=",
    "=?utf-8?b?QQ==?=",
    "%41",
    "''",
    "filename*=",
    "--=_gw.",
    "\t",
    "\r\n",
    "\n",
    "\x00",
    "\x7f",
    "\u00a0",
    "\u2028",
    "\u200b",
    "é",
    "ç",
    "ß",
    "—",
    "€",
    "Œ",
    "中文",
    "日本",
    "한",
    "עברית",
    "عربى",
    "\u202e",
    "e\u0301",
    "🙂",
    "👍🏽",
    "👨\u200d👩\u200d👧",
    "𝔘",
]


def random_text(rng: random.Random) -> str:
    count = rng.choice([0, 1, 2, 3, 5, 8, 13, 30, 80, 200])
    return "".join(rng.choice(PIECES) for _ in range(count))


def check_wire_form(data: bytes) -> None:
    """The guarantees of the module docstring, on the bytes."""
    assert data.isascii()
    assert data.endswith(b"\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 78


def display_name_of(message: EmailMessage) -> str:
    """The From display name as RFC 2047 6.2 reads it.

    Python's address parser keeps the whitespace between two adjacent encoded words of a
    display name (CPython gh-128110; its Subject parser drops it, as the RFC says), so a name
    long enough to need several encoded words is decoded with the legacy decode_header, which
    follows the RFC.  The old EmailMessage implementation wrote such names the same way."""
    (address,) = message["From"].addresses
    raw = "".join(str(dict(message.raw_items())["From"]).splitlines())
    phrase = raw.strip().rpartition("<")[0].strip()
    if "?= =?" not in phrase:
        return address.display_name
    return str(make_header(decode_header(phrase)))


def all_header_defects(message: EmailMessage) -> list[object]:
    """Defects the parser found anywhere: in the structure or in any header of any part."""
    found: list[object] = []
    for part in message.walk():
        found += part.defects
        for _, value in part.items():
            found += getattr(value, "defects", ())
    return found


def random_documents(seed: int, count: int) -> Iterator[tuple[OutboundDocument, str | None]]:
    rng = random.Random(seed)
    for i in range(count):
        content = rng.randbytes(rng.choice([0, 1, 2, 3, 57, 58, 76, 300]))
        yield (
            document(
                delivery_id=rng.randrange(10**12),
                document_id=i,
                filename=random_text(rng),
                company_name=random_text(rng),
                company_slug=rng.choice(["dupont-maconnerie", ""]),
                partner_display_name=random_text(rng),
                content=content,
                sha256=hashlib.sha256(content).hexdigest(),
            ),
            rng.choice([None, random_text(rng)]),
        )


def test_random_names_round_trip() -> None:
    for doc, display in random_documents(20260302, 300):
        try:
            expected_display = header_display_name(display) if display is not None else None
        except ValueError:
            with pytest.raises(ValueError):
                build(doc, sender_name=display)
            continue
        data = build(doc, sender_name=display)
        check_wire_form(data)
        assert build(doc, sender_name=display) == data
        message = parse(data)
        context = (doc.filename, doc.company_name, display)
        assert all_header_defects(message) == [], context
        filename = sanitize_filename(doc.filename, f"document-{doc.document_id}")
        company = _header_text(doc.company_name, _header_text(doc.company_slug, "société"))
        assert str(message["Subject"]) == f"{company} — {filename}", context
        assert message["From"].addresses[0].addr_spec == SENDER
        assert display_name_of(message) == (expected_display or ""), context
        (part,) = attachments(message)
        assert part.get_filename() == filename, context
        assert part.get_param("name") == filename, context
        assert part.get_payload(decode=True) == doc.content, context
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        assert body.get_content() == _body(doc, filename, company).replace("\n", "\r\n")


# --- the oracle: the EmailMessage implementation compose replaced -----------------------------


def email_package_compose(
    document: OutboundDocument,
    sender: str,
    recipient: str,
    message_id_domain: str,
    date: datetime,
    sender_name: str | None = None,
) -> bytes:
    """What compose returned before it wrote the bytes itself (same validation helpers)."""
    smtp = email.policy.SMTP
    from_address = plain_address(sender, "sender")
    to_address = plain_address(recipient, "recipient")
    message_id = message_id_for(document.delivery_id, document.sha256, message_id_domain)
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    filename = sanitize_filename(document.filename, f"document-{document.document_id}")
    company = _header_text(document.company_name, _header_text(document.company_slug, "société"))
    message = EmailMessage(policy=smtp)
    local, _, domain = from_address.rpartition("@")
    display = header_display_name(sender_name) if sender_name is not None else ""
    message["From"] = Address(display_name=display, username=local, domain=domain)
    message["To"] = to_address
    message["Subject"] = f"{company} — {filename}"
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    message["MIME-Version"] = "1.0"
    message.set_content(_body(document, filename, company), charset="utf-8", cte="quoted-printable")
    maintype, subtype = _media_type(document.media_type)
    message.add_attachment(
        bytes(document.content),
        maintype=maintype,
        subtype=subtype,
        cte="base64",
        disposition="attachment",
        filename=filename,
        params={"name": filename},
    )
    for part in message.iter_parts():
        del part["MIME-Version"]
    message.set_boundary(f"=_gw.{message_id[1:].partition('@')[0]}.0")
    return message.as_bytes(policy=smtp)


def seen_by_a_reader(data: bytes) -> dict[str, object]:
    """Everything a mail client shows or uses, as the stdlib parser reads it."""
    message = parse(data)
    (part,) = attachments(message)
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return {
        "from": (display_name_of(message), message["From"].addresses[0].addr_spec),
        "to": str(message["To"]),
        "subject": str(message["Subject"]),
        "date": message["Date"].datetime,
        "message-id": message["Message-ID"],
        "mime-version": message["MIME-Version"],
        "structure": [p.get_content_type() for p in message.walk()],
        "text": (body.get_content(), body.get_content_charset(), body["Content-Transfer-Encoding"]),
        "file": (
            part.get_content_type(),
            part.get_content_disposition(),
            part.get_filename(),
            part.get_param("name"),
            part["Content-Transfer-Encoding"],
            part.get_payload(decode=True),
        ),
    }


def test_same_message_as_the_email_package() -> None:
    kwargs = {"sender": SENDER, "recipient": RECIPIENT, "message_id_domain": "welyb.fr"}
    data = build(sender_name="Welyb Bot")
    old = email_package_compose(document(), date=WHEN, sender_name="Welyb Bot", **kwargs)
    assert seen_by_a_reader(data) == seen_by_a_reader(old)
    # Byte for byte, only the quoted-printable soft line breaks of the text differ.
    boundary = b"\r\n--=_gw.d42." + document().sha256[:16].encode() + b".0"
    new_head, new_text, new_file, new_end = data.split(boundary)
    old_head, old_text, old_file, old_end = old.split(boundary)
    assert (new_head, new_file, new_end) == (old_head, old_file, old_end)
    assert new_text.split(b"\r\n\r\n")[0] == old_text.split(b"\r\n\r\n")[0]
    # Everyday names: exactly what a reader saw before.
    for filename, company, display in [
        ("Facture février 2026.pdf", "Boulangerie Éric & Fils", "Cabinet Durand"),
        ("relevé n°12 (copie).pdf", "L'Atelier du Bois", 'Cabinet "AEC", Conseil é'),
        ("スキャン 2026-03.pdf", "Société Générale", None),
        ("x" * 140 + ".pdf", "Ç" * 120, "Çé" * 30),
    ]:
        doc = document(filename=filename, company_name=company)
        old = email_package_compose(doc, date=WHEN, sender_name=display, **kwargs)
        assert seen_by_a_reader(build(doc, sender_name=display)) == seen_by_a_reader(old)
    for doc, display in random_documents(117, 120):
        try:
            old = email_package_compose(doc, date=WHEN, sender_name=display, **kwargs)
        except ValueError:
            continue
        new, before = seen_by_a_reader(build(doc, sender_name=display)), seen_by_a_reader(old)
        if new == before:
            continue
        # The email package got some headers wrong: it left encoded-word look-alikes
        # ("=?utf-8?b?QQ==?=") unencoded, so readers decoded them, and it sometimes folded a
        # Subject at a space between two encoded words, so readers dropped that space.  Only
        # there may the two differ, and ours must be the faithful one.
        filename = sanitize_filename(doc.filename, f"document-{doc.document_id}")
        company = _header_text(doc.company_name, _header_text(doc.company_slug, "société"))
        intended = {
            "subject": f"{company} — {filename}",
            "from": (header_display_name(display) if display else "", SENDER),
        }
        for key in (k for k in new if new[k] != before[k]):
            assert new[key] == intended.get(key) != before[key], (key, doc.filename, display)


# --- DKIM over the composed bytes (R15) -------------------------------------------------------


@pytest.fixture(scope="module")
def signing_key() -> DkimKey:
    return generate_key("welyb.fr", "gw2026")


def test_our_dkim_signature_over_composed_messages_verifies(signing_key: DkimKey) -> None:
    signer = DkimSigner([signing_key])
    record = dns_txt_value(signing_key).encode()

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"gw2026._domainkey.welyb.fr." else b""

    cases = [(document(filename="Facture février.pdf"), "Cabinet «Durand», Conseil")]
    cases += list(random_documents(6376, 12))
    for doc, display in cases:
        try:
            data = build(doc, sender_name=display)
        except ValueError:
            continue
        signed = signer.sign(data, "welyb.fr")
        assert signed.endswith(data)
        assert dkim.verify(signed, dnsfunc=dns), (doc.filename, display)
        tampered = signed.replace(b"\r\nTo: ", b"\r\nTo: x", 1)
        assert not dkim.verify(tampered, dnsfunc=dns)

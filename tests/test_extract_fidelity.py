"""MIME forms from old and current clients that used to lose documents (issue 12, item 4).

Each message is written here the way its client sends it; every test failed on the code
before the fix.
"""

from __future__ import annotations

import binascii
import random

from sqlalchemy import select

from gateway.inbound.extraction import ExtractionLimits, extract_documents
from gateway.mail.names import sanitize_filename
from gateway.storage.models import Document, DuplicateDocument, InboundMessage
from tests.support import file_all, message, pdf

RCPT = "compta+dupont-maconnerie@welyb.fr"


def uuencode(name: str, content: bytes, mode: str = "644") -> str:
    """What Outlook Express and Eudora put in a plain-text body."""
    lines = [f"begin {mode} {name}"]
    for start in range(0, len(content), 45):
        lines.append(binascii.b2a_uu(content[start : start + 45]).decode("ascii").rstrip("\n"))
    lines += ["`", "end"]
    return "\r\n".join(lines)


def plain_message(body: str, headers: str = "") -> bytes:
    head = (
        "From: Client <client@example.org>\r\nTo: compta@welyb.fr\r\n"
        "Subject: facture\r\nMessage-ID: <uu@example.org>\r\n" + headers + "\r\n"
    )
    return (head + body).encode("latin-1")


def test_uuencoded_file_in_a_plain_text_body_is_a_document() -> None:
    invoice = pdf("uu")
    raw = plain_message(f"Bonjour,\r\n\r\n{uuencode('facture mars.pdf', invoice)}\r\n\r\nMerci\r\n")
    result = extract_documents(raw)
    assert [(d.filename, d.media_type, d.origin) for d in result.documents] == [
        ("facture mars.pdf", "application/pdf", "uuencode")
    ]
    assert result.documents[0].content == invoice


def test_two_uuencoded_files_in_a_multipart_text_part_are_two_documents() -> None:
    first, second = pdf("one"), b"date;amount\r\n2026-01-01;12.50\r\n" * 3
    body = f"Voici:\r\n{uuencode('a.pdf', first)}\r\n\r\n{uuencode('releve.csv', second)}\r\n"
    raw = (
        "From: c@example.org\r\nTo: compta@welyb.fr\r\nSubject: deux\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"{body}--b1--\r\n"
    ).encode("ascii")
    result = extract_documents(raw)
    assert [(d.filename, d.content) for d in result.documents] == [
        ("a.pdf", first),
        ("releve.csv", second),
    ]


def test_a_damaged_uuencoded_block_keeps_what_decodes_and_says_why() -> None:
    from gateway.inbound.extraction.decoding import uudecode_blocks

    good = uuencode("x.pdf", pdf("damaged")).split("\r\n")
    good.insert(3, "M\x00\x01not uuencode at all \xff")  # a line mangled on the way
    good = good[:-1]  # and the "end" line lost
    blocks = uudecode_blocks("\r\n".join(good).encode("latin-1"), max_bytes=10_000_000)
    [(name, content, problems)] = blocks
    assert name == "x.pdf" and content.startswith(b"%PDF-")
    assert any("no 'end' line" in p for p in problems)
    assert any("malformed" in p for p in problems)


def test_uudecode_never_raises_and_stays_bounded() -> None:
    from gateway.inbound.extraction.decoding import uudecode_blocks

    hostile = (
        b"begin 644 big.bin\n" + b"M" + b"\xff" * 60 + b"\n" + (b"M" + b"!" * 60 + b"\n") * 100
    )
    [(name, content, problems)] = uudecode_blocks(hostile, max_bytes=450)
    assert name == "big.bin" and len(content) <= 450 and problems


def test_unquoted_name_with_spaces_is_kept_whole() -> None:
    for header in (
        "Content-Type: application/pdf; name=This is a test.pdf\r\n"
        "Content-Disposition: attachment\r\n",
        "Content-Type: application/pdf\r\n"
        "Content-Disposition: attachment; filename=This is a test.pdf\r\n",
    ):
        raw = (
            "From: c@example.org\r\nTo: compta@welyb.fr\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            "Content-Type: text/plain\r\n\r\nhello\r\n--b\r\n"
            f"{header}Content-Transfer-Encoding: base64\r\n\r\n"
            f"{binascii.b2a_base64(pdf('sp')).decode()}--b--\r\n"
        ).encode("ascii")
        assert [d.filename for d in extract_documents(raw).documents] == ["This is a test.pdf"]


def test_names_are_bounded_in_utf8_bytes_keeping_the_extension() -> None:
    name = "é" * 150 + ".pdf"  # 300 bytes of stem: over the 255 of file systems
    raw = message(attachments=[(name, "application/pdf", pdf("long"))])
    [document] = extract_documents(raw).documents
    encoded = document.filename.encode("utf-8")
    assert len(encoded) <= 255 and document.filename.endswith(".pdf")
    assert document.filename == "é" * 125 + ".pdf"  # cut on a character boundary
    assert len(sanitize_filename("€" * 100 + ".xlsx", "x").encode()) <= 255


def _jpeg(size: int) -> bytes:
    """JPEG bytes of `size`: a JFIF header, then what a phone photo looks like (noise)."""
    header = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return header + random.Random(size).randbytes(size - len(header) - 2) + b"\xff\xd9"


def html_with_cid_image(image: bytes) -> bytes:
    b64 = binascii.b2a_base64(image).decode()
    return (
        "From: c@example.org\r\nTo: compta@welyb.fr\r\nSubject: ticket\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/related; boundary="r"\r\n\r\n--r\r\n'
        'Content-Type: text/html; charset=utf-8\r\n\r\n<p>Mon ticket</p><img src="cid:img1@x">\r\n'
        "--r\r\nContent-Type: image/jpeg\r\nContent-ID: <img1@x>\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{b64}--r--\r\n"
    ).encode("ascii")


def test_a_large_photo_pasted_in_the_html_body_is_a_document() -> None:
    photo = _jpeg(300 * 1024)
    result = extract_documents(html_with_cid_image(photo))
    [document] = result.documents
    assert document.media_type == "image/jpeg" and document.content == photo
    assert document.filename.endswith(".jpg")
    assert document.origin.startswith("cid:img1@x") and "bytes" in document.origin


def test_a_small_logo_referenced_from_the_html_is_not_a_document() -> None:
    logo = _jpeg(5 * 1024)
    result = extract_documents(html_with_cid_image(logo))
    assert [d.media_type for d in result.documents] == ["message/rfc822"]  # body kept as .eml


def test_the_cid_threshold_is_a_setting() -> None:
    photo = _jpeg(300 * 1024)
    limits = ExtractionLimits(cid_image_document_bytes=len(photo) + 1)
    result = extract_documents(html_with_cid_image(photo), limits)
    assert [d.media_type for d in result.documents] == ["message/rfc822"]


BINHEX = (
    "(This file must be converted with BinHex 4.0)\r\n\r\n"
    ":#'0[GA4bC@`ZC'&d!&4&@&4%\"!!!!!(3!!!!%U`!!!!!!%!-!!!!!!!!!!$e\r\n!!!:\r\n"
)


def test_binhex_is_kept_with_its_type_and_extension() -> None:
    raw = (
        "From: c@example.org\r\nTo: compta@welyb.fr\r\nSubject: mac\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        "Content-Type: text/plain\r\n\r\nhello\r\n--b\r\n"
        'Content-Type: application/octet-stream; name="facture.pdf"\r\n'
        'Content-Disposition: attachment; filename="facture.pdf"\r\n\r\n'
        f"{BINHEX}--b--\r\n"
    ).encode("ascii")
    [document] = extract_documents(raw).documents
    assert (document.filename, document.media_type) == (
        "facture.pdf.hqx",
        "application/mac-binhex40",
    )


def test_the_same_bytes_twice_in_one_message_are_recorded_as_a_duplicate(server, gw) -> None:
    invoice = pdf("twice")
    raw = message(
        attachments=[
            ("facture.pdf", "application/pdf", invoice),
            ("facture (copie).pdf", "application/pdf", invoice),
        ]
    )
    with server.client() as smtp:
        smtp.sendmail("client@example.org", [RCPT], raw)
    file_all(gw)
    with gw.db.read() as s:
        [row] = s.execute(select(InboundMessage)).scalars().all()
        documents = s.execute(select(Document)).scalars().all()
        [duplicate] = s.execute(select(DuplicateDocument)).scalars().all()
        assert [d.filename for d in documents] == ["facture.pdf"]
        assert duplicate.filename == "facture (copie).pdf"
        assert duplicate.document_id == documents[0].id
        assert duplicate.inbound_message_id == row.id
    assert "already filed 1: facture (copie).pdf" in (row.reason or "")
    assert "same as facture.pdf" in (row.reason or "")

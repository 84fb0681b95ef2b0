"""Build realistic inbound messages as bytes, the way real mail clients write them.

Why generated rather than stored: every payload (PDF, PNG, ZIP, TNEF) is built here from
first principles, so tests can compare extracted bytes with what was put in, and the zip
bomb does not have to live in the repository.  The MIME layouts copy what Apple Mail,
Outlook/Exchange, Thunderbird, Gmail and office scanners actually send.

Run ``python -m tests.corpus.make_corpus DIR`` to write every message as ``.eml`` for a look
in a mail client.
"""

import base64
import io
import random
import struct
import sys
import zipfile
import zlib
from pathlib import Path

# --------------------------------------------------------------------------- payloads


def pdf_bytes(text: str) -> bytes:
    """A minimal but valid one-page PDF (correct xref offsets) showing ``text``."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    stream = f"BT /F1 18 Tf 72 720 Td ({escaped}) Tj ET".encode("latin-1", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def png_bytes(width: int, height: int, seed: int | None = None) -> bytes:
    """A real RGB PNG: a flat colour (tiny, like a logo) or noise (big, like a photo)."""
    rng = random.Random(seed)
    rows = bytearray()
    for _ in range(height):
        rows += b"\x00"
        rows += rng.randbytes(width * 3) if seed is not None else b"\x1f\x4e\x79" * width

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + chunk(b"IEND", b"")
    )


LOGO_PNG = png_bytes(48, 16)
PHOTO_PNG = png_bytes(80, 60, seed=7)  # about 14 KB: above the 10 KB logo threshold
STAMP_PNG = png_bytes(20, 20)
GRAND_LIVRE_CSV = (
    "Date;Compte;Libellé;Débit;Crédit\r\n"
    "2024-01-02;606100;EDF janvier;120,50;\r\n"
    "2024-01-05;512000;Virement client;;1500,00\r\n"
).encode("cp1252")


def b64(data: bytes) -> str:
    """Base64 in 76-character lines, as every MIME encoder writes it."""
    return base64.encodebytes(data).decode("ascii").rstrip("\n")


def mime(text: str, encoding: str = "utf-8") -> bytes:
    """A message written with ``\\n`` line ends, sent with CRLF as on the wire."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode(encoding)


# --------------------------------------------------------------------------- TNEF writer

_TNEF_SIGNATURE = 0x223E9F78
_LVL_MESSAGE = 0x01
_LVL_ATTACHMENT = 0x02
# attribute ids (low word) and types (high word), MS-OXTNEF 2.1.3
_ATP_STRING, _ATP_DATE, _ATP_BYTE, _ATP_WORD, _ATP_DWORD = 0x0001, 0x0003, 0x0006, 0x0007, 0x0008
_ATT_TNEF_VERSION, _ATT_OEM_CODEPAGE, _ATT_MESSAGE_CLASS = 0x9006, 0x9007, 0x8008
_ATT_SUBJECT, _ATT_MAPI_PROPS = 0x8004, 0x9003
_ATT_ATTACH_REND_DATA, _ATT_ATTACH_TITLE, _ATT_ATTACH_MODIFY_DATE = 0x9002, 0x8010, 0x8013
_ATT_ATTACH_DATA, _ATT_ATTACHMENT = 0x800F, 0x9005
# MAPI property types and tags
_PT_LONG, _PT_STRING8, _PT_UNICODE, _PT_BINARY = 0x0003, 0x001E, 0x001F, 0x0102
_PR_RTF_COMPRESSED, _PR_ATTACH_NUM = 0x1009, 0x0E21
_PR_ATTACH_EXTENSION, _PR_ATTACH_FILENAME, _PR_ATTACH_METHOD = 0x3703, 0x3704, 0x3705
_PR_ATTACH_LONG_FILENAME, _PR_ATTACH_MIME_TAG = 0x3707, 0x370E


def _tnef_attribute(level: int, attr_id: int, attr_type: int, data: bytes) -> bytes:
    """level, attribute (id | type << 16), length, data, checksum (sum of data bytes)."""
    return (
        struct.pack("<BHHI", level, attr_id, attr_type, len(data))
        + data
        + struct.pack("<H", sum(data) & 0xFFFF)
    )


def _padded(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def _mapi_value(prop_type: int, value: str | int | bytes) -> bytes:
    if prop_type == _PT_LONG:
        assert isinstance(value, int)
        return struct.pack("<i", value)
    if prop_type == _PT_UNICODE:
        assert isinstance(value, str)
        raw = value.encode("utf-16-le") + b"\x00\x00"
    elif prop_type == _PT_STRING8:
        assert isinstance(value, str)
        raw = value.encode("cp1252") + b"\x00"
    else:
        assert isinstance(value, bytes)
        raw = value
    return struct.pack("<II", 1, len(raw)) + _padded(raw)


def _mapi_block(props: list[tuple[int, int, str | int | bytes]]) -> bytes:
    out = struct.pack("<I", len(props))
    for prop_type, prop_id, value in props:
        out += struct.pack("<HH", prop_type, prop_id) + _mapi_value(prop_type, value)
    return out


def _uncompressed_rtf(rtf: bytes) -> bytes:
    """PR_RTF_COMPRESSED holding RTF stored uncompressed ("MELA" magic), as Outlook may."""
    return struct.pack("<IIII", len(rtf) + 12, len(rtf), 0x414C454D, 0) + rtf


def tnef_stream(
    attachments: list[tuple[str, str, str, bytes]], body_rtf: bytes | None = None
) -> bytes:
    """A TNEF (winmail.dat) stream as Outlook writes it.

    ``attachments``: (long file name, 8.3 title, MIME tag, data).  The long name travels in
    PR_ATTACH_LONG_FILENAME (Unicode) inside attAttachment, the short one in attAttachTitle.
    """
    out = struct.pack("<IH", _TNEF_SIGNATURE, 0x5A1C)
    out += _tnef_attribute(
        _LVL_MESSAGE, _ATT_TNEF_VERSION, _ATP_DWORD, struct.pack("<I", 0x00010000)
    )
    out += _tnef_attribute(_LVL_MESSAGE, _ATT_OEM_CODEPAGE, _ATP_BYTE, struct.pack("<II", 1252, 0))
    out += _tnef_attribute(
        _LVL_MESSAGE, _ATT_MESSAGE_CLASS, _ATP_WORD, b"IPM.Microsoft Mail.Note\x00"
    )
    message_props: list[tuple[int, int, str | int | bytes]] = [(_PT_LONG, 0x3FDE, 1252)]
    if body_rtf is not None:
        message_props.append((_PT_BINARY, _PR_RTF_COMPRESSED, _uncompressed_rtf(body_rtf)))
    out += _tnef_attribute(_LVL_MESSAGE, _ATT_MAPI_PROPS, _ATP_BYTE, _mapi_block(message_props))
    for number, (long_name, title, mime_tag, data) in enumerate(attachments):
        rendering = struct.pack("<HiHHI", 1, -1, 0xFFFF, 0xFFFF, 0)
        out += _tnef_attribute(_LVL_ATTACHMENT, _ATT_ATTACH_REND_DATA, _ATP_BYTE, rendering)
        out += _tnef_attribute(
            _LVL_ATTACHMENT, _ATT_ATTACH_TITLE, _ATP_STRING, title.encode("cp1252") + b"\x00"
        )
        out += _tnef_attribute(
            _LVL_ATTACHMENT,
            _ATT_ATTACH_MODIFY_DATE,
            _ATP_DATE,
            struct.pack("<7H", 2024, 3, 12, 9, 41, 5, 2),
        )
        out += _tnef_attribute(_LVL_ATTACHMENT, _ATT_ATTACH_DATA, _ATP_BYTE, data)
        extension = "." + long_name.rpartition(".")[2] if "." in long_name else ""
        out += _tnef_attribute(
            _LVL_ATTACHMENT,
            _ATT_ATTACHMENT,
            _ATP_BYTE,
            _mapi_block(
                [
                    (_PT_LONG, _PR_ATTACH_NUM, number),
                    (_PT_LONG, _PR_ATTACH_METHOD, 1),
                    (_PT_STRING8, _PR_ATTACH_EXTENSION, extension),
                    (_PT_STRING8, _PR_ATTACH_FILENAME, title),
                    (_PT_UNICODE, _PR_ATTACH_LONG_FILENAME, long_name),
                    (_PT_STRING8, _PR_ATTACH_MIME_TAG, mime_tag),
                ]
            ),
        )
    return out


TNEF_PDF_NAME = "Relevé de compte janvier 2024 - Crédit Agricole Île-de-France.pdf"
TNEF_PDF = pdf_bytes("Releve janvier 2024")
TNEF_CSV_NAME = "Grand livre 2023 (export Sage).csv"


def _outlook_tnef_message(
    tnef: bytes, subject: str = "=?iso-8859-1?Q?Relev=E9_bancaire?="
) -> bytes:
    return mime(f"""\
Received: from EXCH01.entreprise.local (10.0.0.12) by EXCH01.entreprise.local
 (10.0.0.12) with Microsoft SMTP Server id 15.1.2507.6; Tue, 12 Mar 2024 09:41:07 +0100
From: Jean Martin <jean.martin@entreprise.fr>
To: "compta@cabinet-durand.fr" <compta@cabinet-durand.fr>
Subject: {subject}
Thread-Topic: =?iso-8859-1?Q?Relev=E9_bancaire?=
Thread-Index: AdpzVnCj3Y1mXG5kQ0ePZx3sFXh1Fw==
Date: Tue, 12 Mar 2024 08:41:06 +0000
Message-ID: <4F2B8C9D1E6A4B7C9D3E2F1A0B9C8D7E@EXCH01.entreprise.local>
Accept-Language: fr-FR, en-US
Content-Language: fr-FR
X-MS-Has-Attach: yes
X-MS-TNEF-Correlator: <4F2B8C9D1E6A4B7C9D3E2F1A0B9C8D7E@EXCH01.entreprise.local>
Content-Type: multipart/mixed;
\tboundary="_000_4F2B8C9D1E6A4B7C9D3E2F1A0B9C8D7EEXCH01entrepriselocal_"
MIME-Version: 1.0

--_000_4F2B8C9D1E6A4B7C9D3E2F1A0B9C8D7EEXCH01entrepriselocal_
Content-Type: text/plain; charset="iso-8859-1"
Content-Transfer-Encoding: quoted-printable

Bonjour,

Veuillez trouver ci-joint le relev=E9 de janvier.

Cordialement,
Jean Martin

--_000_4F2B8C9D1E6A4B7C9D3E2F1A0B9C8D7EEXCH01entrepriselocal_
Content-Type: application/ms-tnef; name="winmail.dat"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="winmail.dat"

{b64(tnef)}

--_000_4F2B8C9D1E6A4B7C9D3E2F1A0B9C8D7EEXCH01entrepriselocal_--
""")


def outlook_winmail_dat() -> bytes:
    """Outlook in "Rich Text" mode: the attachments travel inside winmail.dat."""
    return _outlook_tnef_message(
        tnef_stream(
            [
                (TNEF_PDF_NAME, "RELEVD~1.PDF", "application/pdf", TNEF_PDF),
                (TNEF_CSV_NAME, "GRANDL~1.CSV", "text/csv", GRAND_LIVRE_CSV),
            ],
            body_rtf=b"{\\rtf1\\ansi Bonjour}",
        )
    )


def outlook_winmail_dat_body_only() -> bytes:
    """Outlook RTF mail without attachment: winmail.dat carries only the RTF body."""
    return _outlook_tnef_message(
        tnef_stream([], body_rtf=b"{\\rtf1\\ansi Bonjour}"), subject="Question TVA"
    )


def outlook_winmail_dat_corrupt() -> bytes:
    """A winmail.dat mangled by a relay: wrong signature."""
    broken = b"\x00\x00\x00\x00" + tnef_stream([(TNEF_PDF_NAME, "X.PDF", "", TNEF_PDF)])[4:]
    return _outlook_tnef_message(broken)


def outlook_winmail_dat_forged_counts() -> bytes:
    """A hostile winmail.dat: an attachment declaring 4 billion MAPI properties."""
    stream = tnef_stream([(TNEF_PDF_NAME, "X.PDF", "application/pdf", TNEF_PDF)])
    forged = _mapi_block([(_PT_LONG, _PR_ATTACH_METHOD, 1)])
    forged = struct.pack("<I", 0xFFFFFFFF) + forged[4:]
    stream += _tnef_attribute(_LVL_ATTACHMENT, _ATT_ATTACHMENT, _ATP_BYTE, forged)
    return _outlook_tnef_message(stream)


def outlook_winmail_dat_forged_multivalue() -> bytes:
    """A hostile winmail.dat: a multi-valued PT_SHORT property claiming 4 billion values
    (tnefparse would slice past the end forever without raising)."""
    stream = tnef_stream([(TNEF_PDF_NAME, "X.PDF", "application/pdf", TNEF_PDF)])
    forged = struct.pack("<IHHI", 1, 0x1002, 0x6601, 0xFFFFFFFF) + b"\x00" * 8
    stream += _tnef_attribute(_LVL_ATTACHMENT, _ATT_ATTACHMENT, _ATP_BYTE, forged)
    return _outlook_tnef_message(stream)


# --------------------------------------------------------------------------- messages

APPLE_PDF = pdf_bytes("Facture 2024-03 Boulangerie Martin")


def apple_mail_inline_pdf() -> bytes:
    """Apple Mail: the PDF is ``Content-Disposition: inline`` between two HTML parts."""
    return mime(f"""\
From: Marie Dupont <marie.dupont@icloud.com>
Content-Type: multipart/alternative;
\tboundary="Apple-Mail=_8F3A6A52-4C44-4E29-9B0B-1F7C2D5E9A10"
Mime-Version: 1.0 (Mac OS X Mail 16.0 \\(3774.600.62\\))
Subject: Facture mars
Message-Id: <5B1C2E3A-7D4F-4B8E-9C1A-2F3E4D5C6B7A@icloud.com>
Date: Tue, 12 Mar 2024 10:02:11 +0100
To: compta@cabinet-durand.fr
X-Mailer: Apple Mail (2.3774.600.62)


--Apple-Mail=_8F3A6A52-4C44-4E29-9B0B-1F7C2D5E9A10
Content-Transfer-Encoding: 7bit
Content-Type: text/plain;
\tcharset=us-ascii

Bonjour,
ci-joint la facture de mars.
Marie


--Apple-Mail=_8F3A6A52-4C44-4E29-9B0B-1F7C2D5E9A10
Content-Type: multipart/mixed;
\tboundary="Apple-Mail=_3C1D2B7E-6A5F-4E3D-8C2B-1A0F9E8D7C6B"


--Apple-Mail=_3C1D2B7E-6A5F-4E3D-8C2B-1A0F9E8D7C6B
Content-Transfer-Encoding: 7bit
Content-Type: text/html;
\tcharset=us-ascii

<html><head><meta http-equiv="content-type" content="text/html; charset=us-ascii"></head>\
<body style="overflow-wrap: break-word;">Bonjour,<div>ci-joint la facture de mars.</div>\
<div></div></body></html>
--Apple-Mail=_3C1D2B7E-6A5F-4E3D-8C2B-1A0F9E8D7C6B
Content-Disposition: inline;
\tfilename=Facture-2024-03.pdf
Content-Type: application/pdf;
\tx-unix-mode=0644;
\tname="Facture-2024-03.pdf"
Content-Transfer-Encoding: base64

{b64(APPLE_PDF)}
--Apple-Mail=_3C1D2B7E-6A5F-4E3D-8C2B-1A0F9E8D7C6B
Content-Transfer-Encoding: 7bit
Content-Type: text/html;
\tcharset=us-ascii

<html><head><meta http-equiv="content-type" content="text/html; charset=us-ascii"></head>\
<body style="overflow-wrap: break-word;"><div></div><div>Marie</div></body></html>
--Apple-Mail=_3C1D2B7E-6A5F-4E3D-8C2B-1A0F9E8D7C6B--

--Apple-Mail=_8F3A6A52-4C44-4E29-9B0B-1F7C2D5E9A10--
""")


FORWARDED_PDF = pdf_bytes("EDF facture 10045879")


def _edf_message(with_pdf: bool) -> str:
    attachment = (
        f"""\
--=_edf_b2
Content-Type: application/pdf; name="Facture_EDF_10045879.pdf"
Content-Disposition: attachment; filename="Facture_EDF_10045879.pdf"
Content-Transfer-Encoding: base64

{b64(FORWARDED_PDF)}
"""
        if with_pdf
        else ""
    )
    return f"""\
Return-Path: <noreply@edf.fr>
From: EDF <noreply@edf.fr>
To: jean.martin@entreprise.fr
Subject: =?UTF-8?Q?Votre_facture_EDF_du_mois_de_f=C3=A9vrier?=
Date: Mon, 04 Mar 2024 06:12:45 +0100
Message-ID: <20240304061245.A1B2C3@mail.edf.fr>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="=_edf_b2"

--=_edf_b2
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 8bit

Bonjour, votre facture est disponible.
{attachment}--=_edf_b2--
"""


def forwarded_message(with_pdf: bool = True) -> bytes:
    """Thunderbird "Forward as attachment": a message/rfc822 part holding the EDF mail."""
    return mime(f"""\
Message-ID: <a8c1f0e2-3b4d-4c5e-8f9a-0b1c2d3e4f5a@entreprise.fr>
Date: Tue, 12 Mar 2024 11:20:00 +0100
MIME-Version: 1.0
User-Agent: Mozilla Thunderbird
Content-Language: fr
To: compta@cabinet-durand.fr
From: Jean Martin <jean.martin@entreprise.fr>
Subject: =?UTF-8?Q?Fwd=3A_Votre_facture_EDF_du_mois_de_f=C3=A9vrier?=
Content-Type: multipart/mixed; boundary="------------9sDbL2H4y1mXzq0aT7pR3vWc"

This is a multi-part message in MIME format.
--------------9sDbL2H4y1mXzq0aT7pR3vWc
Content-Type: text/plain; charset=UTF-8; format=flowed
Content-Transfer-Encoding: 8bit

Voici la facture transférée.

--------------9sDbL2H4y1mXzq0aT7pR3vWc
Content-Type: message/rfc822; name="Votre facture EDF.eml"
Content-Disposition: attachment; filename="Votre facture EDF.eml"

{_edf_message(with_pdf)}
--------------9sDbL2H4y1mXzq0aT7pR3vWc--
""")


def forwarded_base64_encoded() -> bytes:
    """Some webmails base64-encode the message/rfc822 part (RFC 2046 forbids it)."""
    inner = mime(_edf_message(with_pdf=True))
    return mime(f"""\
From: Jean Martin <jean.martin@entreprise.fr>
To: compta@cabinet-durand.fr
Subject: TR: facture
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="webmail-b64"

--webmail-b64
Content-Type: text/plain; charset=utf-8

voir piece jointe
--webmail-b64
Content-Type: message/rfc822; name="facture.eml"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="facture.eml"

{b64(inner)}
--webmail-b64--
""")


def forwarded_chain(levels: int) -> bytes:
    """A forward of a forward ... ``levels`` message/rfc822 deep, the PDF at the bottom."""
    inner = _edf_message(with_pdf=True)
    for level in range(levels - 1, 0, -1):
        inner = f"""\
From: relay{level}@entreprise.fr
Subject: Fwd level {level}
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="lvl{level}"

--lvl{level}
Content-Type: text/plain

forwarding
--lvl{level}
Content-Type: message/rfc822

{inner}
--lvl{level}--
"""
    return mime(f"""\
From: Jean Martin <jean.martin@entreprise.fr>
Subject: Fwd chain
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="lvl0"

--lvl0
Content-Type: text/plain

see below
--lvl0
Content-Type: message/rfc822

{inner}
--lvl0--
""")


INVOICE_NAMES = ["Facture-001.pdf", "Facture-002.pdf", "Facture-003.pdf"]


def invoice_pdf(name: str) -> bytes:
    return pdf_bytes(f"Invoice {name}")


def _zip(entries: list[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries:
            if name.endswith("/"):
                archive.writestr(zipfile.ZipInfo(name), b"")
            else:
                archive.writestr(name, data)
    return buffer.getvalue()


def invoices_zip() -> bytes:
    """A zip made by macOS "Compress": a folder, AppleDouble litter and .DS_Store."""
    entries: list[tuple[str, bytes]] = [("Factures/", b"")]
    for name in INVOICE_NAMES:
        entries.append((f"Factures/{name}", invoice_pdf(name)))
        entries.append((f"__MACOSX/Factures/._{name}", b"\x00\x05\x16\x07" + b"\x00" * 60))
    entries.append(("Factures/.DS_Store", b"\x00\x00\x00\x01Bud1" + b"\x00" * 100))
    entries.append(("Thumbs.db", b"\xd0\xcf\x11\xe0" + b"\x00" * 100))
    return _zip(entries)


def gmail_with_attachment(
    filename: str, content_type: str, data: bytes, subject: str = "Factures du trimestre"
) -> bytes:
    return mime(f"""\
MIME-Version: 1.0
Date: Tue, 12 Mar 2024 14:05:31 +0100
Message-ID: <CAKx9d8eF0nRzq1T2u3v4w5x6y7z8A9B0C1D2E3F4G5H6I7@mail.gmail.com>
Subject: {subject}
From: Paul Leroy <paul.leroy@gmail.com>
To: compta@cabinet-durand.fr
Content-Type: multipart/mixed; boundary="000000000000a1b2c3d4e5f60718"

--000000000000a1b2c3d4e5f60718
Content-Type: multipart/alternative; boundary="000000000000a1b2c3d4e5f60716"

--000000000000a1b2c3d4e5f60716
Content-Type: text/plain; charset="UTF-8"

Bonjour, voici les pièces.

--000000000000a1b2c3d4e5f60716
Content-Type: text/html; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

<div dir=3D"ltr">Bonjour, voici les pi=C3=A8ces.</div>

--000000000000a1b2c3d4e5f60716--
--000000000000a1b2c3d4e5f60718
Content-Type: {content_type}; name="{filename}"
Content-Disposition: attachment; filename="{filename}"
Content-Transfer-Encoding: base64
X-Attachment-Id: f_ltp0q1a20
Content-ID: <f_ltp0q1a20>

{b64(data)}
--000000000000a1b2c3d4e5f60718--
""")


def zip_of_invoices() -> bytes:
    """Gmail, one attachment: Factures.zip holding three PDFs plus macOS litter."""
    return gmail_with_attachment("Factures.zip", "application/zip", invoices_zip())


def nested_zip(levels: int = 3) -> bytes:
    """A zip in a zip in a zip (``levels`` archives), the PDF in the innermost one."""
    data = _zip([("Facture-profonde.pdf", invoice_pdf("deep"))])
    for level in range(levels - 1, 0, -1):
        data = _zip([(f"niveau-{level + 1}.zip", data)])
    return gmail_with_attachment("niveau-1.zip", "application/x-zip-compressed", data)


ZIP_BOMB_BYTES = 50 * 1024 * 1024


def zip_bomb() -> bytes:
    """50 MB of zeros deflated to ~50 KB (ratio ~1030:1), built in memory at test time."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("factures.pdf", bytes(ZIP_BOMB_BYTES))
    return gmail_with_attachment("factures.zip", "application/zip", buffer.getvalue())


def zip_with_lying_sizes() -> bytes:
    """A member declaring 1 000 bytes in both headers but inflating to 2 MB."""
    archive = bytearray(_zip([("releve.pdf", bytes(2 * 1024 * 1024))]))
    local = archive.index(b"PK\x03\x04")
    central = archive.index(b"PK\x01\x02")
    struct.pack_into("<I", archive, local + 22, 1000)
    struct.pack_into("<I", archive, central + 24, 1000)
    return gmail_with_attachment("releve.zip", "application/zip", bytes(archive))


def zip_password_protected() -> bytes:
    """An archive whose member has the "encrypted" flag (as ZipCrypto archives have)."""
    archive = bytearray(_zip([("salaires.pdf", invoice_pdf("secret"))], zipfile.ZIP_STORED))
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        position = archive.index(signature)
        flags = struct.unpack_from("<H", archive, position + flag_offset)[0]
        struct.pack_into("<H", archive, position + flag_offset, flags | 0x1)
    return gmail_with_attachment("salaires.zip", "application/zip", bytes(archive))


def zip_corrupt() -> bytes:
    """A .zip cut in half by a broken upload: no central directory."""
    archive = invoices_zip()
    return gmail_with_attachment("Factures.zip", "application/zip", archive[: len(archive) // 2])


def zip_macos_utf8_names() -> bytes:
    """macOS Archive Utility writes UTF-8 names without setting the UTF-8 flag."""
    archive = bytearray(_zip([("Facture café.pdf", invoice_pdf("cafe"))]))
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        position = archive.index(signature)
        flags = struct.unpack_from("<H", archive, position + flag_offset)[0]
        struct.pack_into("<H", archive, position + flag_offset, flags & ~0x800)
    return gmail_with_attachment("Archive.zip", "application/zip", bytes(archive))


def docx_attachment() -> bytes:
    """A .docx is a ZIP too, and must be filed as a document, not expanded."""
    docx = _zip(
        [
            ("[Content_Types].xml", b"<?xml version='1.0'?><Types/>"),
            ("_rels/.rels", b"<?xml version='1.0'?><Relationships/>"),
            ("word/document.xml", b"<?xml version='1.0'?><w:document/>"),
        ]
    )
    return gmail_with_attachment(
        "Lettre de mission.docx", "application/octet-stream", docx, subject="Lettre"
    )


ISO_PDF = pdf_bytes("Facture fevrier")


def iso_8859_1_filename() -> bytes:
    """Outlook puts RFC 2047 encoded words inside the quoted file name parameters."""
    name = "=?iso-8859-1?Q?Facture=5Ff=E9vrier.pdf?="
    return mime(f"""\
From: =?iso-8859-1?Q?Ren=E9e_Lef=E8vre?= <renee.lefevre@orange.fr>
To: compta@cabinet-durand.fr
Subject: =?iso-8859-1?Q?Facture_de_f=E9vrier?=
Date: Wed, 13 Mar 2024 08:00:00 +0100
Message-ID: <000001da7512$3c4b5a60$b4e20f20$@orange.fr>
MIME-Version: 1.0
Content-Type: multipart/mixed;
\tboundary="----=_NextPart_000_0001_01DA751A.9E0FC260"
X-Mailer: Microsoft Outlook 16.0
Content-Language: fr

This is a multipart message in MIME format.

------=_NextPart_000_0001_01DA751A.9E0FC260
Content-Type: text/plain;
\tcharset="iso-8859-1"
Content-Transfer-Encoding: quoted-printable

Ci-joint la facture de f=E9vrier.

------=_NextPart_000_0001_01DA751A.9E0FC260
Content-Type: application/pdf;
\tname="{name}"
Content-Transfer-Encoding: base64
Content-Disposition: attachment;
\tfilename="{name}"

{b64(ISO_PDF)}

------=_NextPart_000_0001_01DA751A.9E0FC260--
""")


RFC2231_NAME = "Relevé de compte société générale - janvier 2024.pdf"
RFC2231_PDF = pdf_bytes("Releve SG janvier")


def rfc2231_filename() -> bytes:
    """Thunderbird: long UTF-8 names as RFC 2231 continuations (filename*0*=, *1*=)."""
    first = "Relev%C3%A9%20de%20compte%20soci%C3%A9t%C3%A9%20g%C3%A9n%C3%A9"
    second = "rale%20-%20janvier%202024.pdf"
    return mime(f"""\
From: Jean Martin <jean.martin@entreprise.fr>
To: compta@cabinet-durand.fr
Subject: =?UTF-8?Q?Relev=C3=A9_SG?=
Message-ID: <b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e@entreprise.fr>
MIME-Version: 1.0
User-Agent: Mozilla Thunderbird
Content-Type: multipart/mixed; boundary="------------2Qy6Lr0NnDmAc8TfVb4XkW1j"

--------------2Qy6Lr0NnDmAc8TfVb4XkW1j
Content-Type: text/plain; charset=UTF-8; format=flowed
Content-Transfer-Encoding: 7bit

Le releve.

--------------2Qy6Lr0NnDmAc8TfVb4XkW1j
Content-Type: application/pdf;
 name*0*=UTF-8''{first};
 name*1*={second}
Content-Disposition: attachment;
 filename*0*=UTF-8''{first};
 filename*1*={second}
Content-Transfer-Encoding: base64

{b64(RFC2231_PDF)}
--------------2Qy6Lr0NnDmAc8TfVb4XkW1j--
""")


SCAN_PDF = pdf_bytes("Scan 0001")
PJL_PDF = b'\x1b%-12345X@PJL JOB NAME="scan"\r\n@PJL ENTER LANGUAGE=PDF\r\n' + pdf_bytes("PJL")


def octet_stream_pdf() -> bytes:
    """An office scanner: PDFs as application/octet-stream, one without extension, one
    with a PJL print-job header before ``%PDF-``."""
    return mime(f"""\
From: scanner@entreprise.fr
To: compta@cabinet-durand.fr
Subject: Message from "RNP002673A8C1D2"
Date: Wed, 13 Mar 2024 09:15:00 +0100
MIME-Version: 1.0
X-Mailer: RICOH MP C3004
Content-Type: multipart/mixed; boundary="RicohScan_9F8E7D6C"

--RicohScan_9F8E7D6C
Content-Type: text/plain; charset=US-ASCII
Content-Transfer-Encoding: 7bit

This E-mail was sent from "RNP002673A8C1D2" (MP C3004).

--RicohScan_9F8E7D6C
Content-Type: application/octet-stream; name="SCAN0001"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="SCAN0001"

{b64(SCAN_PDF)}
--RicohScan_9F8E7D6C
Content-Type: application/octet-stream; name="job.prn"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="job.prn"

{b64(PJL_PDF)}
--RicohScan_9F8E7D6C--
""")


DEVIS_PDF = pdf_bytes("Devis 2024-017")
UNNAMED_PDF = pdf_bytes("no name at all")


def no_content_disposition_pdf() -> bytes:
    """A web shop's mailer: no Content-Disposition at all; the second PDF has no name."""
    return mime(f"""\
From: ventes@boutique.example
To: jean.martin@entreprise.fr
Subject: Votre devis
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="PHPMailer_b1_abc123"

--PHPMailer_b1_abc123
Content-Type: text/plain; charset=utf-8

Votre devis est joint.

--PHPMailer_b1_abc123
Content-Type: application/pdf; name="devis.pdf"
Content-Transfer-Encoding: base64

{b64(DEVIS_PDF)}
--PHPMailer_b1_abc123
Content-Type: application/pdf
Content-Transfer-Encoding: base64

{b64(UNNAMED_PDF)}
--PHPMailer_b1_abc123--
""")


SIGNATURE_PDF = pdf_bytes("Facture 88")


def signature_logo() -> bytes:
    """Outlook HTML mail: a signature logo referenced as cid:, an unreferenced small
    unnamed logo (Gmail-style), a big pasted photo, a small stamp *attached*, and a PDF."""
    return mime(f"""\
From: Sophie Bernard <s.bernard@bernard-sarl.fr>
To: compta@cabinet-durand.fr
Subject: Facture 88
Date: Wed, 13 Mar 2024 10:00:00 +0100
Message-ID: <DB9PR02MB7193A1B2C3D4E5F6@DB9PR02MB7193.eurprd02.prod.outlook.com>
MIME-Version: 1.0
Content-Type: multipart/mixed;
\tboundary="_004_DB9PR02MB7193_"

--_004_DB9PR02MB7193_
Content-Type: multipart/related;
\tboundary="_003_DB9PR02MB7193_";
\ttype="multipart/alternative"

--_003_DB9PR02MB7193_
Content-Type: multipart/alternative;
\tboundary="_000_DB9PR02MB7193_"

--_000_DB9PR02MB7193_
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

Bonjour, ci-joint la facture 88.
Sophie Bernard
[cid:image001.png@01DA7521.5C2B1F40]

--_000_DB9PR02MB7193_
Content-Type: text/html; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

<html><body><p>Bonjour, ci-joint la facture 88.</p><p>Sophie Bernard<br>
<img width=3D"96" height=3D"32" id=3D"Image_x0020_1" src=3D"cid:image001.pn=
g@01DA7521.5C2B1F40" alt=3D"logo"></p></body></html>

--_000_DB9PR02MB7193_--

--_003_DB9PR02MB7193_
Content-Type: image/png; name="image001.png"
Content-Description: image001.png
Content-Disposition: inline; filename="image001.png"; size={len(LOGO_PNG)}
Content-ID: <image001.png@01DA7521.5C2B1F40>
Content-Transfer-Encoding: base64

{b64(LOGO_PNG)}

--_003_DB9PR02MB7193_
Content-Type: image/png
Content-ID: <unreferenced-logo@bernard-sarl.fr>
Content-Transfer-Encoding: base64

{b64(LOGO_PNG)}

--_003_DB9PR02MB7193_--

--_004_DB9PR02MB7193_
Content-Type: image/png
Content-Disposition: inline
Content-Transfer-Encoding: base64

{b64(PHOTO_PNG)}

--_004_DB9PR02MB7193_
Content-Type: image/png; name="tampon.png"
Content-Disposition: attachment; filename="tampon.png"
Content-Transfer-Encoding: base64

{b64(STAMP_PNG)}

--_004_DB9PR02MB7193_
Content-Type: application/pdf; name="Facture 88.pdf"
Content-Description: Facture 88.pdf
Content-Disposition: attachment; filename="Facture 88.pdf"; size={len(SIGNATURE_PDF)}
Content-Transfer-Encoding: base64

{b64(SIGNATURE_PDF)}

--_004_DB9PR02MB7193_--
""")


def no_attachment() -> bytes:
    """A plain question: text and HTML alternatives, nothing attached."""
    return mime("""\
From: Paul Leroy <paul.leroy@gmail.com>
To: compta@cabinet-durand.fr
Subject: =?UTF-8?Q?Question_sur_la_TVA_=C3=A0_20=25?=
Message-ID: <CAKx9d8e-question@mail.gmail.com>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="0000000000001234abcd"

--0000000000001234abcd
Content-Type: text/plain; charset="UTF-8"

Bonjour, une question sur la TVA.

--0000000000001234abcd
Content-Type: text/html; charset="UTF-8"

<div dir="ltr">Bonjour, une question sur la TVA.</div>

--0000000000001234abcd--
""")


HOSTILE_NAMES: dict[str, str] = {
    "traversal": "../../etc/passwd",
    "windows_path": "C:\\\\Windows\\\\System32\\\\evil.exe",
    "control": "fac%07ture%1B%5B31m%0A.pdf",
    "long": "A" * 496 + ".pdf",
    "reserved": "CON.pdf",
    "empty": "",
    "dots": "....",
    "bidi": "facture%E2%80%AEfdp.exe",
    "spaces": "%20%20Relev%C3%A9%20%20%20%09mars%20%20.pdf%20.%20",
    "illegal": "a<b>c:d|e?f*g.pdf",
}


def hostile_pdf(key: str) -> bytes:
    return pdf_bytes(f"hostile {key}")


def hostile_filenames() -> bytes:
    """One PDF per hostile name; percent-encoded ones use RFC 2231 (control chars, UTF-8)."""
    parts = []
    for key, name in HOSTILE_NAMES.items():
        if "%" in name:
            disposition = f"attachment; filename*=UTF-8''{name}"
        else:
            disposition = f'attachment; filename="{name}"'
        parts.append(f"""\
--hostile
Content-Type: application/octet-stream
Content-Disposition: {disposition}
Content-Transfer-Encoding: base64

{b64(hostile_pdf(key))}
""")
    return mime(f"""\
From: attacker@example.net
To: compta@cabinet-durand.fr
Subject: ../../../tmp/x
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="hostile"

{"".join(parts)}--hostile--
""")


MALFORMED_PDF = pdf_bytes("Facture malformed")


def malformed_mime() -> dict[str, bytes]:
    """Broken messages seen in the wild (truncated, mis-encoded, hostile)."""
    good_b64 = b64(MALFORMED_PDF)
    variants: dict[str, bytes] = {}
    variants["missing_closing_boundary"] = mime(f"""\
From: a@example.org
Subject: truncated
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: text/plain

body
--b1
Content-Type: application/pdf; name="facture.pdf"
Content-Transfer-Encoding: base64

{good_b64}
""")
    truncated = good_b64.replace("\n", "")[:-7]  # length % 4 == 1 after the cut
    truncated = truncated[: len(truncated) - (len(truncated) % 4) + 1]
    variants["truncated_base64"] = mime(f"""\
From: a@example.org
Subject: truncated base64
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: application/pdf; name="coupe.pdf"
Content-Disposition: attachment; filename="coupe.pdf"
Content-Transfer-Encoding: base64

{truncated}
--b1--
""")
    variants["missing_boundary_parameter"] = mime(f"""\
From: a@example.org
Subject: no boundary
MIME-Version: 1.0
Content-Type: multipart/mixed

--zzzSEP
Content-Type: text/plain

body
--zzzSEP
Content-Type: application/pdf; name="sans-boundary.pdf"
Content-Transfer-Encoding: base64

{good_b64}
--zzzSEP--
""")
    variants["unknown_charset_filename"] = mime(f"""\
From: a@example.org
Subject: charset
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: application/pdf
Content-Disposition: attachment; filename*=x-unknown-charset''F%E9vrier%20%80.pdf
Content-Transfer-Encoding: base64

{good_b64}
--b1--
""")
    variants["eight_bit_headers"] = mime(
        f"""\
From: Ren\u00e9e <renee@example.org>
Subject: Facture f\u00e9vrier
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: application/pdf; name="Facture f\u00e9vrier.pdf"
Content-Disposition: attachment; filename="Facture f\u00e9vrier.pdf"
Content-Transfer-Encoding: base64

{good_b64}
--b1--
""",
        encoding="latin-1",
    )
    variants["bad_content_type"] = mime(f"""\
From: a@example.org
Subject: bad type
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: application/pdf/x; name="type.pdf"
Content-Transfer-Encoding: base64

{good_b64}
--b1--
""")
    variants["no_headers"] = b"\r\n" + MALFORMED_PDF
    variants["garbage"] = bytes(random.Random(1).randbytes(4096))
    variants["empty"] = b""
    variants["header_garbage"] = (
        b'From: <<<@@@>>> "\r\nSubject: =?utf-8?B?broken\r\nMessage-ID: <<>>\r\n'
        b'Content-Type: multipart/mixed; boundary=\r\nContent-Disposition: ;;;="\r\n'
        b"Date: yesterday-ish\r\n\r\n\xff\xfe\x00garbage"
    )
    deep = b"hi"
    for level in range(1200):
        deep = (
            b'Content-Type: multipart/mixed; boundary="d%d"\r\n\r\n--d%d\r\n' % (level, level)
            + deep
            + b"\r\n--d%d--\r\n" % level
        )
    variants["deep_nesting"] = b"Subject: deep\r\n" + deep
    medium = (
        b'Content-Type: application/pdf; name="profond.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + good_b64.encode() + b"\r\n"
    )
    for level in range(120):
        medium = (
            b'Content-Type: multipart/mixed; boundary="m%d"\r\n\r\n--m%d\r\n' % (level, level)
            + medium
            + b"\r\n--m%d--\r\n" % level
        )
    variants["medium_nesting"] = b"Subject: medium\r\n" + medium
    return variants


SMIME_PDF = pdf_bytes("Facture signee")


def smime_signed() -> bytes:
    """Outlook S/MIME signed mail: the smime.p7s signature is not a document."""
    return mime(f"""\
From: Notaire <office@notaire.example>
To: compta@cabinet-durand.fr
Subject: Acte sign\u00e9
MIME-Version: 1.0
Content-Type: multipart/signed; protocol="application/x-pkcs7-signature";
\tmicalg=SHA1; boundary="----=_NextPart_000_0010_01DA7522.ABCDEF00"

This is a multipart message in MIME format.

------=_NextPart_000_0010_01DA7522.ABCDEF00
Content-Type: multipart/mixed;
\tboundary="----=_NextPart_001_0011_01DA7522.ABCDEF00"

------=_NextPart_001_0011_01DA7522.ABCDEF00
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: 7bit

Acte en piece jointe.

------=_NextPart_001_0011_01DA7522.ABCDEF00
Content-Type: application/pdf; name="acte.pdf"
Content-Disposition: attachment; filename="acte.pdf"
Content-Transfer-Encoding: base64

{b64(SMIME_PDF)}

------=_NextPart_001_0011_01DA7522.ABCDEF00--

------=_NextPart_000_0010_01DA7522.ABCDEF00
Content-Type: application/x-pkcs7-signature; name="smime.p7s"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="smime.p7s"

{b64(bytes(range(256)) * 4)}

------=_NextPart_000_0010_01DA7522.ABCDEF00--
""")


def empty_attachment() -> bytes:
    """A broken upload: the attachment is announced but has no content."""
    return mime("""\
From: a@example.org
Subject: vide
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: text/plain

ci-joint
--b1
Content-Type: application/pdf; name="vide.pdf"
Content-Disposition: attachment; filename="vide.pdf"
Content-Transfer-Encoding: base64

--b1--
""")


def many_attachments(count: int) -> bytes:
    """``count`` small PDFs in one message (to exercise max_documents)."""
    parts = "".join(
        f"""\
--many
Content-Type: application/pdf; name="piece-{index:03d}.pdf"
Content-Disposition: attachment; filename="piece-{index:03d}.pdf"
Content-Transfer-Encoding: base64

{b64(pdf_bytes(f"piece {index}"))}
"""
        for index in range(count)
    )
    return mime(f"""\
From: a@example.org
Subject: many
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="many"

{parts}--many--
""")


ALL_MESSAGES = {
    "apple_mail_inline_pdf": apple_mail_inline_pdf,
    "outlook_winmail_dat": outlook_winmail_dat,
    "forwarded_message": forwarded_message,
    "zip_of_invoices": zip_of_invoices,
    "iso_8859_1_filename": iso_8859_1_filename,
    "rfc2231_filename": rfc2231_filename,
    "octet_stream_pdf": octet_stream_pdf,
    "no_content_disposition_pdf": no_content_disposition_pdf,
    "signature_logo": signature_logo,
    "hostile_filenames": hostile_filenames,
    "no_attachment": no_attachment,
    "nested_zip": nested_zip,
}


def main(argv: list[str]) -> int:
    """Write the corpus as .eml files into the directory given on the command line."""
    if len(argv) != 2:
        print("usage: python -m tests.corpus.make_corpus DIR", file=sys.stderr)
        return 2
    target = Path(argv[1])
    target.mkdir(parents=True, exist_ok=True)
    for name, build in ALL_MESSAGES.items():
        (target / f"{name}.eml").write_bytes(build())
    for name, raw in malformed_mime().items():
        (target / f"malformed_{name}.eml").write_bytes(raw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

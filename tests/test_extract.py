"""Extraction of documents from received mail (gateway.inbound.extraction).

R4 = "Every attachment becomes one document; signature logos and inline images referenced
from the HTML are not documents; an inline PDF is; a message with no attachment keeps its
body as a document (.eml)".  Other tests cite the extraction spec rule they prove.
"""

import email.parser
import email.policy
import io
import random
import re
import zipfile

import pytest

from gateway.inbound.extraction import (
    ExtractedDocument,
    Extraction,
    ExtractionLimits,
    extract_documents,
)
from gateway.mail.names import sanitize_filename
from gateway.mail.sniff import sniff_media_type
from tests.corpus import make_corpus as corpus


def names(result: Extraction) -> list[str]:
    return [doc.filename for doc in result.documents]


def only(result: Extraction) -> ExtractedDocument:
    assert len(result.documents) == 1, names(result)
    return result.documents[0]


def joined_defects(result: Extraction) -> str:
    return "\n".join(result.defects)


# --------------------------------------------------------------------------- R4


def test_apple_mail_inline_pdf_is_a_document() -> None:
    """R4: an inline PDF is a document; the text/HTML bodies around it are not."""
    result = extract_documents(corpus.apple_mail_inline_pdf())
    doc = only(result)
    assert doc.filename == "Facture-2024-03.pdf"
    assert doc.media_type == "application/pdf"
    assert doc.content == corpus.APPLE_PDF
    assert doc.origin == "inline"
    assert result.refused == []


def test_signature_logos_and_cid_images_are_not_documents() -> None:
    """R4: the cid:-referenced logo and a small unnamed inline logo are not documents; a big
    pasted photo, a small image *attached* with a name, and the PDF are."""
    result = extract_documents(corpus.signature_logo())
    assert names(result) == ["document-1.png", "tampon.png", "Facture 88.pdf"]
    photo, stamp, pdf = result.documents
    assert (photo.content, photo.media_type, photo.origin) == (
        corpus.PHOTO_PNG,
        "image/png",
        "inline",
    )
    assert len(corpus.STAMP_PNG) < 10 * 1024
    assert (stamp.content, stamp.origin) == (corpus.STAMP_PNG, "attachment")
    assert (pdf.content, pdf.media_type) == (corpus.SIGNATURE_PDF, "application/pdf")
    assert all(doc.content != corpus.LOGO_PNG for doc in result.documents)


def test_message_without_attachment_is_kept_whole_as_eml() -> None:
    """R4: a message with no attachment keeps its body as a document (.eml)."""
    raw = corpus.no_attachment()
    result = extract_documents(raw)
    doc = only(result)
    assert doc.filename == "Question sur la TVA à 20%.eml"
    assert doc.media_type == "message/rfc822"
    assert doc.origin == "body"
    assert doc.content == raw


def test_pdf_without_content_disposition_is_a_document() -> None:
    """R4: every attachment becomes one document, even without Content-Disposition or name;
    an unnamed one gets ``document-<n>.<ext>``."""
    result = extract_documents(corpus.no_content_disposition_pdf())
    assert names(result) == ["devis.pdf", "document-1.pdf"]
    assert [d.content for d in result.documents] == [corpus.DEVIS_PDF, corpus.UNNAMED_PDF]
    assert {d.media_type for d in result.documents} == {"application/pdf"}


def test_octet_stream_pdf_is_sniffed_and_named() -> None:
    """R4 with sniffing: octet-stream PDFs are recognised from their bytes (even after a PJL
    header); a name without extension gets the sniffed one."""
    result = extract_documents(corpus.octet_stream_pdf())
    assert names(result) == ["SCAN0001.pdf", "job.prn"]
    assert [d.media_type for d in result.documents] == ["application/pdf"] * 2
    assert [d.content for d in result.documents] == [corpus.SCAN_PDF, corpus.PJL_PDF]


def test_smime_signature_is_not_a_document() -> None:
    """R4: the S/MIME signature (smime.p7s) of a signed mail is not something sent to file."""
    result = extract_documents(corpus.smime_signed())
    assert names(result) == ["acte.pdf"]
    assert only(result).content == corpus.SMIME_PDF
    assert result.subject == "Acte signé"


def test_empty_attachment_is_refused_not_filed() -> None:
    """R4 edge: an attachment without content cannot be a document; the firm is told."""
    result = extract_documents(corpus.empty_attachment())
    assert result.documents == []
    assert [(r.filename, r.reason) for r in result.refused] == [
        ("vide.pdf", "empty attachment (0 bytes): nothing to file")
    ]


# --------------------------------------------------------------------------- forwarded mail


def test_forwarded_message_attachments_are_extracted() -> None:
    """R4 through message/rfc822: the forwarded mail's PDF is the document."""
    result = extract_documents(corpus.forwarded_message())
    doc = only(result)
    assert doc.filename == "Facture_EDF_10045879.pdf"
    assert doc.content == corpus.FORWARDED_PDF
    assert doc.origin == "rfc822:Votre facture EDF du mois de février"
    assert result.subject == "Fwd: Votre facture EDF du mois de février"


def test_forwarded_message_without_attachment_is_kept_as_eml() -> None:
    """R4: a forwarded mail with no attachment is kept as one .eml named from its subject."""
    result = extract_documents(corpus.forwarded_message(with_pdf=False))
    doc = only(result)
    assert doc.filename == "Votre facture EDF du mois de février.eml"
    assert doc.media_type == "message/rfc822"
    inner = email.parser.BytesParser(policy=email.policy.default).parsebytes(doc.content)
    assert inner["subject"] == "Votre facture EDF du mois de février"
    assert inner["message-id"] == "<20240304061245.A1B2C3@mail.edf.fr>"
    assert b"votre facture est disponible" in doc.content


def test_forward_chain_within_depth_is_opened() -> None:
    """Nesting: forwards are opened recursively up to max_nesting_depth (3)."""
    result = extract_documents(corpus.forwarded_chain(3))
    assert only(result).content == corpus.FORWARDED_PDF


def test_forward_chain_beyond_depth_is_kept_unopened() -> None:
    """Nesting: a forward found at max_nesting_depth is filed as .eml, not opened."""
    result = extract_documents(corpus.forwarded_chain(5))
    doc = only(result)
    assert doc.filename == "Fwd level 4.eml"
    assert doc.origin == "rfc822:Fwd level 4"
    assert b"Facture_EDF_10045879.pdf" in doc.content
    assert "nested more than 3 levels deep" in joined_defects(result)


def test_base64_encoded_forwarded_message_is_decoded() -> None:
    """Forwarded mail: an (illegally) base64-encoded message/rfc822 part is still opened."""
    result = extract_documents(corpus.forwarded_base64_encoded())
    doc = only(result)
    assert (doc.filename, doc.content) == ("Facture_EDF_10045879.pdf", corpus.FORWARDED_PDF)
    assert doc.origin == "rfc822:Votre facture EDF du mois de février"


# --------------------------------------------------------------------------- TNEF


def test_outlook_winmail_dat_attachments_with_long_names() -> None:
    """R4 through TNEF: winmail.dat is opened; its attachments keep their long file names."""
    result = extract_documents(corpus.outlook_winmail_dat())
    assert names(result) == [corpus.TNEF_PDF_NAME, corpus.TNEF_CSV_NAME]
    pdf, csv = result.documents
    assert (pdf.content, pdf.media_type, pdf.origin) == (corpus.TNEF_PDF, "application/pdf", "tnef")
    assert (csv.content, csv.media_type) == (corpus.GRAND_LIVRE_CSV, "text/csv")
    assert result.subject == "Relevé bancaire"


def test_winmail_dat_with_only_a_body_is_skipped_like_a_body() -> None:
    """R4: a TNEF holding only the RTF body is a body; the message is kept as .eml."""
    raw = corpus.outlook_winmail_dat_body_only()
    result = extract_documents(raw)
    doc = only(result)
    assert (doc.filename, doc.origin, doc.content) == ("Question TVA.eml", "body", raw)
    assert "holds only the message body" in joined_defects(result)


def test_undecodable_winmail_dat_is_kept_as_is() -> None:
    """TNEF rule: a winmail.dat that can't be parsed is kept itself, with a defect."""
    result = extract_documents(corpus.outlook_winmail_dat_corrupt())
    doc = only(result)
    assert (doc.filename, doc.media_type) == ("winmail.dat", "application/ms-tnef")
    assert doc.content.startswith(b"\x00\x00\x00\x00")
    assert "could not be decoded (no TNEF signature)" in joined_defects(result)


def test_winmail_dat_with_forged_counts_is_not_handed_to_tnefparse() -> None:
    """Hostile input: a forged MAPI count (tnefparse would loop for hours) is caught."""
    result = extract_documents(corpus.outlook_winmail_dat_forged_counts())
    assert names(result) == ["winmail.dat"]
    assert "forged MAPI property count 4294967295" in joined_defects(result)
    result = extract_documents(corpus.outlook_winmail_dat_forged_multivalue())
    assert names(result) == ["winmail.dat"]
    assert "forged MAPI value count 4294967295" in joined_defects(result)


# --------------------------------------------------------------------------- ZIP


def test_zip_of_invoices_is_expanded_without_junk() -> None:
    """ZIP rule: members become documents (origin zip:<archive>); folders, __MACOSX,
    .DS_Store and Thumbs.db are skipped."""
    result = extract_documents(corpus.zip_of_invoices())
    assert names(result) == corpus.INVOICE_NAMES
    for doc, name in zip(result.documents, corpus.INVOICE_NAMES, strict=True):
        assert doc.content == corpus.invoice_pdf(name)
        assert (doc.media_type, doc.origin) == ("application/pdf", "zip:Factures.zip")
    assert result.refused == []


def test_nested_zip_is_expanded_up_to_the_depth_limit() -> None:
    """ZIP rule: zip in zip in zip (3 levels = max_nesting_depth) is fully expanded."""
    result = extract_documents(corpus.nested_zip(3))
    doc = only(result)
    assert (doc.filename, doc.origin) == ("Facture-profonde.pdf", "zip:niveau-3.zip")
    assert doc.content == corpus.invoice_pdf("deep")


def test_zip_nested_beyond_the_depth_limit_is_refused() -> None:
    """ZIP rule: the archive beyond max_nesting_depth is refused, not stored."""
    result = extract_documents(corpus.nested_zip(4))
    assert result.documents == []
    assert [(r.filename, r.reason) for r in result.refused] == [
        ("niveau-4.zip", "zip archive refused: archives nested more than 3 levels deep")
    ]


def test_zip_bomb_is_refused_from_the_central_directory() -> None:
    """ZIP rule: a ratio above max_zip_ratio refuses the whole archive (not stored either)."""
    result = extract_documents(corpus.zip_bomb())
    assert result.documents == []
    assert len(result.refused) == 1
    refused = result.refused[0]
    assert refused.filename == "factures.zip"
    match = re.fullmatch(
        r"zip archive refused: compression ratio (\d+):1 exceeds 100:1 \(possible zip bomb\) "
        r"in 'factures\.pdf'",
        refused.reason,
    )
    assert match, refused.reason
    assert 900 < int(match.group(1)) < 1100


def test_zip_with_forged_sizes_is_refused_while_inflating() -> None:
    """ZIP rule: lying headers (declared 1 000 bytes, inflates to 2 MB) stop the inflation."""
    result = extract_documents(corpus.zip_with_lying_sizes())
    assert result.documents == []
    assert [(r.filename, r.reason) for r in result.refused] == [
        (
            "releve.zip",
            "zip archive refused: 'releve.pdf' expands beyond the size declared in the archive "
            "(forged headers, possible zip bomb)",
        )
    ]


def test_zip_member_count_limit() -> None:
    """ZIP rule: more members than max_zip_members refuses the archive."""
    result = extract_documents(corpus.zip_of_invoices(), ExtractionLimits(max_zip_members=2))
    assert result.documents == []
    assert result.refused[0].reason == (
        "zip archive refused: it contains 3 files, more than the limit of 2 files per archive"
    )


def test_zip_total_size_limit() -> None:
    """ZIP rule: declared uncompressed total above max_zip_total_bytes refuses the archive."""
    result = extract_documents(corpus.zip_of_invoices(), ExtractionLimits(max_zip_total_bytes=1000))
    assert result.documents == []
    assert re.fullmatch(
        r"zip archive refused: it would expand to 1\.\d KB, more than the limit of "
        r"1000 bytes per archive",
        result.refused[0].reason,
    )


def test_password_protected_zip_is_kept_as_is() -> None:
    """ZIP rule: encrypted members -> the archive itself is the document, defect noted."""
    result = extract_documents(corpus.zip_password_protected())
    doc = only(result)
    assert (doc.filename, doc.media_type) == ("salaires.zip", "application/zip")
    assert "password-protected" in joined_defects(result)


def test_corrupt_zip_is_kept_as_is() -> None:
    """ZIP rule: a corrupt zip is filed as the .zip itself, defect noted."""
    result = extract_documents(corpus.zip_corrupt())
    doc = only(result)
    assert (doc.filename, doc.media_type) == ("Factures.zip", "application/zip")
    assert "could not be opened" in joined_defects(result)


def test_zip_member_names_from_macos_are_repaired() -> None:
    """File names: UTF-8 names stored without the UTF-8 flag are decoded correctly."""
    result = extract_documents(corpus.zip_macos_utf8_names())
    assert names(result) == ["Facture café.pdf"]


def test_office_files_are_not_expanded_as_zip() -> None:
    """ZIP rule: a .docx is a ZIP container but a document; it is filed, not expanded."""
    result = extract_documents(corpus.docx_attachment())
    doc = only(result)
    assert doc.filename == "Lettre de mission.docx"
    assert doc.media_type == (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    )


JOURNAL = b"date;montant\n2024-01-01;10\n" * 30_000  # 810 KB: below the 1 MiB ratio floor


def _zip_message(method: int, patch_size_of: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        archive.writestr("a.pdf", corpus.pdf_bytes("a"))
        archive.writestr("journal.csv", JOURNAL)
    data = bytearray(buffer.getvalue())
    if patch_size_of is not None:  # forge the declared size in both headers
        name = patch_size_of.encode()
        local = data.index(b"PK\x03\x04")
        while data[local + 30 : local + 30 + len(name)] != name:
            local = data.index(b"PK\x03\x04", local + 4)
        central = data.index(b"PK\x01\x02")
        while data[central + 46 : central + 46 + len(name)] != name:
            central = data.index(b"PK\x01\x02", central + 4)
        data[local + 22 : local + 26] = (1000).to_bytes(4, "little")
        data[central + 24 : central + 28] = (1000).to_bytes(4, "little")
    return corpus.gmail_with_attachment("export.zip", "application/zip", bytes(data))


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_zip_compression_methods_are_expanded(method: int) -> None:
    """ZIP rule: stored, bzip2 and LZMA members are expanded like deflated ones."""
    result = extract_documents(_zip_message(method))
    assert names(result) == ["a.pdf", "journal.csv"]
    assert result.documents[0].content == corpus.pdf_bytes("a")
    assert result.documents[1].content == JOURNAL
    assert result.documents[1].media_type == "text/csv"


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_zip_forged_size_is_refused_for_every_method(method: int) -> None:
    """ZIP rule: a member inflating beyond its declared size refuses the archive."""
    result = extract_documents(_zip_message(method, patch_size_of="journal.csv"))
    assert result.documents == []
    assert [r.reason for r in result.refused] == [
        "zip archive refused: 'journal.csv' expands beyond the size declared in the archive "
        "(forged headers, possible zip bomb)"
    ]


# --------------------------------------------------------------------------- file names


def test_rfc2047_latin1_filename() -> None:
    """File names: RFC 2047 ``=?iso-8859-1?Q?...?=`` inside the parameter is decoded."""
    result = extract_documents(corpus.iso_8859_1_filename())
    assert names(result) == ["Facture_février.pdf"]
    assert only(result).content == corpus.ISO_PDF
    assert result.sender == "renee.lefevre@orange.fr"
    assert result.subject == "Facture de février"
    assert result.message_id == "000001da7512$3c4b5a60$b4e20f20$@orange.fr"


def test_rfc2231_continuation_filename() -> None:
    """File names: RFC 2231 ``filename*0*=utf-8''...; filename*1*=...`` is decoded."""
    result = extract_documents(corpus.rfc2231_filename())
    assert names(result) == [corpus.RFC2231_NAME]
    assert only(result).content == corpus.RFC2231_PDF


def test_filename_length_limit_keeps_the_extension() -> None:
    """File names: bounded to max_filename_bytes UTF-8 bytes, extension kept ("é" is 2)."""
    result = extract_documents(corpus.rfc2231_filename(), ExtractionLimits(max_filename_bytes=20))
    assert names(result) == ["Relevé de compt.pdf"]


def test_hostile_filenames_are_sanitised() -> None:
    """File names: path parts, control/bidi characters, Windows-illegal characters and
    reserved names are removed; long names bounded; empty names get a fallback."""
    result = extract_documents(corpus.hostile_filenames())
    by_content = {doc.content: doc.filename for doc in result.documents}
    expected = {
        "traversal": "passwd.pdf",
        "windows_path": "evil.exe",
        "control": "facture[31m .pdf",
        "long": "A" * 251 + ".pdf",
        "reserved": "_CON.pdf",
        "empty": "document-1.pdf",
        "dots": "document-2.pdf",
        "bidi": "facturefdp.exe",
        "spaces": "Relevé mars .pdf",
        "illegal": "abcdefg.pdf",
    }
    assert {key: by_content[corpus.hostile_pdf(key)] for key in expected} == expected
    assert result.subject == "../../../tmp/x"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Windows\\evil.exe", "evil.exe"),
        ("dir/sub\\file.pdf", "file.pdf"),
        ("report.pdf/", "report.pdf"),
        ("bad\x00na\x1fme\x7f.pdf", "badname.pdf"),
        ("  ..hidden.pdf  ", "hidden.pdf"),
        ("trailing dots...", "trailing dots"),
        ("tab\tand\n  newline.pdf", "tab and newline.pdf"),
        ('what<>:"|?*.pdf', "what.pdf"),
        ("CON", "_CON"),
        ("con.tar.gz", "_con.tar.gz"),
        ("COM1.txt", "_COM1.txt"),
        ("lpt9 .pdf", "_lpt9 .pdf"),
        ("CONSOLE.pdf", "CONSOLE.pdf"),
        ("Re\u0301sume\u0301.pdf", "Résumé.pdf"),
        ("\u202egnp.exe", "gnp.exe"),
    ],
)
def test_sanitize_filename_rules(name: str, expected: str) -> None:
    """File names: the sanitising rules, one by one."""
    assert sanitize_filename(name, "fallback.bin") == expected


@pytest.mark.parametrize("name", [None, "", "   ", "....", "/", "..\\..\\", "\x00\x01"])
def test_sanitize_filename_falls_back_when_nothing_is_left(name: str | None) -> None:
    """File names: never empty -- the fallback is used."""
    assert sanitize_filename(name, "document-1.pdf") == "document-1.pdf"


def test_sanitize_filename_bounds_length_keeping_extension() -> None:
    """File names: max_bytes UTF-8 bytes, extension kept."""
    long_name = "Relevé " * 100 + ".xlsx"
    cleaned = sanitize_filename(long_name, "x", max_bytes=150)
    assert len(cleaned.encode("utf-8")) <= 150
    assert cleaned.endswith(".xlsx")
    assert sanitize_filename("abcdefghij.pdf", "x", max_bytes=8) == "abcd.pdf"


# --------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize(
    ("content", "declared", "filename", "expected"),
    [
        (corpus.pdf_bytes("x"), "application/octet-stream", None, "application/pdf"),
        (b"\r\ngarbage\x00\x01" + corpus.pdf_bytes("x"), None, None, "application/pdf"),
        (corpus.pdf_bytes("x"), "text/plain", "a.txt", "application/pdf"),
        (corpus.LOGO_PNG, "application/octet-stream", "logo", "image/png"),
        (b"Date;Montant\r\n2024-01-01;12,00\r\n2024-01-02;13,00\r\n", None, None, "text/csv"),
        (b"\xef\xbb\xbf<?xml version='1.0'?><Invoice/>", None, None, "application/xml"),
        (b"<!DOCTYPE html><html><body>x</body></html>", None, None, "text/html"),
        (b"BMW leasing contract, see terms", None, None, "text/plain"),
        (b"id,name\n1,a\n", "application/octet-stream", "export.csv", "text/csv"),
        (b"just some notes", "application/x-ofx", "releve.ofx", "application/x-ofx"),
        (b"\x00\x01\x02\x03binary", None, "data.bin", "application/octet-stream"),
        (
            b"\x00\x01\x02\x03binary",
            "application/vnd.ms-outlook",
            "mail.msg",
            "application/vnd.ms-outlook",
        ),
        (b"{\\rtf1\\ansi hello}", None, None, "application/rtf"),
        (b"", None, None, "application/octet-stream"),
    ],
)
def test_sniff_media_type(
    content: bytes, declared: str | None, filename: str | None, expected: str
) -> None:
    """Sniffing: bytes first, then the declared type, the extension, text heuristics."""
    assert sniff_media_type(content, declared, filename) == expected


def test_sniff_prefers_the_office_type_of_a_zip_container() -> None:
    """Sniffing: a generic ZIP signature does not override a declared/extension Office type."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("docProps/app.xml", "<x/>")
        archive.writestr("zzz/other.xml", "<x/>")
    data = buffer.getvalue()
    xlsx = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert sniff_media_type(data, None, "a.zip") == "application/zip"
    assert sniff_media_type(data, "application/octet-stream", "compta.xlsx") == xlsx


# --------------------------------------------------------------------------- limits


def test_max_documents_drops_the_excess_with_one_refusal() -> None:
    """max_documents: beyond it, ONE RefusedPart says how many were dropped."""
    result = extract_documents(corpus.many_attachments(8), ExtractionLimits(max_documents=5))
    assert names(result) == [f"piece-{i:03d}.pdf" for i in range(5)]
    assert [(r.filename, r.reason) for r in result.refused] == [
        (
            "(3 more documents)",
            "too many documents: 3 more document(s) were not filed; "
            "a message may contain at most 5 documents",
        )
    ]


# --------------------------------------------------------------------------- malformed MIME


MALFORMED = corpus.malformed_mime()


def test_missing_closing_boundary_still_yields_the_pdf() -> None:
    """Malformed MIME: a truncated message keeps its attachment; the defect is logged."""
    result = extract_documents(MALFORMED["missing_closing_boundary"])
    assert only(result).content == corpus.MALFORMED_PDF
    assert "closing boundary missing" in joined_defects(result)


def test_truncated_base64_keeps_what_decodes() -> None:
    """Malformed MIME: bad base64 -> the bytes that decode are kept, defect noted."""
    result = extract_documents(MALFORMED["truncated_base64"])
    doc = only(result)
    assert doc.filename == "coupe.pdf"
    assert 0 < len(doc.content) < len(corpus.MALFORMED_PDF)
    assert corpus.MALFORMED_PDF.startswith(doc.content)
    assert "base64 content damaged (truncated)" in joined_defects(result)


def test_missing_boundary_parameter_is_repaired() -> None:
    """Malformed MIME: a multipart without boundary parameter is re-read with the boundary
    found in its body."""
    result = extract_documents(MALFORMED["missing_boundary_parameter"])
    assert names(result) == ["sans-boundary.pdf"]
    assert only(result).content == corpus.MALFORMED_PDF
    assert "recovered 'zzzSEP'" in joined_defects(result)


def test_unknown_charset_in_filename_falls_back_to_latin1() -> None:
    """Malformed MIME: an unknown RFC 2231 charset is decoded as windows-1252/latin-1."""
    result = extract_documents(MALFORMED["unknown_charset_filename"])
    assert names(result) == ["Février €.pdf"]


def test_eight_bit_headers_are_decoded() -> None:
    """Malformed MIME: raw latin-1 bytes in headers give readable subject and file name."""
    result = extract_documents(MALFORMED["eight_bit_headers"])
    assert names(result) == ["Facture février.pdf"]
    assert result.subject == "Facture février"
    assert result.sender == "renee@example.org"
    assert "undecodable 8-bit bytes" in joined_defects(result)


def test_invalid_content_type_uses_the_declared_type() -> None:
    """Malformed MIME: ``application/pdf/x`` is read as application/pdf, not as a body."""
    result = extract_documents(MALFORMED["bad_content_type"])
    assert names(result) == ["type.pdf"]
    assert "Only parameters are valid after content type" in joined_defects(result)


@pytest.mark.parametrize("variant", ["no_headers", "garbage", "empty"])
def test_unparseable_input_is_kept_whole(variant: str) -> None:
    """Malformed MIME / R4: input without any attachment is kept whole as message.eml."""
    raw = MALFORMED[variant]
    result = extract_documents(raw)
    doc = only(result)
    assert (doc.filename, doc.media_type, doc.origin, doc.content) == (
        "message.eml",
        "message/rfc822",
        "body",
        raw,
    )
    assert (result.subject, result.sender, result.message_id) == (None, None, None)


def test_garbage_headers_give_none_not_errors() -> None:
    """Malformed MIME: unusable From/Message-ID become None; defects are readable text."""
    result = extract_documents(MALFORMED["header_garbage"])
    assert (result.sender, result.message_id) == (None, None)
    assert result.subject == "=?utf-8?B?broken"
    assert names(result) == ["=utf-8Bbroken.eml"]
    defects = joined_defects(result)
    assert "message header From: invalid header" in defects
    assert "multipart part has no boundary parameter" in defects


def test_hostile_nesting_does_not_overflow_the_stack() -> None:
    """Malformed MIME: 1 200 nested multiparts -> kept whole, defect explains why."""
    raw = MALFORMED["deep_nesting"]
    result = extract_documents(raw)
    assert only(result).content == raw
    assert "nested too deeply" in joined_defects(result)


def test_multipart_nesting_is_capped_at_50_levels() -> None:
    """Malformed MIME: parts nested beyond 50 multipart levels are ignored, with a defect."""
    result = extract_documents(MALFORMED["medium_nesting"])
    assert names(result) == ["medium.eml"]
    assert "nested more than 50 levels deep" in joined_defects(result)


def test_mutated_messages_always_give_a_usable_result() -> None:
    """Hostile input: randomly damaged corpus messages still give documents or refusals,
    each with a safe, non-empty file name."""
    rng = random.Random(20240312)
    sources = [build() for build in corpus.ALL_MESSAGES.values()]
    for _ in range(150):
        raw = bytearray(rng.choice(sources))
        for _ in range(rng.randint(1, 6)):
            position = rng.randrange(len(raw))
            raw[position : position + rng.randint(0, 40)] = rng.randbytes(rng.randint(0, 40))
        result = extract_documents(bytes(raw))
        assert result.documents or result.refused
        for doc in result.documents:
            assert doc.filename and doc.filename == sanitize_filename(doc.filename, "x")
            assert not set(doc.filename) & set('/\\<>:"|?*')

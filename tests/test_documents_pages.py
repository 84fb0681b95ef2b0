"""Documents at scale (issue 13): keyset pages, filters, tenant isolation, cursors,
streamed uploads and downloads. Figures with a million documents: benchmarks/api_pagination.py.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tracemalloc
from datetime import timedelta

import pytest
from sqlalchemy import select

from gateway.storage.accounts import AccountError, NotFound, add_cabinet, add_company
from gateway.storage.connections import add_connection, add_document, move_document, set_switch
from gateway.storage.listings.documents import (
    document_content,
    document_detail,
    folder_tree,
    list_documents,
    list_documents_page,
)
from gateway.storage.models import Cabinet
from gateway.storage.tenancy import Tenant

COMPANY = "dupont-maconnerie"
MB = 1 << 20


def put(gw, clock, tmp_path, name: str, folder: str = "Achats", company: str = COMPANY, **kw):
    path = tmp_path / name
    path.write_bytes(b"%PDF-1.4 " + name.encode() + os.urandom(8))
    document, _ = add_document(
        gw.db, gw.grammar, gw.blobs, company, folder, path, clock.now(), **kw
    )
    return document


def walk(gw, limit: int, between=None, **filters) -> list:
    rows, cursor = [], None
    while True:
        page = list_documents_page(gw.db, limit=limit, after=cursor, **filters)
        assert len(page.items) <= limit
        rows += page.items
        if page.next_cursor is None:
            return rows
        cursor = page.next_cursor
        if between:
            between()


def test_pages_walk_every_document_exactly_once_while_documents_are_added(gw, clock, tmp_path):
    """Keyset paging: documents placed while a client pages (at the same minute as the
    cursor, or later) never shift a page: nothing is seen twice, nothing present is missed."""
    present = []
    for i in range(23):
        present.append(put(gw, clock, tmp_path, f"f{i}.pdf").id)
        if i % 3 == 0:  # ties on placed_at: the id decides
            clock.advance(minutes=1)
    added = []

    def insert_meanwhile() -> None:
        added.append(put(gw, clock, tmp_path, f"new{len(added)}.pdf").id)
        if len(added) % 2:
            clock.advance(seconds=30)

    rows = walk(gw, 5, insert_meanwhile, company=COMPANY)
    ids = [r.id for r in rows]
    assert len(ids) == len(set(ids))
    assert set(present) <= set(ids) <= set(present) | set(added)
    assert [(r.placed_at, r.id) for r in rows] == sorted((r.placed_at, r.id) for r in rows)
    assert added and set(added) == set(ids) - set(present)  # later ones come at the end
    # the CLI's listing is the same query, all pages
    assert [r.id for r in list_documents(gw.db, COMPANY)] == ids


def test_filters(gw, clock, tmp_path):
    a = put(gw, clock, tmp_path, "facture-100%.pdf", "Achats")
    clock.advance(hours=1)
    b = put(gw, clock, tmp_path, "b.pdf", "Achats/2026/11")
    clock.advance(hours=1)
    sibling = put(gw, clock, tmp_path, "c.pdf", "Achats-anciens")  # same prefix, not below
    other = put(gw, clock, tmp_path, "d.pdf", "Achats", company="boulangerie-martin")
    note = tmp_path / "note.txt"
    note.write_text("une note")
    text, _ = add_document(gw.db, gw.grammar, gw.blobs, COMPANY, "Achats/2026", note, clock.now())

    def ids(**filters) -> list[int]:
        return [r.id for r in walk(gw, 2, **filters)]

    assert ids(company=COMPANY, folder="Achats") == [a.id, b.id, text.id]
    assert ids(folder="/Achats/") == [a.id, b.id, other.id, text.id]  # every company
    assert ids(company=COMPANY, folder="Achats/2026") == [b.id, text.id]
    assert ids(company=COMPANY, folder="Nulle part") == []
    assert ids(company=COMPANY, media_type="text/plain") == [text.id]
    assert ids(company=COMPANY, source="upload") == [a.id, b.id, sibling.id, text.id]
    start = a.placed_at + timedelta(hours=1)
    assert ids(company=COMPANY, placed_after=start) == [b.id, sibling.id, text.id]
    assert ids(company=COMPANY, placed_before=start) == [a.id]
    assert ids(filename_contains="100%") == [a.id]  # % is a character, not a wildcard
    assert ids(filename_contains="FACTURE") == [a.id]
    with pytest.raises(AccountError) as bad:
        list_documents_page(gw.db, source="fax")
    assert bad.value.field == "source"
    for limit in (0, 501):
        with pytest.raises(AccountError) as bad:
            list_documents_page(gw.db, limit=limit)
        assert bad.value.field == "limit"
    with pytest.raises(AccountError) as bad:
        list_documents_page(gw.db, folder="a/../b")
    assert bad.value.field == "folder"


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "!!!!",
        base64.urlsafe_b64encode(b"{}").decode(),
        base64.urlsafe_b64encode(b'["2026-11-22T10:30:00+00:00"]').decode(),
        base64.urlsafe_b64encode(b'["2026-11-22T10:30:00+00:00", "1"]').decode(),
        base64.urlsafe_b64encode(b'["yesterday", 1]').decode(),
        base64.urlsafe_b64encode(b"[1, 1]").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_a_tampered_cursor_names_the_field(gw, cursor):
    with pytest.raises(AccountError) as bad:
        list_documents_page(gw.db, after=cursor)
    assert bad.value.field == "cursor" and not isinstance(bad.value, NotFound)


def test_another_cabinets_documents_are_absent(gw, clock, tmp_path):
    add_cabinet(gw.db, "autre-cabinet", "Autre", None, clock.now())
    add_company(gw.db, gw.grammar, "autre-sarl", "autre-cabinet", "Autre", "12-31", clock.now())
    mine = put(gw, clock, tmp_path, "mine.pdf")
    theirs = put(gw, clock, tmp_path, "theirs.pdf", company="autre-sarl")
    with gw.db.read() as s:
        cabinet_id = s.execute(select(Cabinet.id).where(Cabinet.slug == "aecconseil")).scalar()
    aec = Tenant(cabinet_id)

    assert [r.id for r in list_documents_page(gw.db, aec).items] == [mine.id]
    assert [r.id for r in list_documents_page(gw.db, aec, folder="Achats").items] == [mine.id]
    assert {r.id for r in list_documents_page(gw.db).items} == {mine.id, theirs.id}
    calls = [
        lambda: list_documents_page(gw.db, aec, company="autre-sarl"),
        lambda: folder_tree(gw.db, "autre-sarl", aec),
        lambda: document_detail(gw.db, theirs.id, aec),
        lambda: document_content(gw.db, gw.blobs, theirs.id, aec),
        lambda: move_document(gw.db, gw.grammar, theirs.id, "Ventes", clock.now(), tenant=aec),
        lambda: put(gw, clock, tmp_path, "x.pdf", company="autre-sarl", tenant=aec),
    ]
    for call in calls:
        with pytest.raises(NotFound):
            call()
    assert document_detail(gw.db, theirs.id).document.folder == "Achats"  # not moved
    assert [r.id for r in list_documents(gw.db, tenant=aec)] == [mine.id]  # x.pdf not added
    assert move_document(gw.db, gw.grammar, mine.id, "Ventes", clock.now(), tenant=aec)


def test_detail_names_the_message_folder_and_delivery_statuses(gw, clock, tmp_path):
    add_connection(gw.db, gw.grammar, COMPANY, "meg", "meg+macon-dupont@welyb.fr", clock.now())
    set_switch(gw.db, COMPANY, "Achats", "meg", True, clock.now(), create_folder=True)
    clock.advance(minutes=1)
    document = put(gw, clock, tmp_path, "f.pdf", "Achats/11")
    detail = document_detail(gw.db, document.id)
    assert detail.document.folder == "Achats/11" and detail.document.company == COMPANY
    assert detail.document.media_type == "application/pdf" and detail.document.source == "upload"
    assert [(d.partner, d.status) for d in detail.deliveries] == [("meg", "queued")]
    with pytest.raises(NotFound) as missing:
        document_detail(gw.db, 999_999)
    assert missing.value.field == "document"


def _big_file(path, size: int, head: bytes) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(size // MB):
            chunk = os.urandom(MB)
            if i == 0:
                chunk = head + chunk[len(head) :]
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest()


def test_a_25_mb_upload_and_download_never_sit_whole_in_memory(gw, clock, tmp_path):
    """Allocations traced while a 25 MB file is stored from a path, then from chunks (as an
    HTTP upload arrives), then read back: the peak stays a few chunks, not the file."""
    path = tmp_path / "scan.pdf"
    sha = _big_file(path, 25 * MB, b"%PDF-1.7\n")  # sniffed from the head alone

    tracemalloc.start()
    try:
        document, _ = add_document(
            gw.db, gw.grammar, gw.blobs, COMPANY, "Achats", path, clock.now()
        )
        upload_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        row, stored = document_content(gw.db, gw.blobs, document.id)
        digest, size = hashlib.sha256(), 0
        for chunk in stored:
            digest.update(chunk)
            size += len(chunk)
        download_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert upload_peak < 5 * MB and download_peak < 5 * MB, (upload_peak, download_peak)
    assert (document.sha256, document.size, document.media_type) == (
        sha,
        25 * MB,
        "application/pdf",
    )
    assert digest.hexdigest() == sha and size == 25 * MB == row.size
    assert not list(gw.blobs.root.glob(".upload.*"))  # no temporary file left behind

    def chunks():
        with open(path, "rb") as f:
            while chunk := f.read(64 * 1024):
                yield chunk[::-1]  # other bytes, same size

    tracemalloc.start()
    try:
        streamed, _ = add_document(
            gw.db,
            gw.grammar,
            gw.blobs,
            "boulangerie-martin",
            "Achats",
            chunks(),
            clock.now(),
            filename="../../etc/scan.bin",
        )
        stream_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stream_peak < 5 * MB, stream_peak
    assert streamed.size == 25 * MB and streamed.filename == "scan.bin"
    with pytest.raises(AccountError) as unnamed:
        add_document(gw.db, gw.grammar, gw.blobs, COMPANY, "Achats", iter([b"x"]), clock.now())
    assert unnamed.value.field == "filename"


def test_download_is_the_uploaded_bytes(gw, clock, tmp_path):
    path = tmp_path / "facture.pdf"
    path.write_bytes(b"%PDF-1.4\n" + os.urandom(3 * MB + 17))
    document, _ = add_document(gw.db, gw.grammar, gw.blobs, COMPANY, "Achats", path, clock.now())
    row, stored = document_content(gw.db, gw.blobs, document.id)
    assert row.id == document.id and row.filename == "facture.pdf"
    assert b"".join(stored) == path.read_bytes()
    assert b"".join(gw.blobs.chunks(row.sha256)) == path.read_bytes()
    with pytest.raises(AccountError) as again:  # the duplicate rule, as a conflict
        add_document(gw.db, gw.grammar, gw.blobs, COMPANY, "Ventes", path, clock.now())
    assert again.value.field == "file"

"""Body to PDF (issue 12, item 5): a message with no document gets a PDF of its body beside
its `.eml`, rendered by WeasyPrint in a sandbox child; nothing outside the message is ever
fetched, and a body that cannot be rendered costs its PDF only."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pypdf
import pytest
from sqlalchemy import select

from gateway.app import Gateway
from gateway.inbound.body_pdf import BodyPdfRenderer
from gateway.inbound.sandbox import OverBudget
from gateway.storage.models import Document, InboundMessage
from tests.conftest import custom_server
from tests.corpus.make_corpus import png_bytes
from tests.support import RunningServer, file_all, message

COLLECTION = "compta+dupont-maconnerie@welyb.fr"

RECEIPT = """<!DOCTYPE html><html><head><style>
td { padding: 4px; } .total { font-weight: bold; }
</style></head><body>
<h1>Votre reçu Uber</h1>
<p>Merci pour votre course, Jeanne.</p>
<table>
<tr><td>Course Paris 11e vers Gare de Lyon</td><td>18,40 €</td></tr>
<tr><td>Frais de service</td><td>1,60 €</td></tr>
<tr class="total"><td>Total TTC</td><td>20,00 €</td></tr>
</table>
<p>Reçu n° 7F3K-2026-0117</p>
</body></html>"""


def html_message(html: str, subject: str = "Votre reçu", images: dict[str, bytes] | None = None):
    msg = EmailMessage()
    msg["From"] = "Uber Receipts <noreply@uber.example>"
    msg["To"] = COLLECTION
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="uber.example")
    msg.set_content("Votre reçu est en HTML.\n")
    msg.add_alternative(html, subtype="html")
    if images:
        [alternative] = [p for p in msg.iter_parts() if p.get_content_subtype() == "html"]
        for content_id, png in images.items():
            alternative.add_related(png, "image", "png", cid=f"<{content_id}>")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def pdf_text(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return " ".join(page.extract_text() for page in reader.pages)


def pdf_images(pdf: bytes) -> int:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return sum(len(page.images) for page in reader.pages)


@pytest.fixture(scope="module")
def renderer() -> Iterator[BodyPdfRenderer]:
    """One sandbox child for the module's direct renderings (it starts in ~1 s)."""
    renderer = BodyPdfRenderer(timeout_seconds=60, memory_limit_mb=1024)
    yield renderer
    renderer.close()


class Recorder(BaseHTTPRequestHandler):
    """An HTTP server that a rendering must never reach: it records every request."""

    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        self.wfile.write(png_bytes(4, 4))

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def tracker() -> Iterator[tuple[str, list[str]]]:
    requests: list[str] = []
    handler = type("Handler", (Recorder,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def test_an_html_receipt_becomes_a_pdf_with_its_words(renderer):
    text = pdf_text(renderer.render(html_message(RECEIPT)))
    for words in ("Votre reçu Uber", "Gare de Lyon", "Total TTC", "20,00 €", "7F3K-2026-0117"):
        assert words in text
    assert "Votre reçu est en HTML" not in text  # the HTML body, not its text alternative


def test_a_plain_text_body_becomes_a_pdf_with_its_words_and_headers(renderer):
    body = "Bonjour,\nci-dessous le relevé <b>n° 42</b> & total : 1 234,56 €.\n"
    raw = message(subject="Relevé de mars", body=body)
    text = pdf_text(renderer.render(raw))
    assert "Relevé de mars" in text  # the subject, in the page's header block
    assert "relevé <b>n° 42</b> & total : 1 234,56 €." in text  # escaped, not markup


def test_a_cid_image_of_the_message_is_drawn(renderer):
    html = RECEIPT.replace("<h1>", '<img src="cid:logo@uber.example" width="80"><h1>')
    with_image = renderer.render(
        html_message(html, images={"logo@uber.example": png_bytes(40, 20)})
    )
    without = renderer.render(html_message(html))  # the cid: names no part: nothing drawn
    assert pdf_images(with_image) == 1
    assert pdf_images(without) == 0


def test_nothing_outside_the_message_is_fetched(renderer, tracker):
    url, requests = tracker
    html = f"""<html><head>
<link rel="stylesheet" href="{url}/style.css">
<style>@import url("{url}/imported.css"); body {{ background: url("{url}/bg.png"); }}</style>
</head><body>
<img src="{url}/pixel.png?open=1"><img src="//127.0.0.1:{url.rsplit(":", 1)[1]}/relative.png">
<object data="{url}/object.svg"></object><iframe src="{url}/frame.html"></iframe>
<p>Reçu 55</p></body></html>"""
    text = pdf_text(renderer.render(html_message(html)))
    assert "Reçu 55" in text
    assert requests == []


def test_a_hostile_body_is_stopped_by_the_budget():
    rows = "".join(f"<tr><td>{i}</td><td>article {i}</td></tr>" for i in range(20_000))
    hostile = html_message(f"<table>{rows}</table>")
    renderer = BodyPdfRenderer(timeout_seconds=1, memory_limit_mb=1024)
    try:
        with pytest.raises(OverBudget, match=r"extraction\.body_pdf_timeout_seconds"):
            renderer.render(hostile)
        # The child was killed; the next body is rendered by a fresh one.
        assert "Total TTC" in pdf_text(renderer.render(html_message(RECEIPT)))
    finally:
        renderer.close()


def _send(server: RunningServer, data: bytes) -> None:
    with server.client() as smtp:
        smtp.sendmail("noreply@uber.example", [COLLECTION], data)


def _filed(gw: Gateway) -> tuple[InboundMessage, list[Document]]:
    with gw.db.read() as s:
        [row] = s.execute(select(InboundMessage)).scalars().all()
        documents = list(s.execute(select(Document).order_by(Document.id)).scalars())
        s.expunge_all()
    return row, documents


def test_end_to_end_a_receipt_is_filed_as_eml_and_pdf(server, gw):
    _send(server, html_message(RECEIPT, subject="Votre reçu du 17 mars"))
    file_all(gw)
    row, documents = _filed(gw)
    assert row.status == "filed", row.reason
    eml, pdf = documents
    assert (eml.filename, eml.origin) == ("Votre reçu du 17 mars.eml", "body")
    assert (pdf.filename, pdf.origin, pdf.media_type) == (
        "Votre reçu du 17 mars.pdf",
        "body-pdf",
        "application/pdf",
    )
    assert pdf.folder_id == eml.folder_id
    assert "Total TTC" in pdf_text(gw.blobs.get(pdf.sha256))


@pytest.mark.parametrize(
    "hostile",
    [
        "".join(f"<tr><td>{i}</td><td>article {i}</td></tr>" for i in range(20_000)),
        "<div>" * 5_000 + "deep" + "</div>" * 5_000,  # a RecursionError in the layout
    ],
    ids=["huge-table", "deep-nesting"],
)
def test_end_to_end_a_body_that_cannot_be_rendered_leaves_the_eml_filed(
    tmp_path, database_url, clock, hostile
):
    with custom_server(
        tmp_path, database_url, clock, extraction={"body_pdf_timeout_seconds": 1}
    ) as (gw, running):
        _send(running, html_message(f"<table>{hostile}</table>"))
        file_all(gw)
    row, documents = _filed(gw)
    assert row.status == "filed", row.reason
    assert [d.origin for d in documents] == ["body"]
    assert "Votre reçu.pdf not made: body-to-PDF rendering" in (row.reason or "")


def test_turned_off_only_the_eml_is_filed(tmp_path, database_url, clock):
    with custom_server(tmp_path, database_url, clock, extraction={"body_pdf": False}) as (
        gw,
        running,
    ):
        _send(running, html_message(RECEIPT))
        file_all(gw)
    row, documents = _filed(gw)
    assert row.status == "filed", row.reason
    assert [d.origin for d in documents] == ["body"]


def test_a_message_with_a_document_gets_no_body_pdf(server, gw):
    invoice = message(attachments=[("facture.pdf", "application/pdf", b"%PDF-1.4\n%%EOF\n")])
    _send(server, invoice)
    file_all(gw)
    _, documents = _filed(gw)
    assert [d.filename for d in documents] == ["facture.pdf"]

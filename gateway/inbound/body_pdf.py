"""A PDF of the body of a message that carries no document (issue 12): receipts from ride,
retail and software vendors come as HTML bodies, and a firm files PDFs, not `.eml`s.

The body is the message's own choice of body (the stdlib's `get_body`: HTML before plain
text, text escaped into a page of its own), laid out by WeasyPrint (HTML and CSS to PDF, pure
Python over Pango; no browser). The sender's HTML is hostile input: nothing is ever fetched
(a remote image is a read receipt, a `file:` URL a leak) but the message's own `cid:` parts
and inline `data:` URLs, and rendering runs in a sandbox child (gateway/inbound/sandbox.py)
under its own time and memory budget. A body that cannot be rendered costs its PDF only: the
`.eml` is filed anyway, with the reason in the message's.
"""

from __future__ import annotations

import html
import logging
from dataclasses import replace
from email import message_from_bytes, policy
from email.message import EmailMessage, Message, MIMEPart
from urllib.parse import unquote
from urllib.request import DataHandler, Request

from gateway.inbound.extraction import ExtractedDocument, Extraction
from gateway.inbound.sandbox import Budget, OverBudget, Sandbox

BODY_ORIGIN = "body"  # extraction's origin for a message filed whole, as its .eml
PDF_ORIGIN = "body-pdf"

_TEXT_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><style>
@page {{ size: A4; margin: 2cm; }}
body {{ font-family: sans-serif; font-size: 10pt; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
th {{ text-align: left; padding-right: 1em; color: #555; font-weight: normal; }}
pre {{ white-space: pre-wrap; overflow-wrap: anywhere; font-family: monospace; }}
</style></head><body><table>{headers}</table><pre>{text}</pre></body></html>"""


class RemoteResourceRefused(ValueError):
    """The body asked for something outside the message: never fetched."""


def render_body_pdf(raw: bytes) -> bytes:
    """The PDF of one message's body (HTML preferred, else text); runs in the sandbox child.
    Raises ValueError when the message has no body to render."""
    from weasyprint import HTML  # in the child only: the filing worker never loads Pango

    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    body = message.get_body(preferencelist=("html", "plain"))
    if body is None:
        raise ValueError("the message has no text or HTML body")
    text = _text_of(body)
    if body.get_content_subtype() != "html":
        text = _TEXT_PAGE.format(headers=_header_rows(message), text=html.escape(text))
    pdf = HTML(string=text, base_url=None, url_fetcher=_fetcher(message)).write_pdf()
    assert isinstance(pdf, bytes)
    return pdf


def _text_of(part: MIMEPart) -> str:
    try:
        text = part.get_content()
        if isinstance(text, str):
            return text
    except (LookupError, ValueError):  # an unknown or lying charset
        pass
    payload = part.get_payload(decode=True)
    return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def _header_rows(message: EmailMessage) -> str:
    rows = []
    for name in ("Subject", "From", "To", "Date"):
        value = message.get(name)
        if value is not None:
            rows.append(f"<tr><th>{name}</th><td>{html.escape(str(value))}</td></tr>")
    return "".join(rows)


def _cid_parts(message: Message) -> dict[str, tuple[str, bytes]]:
    """The message's parts by Content-ID: what a `cid:` URL may name."""
    parts: dict[str, tuple[str, bytes]] = {}
    for part in message.walk():
        content_id = part.get("Content-ID")
        payload = part.get_payload(decode=True)
        if content_id is not None and isinstance(payload, bytes):
            parts[str(content_id).strip().strip("<>").strip()] = (part.get_content_type(), payload)
    return parts


def _fetcher(message: Message) -> object:
    """A WeasyPrint URL fetcher that serves the message's `cid:` parts and inline `data:`
    URLs, and refuses everything else (http, https, ftp, file, ...)."""
    from weasyprint.urls import URLFetcher, URLFetcherResponse

    parts = _cid_parts(message)

    class MessageOnly(URLFetcher):  # type: ignore[misc]
        def fetch(self, url: str, headers: object = None) -> URLFetcherResponse:
            scheme = url.split(":", 1)[0].lower()
            if scheme == "cid":
                found = parts.get(unquote(url[4:]).strip("<>"))
                if found is None:
                    raise RemoteResourceRefused(f"no part of the message is {url[:100]}")
                media_type, content = found
                return URLFetcherResponse(url, content, {"Content-Type": media_type})
            if scheme == "data":
                with DataHandler().data_open(Request(url)) as response:
                    return URLFetcherResponse(
                        "data:",
                        response.read(),
                        {"Content-Type": response.headers.get_content_type()},
                    )
            raise RemoteResourceRefused(f"not fetched: {url[:100]}")

    return MessageOnly()


def _warm_up() -> None:
    """In the child, before its first message: WeasyPrint's imports and Fontconfig's font
    list (~1 s) are paid once per child, not inside a message's budget."""
    logging.getLogger("weasyprint").setLevel(logging.ERROR)  # each refused URL is a warning
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    render_body_pdf(b"Content-Type: text/plain\r\n\r\nwarm up\r\n")


class BodyPdfRenderer:
    """Adds a PDF of the body to an extraction that found no document but the `.eml`."""

    def __init__(self, timeout_seconds: float, memory_limit_mb: int) -> None:
        budget = Budget(
            "body-to-PDF rendering",
            timeout_seconds,
            memory_limit_mb,
            "extraction.body_pdf_timeout_seconds",
            "extraction.memory_limit_mb",
            "the .eml is filed without its PDF",
        )
        self._sandbox = Sandbox(render_body_pdf, budget, warm_up=_warm_up)

    def render(self, raw: bytes) -> bytes:
        """The body's PDF; OverBudget or RuntimeError when it cannot be made."""
        pdf = self._sandbox.run(raw)
        assert isinstance(pdf, bytes)
        return pdf

    def add_to(self, extraction: Extraction) -> tuple[Extraction, str | None]:
        """The extraction with the body's PDF beside its `.eml`, or as it was with the reason
        the PDF could not be made. Unchanged when it holds anything but the `.eml`."""
        if [d.origin for d in extraction.documents] != [BODY_ORIGIN]:
            return extraction, None
        eml = extraction.documents[0]
        try:
            pdf = self.render(eml.content)
        except (OverBudget, RuntimeError) as exc:
            return extraction, f"{_pdf_name(eml.filename)} not made: {exc}"
        document = ExtractedDocument(_pdf_name(eml.filename), "application/pdf", pdf, PDF_ORIGIN)
        return replace(extraction, documents=[eml, document]), None

    def close(self) -> None:
        self._sandbox.close()


def _pdf_name(eml_name: str) -> str:
    stem = eml_name[: -len(".eml")] if eml_name.lower().endswith(".eml") else eml_name
    return f"{stem}.pdf"

"""`gateway documents`: listing the GED, placing and moving documents by hand (R11)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from gateway.cli.context import Context, config_option, json_option
from gateway.cli.output import emit, print_json
from gateway.inbound.trust.results import AuthenticationResults
from gateway.storage.connections import add_document, move_document
from gateway.storage.listings.documents import document_detail, list_documents


@click.group()
def documents() -> None:
    """Documents in the GED."""


@documents.command("list")
@config_option
@json_option
@click.option("--company", "company_slug", default=None)
@click.option("--folder", "folder_path", default=None, help="This folder and its sub-folders.")
def documents_list(
    config_path: str | None, as_json: bool, company_slug: str | None, folder_path: str | None
) -> None:
    """List documents, newest last."""
    gw = Context(config_path).gateway
    rows = [_shown(asdict(row)) for row in list_documents(gw.db, company_slug, folder_path)]
    columns = ["id", "company", "folder", "filename", "media_type", "size", "source", "sender"]
    emit(rows, as_json, columns)


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """A document's row with its message's authentication in short (`sender`): who sent it
    as far as SPF, DKIM and DMARC tell."""
    stored = row.get("authentication")
    row["sender"] = AuthenticationResults.from_json(stored).summary() if stored else None
    return row


@documents.command("add")
@config_option
@click.option("--company", "company_slug", required=True)
@click.option("--folder", "folder_path", required=True)
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def documents_add(
    config_path: str | None, company_slug: str, folder_path: str, files: tuple[Path, ...]
) -> None:
    """Place files in a company's folder by hand (an upload, R11)."""
    gw = Context(config_path).gateway
    for file in files:
        document, placed = add_document(
            gw.db, gw.grammar, gw.blobs, company_slug, folder_path, file, gw.clock.now()
        )
        said = placed.summary()
        click.echo(
            f"document #{document.id} {document.filename} placed in {folder_path}"
            + (f"; {said}" if said else "")
        )


@documents.command("move")
@config_option
@click.argument("document_id", type=int)
@click.option("--folder", "folder_path", required=True)
def documents_move(config_path: str | None, document_id: int, folder_path: str) -> None:
    """Move a document to another folder (a move into a switched folder is a placement)."""
    gw = Context(config_path).gateway
    _, placed = move_document(gw.db, gw.grammar, document_id, folder_path, gw.clock.now())
    said = placed.summary()
    click.echo(f"document #{document_id} moved to {folder_path}" + (f"; {said}" if said else ""))


@documents.command("show")
@config_option
@json_option
@click.argument("document_id", type=int)
def documents_show(config_path: str | None, as_json: bool, document_id: int) -> None:
    """One document: where it is, where it came from, its e-invoice (what it says and the
    checks made), its deliveries and its duplicates."""
    gw = Context(config_path).gateway
    detail = document_detail(gw.db, document_id)
    shown = _shown(asdict(detail.document))
    if as_json:
        whole = asdict(detail)
        print_json({**shown, "deliveries": whole["deliveries"], "duplicates": whole["duplicates"]})
        return
    d = detail.document
    lines = [
        f"document #{d.id} {d.filename} ({d.media_type}, {d.size} bytes)",
        f"  company {d.company}, folder {d.folder}, placed {d.placed_at:%Y-%m-%d %H:%M:%S}",
        f"  from {d.source} {d.queue_id or ''} {d.origin}; sender {shown['sender'] or '-'}",
        f"  sha256 {d.sha256}",
        *_invoice_lines(d.invoice),
    ]
    lines += [
        f"  delivery #{x.id} to {x.partner}: {x.status}" + (f" ({x.reason})" if x.reason else "")
        for x in detail.deliveries
    ]
    lines += [
        f"  duplicate {x.filename} in {x.queue_id} at {x.seen_at:%Y-%m-%d %H:%M:%S}: "
        + (x.reason or "the same bytes")
        for x in detail.duplicates
    ]
    click.echo("\n".join(lines))


def _invoice_lines(invoice: dict[str, Any] | None) -> list[str]:
    if invoice is None:
        return []
    if "problem" in invoice:
        return [f"  e-invoice not read: {invoice['problem']}"]
    seller, buyer = invoice.get("seller") or {}, invoice.get("buyer") or {}

    def party(p: dict[str, Any]) -> str:
        labels = (("SIREN", "siren"), ("VAT", "vat_number"))
        ids = ", ".join(f"{label} {p[key]}" for label, key in labels if p.get(key))
        return f"{p.get('name') or '-'}" + (f" ({ids})" if ids else "")

    currency = invoice.get("currency") or ""
    lines = [
        f"  e-invoice {invoice.get('format')} {invoice.get('profile') or ''}: "
        f"{invoice.get('kind')} {invoice.get('number')} of {invoice.get('issue_date')}"
        f" (type {invoice.get('type_code')}), due {invoice.get('due_date') or '-'}",
        f"    seller {party(seller)}; buyer {party(buyer)}; "
        f"the company is {invoice.get('role') or 'neither party (see the checks)'}",
        f"    total {invoice.get('total_without_tax')} + tax {invoice.get('total_tax')} = "
        f"{invoice.get('total_with_tax')} {currency}, due {invoice.get('amount_due')}",
    ]
    lines += [f"    check: {check}" for check in invoice.get("checks") or []]
    return lines

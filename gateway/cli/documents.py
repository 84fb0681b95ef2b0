"""`gateway documents`: listing the GED, placing and moving documents by hand (R11)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from gateway.cli.context import Context, config_option, json_option
from gateway.cli.output import emit
from gateway.inbound.trust.results import AuthenticationResults
from gateway.storage.connections import add_document, move_document
from gateway.storage.listings.documents import list_documents


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

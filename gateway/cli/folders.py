"""`gateway folder`: a company's folder tree in the GED."""

from __future__ import annotations

from dataclasses import asdict

import click

from gateway.cli.context import Context, config_option, json_option
from gateway.cli.output import print_json
from gateway.storage.listings.documents import folder_tree


@click.group()
def folder() -> None:
    """A company's folders."""


@folder.command("tree")
@config_option
@json_option
@click.argument("company_slug")
def folder_tree_command(config_path: str | None, as_json: bool, company_slug: str) -> None:
    """Show a company's folder tree with document counts."""
    gw = Context(config_path).gateway
    folders = folder_tree(gw.db, company_slug)
    if as_json:
        print_json([asdict(f) for f in folders])
        return
    click.echo(company_slug)
    for f in folders:
        depth = f.path.count("/")
        name = f.path.rsplit("/", 1)[-1]
        suffix = f"  ({f.documents})" if f.documents else ""
        click.echo(f"{'  ' * (depth + 1)}{name}/{suffix}")

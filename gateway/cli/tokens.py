"""`gateway token`: tokens of the platform API (/api/v1), and the log of what they changed."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta

import click

from gateway.cli.context import Context, config_option, json_option
from gateway.cli.output import emit
from gateway.storage.api_tokens import audit_log, create_token, list_tokens, revoke_token


@click.group()
def token() -> None:
    """API tokens: made here, shown once, only their hash kept."""


@token.command("create")
@config_option
@click.option(
    "--scope",
    type=click.Choice(["read", "write", "admin"]),
    required=True,
    help="read: GET only; write: also a cabinet's data; admin: everything.",
)
@click.option("--cabinet", "cabinet_slug", default=None, help="Only this cabinet's data.")
@click.option("--name", default="", help="What the token is for (shown by `token list`).")
@click.option("--expires-days", type=click.IntRange(1, 3650), default=None)
def token_create(
    config_path: str | None,
    scope: str,
    cabinet_slug: str | None,
    name: str,
    expires_days: int | None,
) -> None:
    """Make a token and print it once; keep it now, it cannot be shown again."""
    gw = Context(config_path).gateway
    expires = timedelta(days=expires_days) if expires_days else None
    row, secret = create_token(
        gw.db, scope, cabinet_slug, name or f"{scope} token", gw.clock.now(), expires
    )
    seen = f"cabinet {row.cabinet}" if row.cabinet else "every cabinet"
    click.echo(f"token #{row.id} ({row.scope}, {seen}); it is shown this once:", err=True)
    click.echo(secret)


@token.command("list")
@config_option
@json_option
def token_list(config_path: str | None, as_json: bool) -> None:
    """Tokens (never the tokens themselves)."""
    gw = Context(config_path).gateway
    rows = [asdict(r) for r in list_tokens(gw.db)]
    columns = ["id", "name", "scope", "cabinet", "created_at", "expires_at", "revoked_at"]
    emit(rows, as_json, [*columns, "last_used_at"])


@token.command("revoke")
@config_option
@click.argument("token_id", type=int)
def token_revoke(config_path: str | None, token_id: int) -> None:
    """Revoke a token: from now on it is refused (401)."""
    gw = Context(config_path).gateway
    row = revoke_token(gw.db, token_id, gw.clock.now())
    click.echo(f"token #{row.id} ({row.name}) revoked")


@token.command("audit")
@config_option
@json_option
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
def token_audit(config_path: str | None, as_json: bool, limit: int) -> None:
    """The latest writes made through the API, newest first."""
    gw = Context(config_path).gateway
    rows = [asdict(r) for r in audit_log(gw.db, limit)]
    emit(rows, as_json, ["id", "at", "token_id", "action", "object", "status"])

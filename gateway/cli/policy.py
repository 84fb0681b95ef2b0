"""`gateway policy`: who may file mail into a company's folders (sender policy, issue 11).

A company's policy is its own, else its cabinet's, else [sender_policy] default; allow lists
add up over the levels (gateway/routing/sender_policy.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click
from sqlalchemy.orm import Session

from gateway.app import Gateway
from gateway.cli.context import Context, config_option, json_option
from gateway.cli.output import emit, print_json
from gateway.routing.sender_policy import GLOBAL_DEFAULT, PolicyKind, PolicyLevel, combine_levels
from gateway.storage.sender_policies import (
    PolicyScope,
    allow,
    disallow,
    own_settings,
    policy_levels,
    scope_of,
    set_policy,
)

INHERIT = "inherit"


def _scope_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--cabinet", "cabinet_slug", default=None, help="A cabinet's slug.")(func)
    return click.option("--company", "company_slug", default=None, help="A company's slug.")(func)


@click.group()
def policy() -> None:
    """Sender policy: open, authenticated, allow-list, allow-list+authenticated."""


def _levels(gw: Gateway, s: Session, scope: PolicyScope) -> list[PolicyLevel]:
    return policy_levels(
        s, scope.company_id, scope.cabinet_id, gw.config.sender_policy.policy, gw.registry
    )


def _in_force(scope: str, levels: Sequence[PolicyLevel]) -> dict[str, Any]:
    """What `show` prints: the policy in force, where it comes from, each entry's level."""
    policy, source = combine_levels(levels)
    origin: dict[str, str] = {}
    for level in levels:
        for entry in level.allowed:
            origin.setdefault(entry, level.source)
    return {
        "scope": scope,
        "kind": policy.kind.value,
        "from": source,
        "allowed": [{"entry": e, "from": origin[e]} for e in policy.allowed],
        "levels": [_level_row(lv) for lv in levels],
    }


def _level_row(level: PolicyLevel) -> dict[str, Any]:
    """One level's own setting; kind None: it inherits the kind."""
    kind = level.kind.value if level.kind else None
    return {"level": level.source, "kind": kind, "allowed": list(level.allowed)}


def _echo_in_force(shown: dict[str, Any]) -> None:
    click.echo(f"{shown['scope']}: sender policy {shown['kind']} (from {shown['from']})")
    kind = PolicyKind(shown["kind"])
    if not kind.needs_list:
        if shown["allowed"]:
            count = len(shown["allowed"])
            click.echo(
                f"allow list: {count} {'entry' if count == 1 else 'entries'}, not used by {kind}"
            )
        return
    if not shown["allowed"]:
        click.echo(
            "allow list: empty; every message will be quarantined until entries are added "
            "(`gateway policy allow`)"
        )
        return
    click.echo("allow list:")
    width = max(len(a["entry"]) for a in shown["allowed"])
    for a in shown["allowed"]:
        click.echo(f"  {a['entry'].ljust(width)}  ({a['from']})")


@policy.command("show")
@config_option
@_scope_options
@json_option
def policy_show(
    config_path: str | None, company_slug: str | None, cabinet_slug: str | None, as_json: bool
) -> None:
    """The policy in force for a company or a cabinet's bots, where it comes from, and its
    allow list; without --company or --cabinet: the global default and every own setting."""
    gw = Context(config_path).gateway
    default = gw.config.sender_policy.policy
    with gw.db.read() as s:
        if company_slug is None and cabinet_slug is None:
            levels = [PolicyLevel(GLOBAL_DEFAULT, default.kind, default.allowed)]
            rows = [_level_row(lv) for lv in levels + own_settings(s)]
            emit(rows, as_json, ["level", "kind", "allowed"])
            return
        scope = scope_of(s, company=company_slug, cabinet=cabinet_slug)
        shown = _in_force(scope.name, _levels(gw, s, scope))
    if as_json:
        print_json(shown)
    else:
        _echo_in_force(shown)


@policy.command("set")
@config_option
@_scope_options
@click.argument("kind", type=click.Choice([*(k.value for k in PolicyKind), INHERIT]))
def policy_set(
    config_path: str | None, company_slug: str | None, cabinet_slug: str | None, kind: str
) -> None:
    """Set the policy of a company or a cabinet; `inherit` removes its own, so the
    cabinet's (for a company) or the global default applies."""
    gw = Context(config_path).gateway
    with gw.db.write() as s:
        scope = scope_of(s, company=company_slug, cabinet=cabinet_slug)
        chosen = None if kind == INHERIT else PolicyKind(kind)
        set_policy(
            s,
            cabinet_id=_own_cabinet(scope),
            company_id=scope.company_id,
            kind=chosen,
            now=gw.clock.now(),
        )
        shown = _in_force(scope.name, _levels(gw, s, scope))
    _echo_in_force(shown)


def _own_cabinet(scope: PolicyScope) -> int | None:
    """The cabinet id of a cabinet-level change; None for a company's."""
    return scope.cabinet_id if scope.company_id is None else None


def _change_list(
    config_path: str | None,
    company_slug: str | None,
    cabinet_slug: str | None,
    entries: tuple[str, ...],
    change: Callable[..., tuple[str, ...]],
) -> None:
    gw = Context(config_path).gateway
    with gw.db.write() as s:
        scope = scope_of(s, company=company_slug, cabinet=cabinet_slug)
        own = change(
            s,
            cabinet_id=_own_cabinet(scope),
            company_id=scope.company_id,
            entries=entries,
            now=gw.clock.now(),
        )
        shown = _in_force(scope.name, _levels(gw, s, scope))
    click.echo(f"{scope.name}: its own allow list: {', '.join(own) or 'empty'}")
    _echo_in_force(shown)


def _list_command(name: str, change: Callable[..., tuple[str, ...]], help: str) -> None:
    """`policy allow` and `policy disallow`: the same options, a different change."""

    @policy.command(name, help=help)
    @config_option
    @_scope_options
    @click.argument("entries", nargs=-1, required=True)
    def command(
        config_path: str | None,
        company_slug: str | None,
        cabinet_slug: str | None,
        entries: tuple[str, ...],
    ) -> None:
        _change_list(config_path, company_slug, cabinet_slug, entries, change)


_list_command(
    "allow",
    allow,
    "Add addresses or domains to the allow list of a company or a cabinet: "
    "someone@supplier.fr, supplier.fr (that domain only), *.supplier.fr (its subdomains).",
)
_list_command("disallow", disallow, "Remove entries from the allow list of a company or a cabinet.")

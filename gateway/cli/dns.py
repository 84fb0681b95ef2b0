"""`gateway dns`: the DNS records to publish for every served domain (R18), and checking
them against what DNS answers."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable

import click

from gateway.cli.context import Context, config_option, json_option
from gateway.cli.output import emit
from gateway.outbound.dkim import KeyStore
from gateway.outbound.dnsrecords import (
    DnsLookup,
    DnsLookupError,
    DnspythonLookup,
    check_records,
    expected_records,
)


@click.group()
def dns() -> None:
    """The DNS records to publish (R18)."""


@dns.command("records")
@config_option
@json_option
def dns_records(config_path: str | None, as_json: bool) -> None:
    """MX, SPF, DKIM and DMARC records for every served domain."""
    gw = Context(config_path).gateway
    rows = [
        {"domain": r.domain, "name": r.name, "type": r.type, "value": r.value}
        for r in expected_records(gw.config, gw.dkim_keys)
    ]
    emit(rows, as_json, ["name", "type", "value"])


def _ip_addresses(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    for value in values:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not an IP address") from None
    return values


@dns.command("check")
@config_option
@json_option
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 60),
    default=5.0,
    show_default=True,
    help="Seconds one lookup may take.",
)
@click.option(
    "--nameserver",
    "nameservers",
    multiple=True,
    metavar="IP",
    callback=_ip_addresses,
    help="Ask this server (repeatable), e.g. the zone's primary before a change has "
    "propagated. Default: the system's resolver.",
)
def dns_check(
    config_path: str | None, as_json: bool, timeout: float, nameservers: tuple[str, ...]
) -> None:
    """Compare the records of `dns records` with what DNS answers (--json: the answers).

    One line per record: ok, missing, different or error (the lookup failed). Exit 1 unless
    every record is ok."""
    if _dns_check(config_path, as_json, lambda: DnspythonLookup(timeout, nameservers)) != 0:
        sys.exit(1)  # not click's Exit: main() runs click with standalone_mode=False


def _dns_check(config_path: str | None, as_json: bool, make_lookup: Callable[[], DnsLookup]) -> int:
    """`dns check` with the resolver handed in (tests pass a fake); returns the exit code."""
    # Only the configuration and the key store: checking DNS has no business creating or
    # migrating the database, as Context.gateway would, unless the keys are in it.
    context = Context(config_path)
    config = context.config()
    keys = context.gateway.dkim_keys if config.secrets_in_database else KeyStore(config.dkim_path)
    expected = expected_records(config, keys)
    try:
        lookup = make_lookup()
    except DnsLookupError as exc:  # no resolver configured on this machine
        raise click.ClickException(str(exc)) from None
    checks = check_records(expected, lookup)
    emit([c.as_dict() for c in checks], as_json, ["name", "type", "status", "detail"])
    return 0 if all(c.ok for c in checks) else 1

"""`gateway dkim`: the gateway's DKIM keys (R15, R18)."""

from __future__ import annotations

import click

from gateway.cli.context import Context, config_option
from gateway.outbound.dkim import dns_record_name, dns_txt_value, generate_key


@click.group()
def dkim() -> None:
    """DKIM keys (R15, R18)."""


@dkim.command("keygen")
@config_option
@click.option("--domain", required=True)
@click.option("--selector", required=True)
@click.option(
    "--algorithm",
    type=click.Choice(["rsa-sha256", "ed25519-sha256"]),
    default="rsa-sha256",
    show_default=True,
)
def dkim_keygen(config_path: str | None, domain: str, selector: str, algorithm: str) -> None:
    """Generate a key pair, store the private key, print the DNS TXT record to publish.

    With a secrets key configured the private key is sealed in the database, where every
    node reads it; without, it is a file in the storage folder."""
    gw = Context(config_path).gateway
    key = generate_key(domain, selector, algorithm)
    where = gw.dkim_keys.save(key)
    click.echo(f"private key: {where}")
    value = dns_txt_value(key)
    # A TXT string holds 255 octets at most: longer values are published as several strings.
    strings = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
    click.echo(f"publish: {dns_record_name(key)}. IN TXT {strings}")

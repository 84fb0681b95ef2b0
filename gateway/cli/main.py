"""The `gateway` command: what a mail admin and a cabinet's staff type.

Every verb but `init` takes -c/--config FILE (default: $GATEWAY_CONFIG, else ./gateway.toml);
every listing takes --json. Errors are one line on stderr that says what to fix, exit 1.
"""

from __future__ import annotations

import sys

import click
from sqlalchemy.exc import OperationalError

from gateway.cli import (
    bot_mail,
    cabinets,
    companies,
    connections,
    deliveries,
    dkim,
    dns,
    documents,
    folders,
    imap,
    messages,
    policy,
    quarantine,
    service,
    status,
    tokens,
    webhooks,
)
from gateway.cli.context import config_option
from gateway.errors import GatewayError
from gateway.lifetime import follow_supervisor
from gateway.storage.db import one_line


def main() -> None:
    follow_supervisor()  # a worker started by `serve` dies with it
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except GatewayError as exc:  # ours: one line, exit 1; anything else is a bug (traceback)
        click.echo(f"gateway: {exc}", err=True)
        sys.exit(1)
    except OperationalError as exc:  # the database away (down, unreachable, refusing us)
        click.echo(f"gateway: database unavailable: {one_line(exc)}", err=True)
        sys.exit(1)


# The help is this module's docstring: what `gateway --help` prints above the verbs.
@click.group(help=__doc__)
@click.version_option(package_name="gateway", message="gateway %(version)s")
@config_option
def cli(config_path: str | None) -> None:
    """`-c FILE` may come before the verb (`gateway -c FILE messages list`) or after it;
    after it wins."""


for _command in (
    service.init,
    service.migrate,
    service.serve,
    service.worker,
    service.sender,
    status.status,
    cabinets.cabinet,
    companies.company,
    folders.folder,
    documents.documents,
    messages.messages,
    quarantine.quarantine,
    bot_mail.bot_mail,
    connections.connection,
    connections.switch,
    policy.policy,
    deliveries.deliveries,
    imap.imap,
    dkim.dkim,
    dns.dns,
    tokens.token,
    webhooks.webhooks,
):
    cli.add_command(_command)

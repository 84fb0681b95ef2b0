"""What every verb shares: the gateway a command works on (`Context`), built from the
configuration file that -c/--config names, and the -c and --json options."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from gateway.app import Gateway
from gateway.config import load_config, resolve_config_path
from gateway.logs import configure_logging


class Context:
    def __init__(
        self, config_path: str | None, *, durable_commits: bool = True, role: str = "cli"
    ) -> None:
        if config_path is None:  # `gateway -c FILE verb …`: given before the verb
            current = click.get_current_context(silent=True)
            config_path = current.find_root().params.get("config_path") if current else None
        self.config_path = resolve_config_path(config_path)
        self.durable_commits = durable_commits
        self.role = role  # on every log line (gateway.logs): smtp, filing, sender, imap, cli
        self._gateway: Gateway | None = None

    @property
    def gateway(self) -> Gateway:
        """The gateway, its storage open: the schema is this code's, or made so where that
        is allowed (SQLite, or database.migrate = "auto"), or the command stops with what
        to do."""
        if self._gateway is None:
            gateway = self.unopened()
            gateway.open_storage()
            self._gateway = gateway
        return self._gateway

    def unopened(self) -> Gateway:
        """The gateway before its storage is looked at (`init`, `migrate`)."""
        config = load_config(self.config_path)
        configure_logging(
            config.logging.level, config.logging.format, node=config.node_name, role=self.role
        )
        return Gateway.from_config(config, durable_commits=self.durable_commits)


def config_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="Configuration file (default: $GATEWAY_CONFIG, else ./gateway.toml).",
    )(func)


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)

"""What every verb shares: the gateway a command works on (`Context`), built from the
configuration file that -c/--config names and the GATEWAY_* variables of the environment,
and the -c and --json options."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any

import click

from gateway.app import Gateway
from gateway.config import GatewayConfig, load_config, resolve_config_path
from gateway.logs import configure_logging

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Context:
    def __init__(
        self,
        config_path: str | None,
        *,
        durable_commits: bool = True,
        environ: Mapping[str, str] = os.environ,  # the one place the environment is read
        role: str = "cli",
    ) -> None:
        if config_path is None:  # `gateway -c FILE verb …`: given before the verb
            current = click.get_current_context(silent=True)
            config_path = current.find_root().params.get("config_path") if current else None
        self.environ = environ
        self.config_path = resolve_config_path(config_path, environ)
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

    def config(self) -> GatewayConfig:
        """The configuration: the file, with what the environment overrides."""
        return load_config(self.config_path, self.environ)

    def gateway_when_available(self) -> Gateway | None:
        """For a long-running verb (`worker`, `sender`, `imap run`): the gateway once its
        database answers, trying again with back-off meanwhile (`Gateway.
        open_storage_when_available`); None if SIGTERM or SIGINT came first."""
        gateway = self.unopened()
        stopping = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in STOP_SIGNALS}
        try:
            # A stop that came while the storage was being opened counts too.
            if not gateway.open_storage_when_available(stopping.wait) or stopping.is_set():
                return None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self._gateway = gateway
        return gateway

    def unopened(self) -> Gateway:
        """The gateway before its storage is looked at (`init`, `migrate`)."""
        config = self.config()
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

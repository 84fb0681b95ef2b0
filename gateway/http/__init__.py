"""The operations HTTP listener of `gateway serve` (`[http]`): /healthz, /readyz, /metrics.

Built on Starlette under uvicorn (the README says why): the platform's API (/api/v1, with
its OpenAPI document) is to be added to this application. In the layers this package sits
between serve and the wiring (gateway/app.py): serve starts it; it reads through the
storage listings and the wiring, and never writes.

- health.py: the readiness checks;
- exposition.py: the metrics the database gives at scrape time, and the registry /metrics
  shows (with every process's counts, gateway/metrics.py);
- server.py: the application and the uvicorn server run in serve's event loop.
"""

from __future__ import annotations

from pathlib import Path

from gateway.app import Gateway
from gateway.http.exposition import metrics_registry
from gateway.http.health import Check, Child, Children, Readiness
from gateway.http.server import OperationsListener, operations_app
from gateway.storage.probe import DatabaseProbe

__all__ = ["Check", "Child", "Children", "OperationsListener", "Readiness", "start_listener"]

# Seconds the database has to answer a readiness probe.
PROBE_TIMEOUT_SECONDS = 2.0


async def start_listener(
    gw: Gateway, children: Children, metrics_directory: Path
) -> tuple[OperationsListener, str] | None:
    """Start the listener `[http]` describes; returns it and its URL, or None when it is
    turned off (`http.enabled = false`)."""
    config = gw.config
    if not config.http.enabled:
        return None
    probe = DatabaseProbe(config.database_url, PROBE_TIMEOUT_SECONDS)
    screen = gw.screen()
    scanners = [
        (name, client.ping)
        for name, client in (("clamd", screen.malware), ("rspamd", screen.spam))
        if client is not None
    ]
    readiness = Readiness(config, gw.db, probe, children, gw.clock, scanners)
    registry = metrics_registry(metrics_directory, gw.db, gw.clock, config.imap_folders)
    listener = OperationsListener(
        operations_app(readiness, registry), config.http.host, config.http.port
    )
    host, port = await listener.start()
    shown = f"[{host}]" if ":" in host else host
    return listener, f"http://{shown}:{port}"

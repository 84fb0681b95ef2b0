"""The operations HTTP listener of `gateway serve` (`[http]`): /healthz, /readyz, /metrics,
and the platform API at /api/v1 (`[api]`, gateway/http/api/).

Built on Starlette under uvicorn (the README says why), the API with FastAPI on top. In
the layers this package sits between serve and the wiring (gateway/app.py): serve starts
it; health and metrics only read; the API changes things through the same service
functions as the CLI.

- health.py: the readiness checks;
- exposition.py: the metrics the database gives at scrape time, and the registry /metrics
  shows (with every process's counts, gateway/metrics.py);
- server.py: the application and the uvicorn server run in serve's event loop;
- api/: the platform API.
"""

from __future__ import annotations

from pathlib import Path

from gateway.app import Gateway
from gateway.http.api import api_app
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
    readiness = Readiness(config, gw.db, probe, children, gw.clock, scanners, gw.objects)
    registry = metrics_registry(metrics_directory, gw.db, gw.clock, config.imap_folders)
    api = api_app(gw) if config.api.enabled else None
    listener = OperationsListener(
        operations_app(readiness, registry, api), config.http.host, config.http.port
    )
    host, port = await listener.start()
    shown = f"[{host}]" if ":" in host else host
    return listener, f"http://{shown}:{port}"

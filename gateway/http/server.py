"""The operations HTTP listener: a Starlette application run by uvicorn inside `gateway
serve`'s event loop, beside the SMTP server.

uvicorn is used as a library: `Server.serve()` runs as a task of serve's loop, on a socket
this module binds (so that a busy port is one clear error, not uvicorn's `sys.exit`, and
port 0 tells which port it got). uvicorn would install its own SIGTERM and SIGINT handlers
for the time it runs (`Server.capture_signals`); serve owns those signals, so `_Server`
installs none, and `stop()` ends the listener when serve stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import asdict

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from gateway.errors import GatewayError
from gateway.http.health import Readiness

API_PREFIX = "/api/v1"
# Seconds a stopping listener waits for responses in progress (a scrape, a health check).
STOP_GRACE_SECONDS = 1


def operations_app(
    readiness: Readiness, registry: CollectorRegistry, api: ASGIApp | None = None
) -> Starlette:
    """/healthz (the process answers), /readyz (it can do its work: 200, or 503 naming
    what cannot), /metrics (Prometheus text format), and the platform API mounted at
    /api/v1 when given (gateway/http/api/)."""

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        checks = await readiness.checks()
        failing = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
        body = {"ready": not failing, "failing": failing, "checks": [asdict(c) for c in checks]}
        return JSONResponse(body, status_code=503 if failing else 200)

    async def metrics(request: Request) -> Response:
        # Collecting reads the database and the processes' files: not on the event loop.
        text = await asyncio.to_thread(generate_latest, registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
    ]
    if api is not None:
        routes.append(Mount(API_PREFIX, app=api))
    return Starlette(routes=routes)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # `gateway serve` owns SIGTERM and SIGINT: it stops this server itself


class OperationsListener:
    def __init__(self, app: Starlette, host: str, port: int) -> None:
        self.host = host
        self.port = port
        config = uvicorn.Config(
            app,
            log_config=None,  # the gateway's logging stays as configured
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=STOP_GRACE_SECONDS,
        )
        self.server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> tuple[str, int]:
        """Listen; returns the address and port bound."""
        sock = _bind(self.host, self.port)
        bound = sock.getsockname()
        self._task = asyncio.create_task(self.server.serve(sockets=[sock]))
        while not self.server.started:
            if self._task.done():
                self._task.result()  # its exception, if it failed
                raise GatewayError(f"http: the listener on {self.host}:{bound[1]} stopped")
            await asyncio.sleep(0.01)
        return str(bound[0]), int(bound[1])

    async def stop(self) -> None:
        if self._task is None:
            return
        self.server.should_exit = True
        await self._task


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket for host:port (IPv4 or IPv6, as the address is), or one line."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise GatewayError(
            f"http: cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(change http.host / http.port, or set http.enabled = false)"
        ) from exc
    return sock

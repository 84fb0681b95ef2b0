"""The platform API served for a test by the production listener (uvicorn under
OperationsListener) on a free loopback port, in a thread with its own event loop; tests
talk to it with a real HTTP client (httpx).

    with running_api(gw) as api:
        api.get("/cabinets", token=admin)      # an httpx.Response
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from gateway.app import Gateway
from gateway.http.api import PREFIX, api_app
from gateway.http.server import OperationsListener
from gateway.storage.api_tokens import create_token


class RunningApi:
    def __init__(self, gw: Gateway, base: str) -> None:
        self.gw = gw
        self.base = base  # http://127.0.0.1:PORT/api/v1
        self.client = httpx.Client(base_url=base, timeout=30)
        self.tokens: dict[str, str] = {}  # kept by tests that make one token for many calls

    def token(self, scope: str, cabinet: str | None = None, **kwargs: Any) -> str:
        _, secret = create_token(
            self.gw.db, scope, cabinet, f"test {scope}", self.gw.clock.now(), **kwargs
        )
        return secret

    def request(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, token, **kwargs)

    def post(self, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, token, **kwargs)

    def put(self, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, token, **kwargs)

    def delete(self, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, token, **kwargs)


@contextlib.contextmanager
def running_api(gw: Gateway) -> Iterator[RunningApi]:
    app = Starlette(routes=[Mount(PREFIX, app=api_app(gw))])
    listener = OperationsListener(app, "127.0.0.1", 0)
    loop = asyncio.new_event_loop()
    started: dict[str, Any] = {}
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            started["address"] = loop.run_until_complete(listener.start())
        except BaseException as exc:  # reported to the test below
            started["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_until_complete(listener._task)  # type: ignore[arg-type]

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(30)
    if "error" in started:
        raise started["error"]
    host, port = started["address"]
    api = RunningApi(gw, f"http://{host}:{port}{PREFIX}")
    try:
        yield api
    finally:
        api.client.close()
        asyncio.run_coroutine_threadsafe(listener.stop(), loop)
        thread.join(10)

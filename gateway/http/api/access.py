"""Who may call the API, how often, with how large a body; and the audit log of writes.

- `caller`: the bearer token (gateway/storage/api_tokens.py) → `Caller` (scope, tenant), or
  401; `needs(scope)` → 403 when the token's scope is too small. A token tied to a cabinet
  reaches only that cabinet's objects (another's ids answer 404, gateway/storage/tenancy.py).
- `RateLimits`: a token bucket per token, in this process (`[api] rate_per_second`,
  `rate_burst`); over it, 429 with Retry-After. Per node: a firm with N nodes gets N times
  the rate, which is still a bound.
- `BodyLimit`: an ASGI middleware that counts a request's body as it arrives and answers
  413 past `[api] max_json_bytes` (JSON) or `max_upload_bytes` (multipart): a huge body is
  refused without being read whole, with or without Content-Length.
- `AuditLog`: every write (POST, PUT, PATCH, DELETE) is recorded after it is answered —
  token, method and route, path, status — in `api_audit_log`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.app import Gateway
from gateway.storage.api_tokens import Caller, authenticate, record_write
from gateway.storage.models import ApiScope

_bearer = HTTPBearer(auto_error=False, description="A token from `gateway token create`.")
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


Gw = Annotated[Gateway, Depends(gateway)]


def caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Caller:
    """The token's caller, or 401; then the token's rate (429)."""
    gw = gateway(request)
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            401,
            "give a token: `Authorization: Bearer gw_…` (made by `gateway token create`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    who = authenticate(gw.db, credentials.credentials, gw.clock.now())
    if who is None:
        raise HTTPException(
            401,
            "this token is not valid: unknown, revoked or expired",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    request.state.caller = who
    wait = request.app.state.rate_limits.take(who.token_id)
    if wait > 0:
        raise HTTPException(
            429,
            f"too many requests for this token; retry in {wait:.1f} s",
            headers={"Retry-After": str(max(1, round(wait)))},
        )
    return who


def needs(scope: ApiScope) -> Callable[[Caller], Caller]:
    """A dependency: the caller, if its token's scope is at least `scope` (else 403)."""

    def check(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if not who.may(scope):
            raise HTTPException(
                403, f"this token's scope is {who.scope.value}; this needs {scope.value}"
            )
        return who

    return check


# What a handler declares it needs: `who: Reader`, `gw: Gw`.
Reader = Annotated[Caller, Depends(needs(ApiScope.READ))]
Writer = Annotated[Caller, Depends(needs(ApiScope.WRITE))]
Admin = Annotated[Caller, Depends(needs(ApiScope.ADMIN))]


class RateLimits:
    """A token bucket per token id: `rate` a second, `burst` at once."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}  # token: (tokens left, when)
        self._lock = threading.Lock()

    def take(self, token_id: int) -> float:
        """0 when the request may go; else the seconds until it may."""
        with self._lock:
            now = self.clock()
            left, then = self._buckets.get(token_id, (self.burst, now))
            left = min(self.burst, left + (now - then) * self.rate)
            if left < 1:
                self._buckets[token_id] = (left, now)
                return (1 - left) / self.rate
            self._buckets[token_id] = (left - 1, now)
            return 0.0


class BodyLimit:
    """Refuse a request body past its limit while it streams in (413, a JSON message)."""

    def __init__(self, app: ASGIApp, max_json: int, max_upload: int) -> None:
        self.app = app
        self.max_json = max_json
        self.max_upload = max_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        multipart = headers.get(b"content-type", b"").startswith(b"multipart/")
        limit = self.max_upload if multipart else self.max_json
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        seen = 0
        refused = False  # we answered 413: the application's own answer is dropped

        async def counted() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Answer now and tell the application the client has gone: it stops
                    # reading (whatever it then answers is dropped).
                    refused = True
                    await _too_large(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def sending(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted, sending)


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"error": f"the request body is larger than {limit} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})


AuditCall = Callable[[Request, Callable[[Request], Awaitable[Any]]], Awaitable[Any]]


def audit_writes() -> AuditCall:
    """Middleware: record every write in the audit log once it has been answered."""

    async def middleware(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        response = await call_next(request)
        if request.method in WRITES:
            gw = gateway(request)
            who: Caller | None = getattr(request.state, "caller", None)
            route = request.scope.get("route")
            action = f"{request.method} {getattr(route, 'path', request.url.path)}"
            await _in_thread(gw, who, action, request.url.path, response.status_code)
        return response

    return middleware


async def _in_thread(gw: Gateway, who: Caller | None, action: str, path: str, status: int) -> None:
    await run_in_threadpool(record_write, gw.db, who, action, path, status, gw.clock.now())

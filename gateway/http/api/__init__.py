"""The platform's HTTP API, /api/v1 on the operations listener (gateway/http/server.py),
with its OpenAPI document at /api/v1/openapi.json.

FastAPI (over the Starlette application the listener already runs) gives the OpenAPI
document from the same declarations that check each request, and a refusal that names the
field at fault. Handlers are plain functions: FastAPI runs them in its thread pool, so the
database is never waited on in serve's event loop. They call the same service functions as
the CLI (gateway/storage/…): no rule is written twice. The response models mirror the
storage listings' rows on purpose: they are the versioned contract (/api/v1), which must not
change when a listing gains a column, and they say every moment with its offset.

- access.py: tokens and scopes, tenancy, rate limits, body limits, the audit log of writes;
- errors.py: every refusal as `{"error", "field"}` with its 4xx;
- accounts.py: /cabinets, /companies; documents.py: /documents, folder trees;
  mail.py: /bot-mail, /messages, /quarantine; outbound.py: /connections, switches,
  /deliveries, /events; status.py: /status.
"""

from __future__ import annotations

from fastapi import FastAPI

from gateway.app import Gateway
from gateway.http.api import accounts, documents, errors, mail, outbound, status
from gateway.http.api.access import BodyLimit, RateLimits, audit_writes

VERSION = "v1"
PREFIX = f"/api/{VERSION}"


def api_app(gw: Gateway) -> FastAPI:
    """The API as an ASGI application, to be mounted at PREFIX."""
    app = FastAPI(
        title="gateway platform API",
        version=VERSION,
        description=(
            "Cabinets, companies, documents, connections, switches, deliveries and events of "
            "the mail gateway. Authenticate with `Authorization: Bearer <token>` (tokens from "
            '`gateway token create`). Every refusal is JSON: `{"error": …, "field": …}`.'
        ),
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        servers=[{"url": PREFIX}],
    )
    app.state.gateway = gw
    app.state.rate_limits = RateLimits(gw.config.api.rate_per_second, gw.config.api.rate_burst)
    errors.install(app)
    app.middleware("http")(audit_writes())
    for module in (accounts, documents, mail, outbound, status):
        app.include_router(module.router)
    app.add_middleware(
        BodyLimit, max_json=gw.config.api.max_json_bytes, max_upload=gw.config.api.max_upload_bytes
    )
    return app

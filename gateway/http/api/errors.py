"""How the API says no: always JSON `{"error": "…", "field": "…"}` with a 4xx for what the
caller must change, never a 5xx for bad input.

- AccountError (gateway/storage/accounts.py) → 422 naming its field; NotFound → 404 (also
  another cabinet's object); Conflict → 409; a queue refusing a transition (retry a message
  that is not held) → 409.
- A request that does not match the schema (malformed JSON, a wrong type, an unknown field,
  a missing one) → 422 naming the first field at fault, every problem listed in `problems`.
- The database unreachable → 503 with Retry-After (our failure, and a passing one).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError

from gateway.storage.accounts import AccountError, Conflict, NotFound
from gateway.storage.db import one_line
from gateway.storage.queues.inbound import TransitionError


def error(status: int, message: str, field: str | None = None, **more: Any) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    body.update(more)
    return JSONResponse(body, status_code=status)


def install(app: FastAPI) -> None:
    async def account(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AccountError)
        status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else 422
        return error(status, str(exc), exc.field)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = [_problem(e) for e in exc.errors()]
        first = problems[0] if problems else {"field": None, "message": "invalid request"}
        return error(422, str(first["message"]), first["field"], problems=problems)

    async def http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        response = error(exc.status_code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    async def out_of_range(request: Request, exc: Exception) -> JSONResponse:
        # What the schema let through but the database cannot hold (a number too large).
        return error(422, f"a value is out of range: {one_line(exc)}")

    async def transition(request: Request, exc: Exception) -> JSONResponse:
        return error(409, str(exc))

    async def database(request: Request, exc: Exception) -> JSONResponse:
        response = error(503, f"the database does not answer: {one_line(exc)}")
        response.headers["Retry-After"] = "5"
        return response

    app.add_exception_handler(AccountError, account)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(TransitionError, transition)
    app.add_exception_handler(DataError, out_of_range)
    app.add_exception_handler(OverflowError, out_of_range)
    app.add_exception_handler(OperationalError, database)


def _problem(e: Any) -> dict[str, Any]:
    """One pydantic error as a person reads it: which field, what is wrong."""
    location = [str(part) for part in e.get("loc", ()) if part not in ("body", "query", "path")]
    field = ".".join(location) or None
    kind = e.get("type", "")
    if kind == "extra_forbidden":
        message = f"{field}: unknown field"
    elif kind == "missing":
        message = f"{field}: required"
    elif kind == "json_invalid":
        message = f"the body is not valid JSON ({e.get('ctx', {}).get('error', 'malformed')})"
        field = None
    else:
        message = f"{field}: {e.get('msg', 'invalid')}" if field else str(e.get("msg", "invalid"))
    return {"field": field, "message": message}

"""What every resource's schema shares: the refusal body, strict request bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict

from gateway.clock import as_utc

# A row's id in a path: the database's integers end at 2^31 - 1 (PostgreSQL's integer).
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]

# A moment as RFC 3339 wants it, with its offset: SQLite gives back naive UTC datetimes.
Moment = Annotated[datetime, AfterValidator(as_utc)]


class Problem(BaseModel):
    """Every refusal: what is wrong, and which field when one is (errors.py)."""

    error: str
    field: str | None = None
    problems: list[dict[str, Any]] | None = None


class Strict(BaseModel):
    """A request body: an unknown field is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route that may refuse with these statuses (besides 401, 403,
    413, 429 and 503, which every route may answer)."""
    return {status: {"model": Problem} for status in (*statuses, 401, 403, 413, 429, 503)}

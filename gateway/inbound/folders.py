"""Where a collection address files a document: the folder of a journal for the reception
month, in the company's fiscal year (R2, R3)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from gateway.config import FilingConfig


def fiscal_year(received: date, fiscal_year_end: str) -> int:
    """The fiscal year a reception date falls in, named by the year it ends in.

    With the default 31 December end this is the calendar year; with a 30 June end,
    2026-07-01 … 2027-06-30 is fiscal year 2027. A 29 February end counts as the last day
    of February in every year.
    """
    month, day = (int(x) for x in fiscal_year_end.split("-"))
    if (month, day) == (2, 29):
        end = date(received.year, 3, 1) - timedelta(days=1)
    else:
        end = date(received.year, month, day)
    return received.year if received <= end else received.year + 1


def folder_path(
    config: FilingConfig, journal: str | None, fiscal_year_end: str, received_at: datetime
) -> str:
    """Where a collection address files a document (R2, R3)."""
    if journal is None:
        return config.unsorted_folder
    local = received_at.astimezone(config.zone)
    return config.folder_template.format(
        fiscal_year=fiscal_year(local.date(), fiscal_year_end),
        journal_folder=config.journals[journal],
        journal=journal,
        month=f"{local.month:02d}",
    )

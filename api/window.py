"""Time windows in query strings: `?from=...&to=...`, ISO 8601 with a time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Query
from pydantic import AwareDatetime

from api.errors import InvalidInputError

__all__ = ["MAX_WINDOW", "From", "To", "window_bounds"]

MAX_WINDOW = timedelta(days=400)

From = Annotated[AwareDatetime, Query(alias="from", description="window start (with time zone)")]
To = Annotated[AwareDatetime, Query(description="window end (with time zone)")]


def window_bounds(start: datetime, end: datetime) -> tuple[float, float, float]:
    """Check [start, end) and return it in epoch seconds with the data horizon `until`.

    Nothing is known about the future: time after now is unknown, not idle, so `until` is
    min(end, now) (never before start).
    """
    if start.year < 1970 or end.year > 9998:
        raise InvalidInputError("the window must lie between 1970 and 9998", field="from")
    if end <= start:
        raise InvalidInputError("to must be after from", field="to")
    if end - start > MAX_WINDOW:
        raise InvalidInputError(f"the window may span at most {MAX_WINDOW.days} days", field="to")
    until = min(end, datetime.now(UTC))
    return start.timestamp(), end.timestamp(), max(until.timestamp(), start.timestamp())

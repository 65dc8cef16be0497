"""Small value conversions shared by the v1 and Sparkplug decoders."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.records import EventRow, ExtraRow
from protocol import CATALOGUE, SignalChannel
from protocol.models import check_value

__all__ = ["event_row", "event_signal_ok", "extra_row", "ms_to_utc"]


def extra_row(ts: datetime, name: str, value: Any) -> ExtraRow:
    """One `sample_extra` row: numbers and booleans (0/1) in ``value``, strings in
    ``value_text``."""
    if value is None:
        return (ts, name, None, None)
    if type(value) is bool:
        return (ts, name, 1.0 if value else 0.0, None)
    if type(value) is str:
        return (ts, name, None, value)
    return (ts, name, float(value), None)


def event_row(ts: datetime, signal: str, value: Any, historical: bool) -> EventRow:
    """One `event` row of a value event (numbers also in ``value_num``)."""
    if value is None:
        return (ts, signal, None, None, None, None, None, None, None, None, historical)
    if type(value) is bool:
        return (ts, signal, "true" if value else "false", 1.0 if value else 0.0,
                None, None, None, None, None, None, historical)  # fmt: skip
    if isinstance(value, int | float):
        num = float(value)
        text = str(value)
        return (ts, signal, text, num if math.isfinite(num) else None,
                None, None, None, None, None, None, historical)  # fmt: skip
    return (ts, signal, str(value), None, None, None, None, None, None, None, historical)


def event_signal_ok(signal: str, value: Any) -> bool:
    """True if ``value`` is valid for the catalogue event signal ``signal``."""
    entry = CATALOGUE.get(signal)
    return (
        entry is not None
        and entry.channel is SignalChannel.EVENT
        and check_value(entry, value) is None
    )


def ms_to_utc(ms: int) -> datetime:
    """Sparkplug milliseconds since the epoch as an aware UTC datetime."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)

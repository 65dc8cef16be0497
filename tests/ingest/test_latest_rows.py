"""ingest.writer.latest_updates: which event_latest rows a batch writes and which keys it leaves
to the exact recompute from `event` (late or replayed events). The database side is tested
through a real worker in tests/api/test_latest.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.writer import LatestKey, latest_updates

T = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
RECEIVED = T + timedelta(hours=1)
KEY: LatestKey = (1, "execution", "", "")


def _at(s: float) -> datetime:
    return T + timedelta(seconds=s)


def _ev(s: float, value: str | None, level: str | None = None) -> tuple[Any, ...]:
    # EventRow (ts, signal, value, value_num, component, level, code, native_severity,
    # qualifier, message, historical) + the receive time
    return (_at(s), KEY[1], value, None, None, level, None, None, None, None, False, RECEIVED)


def test_a_new_key_takes_the_newest_event_and_its_run() -> None:
    updates, late = latest_updates({KEY: [_ev(3, "ACTIVE"), _ev(1, "READY"), _ev(2, "ACTIVE")]}, {})
    assert late == []
    [row] = updates
    assert row[:6] == (*KEY, _at(3), "ACTIVE")
    assert row[-2] == _at(2)  # since: the first of the trailing ACTIVE events


def test_a_repeat_of_the_stored_value_keeps_its_since() -> None:
    stored = {KEY: (_at(5), "ACTIVE", None, _at(4))}
    [row], _ = latest_updates({KEY: [_ev(6, "ACTIVE"), _ev(7, "ACTIVE")]}, stored)
    assert (row[4], row[-2]) == (_at(7), _at(4))
    [row], _ = latest_updates({KEY: [_ev(6, "READY"), _ev(7, "ACTIVE")]}, stored)
    assert (row[4], row[-2]) == (_at(7), _at(7))  # READY at 6 ended the stored run
    [row], _ = latest_updates({KEY: [_ev(6, None)]}, stored)
    assert (row[5], row[-2]) == (None, _at(6))  # unavailable is a value of its own


def test_an_event_at_or_before_the_stored_one_is_recomputed() -> None:
    stored = {KEY: (_at(5), "ACTIVE", None, _at(4))}
    for batch in ([_ev(3, "READY")], [_ev(5, "READY")], [_ev(9, "READY"), _ev(2, "ACTIVE")]):
        updates, late = latest_updates({KEY: batch}, stored)
        assert (updates, late) == ([], [KEY])


def test_conditions_compare_levels() -> None:
    key: LatestKey = (1, "condition", "spindle", "S1")
    stored = {key: (_at(5), None, "WARNING", _at(1))}
    [row], _ = latest_updates({key: [_ev(6, None, "WARNING")]}, stored)
    assert row[-2] == _at(1)
    [row], _ = latest_updates({key: [_ev(6, None, "FAULT")]}, stored)
    assert (row[7], row[-2]) == ("FAULT", _at(6))

"""Shift calendars: planned operation time (POT), breaks and planned downtime as interval sets.

Shifts are local wall-clock times repeated on chosen weekdays; a shift whose end is not after its
start runs past midnight. ``tz`` is any ``datetime.tzinfo`` (``zoneinfo.ZoneInfo("Europe/Berlin")``
handles daylight saving: a night shift on the change night is an hour shorter or longer, as on the
shop floor). Overlapping shifts count once in POT; per-shift figures each see their own window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from analytics.intervals import IntervalSet

__all__ = ["Shift", "ShiftCalendar", "ShiftWindow"]


@dataclass(frozen=True, slots=True)
class Shift:
    """A named shift: ``start``-``end`` local time on ``weekdays`` (Monday = 0), with breaks
    (local start, end) that are planned down time inside it."""

    name: str
    start: time
    end: time
    weekdays: frozenset[int] = frozenset(range(7))
    breaks: tuple[tuple[time, time], ...] = ()


@dataclass(frozen=True, slots=True)
class ShiftWindow:
    """One occurrence of a shift: its name, the local date it starts on, and [start, end) in
    seconds since the epoch, with its breaks as an interval set."""

    name: str
    day: date
    start: float
    end: float
    breaks: IntervalSet


def _stamp(day: date, at: time, tz: tzinfo) -> float:
    return datetime.combine(day, at, tzinfo=tz).timestamp()


def _span(day: date, a: time, b: time, tz: tzinfo) -> tuple[float, float]:
    end_day = day if b > a else day + timedelta(days=1)
    return _stamp(day, a, tz), _stamp(end_day, b, tz)


@dataclass(frozen=True, slots=True)
class ShiftCalendar:
    """Shifts plus explicit planned downtime (maintenance, no orders), all as local rules or
    absolute intervals (seconds since the epoch)."""

    shifts: Sequence[Shift]
    tz: tzinfo = UTC
    planned_downtime: IntervalSet = field(default_factory=IntervalSet.empty)

    def windows(self, start: float, end: float) -> list[ShiftWindow]:
        """Every shift occurrence that overlaps [start, end), clipped to it, in time order."""
        first = datetime.fromtimestamp(start, self.tz).date() - timedelta(days=1)
        last = datetime.fromtimestamp(end, self.tz).date()
        out: list[ShiftWindow] = []
        day = first
        while day <= last:
            for shift in self.shifts:
                if day.weekday() not in shift.weekdays:
                    continue
                s, e = _span(day, shift.start, shift.end, self.tz)
                s, e = max(s, start), min(e, end)
                if e <= s:
                    continue
                brk_s, brk_e = [], []
                for a, b in shift.breaks:
                    # A break belongs to the shift day unless it is after midnight in a night shift.
                    bday = day if a >= shift.start else day + timedelta(days=1)
                    bs, be = _span(bday, a, b, self.tz)
                    brk_s.append(bs)
                    brk_e.append(be)
                breaks = IntervalSet.from_intervals(brk_s, brk_e).intersect(IntervalSet.span(s, e))
                out.append(ShiftWindow(shift.name, day, s, e, breaks))
            day += timedelta(days=1)
        out.sort(key=lambda w: (w.start, w.name))
        return out

    def planned_operation_time(self, start: float, end: float) -> IntervalSet:
        """POT inside [start, end): the union of the shift windows."""
        wins = self.windows(start, end)
        return IntervalSet.from_intervals([w.start for w in wins], [w.end for w in wins])

    def planned_down_time(self, start: float, end: float) -> IntervalSet:
        """Breaks plus explicit planned downtime, limited to POT."""
        wins = self.windows(start, end)
        breaks = IntervalSet.empty()
        for w in wins:
            breaks = breaks.union(w.breaks)
        pot = self.planned_operation_time(start, end)
        return breaks.union(self.planned_downtime).intersect(pot)

    def planned_busy_time(self, start: float, end: float) -> IntervalSet:
        """PBT = POT minus planned down time."""
        return self.planned_operation_time(start, end).subtract(self.planned_down_time(start, end))

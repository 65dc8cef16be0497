"""The factory's shift calendar: shifts, breaks and working days, in UTC.

Times of day are seconds after midnight UTC; a shift may end after midnight (``end`` > 86400, e.g. a
night shift 22:00-06:00 is ``(79200, 108000)``). Shifts that touch merge into one *block* of planned
operation (two shifts 06:00-14:00 and 14:00-22:00 make one block); machines power on before a block
and off after it. Breaks are planned downtime inside a block. Days not in ``workdays`` (0 = Monday)
have no shifts: weekends off.
"""

from __future__ import annotations

__all__ = ["DEFAULT_CALENDAR", "Break", "CalendarState", "Shift", "ShiftCalendar"]

import bisect
from dataclasses import dataclass, field

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Shift:
    """A named shift, ``start`` and ``end`` in seconds after midnight UTC (``end`` > ``start``)."""

    name: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Break:
    """Planned downtime, seconds after midnight UTC (may be past 86400 for night shifts)."""

    start: float
    end: float


@dataclass(frozen=True, slots=True)
class CalendarState:
    """The calendar seen at one instant.

    ``to_start``: seconds until the next block starts (``inf`` if none within two days, 0 inside a
    block); ``since_end``: seconds since the last block ended (``inf`` if none, 0 inside a block).
    """

    in_block: bool
    in_break: bool
    to_start: float
    since_end: float


@dataclass(frozen=True)
class ShiftCalendar:
    """Shifts, breaks and working days; :meth:`state` answers for an epoch time in seconds."""

    shifts: tuple[Shift, ...]
    breaks: tuple[Break, ...] = ()
    workdays: frozenset[int] = frozenset({0, 1, 2, 3, 4})
    _cache: dict[int, tuple[list[float], list[float], list[float], list[float]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        errors = [
            f"shift {s.name!r}: end must be after start" for s in self.shifts if not s.end > s.start
        ]
        errors += [
            f"break {b.start}-{b.end}: end must be after start"
            for b in self.breaks
            if not b.end > b.start
        ]
        if errors:
            raise ValueError("; ".join(errors))

    def _intervals(self, day: int) -> tuple[list[float], list[float], list[float], list[float]]:
        """Merged blocks and breaks (absolute epoch seconds) for days ``day-2 .. day+2``."""
        hit = self._cache.get(day)
        if hit is not None:
            return hit
        raw: list[tuple[float, float]] = []
        brk: list[tuple[float, float]] = []
        for d in range(day - 2, day + 3):
            # 1970-01-01 was a Thursday: weekday = (d + 3) % 7 with Monday = 0.
            if (d + 3) % 7 not in self.workdays:
                continue
            base = d * DAY
            raw += [(base + s.start, base + s.end) for s in self.shifts]
            brk += [(base + b.start, base + b.end) for b in self.breaks]
        raw.sort()
        merged: list[list[float]] = []
        for a, b in raw:
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        brk.sort()
        out = (
            [m[0] for m in merged],
            [m[1] for m in merged],
            [b[0] for b in brk],
            [b[1] for b in brk],
        )
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[day] = out
        return out

    def state(self, t: float) -> CalendarState:
        """The calendar at epoch time ``t`` (seconds, UTC)."""
        starts, ends, bstarts, bends = self._intervals(int(t // DAY))
        i = bisect.bisect_right(starts, t) - 1
        in_block = i >= 0 and t < ends[i]
        j = bisect.bisect_right(bstarts, t) - 1
        in_break = in_block and j >= 0 and t < bends[j]
        if in_block:
            return CalendarState(True, in_break, 0.0, 0.0)
        to_start = starts[i + 1] - t if i + 1 < len(starts) else float("inf")
        since_end = t - ends[i] if i >= 0 else float("inf")
        return CalendarState(False, False, to_start, since_end)

    def planned_seconds(self, t0: float, t1: float) -> tuple[float, float]:
        """(block seconds, break seconds inside blocks) within ``[t0, t1)``."""
        block = brk = 0.0
        day = int(t0 // DAY)
        seen: set[tuple[float, float]] = set()
        seen_b: set[tuple[float, float]] = set()
        while day * DAY < t1 + DAY:
            starts, ends, bstarts, bends = self._intervals(day)
            for a, b in zip(starts, ends, strict=True):
                if (a, b) not in seen:
                    seen.add((a, b))
                    block += max(0.0, min(b, t1) - max(a, t0))
            for a, b in zip(bstarts, bends, strict=True):
                if (a, b) not in seen_b:
                    seen_b.add((a, b))
                    brk += max(0.0, min(b, t1) - max(a, t0))
            day += 5
        return block, brk


def _hm(text: str) -> float:
    h, m = text.split(":")
    return int(h) * 3600.0 + int(m) * 60.0


#: Two shifts Monday to Friday, 06:00-14:00 and 14:00-22:00 UTC, with four breaks.
DEFAULT_CALENDAR = ShiftCalendar(
    shifts=(Shift("early", _hm("06:00"), _hm("14:00")), Shift("late", _hm("14:00"), _hm("22:00"))),
    breaks=(
        Break(_hm("09:30"), _hm("09:45")),
        Break(_hm("12:00"), _hm("12:30")),
        Break(_hm("17:30"), _hm("17:45")),
        Break(_hm("20:00"), _hm("20:30")),
    ),
)

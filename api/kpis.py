"""ISO 22400-2 KPIs of one machine over a window, per window, shift or local day.

Inputs come from the ingest schema (events, the alarm view) and the site's calendar; the
classification and formulas are `analytics.oee` (docs/kpis.md). Pure: call through
`asyncio.to_thread`.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, Literal

import numpy as np

from analytics.calendar import Shift, ShiftCalendar
from analytics.intervals import IntervalSet
from analytics.oee import (
    TimeModel,
    classify_iso22400,
    counter_increments,
    iso22400_kpis,
    kpis_by_window,
)
from analytics.states import CONTROLLER_MODE, EXECUTION
from api.machines import SignalEvents, _coded, _masked, _status

__all__ = ["CalendarSpec", "Group", "fleet_oee", "oee_report", "program_spans"]

Group = Literal["window", "shift", "day", "program"]
NO_PROGRAM = "unknown"


@dataclass(frozen=True)
class CalendarSpec:
    """A site's calendar as stored: time zone, shifts (JSON) and planned downtime (seconds)."""

    time_zone: str
    shifts: list[dict[str, Any]]
    downtime: list[tuple[float, float]]

    def build(self) -> ShiftCalendar:
        tz = zoneinfo.ZoneInfo(self.time_zone)
        shifts = [
            Shift(
                name=s["name"],
                start=time.fromisoformat(s["start"]),
                end=time.fromisoformat(s["end"]),
                weekdays=frozenset(s.get("weekdays", range(7))),
                breaks=tuple(
                    (time.fromisoformat(a), time.fromisoformat(b)) for a, b in s.get("breaks", [])
                ),
            )
            for s in self.shifts
        ]
        downtime = IntervalSet.from_intervals(
            [a for a, _ in self.downtime], [b for _, b in self.downtime]
        )
        return ShiftCalendar(shifts=shifts, tz=tz, planned_downtime=downtime)


def program_spans(program: SignalEvents, *, start: float, until: float) -> dict[str, IntervalSet]:
    """When each program was selected in [start, until): a program holds from its event to the
    next one; time before the first event, and a null program, are `unknown`."""
    edges = np.concatenate([[start], np.clip(program.ts, start, until), [until]])
    names = [NO_PROGRAM, *[v or NO_PROGRAM for v in program.value]]
    spans: dict[str, tuple[list[float], list[float]]] = {}
    for k, name in enumerate(names):
        lo, hi = float(edges[k]), float(edges[k + 1])
        if hi > lo:
            a, b = spans.setdefault(name, ([], []))
            a.append(lo)
            b.append(hi)
    return {name: IntervalSet.from_intervals(a, b) for name, (a, b) in spans.items()}


def _increments(events: SignalEvents) -> tuple[np.ndarray, np.ndarray]:
    numeric = ~np.isnan(events.value_num)
    return counter_increments(events.ts[numeric], events.value_num[numeric])


def oee_report(
    execution: SignalEvents,
    status: SignalEvents,
    mode: SignalEvents,
    parts: SignalEvents,
    scrap: SignalEvents,
    faults: list[tuple[float, float]],
    calendar: CalendarSpec | None,
    manual_scrap: list[tuple[float, float]] | None = None,
    *,
    start: float,
    end: float,
    until: float,
    group: Group,
    ideal_cycle_time: float,
    program: SignalEvents | None = None,
) -> dict[str, Any]:
    """KPIs per group. Without a calendar every hour is planned (24/7, UTC days). With
    `group="program"`, one group per program selected in the window (`program` events).

    Scrap is the controller's part_count_bad increments plus `manual_scrap` (time, count)."""
    st = _status(status, start=start, end=end, until=until)
    ex = _masked(_coded(execution, EXECUTION, start=start, end=end, until=until), st)
    md = None
    if mode.ts.size:
        md = _masked(_coded(mode, CONTROLLER_MODE, start=start, end=end, until=until), st)
    fault = IntervalSet.from_intervals(
        [max(a, start) for a, b in faults if b > start],
        [min(b, end) for a, b in faults if b > start],
    )
    categories = classify_iso22400(ex, md, fault)
    window = IntervalSet.span(start, end)
    if calendar is None:
        cal = ShiftCalendar(shifts=[Shift("all day", time(0), time(0))])
        described = "none: every hour planned (24/7), days in UTC"
    else:
        cal = calendar.build()
        described = f"site calendar ({calendar.time_zone})"
    pot = cal.planned_operation_time(start, end) if calendar is not None else window
    pdt = cal.planned_down_time(start, end) if calendar is not None else IntervalSet.empty()
    windows: list[tuple[str, IntervalSet, IntervalSet]]
    if group == "window":
        windows = [("window", pot, pdt)]
    elif group == "program":
        if program is None:
            raise ValueError("group='program' needs the program events")
        windows = [
            (name, pot.intersect(span), pdt.intersect(span))
            for name, span in sorted(program_spans(program, start=start, until=until).items())
        ]
    elif group == "shift":
        windows = []
        for w in cal.windows(start, end):
            span = IntervalSet.span(w.start, w.end)
            windows.append((f"{w.day.isoformat()} {w.name}", span, pdt.intersect(span)))
    else:
        windows = []
        day = datetime.fromtimestamp(start, cal.tz).date()
        while True:
            lo = datetime.combine(day, time(0), tzinfo=cal.tz).timestamp()
            hi = datetime.combine(day + timedelta(days=1), time(0), tzinfo=cal.tz).timestamp()
            if lo >= end:
                break
            span = IntervalSet.span(max(lo, start), min(hi, end))
            windows.append((day.isoformat(), pot.intersect(span), pdt.intersect(span)))
            day += timedelta(days=1)
    part_t, part_n = _increments(parts)
    scrap_t, scrap_n = _increments(scrap)
    if manual_scrap:  # None or empty: none entered
        # Scrap entered by operators adds to the controller's bad-part counter.
        scrap_t = np.concatenate([scrap_t, [t for t, _ in manual_scrap]])
        scrap_n = np.concatenate([scrap_n, [n for _, n in manual_scrap]])
    kpis = kpis_by_window(
        categories,
        windows,
        part_times=part_t,
        parts=part_n,
        ideal_cycle_time=ideal_cycle_time,
        scrap_times=scrap_t,
        scrap=scrap_n,
    )
    groups = []
    for label, k in kpis.items():
        row = k.to_dict()
        row["label"] = label
        groups.append(row)
    convention = groups[0]["convention"] if groups else "ISO 22400-2"
    for row in groups:
        row.pop("convention", None)
    return {"convention": convention, "calendar": described, "groups": groups}


_TIME_FIELDS = ("POT", "planned_down_time", "PBT", "APT", "ASUT", "ADET", "ADOT", "unknown")


def fleet_oee(reports: list[dict[str, Any]], *, ideal_cycle_time: float) -> list[dict[str, Any]]:
    """The fleet's KPIs per group label: the machines' time models and quantities summed, then
    the ISO 22400-2 ratios computed on the sums (so availability = all APT / all PBT with data,
    a time-weighted mean, never a mean of ratios)."""
    sums: dict[str, dict[str, float]] = {}
    for report in reports:
        for g in report["groups"]:
            acc = sums.setdefault(
                g["label"],
                dict.fromkeys(
                    (*_TIME_FIELDS, "APT_outside_plan", "produced", "scrap", "machines"), 0.0
                ),
            )
            for name in (*_TIME_FIELDS, "APT_outside_plan"):
                acc[name] += g["time"][name]
            acc["produced"] += g["produced"]
            acc["scrap"] += g["scrap"]
            acc["machines"] += 1
    out = []
    for label in sorted(sums):
        acc = sums[label]
        tm = TimeModel(**{name: acc[name] for name in (*_TIME_FIELDS, "APT_outside_plan")})
        row = iso22400_kpis(
            tm, produced=acc["produced"], scrap=acc["scrap"], ideal_cycle_time=ideal_cycle_time
        ).to_dict()
        row.pop("convention", None)
        row["label"] = label
        row["machines"] = int(acc["machines"])
        out.append(row)
    return out

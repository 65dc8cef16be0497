"""Downtime for the Pareto: known time out of cycle, labelled by operator reasons where given.

Pure (numpy): call through `asyncio.to_thread`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analytics.cycles import pareto
from analytics.intervals import IntervalSet
from analytics.states import EXECUTION, UNKNOWN
from api.machines import SignalEvents, _coded, _masked, _status

__all__ = ["REASONS", "active_seconds", "downtime_pareto"]

#: Operator downtime reasons: code -> (label, planned). Planned reasons (a break) are the ones a
#: running machine most obviously contradicts; the guard refuses every reason on running time.
REASONS: dict[str, tuple[str, bool]] = {
    "break": ("Break", True),
    "meeting": ("Meeting or training", True),
    "setup": ("Setup / changeover", False),
    "tool_change": ("Tool change", False),
    "no_material": ("Waiting for material", False),
    "no_operator": ("No operator", False),
    "no_order": ("No order", True),
    "quality_check": ("Quality check", False),
    "maintenance": ("Maintenance", False),
    "breakdown": ("Breakdown", False),
    "program_edit": ("Program editing", False),
    "other": ("Other", False),
}


def active_seconds(
    execution: SignalEvents, status: SignalEvents, *, start: float, end: float, until: float
) -> float:
    """Seconds of [start, end) the machine was known ACTIVE (running a program)."""
    ex = _masked(
        _coded(execution, EXECUTION, start=start, end=end, until=until),
        _status(status, start=start, end=end, until=until),
    )
    return float(ex.durations()["ACTIVE"])


def downtime_pareto(
    execution: SignalEvents,
    status: SignalEvents,
    annotations: list[tuple[float, float, str]],
    *,
    start: float,
    end: float,
    until: float,
) -> dict[str, Any]:
    """Pareto of downtime (known, not ACTIVE) by operator reason, the rest by execution state."""
    ex = _masked(
        _coded(execution, EXECUTION, start=start, end=end, until=until),
        _status(status, start=start, end=end, until=until),
    )
    active = EXECUTION.index("ACTIVE")
    down_mask = (ex.code != UNKNOWN) & (ex.code != active)
    down = IntervalSet.from_intervals(ex.start[down_mask], ex.end[down_mask])
    labels: list[str] = []
    starts: list[float] = []
    ends: list[float] = []
    covered = IntervalSet.empty()
    for a, b, reason in annotations:
        piece = down.intersect(IntervalSet.span(max(a, start), min(b, end))) if b > a else None
        if piece is None:
            continue
        covered = covered.union(piece)
        for s, e in zip(piece.starts.tolist(), piece.ends.tolist(), strict=True):
            labels.append(reason)
            starts.append(s)
            ends.append(e)
    rest = down.subtract(covered)
    for k in np.nonzero(down_mask)[0].tolist():
        piece = rest.intersect(IntervalSet.span(float(ex.start[k]), float(ex.end[k])))
        for s, e in zip(piece.starts.tolist(), piece.ends.tolist(), strict=True):
            labels.append(f"unclassified: {EXECUTION[int(ex.code[k])]}")
            starts.append(s)
            ends.append(e)
    rows = pareto(labels, starts, ends) if labels else []
    return {
        "downtime_s": down.total,
        "classified_s": covered.total,
        "rows": [
            {
                "label": r.label,
                "seconds": r.seconds,
                "count": r.count,
                "share": r.share,
                "cumulative_share": r.cumulative_share,
            }
            for r in rows
        ],
    }

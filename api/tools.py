"""Tool life from counters: minutes in cut, parts and usages per tool since its last change, its
status against the engineer's limits, and a predicted change time. Pure: use `asyncio.to_thread`.

*In cut* is approximated by Execution ACTIVE while the tool is in the spindle (the signal-based
refinement, spindle load above a threshold, and the wear indicator come later).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analytics.oee import counter_increments
from analytics.states import EXECUTION
from analytics.tools import tool_life_status, tool_usage
from api.machines import SignalEvents, _coded, _masked, _status

__all__ = ["tool_report"]


def _usage(
    tools: SignalEvents,
    execution: SignalEvents,
    status: SignalEvents,
    parts: SignalEvents,
    *,
    start: float,
    end: float,
) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    names = (*sorted({str(int(v)) for v in tools.value_num if not np.isnan(v)}), "UNAVAILABLE")
    labelled = SignalEvents(
        ts=tools.ts,
        value=[None if np.isnan(v) else str(int(v)) for v in tools.value_num],
        value_num=tools.value_num,
    )
    tool = _coded(labelled, names, start=start, end=end, until=end)
    ex = _masked(
        _coded(execution, EXECUTION, start=start, end=end, until=end),
        _status(status, start=start, end=end, until=end),
    )
    in_cut = ex.where(["ACTIVE"])
    numeric = ~np.isnan(parts.value_num)
    pt, pn = counter_increments(parts.ts[numeric], parts.value_num[numeric])
    usage = tool_usage(tool, in_cut, part_times=pt, part_increments=pn)
    return usage.minutes_in_cut, usage.parts, usage.usages


def tool_report(
    tools: SignalEvents,
    execution: SignalEvents,
    status: SignalEvents,
    parts: SignalEvents,
    *,
    since: dict[int, float],
    default_since: float,
    now: float,
    rate_since: float,
    limits: dict[int, tuple[float, float]],
    current: int | None,
) -> list[dict[str, Any]]:
    """One row per tool seen since `default_since` or with a limit.

    `since[tool]` is the tool's last change (counters start there); `limits[tool]` its
    (limit, warning) in minutes in cut; the cutting rate for the prediction is the tool's minutes
    in cut per wall-clock hour since `rate_since`.
    """
    seen = {int(v) for v in tools.value_num if not np.isnan(v)}
    rows = []
    for tool in sorted(seen | set(limits)):
        start = since.get(tool, default_since)
        if now <= start:
            minutes, parts_made, usages = 0.0, 0.0, 0
        else:
            m, p, u = _usage(tools, execution, status, parts, start=start, end=now)
            key = str(tool)
            minutes, parts_made, usages = m.get(key, 0.0), p.get(key, 0.0), u.get(key, 0)
        rate_start = max(rate_since, start)
        rate = 0.0
        if now > rate_start:
            m, _, _ = _usage(tools, execution, status, parts, start=rate_start, end=now)
            rate = m.get(str(tool), 0.0) / ((now - rate_start) / 3600.0)
        row: dict[str, Any] = {
            "tool": tool,
            "in_spindle": tool == current,
            "since": start,
            "changed": tool in since,
            "minutes_in_cut": minutes,
            "parts": parts_made,
            "usages": usages,
            "cut_minutes_per_hour": rate,
            "limit_minutes": None,
            "warning_minutes": None,
            "status": None,
            "remaining_minutes": None,
            "used_fraction": None,
            "predicted_change_at": None,
        }
        if tool in limits:
            limit, warning = limits[tool]
            st = tool_life_status(minutes, warning, limit)
            remaining = float(st.remaining[0])
            row |= {
                "limit_minutes": limit,
                "warning_minutes": warning,
                "status": st.status[0],
                "remaining_minutes": remaining,
                "used_fraction": float(st.used_fraction[0]),
            }
            if remaining <= 0:
                row["predicted_change_at"] = now
            elif rate > 0:
                row["predicted_change_at"] = now + remaining / rate * 3600.0
        rows.append(row)
    return rows

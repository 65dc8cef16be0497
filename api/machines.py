"""Machine state from the ingest schema, turned into analytics inputs (numpy off the event loop).

Reads `event` (ingest/migrations/0002): execution, controller mode, program and part-count value
events and `status` changes (online / offline / unknown). Time while a machine is not online
(or before anything is known) counts as *unknown*, never as idle.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import numpy as np

from analytics.cycles import STATUS_WORDS, find_cycles
from analytics.intervals import IntervalSet
from analytics.oee import counter_increments, in_cycle_utilisation
from analytics.states import EXECUTION, UNKNOWN, StateIntervals, combine, state_intervals

__all__ = [
    "SignalEvents",
    "cycles_report",
    "fetch_signal",
    "machine_id",
    "utilisation_report",
]

_STATUS = ("online", "offline", "unknown")


@dataclass(frozen=True)
class SignalEvents:
    """One signal's events from the last one at or before the window start to its end."""

    ts: np.ndarray  # (n,) float seconds since the epoch
    value: list[str | None]
    value_num: np.ndarray  # (n,) float, NaN where not numeric


async def machine_id(conn: asyncpg.Connection, site: str, machine: str) -> int | None:
    value = await conn.fetchval(
        "SELECT id FROM machine WHERE site = $1 AND machine = $2", site, machine
    )
    return None if value is None else int(value)


async def fetch_signal(
    conn: asyncpg.Connection, mid: int, signal: str, start: datetime, end: datetime
) -> SignalEvents:
    """The signal's events in [start, end) plus the one in force at `start`."""
    rows = await conn.fetch(
        """(SELECT ts, value, value_num FROM event
             WHERE machine_id = $1 AND signal = $2 AND ts <= $3 ORDER BY ts DESC LIMIT 1)
           UNION ALL
           (SELECT ts, value, value_num FROM event
             WHERE machine_id = $1 AND signal = $2 AND ts > $3 AND ts < $4)
           ORDER BY ts""",
        mid,
        signal,
        start,
        end,
    )
    return SignalEvents(
        ts=np.array([r["ts"].timestamp() for r in rows], dtype=np.float64),
        value=[r["value"] for r in rows],
        value_num=np.array(
            [np.nan if r["value_num"] is None else r["value_num"] for r in rows], dtype=np.float64
        ),
    )


def _coded(
    events: SignalEvents, vocabulary: tuple[str, ...], *, start: float, end: float, until: float
) -> StateIntervals:
    index = {w: k for k, w in enumerate(vocabulary)}
    fallback = index.get("UNAVAILABLE", index.get("unknown", 0))
    codes = np.array([index.get(v or "", fallback) for v in events.value], dtype=np.int64)
    return state_intervals(
        events.ts,
        codes,
        vocabulary,
        start=start,
        end=end,
        until=until,
        unknown=("UNAVAILABLE", "offline", "unknown"),
    )


def _masked(states: StateIntervals, status: StateIntervals | None) -> StateIntervals:
    """`states` with every moment the machine was not online turned unknown."""
    if status is None:
        return states
    starts, ends, codes = combine(states, status)
    code = np.where(codes[1] == UNKNOWN, UNKNOWN, codes[0])
    return StateIntervals(start=starts, end=ends, code=code, vocabulary=states.vocabulary)


def _status(
    events: SignalEvents, *, start: float, end: float, until: float
) -> StateIntervals | None:
    # Machines that never reported a status (e.g. data imported without one) are not masked.
    if events.ts.size == 0:
        return None
    return _coded(events, _STATUS, start=start, end=end, until=until)


def utilisation_report(
    execution: SignalEvents, status: SignalEvents, *, start: float, end: float, until: float
) -> dict[str, Any]:
    """Seconds per Execution value seen in the window, unknown seconds, in-cycle utilisation."""
    ex = _coded(execution, EXECUTION, start=start, end=end, until=until)
    ex = _masked(ex, _status(status, start=start, end=end, until=until))
    durations = ex.durations()
    unknown = durations.pop("unknown")
    util = in_cycle_utilisation(ex, IntervalSet.span(start, end))
    return {
        "states": {w: s for w, s in durations.items() if s > 0},
        "unknown_s": unknown,
        "known_s": util.known,
        "utilisation": util.utilisation,
        "convention": util.convention + " (ACTIVE)",
    }


def cycles_report(
    execution: SignalEvents,
    status: SignalEvents,
    program: SignalEvents,
    parts: SignalEvents,
    *,
    start: float,
    end: float,
    until: float,
) -> list[dict[str, Any]]:
    """Cycles (ACTIVE ... PROGRAM_COMPLETED, interrupted or still open) with program and parts."""
    ex = _coded(execution, EXECUTION, start=start, end=end, until=until)
    ex = _masked(ex, _status(status, start=start, end=end, until=until))
    # A program event without a value (null) means "no program known": UNAVAILABLE, so unknown.
    names = (*sorted({v for v in program.value if v and v != "UNAVAILABLE"}), "UNAVAILABLE")
    pg = _coded(program, names, start=start, end=end, until=until)
    numeric = ~np.isnan(parts.value_num)
    part_t, part_inc = counter_increments(parts.ts[numeric], parts.value_num[numeric])
    cycles = find_cycles(ex, pg, part_times=part_t, part_increments=part_inc)
    return [
        {
            "program": names[p] if p >= 0 else None,
            "start": float(s),
            "end": float(e),
            "duration_s": float(e - s),
            "active_s": float(a),
            "paused_s": float(z),
            "parts": float(n),
            "status": STATUS_WORDS[k],
        }
        for s, e, p, k, a, z, n in zip(
            cycles.start,
            cycles.end,
            cycles.program,
            cycles.status,
            cycles.active_time,
            cycles.paused_time,
            cycles.parts,
            strict=True,
        )
    ]

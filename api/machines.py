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

from analytics.cycles import STATUS_WORDS, Cycles, cycle_stats, find_cycles
from analytics.intervals import IntervalSet
from analytics.oee import counter_increments, in_cycle_utilisation, time_by_key
from analytics.states import EXECUTION, UNKNOWN, StateIntervals, combine, state_intervals

__all__ = [
    "STATUS_SQL",
    "SignalEvents",
    "cycles_report",
    "fetch_fleet_signal",
    "fetch_signal",
    "fleet_utilisation_report",
    "machine_id",
    "program_stats_report",
    "utilisation_report",
]

_STATUS = ("online", "offline", "unknown")

#: Every machine with its live status (`status`, latest execution and since when, mode, program,
#: part count and the number of open alarms); callers append WHERE / ORDER BY on `m`.
_LATEST = """(SELECT {col} FROM event e WHERE e.machine_id = m.id AND e.signal = '{signal}'
              ORDER BY e.ts DESC LIMIT 1)"""

#: When the latest execution value began: the first of the trailing run of events with that
#: value (a birth snapshot repeating the value does not restart it). Two index probes on
#: event (machine_id, signal, ts DESC).
_EXECUTION_SINCE = """(SELECT min(e.ts) FROM event e
      WHERE e.machine_id = m.id AND e.signal = 'execution'
        AND e.ts > coalesce((SELECT max(d.ts) FROM event d
                              WHERE d.machine_id = m.id AND d.signal = 'execution'
                                AND d.ts < ex.ts AND d.value IS DISTINCT FROM ex.value),
                            '-infinity'))"""

STATUS_SQL = f"""
SELECT m.site, m.machine, m.status, m.online, m.last_seen, m.status_since,
       ex.value AS execution,
       {_EXECUTION_SINCE} AS execution_since,
       {_LATEST.format(col="value", signal="controller_mode")} AS mode,
       {_LATEST.format(col="value", signal="program")} AS program,
       {_LATEST.format(col="value_num", signal="part_count")} AS part_count,
       (SELECT count(*) FROM alarm a WHERE a.machine_id = m.id AND a.closed_at IS NULL)::int
           AS active_alarms
  FROM machine m
  LEFT JOIN LATERAL (SELECT e.value, e.ts FROM event e
                      WHERE e.machine_id = m.id AND e.signal = 'execution'
                      ORDER BY e.ts DESC LIMIT 1) ex ON true"""  # noqa: S608 (constant fragments only)


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


async def fetch_fleet_signal(
    conn: asyncpg.Connection, ids: list[int], signal: str, start: datetime, end: datetime
) -> dict[int, SignalEvents]:
    """`fetch_signal` for many machines in two queries; machines without events are absent."""
    rows = await conn.fetch(
        """SELECT m.id AS machine_id, e.ts, e.value, e.value_num
             FROM unnest($1::int[]) AS m(id)
             CROSS JOIN LATERAL (SELECT ts, value, value_num FROM event
                                  WHERE machine_id = m.id AND signal = $2 AND ts <= $3
                                  ORDER BY ts DESC LIMIT 1) e
           UNION ALL
           SELECT machine_id, ts, value, value_num FROM event
            WHERE machine_id = ANY($1::int[]) AND signal = $2 AND ts > $3 AND ts < $4
           ORDER BY machine_id, ts""",
        ids,
        signal,
        start,
        end,
    )
    grouped: dict[int, list[Any]] = {}
    for r in rows:
        grouped.setdefault(r["machine_id"], []).append(r)
    return {
        mid: SignalEvents(
            ts=np.array([r["ts"].timestamp() for r in rs], dtype=np.float64),
            value=[r["value"] for r in rs],
            value_num=np.array(
                [np.nan if r["value_num"] is None else r["value_num"] for r in rs],
                dtype=np.float64,
            ),
        )
        for mid, rs in grouped.items()
    }


EMPTY = SignalEvents(ts=np.zeros(0), value=[], value_num=np.zeros(0))


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


def _program_stream(
    program: SignalEvents, *, start: float, end: float, until: float
) -> StateIntervals:
    # A program event without a value (null) means "no program known": UNAVAILABLE, so unknown.
    names = (*sorted({v for v in program.value if v and v != "UNAVAILABLE"}), "UNAVAILABLE")
    return _coded(program, names, start=start, end=end, until=until)


def utilisation_report(
    execution: SignalEvents,
    status: SignalEvents,
    *,
    start: float,
    end: float,
    until: float,
    program: SignalEvents | None = None,
) -> dict[str, Any]:
    """Seconds per Execution value seen in the window, unknown seconds, in-cycle utilisation;
    with `program`, also seconds per state for each program (`by_program`)."""
    ex = _coded(execution, EXECUTION, start=start, end=end, until=until)
    ex = _masked(ex, _status(status, start=start, end=end, until=until))
    durations = ex.durations()
    unknown = durations.pop("unknown")
    util = in_cycle_utilisation(ex, IntervalSet.span(start, end))
    report: dict[str, Any] = {
        "states": {w: s for w, s in durations.items() if s > 0},
        "unknown_s": unknown,
        "known_s": util.known,
        "utilisation": util.utilisation,
        "convention": util.convention + " (ACTIVE)",
    }
    if program is not None:
        table = time_by_key(ex, _program_stream(program, start=start, end=end, until=until))
        report["by_program"] = {
            name: {
                "states": {w: s for w, s in row.items() if w != "unknown"},
                "unknown_s": row.get("unknown", 0.0),
            }
            for name, row in table.items()
        }
    return report


def _cycles(
    execution: SignalEvents,
    status: SignalEvents,
    program: SignalEvents,
    parts: SignalEvents,
    *,
    start: float,
    end: float,
    until: float,
) -> Cycles:
    ex = _coded(execution, EXECUTION, start=start, end=end, until=until)
    ex = _masked(ex, _status(status, start=start, end=end, until=until))
    pg = _program_stream(program, start=start, end=end, until=until)
    numeric = ~np.isnan(parts.value_num)
    part_t, part_inc = counter_increments(parts.ts[numeric], parts.value_num[numeric])
    return find_cycles(ex, pg, part_times=part_t, part_increments=part_inc)


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
    cycles = _cycles(execution, status, program, parts, start=start, end=end, until=until)
    return [
        {
            "program": cycles.programs[p] if p >= 0 else None,
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


def program_stats_report(
    execution: SignalEvents,
    status: SignalEvents,
    program: SignalEvents,
    parts: SignalEvents,
    *,
    start: float,
    end: float,
    until: float,
    measure: str,
) -> list[dict[str, Any]]:
    """Cycle-time statistics per program over completed cycles; outliers as cycle start times."""
    cycles = _cycles(execution, status, program, parts, start=start, end=end, until=until)
    out = []
    for stats in cycle_stats(cycles, measure=measure).values():
        row = stats.to_dict()
        row["outliers"] = [float(cycles.start[k]) for k in stats.outliers]
        out.append(row)
    return out


def fleet_utilisation_report(
    machines: list[tuple[SignalEvents, SignalEvents]], *, start: float, end: float, until: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`utilisation_report` per machine (execution, status) and the fleet's totals."""
    rows = [utilisation_report(ex, st, start=start, end=end, until=until) for ex, st in machines]
    states: dict[str, float] = {}
    for r in rows:
        for word, seconds in r["states"].items():
            states[word] = states.get(word, 0.0) + seconds
    known = sum(r["known_s"] for r in rows)
    fleet = {
        "states": states,
        "unknown_s": sum(r["unknown_s"] for r in rows),
        "known_s": known,
        "utilisation": states.get("ACTIVE", 0.0) / known if known > 0 else None,
    }
    return rows, fleet

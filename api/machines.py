"""Machine state from the ingest schema, turned into analytics inputs (numpy off the event loop).

Reads `event` (ingest/migrations/0002): execution, controller mode, program and part-count value
events and `status` changes (online / offline / unknown); live status from `event_latest` (0004).
Time while a machine is not online (or before anything is known) counts as *unknown*, never as
idle.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
import orjson

from analytics.cycles import STATUS_WORDS, Cycles, cycle_stats, find_cycles
from analytics.intervals import IntervalSet
from analytics.oee import Utilisation, counter_increments, in_cycle_utilisation, time_by_key
from analytics.states import (
    CONTROLLER_MODE,
    EXECUTION,
    UNKNOWN,
    StateIntervals,
    combine,
    state_intervals,
)

__all__ = [
    "ALARMS_SQL",
    "BORN",
    "STATUS_SQL",
    "UTILISATION_CONVENTION",
    "SignalEvents",
    "cycles_report",
    "fetch_fleet_signal",
    "fetch_signal",
    "fleet_state_seconds",
    "fleet_states_report",
    "machine_id",
    "machine_state_seconds",
    "program_stats_report",
    "utilisation_report",
]

_STATUS = ("online", "offline", "unknown")

#: The machine's latest birth (`born.at`, null without sessions): alarms are counted from it, as
#: after a birth the producer sends every event signal again, active conditions included
#: (docs/protocol.md).
BORN = "SELECT max(born_at) AS at FROM machine_session s WHERE s.machine_id = {machine}"

#: The open alarms of machine `{machine}` born at `{born}` from `event_latest` (migration
#: 0004): conditions whose latest event is WARNING / FAULT, of the current session, not cleared
#: by a later clear-all (NORMAL / UNAVAILABLE with an empty code) of their component.
OPEN_ALARMS = """event_latest c
 WHERE c.machine_id = {machine} AND c.signal = 'condition' AND c.level IN ('WARNING', 'FAULT')
   AND c.ts >= coalesce({born}, '-infinity')
   AND NOT EXISTS (SELECT 1 FROM event_latest z
                    WHERE z.machine_id = c.machine_id AND z.signal = 'condition'
                      AND z.component = c.component AND z.code = ''
                      AND z.level IN ('NORMAL', 'UNAVAILABLE') AND z.ts > c.ts)"""

_BORN_OF_C = f"({BORN.format(machine='c.machine_id')})"

_LATEST = """LEFT JOIN event_latest {alias} ON {alias}.machine_id = m.id
      AND {alias}.signal = '{signal}' AND {alias}.component = '' AND {alias}.code = ''"""

#: Every machine with its live status (`status`, latest execution and since when it holds, mode,
#: program, part count and the number of open alarms), read from `machine` and `event_latest`:
#: a few primary-key probes per machine. Callers append WHERE / ORDER BY on `m`.
STATUS_SQL = f"""
SELECT m.site, m.machine, m.status, m.online, m.last_seen, m.status_since,
       ex.value AS execution, ex.since AS execution_since, mo.value AS mode,
       pg.value AS program, pc.value_num AS part_count,
       coalesce(al.n, 0)::int AS active_alarms
  FROM machine m
  {_LATEST.format(alias="ex", signal="execution")}
  {_LATEST.format(alias="mo", signal="controller_mode")}
  {_LATEST.format(alias="pg", signal="program")}
  {_LATEST.format(alias="pc", signal="part_count")}
  LEFT JOIN (SELECT c.machine_id, count(*) AS n
               FROM {OPEN_ALARMS.format(machine="c.machine_id", born=_BORN_OF_C)}
              GROUP BY c.machine_id) al ON al.machine_id = m.id"""  # noqa: S608 (constant fragments only)

#: One machine's open alarms (`$1` = its id): `opened_at` is when the condition took its level,
#: or its first restatement in the current session when it began in an earlier one.
ALARMS_SQL = f"""
SELECT nullif(c.component, '') AS component, c.code, c.level, c.message AS text,
       CASE WHEN born.at IS NULL OR c.since >= born.at THEN c.since
            ELSE (SELECT min(e.ts) FROM event e
                   WHERE e.machine_id = c.machine_id AND e.signal = 'condition'
                     AND coalesce(e.component, '') = c.component
                     AND coalesce(e.code, '') = c.code AND e.ts >= born.at) END AS opened_at
  FROM ({BORN.format(machine="$1")}) born, {OPEN_ALARMS.format(machine="$1", born="born.at")}
 ORDER BY opened_at"""  # noqa: S608 (constant fragments only)


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


def _signal_events(
    ts: list[float] | None, value: list[Any] | None, num: list[Any] | None
) -> SignalEvents:
    return SignalEvents(
        ts=np.array(ts or [], dtype=np.float64),
        value=list(value or []),
        value_num=np.array(num or [], dtype=np.float64),  # None -> NaN
    )


#: One signal's events as three arrays (epoch seconds, text, number) per machine: arrays cross
#: the wire and become numpy in C, where rows would cost a Python object each (the fleet's day
#: is some 300,000 events for 1,000 machines).
_ARRAYS = """array_agg(extract(epoch FROM ts)::float8 ORDER BY ts) AS ts,
             array_agg(value ORDER BY ts) AS value, array_agg(value_num ORDER BY ts) AS num"""


async def fetch_signal(
    conn: asyncpg.Connection, mid: int, signal: str, start: datetime, end: datetime
) -> SignalEvents:
    """The signal's events in [start, end) plus the one in force at `start`."""
    row = await conn.fetchrow(
        f"""SELECT {_ARRAYS} FROM (
             (SELECT ts, value, value_num FROM event
               WHERE machine_id = $1 AND signal = $2 AND ts <= $3 ORDER BY ts DESC LIMIT 1)
             UNION ALL
             (SELECT ts, value, value_num FROM event
               WHERE machine_id = $1 AND signal = $2 AND ts > $3 AND ts < $4)) e""",  # noqa: S608
        mid,
        signal,
        start,
        end,
    )
    assert row is not None  # an aggregate always answers one row
    return _signal_events(row["ts"], row["value"], row["num"])


async def fetch_fleet_signal(
    conn: asyncpg.Connection, ids: list[int], signal: str, start: datetime, end: datetime
) -> dict[int, SignalEvents]:
    """`fetch_signal` for many machines in one query; machines without events are absent."""
    rows = await conn.fetch(
        f"""SELECT machine_id, {_ARRAYS} FROM (
             SELECT m.id AS machine_id, e.ts, e.value, e.value_num
               FROM unnest($1::int[]) AS m(id)
               CROSS JOIN LATERAL (SELECT ts, value, value_num FROM event
                                    WHERE machine_id = m.id AND signal = $2 AND ts <= $3
                                    ORDER BY ts DESC LIMIT 1) e
             UNION ALL
             SELECT machine_id, ts, value, value_num FROM event
              WHERE machine_id = ANY($1::int[]) AND signal = $2 AND ts > $3 AND ts < $4) x
           GROUP BY machine_id""",  # noqa: S608
        ids,
        signal,
        start,
        end,
    )
    return {r["machine_id"]: _signal_events(r["ts"], r["value"], r["num"]) for r in rows}


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


_ACTIVE = EXECUTION.index("ACTIVE")
_READY = EXECUTION.index("READY")
#: Controller modes in which ACTIVE is not production (ISO 22400-2: setup time, ASUT).
_NOT_PRODUCTION = [CONTROLLER_MODE.index(w) for w in ("MANUAL", "MANUAL_DATA_INPUT", "EDIT")]


def _production(ex: StateIntervals, mode: StateIntervals) -> StateIntervals:
    """`ex` with ACTIVE in a manual mode (a prove-out in MDI, jogging) read as READY, so that a
    cycle is ACTIVE in AUTOMATIC (or SEMI_AUTOMATIC, or with the mode unknown): the same line the
    OEE draws between APT and ASUT. A prove-out running straight into the first automatic cycle
    starts that cycle at the switch to AUTOMATIC."""
    starts, ends, codes = combine(ex, mode)
    manual = (codes[0] == _ACTIVE) & np.isin(codes[1], _NOT_PRODUCTION)
    code = np.where(manual, _READY, codes[0])
    return StateIntervals(start=starts, end=ends, code=code, vocabulary=ex.vocabulary)


def _cycles(
    execution: SignalEvents,
    status: SignalEvents,
    program: SignalEvents,
    parts: SignalEvents,
    mode: SignalEvents | None = None,
    *,
    start: float,
    end: float,
    until: float,
) -> Cycles:
    ex = _coded(execution, EXECUTION, start=start, end=end, until=until)
    ex = _masked(ex, _status(status, start=start, end=end, until=until))
    if mode is not None and mode.ts.size:
        ex = _production(ex, _coded(mode, CONTROLLER_MODE, start=start, end=end, until=until))
    pg = _program_stream(program, start=start, end=end, until=until)
    numeric = ~np.isnan(parts.value_num)
    part_t, part_inc = counter_increments(parts.ts[numeric], parts.value_num[numeric])
    return find_cycles(ex, pg, part_times=part_t, part_increments=part_inc)


def cycles_report(
    execution: SignalEvents,
    status: SignalEvents,
    program: SignalEvents,
    parts: SignalEvents,
    mode: SignalEvents | None = None,
    *,
    start: float,
    end: float,
    until: float,
) -> list[dict[str, Any]]:
    """Cycles (ACTIVE ... PROGRAM_COMPLETED, interrupted or still open) with program and parts;
    with `mode`, ACTIVE in a manual mode is not a cycle (`_production`)."""
    cycles = _cycles(execution, status, program, parts, mode, start=start, end=end, until=until)
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
    mode: SignalEvents | None = None,
    *,
    start: float,
    end: float,
    until: float,
    measure: str,
) -> list[dict[str, Any]]:
    """Cycle-time statistics per program over completed cycles; outliers as cycle start times."""
    cycles = _cycles(execution, status, program, parts, mode, start=start, end=end, until=until)
    out = []
    for stats in cycle_stats(cycles, measure=measure).values():
        row = stats.to_dict()
        row["outliers"] = [float(cycles.start[k]) for k in stats.outliers]
        out.append(row)
    return out


#: The utilisation routes' convention, as `utilisation_report` names it.
UTILISATION_CONVENTION = (
    str(next(f.default for f in dataclasses.fields(Utilisation) if f.name == "convention"))
    + " (ACTIVE)"
)
#: Execution words that are known states, coded 1.. in SQL (0: UNAVAILABLE, null, not a word).
KNOWN_EXECUTION = tuple(w for w in EXECUTION if w != "UNAVAILABLE")

#: Microseconds per known Execution state per machine in [$2, $5) with the horizon $6, as one
#: JSON object per machine in vocabulary order ($7): the partial hour [$2, $3) and [$4, $5)
#: from events, the whole hours [$3, $4) from `state_hour` (kept by ingest's job) except for
#: machines with a late event not yet redone ($8, from `state_hour_dirty`: computed from events;
#: a parameter, not a sub-select, so that PostgreSQL inlines that state_seconds() call into the
#: prepared plan: called with a sub-select it was planned anew on every execution, some 10 ms
#: per request even with no machine marked). The
#: masking is applied on the summed rows: a machine with status events is unknown while not
#: online (false) and before its first status event (null); one without any is not masked (as
#: `_status` in Python). Whole microseconds add up exactly, wherever the window is split.
_STATES_SQL_OF = """
WITH p AS (
    SELECT machine_id AS id, execution, online, us FROM state_seconds($1::int[], $2, $3, $3, false)
     WHERE $2 < $3
    UNION ALL
    SELECT h.machine_id, h.execution, h.online, h.us FROM state_hour h
     WHERE h.machine_id = ANY($1::int[]) AND h.hour >= $3 AND h.hour < $4
{not_marked}
    UNION ALL{marked}
    SELECT machine_id, execution, online, us FROM state_seconds($1::int[], $4, $5, $6, false)
     WHERE $4 < $5
), s AS (
    SELECT id, execution, online, sum(us) AS us,
           bool_or(bool_or(online IS NOT NULL)) OVER (PARTITION BY id) AS masked
      FROM p GROUP BY 1, 2, 3
), k AS (
    SELECT id, execution, sum(us)::bigint AS us FROM s
     WHERE execution IS NOT NULL AND (online OR NOT masked)
     GROUP BY 1, 2
)
SELECT id, json_object_agg(execution, us ORDER BY array_position($7::text[], execution)) AS us
  FROM k GROUP BY id"""
#: with no machine marked (the usual case) the marked machines' branch is left out altogether
#: (and $8 with it): even when it reads nothing, its scans over every `event` chunk are started
#: and excluded on each execution of the generic plan.
_STATES_SQL = {
    True: _STATES_SQL_OF.format(
        not_marked="\n       AND h.machine_id <> ALL($8::int[])",
        marked="""
    SELECT machine_id, execution, online, us FROM state_seconds($8::int[], $3, $4, $4, false)
     WHERE $3 < $4
    UNION ALL""",
    ),
    False: _STATES_SQL_OF.format(not_marked="", marked=""),
}

#: The stored hours' range (nulls before the job's first run) and the machines of $1 marked by
#: late events, with each one's earliest marked hour; sets plan_cache_mode to $2 for the
#: transaction.
_SPAN_SQL = """
SELECT set_config('plan_cache_mode', $2, true) AS mode,
       (SELECT lo FROM state_range) AS lo, (SELECT hi FROM state_range) AS hi,
       array_agg(d.machine_id ORDER BY d.machine_id) AS marked,
       array_agg(d.first ORDER BY d.machine_id) AS first
  FROM (SELECT machine_id, min(hour) AS first FROM state_hour_dirty
         WHERE machine_id = ANY($1::int[]) GROUP BY 1) d"""

#: One machine's seconds in one call, for the usual case (migration 0104); `ok` false: use
#: _STATES_SQL.
_ONE_SQL = "SELECT ok, us FROM api_machine_seconds($1, $2, $3, $4, $5::text[])"

#: The same by name (`site`, `machine`) for a key seeing `sites` (null: every site), with the
#: machine's id: the route's lookup and the seconds in one round trip. No row: no such machine
#: for this key (the caller's lookup says which error).
_ONE_BY_NAME_SQL = """
SELECT m.id, f.ok, f.us FROM machine m
  LEFT JOIN LATERAL api_machine_seconds(m.id, $4, $5, $6, $7::text[]) f ON true
 WHERE m.site = $1 AND m.machine = $2 AND ($3::text[] IS NULL OR m.site = ANY($3::text[]))"""

_HOUR = timedelta(hours=1)


def _floor_hour(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


async def fleet_state_seconds(
    conn: asyncpg.Connection, ids: list[int], start: datetime, end: datetime, until: datetime
) -> dict[int, dict[str, float]]:
    """Seconds per known Execution state per machine (in vocabulary order; machines without any
    are absent), in one query: whole hours inside the window that ingest's job has stored
    (`state_range`) from `state_hour`, the rest from `event` (_STATES_SQL).

    The stored range, the marks and the seconds are read in one snapshot (a repeatable-read
    transaction), so a machine marked by a late event between the reads is never counted from
    neither or both.

    One machine: first `api_machine_seconds()` (migration 0104), the same computation for the
    usual case in one call (one snapshot, no transaction, a plan that starts only the chunk
    scans its edges need); it says when this query must answer instead."""
    if len(ids) == 1:
        row = await conn.fetchrow(_ONE_SQL, ids[0], start, end, until, list(KNOWN_EXECUTION))
        if row is not None and row["ok"]:
            return {ids[0]: _seconds(row["us"])} if row["us"] is not None else {}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        # One machine: PostgreSQL kept re-planning the prepared statement for each call's
        # values (custom plans, ~2.5 ms of planning, more than the plan's execution), and the
        # generic plan, with TimescaleDB's chunk exclusion at run time, is as good. The fleet's
        # plan does depend on the values (generic: 175-190 ms against 120-150). Set for this
        # transaction by the range's query itself: a round trip less.
        mode = "force_generic_plan" if len(ids) == 1 else "auto"
        span = await conn.fetchrow(_SPAN_SQL, ids, mode)
        assert span is not None  # an aggregate always answers one row
        a = _floor_hour(start)
        a = a if a == start else a + _HOUR
        b = _floor_hour(until)
        if span["lo"] is not None:
            a, b = max(a, span["lo"]), min(b, span["hi"])
        if span["lo"] is None or a >= b:
            a = b = start  # nothing stored inside the window: all of it from events
        # Machines with a mark before the stored hours' end: their hours from events.
        dirty = [m for m, first in zip(span["marked"] or [], span["first"] or [], strict=True)
                 if first < b]  # fmt: skip
        args = [ids, start, a, b, end, until, list(KNOWN_EXECUTION)]
        rows = await conn.fetch(_STATES_SQL[bool(dirty)], *args, *([dirty] if dirty else []))
    return {r["id"]: _seconds(r["us"]) for r in rows}


async def machine_state_seconds(
    conn: asyncpg.Connection,
    site: str,
    machine: str,
    sites: list[str] | None,
    start: datetime,
    end: datetime,
    until: datetime,
) -> tuple[int, dict[str, float] | None] | None:
    """Machine `site:machine`'s id and, when api_machine_seconds() could answer, its seconds per
    state (`fleet_state_seconds` for one machine), in one statement; None when no such machine
    is visible to a key seeing `sites` (None: all)."""
    row = await conn.fetchrow(
        _ONE_BY_NAME_SQL, site, machine, sites, start, end, until, list(KNOWN_EXECUTION)
    )
    if row is None:
        return None
    if not row["ok"]:
        return int(row["id"]), None
    return int(row["id"]), _seconds(row["us"]) if row["us"] is not None else {}


def _seconds(us: Any) -> dict[str, float]:
    """Microseconds per state (a JSON object) in seconds."""
    if isinstance(us, str):  # a connection without the API's json codec (api.app)
        us = orjson.loads(us)
    return {w: n / 1e6 for w, n in us.items()}


def fleet_states_report(
    ids: list[int], seconds: dict[int, dict[str, float]], *, start: float, end: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per machine (one row per id) and for the fleet: `utilisation_report`'s figures from
    `fleet_state_seconds`."""
    rows: list[dict[str, Any]] = []
    for i in ids:
        states = {w: s for w, s in seconds.get(i, {}).items() if s > 0}  # in vocabulary order
        known = sum(states.values())
        rows.append(
            {
                "states": states,
                "unknown_s": (end - start) - known,
                "known_s": known,
                "utilisation": states.get("ACTIVE", 0.0) / known if known > 0 else None,
                "convention": UTILISATION_CONVENTION,
            }
        )
    totals: dict[str, float] = {}
    for r in rows:
        for word, s in r["states"].items():
            totals[word] = totals.get(word, 0.0) + s
    known = sum(r["known_s"] for r in rows)
    fleet = {
        "states": totals,
        "unknown_s": sum(r["unknown_s"] for r in rows),
        "known_s": known,
        "utilisation": totals.get("ACTIVE", 0.0) / known if known > 0 else None,
    }
    return rows, fleet

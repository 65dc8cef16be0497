"""Machines: the fleet with live status, one machine's detail, utilisation and cycles."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import asyncpg
import orjson
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from api.deps import AnyRole, Api, Conn, MachinePath, MachineRef, connection, resolve_machine
from api.errors import AUTHENTICATED, InvalidInputError, UnavailableError, error_responses
from api.kpis import CalendarSpec, Group, fleet_oee, oee_report
from api.machines import (
    ALARMS_SQL,
    STATUS_SQL,
    UTILISATION_CONVENTION,
    cycles_report,
    fetch_signal,
    fleet_state_seconds,
    fleet_states_report,
    machine_id,
    machine_state_seconds,
    program_stats_report,
    utilisation_report,
)
from api.telemetry import downsample, machine_and_watermarks, plan, wide_signal
from api.window import From, To, window_bounds

__all__ = ["router"]

router = APIRouter(tags=["machines"], responses=AUTHENTICATED)


class MachineStatus(BaseModel):
    site: str
    machine: str
    status: Literal["online", "offline", "unknown"] = Field(
        description="unknown: silent longer than ingest's timeout, or never heard from"
    )
    online: bool
    last_seen: datetime | None
    status_since: datetime | None
    execution: str | None
    execution_since: datetime | None = Field(
        description="when the latest execution value began (time in state = now - this)"
    )
    mode: str | None
    program: str | None
    part_count: float | None
    active_alarms: int


class ActiveAlarm(BaseModel):
    component: str | None
    code: str | None
    level: str | None
    text: str | None
    opened_at: datetime


class MachineDetail(MachineStatus):
    controller: dict[str, Any]
    first_seen: datetime
    session: str | None
    alarms: list[ActiveAlarm]


@router.get("/machines", response_model=list[MachineStatus])
async def list_machines(
    request: Request,
    principal: AnyRole,
    api: Api,
    site: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")] = None,
) -> Response:
    """Every machine the key may see, with its live status, ordered by site and machine.

    Answered from a fleet snapshot at most `api_list_cache_s` old (1 s by default), with an
    ETag: a client sending it back in If-None-Match gets 304 while nothing changed."""
    assert api.fleet_list is not None
    try:
        snapshot = await api.fleet_list.snapshot(api.pool, api.settings.api_db_timeout_s)
    except (OSError, asyncpg.CannotConnectNowError, TimeoutError) as exc:
        raise UnavailableError(
            f"the database is unreachable: {exc}", code="database_unavailable"
        ) from exc
    sites = None if principal.sites is None else tuple(sorted(principal.sites))
    body, etag = snapshot.body(site, sites)
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers={"ETag": etag})
    return Response(body, media_type="application/json", headers={"ETag": etag})


@router.get(
    "/machines/{machine}", response_model=MachineDetail, responses=error_responses(404, 409)
)
async def get_machine(principal: AnyRole, conn: Conn, machine: MachinePath) -> MachineDetail:
    """One machine: live status, controller, session and its active alarms."""
    ref = await resolve_machine(conn, principal, machine)
    row = await conn.fetchrow(
        STATUS_SQL.replace(
            "SELECT m.site,", "SELECT m.controller, m.first_seen, m.session, m.site,"
        )
        + " WHERE m.site = $1 AND m.machine = $2",
        ref.site,
        ref.machine,
    )
    assert row is not None
    alarms = await conn.fetch(ALARMS_SQL, await _mid(conn, ref))
    return MachineDetail(**dict(row), alarms=[ActiveAlarm(**dict(a)) for a in alarms])


class ProgramTime(BaseModel):
    states: dict[str, float]
    unknown_s: float


class Utilisation(BaseModel):
    site: str
    machine: str
    from_: datetime = Field(alias="from")
    to: datetime
    states: dict[str, float] = Field(description="seconds per Execution value seen in the window")
    unknown_s: float = Field(description="seconds with no data (offline, silent, UNAVAILABLE)")
    known_s: float
    utilisation: float | None = Field(description="ACTIVE seconds / known seconds")
    convention: str
    by_program: dict[str, ProgramTime] | None = Field(
        default=None, description="with by=program: seconds per state while each program ran"
    )


def _serialised(model: type[BaseModel], content: dict[str, Any]) -> Response:
    """`content` validated and serialised as `model` by pydantic-core in one pass: FastAPI's own
    response path (validate, then serialise to Python objects, then json.dumps) cost some 80 ms
    of CPU for the fleet's 1,000 rows. The same JSON; the route keeps `model` in the OpenAPI
    document as its response_model."""
    return Response(
        model.model_validate(content).model_dump_json(by_alias=True),
        media_type="application/json",
    )


def _valid_window(start: datetime, end: datetime) -> bool:
    try:
        window_bounds(start, end)
    except InvalidInputError:
        return False  # answered by the route's usual order of checks (the machine first)
    return True


async def _mid(conn: Conn, ref: MachineRef) -> int:
    if ref.id is not None:
        return ref.id
    mid = await machine_id(conn, ref.site, ref.machine)
    assert mid is not None  # resolve_machine found the row
    return mid


@router.get(
    "/machines/{machine}/utilisation",
    response_model=Utilisation,
    response_model_by_alias=True,
    responses=error_responses(404, 409),
)
async def utilisation(
    principal: AnyRole,
    conn: Conn,
    machine: MachinePath,
    from_: From,
    to: To,
    by: Annotated[Literal["program"] | None, Query(description="also split by program")] = None,
) -> Any:
    """Seconds per execution state and unknown time in [from, to), with in-cycle utilisation."""
    if by is None and ":" in machine and _valid_window(from_, to):
        # The usual request (site:machine, no split by program): the machine's lookup and its
        # seconds in one statement; any error (none such, another site's) from resolve_machine.
        site, _, name = machine.partition(":")
        start, end, until = window_bounds(from_, to)
        sites = None if principal.sites is None else sorted(principal.sites)
        found = await machine_state_seconds(
            conn, site, name, sites, from_, to, datetime.fromtimestamp(until, UTC)
        )
        if found is not None and found[1] is not None:
            (row,), _ = fleet_states_report([found[0]], {found[0]: found[1]}, start=start, end=end)
            return _serialised(
                Utilisation, {"site": site, "machine": name, "from": from_, "to": to, **row}
            )
    ref = await resolve_machine(conn, principal, machine)
    start, end, until = window_bounds(from_, to)
    mid = await _mid(conn, ref)
    if by is None:
        # The fleet route's computation for one machine: whole hours from ingest's state_hour,
        # the edges from events (tests/api/test_fleet_sql.py checks it against the analytics).
        seconds = await fleet_state_seconds(
            conn, [mid], from_, to, datetime.fromtimestamp(until, UTC)
        )
        (row,), _ = fleet_states_report([mid], seconds, start=start, end=end)
        return _serialised(
            Utilisation, {"site": ref.site, "machine": ref.machine, "from": from_, "to": to, **row}
        )
    execution = await fetch_signal(conn, mid, "execution", from_, to)
    status = await fetch_signal(conn, mid, "status", from_, to)
    program = await fetch_signal(conn, mid, "program", from_, to)
    report = await asyncio.to_thread(
        utilisation_report,
        execution,
        status,
        start=start,
        end=end,
        until=until,
        program=program,
    )
    return {"site": ref.site, "machine": ref.machine, "from": from_, "to": to, **report}


class Cycle(BaseModel):
    program: str | None
    start: datetime
    end: datetime
    duration_s: float
    active_s: float
    paused_s: float
    parts: float
    status: Literal["completed", "interrupted", "open"]


class CycleList(BaseModel):
    site: str
    machine: str
    from_: datetime = Field(alias="from")
    to: datetime
    cycles: list[Cycle]


@router.get(
    "/machines/{machine}/cycles",
    response_model=CycleList,
    response_model_by_alias=True,
    responses=error_responses(404, 409),
)
async def cycles(
    principal: AnyRole, conn: Conn, machine: MachinePath, from_: From, to: To
) -> dict[str, Any]:
    """Cycles starting in the window: program, start, end, duration_s, parts, status."""
    ref = await resolve_machine(conn, principal, machine)
    start, end, until = window_bounds(from_, to)
    mid = await _mid(conn, ref)
    streams = [
        await fetch_signal(conn, mid, signal, from_, to)
        for signal in ("execution", "status", "program", "part_count", "controller_mode")
    ]
    rows = await asyncio.to_thread(cycles_report, *streams, start=start, end=end, until=until)
    for r in rows:
        r["start"] = datetime.fromtimestamp(r["start"], UTC)
        r["end"] = datetime.fromtimestamp(r["end"], UTC)
    return {"site": ref.site, "machine": ref.machine, "from": from_, "to": to, "cycles": rows}


class SignalStats(BaseModel):
    min: list[float | None]
    max: list[float | None]
    avg: list[float | None]


class Telemetry(BaseModel):
    site: str
    machine: str
    from_: datetime = Field(alias="from")
    to: datetime
    bucket_s: int = Field(description="bucket width; buckets start at `from`")
    sources: list[str] = Field(description="tables read: sample_1h, sample_1m and/or sample")
    t: list[datetime] = Field(description="start of each bucket with data")
    series: dict[str, SignalStats]


@router.get(
    "/machines/{machine}/telemetry",
    response_model=Telemetry,
    response_model_by_alias=True,
    responses=error_responses(404, 409),
)
async def telemetry(
    principal: AnyRole,
    conn: Conn,
    machine: MachinePath,
    from_: From,
    to: To,
    signals: Annotated[
        str,
        Query(
            pattern=r"^[a-z][a-z0-9_]{0,63}(,[a-z][a-z0-9_]{0,63}){0,15}$",
            description="comma-separated catalogue telemetry signals (at most 16)",
            examples=["spindle_load,feedrate"],
        ),
    ],
    points: Annotated[int, Query(ge=1, le=10_000)] = 500,
) -> Response:
    """Min, max and average of each signal per bucket, about `points` buckets over the window."""
    names = list(dict.fromkeys(signals.split(",")))
    found = None
    if ":" in machine and _valid_window(from_, to) and all(wide_signal(s) for s in names):
        # The usual request: the machine's lookup and the rollups' watermarks in one statement;
        # any error (none such, another site's) from resolve_machine, in its usual order.
        site, _, name = machine.partition(":")
        sites = None if principal.sites is None else sorted(principal.sites)
        chain = plan((to - from_).total_seconds(), points).chain
        found = await machine_and_watermarks(conn, site, name, sites, chain)
    if found is not None:
        ref, marks = MachineRef(site, name, found[0]), found[1]
    else:
        ref, marks = await resolve_machine(conn, principal, machine), None
        window_bounds(from_, to)
        unknown = [s for s in names if not wide_signal(s)]
        if unknown:
            raise InvalidInputError(
                f"{unknown[0]!r} is not a catalogue telemetry signal (see /api/v1/signals)",
                field="signals",
            )
    mid = await _mid(conn, ref)
    p, series = await downsample(conn, mid, names, from_, to, points, marks=marks)
    # Serialised as they come (the model's JSON: tests/api/test_machines.py checks it against
    # `Telemetry`): validating some 2,400 floats and 400 times first cost more than the rest.
    return Response(
        orjson.dumps(
            {
                "site": ref.site,
                "machine": ref.machine,
                "from": from_,
                "to": to,
                "bucket_s": p.bucket_s,
                "sources": series.sources,
                "t": series.t,
                "series": series.values,
            },
            option=orjson.OPT_UTC_Z,
        ),
        media_type="application/json",
    )


class EventPublic(BaseModel):
    ts: datetime
    signal: str
    value: str | None
    value_num: float | None


@router.get(
    "/machines/{machine}/events",
    response_model=list[EventPublic],
    responses=error_responses(404, 409),
)
async def events(
    principal: AnyRole,
    conn: Conn,
    machine: MachinePath,
    from_: From,
    to: To,
    signals: Annotated[
        str | None,
        Query(
            pattern=r"^[a-z][a-z0-9_]{0,63}(,[a-z][a-z0-9_]{0,63}){0,31}$",
            description="comma-separated event signals (default: all value events)",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[EventPublic]:
    """Value events (execution, mode, program, tool, part counts, status...) in time order."""
    ref = await resolve_machine(conn, principal, machine)
    window_bounds(from_, to)
    mid = await _mid(conn, ref)
    rows = await conn.fetch(
        """SELECT ts, signal, value, value_num FROM event
            WHERE machine_id = $1 AND ts >= $2 AND ts < $3 AND signal <> 'condition'
              AND ($4::text[] IS NULL OR signal = ANY($4))
            ORDER BY ts, signal LIMIT $5""",
        mid,
        from_,
        to,
        None if signals is None else signals.split(","),
        limit,
    )
    return [EventPublic(**dict(r)) for r in rows]


class AlarmPublic(ActiveAlarm):
    native_severity: str | None
    closed_at: datetime | None
    duration_s: float | None


@router.get(
    "/machines/{machine}/alarms",
    response_model=list[AlarmPublic],
    responses=error_responses(404, 409),
)
async def alarms(
    principal: AnyRole,
    conn: Conn,
    machine: MachinePath,
    from_: From,
    to: To,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[AlarmPublic]:
    """Alarm history: every WARNING/FAULT condition open at some time in [from, to)."""
    ref = await resolve_machine(conn, principal, machine)
    window_bounds(from_, to)
    mid = await _mid(conn, ref)
    rows = await conn.fetch(
        """SELECT component, code, level, native_severity, text, opened_at, closed_at,
                  extract(epoch FROM closed_at - opened_at)::float8 AS duration_s
             FROM alarm
            WHERE machine_id = $1 AND opened_at < $3 AND (closed_at IS NULL OR closed_at > $2)
            ORDER BY opened_at LIMIT $4""",
        mid,
        from_,
        to,
        limit,
    )
    return [AlarmPublic(**dict(r)) for r in rows]


class ProgramStats(BaseModel):
    program: str
    count: int = Field(description="completed cycles")
    median: float
    mean: float
    std: float
    spread_mad: float = Field(description="1.4826 x median absolute deviation (robust sigma)")
    iqr: float
    p10: float
    p90: float
    min: float
    max: float
    parts_per_cycle: float
    outliers: list[datetime] = Field(description="start of each outlier cycle")


class ProgramStatsList(BaseModel):
    site: str
    machine: str
    from_: datetime = Field(alias="from")
    to: datetime
    measure: Literal["duration", "active_time"]
    programs: list[ProgramStats]


@router.get(
    "/machines/{machine}/cycles/stats",
    response_model=ProgramStatsList,
    response_model_by_alias=True,
    responses=error_responses(404, 409),
)
async def cycle_statistics(
    principal: AnyRole,
    conn: Conn,
    machine: MachinePath,
    from_: From,
    to: To,
    measure: Literal["duration", "active_time"] = "duration",
) -> dict[str, Any]:
    """Cycle-time statistics per program over completed cycles, with robust outliers."""
    ref = await resolve_machine(conn, principal, machine)
    start, end, until = window_bounds(from_, to)
    mid = await _mid(conn, ref)
    streams = [
        await fetch_signal(conn, mid, signal, from_, to)
        for signal in ("execution", "status", "program", "part_count", "controller_mode")
    ]
    rows = await asyncio.to_thread(
        program_stats_report, *streams, start=start, end=end, until=until, measure=measure
    )
    for r in rows:
        r["outliers"] = [datetime.fromtimestamp(t, UTC) for t in r["outliers"]]
    return {
        "site": ref.site,
        "machine": ref.machine,
        "from": from_,
        "to": to,
        "measure": measure,
        "programs": rows,
    }


class MachineUtilisation(BaseModel):
    site: str
    machine: str
    states: dict[str, float]
    unknown_s: float
    known_s: float
    utilisation: float | None


class FleetTotals(BaseModel):
    states: dict[str, float]
    unknown_s: float
    known_s: float
    utilisation: float | None


class FleetUtilisation(BaseModel):
    from_: datetime = Field(alias="from")
    to: datetime
    convention: str
    fleet: FleetTotals
    machines: list[MachineUtilisation]


@router.get("/utilisation", response_model=FleetUtilisation, response_model_by_alias=True)
async def fleet_utilisation(
    principal: AnyRole,
    api: Api,
    from_: From,
    to: To,
    site: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")] = None,
) -> Response:
    """Utilisation of every machine the key may see (or of one site), and of the whole fleet.

    Identical requests in flight at once (same window as written, same `site`, same key scope)
    share one computation (api/singleflight.py)."""
    start, end, until = window_bounds(from_, to)
    scope = None if principal.sites is None else sorted(principal.sites)

    async def compute() -> str:
        async with connection(api) as conn:
            machines = await conn.fetch(
                """SELECT id, site, machine FROM machine
                    WHERE ($1::text IS NULL OR site = $1) AND ($2::text[] IS NULL OR site = ANY($2))
                    ORDER BY site, machine""",
                site,
                scope,
            )
            ids = [m["id"] for m in machines]
            # Seconds per state in SQL (window functions over the execution and status events):
            # the same rules as the per-machine route's analytics (tests/api/test_fleet_sql.py).
            seconds = await fleet_state_seconds(
                conn, ids, from_, to, datetime.fromtimestamp(until, UTC)
            )
        rows, fleet = fleet_states_report(ids, seconds, start=start, end=end)
        return FleetUtilisation.model_validate(
            {
                "from": from_,
                "to": to,
                "convention": UTILISATION_CONVENTION,
                "fleet": fleet,
                "machines": [
                    {"site": m["site"], "machine": m["machine"], **r}
                    for m, r in zip(machines, rows, strict=True)
                ],
            }
        ).model_dump_json(by_alias=True)

    if until < end:
        # The window reaches past now: its data ends at this request's own now, which no other
        # request shares.
        body = await compute()
    else:
        # The window as written (its offsets are echoed in the answer), the site asked for and
        # the key's scope: everything the answer depends on.
        key = (from_.isoformat(), to.isoformat(), site, None if scope is None else tuple(scope))
        body = await api.fleet_flights.run(key, compute)
    return Response(body, media_type="application/json")


class TimeModelPublic(BaseModel):
    POT: float
    planned_down_time: float
    PBT: float
    APT: float
    ASUT: float
    ADET: float
    ADOT: float
    unknown: float
    APT_outside_plan: float
    AUPT: float
    AUBT: float
    PBT_known: float


class KpiGroup(BaseModel):
    label: str = Field(
        description="`window`, `YYYY-MM-DD shift`, the local day, or the program (`unknown`: none)"
    )
    time: TimeModelPublic = Field(description="seconds per ISO 22400 time element")
    produced: float
    good: float
    scrap: float
    rework: float
    ideal_cycle_time: float
    availability: float | None
    availability_min: float | None
    availability_max: float | None
    effectiveness: float | None
    quality_ratio: float | None
    oee: float | None
    utilisation_efficiency: float | None
    technical_efficiency: float | None
    setup_rate: float | None
    scrap_ratio: float | None
    coverage: float | None


class OeePublic(BaseModel):
    site: str
    machine: str
    from_: datetime = Field(alias="from")
    to: datetime
    group: Group
    convention: str
    calendar: str
    groups: list[KpiGroup]


@router.get(
    "/machines/{machine}/oee",
    response_model=OeePublic,
    response_model_by_alias=True,
    responses=error_responses(404, 409),
)
async def oee(
    principal: AnyRole,
    conn: Conn,
    machine: MachinePath,
    from_: From,
    to: To,
    ideal_cycle_time: Annotated[
        float, Query(gt=0, le=86_400, description="ideal seconds per part (PRU)")
    ],
    group: Group = "window",
) -> dict[str, Any]:
    """ISO 22400-2 availability, effectiveness, quality and OEE with the time model, per group
    (the window, each shift, each local day, or each program selected in the window)."""
    ref = await resolve_machine(conn, principal, machine)
    report = await _oee_of(conn, ref, await _mid(conn, ref), from_, to, group, ideal_cycle_time)
    return {
        "site": ref.site,
        "machine": ref.machine,
        "from": from_,
        "to": to,
        "group": group,
        **report,
    }


async def _oee_of(
    conn: Conn,
    ref: MachineRef,
    mid: int,
    from_: datetime,
    to: datetime,
    group: Group,
    ideal_cycle_time: float,
) -> dict[str, Any]:
    """One machine's ISO 22400-2 report (api.kpis.oee_report) from the database."""
    start, end, until = window_bounds(from_, to)
    execution = await fetch_signal(conn, mid, "execution", from_, to)
    status = await fetch_signal(conn, mid, "status", from_, to)
    mode = await fetch_signal(conn, mid, "controller_mode", from_, to)
    parts = await fetch_signal(conn, mid, "part_count", from_, to)
    scrap = await fetch_signal(conn, mid, "part_count_bad", from_, to)
    program = await fetch_signal(conn, mid, "program", from_, to) if group == "program" else None
    faults = [
        (r["opened_at"].timestamp(), (r["closed_at"] or to).timestamp())
        for r in await conn.fetch(
            """SELECT opened_at, closed_at FROM alarm
                WHERE machine_id = $1 AND level = 'FAULT' AND opened_at < $3
                  AND (closed_at IS NULL OR closed_at > $2)""",
            mid,
            from_,
            to,
        )
    ]
    row = await conn.fetchrow(
        "SELECT time_zone, shifts FROM site_calendar WHERE site = $1", ref.site
    )
    calendar = None
    if row is not None:
        downtime = await conn.fetch(
            """SELECT start_ts, end_ts FROM planned_downtime
                WHERE site = $1 AND (machine IS NULL OR machine = $2)
                  AND end_ts > $3 AND start_ts < $4""",
            ref.site,
            ref.machine,
            from_,
            to,
        )
        calendar = CalendarSpec(
            time_zone=row["time_zone"],
            shifts=row["shifts"],
            downtime=[(d["start_ts"].timestamp(), d["end_ts"].timestamp()) for d in downtime],
        )
    manual_scrap = [
        (r["at"].timestamp(), float(r["count"]))
        for r in await conn.fetch(
            """SELECT at, count FROM scrap_entry
                WHERE site = $1 AND machine = $2 AND at >= $3 AND at < $4""",
            ref.site,
            ref.machine,
            from_,
            to,
        )
    ]
    return await asyncio.to_thread(
        oee_report,
        execution,
        status,
        mode,
        parts,
        scrap,
        faults,
        calendar,
        manual_scrap,
        start=start,
        end=end,
        until=until,
        group=group,
        ideal_cycle_time=ideal_cycle_time,
        program=program,
    )


class FleetKpiGroup(KpiGroup):
    machines: int = Field(description="machines with this group in the window")


class MachineOee(BaseModel):
    site: str
    machine: str
    calendar: str
    groups: list[KpiGroup]


class FleetOeePublic(BaseModel):
    from_: datetime = Field(alias="from")
    to: datetime
    group: Group
    convention: str
    machines: list[MachineOee]
    fleet: list[FleetKpiGroup] = Field(
        description="per group: the machines' time models and quantities summed, ratios on the sums"
    )


@router.get("/oee", response_model=FleetOeePublic, response_model_by_alias=True)
async def fleet_oee_route(
    principal: AnyRole,
    conn: Conn,
    from_: From,
    to: To,
    ideal_cycle_time: Annotated[
        float, Query(gt=0, le=86_400, description="ideal seconds per part (PRU), every machine")
    ],
    group: Group = "window",
    site: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")] = None,
) -> dict[str, Any]:
    """ISO 22400-2 OEE of every visible machine (of `site`) per group, and of the fleet."""
    rows = await conn.fetch(
        """SELECT id, site, machine FROM machine
            WHERE ($1::text IS NULL OR site = $1) AND ($2::text[] IS NULL OR site = ANY($2))
            ORDER BY site, machine""",
        site,
        None if principal.sites is None else sorted(principal.sites),
    )
    reports = []
    for r in rows:
        ref = MachineRef(r["site"], r["machine"])
        report = await _oee_of(conn, ref, r["id"], from_, to, group, ideal_cycle_time)
        reports.append({"site": ref.site, "machine": ref.machine, **report})
    fleet = await asyncio.to_thread(fleet_oee, reports, ideal_cycle_time=ideal_cycle_time)
    convention = reports[0]["convention"] if reports else "ISO 22400-2"
    return {
        "from": from_,
        "to": to,
        "group": group,
        "convention": convention,
        "machines": [
            {k: rep[k] for k in ("site", "machine", "calendar", "groups")} for rep in reports
        ],
        "fleet": fleet,
    }

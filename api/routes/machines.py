"""Machines: the fleet with live status, one machine's detail, utilisation and cycles."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, Field

from api.deps import AnyRole, Conn, MachinePath, MachineRef, resolve_machine
from api.errors import AUTHENTICATED, InvalidInputError, error_responses
from api.machines import cycles_report, fetch_signal, machine_id, utilisation_report

__all__ = ["router"]

router = APIRouter(tags=["machines"], responses=AUTHENTICATED)

MAX_WINDOW = timedelta(days=400)


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


_LATEST = """(SELECT {col} FROM event e WHERE e.machine_id = m.id AND e.signal = '{signal}'
              ORDER BY e.ts DESC LIMIT 1)"""

_STATUS_SQL = f"""
SELECT m.site, m.machine, m.status, m.online, m.last_seen, m.status_since,
       {_LATEST.format(col="value", signal="execution")} AS execution,
       {_LATEST.format(col="value", signal="controller_mode")} AS mode,
       {_LATEST.format(col="value", signal="program")} AS program,
       {_LATEST.format(col="value_num", signal="part_count")} AS part_count,
       (SELECT count(*) FROM alarm a WHERE a.machine_id = m.id AND a.closed_at IS NULL)::int
           AS active_alarms
  FROM machine m"""  # noqa: S608 (constant fragments only)


@router.get("/machines", response_model=list[MachineStatus])
async def list_machines(
    principal: AnyRole,
    conn: Conn,
    site: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")] = None,
) -> list[MachineStatus]:
    """Every machine the key may see, with its live status, ordered by site and machine."""
    rows = await conn.fetch(
        _STATUS_SQL
        + """ WHERE ($1::text IS NULL OR m.site = $1) AND ($2::text[] IS NULL OR m.site = ANY($2))
              ORDER BY m.site, m.machine""",
        site,
        None if principal.sites is None else sorted(principal.sites),
    )
    return [MachineStatus(**dict(r)) for r in rows]


@router.get(
    "/machines/{machine}", response_model=MachineDetail, responses=error_responses(404, 409)
)
async def get_machine(principal: AnyRole, conn: Conn, machine: MachinePath) -> MachineDetail:
    """One machine: live status, controller, session and its active alarms."""
    ref = await resolve_machine(conn, principal, machine)
    row = await conn.fetchrow(
        _STATUS_SQL.replace(
            "SELECT m.site,", "SELECT m.controller, m.first_seen, m.session, m.site,"
        )
        + " WHERE m.site = $1 AND m.machine = $2",
        ref.site,
        ref.machine,
    )
    assert row is not None
    alarms = await conn.fetch(
        """SELECT a.component, a.code, a.level, a.text, a.opened_at
             FROM alarm a JOIN machine m ON m.id = a.machine_id
            WHERE m.site = $1 AND m.machine = $2 AND a.closed_at IS NULL
            ORDER BY a.opened_at""",
        ref.site,
        ref.machine,
    )
    return MachineDetail(**dict(row), alarms=[ActiveAlarm(**dict(a)) for a in alarms])


From = Annotated[AwareDatetime, Query(alias="from", description="window start (with time zone)")]
To = Annotated[AwareDatetime, Query(description="window end (with time zone)")]


def _window(start: datetime, end: datetime) -> tuple[float, float, float]:
    if end <= start:
        raise InvalidInputError("to must be after from", field="to")
    if end - start > MAX_WINDOW:
        raise InvalidInputError(f"the window may span at most {MAX_WINDOW.days} days", field="to")
    # Nothing is known about the future: time after now is unknown, not idle.
    until = min(end, datetime.now(UTC))
    return start.timestamp(), end.timestamp(), max(until.timestamp(), start.timestamp())


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


async def _mid(conn: Conn, ref: MachineRef) -> int:
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
    principal: AnyRole, conn: Conn, machine: MachinePath, from_: From, to: To
) -> dict[str, Any]:
    """Seconds per execution state and unknown time in [from, to), with in-cycle utilisation."""
    ref = await resolve_machine(conn, principal, machine)
    start, end, until = _window(from_, to)
    mid = await _mid(conn, ref)
    execution = await fetch_signal(conn, mid, "execution", from_, to)
    status = await fetch_signal(conn, mid, "status", from_, to)
    report = await asyncio.to_thread(
        utilisation_report, execution, status, start=start, end=end, until=until
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
    start, end, until = _window(from_, to)
    mid = await _mid(conn, ref)
    streams = [
        await fetch_signal(conn, mid, signal, from_, to)
        for signal in ("execution", "status", "program", "part_count")
    ]
    rows = await asyncio.to_thread(cycles_report, *streams, start=start, end=end, until=until)
    for r in rows:
        r["start"] = datetime.fromtimestamp(r["start"], UTC)
        r["end"] = datetime.fromtimestamp(r["end"], UTC)
    return {"site": ref.site, "machine": ref.machine, "from": from_, "to": to, "cycles": rows}

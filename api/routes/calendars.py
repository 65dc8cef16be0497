"""Shift calendars and planned downtime per site; times are the site's local wall-clock times."""

from __future__ import annotations

import zoneinfo
from datetime import datetime, time
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Path, Query, Response
from pydantic import AwareDatetime, BaseModel, Field, field_validator, model_validator

from api import audit
from api.deps import AnyRole, Conn, Engineering, MachineRef, Planners, Principal
from api.errors import (
    AUTHENTICATED,
    ForbiddenError,
    NotFoundError,
    error_responses,
)

__all__ = ["router"]

router = APIRouter(tags=["calendars"], responses=AUTHENTICATED)

SitePath = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", examples=["plant1"])]


class ShiftIn(BaseModel):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 _-]{0,31}$")] = Field(
        examples=["early"]
    )
    start: time = Field(description="local start, HH:MM[:SS]", examples=["06:00"])
    end: time = Field(description="local end; not after start = runs past midnight")
    weekdays: Annotated[list[Annotated[int, Field(ge=0, le=6)]], Field(min_length=1)] = Field(
        default_factory=lambda: list(range(7)), description="Monday = 0"
    )
    breaks: list[tuple[time, time]] = Field(default_factory=list, examples=[[["09:00", "09:15"]]])

    @field_validator("start", "end")
    @classmethod
    def _naive(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("local wall-clock time without an offset (the site has a time zone)")
        return value


class CalendarIn(BaseModel):
    time_zone: str = Field(examples=["Europe/Berlin"], description="IANA time zone of the site")
    shifts: Annotated[list[ShiftIn], Field(max_length=20)]

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _unique(self) -> CalendarIn:
        names = [s.name for s in self.shifts]
        if len(set(names)) != len(names):
            raise ValueError("shift names must be unique")
        return self


class CalendarPublic(CalendarIn):
    site: str
    updated_at: datetime
    updated_by: str


def _check_site(principal: Principal, site: str) -> None:
    if not principal.may_see(site):
        raise ForbiddenError(f"this key is not scoped to site {site!r}", code="site_forbidden")


@router.get("/sites/{site}/calendar", response_model=CalendarPublic, responses=error_responses(404))
async def get_calendar(principal: AnyRole, conn: Conn, site: SitePath) -> CalendarPublic:
    """The site's time zone and shifts."""
    _check_site(principal, site)
    row = await conn.fetchrow(
        "SELECT site, time_zone, shifts, updated_at, updated_by FROM site_calendar WHERE site = $1",
        site,
    )
    if row is None:
        raise NotFoundError(f"site {site!r} has no calendar", code="calendar_not_found")
    return CalendarPublic(**dict(row))


@router.put("/sites/{site}/calendar", response_model=CalendarPublic)
async def put_calendar(
    principal: Planners, conn: Conn, site: SitePath, body: CalendarIn
) -> CalendarPublic:
    """Set the site's time zone and shifts (replacing the previous calendar; audited)."""
    _check_site(principal, site)
    shifts = [s.model_dump(mode="json") for s in body.shifts]
    async with conn.transaction():
        row = await conn.fetchrow(
            """INSERT INTO site_calendar (site, time_zone, shifts, updated_by)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (site) DO UPDATE SET time_zone = EXCLUDED.time_zone,
                   shifts = EXCLUDED.shifts, updated_at = now(), updated_by = EXCLUDED.updated_by
               RETURNING site, time_zone, shifts, updated_at, updated_by""",
            site,
            body.time_zone,
            shifts,
            principal.who,
        )
        await audit.record(
            conn,
            principal,
            "calendar.update",
            detail={"time_zone": body.time_zone, "shifts": shifts},
            site=site,
        )
    assert row is not None
    return CalendarPublic(**dict(row))


class DowntimeCreate(BaseModel):
    machine: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")] | None = Field(
        default=None, description="one machine of the site; absent = the whole site"
    )
    start: AwareDatetime
    end: AwareDatetime
    reason: Annotated[str, Field(max_length=200)] = ""

    @model_validator(mode="after")
    def _order(self) -> DowntimeCreate:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class DowntimePublic(BaseModel):
    id: int
    site: str
    machine: str | None
    start: datetime
    end: datetime
    reason: str
    created_at: datetime
    created_by: str


_DT_COLUMNS = "id, site, machine, start_ts AS start, end_ts AS end, reason, created_at, created_by"


@router.post(
    "/sites/{site}/planned-downtime",
    status_code=201,
    response_model=DowntimePublic,
    responses=error_responses(404),
)
async def add_downtime(
    principal: Engineering, conn: Conn, site: SitePath, body: DowntimeCreate
) -> DowntimePublic:
    """Plan downtime for the site or one of its machines (audited)."""
    _check_site(principal, site)
    async with conn.transaction():
        try:
            row = await conn.fetchrow(
                f"""INSERT INTO planned_downtime
                        (site, machine, start_ts, end_ts, reason, created_by)
                    VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_DT_COLUMNS}""",  # noqa: S608
                site,
                body.machine,
                body.start,
                body.end,
                body.reason,
                principal.who,
            )
        except asyncpg.ForeignKeyViolationError as exc:
            raise NotFoundError(
                f"no machine {site}:{body.machine}", code="machine_not_found", field="machine"
            ) from exc
        assert row is not None
        await audit.record(
            conn,
            principal,
            "planned_downtime.create",
            MachineRef(site, body.machine) if body.machine else None,
            {"id": row["id"], "reason": body.reason},
            site=site,
        )
    return DowntimePublic(**dict(row))


@router.get("/sites/{site}/planned-downtime", response_model=list[DowntimePublic])
async def list_downtime(
    principal: AnyRole,
    conn: Conn,
    site: SitePath,
    from_: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    to: AwareDatetime | None = None,
) -> list[DowntimePublic]:
    """Planned downtime of the site overlapping [from, to), in time order."""
    _check_site(principal, site)
    rows = await conn.fetch(
        f"""SELECT {_DT_COLUMNS} FROM planned_downtime WHERE site = $1
              AND ($2::timestamptz IS NULL OR end_ts > $2)
              AND ($3::timestamptz IS NULL OR start_ts < $3)
            ORDER BY start_ts, id""",  # noqa: S608
        site,
        from_,
        to,
    )
    return [DowntimePublic(**dict(r)) for r in rows]


@router.delete(
    "/planned-downtime/{downtime_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(404),
)
async def delete_downtime(
    principal: Engineering,
    conn: Conn,
    downtime_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
) -> Response:
    """Remove planned downtime (audited with what it was)."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"SELECT {_DT_COLUMNS} FROM planned_downtime WHERE id = $1",  # noqa: S608
            downtime_id,
        )
        if row is None or not principal.may_see(row["site"]):
            raise NotFoundError(f"no planned downtime {downtime_id}", code="downtime_not_found")
        await conn.execute("DELETE FROM planned_downtime WHERE id = $1", downtime_id)
        detail: dict[str, Any] = {
            "id": downtime_id,
            "start": row["start"].isoformat(),
            "end": row["end"].isoformat(),
            "reason": row["reason"],
        }
        await audit.record(
            conn,
            principal,
            "planned_downtime.delete",
            MachineRef(row["site"], row["machine"]) if row["machine"] else None,
            detail,
            site=row["site"],
        )
    return Response(status_code=204)

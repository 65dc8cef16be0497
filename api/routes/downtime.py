"""Operator input: downtime reasons (with guards and a reclassification history), scrap entry,
and the downtime Pareto."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import AwareDatetime, BaseModel, Field, model_validator

from api import audit
from api.deps import AnyRole, Conn, MachinePath, Principal, ShopFloor, resolve_machine
from api.downtime import REASONS, active_seconds, downtime_pareto
from api.errors import (
    AUTHENTICATED,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    error_responses,
)
from api.machines import fetch_signal, machine_id
from api.window import From, To, window_bounds

__all__ = ["router"]

router = APIRouter(tags=["downtime"], responses=AUTHENTICATED)

MAX_ANNOTATION = timedelta(days=7)
#: Running time a reason may overlap: clocks of controller and tablet disagree by a second or so.
RUNNING_TOLERANCE_S = 1.0

Reason = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", examples=["no_material"])]


class ReasonPublic(BaseModel):
    code: str
    label: str
    planned: bool


@router.get("/downtime-reasons", response_model=list[ReasonPublic])
async def list_reasons(_: AnyRole) -> list[ReasonPublic]:
    """The reasons an operator may give for downtime."""
    return [ReasonPublic(code=c, label=lbl, planned=p) for c, (lbl, p) in REASONS.items()]


def _check_reason(reason: str) -> None:
    if reason not in REASONS:
        raise InvalidInputError(
            f"unknown reason {reason!r}; one of {', '.join(REASONS)}", field="reason"
        )


class AnnotationCreate(BaseModel):
    start: AwareDatetime
    end: AwareDatetime
    reason: Reason
    comment: Annotated[str, Field(max_length=500)] = ""

    @model_validator(mode="after")
    def _order(self) -> AnnotationCreate:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class AnnotationPublic(BaseModel):
    id: int
    site: str
    machine: str
    start: datetime
    end: datetime
    reason: str
    comment: str
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


_COLUMNS = """id, site, machine, start_ts AS start, end_ts AS end, reason, comment, created_at,
    created_by, updated_at, updated_by"""


async def _guard_not_running(
    conn: Conn, site: str, machine: str, start: datetime, end: datetime, reason: str
) -> None:
    mid = await machine_id(conn, site, machine)
    assert mid is not None
    execution = await fetch_signal(conn, mid, "execution", start, end)
    status = await fetch_signal(conn, mid, "status", start, end)
    running = await asyncio.to_thread(
        active_seconds,
        execution,
        status,
        start=start.timestamp(),
        end=end.timestamp(),
        until=end.timestamp(),
    )
    if running > RUNNING_TOLERANCE_S:
        raise ConflictError(
            f"the machine was running for {running:.0f} s of this time; "
            f"{REASONS[reason][0].lower()} cannot be given for running time",
            code="machine_running",
            field="start",
        )


@router.post(
    "/machines/{machine}/downtime",
    status_code=201,
    response_model=AnnotationPublic,
    responses=error_responses(404, 409),
)
async def annotate(
    principal: ShopFloor, conn: Conn, machine: MachinePath, body: AnnotationCreate
) -> AnnotationPublic:
    """Give the reason for a stretch of downtime. Refused on running time, in the future, or
    over another annotation."""
    ref = await resolve_machine(conn, principal, machine)
    _check_reason(body.reason)
    if body.end - body.start > MAX_ANNOTATION:
        raise InvalidInputError("an annotation may span at most 7 days", field="end")
    if body.end > datetime.now(UTC) + timedelta(seconds=60):
        raise InvalidInputError(
            "downtime reasons describe the past; plan future downtime per site", field="end"
        )
    await _guard_not_running(conn, ref.site, ref.machine, body.start, body.end, body.reason)
    async with conn.transaction():
        # Serialise annotations of one machine so two overlapping ones cannot both pass.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('downtime:' || $1))", str(ref))
        clash = await conn.fetchval(
            """SELECT id FROM downtime_annotation WHERE site = $1 AND machine = $2
                 AND start_ts < $4 AND end_ts > $3 LIMIT 1""",
            ref.site,
            ref.machine,
            body.start,
            body.end,
        )
        if clash is not None:
            raise ConflictError(
                f"overlaps annotation {clash}; reclassify that one instead",
                code="overlaps_annotation",
                field="start",
            )
        row = await conn.fetchrow(
            f"""INSERT INTO downtime_annotation
                    (site, machine, start_ts, end_ts, reason, comment, created_by, updated_by)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING {_COLUMNS}""",  # noqa: S608
            ref.site,
            ref.machine,
            body.start,
            body.end,
            body.reason,
            body.comment,
            principal.who,
        )
        assert row is not None
        await conn.execute(
            """INSERT INTO downtime_annotation_history
                   (annotation_id, by_whom, old_reason, new_reason, comment)
               VALUES ($1, $2, NULL, $3, $4)""",
            row["id"],
            principal.who,
            body.reason,
            body.comment,
        )
        await audit.record(
            conn, principal, "downtime.annotate", ref, {"id": row["id"], "reason": body.reason}
        )
    return AnnotationPublic(**dict(row))


@router.get(
    "/machines/{machine}/downtime",
    response_model=list[AnnotationPublic],
    responses=error_responses(404, 409),
)
async def list_annotations(
    principal: AnyRole, conn: Conn, machine: MachinePath, from_: From, to: To
) -> list[AnnotationPublic]:
    """The machine's downtime annotations overlapping [from, to), in time order."""
    ref = await resolve_machine(conn, principal, machine)
    window_bounds(from_, to)
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM downtime_annotation
             WHERE site = $1 AND machine = $2 AND start_ts < $4 AND end_ts > $3
             ORDER BY start_ts""",  # noqa: S608
        ref.site,
        ref.machine,
        from_,
        to,
    )
    return [AnnotationPublic(**dict(r)) for r in rows]


class Reclassify(BaseModel):
    reason: Reason
    comment: Annotated[str, Field(max_length=500)] = Field(
        default="", description="why the reason changed (kept in the history)"
    )


AnnotationId = Annotated[int, Path(ge=1, le=2**63 - 1)]


async def _annotation(conn: Conn, principal: Principal, annotation_id: int) -> Any:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM downtime_annotation WHERE id = $1",  # noqa: S608
        annotation_id,
    )
    if row is None or not principal.may_see(row["site"]):
        raise NotFoundError(f"no downtime annotation {annotation_id}", code="annotation_not_found")
    return row


@router.patch(
    "/downtime/{annotation_id}",
    response_model=AnnotationPublic,
    responses=error_responses(404, 409),
)
async def reclassify(
    principal: ShopFloor, conn: Conn, annotation_id: AnnotationId, body: Reclassify
) -> AnnotationPublic:
    """Change an annotation's reason; the old and new reason, who and why go to its history."""
    _check_reason(body.reason)
    async with conn.transaction():
        old = await _annotation(conn, principal, annotation_id)
        row = await conn.fetchrow(
            f"""UPDATE downtime_annotation SET reason = $2, comment = $3, updated_at = now(),
                       updated_by = $4 WHERE id = $1 RETURNING {_COLUMNS}""",  # noqa: S608
            annotation_id,
            body.reason,
            body.comment,
            principal.who,
        )
        assert row is not None
        await conn.execute(
            """INSERT INTO downtime_annotation_history
                   (annotation_id, by_whom, old_reason, new_reason, comment)
               VALUES ($1, $2, $3, $4, $5)""",
            annotation_id,
            principal.who,
            old["reason"],
            body.reason,
            body.comment,
        )
        await audit.record(
            conn,
            principal,
            "downtime.reclassify",
            None,
            {"id": annotation_id, "from": old["reason"], "to": body.reason},
            site=old["site"],
        )
    return AnnotationPublic(**dict(row))


class HistoryEntry(BaseModel):
    at: datetime
    by: str
    old_reason: str | None
    new_reason: str
    comment: str


@router.get(
    "/downtime/{annotation_id}/history",
    response_model=list[HistoryEntry],
    responses=error_responses(404),
)
async def annotation_history(
    principal: AnyRole, conn: Conn, annotation_id: AnnotationId
) -> list[HistoryEntry]:
    """Every classification the annotation has had, oldest first."""
    await _annotation(conn, principal, annotation_id)
    rows = await conn.fetch(
        """SELECT at, by_whom AS by, old_reason, new_reason, comment
             FROM downtime_annotation_history WHERE annotation_id = $1 ORDER BY at, id""",
        annotation_id,
    )
    return [HistoryEntry(**dict(r)) for r in rows]


class ParetoRowPublic(BaseModel):
    label: str = Field(description="a reason code, or `unclassified: <EXECUTION>`")
    seconds: float
    count: int
    share: float
    cumulative_share: float


class DowntimePareto(BaseModel):
    site: str
    machine: str
    from_: datetime = Field(alias="from")
    to: datetime
    downtime_s: float = Field(description="known time not ACTIVE")
    classified_s: float
    rows: list[ParetoRowPublic]


@router.get(
    "/machines/{machine}/downtime/pareto",
    response_model=DowntimePareto,
    response_model_by_alias=True,
    responses=error_responses(404, 409),
)
async def pareto_chart(
    principal: AnyRole, conn: Conn, machine: MachinePath, from_: From, to: To
) -> dict[str, Any]:
    """Downtime by reason, largest first, with shares; unreasoned downtime by execution state."""
    ref = await resolve_machine(conn, principal, machine)
    start, end, until = window_bounds(from_, to)
    mid = await machine_id(conn, ref.site, ref.machine)
    assert mid is not None
    execution = await fetch_signal(conn, mid, "execution", from_, to)
    status = await fetch_signal(conn, mid, "status", from_, to)
    notes = [
        (r["start_ts"].timestamp(), r["end_ts"].timestamp(), r["reason"])
        for r in await conn.fetch(
            """SELECT start_ts, end_ts, reason FROM downtime_annotation
                WHERE site = $1 AND machine = $2 AND start_ts < $4 AND end_ts > $3""",
            ref.site,
            ref.machine,
            from_,
            to,
        )
    ]
    report = await asyncio.to_thread(
        downtime_pareto, execution, status, notes, start=start, end=end, until=until
    )
    return {"site": ref.site, "machine": ref.machine, "from": from_, "to": to, **report}


class ScrapCreate(BaseModel):
    count: Annotated[int, Field(ge=1, le=100_000)]
    at: AwareDatetime | None = Field(default=None, description="default: now")
    reason: Annotated[str, Field(max_length=200)] = ""
    program: Annotated[str, Field(max_length=128)] | None = None


class ScrapPublic(BaseModel):
    id: int
    site: str
    machine: str
    at: datetime
    count: int
    reason: str
    program: str | None
    created_at: datetime
    created_by: str


_SCRAP = "id, site, machine, at, count, reason, program, created_at, created_by"
SCRAP_LOOKBACK = timedelta(hours=24)


@router.post(
    "/machines/{machine}/scrap",
    status_code=201,
    response_model=ScrapPublic,
    responses=error_responses(404, 409),
)
async def add_scrap(
    principal: ShopFloor, conn: Conn, machine: MachinePath, body: ScrapCreate
) -> ScrapPublic:
    """Record scrapped parts. Refused when it would exceed the parts the machine made in the 24 h
    before `at` (less the scrap already entered for them)."""
    ref = await resolve_machine(conn, principal, machine)
    now = datetime.now(UTC)
    at = body.at or now
    if at > now + timedelta(seconds=60):
        raise InvalidInputError(
            "scrap is recorded after the fact; `at` is in the future", field="at"
        )
    mid = await machine_id(conn, ref.site, ref.machine)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('scrap:' || $1))", str(ref))
        made = await conn.fetchval(
            """SELECT coalesce(sum(delta), 0) FROM part_count
                WHERE machine_id = $1 AND signal = 'part_count' AND ts > $2 AND ts <= $3""",
            mid,
            at - SCRAP_LOOKBACK,
            at,
        )
        entered = await conn.fetchval(
            """SELECT coalesce(sum(count), 0) FROM scrap_entry
                WHERE site = $1 AND machine = $2 AND at > $3 AND at <= $4""",
            ref.site,
            ref.machine,
            at - SCRAP_LOOKBACK,
            at,
        )
        if entered + body.count > made:
            raise ConflictError(
                f"{body.count} scrapped would exceed the {made} parts made in the 24 h before "
                f"{at.isoformat()} ({entered} already scrapped)",
                code="scrap_exceeds_production",
                field="count",
            )
        row = await conn.fetchrow(
            f"""INSERT INTO scrap_entry (site, machine, at, count, reason, program, created_by)
                VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_SCRAP}""",  # noqa: S608
            ref.site,
            ref.machine,
            at,
            body.count,
            body.reason,
            body.program,
            principal.who,
        )
        assert row is not None
        await audit.record(
            conn, principal, "scrap.enter", ref, {"id": row["id"], "count": body.count}
        )
    return ScrapPublic(**dict(row))


@router.get(
    "/machines/{machine}/scrap",
    response_model=list[ScrapPublic],
    responses=error_responses(404, 409),
)
async def list_scrap(
    principal: AnyRole, conn: Conn, machine: MachinePath, from_: From, to: To
) -> list[ScrapPublic]:
    """Scrap entered for the machine in [from, to)."""
    ref = await resolve_machine(conn, principal, machine)
    window_bounds(from_, to)
    rows = await conn.fetch(
        f"""SELECT {_SCRAP} FROM scrap_entry WHERE site = $1 AND machine = $2
              AND at >= $3 AND at < $4 ORDER BY at, id""",  # noqa: S608
        ref.site,
        ref.machine,
        from_,
        to,
    )
    return [ScrapPublic(**dict(r)) for r in rows]

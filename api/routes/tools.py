"""Tools: life per machine and tool since its last change, limits, changes, predicted change."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BaseModel, Field, model_validator

from api import audit
from api.deps import AnyRole, Conn, Engineering, MachinePath, ShopFloor, resolve_machine
from api.errors import AUTHENTICATED, InvalidInputError, error_responses
from api.machines import fetch_signal, machine_id
from api.tools import tool_report

__all__ = ["router"]

router = APIRouter(tags=["tools"], responses=AUTHENTICATED)

ToolPath = Annotated[int, Path(ge=0, le=99_999, description="tool (pocket) number")]


class ToolLife(BaseModel):
    tool: int
    in_spindle: bool
    since: datetime = Field(description="the tool's last change, or the start of the lookback")
    changed: bool = Field(description="whether `since` is a recorded tool change")
    minutes_in_cut: float = Field(description="ACTIVE minutes while in the spindle since `since`")
    parts: float
    usages: int
    cut_minutes_per_hour: float = Field(description="recent cutting rate (rate_days)")
    limit_minutes: float | None
    warning_minutes: float | None
    status: str | None = Field(description="NEW, USED, WARNING or EXPIRED (with a limit)")
    remaining_minutes: float | None
    used_fraction: float | None
    predicted_change_at: datetime | None = Field(
        description="now + remaining / recent rate; now when expired; null without rate or limit"
    )


@router.get(
    "/machines/{machine}/tools",
    response_model=list[ToolLife],
    responses=error_responses(404, 409),
)
async def tools(
    principal: AnyRole,
    conn: Conn,
    machine: MachinePath,
    lookback_days: Annotated[int, Query(ge=1, le=400)] = 90,
    rate_days: Annotated[int, Query(ge=1, le=400)] = 7,
) -> list[dict[str, Any]]:
    """Every tool seen in the lookback (or given a limit): life used, status, predicted change."""
    ref = await resolve_machine(conn, principal, machine)
    mid = await machine_id(conn, ref.site, ref.machine)
    assert mid is not None
    now = datetime.now(UTC)
    default_since = now - timedelta(days=lookback_days)
    since = {
        r["tool"]: r["at"]
        for r in await conn.fetch(
            """SELECT DISTINCT ON (tool) tool, at FROM tool_change
                WHERE site = $1 AND machine = $2 AND at <= $3 ORDER BY tool, at DESC""",
            ref.site,
            ref.machine,
            now,
        )
    }
    start = min([default_since, *since.values()])
    streams = [
        await fetch_signal(conn, mid, signal, start, now)
        for signal in ("tool_number", "execution", "status", "part_count")
    ]
    limits = {
        r["tool"]: (r["limit_minutes"], r["warning_minutes"])
        for r in await conn.fetch(
            "SELECT tool, limit_minutes, warning_minutes FROM tool_limit "
            "WHERE site = $1 AND machine = $2",
            ref.site,
            ref.machine,
        )
    }
    current_value = streams[0].value_num[-1] if streams[0].value_num.size else None
    current = (
        None if current_value is None or current_value != current_value else int(current_value)
    )
    rows = await asyncio.to_thread(
        tool_report,
        *streams,
        since={t: at.timestamp() for t, at in since.items()},
        default_since=default_since.timestamp(),
        now=now.timestamp(),
        rate_since=(now - timedelta(days=rate_days)).timestamp(),
        limits=limits,
        current=current,
    )
    for r in rows:
        r["since"] = datetime.fromtimestamp(r["since"], UTC)
        if r["predicted_change_at"] is not None:
            r["predicted_change_at"] = datetime.fromtimestamp(r["predicted_change_at"], UTC)
    return rows


class ToolLimitIn(BaseModel):
    limit_minutes: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)]
    warning_minutes: Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)]

    @model_validator(mode="after")
    def _order(self) -> ToolLimitIn:
        if self.warning_minutes > self.limit_minutes:
            raise ValueError("warning_minutes must not exceed limit_minutes")
        return self


class ToolLimitPublic(ToolLimitIn):
    site: str
    machine: str
    tool: int
    updated_at: datetime
    updated_by: str


@router.put(
    "/machines/{machine}/tools/{tool}/limit",
    response_model=ToolLimitPublic,
    responses=error_responses(404, 409),
)
async def set_limit(
    principal: Engineering, conn: Conn, machine: MachinePath, tool: ToolPath, body: ToolLimitIn
) -> ToolLimitPublic:
    """Set the tool's life limit and warning in minutes in cut (audited)."""
    ref = await resolve_machine(conn, principal, machine)
    async with conn.transaction():
        row = await conn.fetchrow(
            """INSERT INTO tool_limit (site, machine, tool, limit_minutes, warning_minutes,
                                       updated_by)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (site, machine, tool) DO UPDATE SET
                   limit_minutes = EXCLUDED.limit_minutes,
                   warning_minutes = EXCLUDED.warning_minutes,
                   updated_at = now(), updated_by = EXCLUDED.updated_by
               RETURNING site, machine, tool, limit_minutes, warning_minutes, updated_at,
                         updated_by""",
            ref.site,
            ref.machine,
            tool,
            body.limit_minutes,
            body.warning_minutes,
            principal.who,
        )
        await audit.record(conn, principal, "tool.limit", ref, {"tool": tool, **body.model_dump()})
    assert row is not None
    return ToolLimitPublic(**dict(row))


class ToolChangeIn(BaseModel):
    at: AwareDatetime | None = Field(default=None, description="default: now")
    comment: Annotated[str, Field(max_length=500)] = ""


class ToolChangePublic(BaseModel):
    id: int
    site: str
    machine: str
    tool: int
    at: datetime
    comment: str
    created_by: str


@router.post(
    "/machines/{machine}/tools/{tool}/changes",
    status_code=201,
    response_model=ToolChangePublic,
    responses=error_responses(404, 409),
)
async def record_change(
    principal: ShopFloor, conn: Conn, machine: MachinePath, tool: ToolPath, body: ToolChangeIn
) -> ToolChangePublic:
    """Record that the tool was replaced: its life counts again from `at` (audited)."""
    ref = await resolve_machine(conn, principal, machine)
    now = datetime.now(UTC)
    at = body.at or now
    if at > now + timedelta(seconds=60) or at.year < 1970:
        raise InvalidInputError("a tool change is recorded when it happened, not ahead", field="at")
    async with conn.transaction():
        row = await conn.fetchrow(
            """INSERT INTO tool_change (site, machine, tool, at, comment, created_by)
               VALUES ($1, $2, $3, $4, $5, $6)
               RETURNING id, site, machine, tool, at, comment, created_by""",
            ref.site,
            ref.machine,
            tool,
            at,
            body.comment,
            principal.who,
        )
        assert row is not None
        await audit.record(conn, principal, "tool.change", ref, {"tool": tool, "id": row["id"]})
    return ToolChangePublic(**dict(row))

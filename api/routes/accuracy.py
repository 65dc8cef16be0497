"""Accuracy reports per machine: ISO 230-2 positioning, ISO 230-4 circular tests, the S piece.

POST takes the same JSON as `arbor check` (under `data`, or `points` + `geometry` for the S piece),
stores the report with its PNG and SVG figures and a pass/fail verdict, and returns it.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from api import audit
from api.accuracy import DEFAULT_METRIC, Evaluation, Kind, evaluate, judge
from api.deps import AnyRole, Conn, Engineering, MachinePath, MachineRef, Principal, resolve_machine
from api.errors import AUTHENTICATED, InvalidInputError, NotFoundError, error_responses

__all__ = ["router"]

router = APIRouter(tags=["accuracy"], responses=AUTHENTICATED)

Tolerance = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Axis = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9]{0,7}$", examples=["X", "XY"])]


class _CreateBase(BaseModel):
    label: Annotated[str, Field(max_length=200)] | None = Field(
        default=None, description="Free text, e.g. 'after spindle change'"
    )
    figures: bool = Field(default=True, description="Render PNG and SVG figures")


class Iso2302Create(_CreateBase):
    axis: Axis | None = Field(default=None, description="The axis measured")
    tolerances: dict[str, Tolerance] = Field(
        default_factory=dict,
        description="Limits in mm per figure (A, B, E, M, R, ...); pass = every |figure| <= limit",
        examples=[{"A": 0.02, "R": 0.008}],
    )
    data: dict[str, Any] = Field(
        description="The `arbor check iso230-2` input: targets, up, down, units?, values?",
        examples=[{"targets": [0, 100], "up": [[0.001, 100.002]], "down": [[0.0, 99.999]]}],
    )


class CircleCreate(_CreateBase):
    axis: Axis | None = Field(default=None, description="The plane, e.g. XY")
    tolerances: dict[str, Tolerance] = Field(
        default_factory=dict,
        description="Limits in mm per figure (G, H, G_min_zone, ...)",
        examples=[{"G": 0.015}],
    )
    data: dict[str, Any] = Field(
        description="The `arbor check circle` input: x, y (or cw and ccw), nominal_radius?, ..."
    )


class SPieceCreate(_CreateBase):
    points: dict[str, Any] = Field(
        description="The `arbor check s-piece` points: {lines: [{name, points, flank?}], units?}"
    )
    geometry: dict[str, Any] | None = Field(
        default=None, description="Nominal geometry with tolerances (default: the shipped one)"
    )
    best_fit: bool = True


class AccuracyReportSummary(BaseModel):
    id: int
    site: str
    machine: str
    kind: str
    axis: str | None
    label: str | None
    created_at: datetime
    created_by: str
    passed: bool | None
    tolerances: dict[str, float]
    figures: list[str] = Field(description="Formats available at /accuracy/{id}/figure.{format}")


class AccuracyReportPublic(AccuracyReportSummary):
    report: dict[str, Any]


class TrendPoint(BaseModel):
    report_id: int
    created_at: datetime
    value: float | None
    passed: bool | None


class AccuracyTrend(BaseModel):
    site: str
    machine: str
    kind: str
    axis: str | None
    metric: str
    points: list[TrendPoint]
    slope_per_day: float | None = Field(
        description="Least-squares slope of the metric in mm per day (None below 2 points)"
    )


_SUMMARY_COLUMNS = """r.id, r.site, r.machine, r.kind, r.axis, r.label, r.created_at, r.created_by,
    r.passed, r.tolerances,
    coalesce((SELECT array_agg(f.format ORDER BY f.format) FROM accuracy_figure f
               WHERE f.report_id = r.id), '{}') AS figures"""


async def _store(
    conn: Conn,
    principal: Principal,
    machine: MachineRef,
    kind: Kind,
    axis: str | None,
    body: _CreateBase,
    tolerances: dict[str, float],
    posted: dict[str, Any],
    evaluation: Evaluation,
) -> AccuracyReportPublic:
    try:
        passed = judge(kind, evaluation.report, tolerances)
    except ValueError as exc:
        raise InvalidInputError(str(exc), field=str(exc).split(":", 1)[0]) from exc
    async with conn.transaction():
        row = await conn.fetchrow(
            """INSERT INTO accuracy_report
                   (site, machine, kind, axis, label, created_by, passed, tolerances, input, report)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
               RETURNING id, created_at""",
            machine.site,
            machine.machine,
            kind,
            axis,
            body.label,
            principal.who,
            passed,
            tolerances,
            posted,
            evaluation.report,
        )
        assert row is not None
        for fmt, content in evaluation.figures.items():
            await conn.execute(
                "INSERT INTO accuracy_figure (report_id, format, content) VALUES ($1, $2, $3)",
                row["id"],
                fmt,
                content,
            )
        await audit.record(
            conn, principal, f"accuracy.{kind}", machine, {"report_id": row["id"], "passed": passed}
        )
    return AccuracyReportPublic(
        id=row["id"],
        site=machine.site,
        machine=machine.machine,
        kind=kind,
        axis=axis,
        label=body.label,
        created_at=row["created_at"],
        created_by=principal.who,
        passed=passed,
        tolerances=tolerances,
        figures=sorted(evaluation.figures),
        report=evaluation.report,
    )


async def _evaluate(kind: Kind, field: str, **kwargs: Any) -> Evaluation:
    try:
        return await asyncio.to_thread(evaluate, kind, **kwargs)
    except ValueError as exc:
        where = "geometry" if str(exc).startswith("geometry") else field
        raise InvalidInputError(str(exc), field=where) from exc


_CREATED = {"status_code": 201, "responses": error_responses(404, 409, 422)}


@router.post("/machines/{machine}/accuracy/iso230-2", **_CREATED)  # type: ignore[arg-type]
async def create_iso230_2(
    principal: Engineering, conn: Conn, machine: MachinePath, body: Iso2302Create
) -> AccuracyReportPublic:
    """Evaluate and store an ISO 230-2 positioning run (bidirectional, per target position)."""
    ref = await resolve_machine(conn, principal, machine)
    evaluation = await _evaluate("iso230-2", "data", data=body.data, figures=body.figures)
    return await _store(
        conn, principal, ref, "iso230-2", body.axis, body, body.tolerances, body.data, evaluation
    )


@router.post("/machines/{machine}/accuracy/circle", **_CREATED)  # type: ignore[arg-type]
async def create_circle(
    principal: Engineering, conn: Conn, machine: MachinePath, body: CircleCreate
) -> AccuracyReportPublic:
    """Evaluate and store an ISO 230-4 circular test (one path, or cw and ccw)."""
    ref = await resolve_machine(conn, principal, machine)
    evaluation = await _evaluate("circle", "data", data=body.data, figures=body.figures)
    return await _store(
        conn, principal, ref, "circle", body.axis, body, body.tolerances, body.data, evaluation
    )


@router.post("/machines/{machine}/accuracy/s-piece", **_CREATED)  # type: ignore[arg-type]
async def create_s_piece(
    principal: Engineering, conn: Conn, machine: MachinePath, body: SPieceCreate
) -> AccuracyReportPublic:
    """Evaluate and store an ISO 10791-7 S test piece from CMM points (tolerances: geometry's)."""
    ref = await resolve_machine(conn, principal, machine)
    evaluation = await _evaluate(
        "s-piece",
        "points",
        data=body.points,
        geometry=body.geometry,
        best_fit=body.best_fit,
        figures=body.figures,
    )
    posted = {"points": body.points, "geometry": body.geometry, "best_fit": body.best_fit}
    return await _store(conn, principal, ref, "s-piece", None, body, {}, posted, evaluation)


KindQuery = Literal["iso230-2", "circle", "s-piece"]


@router.get(
    "/machines/{machine}/accuracy",
    response_model=list[AccuracyReportSummary],
    responses=error_responses(404, 409),
)
async def list_reports(
    principal: AnyRole,
    conn: Conn,
    machine: MachinePath,
    kind: KindQuery | None = None,
    axis: Annotated[str | None, Query(max_length=8)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AccuracyReportSummary]:
    """The machine's accuracy history, newest first."""
    ref = await resolve_machine(conn, principal, machine)
    rows = await conn.fetch(
        f"""SELECT {_SUMMARY_COLUMNS} FROM accuracy_report r
             WHERE r.site = $1 AND r.machine = $2
               AND ($3::text IS NULL OR r.kind = $3) AND ($4::text IS NULL OR r.axis = $4)
             ORDER BY r.created_at DESC, r.id DESC LIMIT $5""",  # noqa: S608 (constant columns)
        ref.site,
        ref.machine,
        kind,
        axis,
        limit,
    )
    return [AccuracyReportSummary(**dict(r)) for r in rows]


@router.get(
    "/machines/{machine}/accuracy/trend",
    response_model=AccuracyTrend,
    responses=error_responses(404, 409),
)
async def trend(
    principal: AnyRole,
    conn: Conn,
    machine: MachinePath,
    kind: KindQuery,
    axis: Annotated[str | None, Query(max_length=8)] = None,
    metric: Annotated[str | None, Query(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")] = None,
) -> AccuracyTrend:
    """One figure over time (default A, G or profile_deviation) with its slope per day."""
    ref = await resolve_machine(conn, principal, machine)
    name = metric or DEFAULT_METRIC[kind]
    rows = await conn.fetch(
        """SELECT id, created_at, passed, report -> $5 AS value FROM accuracy_report
            WHERE site = $1 AND machine = $2 AND kind = $3 AND ($4::text IS NULL OR axis = $4)
            ORDER BY created_at, id""",
        ref.site,
        ref.machine,
        kind,
        axis,
        name,
    )
    points = [
        TrendPoint(
            report_id=r["id"],
            created_at=r["created_at"],
            value=_number(r["value"]),
            passed=r["passed"],
        )
        for r in rows
    ]
    return AccuracyTrend(
        site=ref.site,
        machine=ref.machine,
        kind=kind,
        axis=axis,
        metric=name,
        points=points,
        slope_per_day=_slope(points),
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _slope(points: list[TrendPoint]) -> float | None:
    pairs = [(p.created_at.timestamp() / 86400.0, p.value) for p in points if p.value is not None]
    if len(pairs) < 2:
        return None
    n = len(pairs)
    mx = sum(x for x, _ in pairs) / n
    my = sum(y for _, y in pairs) / n
    sxx = sum((x - mx) ** 2 for x, _ in pairs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in pairs) / sxx


async def _report_row(conn: Conn, principal: Principal, report_id: int) -> Any:
    row = await conn.fetchrow(
        f"SELECT {_SUMMARY_COLUMNS}, r.report FROM accuracy_report r WHERE r.id = $1",  # noqa: S608
        report_id,
    )
    # A report of a site outside the key's scope is reported missing, not forbidden: ids are
    # sequential, and a 403 would confirm that the report exists.
    if row is None or not principal.may_see(row["site"]):
        raise NotFoundError(f"no accuracy report {report_id}", code="report_not_found")
    return row


ReportId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get(
    "/accuracy/{report_id}", response_model=AccuracyReportPublic, responses=error_responses(404)
)
async def get_report(principal: AnyRole, conn: Conn, report_id: ReportId) -> AccuracyReportPublic:
    """One report with every figure of the evaluation."""
    return AccuracyReportPublic(**dict(await _report_row(conn, principal, report_id)))


_MEDIA = {"png": "image/png", "svg": "image/svg+xml"}


@router.get(
    "/accuracy/{report_id}/figure.{fmt}",
    response_class=Response,
    responses={
        200: {
            "content": {
                m: {"schema": {"type": "string", "format": "binary"}} for m in _MEDIA.values()
            }
        },
        **error_responses(404),
    },
)
async def get_figure(
    principal: AnyRole, conn: Conn, report_id: ReportId, fmt: Literal["png", "svg"]
) -> Response:
    """The report's figure as PNG or SVG."""
    await _report_row(conn, principal, report_id)
    content = await conn.fetchval(
        "SELECT content FROM accuracy_figure WHERE report_id = $1 AND format = $2", report_id, fmt
    )
    if content is None:
        raise NotFoundError(f"report {report_id} has no {fmt} figure", code="figure_not_found")
    return Response(bytes(content), media_type=_MEDIA[fmt])

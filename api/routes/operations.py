"""Operations: liveness and readiness (`/healthz`), Prometheus metrics, database health."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import asyncpg
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from api.deps import Api, Conn, Operations, Public
from api.errors import AUTHENTICATED

__all__ = ["root", "router"]

root = APIRouter(tags=["operations"])
router = APIRouter(tags=["operations"], responses=AUTHENTICATED)


class Check(BaseModel):
    ok: bool
    detail: str


class Health(BaseModel):
    ok: bool
    database: Check
    broker: Check


@root.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "a dependency is unreachable"}},
)
async def healthz(_: Public, api: Api, response: Response) -> Health:
    """Whether the database answers and the broker is connected (503 when either is not)."""
    try:
        async with asyncio.timeout(2.0):
            await api.pool.fetchval("SELECT 1")
        database = Check(ok=True, detail="reachable")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        database = Check(ok=False, detail=f"unreachable: {type(exc).__name__}: {exc}")
    if api.broker is None:
        broker = Check(ok=True, detail="not configured (ARBOR_MQTT_URL is empty)")
    elif api.broker.connected:
        broker = Check(ok=True, detail=f"connected to {api.broker.endpoint}")
    else:
        broker = Check(ok=False, detail=f"not connected to {api.broker.endpoint}")
    ok = database.ok and broker.ok
    if not ok:
        response.status_code = 503
    return Health(ok=ok, database=database, broker=broker)


@root.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(_: Public, api: Api) -> Response:
    """Prometheus exposition of the API's own metrics."""
    return Response(generate_latest(api.metrics.registry), media_type=CONTENT_TYPE_LATEST)


class Hypertable(BaseModel):
    name: str
    total_bytes: int | None
    chunks: int
    compressed_chunks: int
    compression_enabled: bool


class Job(BaseModel):
    job_id: int
    proc: str
    hypertable: str | None
    schedule_interval: str
    last_run_status: str | None
    last_successful_finish: datetime | None
    next_start: datetime | None
    total_failures: int | None


class TimescaleEdition(BaseModel):
    version: str
    license: str
    compression: bool
    continuous_aggregates: bool


class Rollup(BaseModel):
    """Where one of ingest's own rollups stands (Apache edition; the community edition's
    continuous aggregates are in `jobs`)."""

    name: str
    done_until: datetime
    """Buckets before this are final and stored; readers take the rest from `sample`."""
    behind_s: float
    """Seconds from `done_until` to now: about 2 minutes plus one bucket when the job keeps up."""


class Retention(BaseModel):
    hypertable: str
    keep: str
    """How long rows are kept (a PostgreSQL interval, e.g. "90 days")."""


class DatabaseHealth(BaseModel):
    database_bytes: int
    timescaledb: TimescaleEdition | None
    hypertables: list[Hypertable]
    jobs: list[Job]
    rollups: list[Rollup]
    rollup_late_notes: int | None
    """Notes of late samples whose rollup buckets ingest's job has still to redo."""
    retention: list[Retention]
    ingest_lag_s: float | None
    """Seconds since ingest last accepted a message (None before any message, or no ledger)."""
    schema_version: int | None


async def _exists(conn: asyncpg.Connection, relation: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", relation))


@router.get("/health/database", response_model=DatabaseHealth)
async def database_health(_: Operations, conn: Conn) -> DatabaseHealth:
    """Sizes, hypertable chunks and compression, background jobs, ingest's own rollups and
    their late-sample backlog, retention per table, edition and ingest lag."""
    size = await conn.fetchval("SELECT pg_database_size(current_database())")
    edition: TimescaleEdition | None = None
    if await _exists(conn, "arbor_timescaledb"):
        row = await conn.fetchrow(
            "SELECT version, license, compression, continuous_aggregates FROM arbor_timescaledb"
        )
        edition = None if row is None else TimescaleEdition(**dict(row))
    hypertables = [
        Hypertable(**dict(r))
        for r in await conn.fetch(
            """SELECT h.hypertable_name AS name,
                      hypertable_size(format('%I.%I', h.hypertable_schema, h.hypertable_name))
                          AS total_bytes,
                      (SELECT count(*) FROM timescaledb_information.chunks c
                        WHERE c.hypertable_schema = h.hypertable_schema
                          AND c.hypertable_name = h.hypertable_name)::int AS chunks,
                      (SELECT count(*) FROM timescaledb_information.chunks c
                        WHERE c.hypertable_schema = h.hypertable_schema
                          AND c.hypertable_name = h.hypertable_name AND c.is_compressed)::int
                          AS compressed_chunks,
                      h.compression_enabled
                 FROM timescaledb_information.hypertables h
                ORDER BY h.hypertable_name"""
        )
    ]
    jobs = [
        Job(**dict(r))
        for r in await conn.fetch(
            """SELECT j.job_id, j.proc_name AS proc, j.hypertable_name AS hypertable,
                      j.schedule_interval::text AS schedule_interval,
                      s.last_run_status,
                      -- job_stats says -infinity for "never": that is null here
                      CASE WHEN isfinite(s.last_successful_finish)
                           THEN s.last_successful_finish END AS last_successful_finish,
                      CASE WHEN isfinite(s.next_start) THEN s.next_start END AS next_start,
                      s.total_failures::int AS total_failures
                 FROM timescaledb_information.jobs j
                 LEFT JOIN timescaledb_information.job_stats s USING (job_id)
                ORDER BY j.job_id"""
        )
    ]
    rollups: list[Rollup] = []
    late: int | None = None
    if await _exists(conn, "rollup_watermark"):
        rollups = [
            Rollup(**dict(r))
            for r in await conn.fetch(
                "SELECT rollup AS name, done_until, "
                "extract(epoch FROM now() - done_until)::float8 AS behind_s "
                "FROM rollup_watermark ORDER BY rollup"
            )
        ]
        late = int(await conn.fetchval("SELECT count(*) FROM rollup_dirty"))
    retention: list[Retention] = []
    if await _exists(conn, "retention_policy"):
        retention = [
            Retention(**dict(r))
            for r in await conn.fetch(
                "SELECT hypertable, keep::text AS keep FROM retention_policy ORDER BY hypertable"
            )
        ]
    lag: float | None = None
    if await _exists(conn, "message_ledger"):
        value: Any = await conn.fetchval(
            "SELECT extract(epoch FROM now() - max(received_at)) FROM message_ledger"
        )
        lag = None if value is None else float(value)
    version = None
    if await _exists(conn, "arbor_schema_migration"):
        version = await conn.fetchval("SELECT max(version) FROM arbor_schema_migration")
    return DatabaseHealth(
        database_bytes=int(size),
        timescaledb=edition,
        hypertables=hypertables,
        jobs=jobs,
        rollups=rollups,
        rollup_late_notes=late,
        retention=retention,
        ingest_lag_s=lag,
        schema_version=version,
    )

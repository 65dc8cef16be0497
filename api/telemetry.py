"""Downsampled telemetry: min / max / avg of chosen signals per bucket, from raw samples or rollups.

The bucket width is the window divided by the requested number of points, rounded up to a whole
second, and up to a whole minute or hour when a rollup (`sample_1m`, `sample_1h`; ingest's
migration 0003) can serve it. Rollups are read only before their watermark (`rollup_watermark`,
where ingest's own job has got to); the rest of the window, and any window a rollup cannot serve,
comes from the raw `sample` table, split on a bucket boundary so no bucket is counted twice.
Averages over rollup buckets are weighted by each bucket's sample count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from protocol import SignalChannel, get_signal

__all__ = ["ROLLUPS", "Series", "downsample", "plan", "wide_signal"]

#: rollup table -> its bucket width in seconds (coarsest first).
ROLLUPS: dict[str, int] = {"sample_1h": 3600, "sample_1m": 60}


def wide_signal(name: str) -> bool:
    """Whether `name` is a catalogue telemetry signal (those have a column in `sample`)."""
    try:
        signal = get_signal(name)
    except (KeyError, ValueError):
        return False
    return signal is not None and signal.channel is SignalChannel.TELEMETRY


@dataclass(frozen=True)
class Plan:
    bucket_s: int
    rollup: str | None


def plan(window_s: float, points: int) -> Plan:
    """The bucket width for `points` buckets over `window_s` seconds, and the rollup to use."""
    raw = max(1, math.ceil(window_s / points))
    for table, width in ROLLUPS.items():
        if raw >= width:
            return Plan(bucket_s=math.ceil(raw / width) * width, rollup=table)
    return Plan(bucket_s=raw, rollup=None)


@dataclass
class Series:
    t: list[datetime]
    values: dict[str, dict[str, list[float | None]]]
    sources: list[str]


def _raw_sql(signals: list[str]) -> str:
    aggs = ", ".join(f"min({s}), max({s}), avg({s})" for s in signals)
    # Column names are catalogue signal names checked by `wide_signal`, never free text.
    return f"""SELECT time_bucket($1::interval, ts, $2::timestamptz) AS t, {aggs}
                 FROM sample WHERE machine_id = $3 AND ts >= $2 AND ts < $4
                GROUP BY 1 ORDER BY 1"""  # noqa: S608


def _rollup_sql(table: str, signals: list[str]) -> str:
    aggs = ", ".join(
        f"min({s}_min), max({s}_max), "
        f"sum({s}_avg * n) / nullif(sum(n) FILTER (WHERE {s}_avg IS NOT NULL), 0)"
        for s in signals
    )
    return f"""SELECT time_bucket($1::interval, bucket, $2::timestamptz) AS t, {aggs}
                 FROM {table} WHERE machine_id = $3 AND bucket >= $2 AND bucket < $4
                GROUP BY 1 ORDER BY 1"""  # noqa: S608


async def _watermark(conn: asyncpg.Connection, table: str) -> datetime | None:
    # Asked straight away, not after checking the table exists: each statement is a round trip
    # (~0.3 ms of the API's CPU on a small VM), and only a database without ingest's migration
    # 0003 lacks it. Savepoint-free: the route's connection is not in a transaction.
    try:
        value: Any = await conn.fetchval(
            "SELECT done_until FROM rollup_watermark WHERE rollup = $1", table
        )
    except asyncpg.UndefinedTableError:
        return None
    return value if isinstance(value, datetime) else None


async def downsample(
    conn: asyncpg.Connection,
    mid: int,
    signals: list[str],
    start: datetime,
    end: datetime,
    points: int,
) -> tuple[Plan, Series]:
    """Buckets of `signals` over [start, end) for machine `mid` (buckets without data omitted)."""
    for s in signals:
        if not wide_signal(s):
            raise ValueError(f"{s!r} is not a catalogue telemetry signal")
    p = plan((end - start).total_seconds(), points)
    width = timedelta(seconds=p.bucket_s)
    rows: list[Any] = []
    sources: list[str] = []
    split = start
    if p.rollup is not None:
        mark = await _watermark(conn, p.rollup)
        if mark is not None and mark > start:
            whole = int((min(mark, end) - start) / width)
            split = start + whole * width
        if split > start:
            rows += await conn.fetch(_rollup_sql(p.rollup, signals), width, start, mid, split)
            sources.append(p.rollup)
    if split < end:
        rows += await conn.fetch(_raw_sql(signals), width, split, mid, end)
        sources.append("sample")
    series = Series(
        t=[r["t"] for r in rows],
        values={s: {"min": [], "max": [], "avg": []} for s in signals},
        sources=sources,
    )
    for r in rows:
        for k, s in enumerate(signals):
            for j, stat in enumerate(("min", "max", "avg")):
                value = r[1 + 3 * k + j]
                series.values[s][stat].append(None if value is None else float(value))
    return p, series

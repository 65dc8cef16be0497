"""Downsampled telemetry: min / max / avg of chosen signals per bucket, from raw samples or rollups.

The bucket width is the window divided by the requested number of points, rounded up to a whole
second, and up to a whole multiple of the coarsest rollup (`sample_1h`, `sample_5m`, `sample_1m`;
ingest's migrations 0003 and 0008) no wider than that. Rollups are read only before their
watermark (`rollup_watermark`, where ingest's own job has got to), and in a chain: the chosen
rollup as far as its watermark, then each finer rollup whose width divides the bucket as far as
its own, then the raw `sample` table to the window's end (1h -> 5m -> 1m -> raw; the hour's
watermark may be an hour behind the minute's). Each source reads whole buckets of its own
(the parts of the window before a coarser source's first bucket, or after its watermark, come
from the finer ones), so no sample is counted twice, and a bucket may be summed from several
sources in one statement. Averages over rollup buckets are weighted by each bucket's sample
count; a rollup row counts in the bucket where it starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from protocol import SignalChannel, get_signal

__all__ = [
    "ROLLUPS",
    "Segment",
    "Series",
    "downsample",
    "machine_and_watermarks",
    "plan",
    "segments",
    "wide_signal",
]

#: rollup table -> its bucket width in seconds (coarsest first).
ROLLUPS: dict[str, int] = {"sample_1h": 3600, "sample_5m": 300, "sample_1m": 60}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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

    @property
    def chain(self) -> list[str]:
        """The rollups that may serve these buckets, coarsest first: the chosen one and every
        finer one whose width divides the bucket width."""
        if self.rollup is None:
            return []
        top = ROLLUPS[self.rollup]
        return [t for t, w in ROLLUPS.items() if w <= top and self.bucket_s % w == 0]


def plan(window_s: float, points: int) -> Plan:
    """The bucket width for `points` buckets over `window_s` seconds, and the rollup to use."""
    raw = max(1, math.ceil(window_s / points))
    for table, width in ROLLUPS.items():
        if raw >= width:
            return Plan(bucket_s=math.ceil(raw / width) * width, rollup=table)
    return Plan(bucket_s=raw, rollup=None)


@dataclass(frozen=True)
class Segment:
    """[lo, hi) of the window read from `table` (`sample` = raw)."""

    table: str
    lo: datetime
    hi: datetime


def _floor(t: datetime, width: int) -> datetime:
    return _EPOCH + timedelta(seconds=(t - _EPOCH) // timedelta(seconds=width) * width)


def _ceil(t: datetime, width: int) -> datetime:
    down = _floor(t, width)
    return down if down == t else down + timedelta(seconds=width)


def segments(
    start: datetime, end: datetime, chain: list[str], marks: dict[str, datetime | None]
) -> list[Segment]:
    """[start, end) split between the rollups of `chain` (coarsest first) and raw samples: each
    rollup takes its whole buckets before its watermark (`marks`; none: nothing), the finer
    sources what lies before and after them."""
    if start >= end:
        return []
    if not chain:
        return [Segment("sample", start, end)]
    table, rest = chain[0], chain[1:]
    width = ROLLUPS[table]
    mark = marks.get(table)
    lo = _ceil(start, width)
    hi = _floor(min(end, mark), width) if mark is not None else lo
    if lo >= hi:
        return segments(start, end, rest, marks)
    return [
        *segments(start, lo, rest, marks),
        Segment(table, lo, hi),
        *segments(hi, end, rest, marks),
    ]


@dataclass
class Series:
    t: list[datetime]
    values: dict[str, dict[str, list[float | None]]]
    sources: list[str]


def _part_sql(table: str, signals: list[str], k: int, exact: bool = False) -> str:
    """Segment `k`'s rows (bounds `$k`, `$k+1`; `$3` the machine), each with its bucket (`$1`
    wide from `$2`) and per signal: min, max, sum and count of samples (sums in numeric with
    `exact`)."""
    num = "::numeric" if exact else ""
    if table == "sample":
        values = ", ".join(f"{s}, {s}, {s}{num}, ({s} IS NOT NULL)::int" for s in signals)
        column = "ts"
    else:
        values = ", ".join(
            f"{s}_min, {s}_max, {s}_avg{num} * n, CASE WHEN {s}_avg IS NOT NULL THEN n END"
            for s in signals
        )
        column = "bucket"
    # Column names are catalogue signal names checked by `wide_signal`, never free text, and
    # tables come from ROLLUPS.
    return f"""SELECT time_bucket($1::interval, {column}, $2::timestamptz), {values}
                 FROM {table} WHERE machine_id = $3 AND {column} >= ${k} AND {column} < ${k + 1}"""  # noqa: S608


def _downsample_sql(parts: list[Segment], signals: list[str], exact: bool = False) -> str:
    """One statement for every segment: their rows aggregated per bucket, in one pass (as cheap
    as a single table's query: pgbench, the bench's week from sample_5m)."""
    union = "\n UNION ALL\n".join(
        _part_sql(p.table, signals, 4 + 2 * k, exact) for k, p in enumerate(parts)
    )
    names = ", ".join(f"{s}_min, {s}_max, {s}_sum, {s}_n" for s in signals)
    aggs = ", ".join(
        f"min({s}_min), max({s}_max), (sum({s}_sum) / nullif(sum({s}_n), 0))::float8"
        for s in signals
    )
    return f"SELECT t, {aggs} FROM ({union}) AS p (t, {names}) GROUP BY t ORDER BY t"  # noqa: S608


async def _watermarks(conn: asyncpg.Connection, tables: list[str]) -> dict[str, datetime | None]:
    """Each rollup's watermark (None: the job has not written it yet, or a database without
    ingest's migration 0003). One statement: each is a round trip (~0.3 ms of the API's CPU on a
    small VM); savepoint-free, the route's connection is not in a transaction."""
    if not tables:
        return {}
    try:
        rows = await conn.fetch(
            "SELECT rollup, done_until FROM rollup_watermark WHERE rollup = ANY($1::text[])",
            tables,
        )
    except asyncpg.UndefinedTableError:
        return {}
    return {r["rollup"]: r["done_until"] for r in rows if isinstance(r["done_until"], datetime)}


async def machine_and_watermarks(
    conn: asyncpg.Connection, site: str, machine: str, sites: list[str] | None, tables: list[str]
) -> tuple[int, dict[str, datetime | None]] | None:
    """Machine `site:machine`'s id and the watermarks of `tables` in one statement (a round trip
    less per request); None when no such machine is visible to a key seeing `sites` (None: all)
    or the database has no rollup_watermark (the caller's usual lookup answers then)."""
    try:
        row = await conn.fetchrow(
            """SELECT m.id, w.tables, w.marks FROM machine m,
                      (SELECT array_agg(rollup) AS tables, array_agg(done_until) AS marks
                         FROM rollup_watermark WHERE rollup = ANY($4::text[])) w
                WHERE m.site = $1 AND m.machine = $2
                  AND ($3::text[] IS NULL OR m.site = ANY($3::text[]))""",
            site,
            machine,
            sites,
            tables,
        )
    except asyncpg.UndefinedTableError:
        return None
    if row is None:
        return None
    marks = dict(zip(row["tables"] or [], row["marks"] or [], strict=True))
    return int(row["id"]), {t: m for t, m in marks.items() if isinstance(m, datetime)}


async def downsample(
    conn: asyncpg.Connection,
    mid: int,
    signals: list[str],
    start: datetime,
    end: datetime,
    points: int,
    *,
    marks: dict[str, datetime | None] | None = None,
) -> tuple[Plan, Series]:
    """Buckets of `signals` over [start, end) for machine `mid` (buckets without data omitted);
    `marks`: the rollups' watermarks when the caller has read them (machine_and_watermarks)."""
    for s in signals:
        if not wide_signal(s):
            raise ValueError(f"{s!r} is not a catalogue telemetry signal")
    p = plan((end - start).total_seconds(), points)
    chain = p.chain
    if marks is None:
        marks = await _watermarks(conn, chain)
    parts = segments(start, end, chain, marks)
    used = {part.table for part in parts}
    bounds: list[Any] = [b for part in parts for b in (part.lo, part.hi)]
    args = (timedelta(seconds=p.bucket_s), start, mid, *bounds)
    try:
        rows = await conn.fetch(_downsample_sql(parts, signals), *args)
    except asyncpg.NumericValueOutOfRangeError:
        # Values near float8's limit (valid on the wire: finite) overflow a float8 sum; the
        # same answer in numeric, only then (several times the CPU).
        rows = await conn.fetch(_downsample_sql(parts, signals, exact=True), *args)
    # Columns at C speed: a Python loop over every value cost the API more than the query.
    t, *columns = (
        (list(c) for c in zip(*rows, strict=True))
        if rows
        else ([] for _ in range(1 + 3 * len(signals)))
    )
    series = Series(
        t=t,
        values={
            s: {stat: columns[3 * k + j] for j, stat in enumerate(("min", "max", "avg"))}
            for k, s in enumerate(signals)
        },
        sources=[table for table in [*chain, "sample"] if table in used],
    )
    return p, series

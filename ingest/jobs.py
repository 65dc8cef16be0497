"""Maintenance run by ingest itself: sequence gaps, silent machines, rollups, retention.

Each job takes a transaction-level advisory lock, so with N workers exactly one runs it at a time
and the others skip it. All are idempotent. Rollups run only on the Apache edition (the community
edition has continuous aggregates with policies, migration 0003); retention runs on both
(``drop_chunks`` is in both).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import asyncpg

from ingest.config import IngestSettings
from ingest.records import WIDE_SIGNALS

__all__ = [
    "LATE_AFTER",
    "ROLLUPS",
    "ROLLUP_BATCH",
    "ROLLUP_SETTLE",
    "STATE_HOURS_SETTLE",
    "STATE_HOURS_STEP",
    "merge_spans",
    "refresh_state_hours",
    "rollup_sql",
    "run_jobs",
    "run_upkeep_jobs",
    "run_watch_jobs",
]

log = logging.getLogger(__name__)

_LOCK = 0x4172626F7201  # distinct from the migration lock
ROLLUPS: dict[str, timedelta] = {
    "sample_1m": timedelta(minutes=1),
    "sample_5m": timedelta(minutes=5),
    "sample_1h": timedelta(hours=1),
}
#: How much of each rollup is written at once: its final buckets of whole batches, ordered by
#: machine. A minute of `sample_1m` is one row per machine whatever the order, and it must be
#: fresh (readers take the rest from `sample`); `sample_5m` is written an hour at a time, so a
#: machine's twelve rows of an hour share a heap page or two instead of twelve (a week of one
#: machine: ~170-340 pages instead of 2,016), with `sample_1m` serving the hour in between.
ROLLUP_BATCH: dict[str, timedelta] = {
    "sample_1m": timedelta(minutes=1),
    "sample_5m": timedelta(hours=1),
    "sample_1h": timedelta(hours=1),
}
#: A bucket is written once it ended this long ago, and never again unless late samples land in
#: it. Samples committed later than that are late: the writer notes them (`LATE_AFTER`, which
#: leaves the commit a minute to become visible before the job reads the bucket).
ROLLUP_SETTLE = timedelta(minutes=2)
LATE_AFTER = ROLLUP_SETTLE / 2
#: Late notes of one machine this close together are redone as one span.
LATE_MERGE_GAP = timedelta(hours=1)
#: An hour is stored once it ended this long ago: longer than any ingest transaction, so an event
#: of the hour not yet visible to the job is written after the hour ended and marks it dirty
#: (migration 0005's trigger).
STATE_HOURS_SETTLE = timedelta(minutes=5)
#: Hours stored per run in each direction (new hours; history on the first runs): about a second
#: of database time per day of a 1,000-machine fleet (and half a second for its hour boundaries,
#: migration 0006), so one run stays short.
STATE_HOURS_STEP = timedelta(days=1)

# `next_seq - seq > 1`, not `next_seq > seq + 1`: seq may be 2^63-1 (the protocol's largest),
# and one overflow made the whole job fail on every run while that row was in the lookback.
# A hole is recorded once the message after it has been stored `settle` ago, not the one before
# it: after an outage the one before is minutes old while a replayed backlog is still being
# committed out of order by two workers, and a job run in that second recorded the whole hole,
# which the replay then filled in part, leaving an open gap over stored seqs (make drills,
# disk-buffer drill: 236 seqs in open gaps, 232 missing).
_GAPS_SQL = """
WITH recent AS (
    SELECT machine_id, session, seq,
           lead(seq) OVER (PARTITION BY machine_id, session ORDER BY seq) AS next_seq,
           lead(received_at) OVER (PARTITION BY machine_id, session ORDER BY seq) AS next_received
    FROM message_ledger
    WHERE ts > now() - $1::interval AND seq >= 0
)
INSERT INTO sequence_gap (machine_id, session, first_missing, last_missing)
SELECT machine_id, session, seq + 1, next_seq - 1 FROM recent
WHERE next_seq - seq > 1 AND next_received < now() - $2::interval
ON CONFLICT DO NOTHING
"""
# A session's lost head (seq 0..k-1 never arrived; the protocol starts every session at 0): the
# lowest seq seen recently is above 0 and the ledger holds nothing lower for that session at all
# (not only within the lookback: a long session's head is older than the window, not lost).
_HEAD_GAPS_SQL = """
WITH heads AS (
    SELECT machine_id, session, min(seq) AS first_seq, min(received_at) AS first_received
    FROM message_ledger
    WHERE ts > now() - $1::interval AND seq >= 0
    GROUP BY machine_id, session
)
INSERT INTO sequence_gap (machine_id, session, first_missing, last_missing)
SELECT h.machine_id, h.session, 0, h.first_seq - 1 FROM heads h
WHERE h.first_seq > 0 AND h.first_received < now() - $2::interval
  AND NOT EXISTS (
      SELECT 1 FROM message_ledger l
      WHERE l.machine_id = h.machine_id AND l.session = h.session
        AND l.seq >= 0 AND l.seq < h.first_seq)
ON CONFLICT DO NOTHING
"""
_GAPS_FILLED_SQL = """
UPDATE sequence_gap g SET filled_at = now()
WHERE g.filled_at IS NULL AND g.source = 'v1' AND g.detected_at > now() - $1::interval
  AND (SELECT count(DISTINCT l.seq) FROM message_ledger l
       WHERE l.machine_id = g.machine_id AND l.session = g.session
         AND l.seq BETWEEN g.first_missing AND g.last_missing)
      = g.last_missing - g.first_missing + 1
"""
_SILENT_SQL = """
WITH silent AS (
    UPDATE machine SET status = 'unknown', status_since = now()
    WHERE status = 'online' AND coalesce(last_seen, status_since) < now() - $1::interval
    RETURNING id
)
INSERT INTO event (machine_id, ts, signal, value, message)
SELECT id, now(), 'status', 'unknown', 'silent' FROM silent
"""


def rollup_sql(rollup: str, *, one_machine: bool = False, exact: bool = False) -> str:
    """Insert the buckets of [$1, $2) of one rollup table from `sample` (of machine $3 only
    with `one_machine`); the caller deletes them first. `exact`: averages in numeric, for
    buckets whose float8 average overflows (both: :func:`_rewrite_buckets`)."""
    width = ROLLUPS[rollup]
    cols = ", ".join(f"{s}_avg, {s}_min, {s}_max" for s in WIDE_SIGNALS)
    avg = "avg({}::numeric)::float8" if exact else "avg({})"
    aggs = ", ".join(f"{avg.format(s)}, min({s}), max({s})" for s in WIDE_SIGNALS)
    seconds = int(width.total_seconds())
    machine = " AND machine_id = $3" if one_machine else ""
    # Table and column names are our own constants, not input.
    return f"""
INSERT INTO {rollup} (bucket, machine_id, n, {cols})
SELECT time_bucket(INTERVAL '{seconds} seconds', ts), machine_id, count(*), {aggs}
FROM sample WHERE ts >= $1 AND ts < $2{machine}
GROUP BY 1, 2 ORDER BY 2, 1
"""  # noqa: S608


async def _rewrite_buckets(
    conn: asyncpg.Connection, name: str, lo: datetime, hi: datetime, machine: int | None = None
) -> None:
    """Replace the buckets of [lo, hi) of one rollup (of `machine` only, if given) with what
    `sample` holds for them.

    PostgreSQL's float8 ``avg`` keeps a sum of squares, so one sample beyond ~1.3e154 (finite,
    valid on the wire) makes it fail with "value out of range: overflow". A bucket that cannot
    be written would hold the watermark, and every rollup of the factory, there for good: such
    a range is written again with numeric averages (exact; ~3x the CPU, so only then)."""
    one = machine is not None
    args: tuple[object, ...] = (lo, hi, machine) if one else (lo, hi)
    where = "bucket >= $1 AND bucket < $2" + (" AND machine_id = $3" if one else "")
    await conn.execute(f"DELETE FROM {name} WHERE {where}", *args)  # noqa: S608
    try:
        async with conn.transaction():  # a savepoint: the retry needs a clean state
            await conn.execute(rollup_sql(name, one_machine=one), *args)
    except asyncpg.NumericValueOutOfRangeError as exc:
        log.warning("rollups: %s over %s: float8 average overflowed (%s); numeric", name, args, exc)
        await conn.execute(rollup_sql(name, one_machine=one, exact=True), *args)


async def _locked(conn: asyncpg.Connection, key: int) -> bool:
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", key))


async def run_jobs(conn: asyncpg.Connection, settings: IngestSettings, *, rollups: bool) -> None:
    """Run every job once (each in its own transaction, skipped if another worker holds it)."""
    await run_watch_jobs(conn, settings)
    await run_upkeep_jobs(conn, settings, rollups=rollups)


async def run_watch_jobs(conn: asyncpg.Connection, settings: IngestSettings) -> None:
    """The jobs whose answers users see within seconds: sequence gaps and silent machines.

    The worker runs them on their own connection and loop, apart from `run_upkeep_jobs`: an hour
    of `sample_1h` for a 10 Hz factory is ~70 s in one transaction, and behind it a machine that
    went silent stayed "online" on the dashboard for that long."""
    async with conn.transaction():
        if await _locked(conn, _LOCK + 1):
            settle = timedelta(seconds=settings.gap_settle_s)
            await conn.execute(_GAPS_SQL, settings.gap_lookback, settle)
            await conn.execute(_HEAD_GAPS_SQL, settings.gap_lookback, settle)
            await conn.execute(_GAPS_FILLED_SQL, settings.gap_lookback)
    async with conn.transaction():
        if await _locked(conn, _LOCK + 2):
            await conn.execute(_SILENT_SQL, timedelta(seconds=settings.silence_timeout_s))


async def run_upkeep_jobs(
    conn: asyncpg.Connection, settings: IngestSettings, *, rollups: bool
) -> None:
    """The jobs that may take long: rollups (Apache edition), retention, state hours."""
    if rollups:
        for name in ROLLUPS:
            async with conn.transaction():
                if await _locked(conn, _LOCK + 3):
                    await _rollup(conn, name, settings.rollup_step)
        async with conn.transaction():
            if await _locked(conn, _LOCK + 3):
                await _rollup_late(conn)
    async with conn.transaction():
        if await _locked(conn, _LOCK + 4):
            await _retention(conn, settings)
    async with conn.transaction():
        if await _locked(conn, _LOCK + 5):
            await refresh_state_hours(conn)


async def refresh_state_hours(
    conn: asyncpg.Connection,
    *,
    settle: timedelta = STATE_HOURS_SETTLE,
    step: timedelta = STATE_HOURS_STEP,
) -> None:
    """Keep `state_hour` (migration 0005) and the state in force at each of its hours' starts,
    `state_edge` (0006; both written by state_hour_refresh): recompute machines marked dirty by
    late events, then extend the stored hours by up to `step` forward (to the last hour ended
    `settle` ago) and backward (to the oldest execution or status event). Call inside a
    transaction."""
    if await conn.fetchval("SELECT to_regclass('state_range') IS NULL"):
        return  # a database not migrated to 0005 yet (ingest --no-migrate)
    # Marks first: the events behind every mark taken here are visible to the statements below.
    dirty = await conn.fetch("DELETE FROM state_hour_dirty RETURNING machine_id, hour")
    target = await conn.fetchval(
        "SELECT time_bucket(INTERVAL '1 hour', now() - $1::interval)", settle
    )
    span = await conn.fetchrow("SELECT lo, hi FROM state_range")
    # Hours retention has dropped (or would drop) are not filled in again from older events.
    horizon = await _state_hour_horizon(conn)
    if span is None:
        oldest = await conn.fetchval(
            "SELECT time_bucket(INTERVAL '1 hour', min(ts)) FROM event "
            "WHERE signal IN ('execution', 'status') AND ts >= $1",
            horizon,
        )
        if oldest is None:
            return  # nothing to store yet; the API computes everything from events
        lo = hi = target
    else:
        lo, hi = span["lo"], span["hi"]
        # A late event changes its hour and the following ones (until the signal's next event):
        # redo the machine from there, in the range stored so far.
        since: dict[int, datetime] = {}
        for r in dirty:
            if r["hour"] < hi:
                since[r["machine_id"]] = min(since.get(r["machine_id"], r["hour"]), r["hour"])
        by_start: dict[datetime, list[int]] = {}
        for mid, hour in since.items():
            by_start.setdefault(max(hour, lo), []).append(mid)
        for start, mids in by_start.items():
            await conn.execute("SELECT state_hour_refresh($1, $2, $3)", start, hi, mids)
        oldest = await conn.fetchval(
            "SELECT time_bucket(INTERVAL '1 hour', min(ts)) FROM event "
            "WHERE signal IN ('execution', 'status') AND ts < $1 AND ts >= $2",
            lo, horizon,
        )  # fmt: skip
    new_hi = min(target, hi + step)
    if new_hi > hi:
        await conn.execute("SELECT state_hour_refresh($1, $2)", hi, new_hi)
        hi = new_hi
    if oldest is not None and oldest < lo:
        new_lo = max(oldest, lo - step)
        await conn.execute("SELECT state_hour_refresh($1, $2)", new_lo, lo)
        lo = new_lo
    await conn.execute(
        "INSERT INTO state_range (one, lo, hi) VALUES (true, $1, $2) "
        "ON CONFLICT (one) DO UPDATE SET lo = EXCLUDED.lo, hi = EXCLUDED.hi",
        lo, hi,
    )  # fmt: skip


async def _state_hour_horizon(conn: asyncpg.Connection) -> datetime:
    """The first hour `state_hour` keeps (its `retention_policy` row, migration 0009)."""
    value: datetime | None = await conn.fetchval(
        "SELECT time_bucket(INTERVAL '1 hour', now() - keep) + INTERVAL '1 hour' "
        "FROM retention_policy WHERE hypertable = 'state_hour'"
    )
    return value or datetime(1, 1, 1, tzinfo=UTC)


async def _state_hour_retention(conn: asyncpg.Connection) -> None:
    if await conn.fetchval("SELECT to_regclass('state_range') IS NULL"):
        return
    horizon = await _state_hour_horizon(conn)
    span = await conn.fetchrow("SELECT lo, hi FROM state_range")
    if span is None or span["lo"] >= horizon:
        return
    await conn.execute("DELETE FROM state_hour WHERE hour < $1", horizon)
    if await conn.fetchval("SELECT to_regclass('state_edge') IS NOT NULL"):
        await conn.execute("DELETE FROM state_edge WHERE hour < $1", horizon)
    # Everything stored may be older than the horizon: then nothing is, from the horizon on.
    await conn.execute("UPDATE state_range SET lo = $1, hi = greatest($1, hi)", horizon)
    log.info("retention: state_hour and state_edge before %s dropped", horizon)


async def _rollup(conn: asyncpg.Connection, name: str, step: timedelta) -> None:
    """Write the buckets that became final since the last run, in whole batches
    (`ROLLUP_BATCH`), at most `step` of them."""
    batch = ROLLUP_BATCH[name]
    seconds = int(batch.total_seconds())
    mark: datetime | None = await conn.fetchval(
        "SELECT done_until FROM rollup_watermark WHERE rollup = $1", name
    )
    final: datetime = await conn.fetchval(
        f"SELECT time_bucket(INTERVAL '{seconds} seconds', now() - $1::interval)", ROLLUP_SETTLE
    )
    if mark is not None and mark >= final:
        return
    lo = mark
    if mark is None or final - mark > step:
        # Far behind (first run, or no data for a while): start at the first chunk holding
        # data instead of walking empty buckets. `sample` has no index on time alone, and its
        # chunks' ranges answer without reading rows.
        first: datetime | None = await conn.fetchval(
            "SELECT min(range_start) FROM timescaledb_information.chunks "
            "WHERE hypertable_name = 'sample' AND range_start < $2::timestamptz "
            "AND range_end > coalesce($1::timestamptz, '-infinity'::timestamptz)",
            mark, final,
        )  # fmt: skip
        if first is None:
            lo = None  # nothing stored before `final`: the watermark moves up to it
        else:
            first = await conn.fetchval(
                f"SELECT time_bucket(INTERVAL '{seconds} seconds', $1::timestamptz)", first
            )
            lo = first if mark is None else max(mark, first)
    if lo is not None and lo < final:
        # Whole batches from the batch `lo` is in (a watermark left mid-batch by an earlier
        # version realigns on the first run).
        start = await conn.fetchval(
            f"SELECT time_bucket(INTERVAL '{seconds} seconds', $1::timestamptz)", lo
        )
        hi = min(final, start + max(step, batch) // batch * batch)
        await _rewrite_buckets(conn, name, lo, hi)
    else:
        hi = final
    await conn.execute(
        "INSERT INTO rollup_watermark (rollup, done_until) VALUES ($1, $2) "
        "ON CONFLICT (rollup) DO UPDATE SET done_until = EXCLUDED.done_until",
        name, hi,
    )  # fmt: skip


async def _rollup_late(conn: asyncpg.Connection, limit: int = 500) -> int:
    """Redo the final buckets that late samples landed in (`rollup_dirty`, noted by the writer in
    the samples' own transaction); returns how many notes were taken."""
    notes = await conn.fetch(
        "DELETE FROM rollup_dirty WHERE ctid = ANY(ARRAY("
        "SELECT ctid FROM rollup_dirty ORDER BY noted_at LIMIT $1)) "
        "RETURNING machine_id, lo, hi",
        limit,
    )
    if not notes:
        return 0
    marks = {
        r["rollup"]: r["done_until"]
        for r in await conn.fetch("SELECT rollup, done_until FROM rollup_watermark")
    }
    # A bucket is redone from `sample` alone, so only while retention has dropped none of its
    # samples: redoing an older one would replace its stored figures with the late rows only.
    horizon: datetime | None = await conn.fetchval(
        "SELECT now() - keep FROM retention_policy WHERE hypertable = 'sample'"
    )
    skipped = 0
    for mid, lo, hi in merge_spans([(r[0], r[1], r[2]) for r in notes], LATE_MERGE_GAP):
        for name, width in ROLLUPS.items():
            mark = marks.get(name)
            if mark is None:
                continue  # nothing of it is final yet: the regular run will include them
            seconds = int(width.total_seconds())
            blo, bhi, first_whole = await conn.fetchrow(
                f"SELECT time_bucket(INTERVAL '{seconds} seconds', $1::timestamptz), "
                f"time_bucket(INTERVAL '{seconds} seconds', $2::timestamptz) + $3::interval, "
                f"time_bucket(INTERVAL '{seconds} seconds', $4::timestamptz) + $3::interval",
                lo, hi, width, horizon,
            )  # fmt: skip
            if first_whole is not None and blo < first_whole:
                skipped += 1
                blo = first_whole
            bhi = min(bhi, mark)  # buckets from the watermark on are still to be written
            if blo >= bhi:
                continue
            await _rewrite_buckets(conn, name, blo, bhi, mid)
    if skipped:
        log.warning(
            "rollups: late samples older than sample retention (since %s) left out of %d "
            "rollup spans: their buckets keep the figures stored before",
            horizon, skipped,
        )  # fmt: skip
    return len(notes)


def merge_spans(
    spans: list[tuple[int, datetime, datetime]], gap: timedelta
) -> list[tuple[int, datetime, datetime]]:
    """Per machine, the spans merged where they overlap or lie within `gap` of each other (a
    replayed backlog arrives as many small notes; two far-apart ones stay two)."""
    out: list[tuple[int, datetime, datetime]] = []
    for mid, lo, hi in sorted(spans):
        if out and out[-1][0] == mid and lo <= out[-1][2] + gap:
            out[-1] = (mid, out[-1][1], max(out[-1][2], hi))
        else:
            out.append((mid, lo, hi))
    return out


async def _retention(conn: asyncpg.Connection, settings: IngestSettings) -> None:
    for table, keep in settings.retention.items():
        await conn.execute(
            "INSERT INTO retention_policy (hypertable, keep) VALUES ($1, $2) "
            "ON CONFLICT (hypertable) DO UPDATE SET keep = EXCLUDED.keep",
            table, keep,
        )  # fmt: skip
    rows = await conn.fetch(
        "SELECT p.hypertable, p.keep FROM retention_policy p "
        "JOIN timescaledb_information.hypertables h ON h.hypertable_name = p.hypertable "
        "UNION ALL SELECT p.hypertable, p.keep FROM retention_policy p "
        "JOIN timescaledb_information.continuous_aggregates c ON c.view_name = p.hypertable"
    )
    for r in rows:
        dropped = await conn.fetch(
            "SELECT drop_chunks($1::regclass, older_than => now() - $2::interval)",
            r["hypertable"], r["keep"],
        )  # fmt: skip
        if dropped:
            log.info("retention: dropped %d chunks of %s", len(dropped), r["hypertable"])
    await _state_hour_retention(conn)

"""Maintenance run by ingest itself: sequence gaps, silent machines, rollups, retention.

Each job takes a transaction-level advisory lock, so with N workers exactly one runs it at a time
and the others skip it. All are idempotent. Rollups run only on the Apache edition (the community
edition has continuous aggregates with policies, migration 0003); retention runs on both
(``drop_chunks`` is in both).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import asyncpg

from ingest.config import IngestSettings
from ingest.records import WIDE_SIGNALS

__all__ = [
    "ROLLUPS",
    "STATE_HOURS_SETTLE",
    "STATE_HOURS_STEP",
    "refresh_state_hours",
    "rollup_sql",
    "run_jobs",
]

log = logging.getLogger(__name__)

_LOCK = 0x4172626F7201  # distinct from the migration lock
ROLLUPS: dict[str, timedelta] = {"sample_1m": timedelta(minutes=1), "sample_1h": timedelta(hours=1)}
#: An hour is stored once it ended this long ago: longer than any ingest transaction, so an event
#: of the hour not yet visible to the job is written after the hour ended and marks it dirty
#: (migration 0005's trigger).
STATE_HOURS_SETTLE = timedelta(minutes=5)
#: Hours stored per run in each direction (new hours; history on the first runs): about a second
#: of database time per day of a 1,000-machine fleet (and half a second for its hour boundaries,
#: migration 0006), so one run stays short.
STATE_HOURS_STEP = timedelta(days=1)

_GAPS_SQL = """
WITH recent AS (
    SELECT machine_id, session, seq,
           lead(seq) OVER (PARTITION BY machine_id, session ORDER BY seq) AS next_seq,
           received_at
    FROM message_ledger
    WHERE ts > now() - $1::interval AND seq >= 0
)
INSERT INTO sequence_gap (machine_id, session, first_missing, last_missing)
SELECT machine_id, session, seq + 1, next_seq - 1 FROM recent
WHERE next_seq > seq + 1 AND received_at < now() - $2::interval
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


def rollup_sql(rollup: str) -> str:
    """Insert the buckets of [$1, $2) of one rollup table from `sample` (delete them first)."""
    width = ROLLUPS[rollup]
    cols = ", ".join(f"{s}_avg, {s}_min, {s}_max" for s in WIDE_SIGNALS)
    aggs = ", ".join(f"avg({s}), min({s}), max({s})" for s in WIDE_SIGNALS)
    seconds = int(width.total_seconds())
    # Table and column names are our own constants, not input.
    return f"""
INSERT INTO {rollup} (bucket, machine_id, n, {cols})
SELECT time_bucket(INTERVAL '{seconds} seconds', ts), machine_id, count(*), {aggs}
FROM sample WHERE ts >= $1 AND ts < $2
GROUP BY 1, 2
"""  # noqa: S608


async def _locked(conn: asyncpg.Connection, key: int) -> bool:
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", key))


async def run_jobs(conn: asyncpg.Connection, settings: IngestSettings, *, rollups: bool) -> None:
    """Run every job once (each in its own transaction, skipped if another worker holds it)."""
    async with conn.transaction():
        if await _locked(conn, _LOCK + 1):
            settle = timedelta(seconds=settings.gap_settle_s)
            await conn.execute(_GAPS_SQL, settings.gap_lookback, settle)
            await conn.execute(_HEAD_GAPS_SQL, settings.gap_lookback, settle)
            await conn.execute(_GAPS_FILLED_SQL, settings.gap_lookback)
    async with conn.transaction():
        if await _locked(conn, _LOCK + 2):
            await conn.execute(_SILENT_SQL, timedelta(seconds=settings.silence_timeout_s))
    if rollups:
        for name, width in ROLLUPS.items():
            async with conn.transaction():
                if await _locked(conn, _LOCK + 3):
                    await _rollup(conn, name, width, settings.rollup_lookback)
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
    if span is None:
        oldest = await conn.fetchval(
            "SELECT time_bucket(INTERVAL '1 hour', min(ts)) FROM event "
            "WHERE signal IN ('execution', 'status')"
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
            "WHERE signal IN ('execution', 'status') AND ts < $1",
            lo,
        )
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


async def _rollup(
    conn: asyncpg.Connection, name: str, width: timedelta, lookback: timedelta
) -> None:
    # Re-roll the trailing window, the current partial bucket included (so the newest data shows
    # and late samples inside the window are picked up); buckets before `current` are final.
    seconds = int(width.total_seconds())
    current = await conn.fetchval(f"SELECT time_bucket(INTERVAL '{seconds} seconds', now())")
    hi = current + width
    lo = current - lookback
    await conn.execute(f"DELETE FROM {name} WHERE bucket >= $1 AND bucket < $2", lo, hi)  # noqa: S608
    await conn.execute(rollup_sql(name), lo, hi)
    await conn.execute(
        "INSERT INTO rollup_watermark (rollup, done_until) VALUES ($1, $2) "
        "ON CONFLICT (rollup) DO UPDATE SET done_until = EXCLUDED.done_until",
        name, current,
    )  # fmt: skip


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

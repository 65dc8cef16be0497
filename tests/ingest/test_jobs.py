"""Ingest's own jobs on the Apache edition: 1 min / 5 min / 1 h rollups, per-table retention, gap
detection from the ledger."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import psycopg
import pytest

from ingest.config import IngestSettings
from ingest.jobs import ROLLUP_SETTLE, merge_spans, run_jobs
from ingest.migrate import apply_migrations

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def db(fresh_database: str) -> str:
    _, features = apply_migrations(fresh_database)
    if features.continuous_aggregates:
        pytest.skip("community edition: rollups are continuous aggregates, not our job")
    return fresh_database


def _run(db: str, **overrides: object) -> None:
    settings = IngestSettings(database_url=db, mqtt_url="mqtt://unused", **overrides)  # type: ignore[arg-type]

    async def go() -> None:
        conn = await asyncpg.connect(db)
        try:
            await run_jobs(conn, settings, rollups=True)
        finally:
            await conn.close()

    asyncio.run(go())


def _catch_up(db: str, **overrides: object) -> None:
    """Run the jobs until the rollups' watermarks stop moving (each run writes at most
    `rollup_step` of each rollup)."""
    before = None
    for _ in range(20):
        _run(db, **overrides)
        with psycopg.connect(db) as conn:
            marks = conn.execute("SELECT rollup, done_until FROM rollup_watermark").fetchall()
        if marks == before:
            return
        before = marks
    raise AssertionError(f"rollups still moving after 20 runs: {before}")


def test_rollups_retention_and_gaps(db: str) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    hour = now.replace(minute=0) - timedelta(hours=2)  # final for every rollup
    with psycopg.connect(db, autocommit=True) as conn:
        mid = conn.execute(
            "INSERT INTO machine (site, machine) VALUES ('s', 'm') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        # Two minutes of 1 Hz samples, and one sample 200 days old.
        for i in range(120):
            conn.execute(
                "INSERT INTO sample (machine_id, ts, spindle_speed, spindle_load) "
                "VALUES (%s, %s, %s, 10)",
                [mid, hour + timedelta(minutes=4, seconds=i), float(i)],
            )
        conn.execute(
            "INSERT INTO sample (machine_id, ts, spindle_speed) VALUES (%s, %s, 1)",
            [mid, hour - timedelta(days=200)],
        )
        for seq in (0, 1, 4):
            conn.execute(
                "INSERT INTO message_ledger VALUES (%s, 'sess', %s, %s, now() - interval '1 min', "
                "'telemetry', 1)",
                [mid, seq, now + timedelta(seconds=seq)],
            )
    _catch_up(db, retention={"sample": timedelta(days=100)}, gap_settle_s=0)
    with psycopg.connect(db) as conn:
        minutes = conn.execute(
            "SELECT bucket, n, spindle_speed_avg, spindle_speed_min, spindle_speed_max, "
            "spindle_load_avg FROM sample_1m WHERE machine_id = %s ORDER BY bucket",
            [mid],
        ).fetchall()
        fives = conn.execute(
            "SELECT bucket, n, spindle_speed_avg FROM sample_5m WHERE machine_id = %s "
            "ORDER BY bucket",
            [mid],
        ).fetchall()
        hours = conn.execute(
            "SELECT bucket, n FROM sample_1h WHERE machine_id = %s ORDER BY bucket", [mid]
        ).fetchall()
        marks = dict(conn.execute("SELECT rollup, done_until FROM rollup_watermark").fetchall())
        old = conn.execute("SELECT count(*) FROM sample WHERE ts < now() - interval '100 days'")
        keep = conn.execute("SELECT keep FROM retention_policy WHERE hypertable = 'sample'")
        gaps = conn.execute("SELECT first_missing, last_missing FROM sequence_gap").fetchall()
        old_n, keep_v = old.fetchone(), keep.fetchone()
    # The 200-day-old sample was rolled up before retention dropped its raw chunk: rollups are
    # kept longer than samples (1 year), so its minute, five minutes and hour stay.
    assert [(m[1], m[2], m[3], m[4], m[5]) for m in minutes] == [
        (1, 1.0, 1.0, 1.0, None),
        (60, 29.5, 0.0, 59.0, 10.0),
        (60, 89.5, 60.0, 119.0, 10.0),
    ]
    assert minutes[1][0] == hour + timedelta(minutes=4)
    # 04:00-04:59 in the first five minutes (60 samples), 05:00-05:59 in the next.
    assert fives == [
        (hour - timedelta(days=200), 1, 1.0),
        (hour, 60, 29.5),
        (hour + timedelta(minutes=5), 60, 89.5),
    ]
    assert hours == [(hour - timedelta(days=200), 1), (hour, 120)]
    # Final buckets end two minutes (ROLLUP_SETTLE) before now at the latest.
    assert marks["sample_1m"] > now - timedelta(minutes=2)
    assert marks["sample_1m"] <= datetime.now(UTC) - ROLLUP_SETTLE
    assert old_n == (0,), "the 200-day-old chunk was dropped"
    assert keep_v == (timedelta(days=100),)
    assert gaps == [(2, 3)]
    _run(db)  # idempotent: a second run changes nothing
    with psycopg.connect(db) as conn:
        again = conn.execute("SELECT count(*), sum(n) FROM sample_1m").fetchone()
    assert again == (3, 121)


def note_late(conn: psycopg.Connection[Any], mid: int, ts: datetime) -> None:
    """What the writer does in the samples' transaction when they are late (ingest/writer.py)."""
    conn.execute("INSERT INTO rollup_dirty (machine_id, lo, hi) VALUES (%s, %s, %s)", [mid, ts, ts])


def test_a_final_bucket_is_not_read_again_unless_noted_late(db: str) -> None:
    """Each run reads only the samples of buckets that became final since the last run (the
    job once re-read 3 hours of every machine every 30 s: ~70 s of database time per run for
    1,000 machines at 1 Hz). A late sample is redone because the writer notes it."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    with psycopg.connect(db, autocommit=True) as conn:
        mid = conn.execute(
            "INSERT INTO machine (site, machine) VALUES ('s', 'late') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO sample (machine_id, ts, spindle_speed) VALUES (%s, %s, 10)",
            [mid, hour + timedelta(minutes=30)],
        )
        note_late(conn, mid, hour + timedelta(minutes=30))
    _catch_up(db)
    with psycopg.connect(db, autocommit=True) as conn:
        # Behind the job's back (no note): stays out of the rollup.
        conn.execute(
            "INSERT INTO sample (machine_id, ts, spindle_speed) VALUES (%s, %s, 20)",
            [mid, hour + timedelta(minutes=30, seconds=1)],
        )
    _run(db)
    query = "SELECT n, spindle_speed_max FROM sample_1h WHERE machine_id = %s"
    with psycopg.connect(db) as conn:
        assert conn.execute(query, [mid]).fetchall() == [(1, 10.0)]
        note_late(conn, mid, hour + timedelta(minutes=30, seconds=1))
        conn.commit()
    _run(db)
    with psycopg.connect(db) as conn:
        assert conn.execute(query, [mid]).fetchall() == [(2, 20.0)]
        one = conn.execute(
            "SELECT n, spindle_speed_avg FROM sample_1m WHERE machine_id = %s", [mid]
        ).fetchall()
        left = conn.execute("SELECT count(*) FROM rollup_dirty").fetchone()
    assert one == [(2, 15.0)]
    assert left == (0,)


def test_a_late_sample_older_than_raw_retention_leaves_its_rollups_alone(db: str) -> None:
    """Its bucket's other samples are gone: redoing it from `sample` would replace 60 samples'
    figures with the one late sample's."""
    old = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=120)
    with psycopg.connect(db, autocommit=True) as conn:
        mid = conn.execute(
            "INSERT INTO machine (site, machine) VALUES ('s', 'old') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("UPDATE retention_policy SET keep = '100 days' WHERE hypertable = 'sample'")
        for table in ("sample_1m", "sample_5m", "sample_1h"):  # rolled up before the drop
            conn.execute(
                f"INSERT INTO {table} (bucket, machine_id, n, spindle_speed_max) "  # noqa: S608
                f"VALUES (date_bin(INTERVAL '1 {'hour' if table == 'sample_1h' else 'minute'}',"
                " %s, 'epoch'), %s, 60, 5)",
                [old, mid],
            )
        conn.execute(
            "INSERT INTO sample (machine_id, ts, spindle_speed) VALUES (%s, %s, 99)", [mid, old]
        )
        note_late(conn, mid, old)
    _run(db)
    with psycopg.connect(db) as conn:
        kept = conn.execute(
            "SELECT n, spindle_speed_max FROM sample_1m WHERE machine_id = %s", [mid]
        ).fetchall()
        hours = conn.execute(
            "SELECT n, spindle_speed_max FROM sample_1h WHERE machine_id = %s", [mid]
        ).fetchall()
        left = conn.execute("SELECT count(*) FROM rollup_dirty").fetchone()
    assert kept == [(60, 5.0)] and hours == [(60, 5.0)]
    assert left == (0,)


def test_merge_spans_joins_near_notes_of_one_machine_only() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    m = timedelta(minutes=1)
    spans = [(2, t, t + m), (1, t + 90 * m, t + 91 * m), (1, t, t + 2 * m), (1, t + m, t + 30 * m)]
    assert merge_spans(spans, timedelta(hours=1)) == [
        (1, t, t + 91 * m),  # 30 -> 90 minutes: within the hour
        (2, t, t + m),
    ]
    assert merge_spans(spans, timedelta(minutes=10)) == [
        (1, t, t + 30 * m),
        (1, t + 90 * m, t + 91 * m),
        (2, t, t + m),
    ]


def test_a_lost_session_head_is_a_gap(db: str) -> None:
    """Bug 5 of docs/reliability.md: seq 0..k-1 of a session never arrived (e.g. an edge buffer
    dropped its oldest messages). A session whose head is older than the lookback is not a gap."""
    now = datetime.now(UTC)
    with psycopg.connect(db, autocommit=True) as conn:
        mid = conn.execute(
            "INSERT INTO machine (site, machine) VALUES ('s', 'head') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]

        def ledger(session: str, seq: int, age: timedelta) -> None:
            conn.execute(
                "INSERT INTO message_ledger VALUES (%s, %s, %s, %s, %s, 'telemetry', 1)",
                [mid, session, seq, now - age, now - age],
            )

        for seq in (3, 4, 6):  # 0..2 lost, and 5
            ledger("lost-head", seq, timedelta(minutes=2))
        for seq in (0, 1, 2):  # complete
            ledger("whole", seq, timedelta(minutes=2))
        ledger("long", 0, timedelta(hours=5))  # head outside the 1 h lookback, still there
        for seq in (900, 901):
            ledger("long", seq, timedelta(minutes=2))
        ledger("fresh", 7, timedelta(seconds=1))  # not settled yet (settle 30 s)
    _run(db, gap_settle_s=30)
    with psycopg.connect(db) as conn:
        gaps = conn.execute(
            "SELECT session, first_missing, last_missing FROM sequence_gap "
            "WHERE machine_id = %s ORDER BY session, first_missing",
            [mid],
        ).fetchall()
    assert gaps == [("lost-head", 0, 2), ("lost-head", 5, 5)]
    # The head arrives late: the gap is marked filled, not removed.
    with psycopg.connect(db, autocommit=True) as conn:
        for seq in (0, 1, 2):
            conn.execute(
                "INSERT INTO message_ledger VALUES (%s, 'lost-head', %s, now(), now(), "
                "'telemetry', 1)",
                [mid, seq],
            )
    _run(db, gap_settle_s=30)
    with psycopg.connect(db) as conn:
        filled = conn.execute(
            "SELECT first_missing, filled_at IS NOT NULL FROM sequence_gap "
            "WHERE machine_id = %s AND session = 'lost-head' ORDER BY first_missing",
            [mid],
        ).fetchall()
    assert filled == [(0, True), (5, False)]


def test_extreme_but_valid_values_and_seqs_do_not_stop_the_jobs(db: str) -> None:
    """A value of 1e200 (finite, valid on the wire) overflowed PostgreSQL's float8 avg, and a seq
    of 2^63-1 (the protocol's largest) overflowed the gap query: either failed the job on every
    run, which would hold every machine's rollups or gap detection."""
    top = 2**63 - 1
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    with psycopg.connect(db, autocommit=True) as conn:
        mid = conn.execute(
            "INSERT INTO machine (site, machine) VALUES ('s', 'huge') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        for k, value in enumerate((1e200, 3e200, -1e300, 1e300)):
            ts = hour + timedelta(minutes=k // 2, seconds=k)
            conn.execute(
                "INSERT INTO sample (machine_id, ts, spindle_speed) VALUES (%s, %s, %s)",
                [mid, ts, value],
            )
            note_late(conn, mid, ts)
        for seq in (top - 3, top - 1, top):
            conn.execute(
                "INSERT INTO message_ledger VALUES (%s, 'big', %s, %s, now() - interval '1 min', "
                "'telemetry', 1)",
                [mid, seq, datetime.now(UTC) - timedelta(minutes=5)],
            )
    _catch_up(db, gap_settle_s=0)
    with psycopg.connect(db) as conn:
        minutes = conn.execute(
            "SELECT n, spindle_speed_avg, spindle_speed_min, spindle_speed_max FROM sample_1m "
            "WHERE machine_id = %s ORDER BY bucket",
            [mid],
        ).fetchall()
        hours = conn.execute(
            "SELECT n, spindle_speed_avg FROM sample_1h WHERE machine_id = %s", [mid]
        ).fetchall()
        gaps = conn.execute(
            "SELECT first_missing, last_missing FROM sequence_gap "
            "WHERE machine_id = %s AND session = 'big' ORDER BY first_missing",
            [mid],
        ).fetchall()
    assert minutes == [(2, 2e200, 1e200, 3e200), (2, 0.0, -1e300, 1e300)]
    assert hours == [(4, 1e200)]  # (1e200 + 3e200 - 1e300 + 1e300) / 4, exactly
    assert gaps == [(0, top - 4), (top - 2, top - 2)]  # the session's lost head, and the hole


def test_a_hole_waits_for_the_message_after_it_to_settle(db: str) -> None:
    """After an outage the message before a hole is minutes old while the replayed backlog is
    still being committed (two workers, out of order): the hole is not a gap until the message
    after it has been stored gap_settle_s ago. Recording it earlier left open gaps over seqs the
    replay then stored (make drills, disk-buffer drill)."""
    with psycopg.connect(db, autocommit=True) as conn:
        mid = conn.execute(
            "INSERT INTO machine (site, machine) VALUES ('s', 'replay') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        ledger = (
            "INSERT INTO message_ledger VALUES (%s, 'r', %s, now() - interval '5 min', "
            "now() - %s::interval, 'telemetry', 1)"
        )
        conn.execute(ledger, [mid, 0, "10 minutes"])  # before the outage
        conn.execute(ledger, [mid, 5, "1 second"])  # just committed, 1..4 may still come
    query = "SELECT first_missing, last_missing FROM sequence_gap WHERE machine_id = %s"
    _run(db, gap_settle_s=10)
    with psycopg.connect(db, autocommit=True) as conn:
        assert conn.execute(query, [mid]).fetchall() == []
        conn.execute(ledger, [mid, 2, "1 second"])  # part of the replay arrives
        conn.execute(
            "UPDATE message_ledger SET received_at = received_at - interval '1 minute' "
            "WHERE machine_id = %s AND seq IN (2, 5)",
            [mid],
        )
    _run(db, gap_settle_s=10)
    with psycopg.connect(db) as conn:
        assert sorted(conn.execute(query, [mid]).fetchall()) == [(1, 1), (3, 4)]

"""Ingest's state_hour job (migration 0005): seconds per execution state per machine and hour,
stored once the hour has ended, redone when a late event lands in a stored hour."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import psycopg
import pytest

from ingest.config import IngestSettings
from ingest.jobs import STATE_HOURS_SETTLE, run_jobs
from ingest.migrate import apply_migrations

pytestmark = pytest.mark.services

_EXECUTION = "INSERT INTO event (machine_id, ts, signal, value) VALUES (%s, %s, 'execution', %s)"


@pytest.fixture(scope="module")
def db(fresh_database: str) -> str:
    apply_migrations(fresh_database)
    return fresh_database


def _run(db: str) -> None:
    settings = IngestSettings(database_url=db, mqtt_url="mqtt://unused")

    async def go() -> None:
        conn = await asyncpg.connect(db)
        try:
            await run_jobs(conn, settings, rollups=False)
        finally:
            await conn.close()

    asyncio.run(go())


def _hours(conn: psycopg.Connection, mid: int) -> dict[tuple[datetime, str | None], float]:
    rows = conn.execute(
        "SELECT hour, execution, sum(us) FROM state_hour WHERE machine_id = %s GROUP BY 1, 2",
        [mid],
    ).fetchall()
    return {(h, w): float(us) / 1e6 for h, w, us in rows if us}


def test_hours_stored_once_ended_and_redone_after_a_late_event(db: str) -> None:
    now = datetime.now(UTC)
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    start = this_hour - timedelta(hours=3)
    with psycopg.connect(db, autocommit=True) as conn:
        (mid,) = conn.execute(
            "INSERT INTO machine (site, machine) VALUES ('s', 'm') RETURNING id"
        ).fetchone() or (None,)
        # ACTIVE from 3 h ago, READY from 2 h 30 min ago; no status events (not masked).
        for ts, value in [(start, "ACTIVE"), (start + timedelta(minutes=30), "READY")]:
            conn.execute(
                _EXECUTION,
                [mid, ts, value],
            )
        _run(db)
        lo, hi = conn.execute("SELECT lo, hi FROM state_range").fetchone() or (None, None)
        # The current hour (and the last one, within the settle time after it) is not stored.
        assert (lo, hi) == (start, (now - STATE_HOURS_SETTLE).replace(minute=0, second=0,
                                                                       microsecond=0))  # fmt: skip
        hours = _hours(conn, mid)
        assert hours[(start, "ACTIVE")] == 1800 and hours[(start, "READY")] == 1800
        assert hours[(start + timedelta(hours=1), "READY")] == 3600
        assert conn.execute("SELECT count(*) FROM state_hour_dirty").fetchone() == (0,)

        # A live event (this hour) marks nothing; a late one, in the first stored hour, does.
        conn.execute(
            _EXECUTION,
            [mid, now, "STOPPED"],
        )
        assert conn.execute("SELECT count(*) FROM state_hour_dirty").fetchone() == (0,)
        late = start + timedelta(minutes=45)
        conn.execute(
            _EXECUTION,
            [mid, late, "FEED_HOLD"],
        )
        assert conn.execute("SELECT machine_id, hour FROM state_hour_dirty").fetchall() == [
            (mid, start)
        ]
        _run(db)
        hours = _hours(conn, mid)
        # The late FEED_HOLD holds from :45 on, through the next hour (no later event there).
        assert hours[(start, "READY")] == 900 and hours[(start, "FEED_HOLD")] == 900
        assert hours[(start + timedelta(hours=1), "FEED_HOLD")] == 3600
        assert (start + timedelta(hours=1), "READY") not in hours
        assert conn.execute("SELECT count(*) FROM state_hour_dirty").fetchone() == (0,)

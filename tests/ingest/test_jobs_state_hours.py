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


_STATUS = "INSERT INTO event (machine_id, ts, signal, value) VALUES (%s, %s, 'status', %s)"
# Codes as migration 0006 stores them (analytics.states.EXECUTION order, 0 = not a known word).
_READY, _ACTIVE, _FEED_HOLD, _STOPPED, _WAIT = 1, 2, 4, 5, 9


def _edges(conn: psycopg.Connection, mid: int) -> dict[datetime, tuple[int | None, int | None]]:
    rows = conn.execute(
        "SELECT hour, ex, st FROM state_edge WHERE machine_id = %s", [mid]
    ).fetchall()
    return {h: (ex, st) for h, ex, st in rows}


def _seconds(
    conn: psycopg.Connection, mid: int, lo: datetime, hi: datetime
) -> dict[tuple[str | None, bool | None], float]:
    """migration 0005/0006's state_seconds() for one machine over [lo, hi), as the API calls it
    for a window's partial hours."""
    rows = conn.execute(
        "SELECT execution, online, us FROM state_seconds(ARRAY[%s], %s, %s, %s, false)",
        [mid, lo, hi, hi],
    ).fetchall()
    return {(ex, on): us / 1e6 for ex, on, us in rows if us}


def test_the_state_at_each_stored_hour_boundary_and_late_events(db: str) -> None:
    this_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = this_hour - timedelta(hours=5)
    with psycopg.connect(db, autocommit=True) as conn:
        (mid,) = conn.execute(
            "INSERT INTO machine (site, machine) VALUES ('s', 'edges') RETURNING id"
        ).fetchone() or (None,)
        conn.execute(_STATUS, [mid, start, "online"])
        conn.execute(_EXECUTION, [mid, start, "ACTIVE"])  # at the boundary: in force at it
        conn.execute(_EXECUTION, [mid, start + timedelta(minutes=30), "READY"])
        _run(db)
        edges = _edges(conn, mid)
        hours = [start + timedelta(hours=k) for k in range(4)]
        assert set(hours) <= set(edges)
        assert edges[hours[0]] == (_ACTIVE, 1)
        assert all(edges[h] == (_READY, 1) for h in hours[1:])
        # A window's partial hour, set more than an hour before it: read from the boundary.
        lo, hi = hours[2] + timedelta(minutes=20), hours[2] + timedelta(minutes=40)
        assert _seconds(conn, mid, lo, hi) == {("READY", True): 1200}
        # (and read it is: a different stored code changes the answer)
        conn.execute(
            "UPDATE state_edge SET ex = %s WHERE machine_id = %s AND hour = %s",
            [_WAIT, mid, hours[2]],
        )
        assert _seconds(conn, mid, lo, hi) == {("WAIT", True): 1200}
        conn.execute(
            "UPDATE state_edge SET ex = %s WHERE machine_id = %s AND hour = %s",
            [_READY, mid, hours[2]],
        )

        # Late events: FEED_HOLD in the first hour, STOPPED at a boundary's very instant.
        conn.execute(_EXECUTION, [mid, start + timedelta(minutes=50), "FEED_HOLD"])
        conn.execute(_EXECUTION, [mid, hours[3], "STOPPED"])
        assert _edges(conn, mid)[hours[2]] == (_READY, 1)  # stale until the job runs ...
        # ... and not read meanwhile: the machine's mark sends it to its events.
        assert _seconds(conn, mid, lo, hi) == {("FEED_HOLD", True): 1200}
        late = (hours[3] + timedelta(minutes=5), hours[3] + timedelta(minutes=15))
        assert _seconds(conn, mid, *late) == {("STOPPED", True): 600}
        _run(db)
        edges = _edges(conn, mid)
        assert edges[hours[0]] == (_ACTIVE, 1)
        assert edges[hours[1]] == edges[hours[2]] == (_FEED_HOLD, 1)
        assert edges[hours[3]] == (_STOPPED, 1)  # an event at the boundary is in force at it
        assert conn.execute("SELECT count(*) FROM state_hour_dirty").fetchone() == (0,)
        assert _seconds(conn, mid, lo, hi) == {("FEED_HOLD", True): 1200}
        assert _seconds(conn, mid, *late) == {("STOPPED", True): 600}
        # Machines without status events, before any event, and the status going offline.
        conn.execute(_STATUS, [mid, hours[1] + timedelta(minutes=1), "offline"])
        _run(db)
        assert _edges(conn, mid)[hours[2]] == (_FEED_HOLD, 0)
        assert _seconds(conn, mid, lo, hi) == {("FEED_HOLD", False): 1200}
        (bare,) = conn.execute(
            "INSERT INTO machine (site, machine) VALUES ('s', 'bare') RETURNING id"
        ).fetchone() or (None,)
        conn.execute(_EXECUTION, [bare, hours[1] + timedelta(minutes=10), None])
        # A machine added since the hours were stored has no boundaries until they are redone.
        assert _edges(conn, bare) == {}
        conn.execute("SELECT state_hour_refresh(lo, hi) FROM state_range")
        _run(db)  # its late event's mark
        edges = _edges(conn, bare)
        assert edges[hours[0]] == (None, None) and edges[hours[2]] == (0, None)
        assert _seconds(conn, bare, lo, hi) == {(None, None): 1200}


def test_stored_hours_older_than_their_retention_are_dropped_and_not_refilled(db: str) -> None:
    """state_hour / state_edge (plain tables) follow their retention_policy row like the
    hypertables: without it they grew by ~3 rows per machine and hour for good."""
    this_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with psycopg.connect(db, autocommit=True) as conn:
        (mid,) = conn.execute(
            "INSERT INTO machine (site, machine) VALUES ('s', 'kept') RETURNING id"
        ).fetchone() or (None,)
        # ACTIVE since 50 days ago (an event older than the retention below), READY 2 h ago.
        conn.execute(_EXECUTION, [mid, this_hour - timedelta(days=50), "ACTIVE"])
        conn.execute(_EXECUTION, [mid, this_hour - timedelta(hours=2), "READY"])
        for _ in range(60):  # the backfill goes a day per run
            _run(db)
        lo, _hi = conn.execute("SELECT lo, hi FROM state_range").fetchone() or (None, None)
        assert lo == this_hour - timedelta(days=50)
        conn.execute("UPDATE retention_policy SET keep = '30 days' WHERE hypertable = 'state_hour'")
        _run(db)
        _run(db)  # and the backfill does not fill them in again
        horizon = this_hour - timedelta(days=30) + timedelta(hours=1)
        lo, _hi = conn.execute("SELECT lo, hi FROM state_range").fetchone() or (None, None)
        oldest = conn.execute(
            "SELECT min(hour) FROM state_hour WHERE machine_id = %s", [mid]
        ).fetchone()
        edges = conn.execute("SELECT min(hour) FROM state_edge WHERE machine_id = %s", [mid])
        oldest_edge = edges.fetchone()
        hours = _hours(conn, mid)
    assert lo == horizon
    assert oldest == (horizon,) and oldest_edge == (horizon,)
    assert hours[(horizon, "ACTIVE")] == 3600  # what is kept is unchanged
    assert hours[(this_hour - timedelta(hours=2), "READY")] == 3600

"""Utilisation (the fleet's, and one machine's without `by`) is computed in SQL (migration 0005's
state_seconds, window functions), whole hours read from `state_hour` once ingest's job has stored
them; the reference is the analytics package (analytics.states, as the route with by=program
still uses). On the same, deliberately awkward data (values in force before the window, events
after it, UNAVAILABLE, nulls and unknown words, machines with and without status events, a
machine without events, a window reaching past now) both routes must give the analytics' seconds
per state, unknown time and utilisation: computed from events, from stored hours, and after a
late event lands in a stored hour (before and after the job has redone it)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import psycopg
import pytest

from analytics.states import EXECUTION
from api.keys import Role
from api.machines import fetch_signal, utilisation_report
from api.window import window_bounds
from ingest.jobs import refresh_state_hours
from tests.api.conftest import add_machines, make_key

pytestmark = pytest.mark.services

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
WORDS = ["READY", "ACTIVE", "ACTIVE", "INTERRUPTED", "FEED_HOLD", "STOPPED", "PROGRAM_COMPLETED",
         "WAIT", "OPTIONAL_STOP", "PROGRAM_STOPPED", "UNAVAILABLE", None, "BOGUS"]  # fmt: skip
STATUS = ["online", "online", "online", "offline", "unknown", None]
MACHINES = 12


@pytest.fixture(scope="module")
def site(api_database: str, unique_site: str) -> str:
    """Machine k: random execution events over two days, status events unless k % 3 == 0,
    machine 'm11' none at all."""
    names = [f"m{k:02d}" for k in range(MACHINES)]
    add_machines(api_database, [(unique_site, n) for n in names])
    rng = random.Random(20261121)
    rows = []
    with psycopg.connect(api_database, autocommit=True) as conn:
        for k, name in enumerate(names[:-1]):
            (mid,) = conn.execute(
                "SELECT id FROM machine WHERE site = %s AND machine = %s", [unique_site, name]
            ).fetchone() or (None,)
            t = T0 - timedelta(hours=rng.uniform(1, 30))
            while t < T0 + timedelta(hours=40):
                rows.append((mid, t, "execution", rng.choice(WORDS)))
                t += timedelta(seconds=rng.uniform(1, 3000), microseconds=rng.randrange(1000))
            if k % 3:
                t = T0 - timedelta(hours=rng.uniform(0, 20))
                while t < T0 + timedelta(hours=40):
                    rows.append((mid, t, "status", rng.choice(STATUS)))
                    t += timedelta(seconds=rng.uniform(600, 20_000))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO event (machine_id, ts, signal, value) VALUES (%s, %s, %s, %s)", rows
            )
    return unique_site


@pytest.fixture(scope="module")
def viewer(api_database: str, client_for: Callable[[str | None], httpx.Client]) -> httpx.Client:
    return client_for(make_key(api_database, Role.VIEWER, "fleet sql"))


WINDOWS = [
    (T0, T0 + timedelta(hours=24)),
    (T0 + timedelta(hours=3, seconds=17.25), T0 + timedelta(hours=9, minutes=1)),
    (T0 - timedelta(hours=40), T0 - timedelta(hours=39)),  # before most machines' first event
    (T0 + timedelta(hours=30), T0 + timedelta(hours=50)),  # events stop within it
    # reaching past now: the future is unknown, not the last state
    (datetime.now(UTC) - timedelta(hours=2), datetime.now(UTC) + timedelta(hours=2)),
]


def _analytics(database: str, site: str, window: tuple[datetime, datetime]) -> dict[str, Any]:
    """machine -> analytics.utilisation_report from the events, computed in the test."""
    start, end, until = window_bounds(*window)

    async def run() -> dict[str, Any]:
        conn = await asyncpg.connect(database)
        try:
            out = {}
            for r in await conn.fetch(
                "SELECT id, machine FROM machine WHERE site = $1 ORDER BY machine", site
            ):
                ex = await fetch_signal(conn, r["id"], "execution", *window)
                st = await fetch_signal(conn, r["id"], "status", *window)
                out[r["machine"]] = utilisation_report(ex, st, start=start, end=end, until=until)
            return out
        finally:
            await conn.close()

    return asyncio.run(run())


def _run_job(database: str) -> None:
    """Ingest's state_hour job, every hour of history at once."""

    async def run() -> None:
        conn = await asyncpg.connect(database)
        try:
            async with conn.transaction():
                await refresh_state_hours(conn, step=timedelta(days=3650))
        finally:
            await conn.close()

    asyncio.run(run())


def _check(
    site: str, viewer: httpx.Client, window: tuple[datetime, datetime], want: dict[str, Any]
) -> dict[str, Any]:
    """Both routes against the analytics; returns the fleet route's rows by machine."""
    params = {"from": window[0].isoformat(), "to": window[1].isoformat()}
    # A window reaching past now ends its data at the request's own now: requests a few ms
    # apart differ by that much (and only in a state in force at now).
    tol = 10.0 if window[1] > datetime.now(UTC) else 1e-6
    fleet = viewer.get("/api/v1/utilisation", params={**params, "site": site})
    assert fleet.status_code == 200, fleet.text
    body = fleet.json()
    assert [m["machine"] for m in body["machines"]] == [f"m{k:02d}" for k in range(MACHINES)]
    span = (window[1] - window[0]).total_seconds()
    for row in body["machines"]:
        one = viewer.get(f"/api/v1/machines/{site}:{row['machine']}/utilisation", params=params)
        assert one.status_code == 200, one.text
        ref = want[row["machine"]]
        for got in (row, one.json()):
            assert list(got["states"]) == list(ref["states"]), row["machine"]
            for state, seconds in ref["states"].items():
                assert got["states"][state] == pytest.approx(seconds, abs=tol), (row, state)
            assert got["unknown_s"] == pytest.approx(ref["unknown_s"], abs=tol)
            assert got["known_s"] == pytest.approx(ref["known_s"], abs=tol)
            if ref["utilisation"] is None:
                assert got["utilisation"] is None
            else:
                assert got["utilisation"] == pytest.approx(ref["utilisation"], abs=tol * 1e-3)
            assert got["known_s"] + got["unknown_s"] == pytest.approx(span, abs=1e-6)
        assert one.json()["convention"] == ref["convention"]
    totals = body["fleet"]
    assert totals["known_s"] == pytest.approx(sum(m["known_s"] for m in body["machines"]))
    assert body["convention"] == ref["convention"]
    return {m["machine"]: m for m in body["machines"]}


def test_fleet_sql_equals_the_analytics_from_events_and_stored_hours(
    site: str, api_database: str, viewer: httpx.Client
) -> None:
    past = [w for w in WINDOWS if w[1] < datetime.now(UTC)]
    want = {w: _analytics(api_database, site, w) for w in WINDOWS}
    # Every event above was written after its hour: all machines marked, all from events.
    before = {w: _check(site, viewer, w, want[w]) for w in WINDOWS}
    _run_job(api_database)
    with psycopg.connect(api_database, autocommit=True) as conn:
        stored = conn.execute("SELECT count(*) FROM state_hour").fetchone()
        dirty = conn.execute("SELECT count(*) FROM state_hour_dirty").fetchone()
    assert stored and stored[0] > 0 and dirty == (0,)
    for w in WINDOWS:
        after = _check(site, viewer, w, want[w])
        if w in past:  # whole microseconds: the stored hours add up to exactly the same answer
            assert after == before[w]


_CODES = {"READY": 1, "ACTIVE": 2, "INTERRUPTED": 3, "FEED_HOLD": 4, "STOPPED": 5,
          "OPTIONAL_STOP": 6, "PROGRAM_STOPPED": 7, "PROGRAM_COMPLETED": 8, "WAIT": 9}  # fmt: skip


def test_stored_hour_boundaries_hold_the_state_in_force_there(site: str, api_database: str) -> None:
    """state_edge (migration 0006), which the windows' edges read, against the events: at each
    stored boundary, the latest execution and status at or before it."""
    _run_job(api_database)
    with psycopg.connect(api_database, autocommit=True) as conn:
        assert list(_CODES) == [w for w in EXECUTION if w != "UNAVAILABLE"]
        events = conn.execute(
            "SELECT e.machine_id, e.signal, e.ts, e.value FROM event e JOIN machine m "
            "ON m.id = e.machine_id WHERE m.site = %s AND e.signal IN ('execution', 'status') "
            "ORDER BY e.ts",
            [site],
        ).fetchall()
        edges = conn.execute(
            "SELECT g.machine_id, g.hour, g.ex, g.st FROM state_edge g JOIN machine m "
            "ON m.id = g.machine_id WHERE m.site = %s",
            [site],
        ).fetchall()
    assert len(edges) >= MACHINES * 24
    for mid, hour, ex, st in edges:
        # in time order: the latest of each signal wins
        last = {signal: value for m, signal, ts, value in events if m == mid and ts <= hour}
        want_ex = _CODES.get(last["execution"] or "", 0) if "execution" in last else None
        want_st = int(last["status"] == "online") if "status" in last else None
        assert (ex, st) == (want_ex, want_st), (mid, hour)


def test_a_late_event_in_a_stored_hour_counts_at_once_and_after_the_job(
    site: str, api_database: str, viewer: httpx.Client
) -> None:
    _run_job(api_database)
    day = WINDOWS[0]
    old = _check(site, viewer, day, _analytics(api_database, site, day))
    with psycopg.connect(api_database, autocommit=True) as conn:
        (mid,) = conn.execute(
            "SELECT id FROM machine WHERE site = %s AND machine = 'm01'", [site]
        ).fetchone() or (None,)
        # m01 (no status events) reported FEED_HOLD for the whole day's morning, arriving now.
        conn.execute(
            "INSERT INTO event (machine_id, ts, signal, value) VALUES (%s, %s, 'execution', %s)",
            [mid, day[0] + timedelta(hours=2, minutes=30, microseconds=7), "FEED_HOLD"],
        )
    try:
        want = _analytics(api_database, site, day)
        assert want["m01"]["states"] != old["m01"]["states"]  # the event matters
        late = _check(site, viewer, day, want)  # marked: m01 from events until the job ran
        _run_job(api_database)
        assert _check(site, viewer, day, want) == late
    finally:
        with psycopg.connect(api_database, autocommit=True) as conn:
            conn.execute(
                "DELETE FROM event WHERE machine_id = %s AND ts = %s",
                [mid, day[0] + timedelta(hours=2, minutes=30, microseconds=7)],
            )
        _run_job(api_database)  # deletes mark nothing: redo m01 for the following tests
        with psycopg.connect(api_database, autocommit=True) as conn:
            conn.execute("SELECT state_hour_refresh(lo, hi, ARRAY[%s]) FROM state_range", [mid])


def test_the_data_is_not_trivial(site: str, viewer: httpx.Client) -> None:
    """Guard against a vacuous parity: every kind of time shows up in the day window."""
    params = {"from": WINDOWS[0][0].isoformat(), "to": WINDOWS[0][1].isoformat(), "site": site}
    body = viewer.get("/api/v1/utilisation", params=params).json()
    rows = {m["machine"]: m for m in body["machines"]}
    assert rows["m11"]["known_s"] == 0 and rows["m11"]["utilisation"] is None
    masked = [rows[f"m{k:02d}"] for k in range(MACHINES - 1) if k % 3]
    assert all(0 < m["known_s"] < 86_400 for m in masked)
    assert {"ACTIVE", "READY", "FEED_HOLD", "STOPPED"} <= set(body["fleet"]["states"])


def test_one_machines_plan_setting_stays_in_its_transaction(site: str, api_database: str) -> None:
    """The API's pool keeps sessions between requests without a reset (api.app._keep_session),
    so what the utilisation query sets must end with its transaction."""
    from api.app import _keep_session
    from api.machines import fleet_state_seconds

    async def run() -> tuple[str, str]:
        pool = await asyncpg.create_pool(api_database, min_size=1, max_size=1, reset=_keep_session)
        try:
            async with pool.acquire() as conn:
                mid = await conn.fetchval(
                    "SELECT id FROM machine WHERE site = $1 AND machine = 'm01'", site
                )
                before = await conn.fetchval("SHOW plan_cache_mode")
                await fleet_state_seconds(conn, [mid], *WINDOWS[0], WINDOWS[0][1])
            async with pool.acquire() as conn:  # the same session, as the next request gets it
                return before, await conn.fetchval("SHOW plan_cache_mode")
        finally:
            await pool.close()

    assert asyncio.run(run()) == ("auto", "auto")


def _nonzero(seconds: dict[int, dict[str, float]]) -> dict[int, dict[str, float]]:
    return {m: {w: s for w, s in states.items() if s > 0} for m, states in seconds.items()}


def test_one_machines_call_equals_the_general_query(site: str, api_database: str) -> None:
    """api_machine_seconds() (migration 0104), one machine's usual case in one call, against the
    general query (_STATES_SQL, as the fleet route runs it) to the microsecond: windows starting
    and ending on and off the hour, before the stored hours and past now; and it declines (ok
    false) for a machine with a late event awaiting the job, for a window within one hour."""
    import api.machines as machines

    _run_job(api_database)
    rng = random.Random(7)
    windows = [w for w in WINDOWS if w[1] - w[0] > timedelta(hours=2)]
    windows += [(T0 - timedelta(hours=80), T0 + timedelta(hours=5, minutes=3))]  # before lo
    windows += [(T0 + timedelta(hours=1), T0 + timedelta(hours=4))]  # on the hours
    for _ in range(12):
        a = T0 + timedelta(seconds=rng.uniform(-30 * 3600, 40 * 3600))
        windows.append((a, a + timedelta(seconds=rng.uniform(2 * 3600, 60 * 3600))))

    async def both(
        conn: asyncpg.Connection, mid: int, window: tuple[datetime, datetime]
    ) -> tuple[bool, dict[int, dict[str, float]], dict[int, dict[str, float]]]:
        until = min(window[1], datetime.now(UTC))
        row = await conn.fetchrow(
            machines._ONE_SQL, mid, *window, until, list(machines.KNOWN_EXECUTION)
        )
        assert row is not None
        fast = {mid: machines._seconds(row["us"])} if row["us"] is not None else {}
        one = machines._ONE_SQL
        machines._ONE_SQL = (
            "SELECT false AS ok, $1::int, $2::timestamptz, $3::timestamptz, $4::timestamptz, "
            "$5::text[]"
        )
        try:
            general = await machines.fleet_state_seconds(conn, [mid], *window, until)
        finally:
            machines._ONE_SQL = one
        return bool(row["ok"]), fast, general

    async def run() -> None:
        conn = await asyncpg.connect(api_database)
        try:
            ids = [
                r["id"]
                for r in await conn.fetch(
                    "SELECT id FROM machine WHERE site = $1 ORDER BY machine", site
                )
            ]
            answered = 0
            for window in windows:
                for mid in ids:
                    ok, fast, general = await both(conn, mid, window)
                    if ok:  # states with no time may be absent from either (not served)
                        answered += 1
                        assert fast == _nonzero(general), (mid, window)
            # the past windows of two hours or more are all answered by the call
            assert answered >= MACHINES * sum(1 for w in windows if w[1] < datetime.now(UTC))
            short = (T0 + timedelta(minutes=10), T0 + timedelta(minutes=50))
            assert not (await both(conn, ids[1], short))[0]
            late = T0 + timedelta(hours=2, minutes=30, microseconds=7)
            await conn.execute(
                "INSERT INTO event (machine_id, ts, signal, value) VALUES ($1, $2, 'execution', "
                "'FEED_HOLD')",
                ids[1],
                late,
            )
            try:
                ok, _, general = await both(conn, ids[1], WINDOWS[0])
                assert not ok and general  # marked: the general query answers
                ok, fast, general = await both(conn, ids[2], WINDOWS[0])
                assert ok and fast == _nonzero(general)  # other machines are unaffected
            finally:
                await conn.execute(
                    "DELETE FROM event WHERE machine_id = $1 AND ts = $2", ids[1], late
                )
                await conn.execute(
                    "SELECT state_hour_refresh(lo, hi, ARRAY[$1::int]) FROM state_range", ids[1]
                )
                await conn.execute("DELETE FROM state_hour_dirty WHERE machine_id = $1", ids[1])
        finally:
            await conn.close()

    asyncio.run(run())

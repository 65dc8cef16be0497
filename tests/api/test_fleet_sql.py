"""The fleet's utilisation is computed in SQL (api.machines.FLEET_STATES_SQL, window functions);
one machine's utilisation in Python (analytics.states). On the same, deliberately awkward data
(values in force before the window, events after it, UNAVAILABLE, nulls and unknown words,
machines with and without status events, a machine without events, a window reaching past now)
both must give the same seconds per state, unknown time and utilisation."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from api.keys import Role
from tests.api.conftest import add_machines, make_key

pytestmark = pytest.mark.services

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
WORDS = ["READY", "ACTIVE", "ACTIVE", "INTERRUPTED", "FEED_HOLD", "STOPPED", "PROGRAM_COMPLETED",
         "WAIT", "UNAVAILABLE", None, "BOGUS"]  # fmt: skip
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


@pytest.mark.parametrize("window", WINDOWS, ids=["day", "odd", "before", "tail", "future"])
def test_fleet_sql_equals_the_per_machine_analytics(
    site: str, viewer: httpx.Client, window: tuple[datetime, datetime]
) -> None:
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
        want = one.json()
        assert set(row["states"]) == set(want["states"]), row["machine"]
        for state, seconds in want["states"].items():
            assert row["states"][state] == pytest.approx(seconds, abs=tol), (row, state)
        assert row["unknown_s"] == pytest.approx(want["unknown_s"], abs=tol)
        assert row["known_s"] == pytest.approx(want["known_s"], abs=tol)
        if want["utilisation"] is None:
            assert row["utilisation"] is None
        else:
            assert row["utilisation"] == pytest.approx(want["utilisation"], abs=tol * 1e-3)
        assert row["known_s"] + row["unknown_s"] == pytest.approx(span, abs=1e-6)
    totals = body["fleet"]
    assert totals["known_s"] == pytest.approx(sum(m["known_s"] for m in body["machines"]))
    assert body["convention"] == want["convention"]


def test_the_data_is_not_trivial(site: str, viewer: httpx.Client) -> None:
    """Guard against a vacuous parity: every kind of time shows up in the day window."""
    params = {"from": WINDOWS[0][0].isoformat(), "to": WINDOWS[0][1].isoformat(), "site": site}
    body = viewer.get("/api/v1/utilisation", params=params).json()
    rows = {m["machine"]: m for m in body["machines"]}
    assert rows["m11"]["known_s"] == 0 and rows["m11"]["utilisation"] is None
    masked = [rows[f"m{k:02d}"] for k in range(MACHINES - 1) if k % 3]
    assert all(0 < m["known_s"] < 86_400 for m in masked)
    assert {"ACTIVE", "READY", "FEED_HOLD", "STOPPED"} <= set(body["fleet"]["states"])

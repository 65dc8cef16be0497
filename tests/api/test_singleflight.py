"""Request coalescing (api/singleflight.py): identical fleet-utilisation requests in flight at
once share one computation, per window and authorisation scope; nothing outlives the flight."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from api.keys import Role
from api.singleflight import SingleFlight
from tests.api.conftest import add_machines, make_key


def test_one_computation_per_key_while_in_flight_and_none_kept_after() -> None:
    async def scenario() -> None:
        joins: list[int] = []
        flights: SingleFlight[str] = SingleFlight(on_join=lambda: joins.append(1))
        calls: list[str] = []
        gate = asyncio.Event()

        async def compute(name: str) -> str:
            calls.append(name)
            await gate.wait()
            return f"{name}#{len(calls)}"

        a = [asyncio.create_task(flights.run("a", lambda: compute("a"))) for _ in range(5)]
        b = asyncio.create_task(flights.run("b", lambda: compute("b")))
        for _ in range(3):  # the waiters start, then the computations they started
            await asyncio.sleep(0)
        assert calls == ["a", "b"] and len(joins) == 4 and len(flights) == 2
        a[0].cancel()  # one client going away cancels its wait, not the computation
        gate.set()
        assert [await t for t in a[1:]] == ["a#2"] * 4 and await b == "b#2"
        assert len(flights) == 0
        assert await flights.run("a", lambda: compute("a")) == "a#3"  # computed again

        async def fail() -> str:
            calls.append("x")
            await asyncio.sleep(0.01)
            raise ValueError("boom")

        failing = [asyncio.create_task(flights.run("x", fail)) for _ in range(3)]
        for t in failing:
            with pytest.raises(ValueError, match="boom"):
                await t
        assert calls.count("x") == 1 and len(flights) == 0

    asyncio.run(scenario())


_COALESCED = re.compile(
    r'^arbor_api_coalesced_requests_total\{route="/api/v1/utilisation"\} (\S+)$', re.M
)


def _coalesced(client: httpx.Client) -> float:
    m = _COALESCED.search(client.get("/metrics").text)
    return float(m.group(1)) if m else 0.0


@pytest.mark.services
def test_concurrent_fleet_requests_share_one_computation_per_scope(
    api_database: str, unique_site: str, client_for: Callable[[str | None], httpx.Client]
) -> None:
    other = unique_site + "x"
    add_machines(api_database, [(unique_site, "a1"), (unique_site, "a2"), (other, "b1")])
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=5)
    with psycopg.connect(api_database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO event (machine_id, ts, signal, value) "
            "SELECT id, %s, 'execution', 'ACTIVE' FROM machine WHERE site IN (%s, %s)",
            [t0, unique_site, other],
        )
    every = make_key(api_database, Role.VIEWER, "fleet, every site")
    scoped = make_key(api_database, Role.VIEWER, "fleet, one site", sites=[unique_site])
    params = {"from": t0.isoformat(), "to": (t0 + timedelta(hours=2)).isoformat()}
    probe = client_for(None)
    before = _coalesced(probe)

    def ask(key: str) -> str:
        with httpx.Client(
            base_url=str(probe.base_url), headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as c:
            r = c.get("/api/v1/utilisation", params=params)
            assert r.status_code == 200, r.text
            return r.text

    with (
        psycopg.connect(api_database) as lock,
        ThreadPoolExecutor(max_workers=12) as pool,
    ):
        # Every computation stalls on its read of state_range until the lock goes.
        lock.execute("LOCK TABLE state_range IN ACCESS EXCLUSIVE MODE")
        answers = [pool.submit(ask, every) for _ in range(8)]
        answers += [pool.submit(ask, scoped) for _ in range(4)]
        deadline = time.monotonic() + 20
        while _coalesced(probe) - before < 7 + 3:
            assert time.monotonic() < deadline, "requests did not share computations"
            time.sleep(0.05)
        with psycopg.connect(api_database, autocommit=True) as watch:
            (waiting,) = watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE '%state_range%'"
            ).fetchone() or (0,)
        assert waiting == 2  # one computation per scope
        lock.rollback()
        bodies = [a.result(timeout=60) for a in answers]
    assert len(set(bodies[:8])) == 1 and len(set(bodies[8:])) == 1
    sites = {m["site"] for m in httpx.Response(200, text=bodies[8]).json()["machines"]}
    assert sites == {unique_site}  # the scoped key never sees the other scope's answer
    assert other in {m["site"] for m in httpx.Response(200, text=bodies[0]).json()["machines"]}
    # Exactly what one computation gives now, and nothing kept: a later request computes anew.
    assert ask(every) == bodies[0] and ask(scoped) == bodies[8]
    assert _coalesced(probe) - before == 10

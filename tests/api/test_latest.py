"""The machine list's live status comes from `event_latest` (migration 0004), kept by ingest's
writer: through a real worker, with messages arriving out of order and history replayed from an
edge buffer, the list and the detail must equal what the `event` table itself says (the queries
the API ran on `event` before the table existed)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from api.keys import Role
from protocol import (
    Condition,
    ConditionEvent,
    Controller,
    Event,
    Status,
    ValueEvent,
    encode,
)
from tests.api.conftest import make_key
from tests.conftest import MqttSettings
from tests.ingest.helpers import Publisher, scalar, wait_ready, wait_until, worker_env, workers
from tests.servers import free_port

pytestmark = pytest.mark.services

CONTROLLER = Controller(vendor="i5", model="M8", kind="vertical_mc")

#: The live status straight from `event` (the API's query before event_latest).
FROM_EVENTS = """
SELECT m.machine, ex.value AS execution,
       (SELECT min(e.ts) FROM event e
         WHERE e.machine_id = m.id AND e.signal = 'execution'
           AND e.ts > coalesce((SELECT max(d.ts) FROM event d
                                 WHERE d.machine_id = m.id AND d.signal = 'execution'
                                   AND d.ts < ex.ts AND d.value IS DISTINCT FROM ex.value),
                               '-infinity')) AS execution_since,
       (SELECT value FROM event e WHERE e.machine_id = m.id AND e.signal = 'controller_mode'
         ORDER BY ts DESC LIMIT 1) AS mode,
       (SELECT value FROM event e WHERE e.machine_id = m.id AND e.signal = 'program'
         ORDER BY ts DESC LIMIT 1) AS program,
       (SELECT value_num FROM event e WHERE e.machine_id = m.id AND e.signal = 'part_count'
         ORDER BY ts DESC LIMIT 1) AS part_count,
       (SELECT count(*) FROM alarm a WHERE a.machine_id = m.id AND a.closed_at IS NULL
           AND a.opened_at >= coalesce(born.at, '-infinity'))::int AS active_alarms
  FROM machine m
  LEFT JOIN LATERAL (SELECT e.value, e.ts FROM event e
                      WHERE e.machine_id = m.id AND e.signal = 'execution'
                      ORDER BY e.ts DESC LIMIT 1) ex ON true
  LEFT JOIN LATERAL (SELECT max(born_at) AS at FROM machine_session s
                      WHERE s.machine_id = m.id) born ON true
 WHERE m.site = %s ORDER BY m.machine"""

ALARMS_FROM_EVENTS = """
SELECT a.code, a.level, a.opened_at FROM alarm a JOIN machine m ON m.id = a.machine_id
 WHERE m.site = %s AND m.machine = %s AND a.closed_at IS NULL
   AND a.opened_at >= coalesce((SELECT max(born_at) FROM machine_session s
                                 WHERE s.machine_id = m.id), '-infinity')
 ORDER BY a.opened_at"""


def _value(ts: datetime, signal: str, value: Any) -> ValueEvent:
    return ValueEvent(ts=ts, signal=signal, value=value)


def _condition(ts: datetime, component: str, level: Any, code: str) -> ConditionEvent:
    condition = Condition(component=component, level=level, code=code, text=f"{code} {level}")
    return ConditionEvent(ts=ts, signal="condition", condition=condition)


def _api_time(s: str | None) -> str | None:
    return None if s is None else datetime.fromisoformat(s).astimezone(UTC).isoformat()


@pytest.fixture(scope="module")
def viewer(api_database: str, client_for: Callable[[str | None], httpx.Client]) -> httpx.Client:
    return client_for(make_key(api_database, Role.VIEWER, "latest"))


def test_list_equals_the_event_table_after_late_and_historical_messages(
    api_database: str, mqtt_settings: MqttSettings, unique_site: str, viewer: httpx.Client
) -> None:
    site, m = unique_site, "late"
    base = f"arbor/v1/{site}/{m}"
    born = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    t = [born + timedelta(seconds=k) for k in range(40)]
    s = [born - timedelta(hours=2) + timedelta(seconds=k) for k in range(10)]  # session 1
    # Each step is one message, stored (its own batch) before the next is published, so later
    # steps meet an event_latest row that is newer or older than them.
    steps: list[tuple[str, int, bool, list[Any]]] = [
        ("s2", 0, False, [_value(t[10], "execution", "ACTIVE"), _value(t[10], "program", "O1"),
                          _value(t[10], "part_count", 5), _value(t[10], "controller_mode",
                                                                 "AUTOMATIC")]),
        ("s2", 1, False, [_value(t[5], "execution", "READY")]),  # late: older than ACTIVE
        # replayed history of session 1 from the edge buffer: older than everything
        ("s1", 7, True, [_value(s[1], "execution", "STOPPED"), _value(s[1], "program", "O0"),
                         _value(s[1], "part_count", 1), _condition(s[2], "spindle", "FAULT", "X"),
                         _value(s[3], "controller_mode", "MANUAL")]),
        ("s2", 2, False, [_value(t[20], "execution", "ACTIVE"),  # a repeat: since stays
                          _condition(t[12], "coolant", "WARNING", "C1"),
                          _condition(t[13], "spindle", "FAULT", "S1"),
                          _condition(t[14], "spindle", "FAULT", "S2")]),
        ("s2", 3, False, [_value(t[8], "execution", "ACTIVE"),  # late, same value: since = t8
                          _condition(t[11], "coolant", "NORMAL", ""),  # late clear-all: moot
                          _condition(t[15], "spindle", "NORMAL", "S2"),
                          _value(t[9], "part_count", 4)]),  # late: 5 stays
        ("s2", 4, False, [_value(t[16], "program", "O2"), _value(t[17], "program", "O3")]),
        ("s2", 5, False, [_value(t[15], "program", "O9")]),  # late: O3 stays
    ]  # fmt: skip
    port = free_port()
    env = worker_env(
        api_database,
        mqtt_settings.url,
        site,
        f"lt{secrets.token_hex(3)}",
        ARBOR_INGEST_METRICS_PORT=str(port),
        ARBOR_INGEST_SILENCE_TIMEOUT_S="3600",
    )
    pub = Publisher(mqtt_settings.host, mqtt_settings.port, mqtt_settings.username,
                    mqtt_settings.password)  # fmt: skip
    try:
        with workers(env):
            wait_ready(port)
            birth = Status(online=True, ts=born, session="s2", controller=CONTROLLER)
            pub.publish(f"{base}/status", encode(birth), retain=True)
            assert pub.flush() == [0]
            for n, (session, seq, historical, items) in enumerate(steps, start=1):
                message = Event(session=session, seq=seq, historical=historical, events=items)
                pub.publish(f"{base}/event", encode(message))
                assert pub.flush() == [0]

                def stored(n: int = n) -> bool:
                    count = scalar(
                        api_database,
                        "SELECT count(*) FROM message_ledger l JOIN machine m "
                        "ON m.id = l.machine_id WHERE m.site = %s AND l.seq >= 0",
                        site,
                    )
                    return bool(count == n)

                wait_until(stored, timeout=60, what=f"message {n} stored")
    finally:
        pub.close()
    with psycopg.connect(api_database, autocommit=True) as conn:
        dead = conn.execute("SELECT count(*), max(reason) FROM dead_letter").fetchone()
        assert dead is not None and dead[0] == 0, dead
        truth = conn.execute(FROM_EVENTS.encode(), [site]).fetchall()
        alarms = conn.execute(ALARMS_FROM_EVENTS.encode(), [site, m]).fetchall()
    assert len(truth) == 1
    machine, execution, since, mode, program, part_count, active = truth[0]
    # The scenario's own answer, so the comparison below cannot pass vacuously.
    assert (execution, since, mode, program, part_count, active) == (
        "ACTIVE", t[8], "AUTOMATIC", "O3", 5.0, 2
    )  # fmt: skip
    assert [(a[0], a[1], a[2]) for a in alarms] == [
        ("C1", "WARNING", t[12]),
        ("S1", "FAULT", t[13]),
    ]

    listed = viewer.get("/api/v1/machines", params={"site": site})
    assert listed.status_code == 200, listed.text
    [row] = listed.json()
    got = (row["machine"], row["execution"], _api_time(row["execution_since"]), row["mode"],
           row["program"], row["part_count"], row["active_alarms"])  # fmt: skip
    assert got == (machine, execution, since.astimezone(UTC).isoformat(), mode, program,
                   part_count, active)  # fmt: skip
    detail = viewer.get(f"/api/v1/machines/{site}:{m}").json()
    assert {k: detail[k] for k in row} == row
    assert [(a["code"], a["level"], _api_time(a["opened_at"])) for a in detail["alarms"]] == [
        (code, level, opened.astimezone(UTC).isoformat()) for code, level, opened in alarms
    ]

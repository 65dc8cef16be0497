"""Machines through the real stack: the fleet list with live status, detail with active alarms,
utilisation and cycles of a hand-built shift whose true figures are known to the second."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import psycopg
import pytest
from pydantic import TypeAdapter

from api.config import ApiSettings
from api.keys import Role
from api.routes.machines import MachineStatus, Telemetry
from tests.api.conftest import add_machines, error_of, make_key, serve

pytestmark = pytest.mark.services

DAY = "2026-01-05"


def _t(hhmmss: str) -> datetime:
    h, m, *s = (int(x) for x in hhmmss.split(":"))
    return datetime(2026, 1, 5, h, m, s[0] if s else 0, tzinfo=UTC)


# (time, signal, value, value_num)
SHIFT = [
    ("07:00", "status", "online", None),
    ("07:00", "part_count", "10", 10.0),
    ("07:30", "execution", "READY", None),
    ("08:05", "program", "O100", None),
    ("08:05", "controller_mode", "AUTOMATIC", None),
    ("08:10", "execution", "ACTIVE", None),
    ("08:40", "execution", "PROGRAM_COMPLETED", None),
    ("08:40:02", "part_count", "11", 11.0),
    ("08:45", "execution", "ACTIVE", None),
    ("09:15", "execution", "FEED_HOLD", None),
    ("09:20", "execution", "ACTIVE", None),
    ("09:50", "execution", "PROGRAM_COMPLETED", None),
    ("09:50:03", "part_count", "12", 12.0),
    ("10:00", "execution", "STOPPED", None),
    ("12:00", "status", "offline", None),
    ("13:00", "status", "online", None),
    ("13:00", "execution", "READY", None),
    ("13:20", "program", "O200", None),
    ("13:30", "execution", "ACTIVE", None),
    ("14:00", "execution", "STOPPED", None),
    ("15:00", "execution", "UNAVAILABLE", None),
]


@pytest.fixture(scope="module")
def site(api_database: str, unique_site: str) -> str:
    add_machines(api_database, [(unique_site, "m01"), (unique_site, "idle")])
    with psycopg.connect(api_database, autocommit=True) as conn:
        (mid,) = conn.execute(
            "SELECT id FROM machine WHERE site = %s AND machine = 'm01'", [unique_site]
        ).fetchone() or (None,)
        conn.execute(
            "UPDATE machine SET status = 'online', online = true, last_seen = %s, "
            "status_since = %s, controller = %s WHERE id = %s",
            [_t("15:59"), _t("13:00"), '{"vendor": "i5", "model": "M8"}', mid],
        )
        for at, signal, value, num in SHIFT:
            conn.execute(
                "INSERT INTO event (machine_id, ts, signal, value, value_num) "
                "VALUES (%s, %s, %s, %s, %s)",
                [mid, _t(at), signal, value, num],
            )
        for at, level, code in [("09:00", "WARNING", "W1"), ("09:30", "NORMAL", "W1"),
                                ("14:00", "FAULT", "SP-1")]:  # fmt: skip
            conn.execute(
                "INSERT INTO event (machine_id, ts, signal, component, level, code, message) "
                "VALUES (%s, %s, 'condition', 'spindle', %s, %s, %s)",
                [mid, _t(at), level, code, f"alarm {code}"],
            )
        # Events written with SQL bypass ingest's writer, which keeps event_latest (0004).
        conn.execute("SELECT event_latest_refresh(ARRAY[%s]::integer[])", [mid])
    return unique_site


@pytest.fixture(scope="module")
def viewer(keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]) -> httpx.Client:
    return client_for(keys[Role.VIEWER])


def test_fleet_list_with_live_status(site: str, viewer: httpx.Client) -> None:
    response = viewer.get("/api/v1/machines", params={"site": site})
    assert response.status_code == 200
    rows = {r["machine"]: r for r in response.json()}
    assert set(rows) == {"m01", "idle"}
    m01 = rows["m01"]
    assert (m01["status"], m01["online"]) == ("online", True)
    assert (m01["execution"], m01["mode"], m01["program"]) == ("UNAVAILABLE", "AUTOMATIC", "O200")
    assert m01["part_count"] == 12 and m01["active_alarms"] == 1
    assert m01["last_seen"].startswith(f"{DAY}T15:59")
    assert m01["execution_since"].startswith(f"{DAY}T15:00:00")
    idle = rows["idle"]
    assert (idle["status"], idle["execution"], idle["active_alarms"]) == ("unknown", None, 0)
    assert idle["execution_since"] is None


def test_execution_since_is_when_the_state_began_not_its_last_repeat(
    site: str, api_database: str, viewer: httpx.Client
) -> None:
    """A birth snapshot repeats the current execution value: time in state does not restart."""
    add_machines(api_database, [(site, "since")])
    with psycopg.connect(api_database, autocommit=True) as conn:
        (mid,) = conn.execute(
            "SELECT id FROM machine WHERE site = %s AND machine = 'since'", [site]
        ).fetchone() or (None,)
        for at, value in [("10:00", "ACTIVE"), ("10:30", "READY"), ("11:00", "ACTIVE"),
                          ("11:30", "ACTIVE"), ("12:00", "ACTIVE")]:  # fmt: skip
            conn.execute(
                "INSERT INTO event (machine_id, ts, signal, value) "
                "VALUES (%s, %s, 'execution', %s)",
                [mid, _t(at), value],
            )
        conn.execute("SELECT event_latest_refresh(ARRAY[%s]::integer[])", [mid])
    try:
        rows = {
            r["machine"]: r for r in viewer.get("/api/v1/machines", params={"site": site}).json()
        }
        assert rows["since"]["execution"] == "ACTIVE"
        assert rows["since"]["execution_since"].startswith(f"{DAY}T11:00:00")
        detail = viewer.get(f"/api/v1/machines/{site}:since").json()
        assert detail["execution_since"] == rows["since"]["execution_since"]
    finally:
        with psycopg.connect(api_database, autocommit=True) as conn:
            conn.execute("DELETE FROM event WHERE machine_id = %s", [mid])
            conn.execute("DELETE FROM event_latest WHERE machine_id = %s", [mid])
            conn.execute("DELETE FROM machine WHERE id = %s", [mid])


def test_active_alarms_are_those_of_the_current_session(
    site: str, api_database: str, viewer: httpx.Client
) -> None:
    """After a birth the producer restates every active condition (docs/protocol.md): a condition
    left open by an earlier session and not restated is not active."""
    add_machines(api_database, [(site, "reborn")])
    with psycopg.connect(api_database, autocommit=True) as conn:
        (mid,) = conn.execute(
            "SELECT id FROM machine WHERE site = %s AND machine = 'reborn'", [site]
        ).fetchone() or (None,)
        conn.execute(
            "INSERT INTO machine_session (machine_id, session, born_at) VALUES "
            "(%s, 's1', %s), (%s, 's2', %s)",
            [mid, _t("06:00"), mid, _t("12:00")],
        )
        for at, code in [("07:00", "OLD"), ("12:00:01", "NEW")]:
            conn.execute(
                "INSERT INTO event (machine_id, ts, signal, component, level, code, message) "
                "VALUES (%s, %s, 'condition', 'spindle', 'FAULT', %s, 'x')",
                [mid, _t(at), code],
            )
        conn.execute("SELECT event_latest_refresh(ARRAY[%s]::integer[])", [mid])
    try:
        rows = {
            r["machine"]: r for r in viewer.get("/api/v1/machines", params={"site": site}).json()
        }
        assert rows["reborn"]["active_alarms"] == 1
        detail = viewer.get(f"/api/v1/machines/{site}:reborn").json()
        assert [a["code"] for a in detail["alarms"]] == ["NEW"]
    finally:
        with psycopg.connect(api_database, autocommit=True) as conn:
            conn.execute("DELETE FROM event WHERE machine_id = %s", [mid])
            conn.execute("DELETE FROM event_latest WHERE machine_id = %s", [mid])
            conn.execute("DELETE FROM machine_session WHERE machine_id = %s", [mid])
            conn.execute("DELETE FROM machine WHERE id = %s", [mid])


def test_scoped_key_sees_only_its_sites(
    site: str, api_database: str, client_for: Callable[[str | None], httpx.Client]
) -> None:
    scoped = client_for(make_key(api_database, Role.VIEWER, "elsewhere", ["elsewhere"]))
    assert scoped.get("/api/v1/machines").json() == []
    assert error_of(scoped.get(f"/api/v1/machines/{site}:m01"))["code"] == "site_forbidden"
    # one machine's utilisation looks the machine up in its own statement: the same answers
    window = {"from": f"{DAY}T08:00:00Z", "to": f"{DAY}T16:00:00Z"}
    url = f"/api/v1/machines/{site}:m01/utilisation"
    assert error_of(scoped.get(url, params=window))["code"] == "site_forbidden"
    own = client_for(make_key(api_database, Role.VIEWER, "own site", [site, "elsewhere"]))
    assert own.get(url, params=window).status_code == 200
    nosuch = f"/api/v1/machines/{site}:nosuch/utilisation"
    assert error_of(own.get(nosuch, params=window))["code"] == "machine_not_found"
    # and the telemetry route with the rollups' watermarks
    window |= {"signals": "spindle_load"}
    url = f"/api/v1/machines/{site}:m01/telemetry"
    assert error_of(scoped.get(url, params=window))["code"] == "site_forbidden"
    assert own.get(url, params=window).status_code == 200
    nosuch = f"/api/v1/machines/{site}:nosuch/telemetry"
    assert error_of(own.get(nosuch, params=window))["code"] == "machine_not_found"


def test_machine_detail_lists_active_alarms(site: str, viewer: httpx.Client) -> None:
    detail = viewer.get(f"/api/v1/machines/{site}:m01").json()
    assert detail["controller"] == {"vendor": "i5", "model": "M8"}
    assert [(a["code"], a["level"], a["component"]) for a in detail["alarms"]] == [
        ("SP-1", "FAULT", "spindle")
    ]
    assert error_of(viewer.get("/api/v1/machines/nosuch"))["code"] == "machine_not_found"


def test_utilisation_matches_the_shift_to_the_second(site: str, viewer: httpx.Client) -> None:
    window = {"from": f"{DAY}T08:00:00Z", "to": f"{DAY}T16:00:00Z"}
    response = viewer.get(f"/api/v1/machines/{site}:m01/utilisation", params=window)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["states"] == {
        "READY": 2400.0,
        "ACTIVE": 7200.0,
        "PROGRAM_COMPLETED": 900.0,
        "FEED_HOLD": 300.0,
        "STOPPED": 10800.0,
    }
    assert body["unknown_s"] == 7200.0  # offline 12:00-13:00, UNAVAILABLE 15:00-16:00
    assert body["known_s"] == 21600.0
    assert body["utilisation"] == pytest.approx(1 / 3)
    assert "in-cycle" in body["convention"]
    assert (body["from"], body["to"]) == ("2026-01-05T08:00:00Z", "2026-01-05T16:00:00Z")
    # A window inside one state; one before any data is all unknown.
    inside = viewer.get(
        f"/api/v1/machines/{site}:m01/utilisation",
        params={"from": f"{DAY}T11:30:00+01:00", "to": f"{DAY}T12:30:00+01:00"},
    ).json()
    assert inside["states"] == {"STOPPED": 3600.0} and inside["unknown_s"] == 0
    before = viewer.get(
        f"/api/v1/machines/{site}:m01/utilisation",
        params={"from": "2026-01-04T00:00:00Z", "to": "2026-01-04T01:00:00Z"},
    ).json()
    assert before["states"] == {} and before["unknown_s"] == 3600.0
    assert before["utilisation"] is None


def test_cycles_with_program_and_parts(site: str, viewer: httpx.Client) -> None:
    window = {"from": f"{DAY}T08:00:00Z", "to": f"{DAY}T16:00:00Z"}
    body = viewer.get(f"/api/v1/machines/{site}:m01/cycles", params=window).json()
    got = [
        (c["program"], c["start"][11:19], c["end"][11:19], c["duration_s"], c["parts"], c["status"])
        for c in body["cycles"]
    ]
    assert got == [
        ("O100", "08:10:00", "08:40:00", 1800.0, 1.0, "completed"),
        ("O100", "08:45:00", "09:50:00", 3900.0, 1.0, "completed"),
        ("O200", "13:30:00", "14:00:00", 1800.0, 0.0, "interrupted"),
    ]
    assert body["cycles"][1]["paused_s"] == 300.0 and body["cycles"][1]["active_s"] == 3600.0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": f"{DAY}T10:00:00Z", "to": f"{DAY}T09:00:00Z"}, "to"),
        ({"from": f"{DAY}T10:00:00", "to": f"{DAY}T11:00:00Z"}, "from"),
        ({"to": f"{DAY}T11:00:00Z"}, "from"),
        ({"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),
        ({"from": "yesterday", "to": f"{DAY}T11:00:00Z"}, "from"),
    ],
)
@pytest.mark.parametrize("route", ["utilisation", "cycles"])
def test_bad_windows_name_the_field(
    site: str, viewer: httpx.Client, route: str, params: dict[str, str], field: str
) -> None:
    response = viewer.get(f"/api/v1/machines/{site}:m01/{route}", params=params)
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == field


@pytest.fixture(scope="module")
def samples(site: str, api_database: str) -> int:
    """Raw samples every 10 s, 08:00-10:00: spindle_load = minutes since 08:00, feedrate 1000."""
    with psycopg.connect(api_database, autocommit=True) as conn:
        (mid,) = conn.execute(
            "SELECT id FROM machine WHERE site = %s AND machine = 'm01'", [site]
        ).fetchone() or (None,)
        conn.execute(
            """INSERT INTO sample (machine_id, ts, spindle_load, feedrate)
               SELECT %s, t, extract(epoch FROM t - %s) / 60.0, 1000.0
                 FROM generate_series(%s::timestamptz, %s::timestamptz - interval '10 s',
                                      interval '10 s') AS t""",
            [mid, _t("08:00"), _t("08:00"), _t("10:00")],
        )
    return int(mid)


def test_telemetry_downsampled_from_raw_samples(
    site: str, samples: int, viewer: httpx.Client
) -> None:
    params = {
        "from": f"{DAY}T08:00:00Z",
        "to": f"{DAY}T10:00:00Z",
        "signals": "spindle_load,feedrate",
        "points": "12",
    }
    response = viewer.get(f"/api/v1/machines/{site}:m01/telemetry", params=params)
    # the route writes its JSON itself: the same bytes as its documented model's
    model = Telemetry.model_validate_json(response.content)
    assert model.model_dump_json(by_alias=True).encode() == response.content
    body = response.json()
    assert body["bucket_s"] == 600 and body["sources"] == ["sample"]  # no rollup watermark yet
    assert len(body["t"]) == 12 and body["t"][1] == f"{DAY}T08:10:00Z"
    load = body["series"]["spindle_load"]
    assert load["min"][0] == 0.0
    assert load["max"][0] == pytest.approx(590 / 60)
    assert load["avg"][0] == pytest.approx(295 / 60)
    assert load["min"][11] == pytest.approx(110.0)
    assert body["series"]["feedrate"]["avg"] == [1000.0] * 12
    fine = viewer.get(
        f"/api/v1/machines/{site}:m01/telemetry", params=params | {"points": "2000"}
    ).json()
    assert fine["bucket_s"] == 4 and len(fine["t"]) == 720  # every sample in its own bucket


def _truth(lo: str, hi: str) -> tuple[float, float, float, int]:
    """min, max, avg and count of the `samples` fixture's spindle_load in [lo, hi), from its
    formula: a sample every 10 s from 08:00, valued at the minutes since 08:00."""
    values = [k / 6 for k in range(720) if _t(lo) <= _t("08:00") + k * _10S < _t(hi)]
    return min(values), max(values), sum(values) / len(values), len(values)


_10S = datetime(2026, 1, 5, 0, 0, 10, tzinfo=UTC) - datetime(2026, 1, 5, tzinfo=UTC)


def test_telemetry_chains_rollups_up_to_each_watermark(
    site: str, samples: int, viewer: httpx.Client, api_database: str
) -> None:
    """10-minute buckets, 08:00-10:00: sample_5m (the plan's rollup) up to its watermark at
    09:00, then sample_1m (lagging less) to its watermark at 09:30, then raw samples. Rollup rows
    are the fixture's truth computed here (n, min, avg), with max marked per source (+1000 from
    5m, +2000 from 1m), so each bucket shows where it came from and min and avg must be the raw
    samples' whatever the source."""
    with psycopg.connect(api_database, autocommit=True) as conn:
        license_ = conn.execute("SELECT license FROM arbor_timescaledb").fetchone()
        if license_ and license_[0] == "timescale":
            pytest.skip("the rollups are continuous aggregates here; ingest's tests cover them")
        for table, width, mark, lo, hi in [("sample_5m", 300, 1000, "08:00", "09:00"),
                                           ("sample_1m", 60, 2000, "08:00", "10:00")]:  # fmt: skip
            at = _t(lo)
            while at < _t(hi):
                span = (at.strftime("%H:%M:%S"), (at + width * _10S / 10).strftime("%H:%M:%S"))
                mn, mx, avg, n = _truth(*span)
                conn.execute(
                    f"INSERT INTO {table} (bucket, machine_id, n, spindle_load_min, "  # noqa: S608
                    "spindle_load_max, spindle_load_avg, feedrate_min, feedrate_max, "
                    "feedrate_avg) VALUES (%s, %s, %s, %s, %s, %s, 1000, 1000, 1000)",
                    [at, samples, n, mn, mx + mark, avg],
                )
                at += width * _10S / 10
        # 1m rows after its watermark (09:30) are not final: never read (the raw samples are)
        conn.execute(
            "INSERT INTO rollup_watermark (rollup, done_until) VALUES ('sample_5m', %s), "
            "('sample_1m', %s), ('sample_1h', %s)",
            [_t("09:00"), _t("09:30"), _t("08:00")],
        )
    params = {
        "from": f"{DAY}T08:00:00Z",
        "to": f"{DAY}T10:00:00Z",
        "signals": "spindle_load,feedrate",
        "points": "12",
    }
    body = viewer.get(f"/api/v1/machines/{site}:m01/telemetry", params=params).json()
    assert body["bucket_s"] == 600
    assert body["sources"] == ["sample_5m", "sample_1m", "sample"]
    load = body["series"]["spindle_load"]
    assert len(body["t"]) == 12 and body["t"][6] == f"{DAY}T09:00:00Z"
    for k in range(12):
        lo = f"{8 + k // 6:02d}:{k % 6 * 10:02d}"
        hi = f"{8 + (k + 1) // 6:02d}:{(k + 1) % 6 * 10:02d}"
        mn, mx, avg, _ = _truth(lo, hi)
        assert load["min"][k] == pytest.approx(mn) and load["avg"][k] == pytest.approx(avg)
        assert load["max"][k] == pytest.approx(mx + (1000 if k < 6 else 2000 if k < 9 else 0))
    assert body["series"]["feedrate"]["avg"] == [1000.0] * 12
    # A window starting off the 5-minute grid: 08:02-08:05 from sample_1m, then 5-minute rows
    # (each counted in the bucket where it starts; buckets still start at `from`).
    body = viewer.get(
        f"/api/v1/machines/{site}:m01/telemetry", params=params | {"from": f"{DAY}T08:02:00Z"}
    ).json()
    assert body["bucket_s"] == 600
    assert body["sources"] == ["sample_5m", "sample_1m", "sample"]
    assert body["t"][0] == f"{DAY}T08:02:00Z"
    assert body["series"]["spindle_load"]["min"][0] == pytest.approx(2.0)
    assert body["series"]["spindle_load"]["max"][0] == pytest.approx(
        _truth("08:04", "08:05")[1] + 2000
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"signals": "no_such_signal"}, "signals"),
        ({"signals": "execution"}, "signals"),  # an event signal, not telemetry
        ({"signals": "Spindle Load"}, "signals"),
        ({"signals": "spindle_load", "points": "0"}, "points"),
        ({"signals": "spindle_load", "from": "1900-01-01T00:00:00Z"}, "from"),
        ({}, "signals"),
    ],
)
def test_telemetry_bad_inputs(
    site: str, viewer: httpx.Client, params: dict[str, str], field: str
) -> None:
    window = {"from": f"{DAY}T08:00:00Z", "to": f"{DAY}T10:00:00Z"}
    response = viewer.get(f"/api/v1/machines/{site}:m01/telemetry", params=window | params)
    assert response.status_code == 422
    assert error_of(response)["field"] == field


def test_events_and_alarm_history(site: str, viewer: httpx.Client) -> None:
    events = viewer.get(
        f"/api/v1/machines/{site}:m01/events",
        params={"from": f"{DAY}T08:00:00Z", "to": f"{DAY}T09:00:00Z", "signals": "execution"},
    ).json()
    assert [(e["ts"][11:19], e["value"]) for e in events] == [
        ("08:10:00", "ACTIVE"),
        ("08:40:00", "PROGRAM_COMPLETED"),
        ("08:45:00", "ACTIVE"),
    ]
    every = viewer.get(
        f"/api/v1/machines/{site}:m01/events",
        params={"from": f"{DAY}T07:00:00Z", "to": f"{DAY}T08:00:00Z"},
    ).json()
    assert [(e["ts"][11:16], e["signal"], e["value"]) for e in every] == [
        ("07:00", "part_count", "10"),
        ("07:00", "status", "online"),
        ("07:30", "execution", "READY"),
    ]
    alarms = viewer.get(
        f"/api/v1/machines/{site}:m01/alarms",
        params={"from": f"{DAY}T08:00:00Z", "to": f"{DAY}T16:00:00Z"},
    ).json()
    assert [(a["code"], a["duration_s"], a["closed_at"] is None) for a in alarms] == [
        ("W1", 1800.0, False),
        ("SP-1", None, True),
    ]


def test_cycle_statistics_per_program(site: str, viewer: httpx.Client) -> None:
    window = {"from": f"{DAY}T08:00:00Z", "to": f"{DAY}T16:00:00Z"}
    body = viewer.get(f"/api/v1/machines/{site}:m01/cycles/stats", params=window).json()
    assert body["measure"] == "duration"
    (o100,) = body["programs"]  # O200's only cycle was interrupted
    assert (o100["program"], o100["count"], o100["median"]) == ("O100", 2, 2850.0)
    assert (o100["min"], o100["max"], o100["parts_per_cycle"]) == (1800.0, 3900.0, 1.0)
    active = viewer.get(
        f"/api/v1/machines/{site}:m01/cycles/stats", params=window | {"measure": "active_time"}
    ).json()
    assert active["programs"][0]["max"] == 3600.0
    bad = viewer.get(
        f"/api/v1/machines/{site}:m01/cycles/stats", params=window | {"measure": "median"}
    )
    assert error_of(bad)["field"] == "measure"


def test_fleet_utilisation(site: str, viewer: httpx.Client) -> None:
    window = {"from": f"{DAY}T08:00:00Z", "to": f"{DAY}T16:00:00Z", "site": site}
    body = viewer.get("/api/v1/utilisation", params=window).json()
    rows = {m["machine"]: m for m in body["machines"]}
    assert rows["m01"]["states"]["ACTIVE"] == 7200.0 and rows["m01"]["unknown_s"] == 7200.0
    assert rows["idle"] == {
        "site": site,
        "machine": "idle",
        "states": {},
        "unknown_s": 28800.0,
        "known_s": 0.0,
        "utilisation": None,
    }
    assert body["fleet"]["known_s"] == 21600.0 and body["fleet"]["unknown_s"] == 36000.0
    assert body["fleet"]["utilisation"] == pytest.approx(1 / 3)
    assert "in-cycle" in body["convention"]


OEE_WINDOW = {"from": f"{DAY}T08:00:00Z", "to": f"{DAY}T16:00:00Z", "ideal_cycle_time": "1500"}


def test_oee_without_a_calendar_plans_every_hour(site: str, viewer: httpx.Client) -> None:
    body = viewer.get(f"/api/v1/machines/{site}:m01/oee", params=OEE_WINDOW).json()
    assert body["calendar"].startswith("none") and "ISO 22400" in body["convention"]
    (k,) = body["groups"]
    t = k["time"]
    # Mode unknown 08:00-08:05, offline 12:00-13:00, UNAVAILABLE 15:00-16:00.
    assert t["unknown"] == 7500.0
    assert (t["POT"], t["PBT"], t["PBT_known"]) == (28800.0, 28800.0, 21300.0)
    # ACTIVE in AUTOMATIC; STOPPED under the open FAULT SP-1 (14:00-15:00) is down time.
    assert (t["APT"], t["ASUT"], t["ADET"], t["ADOT"]) == (7200.0, 0.0, 3600.0, 10500.0)
    assert k["produced"] == 2.0 and k["scrap"] == 0.0
    assert k["availability"] == pytest.approx(7200 / 21300)
    assert k["effectiveness"] == pytest.approx(1500 * 2 / 7200)
    assert k["quality_ratio"] == 1.0
    assert k["oee"] == pytest.approx(7200 / 21300 * 3000 / 7200)


def test_calendar_and_planned_downtime_shape_the_oee(
    site: str, keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]
) -> None:
    engineer = client_for(keys[Role.ENGINEER])
    calendar = {
        "time_zone": "Europe/Berlin",
        "shifts": [
            {"name": "day", "start": "09:00", "end": "17:00", "breaks": [["12:00", "12:30"]]}
        ],
    }
    put = engineer.put(f"/api/v1/sites/{site}/calendar", json=calendar)
    assert put.status_code == 200, put.text
    got = client_for(keys[Role.VIEWER]).get(f"/api/v1/sites/{site}/calendar").json()
    assert got["time_zone"] == "Europe/Berlin" and got["shifts"][0]["start"] == "09:00:00"
    assert got["updated_by"].startswith("test engineer")
    downtime = engineer.post(
        f"/api/v1/sites/{site}/planned-downtime",
        json={
            "machine": "m01",
            "start": f"{DAY}T13:00:00Z",
            "end": f"{DAY}T13:30:00Z",
            "reason": "spindle service",
        },
    )
    assert downtime.status_code == 201, downtime.text
    for group, label in [("window", "window"), ("shift", f"{DAY} day"), ("day", DAY)]:
        body = engineer.get(
            f"/api/v1/machines/{site}:m01/oee", params=OEE_WINDOW | {"group": group}
        ).json()
        assert body["calendar"] == "site calendar (Europe/Berlin)"
        (k,) = body["groups"]
        assert k["label"] == label
        t = k["time"]
        # 09:00-17:00 Berlin = 08:00-16:00 UTC; break 11:00-11:30 UTC and the 13:00-13:30
        # downtime are planned down time (both were ADOT).
        assert (t["POT"], t["planned_down_time"], t["PBT"]) == (28800.0, 3600.0, 25200.0)
        assert (t["APT"], t["ADOT"], t["unknown"]) == (7200.0, 6900.0, 7500.0)
        assert k["availability"] == pytest.approx(7200 / 17700)
    listed = engineer.get(f"/api/v1/sites/{site}/planned-downtime").json()
    assert [d["reason"] for d in listed] == ["spindle service"]
    gone = engineer.delete(f"/api/v1/planned-downtime/{listed[0]['id']}")
    assert gone.status_code == 204
    again = engineer.delete(f"/api/v1/planned-downtime/{listed[0]['id']}")
    assert error_of(again)["code"] == "downtime_not_found"
    actions = [
        e["action"]
        for e in client_for(keys[Role.ADMIN]).get("/api/v1/audit", params={"site": site}).json()
    ]
    assert actions[:3] == [
        "planned_downtime.delete",
        "planned_downtime.create",
        "calendar.update",
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"time_zone": "Mars/Olympus", "shifts": []}, "time_zone"),
        ({"time_zone": "UTC", "shifts": [{"name": "a", "start": "25:00", "end": "1:00"}]},
         "shifts[0].start"),
        ({"time_zone": "UTC", "shifts": [{"name": "a", "start": "06:00", "end": "14:00",
                                          "weekdays": [7]}]}, "shifts[0].weekdays[0]"),
    ],
)  # fmt: skip
def test_bad_calendars_name_the_field(
    site: str, keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client],
    body: dict[str, object], field: str,
) -> None:  # fmt: skip
    response = client_for(keys[Role.ADMIN]).put(f"/api/v1/sites/{site}/calendar", json=body)
    assert response.status_code == 422
    assert error_of(response)["field"] == field


def test_bad_downtime_and_oee_inputs(
    site: str, keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]
) -> None:
    admin = client_for(keys[Role.ADMIN])
    url = f"/api/v1/sites/{site}/planned-downtime"
    window = {"start": f"{DAY}T13:00:00Z", "end": f"{DAY}T13:30:00Z"}
    assert error_of(admin.post(url, json=window | {"machine": "nosuch"}))["code"] == (
        "machine_not_found"
    )
    backwards = {"start": f"{DAY}T14:00:00Z", "end": f"{DAY}T13:00:00Z"}
    assert error_of(admin.post(url, json=backwards))["code"] == "validation_error"
    missing = admin.get(f"/api/v1/machines/{site}:m01/oee", params={"from": DAY, "to": DAY})
    assert missing.status_code == 422
    no_ict = {k: v for k, v in OEE_WINDOW.items() if k != "ideal_cycle_time"}
    response = admin.get(f"/api/v1/machines/{site}:m01/oee", params=no_ict)
    assert error_of(response)["field"] == "ideal_cycle_time"
    assert error_of(admin.get("/api/v1/sites/nocal/calendar"))["code"] == "calendar_not_found"


def test_downtime_reasons_with_guards_and_history(
    site: str, keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]
) -> None:
    operator = client_for(keys[Role.OPERATOR])
    reasons = {r["code"]: r for r in operator.get("/api/v1/downtime-reasons").json()}
    assert reasons["break"]["planned"] is True and "no_material" in reasons
    url = f"/api/v1/machines/{site}:m01/downtime"
    created = operator.post(
        url, json={"start": f"{DAY}T10:00:00Z", "end": f"{DAY}T10:30:00Z", "reason": "break"}
    )
    assert created.status_code == 201, created.text
    note = created.json()
    running = operator.post(
        url, json={"start": f"{DAY}T08:30:00Z", "end": f"{DAY}T08:50:00Z", "reason": "break"}
    )
    assert running.status_code == 409
    err = error_of(running)
    assert err["code"] == "machine_running" and "900 s" in err["message"]  # 08:30-40, 08:45-50
    overlap = operator.post(
        url, json={"start": f"{DAY}T10:15:00Z", "end": f"{DAY}T10:45:00Z", "reason": "setup"}
    )
    assert error_of(overlap)["code"] == "overlaps_annotation"
    unknown = operator.post(
        url, json={"start": f"{DAY}T11:00:00Z", "end": f"{DAY}T11:10:00Z", "reason": "nap"}
    )
    assert error_of(unknown)["field"] == "reason"
    future = operator.post(
        url,
        json={"start": "2099-01-01T00:00:00Z", "end": "2099-01-01T01:00:00Z", "reason": "break"},
    )
    assert error_of(future)["field"] == "end"

    changed = operator.patch(
        f"/api/v1/downtime/{note['id']}",
        json={"reason": "no_material", "comment": "the break was in the canteen log; no bar stock"},
    )
    assert changed.status_code == 200 and changed.json()["reason"] == "no_material"
    history = operator.get(f"/api/v1/downtime/{note['id']}/history").json()
    assert [(h["old_reason"], h["new_reason"]) for h in history] == [
        (None, "break"),
        ("break", "no_material"),
    ]
    assert history[1]["by"].startswith("test operator") and "bar stock" in history[1]["comment"]
    listed = operator.get(url, params={"from": f"{DAY}T00:00:00Z", "to": f"{DAY}T23:00:00Z"})
    assert [n["reason"] for n in listed.json()] == ["no_material"]
    audit = client_for(keys[Role.ADMIN]).get(
        "/api/v1/audit", params={"action": "downtime.reclassify"}
    )
    assert audit.json()[0]["detail"] == {"id": note["id"], "from": "break", "to": "no_material"}
    assert error_of(operator.get("/api/v1/downtime/999999/history"))["code"] == (
        "annotation_not_found"
    )


def test_downtime_pareto(site: str, viewer: httpx.Client) -> None:
    window = {"from": f"{DAY}T08:00:00Z", "to": f"{DAY}T16:00:00Z"}
    body = viewer.get(f"/api/v1/machines/{site}:m01/downtime/pareto", params=window).json()
    assert (body["downtime_s"], body["classified_s"]) == (14400.0, 1800.0)
    assert [(r["label"], r["seconds"], r["count"]) for r in body["rows"]] == [
        ("unclassified: STOPPED", 9000.0, 2),
        ("unclassified: READY", 2400.0, 2),
        ("no_material", 1800.0, 1),
        ("unclassified: PROGRAM_COMPLETED", 900.0, 2),
        ("unclassified: FEED_HOLD", 300.0, 1),
    ]
    assert body["rows"][-1]["cumulative_share"] == pytest.approx(1.0)


def test_scrap_entry_is_guarded_and_counts_in_the_oee(
    site: str, keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]
) -> None:
    operator = client_for(keys[Role.OPERATOR])
    url = f"/api/v1/machines/{site}:m01/scrap"
    first = operator.post(url, json={"count": 1, "at": f"{DAY}T10:00:00Z", "reason": "chatter"})
    assert first.status_code == 201, first.text
    too_many = operator.post(url, json={"count": 2, "at": f"{DAY}T10:00:00Z"})
    assert too_many.status_code == 409
    assert error_of(too_many)["code"] == "scrap_exceeds_production"
    assert operator.post(url, json={"count": 1, "at": f"{DAY}T10:00:00Z"}).status_code == 201
    assert error_of(operator.post(url, json={"count": 0}))["field"] == "count"
    listed = operator.get(url, params={"from": f"{DAY}T00:00:00Z", "to": f"{DAY}T23:00:00Z"})
    assert [s["count"] for s in listed.json()] == [1, 1]
    oee = operator.get(f"/api/v1/machines/{site}:m01/oee", params=OEE_WINDOW).json()
    (k,) = oee["groups"]
    assert (k["produced"], k["scrap"], k["good"], k["quality_ratio"]) == (2.0, 2.0, 0.0, 0.0)


def test_tool_life_limits_changes_and_prediction(
    site: str,
    api_database: str,
    keys: dict[Role, str],
    client_for: Callable[[str | None], httpx.Client],
) -> None:
    with psycopg.connect(api_database, autocommit=True) as conn:
        (mid,) = conn.execute(
            "SELECT id FROM machine WHERE site = %s AND machine = 'm01'", [site]
        ).fetchone() or (None,)
        for at, tool in [("08:05", 1), ("09:00", 2), ("13:00", 1)]:
            conn.execute(
                "INSERT INTO event (machine_id, ts, signal, value, value_num) "
                "VALUES (%s, %s, 'tool_number', %s, %s)",
                [mid, _t(at), str(tool), float(tool)],
            )
    engineer = client_for(keys[Role.ENGINEER])
    url = f"/api/v1/machines/{site}:m01/tools"
    limit = engineer.put(f"{url}/1/limit", json={"limit_minutes": 100, "warning_minutes": 60})
    assert limit.status_code == 200, limit.text
    params = {"lookback_days": "400", "rate_days": "400"}
    rows = {r["tool"]: r for r in engineer.get(url, params=params).json()}
    t1, t2 = rows[1], rows[2]
    # Tool 1: ACTIVE 08:10-08:40, 08:45-09:00, 13:30-14:00; tool 2: 09:00-09:15, 09:20-09:50.
    assert (t1["minutes_in_cut"], t1["parts"], t1["usages"]) == (75.0, 1.0, 2)
    assert (t2["minutes_in_cut"], t2["parts"], t2["usages"]) == (45.0, 1.0, 1)
    assert t1["in_spindle"] is True and t2["in_spindle"] is False
    assert (t1["status"], t1["remaining_minutes"], t1["used_fraction"]) == ("WARNING", 25.0, 0.75)
    assert t2["status"] is None and t2["predicted_change_at"] is None
    # 75 cutting minutes in 400 days: 25 more take 400 / 3 days.
    eta = datetime.fromisoformat(t1["predicted_change_at"]) - datetime.now(UTC)
    assert abs(eta.total_seconds() / 86400 - 400 / 3) < 0.1

    operator = client_for(keys[Role.OPERATOR])
    change = operator.post(f"{url}/1/changes", json={"at": f"{DAY}T13:15:00Z", "comment": "VB 0.3"})
    assert change.status_code == 201, change.text
    t1 = {r["tool"]: r for r in engineer.get(url, params=params).json()}[1]
    assert t1["changed"] is True and t1["since"] == f"{DAY}T13:15:00Z"
    assert (t1["minutes_in_cut"], t1["status"]) == (30.0, "USED")

    bad_limit = engineer.put(f"{url}/1/limit", json={"limit_minutes": 10, "warning_minutes": 60})
    assert error_of(bad_limit)["code"] == "validation_error"
    assert error_of(engineer.put(f"{url}/-1/limit", json={}))["field"] == "tool"
    future = operator.post(f"{url}/1/changes", json={"at": "2099-01-01T00:00:00Z"})
    assert error_of(future)["field"] == "at"
    assert (
        client_for(keys[Role.OPERATOR])
        .put(f"{url}/1/limit", json={"limit_minutes": 1, "warning_minutes": 0})
        .status_code
        == 403
    )


def test_utilisation_by_program(site: str, viewer: httpx.Client) -> None:
    window = {"from": f"{DAY}T08:00:00Z", "to": f"{DAY}T16:00:00Z", "by": "program"}
    body = viewer.get(f"/api/v1/machines/{site}:m01/utilisation", params=window).json()
    assert body["states"]["ACTIVE"] == 7200.0
    assert body["by_program"] == {
        "unknown": {"states": {"READY": 300.0}, "unknown_s": 0.0},
        "O100": {
            "states": {
                "READY": 1500.0,
                "ACTIVE": 5400.0,
                "PROGRAM_COMPLETED": 900.0,
                "FEED_HOLD": 300.0,
                "STOPPED": 7200.0,
            },
            "unknown_s": 3600.0,
        },
        "O200": {
            "states": {"READY": 600.0, "ACTIVE": 1800.0, "STOPPED": 3600.0},
            "unknown_s": 3600.0,
        },
    }
    plain = viewer.get(f"/api/v1/machines/{site}:m01/utilisation", params=window | {"by": ""})
    assert plain.status_code == 422 and error_of(plain)["field"] == "by"


def test_oee_by_program_and_across_the_fleet(site: str, viewer: httpx.Client) -> None:
    whole = viewer.get(f"/api/v1/machines/{site}:m01/oee", params=OEE_WINDOW).json()
    (w,) = whole["groups"]
    by_program = viewer.get(
        f"/api/v1/machines/{site}:m01/oee", params=OEE_WINDOW | {"group": "program"}
    ).json()
    groups = {g["label"]: g for g in by_program["groups"]}
    assert set(groups) == {"unknown", "O100", "O200"}  # before 08:05 no program was known
    # The program groups partition the window: times and parts add up to the whole.
    for name in ("POT", "PBT", "APT", "ADET", "ADOT", "unknown"):
        assert sum(g["time"][name] for g in groups.values()) == pytest.approx(w["time"][name])
    assert sum(g["produced"] for g in groups.values()) == w["produced"]
    assert groups["O200"]["time"]["APT"] <= 1800.0 and groups["unknown"]["time"]["APT"] == 0

    fleet = viewer.get("/api/v1/oee", params=OEE_WINDOW | {"site": site, "group": "window"}).json()
    assert [(m["site"], m["machine"]) for m in fleet["machines"]] == [
        (site, "idle"),
        (site, "m01"),
    ]
    (f,) = fleet["fleet"]
    times = [m["groups"][0]["time"] for m in fleet["machines"]]
    assert f["machines"] == 2 and "ISO 22400" in fleet["convention"]
    assert f["time"]["APT"] == sum(t["APT"] for t in times) == w["time"]["APT"]
    assert f["time"]["PBT"] == sum(t["PBT"] for t in times)
    # Ratios of the sums (time-weighted), not means of the machines' ratios.
    known = sum(t["PBT_known"] for t in times)
    assert f["availability"] == pytest.approx(f["time"]["APT"] / known)
    assert f["produced"] == w["produced"]


def test_fleet_list_snapshot_is_fresh_within_its_ttl_and_revalidates(
    site: str, api_database: str, api_settings: ApiSettings, keys: dict[Role, str]
) -> None:
    """With the shipped snapshot (ARBOR_API_LIST_CACHE_S), a change shows within the TTL, an
    unchanged list answers 304 to its ETag, and a scoped key still sees only its sites."""
    ttl = 0.5
    settings = api_settings.model_copy(update={"api_list_cache_s": ttl})
    scoped_key = make_key(api_database, Role.VIEWER, "snapshot scoped", ["elsewhere"])
    with (
        serve(settings) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys[Role.VIEWER]}"}) as c,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {scoped_key}"}) as scoped,
    ):
        first = c.get("/api/v1/machines", params={"site": site})
        assert first.status_code == 200 and first.headers["content-type"] == "application/json"
        assert {r["machine"] for r in first.json()} == {"m01", "idle"}
        tag = first.headers["etag"]
        again = c.get("/api/v1/machines", params={"site": site}, headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b""
        assert scoped.get("/api/v1/machines").json() == []
        with psycopg.connect(api_database, autocommit=True) as conn:
            conn.execute(
                "UPDATE machine SET status = 'offline', online = false "
                "WHERE site = %s AND machine = 'idle'",
                [site],
            )
        try:
            changed_at = time.monotonic()
            while True:
                r = c.get("/api/v1/machines", params={"site": site}, headers={"If-None-Match": tag})
                if r.status_code == 200:
                    break
                assert r.status_code == 304
                assert time.monotonic() - changed_at < ttl + 0.5, "the change never showed"
                time.sleep(0.05)
            rows = {m["machine"]: m for m in r.json()}
            assert rows["idle"]["status"] == "offline" and r.headers["etag"] != tag
        finally:
            with psycopg.connect(api_database, autocommit=True) as conn:
                conn.execute(
                    "UPDATE machine SET status = 'unknown', online = false "
                    "WHERE site = %s AND machine = 'idle'",
                    [site],
                )


def test_fleet_list_bytes_are_the_declared_model(site: str, viewer: httpx.Client) -> None:
    """The list is serialised without pydantic: it must still be exactly the model's JSON."""
    r = viewer.get("/api/v1/machines", params={"site": site})
    models = [MachineStatus.model_validate(m) for m in r.json()]
    assert r.content == TypeAdapter(list[MachineStatus]).dump_json(models)


def test_telemetry_of_values_near_the_float_limit(
    site: str, api_database: str, viewer: httpx.Client
) -> None:
    """1e308 is a valid (finite) value on the wire; two in one bucket overflowed PostgreSQL's
    float8 sum and the chart's request failed with a 500. (After every rollup watermark the
    other tests set: raw samples.)"""
    add_machines(api_database, [(site, "huge")])
    with psycopg.connect(api_database, autocommit=True) as conn:
        (mid,) = conn.execute(
            "SELECT id FROM machine WHERE site = %s AND machine = 'huge'", [site]
        ).fetchone() or (None,)
        for k, value in enumerate((1e308, 1.5e308, -1e308, 2.0)):
            conn.execute(
                "INSERT INTO sample (machine_id, ts, spindle_load) VALUES (%s, %s, %s)",
                [mid, _t("10:00") + k * _10S, value],
            )
    params = {"from": f"{DAY}T10:00:00Z", "to": f"{DAY}T10:01:00Z", "signals": "spindle_load",
              "points": "1"}  # fmt: skip
    response = viewer.get(f"/api/v1/machines/{site}:huge/telemetry", params=params)
    assert response.status_code == 200, response.text
    load = response.json()["series"]["spindle_load"]
    assert load["min"] == [-1e308] and load["max"] == [1.5e308]
    assert load["avg"] == [pytest.approx((1.5e308 + 2.0) / 4)]  # summed exactly: 3.75e307

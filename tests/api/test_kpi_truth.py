"""KPIs against the simulator's ground truth, through the real stack.

A simulated i5 factory (six machines of three kinds, the default two-shift calendar) runs one
early shift of a recent weekday, 05:45-14:15 UTC, faster than real time, through the stack's
Mosquitto and a real ingest worker into a fresh database. The API's utilisation, cycles and OEE
are then compared with the simulator's truth (`arbor-sim-truth/1`, docs/simulators.md).

Tolerance. The model is discrete: at 1 Hz every state change happens on a whole second, the
published timestamps are the tick times to the millisecond, ingest keeps them to the microsecond
and the API adds interval lengths in float64 epoch seconds (resolution 2.4e-7 s near 1.8e9 s).
So seconds per state can only differ by rounding: with at most a few hundred intervals per state,
well under 1 ms. Anything larger is a real disagreement (a lost event, a boundary counted twice or
a state attributed to the wrong time), not sampling: the sample period plays no part because
states travel as events, by exception, not as samples. Cycle starts and ends are tick times, so
they too must agree to the millisecond; parts are integers and must agree exactly.

Mapping of the truth to the API:
* `execution_seconds[UNAVAILABLE]` (the machine powered off, so offline on the wire, or not yet
  born at the window start) is the API's `unknown_s`; every other state's seconds are `states`.
* cycles: the truth's cycles (started in the window) are the API's cycles, with program, start,
  end, status (`completed`, `interrupted`, `open`) and parts; prove-out runs (ACTIVE in
  MANUAL_DATA_INPUT) are cycles on the wire too, as the truth counts them.
* OEE without a site calendar (every hour planned): produced = `parts.good + parts.scrap`, scrap
  = `parts.scrap`, APT = `activity_seconds[cycle]` (ACTIVE in AUTOMATIC), ASUT = `prove` (ACTIVE
  in MANUAL_DATA_INPUT), ADET = the time a FAULT condition is open (`fault` activity), unknown =
  `off`, ADOT = every other powered second.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from api.keys import Role
from tests.api.conftest import make_key
from tests.conftest import MqttSettings
from tests.ingest.helpers import ROOT, scalar, wait_ready, wait_until, worker_env, workers
from tests.servers import free_port

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(1200)]

#: Seconds two state totals, or two cycle boundaries, may differ by (see the module docstring).
TOLERANCE_S = 1e-3
DURATION_S = 8.5 * 3600  # 05:45-14:15: power-on before the early shift, its breaks, its end
RATE_HZ = 1
FACTORY = """\
site = "{site}"
[[machines]]
kind = "mill"
count = 2
prefix = "mi"
[[machines]]
kind = "five_axis"
count = 2
prefix = "fx"
[[machines]]
kind = "lathe"
count = 2
prefix = "la"
"""


def _recent_weekday_start(now: datetime) -> datetime:
    """05:45 UTC of the latest Monday-Friday that ends before now (data well inside every
    retention window, message_ledger's 30 days included)."""
    day = (now - timedelta(days=1)).date()
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return datetime(day.year, day.month, day.day, 5, 45, tzinfo=UTC)


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Shift:
    site: str
    truth: dict[str, Any]
    start: datetime
    end: datetime

    def window(self) -> dict[str, str]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat()}


@pytest.fixture(scope="module")
def shift(
    api_database: str,
    mqtt_settings: MqttSettings,
    unique_site: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Shift:
    """The simulated shift, stored by a real ingest worker: the site and the truth."""
    work = tmp_path_factory.mktemp("kpi-truth")
    factory, truth_file = work / "factory.toml", work / "truth.json"
    factory.write_text(FACTORY.format(site=unique_site))
    start = _recent_weekday_start(datetime.now(UTC))
    port = free_port()
    env = worker_env(
        api_database,
        mqtt_settings.url,
        unique_site,
        f"kt{secrets.token_hex(3)}",
        ARBOR_INGEST_METRICS_PORT=str(port),
        # Ingest's silence job compares a machine's `status_since`, which is the birth's own
        # (simulated, past) timestamp until its first message is stored, with the wall clock;
        # a replay of last week would be declared silent between the two. Past every replay here.
        ARBOR_INGEST_SILENCE_TIMEOUT_S=str(14 * 86400),
    )
    with workers(env) as procs:
        wait_ready(port)
        # As fast as possible, but blocking (never dropping) when 500 messages are unacknowledged:
        # below the publisher's per-connection buffer, so flow control, not the buffer, paces it.
        sim = subprocess.run(
            [sys.executable, "-m", "simulators", "--factory", str(factory),
             "--transport", "mqtt", "--connection", "shared", "--mqtt-url", mqtt_settings.url,
             "--rate", str(RATE_HZ), "--batch", "60", "--duration", str(DURATION_S),
             "--speedup", "0", "--max-pending", "500", "--seed", "11", "--start", start.isoformat(),
             "--summary", str(truth_file), "--run-id", f"kt{secrets.token_hex(3)}"],
            cwd=ROOT, env={k: v for k, v in env.items() if not k.startswith("ARBOR_")},
            capture_output=True, timeout=900, check=False,
        )  # fmt: skip
        assert sim.returncode == 0, sim.stderr.decode()[-3000:]
        truth = json.loads(truth_file.read_text())
        stats = truth["transport_stats"]
        assert stats["acked"] == stats["published"], f"the simulator lost messages: {stats}"
        expected = sum(s["messages"] for m in truth["machines"].values() for s in m["sessions"])
        offline = sum(len(m["sessions"]) for m in truth["machines"].values())

        def stored() -> bool:
            ledger = scalar(
                api_database,
                "SELECT count(*) FROM message_ledger l JOIN machine m ON m.id = l.machine_id "
                "WHERE m.site = %s AND l.seq >= 0",
                unique_site,
            )
            deaths = scalar(
                api_database,
                "SELECT count(*) FROM event e JOIN machine m ON m.id = e.machine_id "
                "WHERE m.site = %s AND e.signal = 'status' AND e.value = 'offline'",
                unique_site,
            )
            assert all(p.poll() is None for p in procs), "the ingest worker died"
            return bool(ledger == expected and deaths >= offline)

        wait_until(stored, timeout=600, what=f"{expected} sequenced messages in the database")
    assert truth["window"]["rate_hz"] == RATE_HZ
    return Shift(
        site=unique_site,
        truth=truth,
        start=_parse(truth["window"]["start"]),
        end=_parse(truth["window"]["end"]),
    )


@pytest.fixture(scope="module")
def viewer(api_database: str, client_for: Callable[[str | None], httpx.Client]) -> httpx.Client:
    return client_for(make_key(api_database, Role.VIEWER, "kpi truth"))


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE_S


def test_the_shift_is_a_meaningful_sample(shift: Shift) -> None:
    """Guard against a vacuous comparison: the shift has every kind of event we compare."""
    machines = shift.truth["machines"]
    assert len(machines) == 6
    assert shift.truth["window"]["seconds"] == DURATION_S
    cycles = [c for m in machines.values() for c in m["cycles"]]
    assert {c["status"] for c in cycles} >= {"completed", "interrupted"}
    assert sum(m["parts"]["good"] for m in machines.values()) > 50
    assert any(m["execution_seconds"]["UNAVAILABLE"] > 0 for m in machines.values())
    assert any(m["activity_seconds"]["fault"] > 0 for m in machines.values())


def test_seconds_per_execution_state_match_the_truth(shift: Shift, viewer: httpx.Client) -> None:
    problems: list[str] = []
    for machine, truth in shift.truth["machines"].items():
        path = f"/api/v1/machines/{shift.site}:{machine}/utilisation"
        r = viewer.get(path, params=shift.window())
        assert r.status_code == 200, r.text
        body = r.json()
        want = {s: v for s, v in truth["execution_seconds"].items() if v > 0}
        unknown = want.pop("UNAVAILABLE", 0.0)
        got = body["states"]
        problems.extend(
            f"{machine} {state}: API {got.get(state)} truth {want.get(state)}"
            for state in sorted(set(want) | set(got))
            if not _close(got.get(state, 0.0), want.get(state, 0.0))
        )
        if not _close(body["unknown_s"], unknown):
            problems.append(f"{machine} unknown: API {body['unknown_s']} truth {unknown}")
        known = DURATION_S - unknown
        assert _close(body["known_s"], known)
        assert body["utilisation"] == pytest.approx(want.get("ACTIVE", 0.0) / known, abs=1e-9)
    assert not problems, "\n".join(problems)


def test_fleet_utilisation_adds_up_to_the_truth(shift: Shift, viewer: httpx.Client) -> None:
    r = viewer.get("/api/v1/utilisation", params={**shift.window(), "site": shift.site})
    assert r.status_code == 200, r.text
    fleet = r.json()["fleet"]
    machines = shift.truth["machines"].values()
    active = sum(m["execution_seconds"]["ACTIVE"] for m in machines)
    unknown = sum(m["execution_seconds"]["UNAVAILABLE"] for m in machines)
    assert fleet["states"]["ACTIVE"] == pytest.approx(active, abs=6 * TOLERANCE_S)
    assert fleet["unknown_s"] == pytest.approx(unknown, abs=6 * TOLERANCE_S)
    assert fleet["utilisation"] == pytest.approx(active / (6 * DURATION_S - unknown), abs=1e-9)


def test_cycles_match_the_truth(shift: Shift, viewer: httpx.Client) -> None:
    problems = []
    for machine, truth in shift.truth["machines"].items():
        r = viewer.get(f"/api/v1/machines/{shift.site}:{machine}/cycles", params=shift.window())
        assert r.status_code == 200, r.text
        got = r.json()["cycles"]
        want = truth["cycles"]
        if len(got) != len(want):
            problems.append(f"{machine}: API {len(got)} cycles, truth {len(want)}")
        for g, w in zip(got, want, strict=False):
            same = (
                g["program"] == w["program"]
                and g["status"] == w["status"]
                and _close(_parse(g["start"]).timestamp(), _parse(w["start"]).timestamp())
                and _close(_parse(g["end"]).timestamp(), _parse(w["end"]).timestamp())
                and _close(g["duration_s"], w["duration_s"])
                and g["parts"] == w["parts"]
            )
            if not same:
                problems.append(f"{machine}: API {g} truth {w}")
    assert not problems, "\n".join(problems[:20])


def test_cycle_statistics_count_the_completed_cycles(shift: Shift, viewer: httpx.Client) -> None:
    for machine, truth in shift.truth["machines"].items():
        r = viewer.get(
            f"/api/v1/machines/{shift.site}:{machine}/cycles/stats", params=shift.window()
        )
        assert r.status_code == 200, r.text
        got = {p["program"]: p for p in r.json()["programs"]}
        want = {p: v for p, v in truth["cycles_per_program"].items() if v["completed"]}
        assert set(got) == set(want), machine
        for program, w in want.items():
            durations = sorted(w["durations_s"])
            assert got[program]["count"] == len(durations), (machine, program)
            assert got[program]["min"] == pytest.approx(durations[0], abs=TOLERANCE_S)
            assert got[program]["max"] == pytest.approx(durations[-1], abs=TOLERANCE_S)


def test_oee_time_model_and_parts_match_the_truth(shift: Shift, viewer: httpx.Client) -> None:
    problems = []
    for machine, truth in shift.truth["machines"].items():
        r = viewer.get(
            f"/api/v1/machines/{shift.site}:{machine}/oee",
            params={**shift.window(), "ideal_cycle_time": 300},
        )
        assert r.status_code == 200, r.text
        (group,) = r.json()["groups"]
        activity = truth["activity_seconds"]
        parts = truth["parts"]
        want = {
            "POT": DURATION_S,
            "PBT": DURATION_S,
            "APT": activity["cycle"],
            "ASUT": activity["prove"],
            "ADET": activity["fault"],
            "unknown": activity["off"],
            "ADOT": DURATION_S
            - activity["cycle"]
            - activity["prove"]
            - activity["fault"]
            - activity["off"],
        }
        for name, seconds in want.items():
            if not _close(group["time"][name], seconds):
                problems.append(f"{machine} {name}: API {group['time'][name]} truth {seconds}")
        if group["produced"] != parts["good"] + parts["scrap"]:
            problems.append(f"{machine} produced: API {group['produced']} truth {parts}")
        if group["scrap"] != parts["scrap"]:
            problems.append(f"{machine} scrap: API {group['scrap']} truth {parts}")
    assert not problems, "\n".join(problems)


def test_fleet_oee_sums_the_truth(shift: Shift, viewer: httpx.Client) -> None:
    r = viewer.get(
        "/api/v1/oee", params={**shift.window(), "ideal_cycle_time": 300, "site": shift.site}
    )
    assert r.status_code == 200, r.text
    (fleet,) = r.json()["fleet"]
    machines = shift.truth["machines"].values()
    apt = sum(m["activity_seconds"]["cycle"] for m in machines)
    off = sum(m["activity_seconds"]["off"] for m in machines)
    produced = sum(m["parts"]["good"] + m["parts"]["scrap"] for m in machines)
    assert fleet["machines"] == 6
    assert fleet["time"]["APT"] == pytest.approx(apt, abs=6 * TOLERANCE_S)
    assert fleet["produced"] == produced
    assert fleet["availability"] == pytest.approx(apt / (6 * DURATION_S - off), abs=1e-9)

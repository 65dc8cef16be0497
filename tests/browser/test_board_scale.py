"""The status board at factory scale: 500 machines render in under a second and live changes,
published on the real broker and carried by the API's WebSocket stream, are applied as they come
(rounds of 100 machines at once, then every machine changing once a second). Figures go to
artifacts/board-scale.json and the test output."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from api.config import ApiSettings
from api.keys import Role
from protocol import event_topic
from tests.browser.conftest import SCREENSHOTS, new_page, screenshot, sign_in

pytestmark = pytest.mark.services

SITES = 5
PER_SITE = 100
ROUNDS = 5
CHANGED_PER_ROUND = 100
SUSTAINED_S = 10


@pytest.fixture(scope="module")
def api_settings(api_database: str, mqtt_settings: Any) -> ApiSettings:
    """tests/api's settings, with the stream's silence rule at an hour: this module writes its
    machines' state straight into the database and no ingest keeps it current, so the default
    60 s would turn the "online" machines `unknown` on the live board halfway through."""
    return ApiSettings(
        database_url=api_database,
        mqtt_url=mqtt_settings.url,
        api_rate_per_s=10_000,
        api_rate_burst=10_000,
        api_mqtt_timeout_s=5,
        api_stream_silence_timeout_s=3600,
    )


@pytest.fixture(scope="module")
def fleet(api_database: str, unique_site: str) -> list[str]:
    """500 machines in 5 sites, each online with an execution state, a program and a part count."""
    sites = [f"{unique_site}{i}" for i in range(SITES)]
    with psycopg.connect(api_database, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO machine (site, machine, status, online, last_seen, status_since)
               SELECT s, 'm' || lpad(n::text, 3, '0'), 'online', true, now(),
                      now() - n * interval '1 min'
                 FROM unnest(%s::text[]) AS s, generate_series(1, %s) AS n""",
            [sites, PER_SITE],
        )
        conn.execute(
            """INSERT INTO event (machine_id, ts, signal, value, value_num)
               SELECT id, now() - interval '1 h', 'execution',
                      CASE WHEN id % 3 = 0 THEN 'READY' ELSE 'ACTIVE' END, NULL::float8 FROM machine
               UNION ALL
               SELECT id, now() - interval '1 h', 'program', 'O' || (1000 + id % 7)::text, NULL
                 FROM machine
               UNION ALL
               SELECT id, now() - interval '1 h', 'part_count', (id % 50)::text,
                      (id % 50)::float8 FROM machine"""
        )
        # Events written with SQL bypass ingest's writer, which keeps event_latest (0004).
        conn.execute("SELECT event_latest_refresh(NULL::integer[])")
    return sites


@pytest.fixture(scope="module")
def publisher(mqtt_settings: Any) -> Iterator[mqtt.Client]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(mqtt_settings.username, mqtt_settings.password)
    client.connect(mqtt_settings.host, mqtt_settings.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def _publish_counts(client: mqtt.Client, machines: list[tuple[str, str]], value: int) -> None:
    """One event message per machine (part_count = value), QoS 1, all in flight at once."""
    ts = datetime.now(UTC).isoformat()
    infos = [
        client.publish(
            event_topic(site, machine),
            orjson.dumps(
                {
                    "v": 1,
                    "session": "scale",
                    "seq": value,
                    "events": [{"ts": ts, "signal": "part_count", "value": value}],
                }
            ),
            qos=1,
        )
        for site, machine in machines
    ]
    for info in infos:
        info.wait_for_publish(30)


def test_500_machines_render_fast_and_keep_up(
    browser: Any,
    base_url: str,
    fleet: list[str],
    keys: dict[Role, str],
    publisher: mqtt.Client,
) -> None:
    page, watch = new_page(browser)
    sign_in(page, base_url, keys[Role.VIEWER])
    # A cold load of the page (the key and /me are kept in the tab's session storage): navigation
    # start to 500 tiles painted, over the stream's subscription and snapshot.
    renders: list[float] = []
    rest_answered: list[float | None] = []
    for i in range(3):
        page.goto(f"{base_url}/?load={i}#/board")
        page.wait_for_selector("body[data-board-ready]")
        perf = page.evaluate("() => window.__arborBoard")
        assert perf["tiles"] == SITES * PER_SITE
        renders.append(perf["firstRenderFromNavigationMs"])
        rest_answered.append(perf["machinesResponseEndMs"])
    _wait(page, "() => document.querySelector('#board-live').dataset.mode", "live")
    screenshot(page, "board-500-1920")
    machines = [(s, f"m{n:03d}") for s in fleet for n in range(1, PER_SITE + 1)]

    # Warm-up: the API's broker subscription may still be settling on a loaded machine.
    deadline = time.monotonic() + 60
    value = 1
    while not _shows(page, machines[0], value, timeout_s=3):
        assert time.monotonic() < deadline, "the board never got a live change"
        value += 1
        _publish_counts(publisher, machines[:1], value)

    # Rounds of 100 machines changing at once: publish to all 100 tiles updated.
    latencies: list[float] = []
    acked: list[float] = []
    handling: list[float] = []
    batches: list[int] = []
    for r in range(ROUNDS):
        chunk = machines[r * CHANGED_PER_ROUND : (r + 1) * CHANGED_PER_ROUND]
        before = page.evaluate(
            "() => [window.__arborBoard.changedTotal || 0, window.__arborBoard.updates]"
        )
        page.evaluate("() => { window.__arborBoard.maxUpdateMs = 0; }")
        page.evaluate("() => { window.__arborBoard.batches = []; }")
        started = time.monotonic()
        _publish_counts(publisher, chunk, 1000 + r)
        acked.append((time.monotonic() - started) * 1000)
        _wait(  # every tile of the round shows its new value (late warm-up changes aside)
            page,
            "() => [...document.querySelectorAll('.tile-parts')]"
            f".filter((e) => e.textContent === 'parts {1000 + r:,}').length",
            len(chunk),
        )
        latencies.append((time.monotonic() - started) * 1000)
        perf = page.evaluate("() => window.__arborBoard")
        handling.append(perf["maxUpdateMs"])
        batches.append(perf["updates"] - before[1])
        assert page.locator(".tile-parts", has_text=f"parts {1000 + r:,}").count() == len(chunk)

    # Sustained: every one of the 500 machines changes once a second for SUSTAINED_S seconds.
    page.evaluate(
        "() => { window.__arborBoard.maxUpdateMs = 0; window.__arborBoard.batches = []; }"
    )
    before = page.evaluate(
        "() => [window.__arborBoard.changedTotal || 0, window.__arborBoard.updates]"
    )
    started = time.monotonic()
    for k in range(SUSTAINED_S):
        tick = started + k
        time.sleep(max(0.0, tick - time.monotonic()))
        _publish_counts(publisher, machines, 2000 + k)
    published = time.monotonic()
    last = 2000 + SUSTAINED_S - 1
    _wait(
        page,
        "() => [...document.querySelectorAll('.tile-parts')]"
        f".filter((e) => e.textContent === 'parts {last:,}').length",
        len(machines),
        timeout_s=60,
    )
    lag_ms = (time.monotonic() - published) * 1000
    perf = page.evaluate("() => window.__arborBoard")
    stream = page.evaluate("() => window.__arborStream")
    sustained = {
        "machines_x_rate": f"{len(machines)} x 1/s for {SUSTAINED_S} s",
        "publish_s": round(published - started, 2),
        "lag_after_last_publish_ms": round(lag_ms),
        "batches_applied": perf["updates"] - before[1],
        "machine_changes_applied": perf["changedTotal"] - before[0],
        "max_dom_ms_per_batch": round(perf["maxUpdateMs"], 1),
        "dom_ms_per_batch_p50_p95": _percentiles([b[0] for b in perf["batches"]]),
        "machines_per_batch_p50_max": [
            statistics.median(b[1] for b in perf["batches"]),
            max(b[1] for b in perf["batches"]),
        ],
    }
    figures = {
        "machines": SITES * PER_SITE,
        "transport": "WebSocket /api/v1/stream (status, coalesced per machine)",
        "first_render_ms (navigation start to 500 tiles painted)": [round(x, 1) for x in renders],
        "machines_answered_ms (navigation start to GET /machines answered)": [
            None if x is None else round(x, 1) for x in rest_answered
        ],
        "round_latency_ms (publish 100 changes to all 100 tiles updated)": [
            round(x) for x in latencies
        ],
        "round_publish_acked_ms (the test's 100 QoS 1 publishes acknowledged)": [
            round(x) for x in acked
        ],
        "round_after_ack_ms (last publish acknowledged to all 100 tiles updated)": [
            round(x - a) for x, a in zip(latencies, acked, strict=True)
        ],
        "round_max_dom_ms_per_batch": [round(x, 1) for x in handling],
        "round_batches": batches,
        "sustained": sustained,
        "socket_opens": stream["opened"],
    }
    out = SCREENSHOTS.parent / "board-scale.json"
    out.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))
    screenshot(page, "board-500-live-1920")
    # Generous bounds for a loaded shared machine: the figures are the report (docs/dashboard.md;
    # under a second when the machine is not saturated by other test runs).
    assert max(renders) < 3000, figures
    assert max(handling) < 250, figures
    # From the broker's acknowledgement: the publisher's own pace on a busy shared broker is not
    # the board's (it is reported above).
    assert max(x - a for x, a in zip(latencies, acked, strict=True)) < 20_000, figures
    assert stream["opened"] == 1, figures  # one socket for the whole run: no reconnects
    assert watch.errors == []


def _percentiles(values: list[float]) -> list[float]:
    ordered = sorted(values)
    if not ordered:
        return []
    return [round(ordered[len(ordered) // 2], 1), round(ordered[int(len(ordered) * 0.95)], 1)]


def _shows(page: Any, machine: tuple[str, str], value: int, timeout_s: float) -> bool:
    selector = f'.tile[data-key="{machine[0]}:{machine[1]}"] .tile-parts'
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if page.locator(selector).inner_text() == f"parts {value:,}":
            return True
        page.wait_for_timeout(50)
    return False


def _wait(
    page: Any,
    expression: str,
    want: Any,
    timeout_s: float = 30,
    cmp: Callable[[Any, Any], bool] = lambda v, want: v == want,
) -> None:
    # CSP forbids string evaluation in wait_for_function; poll with evaluate (a function).
    deadline = time.monotonic() + timeout_s
    while not cmp(value := page.evaluate(expression), want):
        if time.monotonic() > deadline:
            raise AssertionError(f"{expression}: {value!r}, wanted {want!r}")
        page.wait_for_timeout(20)

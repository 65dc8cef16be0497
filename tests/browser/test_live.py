"""The dashboard live over the WebSocket `/api/v1/stream`, against the real API and broker.

A machine publishes on Mosquitto as the simulator would (status, events, telemetry); the status
board's tile and the machine page follow without a reload. The API is restarted under an open
board (it shows "reconnecting", then "live" again, takes a fresh snapshot and follows); an API
without a broker makes the board fall back to polling.
"""

from __future__ import annotations

import functools
import operator
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from api.config import ApiSettings
from api.keys import Role
from tests.api.conftest import add_machines
from tests.api.test_stream import Machine
from tests.browser.conftest import new_page, screenshot, serve_on, sign_in
from tests.servers import free_port

pytestmark = pytest.mark.services

#: Generous bounds for a loaded 2-core machine; the measured times are printed.
UPDATE_BOUND_S = 20.0


@pytest.fixture(scope="module")
def publisher(mqtt_settings: Any) -> Iterator[mqtt.Client]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(mqtt_settings.username, mqtt_settings.password)
    client.connect(mqtt_settings.host, mqtt_settings.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


@pytest.fixture(scope="module")
def site(api_database: str, unique_site: str, publisher: mqtt.Client) -> Iterator[str]:
    add_machines(api_database, [(unique_site, m) for m in ("w1", "w2", "w3")])
    yield unique_site
    for m in ("w1", "w2", "w3"):  # no retained status left behind on the shared broker
        publisher.publish(f"arbor/v1/{unique_site}/{m}/status", b"", qos=1, retain=True)


def _poll(page: Any, expression: str, until: Callable[[Any], bool], timeout_s: float) -> Any:
    """Evaluate `expression` (a function, the CSP forbids strings) until `until(value)`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = page.evaluate(expression)
        if until(value):
            return value
        if time.monotonic() > deadline:
            stream = page.evaluate("() => JSON.stringify(window.__arborStream)")
            raise AssertionError(
                f"{expression} was still {value!r} after {timeout_s} s; stream: {stream}"
            )
        page.wait_for_timeout(25)


def _tile(page: Any, ref: str, part: str = "") -> str:
    return f'.tile[data-key="{ref}"] {part}'.strip()


def _mode(page: Any) -> str:
    return str(page.evaluate("() => document.querySelector('.live').dataset.mode"))


def _until_mode(page: Any, mode: str, timeout_s: float = 30) -> None:
    _poll(
        page, "() => document.querySelector('.live')?.dataset.mode", lambda v: v == mode, timeout_s
    )


def _warm_up(page: Any, machine: Machine, ref: str) -> None:
    """Publish a birth and events until the tile shows them: the API's broker subscription may
    still be settling."""
    deadline = time.monotonic() + 60
    count = 1
    while True:
        machine.status(True)
        machine.events({"ts": _now(), "signal": "execution", "value": "ACTIVE"})
        machine.events({"ts": _now(), "signal": "part_count", "value": count})
        try:
            # the birth and the events both seen: a birth published before the API's broker
            # subscription was in place is lost, and a machine without one stays `unknown`
            _poll(
                page,
                f"() => {{ const t = document.querySelector('{_tile(page, ref)}'); "
                "return t && [t.dataset.state, t.querySelector('.tile-parts').textContent]; }",
                functools.partial(operator.eq, ["running", f"parts {count}"]),
                3,
            )
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            count += 1


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat()


def _timed_change(page: Any, publish: Callable[[], None], selector_js: str, want: str) -> float:
    started = time.monotonic()
    publish()
    _poll(page, selector_js, lambda v: v == want, UPDATE_BOUND_S)
    return (time.monotonic() - started) * 1000


def test_board_tile_follows_the_stream_without_a_reload(
    browser: Any, base_url: str, site: str, keys: dict[Role, str], publisher: mqtt.Client
) -> None:
    page, watch = new_page(browser)
    sign_in(page, base_url, keys[Role.VIEWER])
    _until_mode(page, "live")
    page.evaluate("() => { window.__sameDocument = true; }")
    ref = f"{site}:w1"
    w1 = Machine(publisher, site, "w1", "sess-live-1")
    _warm_up(page, w1, ref)
    state = f"() => document.querySelector('{_tile(page, ref)}').dataset.state"
    parts = f"() => document.querySelector('{_tile(page, ref, '.tile-parts')}').textContent"
    prog = f"() => document.querySelector('{_tile(page, ref, '.tile-prog')}').textContent"
    since = f"() => document.querySelector('{_tile(page, ref, '.tile-since')}').textContent"
    latencies = {}
    latencies["part count"] = _timed_change(
        page,
        lambda: w1.events({"ts": _now(), "signal": "part_count", "value": 777}),
        parts,
        "parts 777",
    )
    latencies["program"] = _timed_change(
        page,
        lambda: w1.events({"ts": _now(), "signal": "program", "value": "O4711"}),
        prog,
        "O4711",
    )
    alarm = {"component": "spindle", "level": "FAULT", "code": "SP-9", "text": "overload"}
    latencies["alarm"] = _timed_change(
        page,
        lambda: w1.events({"ts": _now(), "signal": "condition", "condition": alarm}),
        state,
        "alarm",
    )
    assert page.inner_text(_tile(page, ref, ".tile-alarms")) == "1 active alarm"
    cleared = {"component": "spindle", "level": "NORMAL", "code": ""}
    latencies["alarm cleared"] = _timed_change(
        page,
        lambda: w1.events({"ts": _now(), "signal": "condition", "condition": cleared}),
        state,
        "running",
    )
    latencies["execution"] = _timed_change(
        page,
        lambda: w1.events({"ts": _now(), "signal": "execution", "value": "FEED_HOLD"}),
        state,
        "ready",
    )
    # time in state: the execution state this page saw change, from then
    assert page.evaluate(since).startswith("feed hold ")
    latencies["offline (Will)"] = _timed_change(page, lambda: w1.status(False), state, "offline")
    assert page.evaluate("() => window.__sameDocument") is True  # never reloaded
    assert page.evaluate("() => window.__arborStream.opened") == 1
    screenshot(page, "board-live-1920")
    print({k: round(v) for k, v in latencies.items()}, "ms, publish to tile")
    assert watch.errors == []


def test_machine_page_follows_status_and_telemetry(
    browser: Any, base_url: str, site: str, keys: dict[Role, str], publisher: mqtt.Client
) -> None:
    page, watch = new_page(browser)
    sign_in(page, base_url, keys[Role.ENGINEER])
    w2 = Machine(publisher, site, "w2", "sess-live-2")
    _warm_up(page, w2, f"{site}:w2")
    page.goto(f"{base_url}/#/machine/{site}:w2")
    page.wait_for_selector("#f-execution")
    _until_mode(page, "live")
    execution = "() => document.querySelector('#f-execution').textContent"
    # the stream's snapshot (the API's live state, over the database's) follows the REST view
    _poll(page, execution, lambda v: v == "ACTIVE", UPDATE_BOUND_S)
    w2.events({"ts": _now(), "signal": "execution", "value": "INTERRUPTED"})
    _poll(page, execution, lambda v: v == "INTERRUPTED", UPDATE_BOUND_S)
    # telemetry samples reach the live values and chart, a few times a second
    load = "() => document.querySelector('#live-values [data-signal=spindle_load]')?.textContent"
    deadline = time.monotonic() + 30
    k = 0
    while page.evaluate(load) != "42.5 %":
        assert time.monotonic() < deadline, page.evaluate(load)
        t = time.time()
        w2.telemetry(
            [
                {"ts": _now_at(t - 0.2), "values": {"spindle_load": 40.0 + k, "feedrate": 900.0}},
                {"ts": _now_at(t), "values": {"spindle_load": 42.5, "feedrate": 1000.0}},
            ]
        )
        k += 1
        page.wait_for_timeout(500)
    assert (
        page.evaluate(
            "() => document.querySelector('#live-values [data-signal=feedrate]').textContent"
        )
        == "1,000 mm/min"
    )
    assert page.locator("#live-chart .uplot").count() == 1
    screenshot(page, "machine-live-1920")
    assert watch.errors == []


def _now_at(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat()


def test_the_board_reconnects_when_the_api_restarts(
    browser: Any,
    api_settings: ApiSettings,
    site: str,
    keys: dict[Role, str],
    publisher: mqtt.Client,
) -> None:
    port = free_port()
    page, watch = new_page(browser)
    ref = f"{site}:w3"
    w3 = Machine(publisher, site, "w3", "sess-live-3")
    with serve_on(api_settings, port) as url:
        sign_in(page, url, keys[Role.VIEWER])
        _until_mode(page, "live")
        _warm_up(page, w3, ref)
        page.evaluate("() => { window.__sameDocument = true; }")
    # The API is gone: the board says so and retries with backoff.
    _until_mode(page, "reconnecting", 30)
    assert page.inner_text("#board-live").startswith("reconnecting")
    screenshot(page, "board-reconnecting-1920")
    restarted = time.monotonic()
    with serve_on(api_settings, port):
        _until_mode(page, "live", 60)
        back_ms = (time.monotonic() - restarted) * 1000
        prog = f"() => document.querySelector('{_tile(page, ref, '.tile-prog')}').textContent"
        # The restarted API seeds from the database (no ingest here) and then follows the broker.
        w3.events({"ts": _now(), "signal": "program", "value": "O9002"})
        deadline = time.monotonic() + 60
        while page.evaluate(prog) != "O9002":
            assert time.monotonic() < deadline, page.evaluate(prog)
            page.wait_for_timeout(1000)
            if page.evaluate(prog) != "O9002":  # the new API's broker link may be settling
                w3.events({"ts": _now(), "signal": "program", "value": "O9002"})
        assert page.evaluate("() => window.__sameDocument") is True
        assert page.evaluate("() => window.__arborStream.opened") >= 2
        print(f"back to live {back_ms:.0f} ms after the API restarted")
        page.close()  # before the server goes, so no reconnect attempt is left logging
    # Chromium logs each refused connection (socket retries, requests) while the API was down,
    # and nothing else.
    assert all("ERR_CONNECTION_REFUSED" in e for e in watch.errors), watch.errors


def test_without_a_broker_the_board_polls(
    browser: Any, api_settings: ApiSettings, api_database: str, site: str, keys: dict[Role, str]
) -> None:
    settings = api_settings.model_copy(update={"mqtt_url": ""})
    with serve_on(settings, free_port()) as url:
        page, watch = new_page(browser)
        sign_in(page, url, keys[Role.VIEWER])
        _until_mode(page, "polling", 30)
        assert "polling" in page.inner_text("#board-live")
        with psycopg.connect(api_database, autocommit=True) as conn:
            conn.execute(
                """INSERT INTO event (machine_id, ts, signal, value, value_num)
                   SELECT id, now(), 'part_count', '4242', 4242 FROM machine
                    WHERE site = %s AND machine = 'w3'""",
                [site],
            )
            # SQL bypasses ingest's writer, which keeps event_latest (0004)
            conn.execute("SELECT event_latest_refresh(NULL::integer[])")
        parts = f"() => document.querySelector('{_tile(page, f'{site}:w3', '.tile-parts')}')"
        _poll(page, parts + ".textContent", lambda v: v == "parts 4,242", 20)
        screenshot(page, "board-polling-1920")
        page.close()
    assert watch.errors == []

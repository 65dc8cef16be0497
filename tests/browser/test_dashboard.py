"""The dashboard in headless Chromium against the real API and database: every page loads without
console errors, figures on the page equal the API's, acknowledging an alert in the UI changes it
in the API, an uploaded S-piece file shows its report, and a viewer sees no actions."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from analytics.s_piece import SPieceGeometry
from api.config import ApiSettings
from api.keys import Role
from arbor import check
from protocol import event_topic
from simulators.accuracy import s_piece_points
from tests.api.conftest import add_machines
from tests.browser.conftest import TABLET, new_page, screenshot, sign_in

pytestmark = pytest.mark.services

NOW = datetime.now(UTC).replace(microsecond=0)


def _ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


# (minutes ago, signal, value, value_num) for the running machine
RUNNING = [
    (360, "status", "online", None),
    (360, "execution", "READY", None),
    (300, "program", "O100", None),
    (300, "controller_mode", "AUTOMATIC", None),
    (300, "part_count", "40", 40.0),
    (240, "execution", "ACTIVE", None),
    (210, "execution", "PROGRAM_COMPLETED", None),
    (209, "part_count", "41", 41.0),
    (200, "execution", "ACTIVE", None),
    (170, "execution", "PROGRAM_COMPLETED", None),
    (169, "part_count", "42", 42.0),
    (30, "execution", "ACTIVE", None),
]


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


def _machine_id(conn: psycopg.Connection[Any], site: str, machine: str) -> int:
    row = conn.execute(
        "SELECT id FROM machine WHERE site = %s AND machine = %s", [site, machine]
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(scope="module")
def site(api_database: str, unique_site: str) -> str:
    """m01 running (with telemetry), m02 in alarm, m03 offline, m04 never heard from."""
    add_machines(api_database, [(unique_site, m) for m in ("m01", "m02", "m03", "m04")])
    with psycopg.connect(api_database, autocommit=True) as conn:
        ids = {m: _machine_id(conn, unique_site, m) for m in ("m01", "m02", "m03")}
        for m, status in [("m01", "online"), ("m02", "online"), ("m03", "offline")]:
            conn.execute(
                "UPDATE machine SET status = %s, online = %s, last_seen = %s, status_since = %s,"
                " controller = %s WHERE id = %s",
                [status, status == "online", NOW, _ago(360), '{"vendor": "i5"}', ids[m]],
            )
        rows = [(ids["m01"], _ago(a), s, v, n) for a, s, v, n in RUNNING]
        rows += [
            (ids["m02"], _ago(120), "execution", "STOPPED", None),
            (ids["m02"], _ago(120), "program", "O200", None),
            (ids["m02"], _ago(120), "part_count", "7", 7.0),
        ]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO event (machine_id, ts, signal, value, value_num) "
                "VALUES (%s, %s, %s, %s, %s)",
                rows,
            )
        conn.execute(
            "INSERT INTO event (machine_id, ts, signal, component, level, code, message) "
            "VALUES (%s, %s, 'condition', 'spindle', 'FAULT', 'SP-1', 'spindle overtemperature')",
            [ids["m02"], _ago(60)],
        )
        # Events written with SQL bypass ingest's writer, which keeps event_latest (0004).
        conn.execute("SELECT event_latest_refresh(%s::integer[])", [list(ids.values())])
        conn.execute(
            """INSERT INTO sample (machine_id, ts, spindle_load, spindle_speed, feedrate)
               SELECT %s, t, 50 + 30 * sin(extract(epoch FROM t) / 300.0), 8000, 1200
                 FROM generate_series(%s::timestamptz, %s::timestamptz, interval '10 s') AS t""",
            [ids["m01"], _ago(180), NOW],
        )
    return unique_site


@pytest.fixture(scope="module")
def alert_id(site: str, api_database: str, keys: dict[Role, str], base_url: str) -> int:
    """An open alert as the alerts worker opens it, on a rule made through the API."""
    rule = httpx.post(
        f"{base_url}/api/v1/alert-rules",
        headers={"Authorization": f"Bearer {keys[Role.ADMIN]}"},
        json={
            "name": "spindle overload",
            "kind": "threshold",
            "params": {"signal": "spindle_load", "op": ">", "value": 120, "for_s": 2},
            "severity": "critical",
            "site": site,
        },
        timeout=30,
    )
    assert rule.status_code == 201, rule.text
    with psycopg.connect(api_database, autocommit=True) as conn:
        row = conn.execute(
            """INSERT INTO alert (rule_id, site, machine, severity, title, trigger_ts, value)
               VALUES (%s, %s, 'm01', 'critical', 'spindle overload on m01', now(), 150)
               RETURNING id""",
            [rule.json()["id"], site],
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(scope="module")
def admin_api(
    keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]
) -> httpx.Client:
    return client_for(keys[Role.ADMIN])


PAGES = [
    ("board", "#/board", "body[data-board-ready]"),
    ("machine", "#/machine/{site}:m01", ".chart .uplot"),
    ("kpis", "#/kpis", "#k-heat table.heatmap"),
    ("alerts", "#/alerts", "#alert-list table"),
    ("accuracy", "#/accuracy/{site}:m01", "#acc-history"),
    ("programs", "#/programs", "#prog-list"),
]


def test_every_page_loads_without_console_errors(
    browser: Any, base_url: str, site: str, alert_id: int, keys: dict[Role, str]
) -> None:
    page, watch = new_page(browser)
    sign_in(page, base_url, keys[Role.ADMIN])
    shots = []
    for name, fragment, ready in PAGES:
        page.goto(f"{base_url}/{fragment.format(site=site)}")
        page.wait_for_selector(ready)
        page.wait_for_load_state("networkidle")
        assert not page.locator("main .error").count(), (name, page.inner_text("main"))
        shots.append(screenshot(page, f"{name}-1920"))
    tablet, tablet_watch = new_page(browser, TABLET)
    sign_in(tablet, base_url, keys[Role.ADMIN])
    shots.append(screenshot(tablet, "board-tablet"))
    tablet.goto(f"{base_url}/#/machine/{site}:m01")
    tablet.wait_for_selector(".chart .uplot")
    shots.append(screenshot(tablet, "machine-tablet"))
    assert watch.errors == [] and tablet_watch.errors == []
    assert all(p.stat().st_size > 10_000 for p in shots)


def test_board_figures_equal_the_api(
    browser: Any, base_url: str, site: str, keys: dict[Role, str], admin_api: httpx.Client
) -> None:
    page, watch = new_page(browser)
    sign_in(page, base_url, keys[Role.VIEWER])
    expected = {
        "m01": ("running", "O100", "parts 42", ""),
        "m02": ("alarm", "O200", "parts 7", "1 active alarm"),
        "m03": ("offline", None, None, ""),
        "m04": ("unknown", None, None, ""),
    }
    api = {m["machine"]: m for m in admin_api.get("/api/v1/machines", params={"site": site}).json()}
    for machine, (state, program, parts, alarms) in expected.items():
        tile = page.locator(f'.tile[data-key="{site}:{machine}"]')
        assert tile.get_attribute("data-state") == state
        assert api[machine]["program"] == program
        if program:
            assert program in tile.locator(".tile-prog").inner_text()
            assert tile.locator(".tile-parts").inner_text() == parts
            assert parts == f"parts {api[machine]['part_count']:.0f}"
        assert tile.locator(".tile-alarms").inner_text() == alarms
        assert api[machine]["active_alarms"] == (1 if alarms else 0)
    # time in state: m01 has been ACTIVE for 30 minutes (the API's execution_since)
    assert datetime.fromisoformat(api["m01"]["execution_since"]) == _ago(30)
    in_state = page.inner_text(f'.tile[data-key="{site}:m01"] .tile-since')
    assert in_state.startswith("active ") and in_state.endswith(" min"), in_state
    assert 30 <= int(in_state.split()[1]) <= 35, in_state
    # search and state filters
    page.fill("#board-search", f"{site} o200")
    assert page.locator(f'.tile[data-key^="{site}:"]:not([hidden])').count() == 1
    page.fill("#board-search", "")
    # the sparkline of the running machine is drawn from its telemetry
    page.locator(f'.tile[data-key="{site}:m01"] .spark polyline').wait_for()
    assert watch.errors == []


def test_machine_page_figures_equal_the_api(
    browser: Any, base_url: str, site: str, keys: dict[Role, str], admin_api: httpx.Client
) -> None:
    page, watch = new_page(browser)
    sign_in(page, base_url, keys[Role.ENGINEER])
    page.goto(f"{base_url}/#/machine/{site}:m01")
    page.wait_for_selector(".chart .uplot")
    page.wait_for_load_state("networkidle")
    detail = admin_api.get(f"/api/v1/machines/{site}:m01").json()
    assert page.inner_text("#f-execution") == detail["execution"] == "ACTIVE"
    assert page.inner_text("#f-program") == detail["program"] == "O100"
    assert page.inner_text("#f-parts") == f"{detail['part_count']:.0f}"
    to = datetime.now(UTC)
    window = {"from": (to - timedelta(hours=8)).isoformat(), "to": to.isoformat()}
    stats = admin_api.get(f"/api/v1/machines/{site}:m01/cycles/stats", params=window).json()
    (program,) = stats["programs"]
    row = page.locator("#h-stats + * tbody tr").first
    cells = row.locator("td").all_inner_texts()
    assert cells[0] == program["program"] and cells[1] == str(program["count"]) == "2"
    cycles = admin_api.get(f"/api/v1/machines/{site}:m01/cycles", params=window).json()["cycles"]
    assert page.locator("#h-cycles + * tbody tr").count() == len(cycles) == 3
    # zooming on a chart fetches the selected window again (server-side downsampling)
    box = page.locator(".charts .chart .u-over").first.bounding_box()
    assert box is not None
    with page.expect_response(lambda r: "/telemetry" in r.url) as zoomed:
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + 20)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + 20, steps=5)
        page.mouse.up()
    assert zoomed.value.ok
    # pan and zoom out: each a new window of the same number of points, downsampled server-side
    zf, zt = _window_of(zoomed.value.url)
    with page.expect_response(lambda r: "/telemetry" in r.url) as panned:
        page.click("#pan-earlier")
    pf, pt = _window_of(panned.value.url)
    assert abs((pt - pf) - (zt - zf)) < timedelta(seconds=1)
    assert abs((zt - pt) - (zt - zf) / 2) < timedelta(seconds=1)
    with page.expect_response(lambda r: "/telemetry" in r.url) as widened:
        page.click("#zoom-out")
    wf, wt = _window_of(widened.value.url)
    assert abs((wt - wf) - 2 * (pt - pf)) < timedelta(seconds=1)
    assert widened.value.json()["bucket_s"] >= panned.value.json()["bucket_s"]
    assert watch.errors == []


def _window_of(url: str) -> tuple[datetime, datetime]:
    query = parse_qs(urlsplit(url).query)
    return datetime.fromisoformat(query["from"][0]), datetime.fromisoformat(query["to"][0])


def test_acknowledging_in_the_ui_changes_the_api(
    browser: Any,
    base_url: str,
    alert_id: int,
    keys: dict[Role, str],
    admin_api: httpx.Client,
) -> None:
    page, watch = new_page(browser)
    sign_in(page, base_url, keys[Role.OPERATOR])
    page.goto(f"{base_url}/#/alerts?alert={alert_id}")
    page.wait_for_selector("#a-ack")
    page.fill("#a-comment", "checking the spindle")
    page.click("#a-ack")
    from playwright.sync_api import expect  # here: the module imports without playwright

    expect(page.locator("#a-state")).to_have_text("acknowledged")
    alert = admin_api.get(f"/api/v1/alerts/{alert_id}").json()
    assert alert["state"] == "acknowledged"
    assert alert["ack_comment"] == "checking the spindle"
    assert alert["acknowledged_by"]
    # an operator may not assign or resolve: the UI does not offer it
    assert page.locator("#a-assign").count() == 0 and page.locator("#a-resolve").count() == 0
    assert watch.errors == []


def test_uploading_an_s_piece_file_shows_its_report(
    browser: Any, base_url: str, site: str, keys: dict[Role, str], admin_api: httpx.Client
) -> None:
    geometry = SPieceGeometry.from_dict(json.loads(check.default_geometry_text()))
    points = s_piece_points(geometry, offset=0.5, points_per_line=9)
    # a CMM export as CSV: line, x, y, z
    csv = "line,x,y,z\n" + "".join(
        f"{line['name']},{x},{y},{z}\n" for line in points["lines"] for x, y, z in line["points"]
    )
    page, watch = new_page(browser)
    sign_in(page, base_url, keys[Role.ENGINEER])
    page.goto(f"{base_url}/#/accuracy/{site}:m01")
    page.wait_for_selector("#acc-file")
    page.select_option("#acc-kind", "s-piece")
    page.set_input_files(
        "#acc-file", files=[{"name": "s-piece.csv", "mimeType": "text/csv", "buffer": csv.encode()}]
    )
    page.fill("#acc-label", "browser test")
    page.click("form.upload button[type=submit]")
    # the evaluation is CPU work on the server: generous on a loaded machine
    page.wait_for_selector("#acc-verdict", timeout=120_000)
    page.wait_for_selector("#acc-report img.figure", timeout=60_000)
    (latest, *_) = admin_api.get(f"/api/v1/machines/{site}:m01/accuracy").json()
    report = admin_api.get(f"/api/v1/accuracy/{latest['id']}").json()
    assert report["label"] == "browser test" and report["kind"] == "s-piece"
    assert page.inner_text("#acc-verdict") == ("PASS" if report["passed"] else "FAIL") == "FAIL"
    shown = report["report"]["max_abs_deviation"]
    assert f"{shown:.4f}".rstrip("0").rstrip(".") in page.inner_text("#acc-report")
    screenshot(page, "accuracy-report-1920")
    assert watch.errors == []


def test_a_viewer_sees_no_actions(
    browser: Any, base_url: str, site: str, alert_id: int, keys: dict[Role, str]
) -> None:
    page, watch = new_page(browser)
    sign_in(page, base_url, keys[Role.VIEWER])
    assert page.text_content(".role") == "viewer"
    page.goto(f"{base_url}/#/alerts?alert={alert_id}")
    page.wait_for_selector("#alert-detail h2")
    assert page.locator("#alert-detail button").count() == 0
    page.goto(f"{base_url}/#/accuracy/{site}:m01")
    page.wait_for_selector("#acc-history")
    assert page.locator("#acc-file").count() == 0
    page.goto(f"{base_url}/#/programs")
    page.wait_for_selector("#prog-list")
    assert page.locator("#prog-file").count() == 0
    assert watch.errors == []


def test_a_bad_key_is_refused_with_the_apis_message(browser: Any, base_url: str) -> None:
    page, watch = new_page(browser)
    page.goto(f"{base_url}/#/signin")
    page.fill("#key", "arbor_nosuchkey000_" + "x" * 43)
    page.click("form.signin button[type=submit]")
    error = page.wait_for_selector("form.signin .error")
    assert error is not None and "invalid_key" in error.inner_text()
    assert all("401" in e for e in watch.errors)  # the refused request itself


def test_operator_classifies_a_stop_on_the_kpis_page(
    browser: Any, base_url: str, site: str, keys: dict[Role, str], admin_api: httpx.Client
) -> None:
    page, watch = new_page(browser)
    sign_in(page, base_url, keys[Role.OPERATOR])
    page.goto(f"{base_url}/#/kpis")
    page.wait_for_selector("#k-heat table.heatmap")
    page.select_option("#k-machine", f"{site}:m02")
    page.wait_for_selector(f"#k-stops caption:text('Stops of {site}:m02')")
    # m02 has been STOPPED for two hours: one stop, not classified yet
    row = page.locator("#k-stops tbody tr").first
    assert row.locator("td").first.inner_text() == "STOPPED"
    row.locator("button.stop-use").click()
    page.select_option("#r-reason", "tool_change")
    page.fill("#r-comment", "insert worn")
    page.click("#reason-form button[type=submit]")
    page.locator("#k-stops tbody tr").first.locator("td", has_text="Tool change").wait_for()
    window = {"from": _ago(24 * 60).isoformat(), "to": datetime.now(UTC).isoformat()}
    (note,) = admin_api.get(f"/api/v1/machines/{site}:m02/downtime", params=window).json()
    assert (note["reason"], note["comment"]) == ("tool_change", "insert worn")
    stopped_at = _ago(120)
    assert stopped_at <= datetime.fromisoformat(note["start"]) < stopped_at + timedelta(seconds=2)
    assert note["created_by"].startswith("test operator")
    page.locator("#k-pareto td", has_text="tool_change").wait_for()
    assert watch.errors == []


def test_alert_assign_comment_and_resolve_in_the_ui(
    browser: Any,
    base_url: str,
    alert_id: int,
    keys: dict[Role, str],
    admin_api: httpx.Client,
) -> None:
    from playwright.sync_api import expect

    page, watch = new_page(browser)
    sign_in(page, base_url, keys[Role.MAINTENANCE])
    page.goto(f"{base_url}/#/alerts?alert={alert_id}&state=")
    page.wait_for_selector("#a-assign")
    page.fill("#a-assignee", "li wei")
    page.click("#a-assign")
    expect(page.locator("#alert-detail dd", has_text="li wei")).to_have_count(1)
    page.fill("#a-comment", "bearing ordered")
    page.click("#a-comment-btn")
    expect(page.locator("#alert-detail td", has_text="bearing ordered")).to_have_count(1)
    page.click("#a-resolve")
    expect(page.locator("#a-state")).to_have_text("resolved")
    alert = admin_api.get(f"/api/v1/alerts/{alert_id}").json()
    assert alert["state"] == "resolved" and alert["assigned_to"] == "li wei"
    assert any(
        (e.get("detail") or {}).get("comment") == "bearing ordered" for e in alert["history"]
    )
    # the list filtered by assignee finds it
    page.fill("#f-assignee", "li wei")
    page.select_option("#f-state", "")
    expect(page.locator(f'#alert-list [data-alert="{alert_id}"]')).to_have_count(1)
    assert watch.errors == []


def test_board_groups_by_area_with_counts(
    browser: Any, base_url: str, site: str, keys: dict[Role, str], admin_api: httpx.Client
) -> None:
    # Areas are the machine groups the alerts use (PUT /alert-machine-groups/{name}).
    put = admin_api.put(
        "/api/v1/alert-machine-groups/cell-a", json={"machines": [f"{site}:m01", f"{site}:m02"]}
    )
    assert put.status_code == 200, put.text
    page, watch = new_page(browser)
    sign_in(page, base_url, keys[Role.VIEWER])
    site_section = page.locator(f'section.site[data-group="{site}"]')
    assert site_section.locator(".tile").count() == 4
    assert site_section.locator(".group-counts").inner_text() == (
        " · 4 machines: 1 running, 1 alarm, 1 offline, 1 unknown"
    )
    page.select_option("#board-group", "area")
    area = page.locator('section.site[data-group="cell-a"]')
    area.wait_for()
    assert sorted(area.locator(".tile").evaluate_all("els => els.map(e => e.dataset.key)")) == [
        f"{site}:m01",
        f"{site}:m02",
    ]
    assert area.locator(".group-counts").inner_text() == " · 2 machines: 1 running, 1 alarm"
    rest = page.locator('section.site[data-group="no area"] .tile')
    assert rest.count() == 2
    # the last section is "no area"
    assert page.locator("section.site").last.get_attribute("data-group") == "no area"
    # the state filter hides a group with nothing to show
    page.locator("label.chip.s-offline input").uncheck()
    page.locator("label.chip.s-unknown input").uncheck()
    assert page.locator('section.site[data-group="no area"]').is_hidden()
    screenshot(page, "board-areas-1920")
    assert watch.errors == []


def test_machine_page_timeline_follows_the_live_stream(
    browser: Any, base_url: str, site: str, keys: dict[Role, str], api_database: str,
    mqtt_settings: Any,
) -> None:  # fmt: skip
    """An execution change carried by the stream shows on the open machine page's timeline at
    once, not at the next history refresh (60 s). A site of its own: the change stays in the API's
    live state and must not alter what the other tests see of `site`."""
    other = f"{site}t"
    add_machines(api_database, [(other, "m01")])
    page, watch = new_page(browser)
    sign_in(page, base_url, keys[Role.ENGINEER])
    page.goto(f"{base_url}/#/machine/{other}:m01")
    page.wait_for_selector("#machine-live[data-mode='live']")
    timeline = page.locator("canvas.timeline")
    assert timeline.get_attribute("aria-label") == "execution states: no data"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(mqtt_settings.username, mqtt_settings.password)
    client.connect(mqtt_settings.host, mqtt_settings.port)
    client.loop_start()
    try:
        event = {"ts": datetime.now(UTC).isoformat(), "signal": "execution", "value": "ACTIVE"}
        payload = json.dumps({"v": 1, "session": "tl", "seq": 0, "events": [event]})
        client.publish(event_topic(other, "m01"), payload, qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()
    page.wait_for_selector("canvas.timeline[aria-label='execution states: ACTIVE']", timeout=10_000)
    assert page.inner_text("#f-execution") == "ACTIVE"
    assert watch.errors == []

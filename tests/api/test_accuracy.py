"""Accuracy reports through the real stack: the same figures as `arbor check`, stored with their
figures, history, trend and pass/fail; bad inputs named; site scopes enforced."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import httpx
import pytest

from analytics.s_piece import SPieceGeometry
from api.keys import Role
from arbor import check
from simulators.accuracy import circle_path, iso230_2_runs, s_piece_points
from tests.api.conftest import add_machines, error_of, make_key

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def site(api_database: str, unique_site: str) -> str:
    add_machines(
        api_database,
        [(unique_site, "m01"), (unique_site, "m02"), ("other", "m02"), ("other", "m03")],
    )
    return unique_site


@pytest.fixture(scope="module")
def engineer(
    keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]
) -> httpx.Client:
    return client_for(keys[Role.ENGINEER])


def _cli_report(kind: str, data: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    source = tmp_path / f"{kind}.json"
    source.write_text(json.dumps(data))
    out = io.StringIO()
    with redirect_stdout(out):
        assert check.run([kind, str(source)]) == 0
    return dict(json.loads(out.getvalue()))


ISO = iso230_2_runs([0, 100, 200, 300, 400], scale_error=2e-5, backlash=0.004, noise_sigma=0.001)


def test_iso230_2_report_matches_arbor_check_and_has_figures(
    site: str, engineer: httpx.Client, tmp_path: Path
) -> None:
    body = {
        "axis": "X",
        "label": "after rebuild",
        "tolerances": {"A": 0.05, "R": 0.02},
        "data": ISO,
    }
    response = engineer.post(f"/api/v1/machines/{site}:m01/accuracy/iso230-2", json=body)
    assert response.status_code == 201, response.text
    report = response.json()
    expected = _cli_report("iso230-2", ISO, tmp_path)
    for figure in ("A", "B", "E", "M", "R"):
        assert report["report"][figure] == pytest.approx(expected[figure], abs=1e-12)
    assert report["passed"] is True
    assert (report["site"], report["machine"], report["kind"]) == (site, "m01", "iso230-2")
    assert report["created_by"].startswith("test engineer")
    assert report["figures"] == ["png", "svg"]
    png = engineer.get(f"/api/v1/accuracy/{report['id']}/figure.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG")
    svg = engineer.get(f"/api/v1/accuracy/{report['id']}/figure.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in svg.content
    again = engineer.get(f"/api/v1/accuracy/{report['id']}").json()
    assert again == report


def test_tolerance_exceeded_fails_and_unknown_figure_is_named(
    site: str, engineer: httpx.Client
) -> None:
    url = f"/api/v1/machines/{site}:m01/accuracy/iso230-2"
    tight = {"axis": "X", "tolerances": {"A": 0.001}, "data": ISO, "figures": False}
    response = engineer.post(url, json=tight)
    assert response.status_code == 201 and response.json()["passed"] is False
    assert response.json()["figures"] == []
    wrong = {"tolerances": {"Q": 0.01}, "data": ISO, "figures": False}
    err = error_of(engineer.post(url, json=wrong))
    assert err["code"] == "invalid_input" and err["field"] == "tolerances.Q"
    negative = {"tolerances": {"A": -1}, "data": ISO}
    err = error_of(engineer.post(url, json=negative))
    assert err["code"] == "validation_error" and err["field"] == "tolerances.A"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"targets": [0, 100], "up": [[0, 100]]}, "down is missing"),
        ({"targets": [0, 100], "up": [[0, 100], [0]], "down": [[0, 100]] * 2}, "up"),
        ({"targets": [0, "x"], "up": [[0, 100]] * 2, "down": [[0, 100]] * 2}, "targets"),
        (
            {"targets": [0, 100], "up": [[0, 100]] * 2, "down": [[0, 100]] * 2, "units": "ft"},
            "units",
        ),
    ],
)
def test_bad_iso230_2_input_is_named(
    site: str, engineer: httpx.Client, data: dict[str, Any], message: str
) -> None:
    response = engineer.post(
        f"/api/v1/machines/{site}:m01/accuracy/iso230-2", json={"data": data, "figures": False}
    )
    assert response.status_code == 422
    err = error_of(response)
    assert err["code"] == "invalid_input" and err["field"] == "data"
    assert message in err["message"]


def test_circle_report_matches_arbor_check(
    site: str, engineer: httpx.Client, tmp_path: Path
) -> None:
    data = {
        "cw": circle_path(100.0, ellipse=0.004, backlash_step=0.002, direction="cw", seed=1),
        "ccw": circle_path(100.0, ellipse=0.004, backlash_step=0.002, direction="ccw", seed=2),
        "nominal_radius": 100.0,
    }
    body = {"axis": "XY", "tolerances": {"G": 0.001}, "data": data, "figures": False}
    response = engineer.post(f"/api/v1/machines/{site}:m01/accuracy/circle", json=body)
    assert response.status_code == 201, response.text
    expected = _cli_report("circle", data, tmp_path)
    got = response.json()
    for figure in ("G", "H", "G_min_zone"):
        assert got["report"][figure] == pytest.approx(expected[figure], abs=1e-12)
    assert got["passed"] is False  # G of a 4 µm ellipse is above 1 µm
    bad = {"data": {"x": [1, 2, 3, 4], "y": [1, 2, 3]}}
    err = error_of(engineer.post(f"/api/v1/machines/{site}:m01/accuracy/circle", json=bad))
    assert err["field"] == "data" and "must pair" in err["message"]


def test_s_piece_judges_itself_against_the_geometry(site: str, engineer: httpx.Client) -> None:
    geometry = SPieceGeometry.from_dict(json.loads(check.default_geometry_text()))
    good = s_piece_points(geometry, offset=0.002, points_per_line=9)
    bad = s_piece_points(geometry, offset=0.5, points_per_line=9)
    url = f"/api/v1/machines/{site}:m02/accuracy/s-piece"
    passed = engineer.post(url, json={"points": good, "figures": False, "best_fit": False})
    assert passed.status_code == 201, passed.text
    assert passed.json()["passed"] is True
    assert passed.json()["report"]["max_abs_deviation"] == pytest.approx(0.002, abs=1e-6)
    failed = engineer.post(url, json={"points": bad, "figures": False, "best_fit": False})
    assert failed.json()["passed"] is False
    err = error_of(engineer.post(url, json={"points": {"lines": []}}))
    assert err["field"] == "points" and "lines" in err["message"]


def test_history_and_trend(site: str, engineer: httpx.Client) -> None:
    url = f"/api/v1/machines/{site}:m03/accuracy/iso230-2"
    add = engineer.post(f"/api/v1/machines/{site}:m01/accuracy/iso230-2", json={})  # no data
    assert error_of(add)["field"] == "data"
    history = engineer.get(f"/api/v1/machines/{site}:m01/accuracy", params={"kind": "iso230-2"})
    assert history.status_code == 200
    rows = history.json()
    assert len(rows) >= 2 and all(r["kind"] == "iso230-2" for r in rows)
    assert [r["created_at"] for r in rows] == sorted((r["created_at"] for r in rows), reverse=True)
    assert "report" not in rows[0]
    trend = engineer.get(
        f"/api/v1/machines/{site}:m01/accuracy/trend", params={"kind": "iso230-2", "axis": "X"}
    ).json()
    assert trend["metric"] == "A" and len(trend["points"]) >= 2
    assert {p["report_id"] for p in trend["points"]} <= {r["id"] for r in rows}
    assert all(0 < p["value"] < 0.1 for p in trend["points"])
    assert trend["slope_per_day"] is not None
    r_trend = engineer.get(
        f"/api/v1/machines/{site}:m01/accuracy/trend",
        params={"kind": "iso230-2", "metric": "R"},
    ).json()
    assert r_trend["metric"] == "R" and all(p["value"] > 0 for p in r_trend["points"])
    assert engineer.get(url.rsplit("/", 1)[0]).status_code == 404  # m03 is not in this site


def test_machine_references(
    site: str,
    engineer: httpx.Client,
    api_database: str,
    client_for: Callable[[str | None], httpx.Client],
) -> None:
    # m01 exists only in this site: the bare id works; m02 is in two sites: ambiguous.
    assert engineer.get("/api/v1/machines/m01/accuracy").status_code == 200
    err = error_of(engineer.get("/api/v1/machines/m02/accuracy"))
    assert err["code"] == "ambiguous_machine" and err["field"] == "machine"
    err = error_of(engineer.get("/api/v1/machines/nosuch/accuracy"))
    assert err["code"] == "machine_not_found"
    err = error_of(engineer.get("/api/v1/machines/Bad%20Id/accuracy"))
    assert err["code"] == "validation_error" and err["field"] == "machine"
    # A key scoped to "other" sees other:m02 under the bare id, and nothing of this site.
    scoped = client_for(make_key(api_database, Role.ENGINEER, "scoped", ["other"]))
    assert scoped.get("/api/v1/machines/m02/accuracy").status_code == 200
    err = error_of(scoped.get(f"/api/v1/machines/{site}:m01/accuracy"))
    assert err["code"] == "site_forbidden"
    mine = engineer.get(f"/api/v1/machines/{site}:m01/accuracy").json()[0]["id"]
    assert error_of(scoped.get(f"/api/v1/accuracy/{mine}"))["code"] == "report_not_found"


def test_viewer_reads_but_may_not_post(
    site: str, keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]
) -> None:
    viewer = client_for(keys[Role.VIEWER])
    assert viewer.get(f"/api/v1/machines/{site}:m01/accuracy").status_code == 200
    post = viewer.post(f"/api/v1/machines/{site}:m01/accuracy/iso230-2", json={"data": ISO})
    assert post.status_code == 403 and error_of(post)["code"] == "forbidden"


def test_audit_trail_records_each_report(
    site: str, keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]
) -> None:
    admin = client_for(keys[Role.ADMIN])
    entries = admin.get("/api/v1/audit", params={"site": site, "action": "accuracy.iso230-2"})
    assert entries.status_code == 200
    assert len(entries.json()) >= 2
    assert all(e["key_name"] == "test engineer" for e in entries.json())


def test_bad_s_piece_geometry_is_named(site: str, engineer: httpx.Client) -> None:
    response = engineer.post(
        f"/api/v1/machines/{site}:m02/accuracy/s-piece",
        json={"points": {"lines": [{"name": "a", "points": [[0, 0, 0]]}]}, "geometry": {}},
    )
    err = error_of(response)
    assert err["field"] == "geometry" and "geometry.bottom is missing" in err["message"]
    nul = engineer.post(
        f"/api/v1/machines/{site}:m01/accuracy/iso230-2",
        json={"data": ISO, "label": "\u0000", "figures": False},
    )
    assert error_of(nul)["code"] == "invalid_input"

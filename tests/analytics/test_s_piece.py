"""S test piece evaluation on analytic cases: offsets, rotations, noise, both flanks."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import numpy as np
import pytest

from analytics.s_piece import SPieceGeometry, evaluate_s_piece, parse_measurement, project
from simulators.accuracy import s_piece_points

W = np.sqrt(0.5)


@pytest.fixture(scope="module")
def geometry() -> SPieceGeometry:
    text = resources.files("analytics").joinpath("data/s_piece_default.json").read_text("utf-8")
    return SPieceGeometry.from_dict(json.loads(text))


def evaluate(geometry: SPieceGeometry, doc: dict[str, Any], **kw: Any) -> Any:
    names, lines, flanks = parse_measurement(doc)
    return evaluate_s_piece(geometry, lines, names, flanks, **kw)


def test_default_geometry_is_labelled_illustrative(geometry: SPieceGeometry) -> None:
    assert "NOT the Annex A values" in geometry.description
    assert geometry.thickness > 0 and "profile" in geometry.tolerances


def test_offset_surface_gives_the_offset_everywhere(geometry: SPieceGeometry) -> None:
    res = evaluate(geometry, s_piece_points(geometry, offset=0.02), best_fit=False)
    for line in res.lines:
        np.testing.assert_allclose(line.deviations, 0.02, atol=1e-9)
        assert line.profile_deviation == pytest.approx(0.04)
    assert res.max_abs_deviation == pytest.approx(0.02)


def test_negative_offset_is_negative_inside_the_material(geometry: SPieceGeometry) -> None:
    res = evaluate(geometry, s_piece_points(geometry, offset=-0.03), best_fit=False)
    np.testing.assert_allclose(
        np.concatenate([ln.deviations for ln in res.lines]), -0.03, atol=1e-9
    )


def test_small_rotation_gives_the_linear_trend_and_best_fit_removes_it(
    geometry: SPieceGeometry,
) -> None:
    doc = s_piece_points(geometry, rotation_deg=(0.0, 0.0, 0.01))
    res = evaluate(geometry, doc)
    # First order: the deviation of each point is n . (omega x (p - pivot)).
    nominal = s_piece_points(geometry)
    pts = np.concatenate([np.asarray(ln["points"]) for ln in nominal["lines"]])
    proj = project(geometry, pts)
    omega = np.array([0.0, 0.0, np.radians(0.01)])
    expected = np.einsum("ij,ij->i", proj.normal, np.cross(omega, pts - pts.mean(axis=0)))
    raw = np.concatenate([ln.deviations for ln in res.lines])
    np.testing.assert_allclose(raw, expected, atol=5e-6)  # second order: delta^2 / 2 rho
    assert res.max_abs_deviation > 0.005
    assert res.best_fit is not None
    assert res.best_fit.max_abs_deviation < 1e-8
    assert np.degrees(res.best_fit.rotation[0, 1]) == pytest.approx(0.01, rel=1e-4)


def test_noise_of_known_sigma_comes_back(geometry: SPieceGeometry) -> None:
    doc = s_piece_points(geometry, points_per_line=2000, noise_sigma=0.004, seed=7)
    res = evaluate(geometry, doc, best_fit=False)
    dev = np.concatenate([ln.deviations for ln in res.lines])
    assert dev.std(ddof=1) == pytest.approx(0.004, rel=0.03)
    assert abs(dev.mean()) < 0.0003


def test_deviations_keep_the_input_order(geometry: SPieceGeometry) -> None:
    doc = s_piece_points(geometry, points_per_line=20)
    pts = np.asarray(doc["lines"][0]["points"])
    t = np.linspace(0.03, 0.97, 20)
    n = geometry.outward_normal(t, np.full(20, 0.2))
    offsets = np.linspace(-0.05, 0.05, 20)
    rng = np.random.default_rng(1)
    order = rng.permutation(20)
    doc["lines"][0]["points"] = (pts + offsets[:, None] * n)[order].tolist()
    res = evaluate(geometry, doc, best_fit=False)
    np.testing.assert_allclose(res.lines[0].deviations, offsets[order], atol=1e-9)


def test_both_flanks_give_the_thickness(geometry: SPieceGeometry) -> None:
    doc = s_piece_points(
        geometry,
        offset=0.01,
        second_flank_heights=(0.3, 0.7),
        thickness_error=0.03,
        label_flanks=False,
    )
    res = evaluate(geometry, doc, best_fit=False)
    assert [ln.flank for ln in res.lines] == ["first"] * 3 + ["second"] * 2
    np.testing.assert_allclose(res.lines[-1].deviations, 0.02, atol=1e-9)
    assert res.thickness_deviation == pytest.approx(0.03, abs=1e-9)
    assert res.thickness_measured == pytest.approx(geometry.thickness + 0.03)
    assert res.passed is True  # profile 2 x 0.02 <= 0.1, thickness 0.03 <= 0.05


def test_fails_outside_tolerance(geometry: SPieceGeometry) -> None:
    res = evaluate(geometry, s_piece_points(geometry, offset=0.06), best_fit=False)
    assert res.passed is False
    assert res.to_dict()["pass"] is False


def test_rational_cylinder_with_its_own_knot_range() -> None:
    # A quarter cylinder of radius 50, material inside (left of the ccw travel): points at
    # radius 50 + d deviate by +d.
    def arc(z: float) -> dict[str, Any]:
        return {
            "degree": 2,
            "knots": [10, 10, 10, 20, 20, 20],
            "control_points": [[50, 0, z], [50, 50, z], [0, 50, z]],
            "weights": [1, W, 1],
        }

    geom = SPieceGeometry.from_dict(
        {"bottom": arc(0), "top": arc(20), "thickness": 2.0, "material_side": "left"}
    )
    ang = np.linspace(0.1, 1.4, 30)
    d = 0.01 * np.sin(5 * ang)
    outer = np.column_stack([(50 + d) * np.cos(ang), (50 + d) * np.sin(ang), np.full(30, 7.0)])
    inner = np.column_stack([(48 - d) * np.cos(ang), (48 - d) * np.sin(ang), np.full(30, 12.0)])
    res = evaluate_s_piece(geom, [outer, inner], ["outer", "inner"])
    np.testing.assert_allclose(res.lines[0].deviations, d, atol=1e-10)
    assert res.lines[1].flank == "second"
    np.testing.assert_allclose(res.lines[1].deviations, d, atol=1e-10)
    assert res.passed is None  # no tolerances given


def test_units_in_micrometres_are_converted(geometry: SPieceGeometry) -> None:
    doc = s_piece_points(geometry, offset=0.02)
    for line in doc["lines"]:
        line["points"] = (np.asarray(line["points"]) * 1000).tolist()
    doc["units"] = "µm"
    res = evaluate(geometry, doc, best_fit=False)
    assert res.max_abs_deviation == pytest.approx(0.02, abs=1e-8)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "'lines' list"),
        ({"lines": []}, "non-empty"),
        ({"lines": [{"name": "a", "points": [[0, 0]]}]}, r"lines\[0\]\.points\[0\] has 2 values"),
        ({"lines": [{"points": [[0, 0, float("nan")]]}]}, "is NaN"),
        ({"lines": [{"points": [[0, 0, 0]]}], "units": "inch"}, "unknown units"),
        ({"lines": [{"points": [[0, 0, 0]], "flank": "left"}]}, "flank must be"),
    ],
)
def test_bad_measurements_are_rejected(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_measurement(doc)

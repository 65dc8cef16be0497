"""The accuracy generators produce the ground truth they promise."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest

from analytics.iso230_2 import evaluate_iso230_2
from analytics.iso230_4 import evaluate_circle
from analytics.s_piece import SPieceGeometry
from simulators.accuracy import circle_path, iso230_2_runs, s_piece_points


def test_iso230_2_runs_shape_and_truth() -> None:
    doc = iso230_2_runs(np.linspace(0, 900, 10), runs=7, scale_error=20e-6, backlash=0.005)
    assert np.asarray(doc["up"]).shape == (7, 10)
    res = evaluate_iso230_2(doc["targets"], doc["up"], doc["down"])
    np.testing.assert_allclose(res.B, 0.005, rtol=1e-6)
    np.testing.assert_allclose(res.E_up, 0.018, rtol=1e-6)  # 20 µm/m over 900 mm
    np.testing.assert_allclose(res.R, 0.005, rtol=1e-6)


def test_iso230_2_noise_is_seeded() -> None:
    a = iso230_2_runs([0.0, 1.0], noise_sigma=0.001, seed=5)
    b = iso230_2_runs([0.0, 1.0], noise_sigma=0.001, seed=5)
    assert a == b


def test_circle_path_direction_and_geometry() -> None:
    cw = circle_path(10.0, direction="cw", n=100)
    theta = np.unwrap(np.arctan2(cw["y"], cw["x"]))
    assert np.all(np.diff(theta) < 0)
    res = evaluate_circle(cw["x"], cw["y"])
    assert res.radius == pytest.approx(10.0)


def test_circle_path_rejects_unknown_direction() -> None:
    with pytest.raises(ValueError, match="direction"):
        circle_path(10.0, direction="up")


def test_s_piece_points_truth_matches_layout() -> None:
    text = resources.files("analytics").joinpath("data/s_piece_default.json").read_text("utf-8")
    geom = SPieceGeometry.from_dict(json.loads(text))
    doc = s_piece_points(
        geom,
        heights=(0.5,),
        second_flank_heights=(0.4,),
        offset=0.01,
        thickness_error=0.02,
        points_per_line=5,
    )
    assert [ln["name"] for ln in doc["lines"]] == ["flank 1 z1", "flank 2 z1"]
    assert doc["truth"][1]["deviations"] == pytest.approx([0.01] * 5)
    assert len(doc["lines"][0]["points"][0]) == 3

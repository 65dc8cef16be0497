"""ISO 230-4 circular tests on paths with analytic answers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.iso230_4 import evaluate_circle, evaluate_circular_test, fit_circle
from simulators.accuracy import circle_path


def xy(doc: dict[str, object]) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(doc["x"]), np.asarray(doc["y"])


def test_off_centre_perfect_circle() -> None:
    x, y = xy(circle_path(150.0, center=(0.004, -0.003)))
    res = evaluate_circle(x, y, nominal_center=(0, 0), nominal_radius=150.0)
    np.testing.assert_allclose(res.G, 0.0, atol=1e-9)
    np.testing.assert_allclose(res.center, [0.004, -0.003], atol=1e-12)
    assert res.radius == pytest.approx(150.0, abs=1e-12)
    # F range about the nominal centre is twice the 5 µm offset.
    np.testing.assert_allclose(res.F_max, 0.005, atol=1e-6)
    np.testing.assert_allclose(res.F_min, -0.005, atol=1e-6)


def test_ellipse_gives_g_of_twice_the_semi_axis_difference() -> None:
    x, y = xy(circle_path(100.0, ellipse=0.003, ellipse_angle=0.4))
    res = evaluate_circle(x, y)
    np.testing.assert_allclose(res.G, 0.006, rtol=1e-3)
    np.testing.assert_allclose(res.G_min_zone, 0.006, rtol=1e-3)


def test_min_zone_is_never_worse_than_least_squares() -> None:
    rng = np.random.default_rng(3)
    theta = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    r = 50 + 0.002 * np.cos(3 * theta) + 0.004 * (theta < 1.0) + 0.0005 * rng.standard_normal(360)
    res = evaluate_circle(r * np.cos(theta), r * np.sin(theta))
    assert res.G_min_zone <= res.G + 1e-12
    assert res.G_min_zone < res.G  # a step on one arc pulls the LSC centre off the best one


def test_backlash_step_gives_hysteresis_equal_to_the_step() -> None:
    cw = circle_path(100.0, direction="cw", backlash_step=0.004, n=1440)
    ccw = circle_path(100.0, direction="ccw", n=1440)
    res = evaluate_circular_test(*xy(cw), *xy(ccw))
    np.testing.assert_allclose(res.H, 0.004, rtol=1e-6)
    np.testing.assert_allclose(res.cw.G, 0.004, rtol=0.02)
    np.testing.assert_allclose(res.ccw.G, 0.0, atol=1e-9)


def test_short_arc_fit_is_exact_without_noise() -> None:
    x, y = xy(circle_path(80.0, center=(10.0, 5.0), sweep=np.pi / 6, n=50))
    fit = fit_circle(x, y)
    np.testing.assert_allclose(fit.center, [10.0, 5.0], atol=1e-8)
    assert fit.radius == pytest.approx(80.0, abs=1e-8)


@settings(max_examples=30, deadline=None)
@given(
    angle=st.floats(0, 2 * np.pi),
    dx=st.floats(-500, 500),
    dy=st.floats(-500, 500),
)
def test_g_is_invariant_under_rigid_motion(angle: float, dx: float, dy: float) -> None:
    x, y = xy(circle_path(100.0, ellipse=0.002, noise_sigma=0.0003, n=360, seed=1))
    base = evaluate_circle(x, y)
    c, s = np.cos(angle), np.sin(angle)
    moved = evaluate_circle(c * x - s * y + dx, s * x + c * y + dy)
    np.testing.assert_allclose(moved.G, base.G, atol=1e-9)
    assert moved.radius == pytest.approx(base.radius, abs=1e-9)


def test_collinear_points_are_rejected() -> None:
    with pytest.raises(ValueError, match="collinear"):
        fit_circle([0, 1, 2, 3], [0, 1, 2, 3])


def test_too_few_points_are_rejected() -> None:
    with pytest.raises(ValueError, match="x needs at least 3 values"):
        evaluate_circle([0, 1], [1, 0])


def test_mismatched_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="same length"):
        evaluate_circle([0, 1, 2, 3], [1, 0, 1])

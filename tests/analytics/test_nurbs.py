"""NURBS evaluation against closed forms and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import BSpline

from analytics.nurbs import NurbsCurve

W = np.sqrt(0.5)


def quarter_circle(radius: float = 1.0, z: float = 0.0) -> NurbsCurve:
    return NurbsCurve.from_dict(
        {
            "degree": 2,
            "knots": [0, 0, 0, 1, 1, 1],
            "control_points": [[radius, 0, z], [radius, radius, z], [0, radius, z]],
            "weights": [1, W, 1],
        }
    )


def test_rational_quarter_circle_is_exact() -> None:
    pts = quarter_circle(5.0).evaluate(np.linspace(0, 1, 101))
    np.testing.assert_allclose(np.hypot(pts[:, 0], pts[:, 1]), 5.0, atol=1e-13)


def test_derivatives_match_finite_differences() -> None:
    c = quarter_circle(3.0)
    t = np.linspace(0.1, 0.9, 9)
    d = c.derivatives(t, 2)
    h = 1e-5
    np.testing.assert_allclose(d[1], (c.evaluate(t + h) - c.evaluate(t - h)) / (2 * h), atol=1e-7)
    second = (c.evaluate(t + h) - 2 * c.evaluate(t) + c.evaluate(t - h)) / h**2
    np.testing.assert_allclose(d[2], second, atol=1e-3)


def test_non_rational_matches_scipy_on_any_knot_range() -> None:
    rng = np.random.default_rng(0)
    knots = np.array([2, 2, 2, 2, 3, 4.5, 5, 7, 7, 7, 7], dtype=float)
    cp = rng.normal(size=(7, 3))
    c = NurbsCurve.from_dict({"degree": 3, "knots": knots.tolist(), "control_points": cp.tolist()})
    t = np.linspace(0, 1, 57)
    ref = BSpline(knots, cp, 3)(2 + 5 * t)
    np.testing.assert_allclose(c.evaluate(t), ref, atol=1e-12)
    # Derivatives are with respect to the normalised parameter: chain rule factor 5.
    np.testing.assert_allclose(
        c.derivatives(t, 1)[1], 5 * BSpline(knots, cp, 3).derivative()(2 + 5 * t), atol=1e-10
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"knots": [0, 0, 1, 1]}, "knots has 4 values; a degree-2 curve with 3 control points"),
        ({"knots": [0, 0, 1, 0.5, 1, 1]}, "must not decrease"),
        ({"weights": [1, 0, 1]}, "weights must all be positive"),
        ({"weights": [1, 1]}, "weights has 2 values, expected 3"),
        ({"degree": 0}, "degree must be an integer >= 1"),
        ({"control_points": [[0, 0], [1, 1], [2, 0]]}, r"control_points\[0\] has 2 values"),
    ],
)
def test_bad_curves_are_rejected(change: dict[str, object], message: str) -> None:
    doc: dict[str, object] = {
        "degree": 2,
        "knots": [0, 0, 0, 1, 1, 1],
        "control_points": [[0, 0, 0], [1, 1, 0], [2, 0, 0]],
    }
    doc |= change
    with pytest.raises(ValueError, match=message):
        NurbsCurve.from_dict(doc, "geometry.bottom")
